//! Cluster membership (thesis chapter 4): who votes, who only listens, and
//! how that changes one server at a time.
//!
//! A configuration is a log entry ([`EntryKind::ConfChange`]) holding the
//! whole new [`Membership`]. Thesis §4.1: "a server always uses the latest
//! configuration in its log, regardless of whether the entry is committed".
//! So the configuration in force changes when the entry is *appended*, and
//! changes back if a new leader's log truncates it away; [`MembershipLog`]
//! keeps every configuration the log still holds, so that a truncation or a
//! compaction finds the right one without reading the log again.
//!
//! Why one server at a time and not joint consensus (§4.3): any two
//! majorities of configurations that differ by one voter overlap, so no
//! step can elect two leaders in one term, and each change is a single
//! entry with a single rule ("one change in flight") instead of two phases.
//! The thesis's own correction applies (the raft-dev post of 2015, in the
//! thesis errata): a leader proposes a change only after it has committed
//! an entry of its own term, so a change from a previous term that it does
//! not know is committed cannot combine with its own into two steps at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Progress, RaftCore};
use crate::types::{EntryKind, LogEntry, LogIndex, NodeId, RaftState, Term};

/// Who is in the cluster. Voters elect leaders and form every quorum (commit,
/// ReadIndex, leases, check-quorum, pre-vote); learners (§4.2.1) receive the
/// log and snapshots but count toward nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Membership {
    /// Sorted, no duplicates.
    voters: Vec<NodeId>,
    /// Sorted, no duplicates, none of them a voter.
    learners: Vec<NodeId>,
    /// Where to reach each member (an address for the transport). The core
    /// never reads it; it travels with the configuration so that every node
    /// learns where a new member is.
    addresses: BTreeMap<NodeId, String>,
}

/// One change of membership (§4.1), as an operator asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfChange {
    /// A new member that receives the log but does not vote yet (§4.2.1).
    AddLearner { id: NodeId, address: String },
    /// A learner becomes a voter.
    Promote { id: NodeId },
    /// A voter or learner leaves (§4.2.2).
    Remove { id: NodeId },
}

/// Why a membership change is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfChangeError {
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    #[error("node {0} is not a learner")]
    NotALearner(NodeId),
    #[error("node {0} is the last voter; a cluster needs one")]
    LastVoter(NodeId),
    #[error("node id 0 is reserved")]
    ZeroId,
}

impl Membership {
    /// A configuration of these voters and learners (sorted, deduplicated;
    /// a voter listed as a learner too is a voter).
    pub fn new(voters: &[NodeId], learners: &[NodeId]) -> Self {
        let mut voters = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        let mut learners: Vec<NodeId> = learners
            .iter()
            .copied()
            .filter(|id| voters.binary_search(id).is_err())
            .collect();
        learners.sort_unstable();
        learners.dedup();
        Membership {
            voters,
            learners,
            addresses: BTreeMap::new(),
        }
    }

    pub fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    pub fn learners(&self) -> &[NodeId] {
        &self.learners
    }

    pub fn addresses(&self) -> &BTreeMap<NodeId, String> {
        &self.addresses
    }

