//! Flow control for one follower: the AppendEntries a leader has sent and
//! not yet seen acknowledged, by the last index each carried (etcd's
//! `tracker/inflights.go`). While probing (§5.3: the leader does not yet know
//! where the logs agree) one is allowed in flight; while streaming, up to
//! `RaftConfig::max_inflight_appends`. An acknowledgement up to index `m`
//! frees every message that ended at or before `m`.

use std::collections::VecDeque;

use crate::types::LogIndex;

#[derive(Debug, Clone, Default)]
pub(crate) struct Inflights {
    /// Last index of each AppendEntries in flight, oldest first.
    last_indexes: VecDeque<LogIndex>,
}

impl Inflights {
    /// An AppendEntries ending at `last` was sent.
    pub(crate) fn add(&mut self, last: LogIndex) {
        self.last_indexes.push_back(last);
    }

    /// The follower holds everything up to `match_index`: the messages that
    /// ended there or before arrived.
    pub(crate) fn free_to(&mut self, match_index: LogIndex) {
        self.last_indexes.retain(|&i| i > match_index);
    }

    /// Forget every message in flight (a rejection, a timeout, a snapshot,
    /// an unreachable follower: the leader starts over from `next_index`).
    pub(crate) fn reset(&mut self) {
        self.last_indexes.clear();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.last_indexes.is_empty()
    }

    /// Whether `limit` messages are in flight already.
    pub(crate) fn is_full(&self, limit: usize) -> bool {
        self.last_indexes.len() >= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_frees_the_messages_it_covers_and_no_others() {
        let mut w = Inflights::default();
        for last in [3, 5, 9] {
            w.add(last);
        }
        assert!(w.is_full(3));
        w.free_to(5);
        assert!(!w.is_full(2), "3 and 5 are free, 9 is not");
        assert!(w.is_full(1));
        w.free_to(8);
        assert!(!w.is_empty());
        w.free_to(9);
        assert!(w.is_empty());
    }

    #[test]
    fn a_reset_empties_the_window() {
        let mut w = Inflights::default();
        w.add(4);
        w.add(7);
        w.reset();
        assert!(w.is_empty());
        assert!(!w.is_full(1));
    }
}
