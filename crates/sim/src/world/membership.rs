//! Membership changes under faults (thesis chapter 4, §3.10): the nemesis
//! asks the leader, as an operator's `RAFT.NODE` or `RAFT.TRANSFER` would,
//! to remove a server (the leader itself too), to add one that is not a
//! member as a learner (with its old data dir, or a new one, as when a
//! replaced machine comes back), to promote a learner, or to hand its
//! leadership over. Every other fault goes on meanwhile, so changes meet
//! partitions, crashes, power losses, wipes and snapshots mid-way.
//!
//! Each node also does what raftkv's `follow_configuration` does around the
//! core: it settles its vote right against the voters in force. Its book of
//! peers keeps removed servers: a server re-added with a new data dir under
//! its old id stays suspended (a wiped machine comes back under a new id).
//!
//! The nemesis keeps the cluster able to recover (the liveness check at the
//! end needs it): a change leaves a majority of the new voters able to vote
//! (not wiped, not suspended), not counting a server just promoted.

use super::*;

use raft::ConfChange;

impl World {
    /// The voters of the configuration node `x` is in: its core's while it
    /// is up, else the one a restart would start from.
    pub(super) fn voters_of(&self, x: usize) -> Vec<NodeId> {
        let node = &self.nodes[x];
        match node.core() {
            Some(core) => core.voters().to_vec(),
            None => node
                .disk
                .restart_membership()
                .latest
                .map_or_else(|| node.bootstrap.voters().to_vec(), |m| m.voters().to_vec()),
        }
    }

    /// Whether the votes node `x` cast so far may still count in an
    /// election: it is a voter of the newest committed configuration, or
    /// of any node's latest. Once its removal is committed they cannot: a
    /// candidate whose configuration still has it lacks a committed entry,
    /// and the majority of the new voters that holds the entry refuses it
    /// (§5.4.1). (Its new data dir is another matter: see
    /// `Bug::ForgetRemovedIncarnations`.)
    pub(super) fn votes_may_count(&self, x: usize) -> bool {
        let id = self.nodes[x].id;
        let committed = self
            .nodes
            .iter()
            .filter_map(|n| n.committed_config.as_ref())
            .max_by_key(|(index, _)| *index)
            .map_or_else(
                || self.nodes[x].bootstrap.is_voter(id),
                |(_, m)| m.is_voter(id),
            );
        // Any node's configuration: a follower may hold a promotion its
        // leader has not committed yet.
        committed
            || self
                .nodes
                .iter()
                .any(|n| n.core().is_some_and(|c| c.membership().0.is_voter(id)))
    }

    /// Whether node `x` can vote once it is a voter: its data dir was not
    /// wiped under its peers' books, and no peer suspended it.
    pub(super) fn can_vote(&self, x: usize) -> bool {
        let node = &self.nodes[x];
        let (id, incarnation) = (node.id, node.incarnation);
        !node.wiped
            && match node.vote_right {
                VoteRight::Allowed => true,
                VoteRight::Suspended => false,
                // A new data dir that a peer knows another incarnation of
                // will be suspended when that peer's verdict arrives.
                VoteRight::Pending { .. } => self.nodes.iter().all(|n| {
                    n.book
                        .peers
                        .get(&id)
                        .is_none_or(|r| r.incarnation == incarnation && !r.reincarnated)
                }),
            }
    }

    /// Whether `voters` keep a majority that can vote, without `except`.
    fn keeps_a_voting_majority(&self, voters: &[NodeId], except: Option<NodeId>) -> bool {
        let able = voters
            .iter()
            .filter(|&&v| Some(v) != except && self.can_vote(v as usize - 1))
            .count();
        able > voters.len() / 2
    }

    /// Whether wiping `x` still leaves every configuration a node is in
    /// with a majority that can vote.
    pub(super) fn wipe_keeps_majorities(&self, x: usize) -> bool {
        let id = self.nodes[x].id;
        (0..self.nodes.len()).all(|y| {
            let voters = self.voters_of(y);
            !voters.contains(&id) || self.keeps_a_voting_majority(&voters, Some(id))
        })
    }