    /// Records where `id` can be reached.
    pub fn set_address(&mut self, id: NodeId, address: String) {
        self.addresses.insert(id, address);
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Voters and learners, ascending.
    pub fn members(&self) -> Vec<NodeId> {
        let mut all: Vec<NodeId> = self.voters.iter().chain(&self.learners).copied().collect();
        all.sort_unstable();
        all
    }

    /// The configuration after `change`, or why it cannot be made.
    pub fn apply(&self, change: &ConfChange) -> Result<Membership, ConfChangeError> {
        let mut next = self.clone();
        match change {
            ConfChange::AddLearner { id, address } => {
                if *id == 0 {
                    return Err(ConfChangeError::ZeroId);
                }
                if self.contains(*id) {
                    return Err(ConfChangeError::AlreadyMember(*id));
                }
                next.learners.push(*id);
                next.learners.sort_unstable();
                next.addresses.insert(*id, address.clone());
            }
            ConfChange::Promote { id } => {
                if !self.is_learner(*id) {
                    return Err(if self.is_voter(*id) {
                        ConfChangeError::AlreadyMember(*id)
                    } else {
                        ConfChangeError::NotALearner(*id)
                    });
                }
                next.learners.retain(|l| l != id);
                next.voters.push(*id);
                next.voters.sort_unstable();
            }
            ConfChange::Remove { id } => {
                if !self.contains(*id) {
                    return Err(ConfChangeError::NotAMember(*id));
                }
                if self.voters == [*id] {
                    return Err(ConfChangeError::LastVoter(*id));
                }
                next.voters.retain(|v| v != id);
                next.learners.retain(|l| l != id);
                next.addresses.remove(id);
            }
        }
        Ok(next)
    }

    /// The bytes of a [`EntryKind::ConfChange`](crate::EntryKind) entry:
    /// counts and ids as little-endian integers, addresses length-prefixed.
    /// Hand-written (the core has no serialization crate): it is stored in
    /// the log and snapshots, and must read back the same on every node.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 * (self.voters.len() + self.learners.len()));
        out.push(MEMBERSHIP_FORMAT);
        for list in [&self.voters, &self.learners] {
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for id in list {
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.addresses.len() as u32).to_le_bytes());
        for (id, address) in &self.addresses {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&(address.len() as u32).to_le_bytes());
            out.extend_from_slice(address.as_bytes());
        }
        out
    }

    /// Reads what [`Membership::encode`] wrote; anything else is an error
    /// naming what is wrong (the bytes come from disk or the network).
    pub fn decode(bytes: &[u8]) -> Result<Membership, String> {
        let mut r = Reader { bytes, at: 0 };
        let format = r.take(1)?[0];
        if format != MEMBERSHIP_FORMAT {
            return Err(format!("unknown membership format {format}"));
        }
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let n = r.u32()? as usize;
            for _ in 0..n {
                list.push(r.u64()?);
            }
        }
        let [voters, learners] = lists;
        let mut m = Membership::new(&voters, &learners);
        if m.voters.len() != voters.len() || m.learners.len() != learners.len() {
            return Err("membership lists a node twice".into());
        }
        let n = r.u32()? as usize;
        for _ in 0..n {
            let id = r.u64()?;
            let len = r.u32()? as usize;
            let address = std::str::from_utf8(r.take(len)?)
                .map_err(|_| format!("the address of node {id} is not UTF-8"))?;
            m.addresses.insert(id, address.to_string());
        }
        if r.at != bytes.len() {
            return Err(format!("{} bytes after the membership", bytes.len() - r.at));
        }
        Ok(m)
    }
}

const MEMBERSHIP_FORMAT: u8 = 1;

/// Why [`RaftCore::propose_conf_change`] refused a change. Nothing was
/// appended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MembershipError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// §4.1: one change at a time; the previous one is not committed yet.
    #[error(
        "the configuration change at index {index} is not committed yet; one change at a time"
    )]
    ChangeInProgress { index: LogIndex },
    /// The leader has not committed an entry of its own term yet, so it
    /// may not know whether an earlier change is committed.
    #[error("the leader has not committed an entry of its term yet; retry shortly")]
    LeaderNotReady,
    /// Thesis §3.10: leadership is being handed over; ask the new leader.
    #[error("leadership is being transferred to node {target}")]
    Transferring { target: NodeId },
    #[error(transparent)]
    Invalid(#[from] ConfChangeError),
}

