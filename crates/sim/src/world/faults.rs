//! The nemesis: partitions, pauses and stopped clocks, crashes and power
//! losses, wiped data dirs (with `raft::incarnation`'s handshake), and
//! restarts.

use super::*;

impl World {
    pub(super) fn fault(&mut self) {
        if !self.faults_on {
            return;
        }
        let at = self.now + self.rng.range(100_000, 1_200_000);
        self.schedule(at, Event::Fault);
        let mix = self.opts.faults;
        let mut kinds = Vec::new();
        if mix.network_faults() {
            kinds.push(0);
        }
        if mix.node_faults() {
            kinds.push(1);
        }
        if mix.snapshot {
            kinds.push(2);
        }
        if mix.pause || mix.clock_stop {
            kinds.push(3);
        }
        if mix.wipe {
            kinds.push(4);
        }
        if mix.membership {
            kinds.push(5);
        }
        if kinds.is_empty() {
            return;
        }
        match self.rng.pick(&kinds) {
            0 => {
                if self.net.any_cut() && self.rng.chance(0.4) {
                    self.net.heal();
                    self.net_epoch += 1;
                    self.trace("network healed".to_string());
                } else {
                    self.network_fault();
                }
            }
            1 => self.crash_fault(),
            3 => self.pause_fault(),
            4 => self.wipe_fault(),
            5 => self.membership_fault(),
            _ => self.snapshot_fault(),
        }
    }

