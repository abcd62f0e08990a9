//! The end of a run: heal everything, check that a leader commits
//! (liveness) and keeps every acknowledged write (durability), then check
//! the history for linearizability.

use super::*;

impl World {
    pub(super) fn heal_and_check_liveness(&mut self) {
        self.faults_on = false;
        self.accepting_ops = false;
        self.net.heal();
        self.net_epoch += 1;
        self.net.weather = Weather::calm();
        self.trace("heal: network healed, every node restarted, no more faults".to_string());
        for x in 0..self.nodes.len() {
            if !self.nodes[x].is_up() {
                self.restart(x);
            }
        }
        let healed_at = self.now;
        let Some(leader) = self.await_convergence("healing") else {
            return;
        };
        self.stats.liveness_ms = (self.now - healed_at) / 1000;

        // Failover without client traffic: the leader dies, and the others
        // must elect a new one that commits an entry of its own term (its
        // no-op, §8), which also commits whatever its predecessors left.
        // Only if the others hold a majority of votes: a node whose data dir
        // was wiped votes no more.
        let voters = self.leader_voters(leader);
        let n = voters.len();
        let voters_left = voters
            .iter()
            .filter(|&&v| v as usize - 1 != leader && self.can_vote(v as usize - 1))
            .count();
        let leader = if n >= 3 && voters_left > n / 2 {
            let id = self.nodes[leader].id;
            self.trace(format!("failover check: crash leader n{id}"));
            self.crash(leader, false);
            if self.await_convergence("the leader crashed").is_none() {
                return;
            }
            self.restart(leader);
            match self.await_convergence("the old leader restarted") {
                Some(l) => l,
                None => return,
            }
        } else {
            leader
        };

        // A client write through the leader must now commit everywhere.
        self.clients.push(Client::default());
        let probe_client = self.clients.len() - 1;
        self.unique += 1;
        let op = self.invoke(
            probe_client,
            leader as NodeId + 1,
            KvOp::Set {
                key: b"k0".to_vec(),
                value: format!("{}", self.unique * 10).into_bytes(),
            },
        );
        self.client_arrive(op);
        let deadline = self.now + PROBE_BOUND_US;
        loop {
            if self.violation.is_some() {
                return;
            }
            let done = match (&self.history[op].outcome, self.history[op].proposed_at) {
                (Outcome::Ok(_), Some((index, _))) => self
                    .members_of(leader)
                    .iter()
                    .all(|&x| !self.nodes[x].is_up() || self.nodes[x].applied() >= index),
                _ => false,
            };
            if done {
                break;
            }
            let failed = !self.history[op].is_pending()
                && !matches!(self.history[op].outcome, Outcome::Ok(_));
            if failed || self.now > deadline || !self.step() {
                let text = format!(
                    "a write through leader n{} did not commit on every node within {} ms: {}; {}",
                    leader + 1,
                    PROBE_BOUND_US / 1000,
                    self.history[op].describe(),
                    self.node_summaries().join("; ")
                );
                self.fail(ViolationKind::Liveness, text);
                return;
            }
        }
        // Durability: every acknowledged write is in the final leader's log.
        let final_leader = (0..self.nodes.len())
            .filter(|&x| self.nodes[x].core().is_some_and(|c| c.is_leader()))
            .max_by_key(|&x| self.nodes[x].core().map_or(0, |c| c.term()));
        if let Some(l) = final_leader {
            if let Some(core) = self.nodes[l].core() {
                let result = self.inv.check_durability(l as NodeId + 1, core);
                self.check(result);
            }
        }
    }

    /// Runs events until [`World::converged`] (or a violation), at most
    /// `LIVENESS_BOUND_US` of virtual time. A Liveness violation otherwise.
    pub(super) fn await_convergence(&mut self, after: &str) -> Option<usize> {
        let deadline = self.now + LIVENESS_BOUND_US;
        loop {
            if self.violation.is_some() {
                return None;
            }
            if let Some(l) = self.converged() {
                let text = format!(
                    "converged after {after}: n{} leads term {}, every live node applied {}",
                    self.nodes[l].id,
                    self.nodes[l].role.1,
                    self.nodes[l].applied()
                );
                self.trace(text);
                return Some(l);
            }
            if self.now > deadline || !self.step() {
                let nodes = self.node_summaries().join("; ");
                self.fail(
                    ViolationKind::Liveness,
                    format!(
                        "within {} ms after {after}, no leader committed an entry of its term on every live node: {nodes}",
                        LIVENESS_BOUND_US / 1000
                    ),
                );
                return None;
            }
        }
    }

    /// A leader such that a majority of its voters is up, and every live
    /// member of its configuration (voters and learners) is in its term and
    /// has committed and applied the leader's whole log, which ends in its
    /// own term. Servers the configuration removed are not waited for.
    pub(super) fn converged(&self) -> Option<usize> {
        let leader = (0..self.nodes.len())
            .filter(|&x| self.nodes[x].core().is_some_and(|c| c.is_leader()))
            .max_by_key(|&x| self.nodes[x].core().map_or(0, |c| c.term()))?;
        let lc = self.nodes[leader].core()?;
        let (term, last) = (lc.term(), lc.last_log_index());
        // A leader handing over (§3.10) refuses proposals until the
        // transfer ends one way or the other.
        if lc.commit_index() != last || lc.last_log_term() != term || lc.transfer_target().is_some()
        {
            return None;
        }
        let voters = lc.voters();
        let up = voters
            .iter()
            .filter(|&&v| self.nodes[v as usize - 1].is_up())
            .count();
        let all = self.members_of(leader).into_iter().all(|x| {
            let n = &self.nodes[x];
            !n.is_up()
                || n.core().is_some_and(|c| {
                    c.term() == term && c.commit_index() == last && n.applied() == last
                }) && n.written_seq == n.synced_seq
        });
        (all && up > voters.len() / 2).then_some(leader)
    }

    /// The voters of `leader`'s configuration.
    fn leader_voters(&self, leader: usize) -> Vec<NodeId> {
        self.nodes[leader]
            .core()
            .map_or_else(Vec::new, |c| c.voters().to_vec())
    }

    /// The nodes (by position) that are members of `leader`'s
    /// configuration: voters and learners.
    fn members_of(&self, leader: usize) -> Vec<usize> {
        self.nodes[leader].core().map_or_else(Vec::new, |c| {
            c.membership()
                .0
                .members()
                .into_iter()
                .map(|id| id as usize - 1)
                .collect()
        })
    }

    pub(super) fn check_linearizability(&mut self) {
        let ops: Vec<_> = self
            .history
            .iter()
            .filter_map(HistoryOp::to_lin_op)
            .collect();
        let verdict = crate::linearizability::check_history(&ops, self.opts.lin_budget);
        self.stats.lin_inconclusive_keys = verdict.inconclusive.len();
        if let Some((key, result)) = verdict.violations.first() {
            let key_s = String::from_utf8_lossy(key).into_owned();
            let detail = crate::describe_lin_violation(&self.history, key, result);
            self.fail(
                ViolationKind::Linearizability,
                format!("key {key_s}: {detail}"),
            );
        }
    }
}
