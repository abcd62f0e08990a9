//! What scenario tests (`Scenario`) use to drive a world by hand.

use super::*;

impl World {
    pub(crate) fn set_scripted(&mut self) {
        self.scripted = true;
    }

    pub(crate) fn now_us(&self) -> u64 {
        self.now
    }

    /// Runs the events due up to `at` (µs), or up to a violation.
    pub(crate) fn run_until(&mut self, at: u64) {
        while self.violation.is_none() && self.queue.peek().is_some_and(|s| s.at <= at) {
            self.step();
        }
        self.now = self.now.max(at);
    }

    pub(crate) fn step_once(&mut self) -> bool {
        self.step()
    }

    pub(crate) fn leader_id(&self) -> Option<NodeId> {
        (0..self.nodes.len())
            .filter(|&x| self.nodes[x].core().is_some_and(|c| c.is_leader()))
            .max_by_key(|&x| self.nodes[x].core().map_or(0, |c| c.term()))
            .map(|x| self.nodes[x].id)
    }

    pub(crate) fn node_view(&self, x: usize) -> crate::NodeView {
        let n = &self.nodes[x];
        let core = n.core();
        crate::NodeView {
            id: n.id,
            up: core.is_some(),
            leader: core.is_some_and(|c| c.is_leader()),
            term: core.map_or(n.disk.durable_hard_state().term, |c| c.term()),
            commit: core.map_or(0, |c| c.commit_index()),
            applied: n.applied(),
            snapshot_index: core.map_or(0, |c| c.snapshot_index()),
            last_index: core.map_or(0, |c| c.last_log_index()),
            disk_log_start: n.disk.log_start().0,
            disk_last: n.disk.durable_last_index(),
            disk_snapshots: n.disk.snapshot_list(),
            installs: n.installs,
        }
    }

    pub(crate) fn crash_node(&mut self, x: usize, power: bool) {
        if self.nodes[x].is_up() {
            self.crash(x, power);
        }
    }

    pub(crate) fn restart_node(&mut self, x: usize) {
        self.restart(x);
    }

    pub(crate) fn isolate(&mut self, x: usize) {
        for y in 0..self.nodes.len() {
            self.net.cut_link(x, y);
            self.net.cut_link(y, x);
        }
        self.net_epoch += 1;
        let id = self.nodes[x].id;
        self.trace(format!("isolate n{id}"));
    }

    pub(crate) fn heal_network(&mut self) {
        self.net.heal();
        self.net_epoch += 1;
        self.trace("network healed".to_string());
    }
}
