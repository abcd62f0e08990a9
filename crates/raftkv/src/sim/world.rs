//! The world: N `RaftCore`s with their disks and KV stores, a network,
//! clients, a virtual clock and one event queue, all driven by one RNG.
//!
//! Every node runs `raft::Driver`, the same driver `RaftNode` runs in
//! production, over the real `KvStore` ([`driving`]): the world supplies
//! only what is around it. Its disk ops go to the node's [`SimDisk`],
//! unsynced; an fsync follows, in the same step or a few virtual
//! milliseconds later (the RNG decides), and only then does the driver hear
//! that they are durable and release what waited for them. A crash between
//! a write and its fsync loses what the disk did not keep.
//!
//! Snapshots and InstallSnapshot (§7), when the fault mix has them, are
//! driven in [`snapshots`]: the driver's half of `RaftServer`'s
//! `maybe_snapshot`, `send_snapshots` and `receive_snapshot_chunk`, with
//! crash points between their steps.

mod driving;
mod sim_kv;
mod snapshots;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use self::driving::NodeDriver;
use self::sim_kv::SimKv;
use self::snapshots::{Incoming, SnapshotWrite, Transfer};

use raft::{
    Driver, IncarnationBook, LogIndex, Message, NodeId, PeerVerdict, RaftConfig, RaftCore,
    RaftState, Rpc, Term, TickClock, VoteRight,
};

use crate::kv::{KvOutput, KvStore};
use crate::sim::checker::{Invariants, LogView, Violation, ViolationKind};
use crate::sim::client::{choose_op, Client, HistoryOp, KvOp, Outcome};
use crate::sim::disk::SimDisk;
use crate::sim::network::{Fate, Network, Weather};
use crate::sim::rng::SimRng;
use crate::sim::snapshot::{state_digest, CrashPoint};
use crate::sim::trace::{fmt_message, fmt_time, Trace};
use crate::sim::{SimOptions, SimStats};

/// One tick of the core's logical clock, in virtual µs (RaftConfig's default).
const TICK_US: u64 = 10_000;
/// A client gives up on an operation after this long (a little under two
/// maximum election timeouts), and tries another node next.
const CLIENT_TIMEOUT_US: u64 = 1_000_000;
/// After the last fault heals, a leader must have committed within this.
pub const LIVENESS_BOUND_US: u64 = 15_000_000;
/// Chance that a node is crashed soon after it grants a vote or takes office.
const TARGETED_CRASH_CHANCE: f64 = 0.1;
/// …and a client write must then commit everywhere within this.
const PROBE_BOUND_US: u64 = 5_000_000;

#[derive(Debug)]
enum Event {
    Tick {
        node: usize,
        inc: u32,
    },
    Fsync {
        node: usize,
        inc: u32,
    },
    Deliver {
        msg: Message,
        /// The sender's data-dir incarnation when it sent it (the peer
        /// handshake of `raft::incarnation` precedes every message).
        incarnation: u64,
        sent_at: u64,
        dup: bool,
        late: bool,
        /// Pairs an InstallSnapshot chunk with its reply (the RPC of a
        /// real transport); 0 for everything else.
        rpc: u64,
    },
    ClientStart {
        client: usize,
    },
    ClientArrive {
        op: usize,
    },
    ClientTimeout {
        op: usize,
    },
    Fault,
    /// `raft::incarnation`'s handshake: `from` presents its data dir's
    /// incarnation to `to`, whose book judges it.
    Hello {
        from: usize,
        to: usize,
        incarnation: u64,
    },
    /// The verdict of `from`'s book on `to`, in `to`'s life `inc`.
    HelloReply {
        to: usize,
        inc: u32,
        from: usize,
        verdict: PeerVerdict,
    },
    /// A node whose vote is pending greets the voters that have not
    /// cleared it yet (again every 200 ms while it is pending).
    HelloRound {
        node: usize,
        inc: u32,
    },
    /// A targeted crash (see `check_node`), if the node is still in the
    /// same life.
    Crash {
        node: usize,
        inc: u32,
    },
    /// Power back on, unless the node has restarted (and maybe crashed
    /// again) since: `inc` is its life at the crash.
    Restart {
        node: usize,
        inc: u32,
    },
    HealNetwork {
        epoch: u64,
    },
    /// The next step of the snapshot `node` is writing (§7).
    SnapshotStep {
        node: usize,
        inc: u32,
    },
    /// A snapshot chunk from `node` to `peer` got no answer in time.
    SnapshotChunkTimeout {
        node: usize,
        inc: u32,
        peer: NodeId,
        rpc: u64,
    },
}

struct Scheduled {
    at: u64,
    /// Random: events due at the same instant run in a seeded order.
    tie: u64,
    seq: u64,
    event: Event,
}

impl Scheduled {
    fn key(&self) -> (u64, u64, u64) {
        (self.at, self.tie, self.seq)
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the earliest event is the greatest.
        other.key().cmp(&self.key())
    }
}

