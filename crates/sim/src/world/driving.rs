//! Each node runs `raft::Driver`, the driver that ships: the world feeds
//! it (ticks, messages, client operations, "the fsync is done") and carries
//! out its effects in the virtual world, checking each against the rules:
//!
//! * `Send`: only a leader's AppendEntries and TimeoutNow may leave before
//!   the disk;
//! * `Disk`: a write goes to the node's [`SimDisk`], unsynced; an fsync
//!   follows in the same step or a few virtual milliseconds later (the RNG
//!   decides), and only then does the world report it durable;
//! * `SendDurable`: what the message promises must be on the disk;
//! * `Applied`: State Machine Safety, entry by entry and state by state;
//! * `Answer`: the client's operation completes (linearizability is
//!   checked over all of them at the end).

use raft::{
    ClientError, DiskOp, Driver, Effect, LogIndex, Message, NodeId, RaftCore, Rpc, Term, TickClock,
    VoteRight,
};

use super::sim_kv::SimKv;
use super::{durably_covers, fmt_vote, Event, World};
use crate::checker::ViolationKind;
use crate::client::Outcome;
use crate::trace::fmt_message;
use raftkv_store::{encode_query, encode_stamped, KvOutput, KvQuery};

/// The driver of one simulated node: the real one, over the KV store. Its
/// waiters are operation numbers in the history.
pub(super) type NodeDriver = Driver<SimKv, usize>;

impl World {
    pub(super) fn start_node(&mut self, x: usize) {
        let id = self.nodes[x].id;
        // §7: the newest snapshot plus the log after it.
        let (recovered, snapshot, kv) = match self.recover_node(x) {
            Ok(r) => r,
            Err(e) => {
                self.fail(
                    ViolationKind::StorageContract,
                    format!("n{id} cannot restart from its disk: {e}"),
                );
                return;
            }
        };
        let seed = self.rng.next_u64();
        // Thesis §4.1: the snapshot's configuration, then the log's
        // configuration entries (the core reads them); with neither, the
        // bootstrap list (`--cluster`), or none for a joining server.
        let membership = snapshot
            .as_ref()
            .map_or_else(|| self.nodes[x].bootstrap.clone(), |(_, _, m)| m.clone());
        let snapshot = snapshot.map(|(index, term, _)| (index, term));
        match RaftCore::start(
            id,
            membership,
            self.config.clone(),
            recovered,
            snapshot,
            seed,
        ) {
            Ok(mut core) => {
                if let Some(bug) = self.opts.bug {
                    core.set_bug_switches(bug.switches());
                }
                let ignore = self.has_bug(crate::Bug::IgnoreVoteRight);
                core.set_may_vote(ignore || self.nodes[x].vote_right.may_vote());
                let skip_restore = self.has_bug(crate::Bug::InstallWithoutRestore);
                let node = &mut self.nodes[x];
                node.role = (core.state(), core.term());
                node.voted_for = core.voted_for();
                let mut driver = Driver::new(core, SimKv::new(kv, skip_restore));
                driver.record_applied(true);
                node.digest = driver.state_machine().digest();
                node.driver = Some(driver);
                if let Some((index, _)) = snapshot {
                    // The snapshot counts as committed and applied.
                    node.checked_applied = index;
                    node.last_commit = index;
                    let digest = node.digest;
                    let result = self.inv.on_state(id, index, digest, true);
                    self.check(result);
                }
            }
            Err(e) => {
                self.fail(
                    ViolationKind::StorageContract,
                    format!("n{id} cannot restart from its disk: {e}"),
                );
                return;
            }
        }
        let inc = self.nodes[x].inc;
        let period = self.nodes[x].tick_period;
        let at = self.now + self.rng.range(1, period);
        self.nodes[x].clock = TickClock::with_first_tick(at, period);
        self.schedule(at, Event::Tick { node: x, inc });
        if matches!(self.nodes[x].vote_right, VoteRight::Pending { .. }) {
            self.schedule(at, Event::HelloRound { node: x, inc });
        }
    }

