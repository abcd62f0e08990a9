//! What a leader tracks about its followers (as etcd's `tracker` package):
//! a [`Progress`] per follower (Figure 2's `nextIndex` and `matchIndex`,
//! plus flow control and contact), and within it the [`Inflights`] window of
//! AppendEntries not yet acknowledged.

mod inflights;
mod progress;

pub(crate) use self::inflights::Inflights;
pub(crate) use self::progress::Progress;