struct Node {
    id: NodeId,
    /// The driver that ships, with the core and the KV store; `None` while
    /// the node is down.
    driver: Option<NodeDriver>,
    disk: SimDisk,
    /// Bumped at every crash: events of an earlier life are ignored.
    inc: u32,
    /// The number of the last disk op written, and of the last one synced
    /// (reported durable to the driver). Both start again at each life.
    written_seq: u64,
    synced_seq: u64,
    fsync_scheduled: bool,
    /// This node's tick period in virtual µs (clock drift).
    tick_period: u64,
    /// The driver's clock: which ticks came due (`raft::clock`).
    clock: TickClock,
    /// With the `pause` fault: the process handles nothing before this
    /// virtual time (its input waits; its clock goes on).
    paused_until: u64,
    /// With the `clock-stop` fault: no time passes for this node before
    /// this virtual time, and the ticks of the stop are lost.
    clock_stopped_until: u64,
    /// What the checks last saw.
    role: (RaftState, Term),
    voted_for: Option<NodeId>,
    last_commit: LogIndex,
    /// The last index whose application the checks saw.
    checked_applied: LogIndex,
    leader_last: Option<(Term, LogIndex)>,
    /// Reads by the driver's read id: (op, the highest committed index
    /// anywhere when the read arrived), for the stale-read check.
    read_waiters: BTreeMap<u64, (usize, LogIndex)>,
    /// The digest of the KV state the checks last saw (State Machine
    /// Safety over states).
    digest: u64,
    /// §7: the snapshot being written (its temp file dies with the process).
    writing: Option<SnapshotWrite>,
    /// Follower: the RPCs of snapshot chunks waiting for their answer, per
    /// leader, oldest first, with the index an "installed" answer vouches
    /// for.
    chunk_replies: BTreeMap<NodeId, VecDeque<(u64, Option<LogIndex>)>>,
    /// Leader: snapshot transfers under way, by peer (volatile).
    sending: BTreeMap<NodeId, Transfer>,
    /// Follower: a snapshot arriving in chunks (volatile).
    incoming: Option<Incoming>,
    /// Snapshots this node installed from a leader, over all its lives.
    installs: u64,
    /// This data dir's incarnation (`raft::incarnation`); new at a wipe.
    incarnation: u64,
    /// Durable with the data dir: the incarnation last seen of each peer.
    book: IncarnationBook,
    /// Durable with the data dir: whether this node may vote.
    vote_right: VoteRight,
    /// The data dir was wiped during the run (ground truth for the checks:
    /// this node must never vote again).
    wiped: bool,
}

impl Node {
    fn is_up(&self) -> bool {
        self.driver.is_some()
    }

    fn core(&self) -> Option<&RaftCore> {
        self.driver.as_ref().map(Driver::core)
    }

    /// The last index applied to the KV store (0 while down).
    fn applied(&self) -> LogIndex {
        self.driver.as_ref().map_or(0, Driver::last_applied)
    }
}

pub(crate) struct World {
    opts: SimOptions,
    rng: SimRng,
    now: u64,
    seq: u64,
    history_seq: u64,
    queue: BinaryHeap<Scheduled>,
    ids: Vec<NodeId>,
    nodes: Vec<Node>,
    pub(crate) config: RaftConfig,
    net: Network,
    net_epoch: u64,
    clients: Vec<Client>,
    pub(crate) history: Vec<HistoryOp>,
    inv: Invariants,
    pub(crate) trace: Trace,
    pub(crate) stats: SimStats,
    pub(crate) violation: Option<Violation>,
    /// False once the last fault has healed: no new faults, no new ops.
    faults_on: bool,
    accepting_ops: bool,
    unique: u64,
    sync_inline: f64,
    fsync_latency: (u64, u64),
    /// §7: take a snapshot every this many applied entries (0: never).
    snapshot_every: u64,
    /// Bytes of snapshot file per InstallSnapshot chunk.
    snapshot_chunk: usize,
    next_rpc: u64,
    /// Scenario: crash this node the next time it reaches this point
    /// (`true`: as a power loss).
    armed: BTreeMap<(usize, CrashPoint), bool>,
    /// Scenario: the crash points reached and crashed at, in order.
    pub(crate) crash_points_hit: Vec<(NodeId, CrashPoint)>,
    /// No nemesis: faults happen only when a scenario says so.
    scripted: bool,
}