    pub(super) fn after_input(&mut self, x: usize) {
        self.drain(x);
        self.check_node(x);
    }

    /// Runs node `x`'s driver until it has nothing more to do, carrying out
    /// its effects; then decides when the disk syncs what it was given.
    pub(super) fn drain(&mut self, x: usize) {
        loop {
            if self.violation.is_some() {
                return;
            }
            let Some(driver) = self.nodes[x].driver.as_mut() else {
                return;
            };
            // As `RaftNode` does: IO first, then the state machine's work.
            driver.process_ready();
            if !driver.has_effects() {
                driver.apply_committed();
            }
            let effects = driver.take_effects();
            if !effects.is_empty() {
                self.run_effects(x, effects);
                continue;
            }
            let node = &self.nodes[x];
            if node.written_seq <= node.synced_seq {
                return;
            }
            if self.rng.chance(self.sync_inline) {
                self.sync_now(x);
            } else {
                if !self.nodes[x].fsync_scheduled {
                    self.nodes[x].fsync_scheduled = true;
                    let (lo, hi) = self.fsync_latency;
                    let at = self.now + self.rng.range(lo, hi);
                    let inc = self.nodes[x].inc;
                    self.schedule(at, Event::Fsync { node: x, inc });
                }
                return;
            }
        }
    }

    /// fsync: everything written so far is durable; the driver hears it.
    pub(super) fn sync_now(&mut self, x: usize) {
        let node = &mut self.nodes[x];
        node.disk.sync();
        node.synced_seq = node.written_seq;
        let seq = node.synced_seq;
        if let Some(driver) = node.driver.as_mut() {
            driver.durable(seq);
        }
    }

    fn run_effects(&mut self, x: usize, effects: Vec<Effect<usize, KvOutput>>) {
        // Roles first: a second leader in a term is the root cause of what
        // its effects would show (Election Safety before Log Matching).
        self.check_node(x);
        let mut applied_any = false;
        for effect in effects {
            if self.violation.is_some() || !self.nodes[x].is_up() {
                return;
            }
            match effect {
                Effect::Send(m) => {
                    // A leader's AppendEntries (§10.2.1: written in parallel
                    // with the followers) and its TimeoutNow (§3.10: sent
                    // once the target holds the whole log; it promises
                    // nothing about the leader's disk) may go first.
                    if !matches!(m.rpc, Rpc::AppendEntries(_) | Rpc::TimeoutNow(_)) {
                        let text = format!(
                            "n{} sends {} before persisting its Ready",
                            m.from,
                            fmt_message(&m)
                        );
                        self.fail(ViolationKind::PersistBeforeReply, text);
                        return;
                    }
                    // ... and only in a term the disk already holds: a
                    // power loss must not be able to take the leader back
                    // before the term its messages speak for.
                    let durable_term = self.nodes[x].disk.durable_hard_state().term;
                    if m.rpc.term() > durable_term {
                        let text = format!(
                            "n{} sends {} before its term is durable (its disk holds term {durable_term})",
                            m.from,
                            fmt_message(&m)
                        );
                        self.fail(ViolationKind::PersistBeforeReply, text);
                        return;
                    }
                    self.send(m);
                }
                Effect::SendDurable(m) => self.send_durable(x, m),
                Effect::Disk(op) => self.write(x, op),
                Effect::Answer(op, result) => self.answer(x, op, result),
                Effect::ReadIndex { id, index } => self.read_index_known(x, id, index),
                Effect::SendSnapshot(peer) => self.send_snapshots(x, vec![peer]),
                Effect::Applied(entry) => {
                    applied_any = true;
                    self.check_applied(x, &entry);
                }
                // Role changes are seen by `check_node`.
                Effect::Event(_) => {}
            }
        }
        if applied_any && self.violation.is_none() && self.nodes[x].is_up() {
            self.after_apply_snapshots(x);
        }
    }

