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

mod checks;
mod clients;
mod delivery;
mod driving;
mod ending;
mod faults;
mod membership;
mod scripted;
mod sim_kv;
mod snapshots;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use self::driving::NodeDriver;
use self::snapshots::{Incoming, SnapshotWrite, Transfer};

use raft::{
    Driver, IncarnationBook, LogIndex, Membership, Message, NodeId, PeerVerdict, RaftConfig,
    RaftCore, RaftState, Rpc, Term, TickClock, VoteRight,
};

use crate::checker::{CandidateLogs, Invariants, LogView, Violation, ViolationKind};
use crate::client::{choose_op, Client, HistoryOp, KvOp, Outcome};
use crate::disk::SimDisk;
use crate::network::{Fate, Network, Weather};
use crate::rng::SimRng;
use crate::snapshot::{state_digest, CrashPoint};
use crate::trace::{fmt_message, fmt_time, Trace};
use crate::{SimOptions, SimStats};
use raftkv_store::{KvOutput, KvStore};

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
    /// The last chunk of a snapshot `node` received has been verified and
    /// stored on the server's blocking pool (`server::receive`).
    SnapshotReceived {
        node: usize,
        inc: u32,
        received: Box<snapshots::Received>,
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
    /// this node must never vote again, unless it is removed and added back
    /// as a new server).
    wiped: bool,
    /// The configuration a restart without a snapshot starts from: the
    /// bootstrap list, or an empty one for a server that joined with a new
    /// data dir (`raftkv server --join`).
    bootstrap: Membership,
    /// The configuration this node last saw committed, for forgetting the
    /// incarnations of the servers a committed change removed (as raftkv's
    /// `follow_configuration` does).
    committed_config: Option<(LogIndex, Membership)>,
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
    /// The index of the newest configuration any node saw committed.
    newest_committed_config: LogIndex,
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
                    bootstrap: Membership::new(&ids, &[]),
                    committed_config: None,
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
            newest_committed_config: 0,
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
            || self.opts.faults.snapshot
            || self.opts.faults.membership;
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
            | Event::SnapshotReceived { node, .. }
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
        let bug_skip = self.has_bug(crate::Bug::SkipMissedTicks);
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
            Event::SnapshotReceived {
                node,
                inc,
                received,
            } => {
                if self.alive(node, inc) {
                    self.snapshot_received(node, *received);
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
    fn has_bug(&self, bug: crate::Bug) -> bool {
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