impl World {
    pub(crate) fn new(opts: SimOptions) -> Self {
        let mut rng = SimRng::new(opts.seed);
        let n = opts.nodes.max(1);
        let ids: Vec<NodeId> = (1..=n as NodeId).collect();
        let lease_reads = opts.lease_reads;
        let pre_vote = opts.pre_vote.unwrap_or_else(|| rng.chance(0.7));
        let check_quorum = opts.check_quorum.unwrap_or_else(|| rng.chance(0.7));
        let config = RaftConfig {
            pre_vote,
            // Leases need followers to refuse votes (thesis §6.4.1).
            check_quorum: check_quorum || lease_reads,
            lease_reads,
            max_entries_per_append: opts
                .max_entries_per_append
                .unwrap_or_else(|| rng.pick(&[1, 2, 4, 64])),
            max_inflight_appends: rng.pick(&[1, 4, 64]),
            ..RaftConfig::default()
        };
        let weather = Weather::draw(&mut rng, opts.faults);
        // Drawn only when snapshots are on, so that other mixes replay as
        // they did before snapshots were simulated.
        let (snapshot_every, snapshot_chunk) = if opts.faults.snapshot {
            let churn = opts.faults.snapshot_churn;
            let every = opts.snapshot_every.unwrap_or_else(|| {
                if churn {
                    rng.range(3, 15)
                } else {
                    rng.range(10, 60)
                }
            });
            // A snapshot file of three small keys is 60-90 bytes: several
            // chunks each.
            let chunk = opts.snapshot_chunk.unwrap_or_else(|| {
                if churn {
                    rng.range(4, 16) as usize
                } else {
                    rng.range(8, 64) as usize
                }
            });
            (every, chunk.max(1))
        } else {
            (0, 1)
        };
        let (sync_inline, fsync_latency) = if opts.faults.power_loss {
            (0.3, (1_000, 15_000))
        } else {
            (0.5, (200, 3_000))
        };
        let nodes = ids
            .iter()
            .map(|&id| {
                let drift = if opts.faults.drift {
                    rng.range(0, 1_000) as i64 - 500
                } else {
                    0
                };
                Node {
                    id,
                    incarnation: rng.next_u64(),
                    book: IncarnationBook::default(),
                    vote_right: VoteRight::for_new_data_dir(id, &ids),
                    wiped: false,
                    driver: None,
                    disk: SimDisk::new(),
                    inc: 0,
                    written_seq: 0,
                    synced_seq: 0,
                    fsync_scheduled: false,
                    // ±5%: safety must not depend on timing; with lease
                    // reads it does, within their 10 % drift margin.
                    tick_period: (TICK_US as i64 + drift) as u64,
                    clock: TickClock::new(0, (TICK_US as i64 + drift) as u64),
                    paused_until: 0,
                    clock_stopped_until: 0,
                    role: (RaftState::Follower, 0),
                    voted_for: None,
                    last_commit: 0,
                    checked_applied: 0,
                    leader_last: None,
                    read_waiters: BTreeMap::new(),
                    digest: state_digest(&KvStore::new()),
                    writing: None,
                    chunk_replies: BTreeMap::new(),
                    sending: BTreeMap::new(),
                    incoming: None,
                    installs: 0,
                }
            })
            .collect();
        let trace = Trace::new(opts.trace_lines, opts.keep_full_trace);
        World {
            clients: vec![Client::default(); opts.clients],
            opts,
            rng,
            now: 0,
            seq: 0,
            history_seq: 0,
            queue: BinaryHeap::new(),
            ids,
            nodes,
            config,
            net: Network::new(n, weather),
            net_epoch: 0,
            history: Vec::new(),
            inv: Invariants::new(),
            trace,
            stats: SimStats::default(),
            violation: None,
            faults_on: true,
            accepting_ops: true,
            unique: 0,
            sync_inline,
            fsync_latency,
            snapshot_every,
            snapshot_chunk,
            next_rpc: 1,
            armed: BTreeMap::new(),
            crash_points_hit: Vec::new(),
            scripted: false,
        }
    }

    /// Runs the whole scenario: the faulty phase, then healing and the
    /// liveness check, then the end-of-run checks.
    pub(crate) fn run(&mut self) {
        self.begin();
        while self.stats.steps < self.opts.steps && self.violation.is_none() {
            if !self.step() {
                break;
            }
        }
        self.end();
    }

    /// Starts the nodes and the clients, and (unless scripted) the nemesis.
    pub(crate) fn begin(&mut self) {
        self.trace(format!(
            "start: {} nodes, faults {}, {}{}",
            self.ids.len(),
            self.opts.faults,
            self.config_summary(),
            self.opts
                .bug
                .map_or(String::new(), |b| format!(", BUG {b}"))
        ));
        for x in 0..self.nodes.len() {
            self.start_node(x);
        }
        for c in 0..self.clients.len() {
            let at = self.rng.range(0, 50_000);
            self.schedule(at, Event::ClientStart { client: c });
        }
        let nemesis = self.opts.faults.network_faults()
            || self.opts.faults.node_faults()
            || self.opts.faults.snapshot;
        if nemesis && !self.scripted {
            let at = self.rng.range(100_000, 1_000_000);
            self.schedule(at, Event::Fault);
        }
    }

    /// Heals, checks liveness and durability, then linearizability.
    pub(crate) fn end(&mut self) {
        if self.violation.is_none() {
            self.heal_and_check_liveness();
        }
        if self.violation.is_none() {
            self.check_linearizability();
        }
        self.stats.virtual_ms = self.now / 1000;
    }

    pub(crate) fn config_summary(&self) -> String {
        let mut text = format!(
            "pre-vote {}, check-quorum {}, batch {}, inflight {}",
            on_off(self.config.pre_vote),
            on_off(self.config.check_quorum),
            self.config.max_entries_per_append,
            self.config.max_inflight_appends
        );
        if self.config.lease_reads {
            text.push_str(&format!(
                ", lease reads ({} ticks)",
                self.config.lease_ticks()
            ));
        }
        if self.snapshot_every > 0 {
            text.push_str(&format!(
                ", snapshot every {} applied, chunks of {} bytes",
                self.snapshot_every, self.snapshot_chunk
            ));
        }
        text
    }

