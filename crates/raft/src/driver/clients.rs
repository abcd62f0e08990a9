//! The clients' side of the driver: which committed entry answers which
//! waiting proposal, and when a linearizable read may be served.
//!
//! A proposal waits by its log index and the term it was proposed in; when
//! that index is applied, the term says whether it is the very entry the
//! client proposed (Log Matching, §5.3) or one a later leader put there. A
//! read waits first for the leader to confirm its leadership (thesis §6.4,
//! steps 1–3: a read index), then for the state machine to apply that index
//! (step 4).

use std::collections::BTreeMap;

use thiserror::Error;

use crate::core::{NotLeader, ProposeError};
use crate::types::{LogIndex, NodeId, Term};

/// Why a client request failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientError {
    /// This node does not lead. Nothing was proposed: safe to retry elsewhere.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// The entry was overwritten by a later leader: it was not applied and
    /// never will be.
    #[error("leadership lost: the entry was overwritten before it committed")]
    LeadershipLost,
    /// The command is over `RaftConfig::max_entry_bytes`: nothing was
    /// proposed, and retrying the same command cannot help.
    #[error("command of {size} bytes is over the {limit}-byte entry limit")]
    TooLarge { size: usize, limit: usize },
    /// The server stopped before the outcome was known.
    #[error("the raft server has stopped")]
    Stopped,
    /// The outcome is not known: e.g. this node installed a snapshot from a
    /// new leader that may or may not contain the command.
    #[error("the outcome is unknown")]
    Unknown,
}

impl From<NotLeader> for ClientError {
    fn from(e: NotLeader) -> Self {
        match e {
            NotLeader::NotLeader { leader_hint } => ClientError::NotLeader { leader_hint },
        }
    }
}

impl From<ProposeError> for ClientError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader { leader_hint } => ClientError::NotLeader { leader_hint },
            ProposeError::TooLarge { size, limit } => ClientError::TooLarge { size, limit },
            // Thesis §3.10: nothing was proposed; the target is about to
            // lead, so that is where to retry.
            ProposeError::Transferring { target } => ClientError::NotLeader {
                leader_hint: Some(target),
            },
        }
    }
}

/// Everyone waiting for the log or the state machine. `W` is whatever the
/// driver's user answers a client through (a channel in production, an
/// operation number in the simulator).
pub(crate) struct Waiters<W> {
    /// Proposals waiting for their index to be applied: index → (term, waiter).
    proposals: BTreeMap<LogIndex, (Term, W)>,
    /// Reads waiting for the leader to confirm it still leads, by read id.
    /// Ordered, so that `drain` answers them in the same order every run
    /// (a `HashMap`'s order changes from process to process, and the
    /// simulator's seeds must replay exactly).
    reads_unconfirmed: BTreeMap<u64, (Vec<u8>, W)>,
    /// Reads confirmed, waiting for `last_applied >= read index`.
    reads_confirmed: BTreeMap<(LogIndex, u64), (Vec<u8>, W)>,
    next_read_id: u64,
}

impl<W> Waiters<W> {
    pub(crate) fn new() -> Self {
        Waiters {
            proposals: BTreeMap::new(),
            reads_unconfirmed: BTreeMap::new(),
            reads_confirmed: BTreeMap::new(),
            next_read_id: 1,
        }
    }

    /// A proposal went into the log at `index` in `term`. Returns the waiter
    /// it displaces: one from an older term at the same index, whose entry
    /// was overwritten (this node would not propose there otherwise).
    pub(crate) fn proposed(&mut self, index: LogIndex, term: Term, waiter: W) -> Option<W> {
        self.proposals
            .insert(index, (term, waiter))
            .map(|(_, old)| old)
    }

    /// The entry at `index`, of `term`, was applied: its waiter, if any,
    /// and whether the entry is the one it proposed.
    pub(crate) fn applied(&mut self, index: LogIndex, term: Term) -> Option<(W, bool)> {
        self.proposals
            .remove(&index)
            .map(|(proposed_term, w)| (w, proposed_term == term))
    }

    /// Terms never decrease along a log, so once an entry of `term` is
    /// applied at `index`, a proposal of an older term at a later index can
    /// never see its entry commit: these are lost now, not when the index
    /// fills.
    pub(crate) fn doomed(&mut self, index: LogIndex, term: Term) -> Vec<W> {
        let doomed: Vec<LogIndex> = self
            .proposals
            .range(index + 1..)
            .filter(|(_, (t, _))| *t < term)
            .map(|(i, _)| *i)
            .collect();
        doomed
            .into_iter()
            .filter_map(|i| self.proposals.remove(&i).map(|(_, w)| w))
            .collect()
    }