    pub(super) fn membership_fault(&mut self) {
        let Some(l) = (0..self.nodes.len())
            .filter(|&x| {
                self.nodes[x].core().is_some_and(|c| c.is_leader())
                    && self.nodes[x].paused_until <= self.now
            })
            .max_by_key(|&x| self.nodes[x].role.1)
        else {
            return;
        };
        let Some(core) = self.nodes[l].core() else {
            return;
        };
        let leader = self.nodes[l].id;
        let (config, index) = core.membership();
        // One change at a time (§4.1): while one is pending the core would
        // refuse another; ask for a transfer only, and above all replace
        // no data dir for a change that will not happen.
        let settled = index <= core.commit_index();
        let config = config.clone();
        let voters = config.voters().to_vec();
        let learners = config.learners().to_vec();
        let outsiders: Vec<NodeId> = self
            .ids
            .iter()
            .copied()
            .filter(|&id| settled && id != leader && !config.contains(id))
            .collect();

        let mut choices: Vec<u8> = Vec::new();
        let others: Vec<NodeId> = voters.iter().copied().filter(|&v| v != leader).collect();
        if !others.is_empty() {
            choices.push(0);
        }
        // Now and then a removal may leave a single voter: the quorum-of-one
        // paths are worth a visit.
        let single_voter_ok = self.rng.chance(0.2);
        let removable: Vec<NodeId> = voters
            .iter()
            .copied()
            .filter(|&v| {
                let rest: Vec<NodeId> = voters.iter().copied().filter(|&w| w != v).collect();
                !rest.is_empty()
                    && (rest.len() >= 2 || single_voter_ok)
                    && self.keeps_a_voting_majority(&rest, None)
            })
            .chain(learners.iter().copied())
            .collect();
        if settled && !removable.is_empty() {
            choices.push(1);
        }
        if !outsiders.is_empty() {
            choices.push(2);
        }
        let promotable: Vec<NodeId> = learners
            .iter()
            .copied()
            .filter(|&id| {
                let mut grown = voters.clone();
                grown.push(id);
                self.can_vote(id as usize - 1) && self.keeps_a_voting_majority(&grown, Some(id))
            })
            .collect();
        if settled && !promotable.is_empty() {
            choices.push(3);
        }
        if choices.is_empty() {
            return;
        }
        let change = match self.rng.pick(&choices) {
            0 => {
                let target = self.rng.pick(&others);
                let result = self.nodes[l]
                    .driver
                    .as_mut()
                    .map(|d| d.transfer_leadership(target));
                self.stats.transfers += 1;
                let text = match result {
                    Some(Ok(())) => format!("n{leader} hands leadership to n{target} (§3.10)"),
                    Some(Err(e)) => format!("n{leader} refuses to transfer to n{target}: {e}"),
                    None => return,
                };
                self.trace(text);
                self.after_input(l);
                return;
            }
            1 => ConfChange::Remove {
                id: self.rng.pick(&removable),
            },
            2 => {
                let id = self.rng.pick(&outsiders);
                if self.rng.chance(0.5) {
                    self.replace_data_dir(id as usize - 1);
                }
                ConfChange::AddLearner {
                    id,
                    address: format!("n{id}"),
                }
            }
            _ => ConfChange::Promote {
                id: self.rng.pick(&promotable),
            },
        };
        let Some(driver) = self.nodes[l].driver.as_mut() else {
            return;
        };
        let text = match driver.propose_conf_change(&change) {
            Ok((index, term)) => {
                self.stats.membership_changes += 1;
                format!("n{leader} proposes {change:?} at {index}/{term} (thesis §4.1)")
            }
            Err(e) => format!("n{leader} refuses {change:?}: {e}"),
        };
        self.trace(text);
        self.after_input(l);
    }

    /// The machine of server `x` comes back with a new, empty data dir
    /// before it is added again (`raftkv server --join`): a new
    /// incarnation, no configuration of its own, and a vote right that
    /// waits for a configuration that contains it.
    fn replace_data_dir(&mut self, x: usize) {
        if self.nodes[x].is_up() {
            self.crash(x, false);
        }
        let incarnation = self.new_data_dir(x);
        let node = &mut self.nodes[x];
        node.vote_right = VoteRight::for_joining_server();
        node.bootstrap = Membership::new(&[], &[]);
        node.wiped = false;
        let id = node.id;
        self.trace(format!(
            "n{id} gets a new data dir to join again, incarnation {incarnation:016x}"
        ));
        let at = self.now + self.rng.range(5_000, 300_000);
        let inc = self.nodes[x].inc;
        self.schedule(at, Event::Restart { node: x, inc });
    }

    /// After each input of node `x`: what raftkv's `follow_configuration`
    /// does around the core. A pending vote right settles once the
    /// configuration makes this node a voter whom every other voter
    /// cleared. The book of peers keeps removed servers (see
    /// `Bug::ForgetRemovedIncarnations` for why).
    pub(super) fn follow_configuration(&mut self, x: usize) {
        let forget = self.has_bug(crate::Bug::ForgetRemovedIncarnations);
        let node = &mut self.nodes[x];
        let Some(core) = node.driver.as_ref().map(Driver::core) else {
            return;
        };
        let me = node.id;
        let (config, index) = core.membership();
        let settled = core.commit_index() >= index;
        let mut allowed = false;
        if matches!(node.vote_right, VoteRight::Pending { .. }) {
            allowed = node.vote_right.settle(me, config.voters());
        }
        let mut gone = Vec::new();
        if settled && node.committed_config.as_ref().map(|(i, _)| *i) != Some(index) {
            if let Some((_, before)) = &node.committed_config {
                gone = before
                    .members()
                    .into_iter()
                    .filter(|&id| id != me && !config.contains(id))
                    .collect();
                if before != config && index > self.newest_committed_config {
                    // Counted once, by the first node that sees it committed.
                    self.stats.membership_changes_committed += 1;
                }
            }
            self.newest_committed_config = self.newest_committed_config.max(index);
            node.committed_config = Some((index, config.clone()));
        }
        if forget {
            for &id in &gone {
                node.book.peers.remove(&id);
            }
            for id in gone {
                self.trace(format!(
                    "n{me} forgets n{id}'s incarnation: its removal is committed (BUG)"
                ));
            }
        }
        if allowed {
            self.vote_right_allowed(x, "it is a voter now, and every other voter cleared it");
        }
    }

    /// Node `x`'s vote right became Allowed.
    pub(super) fn vote_right_allowed(&mut self, x: usize, why: &str) {
        if let Some(driver) = self.nodes[x].driver.as_mut() {
            driver.set_may_vote(true);
        }
        let me = self.nodes[x].id;
        self.trace(format!("n{me} may vote: {why}"));
        if self.nodes[x].wiped {
            self.fail(
                ViolationKind::ElectionSafety,
                format!(
                    "n{me} regained its vote after its data dir was wiped: it may vote twice in a term"
                ),
            );
        }
    }
}