    /// One line per node: up or down, role, term, commit, applied, log end.
    pub(crate) fn node_summaries(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| match n.core() {
                None => format!(
                    "n{} down (disk: term {}, vote {}, {} entries{})",
                    n.id,
                    n.disk.durable_hard_state().term,
                    fmt_vote(n.disk.durable_hard_state().voted_for),
                    n.disk.durable_len(),
                    fmt_disk_snapshots(&n.disk)
                ),
                Some(c) => format!(
                    "n{} {} term {} vote {} leader {} commit {} applied {} last {}/{}{}",
                    n.id,
                    c.state(),
                    c.term(),
                    fmt_vote(c.voted_for()),
                    fmt_vote(c.leader_id()),
                    c.commit_index(),
                    n.applied(),
                    c.last_log_index(),
                    c.last_log_term(),
                    if c.snapshot_index() > 0 {
                        format!(" snapshot {}/{}", c.snapshot_index(), c.snapshot_term())
                    } else {
                        String::new()
                    }
                ),
            })
            .collect()
    }

    // ----- Scripted runs (`Scenario`) ----------------------------------------

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

    pub(crate) fn node_view(&self, x: usize) -> crate::sim::NodeView {
        let n = &self.nodes[x];
        let core = n.core();
        crate::sim::NodeView {
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

    // ----- The event loop ----------------------------------------------------

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        let tie = self.rng.next_u64();
        self.queue.push(Scheduled {
            at: at.max(self.now),
            tie,
            seq: self.seq,
            event,
        });
    }

    /// Runs the next event. False when nothing is left to do.
    fn step(&mut self) -> bool {
        let Some(s) = self.queue.pop() else {
            return false;
        };
        self.now = s.at;
        self.stats.steps += 1;
        self.handle(s.event);
        if self.violation.is_none() {
            self.check_commit_safety();
        }
        true
    }

    /// The node whose driver handles `event`, if any.
    fn event_node(&self, event: &Event) -> Option<usize> {
        match event {
            Event::Tick { node, .. }
            | Event::Fsync { node, .. }
            | Event::SnapshotStep { node, .. }
            | Event::SnapshotChunkTimeout { node, .. } => Some(*node),
            Event::Deliver { msg, .. } => Some(msg.to as usize - 1),
            Event::Hello { to, .. } | Event::HelloReply { to, .. } => Some(*to),
            Event::HelloRound { node, .. } => Some(*node),
            Event::ClientArrive { op } => Some(self.history[*op].node as usize - 1),
            _ => None,
        }
    }

    /// Runs the ticks that came due on node `x`'s clock before its next
    /// input, as `RaftServer` does (`raft::clock`). Returns whether any did.
    fn catch_up_ticks(&mut self, x: usize) -> bool {
        let now = self.now;
        let max = self.config.max_catch_up_ticks();
        let bug_skip = self.has_bug(crate::sim::Bug::SkipMissedTicks);
        let node = &mut self.nodes[x];
        let Some(driver) = node.driver.as_mut() else {
            return false;
        };
        if now < node.clock_stopped_until {
            return false;
        }
        node.clock.lose_ticks_until(node.clock_stopped_until);
        let mut due = node.clock.due(now);
        if bug_skip {
            due = due.min(1);
        }
        for _ in 0..due.min(max) {
            driver.tick();
        }
        due > 0
    }

    fn handle(&mut self, event: Event) {
        let target = self.event_node(&event);
        let mut ticked = false;
        if let Some(x) = target {
            if self.nodes[x].is_up() && self.now < self.nodes[x].paused_until {
                // A paused process: its input waits in the socket, its
                // timers fire late, all of it when it resumes.
                let at = self.nodes[x].paused_until;
                self.schedule(at, event);
                return;
            }
            ticked = self.catch_up_ticks(x);
        }
        self.dispatch(event);
        if let Some(x) = target.filter(|&x| ticked && self.nodes[x].is_up()) {
            self.after_input(x);
        }
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Tick { node, inc } => {
                if !self.alive(node, inc) {
                    return;
                }
                // The ticks themselves ran in `catch_up_ticks`; this event
                // is the driver's timer, waking it for the next one.
                self.after_input(node);
                let n = &self.nodes[node];
                let at = n.clock.next_due_us().max(n.clock_stopped_until);
                self.schedule(at, Event::Tick { node, inc });
            }
            Event::Fsync { node, inc } => {
                if !self.alive(node, inc) {
                    return;
                }
                self.nodes[node].fsync_scheduled = false;
                self.sync_now(node);
                self.after_input(node);
            }
            Event::Deliver {
                msg,
                incarnation,
                sent_at,
                dup,
                late,
                rpc,
            } => self.deliver(msg, incarnation, sent_at, dup, late, rpc),
            Event::Hello {
                from,
                to,
                incarnation,
            } => self.on_hello(from, to, incarnation),
            Event::HelloReply {
                to,
                inc,
                from,
                verdict,
            } => self.on_hello_reply(to, inc, from, verdict),
            Event::HelloRound { node, inc } => self.hello_round(node, inc),
            Event::ClientStart { client } => self.client_start(client),
            Event::ClientArrive { op } => self.client_arrive(op),
            Event::ClientTimeout { op } => self.client_timeout(op),
            Event::Fault => self.fault(),
            Event::Crash { node, inc } => {
                if self.faults_on && self.alive(node, inc) {
                    // Right after a vote is when a wipe can make a double
                    // vote (§5.2).
                    if self.opts.faults.wipe && self.may_wipe(node) && self.rng.chance(0.3) {
                        self.wipe(node);
                    } else {
                        self.crash_and_schedule_restart(node, true);
                    }
                }
            }
            Event::Restart { node, inc } => {
                if self.nodes[node].inc == inc {
                    self.restart(node);
                }
            }
            Event::HealNetwork { epoch } => {
                if epoch == self.net_epoch && self.net.any_cut() {
                    self.net.heal();
                    self.trace("network healed".to_string());
                }
            }
            Event::SnapshotStep { node, inc } => {
                if self.alive(node, inc) {
                    self.snapshot_step(node);
                }
            }
            Event::SnapshotChunkTimeout {
                node,
                inc,
                peer,
                rpc,
            } => {
                if self.alive(node, inc) {
                    self.snapshot_chunk_timeout(node, peer, rpc);
                }
            }
        }
    }

    /// Whether the run breaks this rule on purpose.
    fn has_bug(&self, bug: crate::sim::Bug) -> bool {
        self.opts.bug == Some(bug)
    }

    fn alive(&self, node: usize, inc: u32) -> bool {
        self.nodes[node].is_up() && self.nodes[node].inc == inc
    }

    fn trace(&mut self, text: String) {
        self.trace.push(self.now, text);
    }

    fn fail(&mut self, kind: ViolationKind, detail: String) {
        if self.violation.is_none() {
            self.trace(format!("VIOLATION {}: {detail}", kind.name()));
            self.violation = Some(Violation {
                kind,
                at_us: self.now,
                detail,
            });
        }
    }

    fn check(&mut self, result: Result<(), (ViolationKind, String)>) {
        if let Err((kind, detail)) = result {
            self.fail(kind, detail);
        }
    }

    // ----- Nodes: readies, disk, apply -----------------------------------------

    fn start_node(&mut self, x: usize) {
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
        match RaftCore::with_snapshot(
            id,
            &self.ids,
            self.config.clone(),
            recovered,
            snapshot,
            seed,
        ) {
            Ok(mut core) => {
                if let Some(bug) = self.opts.bug {
                    core.set_bug_switches(bug.switches());
                }
                let ignore = self.has_bug(crate::sim::Bug::IgnoreVoteRight);
                core.set_may_vote(ignore || self.nodes[x].vote_right.may_vote());
                let skip_restore = self.has_bug(crate::sim::Bug::InstallWithoutRestore);
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

    fn after_input(&mut self, x: usize) {
        self.drain(x);
        self.check_node(x);
    }

    /// Commit safety after every step (see `Invariants::check_commit_safety`).
    fn check_commit_safety(&mut self) {
        let Some((index, _)) = self.inv.last_committed() else {
            return;
        };
        let Some((_, committed_term)) = self.inv.last_committed() else {
            return;
        };
        // A snapshot holds only committed entries (the state digests check
        // it), so the index it covers counts as held with its committed term.
        let logs: Vec<(NodeId, bool, Vec<LogView>)> = self
            .nodes
            .iter()
            .map(|n| {
                // What a restart would present: snapshot + log, reconciled.
                let (last_index, last_term, covered) = n.disk.restart_view();
                let durable_term = if index <= covered {
                    Some(committed_term)
                } else if index <= last_index {
                    n.disk.durable_term(index)
                } else {
                    None
                };
                let mut views = vec![LogView {
                    last_index,
                    last_term,
                    term_at_committed: durable_term,
                    committed_index: index,
                }];
                if let Some(core) = n.core() {
                    let term = if index <= core.snapshot_index() {
                        Some(committed_term)
                    } else {
                        core.entry(index).map(|e| e.term)
                    };
                    views.push(LogView {
                        last_index: core.last_log_index(),
                        last_term: core.last_log_term(),
                        term_at_committed: term,
                        committed_index: index,
                    });
                }
                // A node that will never vote (its data dir was wiped)
                // can neither be elected nor help elect anyone.
                let may_vote = !n.wiped && n.vote_right != VoteRight::Suspended;
                (n.id, may_vote, views)
            })
            .collect();
        let result = self.inv.check_commit_safety(&logs);
        self.check(result);
    }

    /// The per-step checks of one node, after it handled an input.
    fn check_node(&mut self, x: usize) {
        if self.violation.is_some() {
            return;
        }
        let node = &mut self.nodes[x];
        let id = node.id;
        let Some(core) = node.driver.as_ref().map(Driver::core) else {
            return;
        };
        let role = (core.state(), core.term());
        let commit = core.commit_index();
        let mut lines = Vec::new();
        let mut result = Ok(());
        let elected = role != node.role && role.0 == RaftState::Leader;
        if role != node.role {
            lines.push(format!(
                "n{id} {} term {} leader {} commit {} last {}/{}",
                role.0,
                role.1,
                fmt_vote(core.leader_id()),
                commit,
                core.last_log_index(),
                core.last_log_term()
            ));
            if role.0 == RaftState::Leader {
                self.stats.elections += 1;
                node.leader_last = None;
                result = self
                    .inv
                    .on_leader(id, role.1)
                    .and_then(|_| self.inv.on_elected(id, core));
            }
            node.role = role;
        }
        if result.is_ok() {
            if commit < node.last_commit {
                result = Err((
                    ViolationKind::CommitIndexDecreased,
                    format!(
                        "n{id} commit index went from {} to {commit} without a crash",
                        node.last_commit
                    ),
                ));
            } else if commit > node.last_commit {
                lines.push(format!("n{id} commit {} → {commit}", node.last_commit));
                result = self.inv.on_commit(id, core, node.last_commit, commit);
                node.last_commit = commit;
            }
        }
        if result.is_ok() && commit > core.last_log_index() {
            result = Err((
                ViolationKind::CommittedEntryRemoved,
                format!(
                    "n{id} has commit index {commit} but its log ends at {}",
                    core.last_log_index()
                ),
            ));
        }
        if result.is_ok() && core.is_leader() {
            let last = core.last_log_index();
            if let Some((t, before)) = node.leader_last {
                if t == role.1 && last < before {
                    result = Err((
                        ViolationKind::LeaderAppendOnly,
                        format!("leader n{id} of term {t} shrank its log from {before} to {last}"),
                    ));
                }
            }
        }
        // Jepsen-style targeted nemesis: the moments right after a node
        // votes or takes office are where persistence and commitment bugs
        // hide, so crash there now and then.
        let vote = core.voted_for();
        let voted = vote.is_some() && vote != node.voted_for && vote != Some(id);
        node.voted_for = vote;
        let inc = node.inc;
        for line in lines {
            self.trace(line);
        }
        self.check(result);
        if self.faults_on
            && self.opts.faults.node_faults()
            && (voted || elected)
            && self.rng.chance(TARGETED_CRASH_CHANCE)
        {
            let at = self.now + self.rng.range(0, if voted { 3_000 } else { 50_000 });
            self.schedule(at, Event::Crash { node: x, inc });
        }
    }

    // ----- Network -------------------------------------------------------------

    fn send(&mut self, m: Message) {
        self.send_rpc(m, 0);
    }

    /// Sends `m`; `rpc` pairs a snapshot chunk with its reply. False when a
    /// partition refused it at once (the transport noticed).
    fn send_rpc(&mut self, m: Message, rpc: u64) -> bool {
        self.stats.messages_sent += 1;
        let (from, to) = (m.from as usize - 1, m.to as usize - 1);
        match self.net.send(&mut self.rng, self.now, from, to) {
            Fate::Unreachable => {
                self.stats.messages_dropped += 1;
                let line = format!("{} unreachable (partition)", fmt_message(&m));
                self.trace(line);
                // A transport notices a broken connection now and then.
                if self.rng.chance(0.5) {
                    if let Some(driver) = self.nodes[from].driver.as_mut() {
                        driver.report_unreachable(m.to);
                    }
                }
                return false;
            }
            Fate::Lost => {
                self.stats.messages_dropped += 1;
                let line = format!("{} lost", fmt_message(&m));
                self.trace(line);
            }
            Fate::Deliver(copies) => {
                let sent_at = self.now;
                let n = copies.len();
                for (i, (at, late)) in copies.into_iter().enumerate() {
                    self.schedule(
                        at,
                        Event::Deliver {
                            msg: m.clone(),
                            incarnation: self.nodes[from].incarnation,
                            sent_at,
                            dup: i > 0,
                            late,
                            rpc,
                        },
                    );
                }
                if n > 1 {
                    self.stats.messages_duplicated += 1;
                }
            }
        }
        true
    }

    fn deliver(
        &mut self,
        msg: Message,
        incarnation: u64,
        sent_at: u64,
        dup: bool,
        late: bool,
        rpc: u64,
    ) {
        let (from, to) = (msg.from as usize - 1, msg.to as usize - 1);
        let mut line = fmt_message(&msg);
        if dup {
            line.push_str(" [duplicate]");
        }
        if late {
            line.push_str(&format!(" [late: sent at t={}]", fmt_time(sent_at)));
        }
        if !self.nodes[to].is_up() {
            self.stats.messages_dropped += 1;
            self.trace(format!("{line} dropped: n{} is down", msg.to));
            return;
        }
        if self.net.is_cut(from, to) {
            self.stats.messages_dropped += 1;
            self.trace(format!("{line} dropped: partition"));
            return;
        }
        self.stats.messages_delivered += 1;
        self.trace(line);
        // The connection's handshake: the receiver's book (durable) has the
        // sender's incarnation before it handles anything the sender sent.
        self.nodes[to].book.check(msg.from, incarnation);
        // Snapshot chunks and their replies go through the driver, as in
        // `RaftServer`: the core decides, the driver owns the bytes.
        match &msg.rpc {
            Rpc::InstallSnapshot(_) => return self.on_snapshot_chunk(to, msg, rpc),
            Rpc::InstallSnapshotReply(_) => return self.on_snapshot_reply(to, msg, rpc),
            _ => {}
        }
        if let Some(driver) = self.nodes[to].driver.as_mut() {
            if let Rpc::AppendEntries(a) = &msg.rpc {
                if a.prev_log_index < driver.core().snapshot_index() {
                    self.stats.appends_below_snapshot += 1;
                }
            }
            driver.step(msg);
        }
        self.after_input(to);
    }

    // ----- Faults ----------------------------------------------------------------

    fn fault(&mut self) {
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
            _ => self.snapshot_fault(),
        }
    }

    /// Pauses one node, or stops its clock, for 0.2-1 s; a leader more
    /// often than not (a paused leader is what a lease must survive).
    fn pause_fault(&mut self) {
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

    fn network_fault(&mut self) {
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
    fn wipe_fault(&mut self) {
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
    fn may_wipe(&self, x: usize) -> bool {
        let n = self.nodes.len();
        let wiped = self.nodes.iter().filter(|n| n.wiped).count();
        self.nodes[x].wiped || wiped < n - (n / 2 + 1)
    }

    /// Crashes `x` and loses its whole data dir: log, hard state,
    /// snapshots, its book of peers. It comes back with a new incarnation
    /// and a pending vote, which its peers' books must turn into a
    /// suspended one.
    fn wipe(&mut self, x: usize) {
        self.crash(x, false);
        let incarnation = self.rng.next_u64();
        let node = &mut self.nodes[x];
        node.disk = SimDisk::new();
        node.book = IncarnationBook::default();
        node.incarnation = incarnation;
        node.vote_right = VoteRight::for_new_data_dir(node.id, &self.ids);
        node.wiped = true;
        let id = node.id;
        self.stats.wipes += 1;
        self.trace(format!(
            "n{id}'s data dir is wiped: it restarts empty, incarnation {incarnation:016x}"
        ));
        let at = self.now + self.rng.range(5_000, 1_000_000);
        let inc = self.nodes[x].inc;
        self.schedule(at, Event::Restart { node: x, inc });
    }

    fn hello_round(&mut self, x: usize, inc: u32) {
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

    fn on_hello(&mut self, from: usize, to: usize, incarnation: u64) {
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

    fn on_hello_reply(&mut self, to: usize, inc: u32, from: usize, verdict: PeerVerdict) {
        if !self.alive(to, inc) || self.net.is_cut(from, to) {
            return;
        }
        let (me, peer) = (self.nodes[to].id, self.nodes[from].id);
        if !self.nodes[to]
            .vote_right
            .on_verdict(me, &self.ids, peer, verdict)
        {
            return;
        }
        match self.nodes[to].vote_right {
            VoteRight::Allowed => {
                if let Some(driver) = self.nodes[to].driver.as_mut() {
                    driver.set_may_vote(true);
                }
                self.trace(format!("n{me} may vote: every other voter vouched for it"));
                if self.nodes[to].wiped {
                    self.fail(
                        ViolationKind::ElectionSafety,
                        format!("n{me} regained its vote after its data dir was wiped: it may vote twice in a term"),
                    );
                }
            }
            VoteRight::Suspended => self.trace(format!(
                "n{me}'s vote is suspended: n{peer} knew another incarnation of it"
            )),
            VoteRight::Pending { .. } => self.trace(format!("n{me} cleared by n{peer}")),
        }
    }

    fn crash_fault(&mut self) {
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
    fn crash_and_schedule_restart(&mut self, x: usize, quick: bool) {
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

    fn crash(&mut self, x: usize, power: bool) {
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

    fn restart(&mut self, x: usize) {
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

    // ----- Clients -----------------------------------------------------------------

    fn next_history_seq(&mut self) -> u64 {
        self.history_seq += 1;
        self.history_seq
    }

    fn client_start(&mut self, c: usize) {
        if !self.accepting_ops || self.clients[c].in_flight.is_some() {
            return;
        }
        let op = match self.clients[c].retry.take() {
            Some(op) => op,
            None => choose_op(
                &mut self.rng,
                &self.clients[c],
                self.opts.keys,
                &mut self.unique,
            ),
        };
        let node = match self.clients[c].leader_hint {
            Some(h) if self.rng.chance(0.8) => h,
            _ => self.rng.pick(&self.ids),
        };
        let id = self.invoke(c, node, op);
        let arrive = self.now + self.rng.range(100, 2_000);
        self.schedule(arrive, Event::ClientArrive { op: id });
        self.schedule(
            self.now + CLIENT_TIMEOUT_US,
            Event::ClientTimeout { op: id },
        );
    }

    fn invoke(&mut self, client: usize, node: NodeId, op: KvOp) -> usize {
        let id = self.history.len();
        let seq = self.next_history_seq();
        self.trace(format!("c{client} → n{node} {op} (op {id})"));
        self.history.push(HistoryOp {
            id,
            client,
            node,
            op,
            invoke_seq: seq,
            invoke_us: self.now,
            outcome: Outcome::Pending,
            complete_seq: 0,
            complete_us: 0,
            proposed_at: None,
        });
        self.clients[client].in_flight = Some(id);
        id
    }

    fn client_arrive(&mut self, op: usize) {
        if !self.history[op].is_pending() {
            return;
        }
        let x = self.history[op].node as usize - 1;
        if !self.nodes[x].is_up() {
            self.finish(op, Outcome::Failed("connection refused".into()));
            return;
        }
        self.submit_to_driver(x, op);
        self.after_input(x);
    }

    fn client_timeout(&mut self, op: usize) {
        if !self.history[op].is_pending() {
            return;
        }
        let outcome = if self.history[op].op.is_read() {
            Outcome::Failed("timeout".into())
        } else {
            Outcome::Unknown("timeout".into())
        };
        let client = self.history[op].client;
        self.clients[client].leader_hint = None;
        self.finish(op, outcome);
    }

    /// Completes an operation (once). Returns false if it was already done.
    fn finish(&mut self, op: usize, outcome: Outcome) -> bool {
        if !self.history[op].is_pending() {
            return false;
        }
        let seq = self.next_history_seq();
        let h = &mut self.history[op];
        h.outcome = outcome;
        h.complete_seq = seq;
        h.complete_us = self.now;
        let (client, node) = (h.client, h.node);
        let line = format!("c{client} ← n{node} op {} {}: {}", h.id, h.op, h.outcome);
        match &h.outcome {
            Outcome::Ok(out) => {
                self.stats.ops_ok += 1;
                let cl = &mut self.clients[client];
                cl.leader_hint = Some(node);
                let key = h.op.key().to_vec();
                match (out, &h.op) {
                    (KvOutput::Value(v), _) => {
                        cl.last_seen.insert(key, v.clone());
                    }
                    (KvOutput::Ok, KvOp::Set { value, .. } | KvOp::SetIfEq { value, .. }) => {
                        cl.last_seen.insert(key, value.clone());
                    }
                    _ => {}
                }
            }
            Outcome::Failed(_) => {
                self.stats.ops_failed += 1;
                if self.rng.chance(0.5) {
                    self.clients[client].retry = Some(self.history[op].op.clone());
                }
            }
            Outcome::Unknown(_) => {
                self.stats.ops_unknown += 1;
                if self.rng.chance(0.3) {
                    self.clients[client].retry = Some(self.history[op].op.clone());
                }
            }
            Outcome::Pending => {}
        }
        self.trace(line);
        self.clients[client].in_flight = None;
        if self.accepting_ops {
            // Think time after a success; back off after a failure, as a
            // real client does while the cluster elects a leader.
            let pause = if matches!(self.history[op].outcome, Outcome::Ok(_)) {
                self.rng.range(0, 20_000)
            } else {
                self.rng.range(20_000, 150_000)
            };
            self.schedule(self.now + pause, Event::ClientStart { client });
        }
        true
    }

    // ----- The end: healing, liveness, linearizability ------------------------------

    fn heal_and_check_liveness(&mut self) {
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
        let n = self.nodes.len();
        let voters_left = (0..n)
            .filter(|&x| x != leader && !self.nodes[x].wiped)
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
                (Outcome::Ok(_), Some((index, _))) => {
                    self.nodes.iter().all(|n| n.is_up() && n.applied() >= index)
                }
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
    fn await_convergence(&mut self, after: &str) -> Option<usize> {
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

    /// A leader such that a majority is up, and every live node is in its
    /// term and has committed and applied the leader's whole log, which ends
    /// in its own term.
    fn converged(&self) -> Option<usize> {
        let leader = (0..self.nodes.len())
            .filter(|&x| self.nodes[x].core().is_some_and(|c| c.is_leader()))
            .max_by_key(|&x| self.nodes[x].core().map_or(0, |c| c.term()))?;
        let lc = self.nodes[leader].core()?;
        let (term, last) = (lc.term(), lc.last_log_index());
        if lc.commit_index() != last || lc.last_log_term() != term {
            return None;
        }
        let up = self.nodes.iter().filter(|n| n.is_up()).count();
        let all = self.nodes.iter().filter(|n| n.is_up()).all(|n| {
            n.core().is_some_and(|c| {
                c.term() == term && c.commit_index() == last && n.applied() == last
            }) && n.written_seq == n.synced_seq
        });
        (all && up > self.nodes.len() / 2).then_some(leader)
    }

    fn check_linearizability(&mut self) {
        let ops: Vec<_> = self
            .history
            .iter()
            .filter_map(HistoryOp::to_lin_op)
            .collect();
        let verdict = crate::sim::linearizability::check_history(&ops, self.opts.lin_budget);
        self.stats.lin_inconclusive_keys = verdict.inconclusive.len();
        if let Some((key, result)) = verdict.violations.first() {
            let key_s = String::from_utf8_lossy(key).into_owned();
            let detail = crate::sim::describe_lin_violation(&self.history, key, result);
            self.fail(
                ViolationKind::Linearizability,
                format!("key {key_s}: {detail}"),
            );
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// Whether the durable state backs a promise to hold everything up to
/// `index`: the log reaches it, or the newest durable snapshot covers it.
fn durably_covers(disk: &SimDisk, index: LogIndex) -> bool {
    disk.durable_last_index() >= index
        || disk
            .latest_durable_snapshot()
            .is_some_and(|s| s.index >= index)
}

/// `, log after 40, snapshots 30/2 40/3` for a disk with snapshots.
fn fmt_disk_snapshots(disk: &SimDisk) -> String {
    let list = disk.snapshot_list();
    if list.is_empty() && disk.log_start().0 == 0 {
        return String::new();
    }
    let snaps: Vec<String> = list.iter().map(|(i, t)| format!("{i}/{t}")).collect();
    format!(
        ", log after {}, snapshots [{}]",
        disk.log_start().0,
        snaps.join(" ")
    )
}

fn fmt_vote(v: Option<NodeId>) -> String {
    v.map_or("-".to_string(), |id| format!("n{id}"))
}

fn fmt_group(g: &[usize]) -> String {
    let mut ids: Vec<usize> = g.iter().map(|x| x + 1).collect();
    ids.sort_unstable();
    let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
    format!("{{{}}}", names.join(","))
}