    /// Proposals at or below `index` (a snapshot covers them).
    pub(crate) fn covered(&mut self, index: LogIndex) -> Vec<W> {
        let rest = self.proposals.split_off(&(index + 1));
        std::mem::replace(&mut self.proposals, rest)
            .into_values()
            .map(|(_, w)| w)
            .collect()
    }

    /// A number for the next read, unique in this driver's life.
    pub(crate) fn next_read_id(&mut self) -> u64 {
        let id = self.next_read_id;
        self.next_read_id += 1;
        id
    }

    pub(crate) fn read_unconfirmed(&mut self, id: u64, query: Vec<u8>, waiter: W) {
        self.reads_unconfirmed.insert(id, (query, waiter));
    }

    /// The leader confirmed read `id` at read index `index`. False if no
    /// such read waits.
    pub(crate) fn read_confirmed(&mut self, id: u64, index: LogIndex) -> bool {
        match self.reads_unconfirmed.remove(&id) {
            Some(read) => {
                self.reads_confirmed.insert((index, id), read);
                true
            }
            None => false,
        }
    }

    /// Read `id` was refused (leadership lost): its waiter.
    pub(crate) fn read_refused(&mut self, id: u64) -> Option<W> {
        self.reads_unconfirmed.remove(&id).map(|(_, w)| w)
    }

    /// The next confirmed read whose read index `last_applied` has reached.
    pub(crate) fn next_servable(&mut self, last_applied: LogIndex) -> Option<(Vec<u8>, W)> {
        let entry = self.reads_confirmed.first_entry()?;
        if entry.key().0 > last_applied {
            return None;
        }
        Some(entry.remove())
    }

    /// Every waiter, emptied out (the driver stops).
    pub(crate) fn drain(&mut self) -> Vec<W> {
        let proposals = std::mem::take(&mut self.proposals)
            .into_values()
            .map(|(_, w)| w);
        let unconfirmed = std::mem::take(&mut self.reads_unconfirmed)
            .into_values()
            .map(|(_, w)| w);
        let confirmed = std::mem::take(&mut self.reads_confirmed)
            .into_values()
            .map(|(_, w)| w);
        proposals.chain(unconfirmed).chain(confirmed).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_answers_every_waiter_in_a_fixed_order() {
        let mut w = Waiters::new();
        w.proposed(5, 1, "p5");
        w.proposed(3, 1, "p3");
        for name in ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"] {
            let id = w.next_read_id();
            w.read_unconfirmed(id, Vec::new(), name);
        }
        assert_eq!(
            w.drain(),
            vec!["p3", "p5", "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"]
        );
    }

    #[test]
    fn an_applied_entry_answers_its_proposal_only_if_the_term_matches() {
        let mut w = Waiters::new();
        assert!(w.proposed(5, 2, "a").is_none());
        assert_eq!(w.applied(5, 2), Some(("a", true)));
        assert!(w.proposed(6, 2, "b").is_none());
        assert_eq!(w.applied(6, 3), Some(("b", false)));
        assert_eq!(w.applied(7, 3), None);
    }

    #[test]
    fn a_new_proposal_at_the_same_index_displaces_the_older_term() {
        let mut w = Waiters::new();
        w.proposed(4, 1, "old");
        assert_eq!(w.proposed(4, 3, "new"), Some("old"));
        assert_eq!(w.applied(4, 3), Some(("new", true)));
    }

    #[test]
    fn proposals_of_older_terms_after_an_applied_entry_are_doomed() {
        let mut w = Waiters::new();
        w.proposed(6, 1, "older");
        w.proposed(7, 2, "same");
        w.proposed(8, 1, "older too");
        let mut doomed = w.doomed(5, 2);
        doomed.sort_unstable();
        assert_eq!(doomed, vec!["older", "older too"]);
        assert_eq!(w.applied(7, 2), Some(("same", true)));
    }

    #[test]
    fn a_snapshot_covers_the_proposals_up_to_its_index() {
        let mut w = Waiters::new();
        w.proposed(3, 1, "a");
        w.proposed(4, 1, "b");
        w.proposed(9, 1, "c");
        assert_eq!(w.covered(4), vec!["a", "b"]);
        assert_eq!(w.drain(), vec!["c"]);
    }

    #[test]
    fn a_read_is_served_once_its_read_index_is_applied() {
        let mut w = Waiters::new();
        let (a, b) = (w.next_read_id(), w.next_read_id());
        w.read_unconfirmed(a, b"qa".to_vec(), "a");
        w.read_unconfirmed(b, b"qb".to_vec(), "b");
        assert!(w.read_confirmed(a, 10));
        assert_eq!(w.read_refused(b), Some("b"));
        assert!(!w.read_confirmed(b, 10));
        assert!(w.next_servable(9).is_none());
        assert_eq!(w.next_servable(10), Some((b"qa".to_vec(), "a")));
        assert!(w.next_servable(10).is_none());
    }
}