impl RaftCore {
    /// Leader: appends the configuration that `change` makes (thesis §4.1).
    /// It is in force from this moment on, on this leader, and on each
    /// follower once appended there; it is *done* when it commits, which the
    /// caller learns as for any entry (index and term). Refused while another
    /// change is uncommitted, and until this leader has committed an entry
    /// of its term.
    pub fn propose_conf_change(
        &mut self,
        change: &ConfChange,
    ) -> Result<(LogIndex, Term), MembershipError> {
        if self.state != RaftState::Leader {
            return Err(MembershipError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if let Some(t) = self.transfer {
            return Err(MembershipError::Transferring { target: t.target });
        }
        let pending = self.membership.current_index();
        if pending > self.commit_index {
            return Err(MembershipError::ChangeInProgress { index: pending });
        }
        // The thesis errata (single-server changes, raft-dev 2015): without
        // this, a change left uncommitted by an earlier leader and this one
        // could be two steps at once, and two disjoint majorities could
        // elect two leaders.
        if self.log.term(self.commit_index) != Some(self.term) {
            return Err(MembershipError::LeaderNotReady);
        }
        let next = self.membership.current().apply(change)?;
        let index = self.log.last_index() + 1;
        let entry = LogEntry {
            term: self.term,
            index,
            kind: EntryKind::ConfChange,
            data: next.encode(),
        };
        self.log.append(entry);
        self.membership.push(index, next);
        self.membership_changed();
        self.need_broadcast = true;
        tracing::info!(
            id = self.id,
            index,
            ?change,
            "proposed a configuration change"
        );
        Ok((index, self.term))
    }

    /// The log changed from `index` on (a follower took entries from its
    /// leader, maybe cutting a conflicting suffix): re-read the
    /// configurations there (§4.1).
    pub(super) fn log_changed_from(&mut self, index: LogIndex) {
        self.membership.truncate_from(index);
        let mut found = Vec::new();
        for e in self
            .log
            .range(index.saturating_sub(1), self.log.last_index())
        {
            if e.kind != EntryKind::ConfChange {
                continue;
            }
            match Membership::decode(&e.data) {
                Ok(m) => found.push((e.index, m)),
                // A leader only ever writes what `encode` made; bytes that
                // do not decode came from somewhere else. Keep the
                // configuration we had rather than guess.
                Err(why) => {
                    tracing::error!(id = self.id, index = e.index, %why, "ignoring a configuration entry that does not decode")
                }
            }
        }
        for (i, m) in found {
            self.membership.push(i, m);
        }
        self.membership_changed();
    }

    /// The configuration in force may have changed (or committed): a leader
    /// tracks every server it must replicate to, and no one else.
    pub(super) fn membership_changed(&mut self) {
        if self.state != RaftState::Leader {
            return;
        }
        let peers = self.replication_targets();
        self.progress.retain(|id, _| peers.contains(id));
        // A new member most likely has nothing: probe from the start of our
        // log (a follower skips what it already holds), so the entries, or
        // a snapshot, go out now instead of after a round of rejections.
        let next_index = self.log.first_index();
        for peer in peers {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.progress.entry(peer) {
                slot.insert(Progress::new(next_index));
                self.need_broadcast = true;
            }
        }
    }

    /// §4.2.2: a leader that is not in the configuration it committed steps
    /// down. It led until then (replicating, but not counting itself in any
    /// majority: the quorum functions see only the new voters).
    pub(super) fn maybe_step_down_removed(&mut self) {
        let (m, index) = (self.membership.current(), self.membership.current_index());
        if self.state == RaftState::Leader && !m.is_voter(self.id) && self.commit_index >= index {
            tracing::info!(
                id = self.id,
                term = self.term,
                index,
                "this leader's removal committed: stepping down"
            );
            // Tell the followers the commit first, so the new configuration
            // is known committed everywhere soon.
            self.flush();
            self.become_follower(self.term, None);
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| "membership bytes end early".to_string())?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Every configuration the log still holds, and the one before them all
/// (from the snapshot the log starts after, or the bootstrap list).
#[derive(Debug, Clone)]
pub(crate) struct MembershipLog {
    /// The configuration in force at `base.0` and before any entry after it.
    base: (LogIndex, Membership),
    /// Configuration entries after `base.0`, by ascending index.
    entries: Vec<(LogIndex, Membership)>,
}

impl MembershipLog {
    pub(crate) fn new(index: LogIndex, membership: Membership) -> Self {
        MembershipLog {
            base: (index, membership),
            entries: Vec::new(),
        }
    }

    /// §4.1: the latest configuration in the log, committed or not.
    pub(crate) fn current(&self) -> &Membership {
        self.entries.last().map_or(&self.base.1, |(_, m)| m)
    }

    /// The index of the entry that made [`current`](Self::current) (the
    /// base's index if no entry did).
    pub(crate) fn current_index(&self) -> LogIndex {
        self.entries.last().map_or(self.base.0, |(i, _)| *i)
    }

    /// The configuration in force at `index` (for a snapshot taken there).
    pub(crate) fn at(&self, index: LogIndex) -> &Membership {
        self.entries
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.base.1, |(_, m)| m)
    }

    /// A configuration entry was appended at `index`.
    pub(crate) fn push(&mut self, index: LogIndex, membership: Membership) {
        self.truncate_from(index);
        self.entries.push((index, membership));
    }

    /// The log lost every entry from `index` on: so did their configurations
    /// (§4.1: the server falls back to the previous one).
    pub(crate) fn truncate_from(&mut self, index: LogIndex) {
        self.entries.retain(|(i, _)| *i < index);
    }

    /// The log now starts after `index` (§7): the configurations up to it
    /// fold into the base.
    pub(crate) fn compact(&mut self, index: LogIndex) {
        if index <= self.base.0 {
            return;
        }
        let at = self.at(index).clone();
        self.entries.retain(|(i, _)| *i > index);
        self.base = (index, at);
    }

    /// The log was replaced by a snapshot ending at `index` whose
    /// configuration is `membership`.
    pub(crate) fn reset(&mut self, index: LogIndex, membership: Membership) {
        self.base = (index, membership);
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(id: NodeId) -> ConfChange {
        ConfChange::AddLearner {
            id,
            address: format!("127.0.0.1:{}", 7000 + id),
        }
    }

    #[test]
    fn a_membership_encodes_and_decodes_to_itself() {
        let m = Membership::new(&[3, 1, 2], &[])
            .apply(&add(5))
            .and_then(|m| m.apply(&add(4)))
            .and_then(|m| m.apply(&ConfChange::Promote { id: 4 }))
            .expect("valid changes");
        assert_eq!(m.voters(), &[1, 2, 3, 4]);
        assert_eq!(m.learners(), &[5]);
        assert_eq!(Membership::decode(&m.encode()), Ok(m.clone()));
        let bytes = m.encode();
        for cut in 0..bytes.len() {
            assert!(Membership::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Membership::decode(&longer).is_err());
    }

    #[test]
    fn changes_that_make_no_sense_are_refused() {
        let m = Membership::new(&[1, 2, 3], &[4]);
        assert_eq!(m.apply(&add(2)), Err(ConfChangeError::AlreadyMember(2)));
        assert_eq!(m.apply(&add(0)), Err(ConfChangeError::ZeroId));
        assert_eq!(
            m.apply(&ConfChange::Promote { id: 9 }),
            Err(ConfChangeError::NotALearner(9))
        );
        assert_eq!(
            m.apply(&ConfChange::Promote { id: 1 }),
            Err(ConfChangeError::AlreadyMember(1))
        );
        assert_eq!(
            m.apply(&ConfChange::Remove { id: 9 }),
            Err(ConfChangeError::NotAMember(9))
        );
        let one = Membership::new(&[1], &[]);
        assert_eq!(
            one.apply(&ConfChange::Remove { id: 1 }),
            Err(ConfChangeError::LastVoter(1))
        );
    }

    #[test]
    fn the_configuration_in_force_follows_appends_truncations_and_compactions() {
        // §4.1: the latest configuration in the log is in force, committed
        // or not; cutting the entry away brings back the one before.
        let base = Membership::new(&[1, 2, 3], &[]);
        let with_4 = base.apply(&add(4)).expect("valid");
        let promoted = with_4.apply(&ConfChange::Promote { id: 4 }).expect("valid");
        let mut log = MembershipLog::new(0, base.clone());
        log.push(5, with_4.clone());
        log.push(9, promoted.clone());
        assert_eq!(log.current(), &promoted);
        assert_eq!(log.current_index(), 9);
        assert_eq!(log.at(8), &with_4);
        assert_eq!(log.at(4), &base);
        log.truncate_from(9);
        assert_eq!(log.current(), &with_4);
        log.compact(7);
        assert_eq!(log.current(), &with_4);
        assert_eq!(log.current_index(), 7);
        log.truncate_from(8);
        assert_eq!(log.current(), &with_4, "compacted configurations stay");
        log.reset(20, base.clone());
        assert_eq!(log.current(), &base);
        assert_eq!(log.current_index(), 20);
    }
}