    /// A disk op: written now, durable at the next fsync.
    fn write(&mut self, x: usize, op: DiskOp) {
        let id = self.nodes[x].id;
        self.nodes[x].written_seq = op.seq();
        match op {
            DiskOp::Persist {
                hard_state,
                entries,
                ..
            } => {
                if !entries.is_empty() && !self.check_written(x, &entries) {
                    return;
                }
                if let Err(e) = self.nodes[x].disk.write(hard_state.as_ref(), &entries) {
                    self.fail(ViolationKind::StorageContract, format!("n{id}: {e}"));
                }
            }
            DiskOp::Compact { index, .. } => {
                let n = self.nodes[x].disk.compact(index);
                self.stats.compactions += 1;
                self.trace(format!(
                    "n{id} log compacted up to {index} ({n} entries off the disk)"
                ));
            }
            DiskOp::Reset { index, term, .. } => {
                self.nodes[x].disk.reset(index, term);
                self.trace(format!("n{id} log reset to end at {index}/{term}"));
            }
        }
    }

    /// Leader Append-Only and Log Matching over what a node writes.
    fn check_written(&mut self, x: usize, entries: &[raft::LogEntry]) -> bool {
        let node = &self.nodes[x];
        let id = node.id;
        let Some(core) = node.core() else {
            return false;
        };
        let mut result = Ok(());
        let leader_term = core.is_leader().then(|| core.term());
        if let (true, Some((t, last))) = (core.is_leader(), node.leader_last) {
            let first = entries[0].index;
            if t == core.term() && (first <= last || entries.iter().any(|e| e.term != t)) {
                result = Err((
                    ViolationKind::LeaderAppendOnly,
                    format!(
                        "leader n{id} of term {t} rewrote its log from index {first} (its log ended at {last})"
                    ),
                ));
            }
        }
        if result.is_ok() {
            result = self.inv.on_written(id, core, entries, node.last_commit);
        }
        if let (Some(t), Some(e)) = (leader_term, entries.last()) {
            // What this leader has handed out for writing, for Leader
            // Append-Only: its next writes must come after it.
            self.nodes[x].leader_last = Some((t, e.index));
        }
        self.check(result);
        self.violation.is_none()
    }

    /// A message the driver released after its disk op: check the disk
    /// keeps what it promises, then send it.
    fn send_durable(&mut self, x: usize, m: Message) {
        if let Err(text) = self.durable_before_sending(x, &m) {
            self.fail(ViolationKind::PersistBeforeReply, text);
            return;
        }
        if let Rpc::InstallSnapshotReply(r) = &m.rpc {
            // The answer to a snapshot chunk: it goes back on the chunk's
            // RPC, the oldest still unanswered from that leader.
            let Some((rpc, installs)) = self.nodes[x]
                .chunk_replies
                .get_mut(&m.to)
                .and_then(|q| q.pop_front())
            else {
                return;
            };
            if let (true, Some(index)) = (r.installed, installs) {
                let disk = &self.nodes[x].disk;
                if !durably_covers(disk, index) {
                    let text = format!(
                        "n{} says snapshot {index} is installed, but its disk reaches only {}",
                        m.from,
                        disk.durable_last_index()
                    );
                    self.fail(ViolationKind::PersistBeforeReply, text);
                    return;
                }
            }
            self.send_rpc(m, rpc);
            return;
        }
        self.send(m);
    }

    /// Figure 2: "respond to RPCs only after updating stable storage". A
    /// granted vote, a vote request and a successful append reply each
    /// promise something about this node's disk; check the disk keeps it.
    pub(super) fn durable_before_sending(&self, x: usize, m: &Message) -> Result<(), String> {
        let disk = &self.nodes[x].disk;
        let hs = disk.durable_hard_state();
        let voted = |term: Term, for_whom: NodeId| {
            hs.term > term || (hs.term == term && hs.voted_for == Some(for_whom))
        };
        let ok = match &m.rpc {
            Rpc::RequestVoteReply(r) if r.vote_granted && !r.pre_vote => voted(r.term, m.to),
            Rpc::RequestVote(a) if !a.pre_vote => voted(a.term, m.from),
            Rpc::AppendEntriesReply(r) if r.success => {
                hs.term > r.term || durably_covers(disk, r.match_index)
            }
            Rpc::InstallSnapshotReply(r) => hs.term >= r.term,
            _ => true,
        };
        if ok {
            return Ok(());
        }
        Err(format!(
            "n{} sends {} but its disk holds term {}, vote {}, {} entries",
            m.from,
            fmt_message(m),
            hs.term,
            fmt_vote(hs.voted_for),
            disk.durable_len()
        ))
    }

