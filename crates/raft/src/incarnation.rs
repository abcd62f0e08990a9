//! Incarnations: telling a restarted server from a server whose disk was
//! wiped, so that no server votes twice in one term.
//!
//! Figure 2 makes `votedFor` persistent because a server that forgets its
//! vote can vote again in the same term, and two candidates can then both
//! win it (§5.2, Election Safety). A server whose data dir is lost (a dead
//! disk, an operator's `rm -rf`) forgets everything: restarted with the same
//! id it starts at term 0 with no vote, and would grant a second vote in a
//! term where it already voted. Hearing the current term from a leader is
//! not enough to make it safe: a candidate of a *later* term, cut off from
//! everyone, may still hold its old vote.
//!
//! So every data dir gets an *incarnation*, a random number written when it
//! is created, and every server keeps a [`IncarnationBook`]: the
//! incarnation it last saw of each peer. The peer handshake carries the
//! incarnation both ways, and the book is durable before any message on
//! the connection is handled, so a server that ever received a vote (or
//! anything) from a peer has that peer's incarnation on disk.
//!
//! A server with a new data dir starts with its vote [`VoteRight::Pending`]
//! and asks every other voter what it knows of it:
//! * "never saw you" or "that is you" from a voter clears it with that
//!   voter; once every other voter has cleared it, nobody can be holding a
//!   vote it forgot, and it may vote (this is how a brand-new cluster, all
//!   of whose data dirs are new, starts: its first election waits until
//!   every node has started once);
//! * "I knew another incarnation of you" from anyone means its data dir was
//!   wiped: its vote is [`VoteRight::Suspended`] for good. It still
//!   replicates the log and serves clients, it never votes or campaigns,
//!   and the cluster must remove it and add it back as a new member to give
//!   it a vote again (thesis chapter 4).
//!
//! A server that may not vote also counts toward no majority
//! (`AppendEntriesReply::voter`): it forgot its term as well as its vote,
//! so it may acknowledge the entries of a leader that was deposed in a term
//! it once knew. It is replicated to like any follower, but the leader
//! counts it neither for commit nor for ReadIndex rounds, leases or
//! check-quorum. Entries it acknowledged *before* the wipe were on a
//! majority that counted it; any future leader needs a majority of votes,
//! which it is not part of, so the two majorities still meet in a server
//! that has the entry on disk.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// What a server's book says about a peer's incarnation, sent back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerVerdict {
    /// No record of any incarnation of that peer: now there is one.
    New,
    /// The same incarnation as before (a restart on the same data dir).
    Known,
    /// Another incarnation was seen before: the peer's data dir is new
    /// although the peer is not, so it may have voted in a life it forgot.
    Reincarnated,
}

/// One peer's entry in an [`IncarnationBook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub incarnation: u64,
    /// Once a reincarnation was seen, every later hello of that peer gets
    /// [`PeerVerdict::Reincarnated`] too, also from the new incarnation
    /// (which might not have stored its suspension before a crash).
    pub reincarnated: bool,
}

/// The incarnation this server last saw of each peer. Durable: the caller
/// persists it whenever [`IncarnationBook::check`] says it changed, before
/// it handles anything else from that peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncarnationBook {
    pub peers: BTreeMap<NodeId, PeerRecord>,
}

impl IncarnationBook {
    /// A peer presents `incarnation`. Returns the verdict to send it, and
    /// whether the book changed (and must be persisted first).
    pub fn check(&mut self, peer: NodeId, incarnation: u64) -> (PeerVerdict, bool) {
        match self.peers.get_mut(&peer) {
            None => {
                self.peers.insert(
                    peer,
                    PeerRecord {
                        incarnation,
                        reincarnated: false,
                    },
                );
                (PeerVerdict::New, true)
            }
            Some(r) if r.incarnation == incarnation && !r.reincarnated => {
                (PeerVerdict::Known, false)
            }
            Some(r) if r.incarnation == incarnation => (PeerVerdict::Reincarnated, false),
            Some(r) => {
                r.incarnation = incarnation;
                r.reincarnated = true;
                (PeerVerdict::Reincarnated, true)
            }
        }
    }
}

/// Whether this server may vote and campaign. Durable, with the data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoteRight {
    /// A server with history (or the only voter).
    Allowed,
    /// A new data dir: waiting until every other voter has cleared it.
    Pending { cleared: BTreeSet<NodeId> },
    /// This data dir replaced a wiped one: never vote under this id again.
    Suspended,
}

impl VoteRight {
    /// The right of a server that joins an existing cluster with a new data
    /// dir: it knows no voters yet, so nobody can have cleared it; it waits
    /// for a configuration that contains it ([`VoteRight::settle`]) and for
    /// every other voter of it to clear it.
    pub fn for_joining_server() -> VoteRight {
        VoteRight::Pending {
            cleared: BTreeSet::new(),
        }
    }