    /// Pauses one node, or stops its clock, for 0.2-1 s; a leader more
    /// often than not (a paused leader is what a lease must survive).
    pub(super) fn pause_fault(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&x| self.nodes[x].is_up())
            .collect();
        if up.is_empty() {
            return;
        }
        let leaders: Vec<usize> = up
            .iter()
            .copied()
            .filter(|&x| self.nodes[x].core().is_some_and(|c| c.is_leader()))
            .collect();
        let x = if !leaders.is_empty() && self.rng.chance(0.7) {
            self.rng.pick(&leaders)
        } else {
            self.rng.pick(&up)
        };
        let mix = self.opts.faults;
        let clock_stop = mix.clock_stop && (!mix.pause || self.rng.chance(0.5));
        let until = self.now + self.rng.range(200_000, 1_000_000);
        let id = self.nodes[x].id;
        let ms = (until - self.now) / 1000;
        if clock_stop {
            self.nodes[x].clock_stopped_until = until;
            self.trace(format!("n{id}'s clock stops for {ms} ms"));
        } else {
            self.nodes[x].paused_until = until;
            self.trace(format!("n{id} pauses for {ms} ms"));
        }
    }

    pub(super) fn network_fault(&mut self) {
        let mix = self.opts.faults;
        let n = self.nodes.len();
        if n < 2 {
            return;
        }
        let mut kinds = Vec::new();
        if mix.partition {
            kinds.push(0);
        }
        if mix.asymmetric {
            kinds.push(1);
        }
        if mix.bridge && n >= 3 {
            kinds.push(2);
        }
        if kinds.is_empty() {
            return;
        }
        self.net.heal();
        self.net_epoch += 1;
        self.stats.partitions += 1;
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let text = match self.rng.pick(&kinds) {
            0 => {
                let k = self.rng.range(1, n as u64 - 1) as usize;
                let (a, b) = order.split_at(k);
                for &x in a {
                    for &y in b {
                        self.net.cut_link(x, y);
                        self.net.cut_link(y, x);
                    }
                }
                format!("partition {} | {}", fmt_group(a), fmt_group(b))
            }
            1 => {
                let x = order[0];
                if self.rng.chance(0.5) {
                    (0..n).for_each(|y| self.net.cut_link(x, y));
                    format!("asymmetric: n{} can receive but not send", x + 1)
                } else {
                    (0..n).for_each(|y| self.net.cut_link(y, x));
                    format!("asymmetric: n{} can send but not receive", x + 1)
                }
            }
            _ => {
                if n >= 5 && self.rng.chance(0.5) {
                    // Jepsen's bridge: two halves that share one node.
                    let half = (n - 1) / 2;
                    let (a, rest) = order.split_at(half);
                    let (bridge, b) = rest.split_at(1);
                    for &x in a {
                        for &y in b {
                            self.net.cut_link(x, y);
                            self.net.cut_link(y, x);
                        }
                    }
                    format!(
                        "bridge: {} | {} joined only through n{}",
                        fmt_group(a),
                        fmt_group(b),
                        bridge[0] + 1
                    )
                } else {
                    let (x, y) = (order[0], order[1]);
                    for z in 0..n {
                        if z != y {
                            self.net.cut_link(x, z);
                            self.net.cut_link(z, x);
                        }
                    }
                    format!("bridge: n{} can reach only n{}", x + 1, y + 1)
                }
            }
        };
        self.trace(text);
        let epoch = self.net_epoch;
        let at = self.now + self.rng.range(200_000, 5_000_000);
        self.schedule(at, Event::HealNetwork { epoch });
    }

    // ----- Wiped data dirs (`raft::incarnation`) -------------------------------

    /// Wipes the data dir of an up node, if the run can afford one more
    /// node that never votes again.
    pub(super) fn wipe_fault(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&x| self.nodes[x].is_up() && self.may_wipe(x))
            .collect();
        if !up.is_empty() {
            let x = self.rng.pick(&up);
            self.wipe(x);
        }
    }

    /// A wiped node never votes again (until membership changes re-add it),
    /// so at most `n - quorum` nodes may be wiped, or no majority of voters
    /// is left and the liveness check would fail for a reason it should.
    pub(super) fn may_wipe(&self, x: usize) -> bool {
        let n = self.nodes.len();
        let wiped = self.nodes.iter().filter(|n| n.wiped).count();
        if self.opts.faults.membership {
            // Configurations change: what counts is that every one in use
            // keeps a majority that can vote.
            return self.nodes[x].wiped || self.wipe_keeps_majorities(x);
        }
        self.nodes[x].wiped || wiped < n - (n / 2 + 1)
    }

    /// Crashes `x` and loses its whole data dir: log, hard state,
    /// snapshots, its book of peers. It comes back with a new incarnation
    /// and a pending vote, which its peers' books must turn into a
    /// suspended one.
    pub(super) fn wipe(&mut self, x: usize) {
        let votes_may_count = self.votes_may_count(x);
        self.crash(x, false);
        let incarnation = self.new_data_dir(x);
        let node = &mut self.nodes[x];
        // Restarted with the flags it was started with: `--cluster` (the
        // bootstrap list) or `--join` (none).
        node.vote_right = if node.bootstrap.voters().is_empty() {
            VoteRight::for_joining_server()
        } else {
            VoteRight::for_new_data_dir(node.id, node.bootstrap.voters())
        };
        node.wiped = votes_may_count;
        let id = node.id;
        self.stats.wipes += 1;
        self.trace(format!(
            "n{id}'s data dir is wiped: it restarts empty, incarnation {incarnation:016x}"
        ));
        let at = self.now + self.rng.range(5_000, 1_000_000);
        let inc = self.nodes[x].inc;
        self.schedule(at, Event::Restart { node: x, inc });
    }

    /// Node `x` (down) gets an empty data dir: no log, no hard state, no
    /// snapshots, an empty book of peers, a new incarnation (returned).
    pub(super) fn new_data_dir(&mut self, x: usize) -> u64 {
        let incarnation = self.rng.next_u64();
        let node = &mut self.nodes[x];
        node.disk = SimDisk::new();
        node.book = IncarnationBook::default();
        node.incarnation = incarnation;
        node.committed_config = None;
        incarnation
    }

    pub(super) fn hello_round(&mut self, x: usize, inc: u32) {
        if !self.alive(x, inc) || !matches!(self.nodes[x].vote_right, VoteRight::Pending { .. }) {
            return;
        }
        for p in 0..self.nodes.len() {
            if p != x && self.nodes[x].vote_right.waits_for(self.nodes[p].id) {
                let at = self.now + self.rng.range(500, 5_000);
                let incarnation = self.nodes[x].incarnation;
                self.schedule(
                    at,
                    Event::Hello {
                        from: x,
                        to: p,
                        incarnation,
                    },
                );
            }
        }
        let at = self.now + 200_000;
        self.schedule(at, Event::HelloRound { node: x, inc });
    }

    pub(super) fn on_hello(&mut self, from: usize, to: usize, incarnation: u64) {
        if !self.nodes[to].is_up() || self.net.is_cut(from, to) {
            return;
        }
        let from_id = self.nodes[from].id;
        let (verdict, _) = self.nodes[to].book.check(from_id, incarnation);
        let at = self.now + self.rng.range(500, 5_000);
        let inc = self.nodes[from].inc;
        self.schedule(
            at,
            Event::HelloReply {
                to: from,
                inc,
                from: to,
                verdict,
            },
        );
    }

    pub(super) fn on_hello_reply(
        &mut self,
        to: usize,
        inc: u32,
        from: usize,
        verdict: PeerVerdict,
    ) {
        if !self.alive(to, inc) || self.net.is_cut(from, to) {
            return;
        }
        let (me, peer) = (self.nodes[to].id, self.nodes[from].id);
        // Settled against the voters in force on this node (thesis §4.1).
        let voters = self.voters_of(to);
        if !self.nodes[to]
            .vote_right
            .on_verdict(me, &voters, peer, verdict)
        {
            return;
        }
        match self.nodes[to].vote_right {
            VoteRight::Allowed => self.vote_right_allowed(to, "every other voter vouched for it"),
            VoteRight::Suspended => self.trace(format!(
                "n{me}'s vote is suspended: n{peer} knew another incarnation of it"
            )),
            VoteRight::Pending { .. } => self.trace(format!("n{me} cleared by n{peer}")),
        }
    }

    pub(super) fn crash_fault(&mut self) {
        let mix = self.opts.faults;
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&x| self.nodes[x].is_up())
            .collect();
        if up.is_empty() {
            return;
        }
        let dirty: Vec<usize> = up
            .iter()
            .copied()
            .filter(|&x| self.nodes[x].disk.unsynced_ops() > 0)
            .collect();
        // A power loss is most interesting with writes in flight.
        let x = if mix.power_loss && !dirty.is_empty() && self.rng.chance(0.7) {
            self.rng.pick(&dirty)
        } else {
            self.rng.pick(&up)
        };
        self.crash_and_schedule_restart(x, false);
    }

    /// Crashes `x` (a power loss if the mix has them) and schedules its
    /// restart: often a quick reboot, so that the node comes back in the
    /// same term, else a longer outage.
    pub(super) fn crash_and_schedule_restart(&mut self, x: usize, quick: bool) {
        let mix = self.opts.faults;
        let power = mix.power_loss && (!mix.crash || self.rng.chance(0.5));
        self.crash(x, power);
        let downtime = if quick || self.rng.chance(0.5) {
            self.rng.range(5_000, 300_000)
        } else {
            self.rng.range(300_000, 3_000_000)
        };
        let at = self.now + downtime;
        let inc = self.nodes[x].inc;
        self.schedule(at, Event::Restart { node: x, inc });
    }

    pub(super) fn crash(&mut self, x: usize, power: bool) {
        // Whoever waited on this process hears nothing more from it.
        let mut answers = Vec::new();
        if let Some(mut driver) = self.nodes[x].driver.take() {
            driver.stop();
            answers = driver.take_effects();
        }
        let rng = &mut self.rng;
        let node = &mut self.nodes[x];
        node.inc += 1;
        node.written_seq = 0;
        node.synced_seq = 0;
        node.fsync_scheduled = false;
        node.paused_until = 0;
        node.clock_stopped_until = 0;
        let loss = if power {
            let unsynced = node.disk.unsynced_ops() as u64;
            let keep = rng.range(0, unsynced) as usize;
            // A rename whose directory was not fsynced may or may not be
            // on disk.
            node.disk.power_loss(keep, || rng.chance(0.5))
        } else {
            node.disk.process_crash()
        };
        node.digest = state_digest(&KvStore::new());
        node.checked_applied = 0;
        node.last_commit = 0;
        node.leader_last = None;
        node.role = (RaftState::Follower, 0);
        // Volatile snapshot state: a temp file not yet renamed, transfers
        // under way, a half-received snapshot.
        let lost_write = node.writing.take().filter(|w| !w.renamed());
        node.sending.clear();
        node.incoming = None;
        node.chunk_replies.clear();
        node.read_waiters.clear();
        let id = node.id;
        self.stats.crashes += 1;
        let text = if power {
            self.stats.power_losses += 1;
            format!(
                "n{id} crash (power loss: kept {} of {} unsynced writes)",
                loss.kept, loss.unsynced
            )
        } else {
            format!("n{id} crash (process: {} written, all kept)", loss.unsynced)
        };
        self.trace(text);
        if let Some(w) = lost_write {
            self.stats.snapshots_lost += 1;
            self.trace(format!(
                "n{id} lost the snapshot at {} it was writing (not yet renamed)",
                w.index()
            ));
        }
        if loss.renames_lost > 0 {
            self.stats.snapshots_lost += loss.renames_lost as u64;
            self.trace(format!(
                "n{id} lost {} snapshot rename(s): the directory was not fsynced",
                loss.renames_lost
            ));
        }
        for effect in answers {
            if let raft::Effect::Answer(op, _) = effect {
                let outcome = if self.history[op].op.is_read() {
                    Outcome::Failed(format!("n{id} crashed"))
                } else {
                    Outcome::Unknown(format!("n{id} crashed"))
                };
                self.finish(op, outcome);
            }
        }
    }

    pub(super) fn restart(&mut self, x: usize) {
        if self.nodes[x].is_up() {
            return;
        }
        self.start_node(x);
        let node = &self.nodes[x];
        let hs = node.disk.durable_hard_state();
        let text = format!(
            "n{} restart (term {}, vote {}, {} entries on disk{})",
            node.id,
            hs.term,
            fmt_vote(hs.voted_for),
            node.disk.durable_len(),
            fmt_disk_snapshots(&node.disk)
        );
        self.trace(text);
        if self.nodes[x].is_up() {
            self.after_input(x);
        }
    }
}
