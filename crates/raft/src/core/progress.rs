//! The leader's view of each follower (Figure 2, "Volatile state on
//! leaders": `nextIndex`, `matchIndex`), plus what flow control and the
//! thesis's extensions need: probing versus pipelining, the AppendEntries in
//! flight, contact for check-quorum, the ReadIndex round echoed, and whether
//! the follower's acknowledgements count toward a majority.

use std::collections::VecDeque;

use crate::types::LogIndex;

/// The leader's view of one follower (Figure 2, "Volatile state on leaders",
/// plus flow control as in etcd's `tracker/progress.go`).
#[derive(Debug, Clone)]
pub(super) struct Progress {
    /// Index of the next log entry to send to that server.
    pub(super) next_index: LogIndex,
    /// Index of the highest log entry known to be replicated on that server.
    pub(super) match_index: LogIndex,
    /// Probing: we do not know where the logs agree, so send one
    /// AppendEntries at a time. Otherwise we stream optimistically.
    pub(super) probing: bool,
    /// Last index of each AppendEntries in flight, oldest first.
    pub(super) inflight: VecDeque<LogIndex>,
    /// Ticks since this follower last answered (check-quorum).
    pub(super) ticks_since_contact: u64,
    /// Ticks since this follower last acknowledged new entries.
    pub(super) ticks_since_ack: u64,
    /// Highest heartbeat round this follower has echoed (ReadIndex).
    pub(super) read_round: u64,
    /// The highest commit index this follower can have learned from us.
    pub(super) commit_told: LogIndex,
    /// A snapshot ending at this index is being sent (§7); no appends until
    /// the transfer ends.
    pub(super) snapshot_pending: Option<LogIndex>,
    /// Whether this follower's acknowledgements count toward a majority
    /// (commit, ReadIndex rounds and leases, check-quorum): false once it
    /// said it may not vote (see `AppendEntriesReply::voter`).
    pub(super) voter: bool,
}
