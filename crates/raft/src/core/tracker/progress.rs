//! The leader's view of each follower (Figure 2, "Volatile state on
//! leaders": `nextIndex`, `matchIndex`), plus what flow control and the
//! thesis's extensions need: probing versus pipelining, the AppendEntries in
//! flight, contact for check-quorum, the ReadIndex round echoed, and whether
//! the follower's acknowledgements count toward a majority.

use super::Inflights;
use crate::types::LogIndex;

/// The leader's view of one follower (Figure 2, "Volatile state on leaders",
/// plus flow control as in etcd's `tracker/progress.go`).
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// Index of the next log entry to send to that server.
    pub(crate) next_index: LogIndex,
    /// Index of the highest log entry known to be replicated on that server.
    pub(crate) match_index: LogIndex,
    /// Probing: we do not know where the logs agree, so send one
    /// AppendEntries at a time. Otherwise we stream optimistically.
    pub(crate) probing: bool,
    /// The AppendEntries in flight, not yet acknowledged.
    pub(crate) inflight: Inflights,
    /// Ticks since this follower last answered (check-quorum).
    pub(crate) ticks_since_contact: u64,
    /// Ticks since this follower last acknowledged new entries.
    pub(crate) ticks_since_ack: u64,
    /// Highest heartbeat round this follower has echoed (ReadIndex).
    pub(crate) read_round: u64,
    /// The highest commit index this follower can have learned from us.
    pub(crate) commit_told: LogIndex,
    /// A snapshot ending at this index is being sent (§7); no appends until
    /// the transfer ends.
    pub(crate) snapshot_pending: Option<LogIndex>,
    /// Whether this follower's acknowledgements count toward a majority
    /// (commit, ReadIndex rounds and leases, check-quorum): false once it
    /// said it may not vote (see `AppendEntriesReply::voter`), true again
    /// once it says it may (see [`Progress::record_vote_right`]).
    pub(crate) voter: bool,
    /// It said it may vote, in some reply of this term.
    said_voter: bool,
    /// It said it may vote and later that it may not: its disk was replaced
    /// under it. Final for the term.
    lost_vote: bool,
}

impl Progress {
    /// A follower the leader knows nothing about yet: probe from
    /// `next_index` (Figure 2: "initialized to leader last log index + 1").
    pub(crate) fn new(next_index: LogIndex) -> Self {
        Progress {
            next_index,
            match_index: 0,
            probing: true,
            inflight: Inflights::default(),
            ticks_since_contact: 0,
            ticks_since_ack: 0,
            read_round: 0,
            commit_told: 0,
            snapshot_pending: None,
            voter: true,
            said_voter: false,
            lost_vote: false,
        }
    }

    /// What a reply says of the follower's right to vote
    /// (`crate::incarnation`). A new data dir may not vote at first and may
    /// later (a joining server, once every voter cleared it): from then on
    /// its acknowledgements count. A server that could vote and then could
    /// not lost its disk: a late reply from before, which still says it
    /// may, must not make its forgetful new self count again.
    pub(crate) fn record_vote_right(&mut self, may_vote: bool) {
        if may_vote {
            if !self.lost_vote {
                self.voter = true;
                self.said_voter = true;
            }
        } else {
            self.lost_vote |= self.said_voter;
            self.voter = false;
        }
    }
}