    /// State Machine Safety: the entry applied next is the one every node
    /// applies there, and the state it leads to is the same everywhere.
    fn check_applied(&mut self, x: usize, entry: &raft::LogEntry) {
        let node = &self.nodes[x];
        let id = node.id;
        let expected = node.checked_applied + 1;
        let result = self.inv.on_applied(id, entry, expected);
        self.check(result);
        if self.violation.is_some() {
            return;
        }
        let node = &mut self.nodes[x];
        node.checked_applied = entry.index;
        if let Some(digest) = node
            .driver
            .as_ref()
            .and_then(|d| d.state_machine().digest_after(entry.index))
        {
            node.digest = digest;
        }
        let digest = node.digest;
        let result = self.inv.on_state(id, entry.index, digest, false);
        self.check(result);
    }

    /// Read `id` got its read index: it must not be older than what was
    /// committed anywhere when the read arrived (thesis §6.4).
    fn read_index_known(&mut self, x: usize, id: u64, index: LogIndex) {
        let Some((op, committed)) = self.nodes[x].read_waiters.remove(&id) else {
            return;
        };
        if index < committed {
            let text = format!(
                "n{} answered read op {op} at read index {index}, but index {committed} was committed before the read arrived",
                self.nodes[x].id
            );
            self.fail(ViolationKind::StaleRead, text);
        }
    }

    /// The driver answered operation `op`.
    fn answer(&mut self, x: usize, op: usize, result: Result<KvOutput, ClientError>) {
        let id = self.nodes[x].id;
        let is_read = self.history[op].op.is_read();
        let outcome = match result {
            Ok(out) => {
                let acked = self.history[op].proposed_at;
                if self.finish(op, Outcome::Ok(out)) && !is_read {
                    if let Some((index, term)) = acked {
                        self.inv.on_acknowledged(index, term, op);
                    }
                }
                return;
            }
            Err(ClientError::NotLeader { leader_hint }) => {
                let client = self.history[op].client;
                self.clients[client].leader_hint = leader_hint;
                Outcome::Failed("not leader".into())
            }
            Err(ClientError::LeadershipLost) => Outcome::Failed("leadership lost".into()),
            // The simulator's commands are a few bytes, far below the limit.
            Err(ClientError::TooLarge { .. }) => Outcome::Failed("too large".into()),
            Err(ClientError::Unknown) => {
                Outcome::Unknown(format!("n{id} installed a snapshot covering its index"))
            }
            Err(ClientError::Stopped) if is_read => Outcome::Failed(format!("n{id} crashed")),
            Err(ClientError::Stopped) => Outcome::Unknown(format!("n{id} crashed")),
        };
        self.finish(op, outcome);
    }

    /// A client's operation reaches node `x`'s driver.
    pub(super) fn submit_to_driver(&mut self, x: usize, op: usize) {
        let committed = self.inv.committed_len();
        let now_ms = self.now / 1000;
        let command = self.history[op].op.command();
        let key = self.history[op].op.key().to_vec();
        let node = &mut self.nodes[x];
        let Some(driver) = node.driver.as_mut() else {
            return;
        };
        match command {
            None => {
                let before = driver.core().lease_reads_served();
                let query = encode_query(&KvQuery::Get { key });
                if let Some(id) = driver.read(query, op) {
                    node.read_waiters.insert(id, (op, committed));
                }
                self.stats.lease_reads += driver.core().lease_reads_served() - before;
            }
            Some(cmd) => {
                // Stamped with the virtual clock, as a leader stamps its
                // wall clock (`KvCommand::At`).
                if let Some(at) = driver.propose(encode_stamped(&cmd, now_ms), op) {
                    self.history[op].proposed_at = Some(at);
                }
            }
        }
    }
}