    /// The right of a brand-new data dir of server `me` among `voters`.
    pub fn for_new_data_dir(me: NodeId, voters: &[NodeId]) -> VoteRight {
        let mut right = VoteRight::Pending {
            cleared: BTreeSet::new(),
        };
        right.settle(me, voters);
        right
    }

    pub fn may_vote(&self) -> bool {
        matches!(self, VoteRight::Allowed)
    }

    /// Whether `peer` still has to clear this server.
    pub fn waits_for(&self, peer: NodeId) -> bool {
        matches!(self, VoteRight::Pending { cleared } if !cleared.contains(&peer))
    }

    /// `peer` (a voter) judged this server's incarnation. Returns whether
    /// the right changed (persist it before acting on it).
    pub fn on_verdict(
        &mut self,
        me: NodeId,
        voters: &[NodeId],
        peer: NodeId,
        verdict: PeerVerdict,
    ) -> bool {
        let VoteRight::Pending { cleared } = self else {
            return false;
        };
        match verdict {
            PeerVerdict::Reincarnated => {
                *self = VoteRight::Suspended;
                true
            }
            PeerVerdict::New | PeerVerdict::Known => {
                // Any peer's word is kept: the configuration may change, and
                // a peer that is not a voter today may be one tomorrow.
                if !cleared.insert(peer) {
                    return false;
                }
                self.settle(me, voters);
                true
            }
        }
    }

    /// Pending, with `me` among `voters` and every other voter cleared, is
    /// Allowed. Called again whenever the voters change (thesis §4.1); a
    /// server that is not a voter stays Pending. Returns whether it changed.
    pub fn settle(&mut self, me: NodeId, voters: &[NodeId]) -> bool {
        if let VoteRight::Pending { cleared } = self {
            if voters.contains(&me) && voters.iter().all(|v| *v == me || cleared.contains(v)) {
                *self = VoteRight::Allowed;
                return true;
            }
        }
        false
    }

    pub fn name(&self) -> &'static str {
        match self {
            VoteRight::Allowed => "allowed",
            VoteRight::Pending { .. } => "pending",
            VoteRight::Suspended => "suspended",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_book_tells_new_known_and_reincarnated_peers_apart_and_stays_suspicious() {
        let mut book = IncarnationBook::default();
        assert_eq!(book.check(2, 7), (PeerVerdict::New, true));
        assert_eq!(book.check(2, 7), (PeerVerdict::Known, false));
        assert_eq!(book.check(2, 9), (PeerVerdict::Reincarnated, true));
        // The new incarnation stays suspect: it may have crashed before it
        // stored its suspension.
        assert_eq!(book.check(2, 9), (PeerVerdict::Reincarnated, false));
    }

    #[test]
    fn a_new_data_dir_may_vote_only_once_every_other_voter_cleared_it() {
        let voters = [1, 2, 3];
        let mut right = VoteRight::for_new_data_dir(1, &voters);
        assert!(!right.may_vote());
        assert!(right.on_verdict(1, &voters, 2, PeerVerdict::New));
        assert!(!right.may_vote(), "one of two is not enough");
        assert!(!right.on_verdict(1, &voters, 2, PeerVerdict::Known));
        assert!(right.on_verdict(1, &voters, 3, PeerVerdict::Known));
        assert!(right.may_vote());
        // Once allowed, a late verdict changes nothing.
        assert!(!right.on_verdict(1, &voters, 3, PeerVerdict::Reincarnated));
    }

    #[test]
    fn one_reincarnated_verdict_suspends_the_vote_for_good() {
        let voters = [1, 2, 3];
        let mut right = VoteRight::for_new_data_dir(1, &voters);
        assert!(right.on_verdict(1, &voters, 2, PeerVerdict::New));
        assert!(right.on_verdict(1, &voters, 3, PeerVerdict::Reincarnated));
        assert_eq!(right, VoteRight::Suspended);
        assert!(!right.on_verdict(1, &voters, 2, PeerVerdict::New));
        assert!(!right.may_vote());
    }

    #[test]
    fn a_joining_server_waits_for_a_configuration_that_contains_it() {
        let mut right = VoteRight::for_joining_server();
        // Verdicts can come before it knows who votes: they are kept.
        assert!(right.on_verdict(4, &[], 1, PeerVerdict::New));
        assert!(right.on_verdict(4, &[], 2, PeerVerdict::New));
        assert!(!right.may_vote(), "no configuration yet");
        assert!(!right.settle(4, &[1, 2, 3]), "not a voter");
        assert!(!right.settle(4, &[1, 2, 3, 4]), "node 3 has not cleared it");
        assert!(right.on_verdict(4, &[1, 2, 3, 4], 3, PeerVerdict::Known));
        assert!(right.may_vote());
    }

    #[test]
    fn the_only_voter_needs_nobody() {
        assert!(VoteRight::for_new_data_dir(1, &[1]).may_vote());
    }
}
