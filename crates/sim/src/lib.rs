//! A deterministic simulator of a raftkv cluster, for finding the rare
//! interleavings of crashes, partitions and message reordering that unit
//! tests never reach, and replaying any failure from its seed.
//!
//! One thread runs N [`raft::RaftCore`]s, each with a [`KvStore`](raftkv_store::KvStore)
//! and a simulated disk, on a virtual clock; clients issue GET, SET,
//! SET IFEQ and INCR; faults are injected; every choice comes from one
//! seeded RNG. After every step the invariants of Figure 3 of the Raft
//! paper are checked ([`checker`]); at the end the client history must be
//! linearizable ([`linearizability`]) and the healed cluster must make
//! progress. With the `snapshot` fault, nodes also take snapshots, compact
//! their logs and install snapshots from the leader (§7), and crash in the
//! middle of it ([`snapshot`]). The guide chapter is `docs/12-simulation.md`.
//!
//! * [`world`]: the event loop and the driver of each core (Ready, disk, apply)
//! * [`disk`]: written versus fsynced; what a crash or a power loss keeps;
//!   the compacted log and the snapshot directory
//! * [`snapshot`]: the snapshot file, the KV state digest, the crash points
//! * [`network`]: delays, loss, duplication, reordering, partitions
//! * [`client`]: clients and the history they record
//! * [`faults`]: the fault mix and the bug switches
//! * [`trace`]: the readable record of the last events
//! * [`cli`]: `raftkv sim`
//! * [`Scenario`]: a scripted run (no nemesis) for scenario tests

pub mod checker;
pub mod cli;
pub mod client;
pub mod disk;
pub mod faults;
pub mod linearizability;
pub mod network;
pub mod rng;
pub mod snapshot;
pub mod trace;
mod world;

pub use checker::{Violation, ViolationKind};
pub use client::{HistoryOp, KvOp, Outcome};
pub use faults::{Bug, FaultMix};
pub use linearizability::LinResult;
pub use snapshot::CrashPoint;

/// What to simulate. Everything not given here is drawn from the seed.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    pub seed: u64,
    /// Cluster size (3 and 5 are the interesting ones).
    pub nodes: usize,
    /// Events to run before the faults heal.
    pub steps: u64,
    pub faults: FaultMix,
    /// A rule the cores break on purpose, to prove the checks catch it.
    pub bug: Option<Bug>,
    pub clients: usize,
    /// Keys are `k0..k{keys-1}`: few, so that operations collide.
    pub keys: usize,
    /// Lines of trace kept for the failure report.
    pub trace_lines: usize,
    /// Keep every trace line (for comparing runs), not just the tail.
    pub keep_full_trace: bool,
    /// Search steps per key for the linearizability checker.
    pub lin_budget: u64,
    /// Fix these instead of drawing them from the seed.
    pub pre_vote: Option<bool>,
    pub check_quorum: Option<bool>,
    pub max_entries_per_append: Option<usize>,
    /// Thesis §6.4.1 lease reads (with check-quorum); off unless given.
    pub lease_reads: bool,
    /// With snapshots on: take one every this many applied entries.
    pub snapshot_every: Option<u64>,
    /// With snapshots on: bytes per InstallSnapshot chunk.
    pub snapshot_chunk: Option<usize>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            seed: 0,
            nodes: 3,
            steps: 20_000,
            faults: FaultMix::all(),
            bug: None,
            clients: 3,
            keys: 3,
            trace_lines: 200,
            keep_full_trace: false,
            lin_budget: 200_000,
            pre_vote: None,
            check_quorum: None,
            max_entries_per_append: None,
            lease_reads: false,
            snapshot_every: None,
            snapshot_chunk: None,
        }
    }
}

impl SimOptions {
    /// The `raftkv sim` command line that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "raftkv sim --seed {} --nodes {} --steps {} --faults {}",
            self.seed, self.nodes, self.steps, self.faults
        );
        let d = SimOptions::default();
        if self.clients != d.clients {
            cmd.push_str(&format!(" --clients {}", self.clients));
        }
        if self.keys != d.keys {
            cmd.push_str(&format!(" --keys {}", self.keys));
        }
        if let Some(b) = self.pre_vote {
            cmd.push_str(&format!(" --pre-vote {b}"));
        }
        if let Some(b) = self.check_quorum {
            cmd.push_str(&format!(" --check-quorum {b}"));
        }
        if let Some(n) = self.max_entries_per_append {
            cmd.push_str(&format!(" --max-batch {n}"));
        }
        if self.lease_reads {
            cmd.push_str(" --lease-reads");
        }
        if let Some(n) = self.snapshot_every {
            cmd.push_str(&format!(" --snapshot-every {n}"));
        }
        if let Some(n) = self.snapshot_chunk {
            cmd.push_str(&format!(" --snapshot-chunk {n}"));
        }
        if let Some(bug) = self.bug {
            cmd.push_str(&format!(" --bug {bug}"));
        }
        cmd
    }
}

/// Counters of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Events processed (the faulty phase counts against `--steps`).
    pub steps: u64,
    pub virtual_ms: u64,
    pub messages_sent: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub messages_duplicated: u64,
    pub elections: u64,
    pub crashes: u64,
    pub power_losses: u64,
    /// Data dirs wiped (the `wipe` fault).
    pub wipes: u64,
    pub partitions: u64,
    pub ops_ok: u64,
    pub ops_failed: u64,
    pub ops_unknown: u64,
    /// Reads a leader answered from its lease (thesis §6.4.1).
    pub lease_reads: u64,
    /// Keys whose history the checker could not decide within its budget.
    pub lin_inconclusive_keys: usize,
    /// Virtual ms from the heal to a converged cluster.
    pub liveness_ms: u64,
    /// Snapshots that became durable (taken by the node itself).
    pub snapshots_taken: u64,
    /// Snapshots a crash lost before they were durable.
    pub snapshots_lost: u64,
    /// Log compactions after a durable snapshot.
    pub compactions: u64,
    /// InstallSnapshot transfers started, chunks sent, transfers failed.
    pub snapshot_transfers: u64,
    pub snapshot_chunks: u64,
    pub snapshot_transfers_failed: u64,
    /// Snapshots installed by followers.
    pub snapshots_installed: u64,
    /// Crashes at a crash point inside snapshotting or installing.
    pub snapshot_crashes: u64,
    /// AppendEntries delivered to a follower whose snapshot covers their
    /// `prev_log_index` (they reach into its compacted range).
    pub appends_below_snapshot: u64,
    /// Configuration changes a leader appended (thesis §4.1), and those
    /// that committed.
    pub membership_changes: u64,
    pub membership_changes_committed: u64,
    /// Leadership transfers asked for (§3.10).
    pub transfers: u64,
}

/// The result of one seed.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    pub options: SimOptions,
    /// The Raft settings drawn from the seed.
    pub config: String,
    pub violation: Option<Violation>,
    pub stats: SimStats,
    /// The last `trace_lines` events.
    pub trace_tail: Vec<String>,
    /// Every event, when `keep_full_trace` was set.
    pub full_trace: Option<Vec<String>>,
    /// A digest of every trace line: equal digests, equal runs.
    pub trace_digest: u64,
    pub history: Vec<HistoryOp>,
    /// One line per node at the end.
    pub nodes: Vec<String>,
}

impl SimOutcome {
    pub fn passed(&self) -> bool {
        self.violation.is_none()
    }

    /// The failure report: the violation, how to replay it, the nodes, and
    /// the trace of the last events.
    pub fn report(&self) -> String {
        let mut out = String::new();
        match &self.violation {
            None => out.push_str(&format!("seed {} passed\n", self.options.seed)),
            Some(v) => out.push_str(&format!("FAIL seed {}: {v}\n", self.options.seed)),
        }
        out.push_str(&format!("replay: {}\n", self.options.replay_command()));
        out.push_str(&format!("config: {}\n", self.config));
        let s = &self.stats;
        out.push_str(&format!(
            "stats: {} steps, {} virtual ms, {} elections, {} crashes ({} power losses, {} wipes), {} partitions, ops {} ok / {} failed / {} unknown\n",
            s.steps, s.virtual_ms, s.elections, s.crashes, s.power_losses, s.wipes, s.partitions, s.ops_ok, s.ops_failed, s.ops_unknown
        ));
        if self.options.lease_reads {
            out.push_str(&format!("lease reads: {}\n", s.lease_reads));
        }
        if self.options.faults.snapshot {
            out.push_str(&format!(
                "snapshots: {} taken ({} lost to crashes), {} compactions, {} transfers ({} chunks, {} failed), {} installed, {} crashes at snapshot crash points, {} AppendEntries below a snapshot\n",
                s.snapshots_taken,
                s.snapshots_lost,
                s.compactions,
                s.snapshot_transfers,
                s.snapshot_chunks,
                s.snapshot_transfers_failed,
                s.snapshots_installed,
                s.snapshot_crashes,
                s.appends_below_snapshot
            ));
        }
        if self.options.faults.membership {
            out.push_str(&format!(
                "membership: {} changes appended, {} committed, {} leadership transfers asked\n",
                s.membership_changes, s.membership_changes_committed, s.transfers
            ));
        }
        out.push_str("nodes:\n");
        for n in &self.nodes {
            out.push_str(&format!("  {n}\n"));
        }
        out.push_str(&format!("last {} events:\n", self.trace_tail.len()));
        for line in &self.trace_tail {
            out.push_str(&format!("  {line}\n"));
        }
        out
    }
}

/// Runs one seed to the end (or to its first violation).
pub fn run(options: &SimOptions) -> SimOutcome {
    let mut w = world::World::new(options.clone());
    w.run();
    outcome_of(options, &mut w)
}

fn outcome_of(options: &SimOptions, w: &mut world::World) -> SimOutcome {
    SimOutcome {
        options: options.clone(),
        config: w.config_summary(),
        violation: w.violation.clone(),
        stats: w.stats.clone(),
        trace_tail: w.trace.tail(),
        full_trace: w.trace.all().map(<[String]>::to_vec),
        trace_digest: w.trace.digest(),
        nodes: w.node_summaries(),
        history: std::mem::take(&mut w.history),
    }
}

/// One node as a scenario sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: raft::NodeId,
    pub up: bool,
    pub leader: bool,
    pub term: raft::Term,
    pub commit: raft::LogIndex,
    pub applied: raft::LogIndex,
    /// The core's log: it starts after `snapshot_index`, ends at `last_index`.
    pub snapshot_index: raft::LogIndex,
    pub last_index: raft::LogIndex,
    /// The durable log holds the entries after `disk_log_start` up to
    /// `disk_last`.
    pub disk_log_start: raft::LogIndex,
    pub disk_last: raft::LogIndex,
    /// Durable snapshots, oldest first: `(last index, last term)`.
    pub disk_snapshots: Vec<(raft::LogIndex, raft::Term)>,
    /// Snapshots installed from a leader, over all the node's lives.
    pub installs: u64,
}

/// A scripted run: the cluster and its clients as in [`run`], but no
/// nemesis. Faults happen when the script says: crashes, restarts,
/// isolation, snapshots, and crashes armed at a [`CrashPoint`]. Every
/// invariant is checked after every step as usual; [`Scenario::finish`]
/// heals and runs the end-of-run checks (liveness, durability,
/// linearizability).
pub struct Scenario {
    options: SimOptions,
    w: world::World,
}

impl Scenario {
    /// Node ids are 1-based, as in the traces.
    pub fn new(options: SimOptions) -> Scenario {
        let mut w = world::World::new(options.clone());
        w.set_scripted();
        w.begin();
        Scenario { options, w }
    }

    fn x(&self, id: raft::NodeId) -> usize {
        assert!(
            id >= 1 && id as usize <= self.options.nodes,
            "no node n{id}"
        );
        id as usize - 1
    }

    /// Runs the events of the next `ms` virtual milliseconds (or up to a
    /// violation).
    pub fn run_for(&mut self, ms: u64) -> &mut Self {
        self.w.run_until(self.w.now_us() + ms * 1000);
        self
    }

    /// Runs until `done` holds (checked after every event), at most `ms`
    /// virtual milliseconds. Returns whether it held.
    pub fn run_until(&mut self, ms: u64, mut done: impl FnMut(&Scenario) -> bool) -> bool {
        let deadline = self.w.now_us() + ms * 1000;
        loop {
            if done(self) {
                return true;
            }
            if self.w.violation.is_some() || self.w.now_us() > deadline || !self.w.step_once() {
                return false;
            }
        }
    }

    pub fn violation(&self) -> Option<&Violation> {
        self.w.violation.as_ref()
    }

    /// The report of the run so far (for assertion messages).
    pub fn report(&self) -> String {
        let mut out = format!(
            "{}\nconfig: {}\nnodes:\n",
            self.w
                .violation
                .as_ref()
                .map_or("no violation".to_string(), |v| v.to_string()),
            self.w.config_summary()
        );
        for n in self.w.node_summaries() {
            out.push_str(&format!("  {n}\n"));
        }
        for line in self.w.trace.tail() {
            out.push_str(&format!("  {line}\n"));
        }
        out
    }

    /// The last trace lines (`trace_lines` of them), oldest first.
    pub fn trace_tail(&self) -> Vec<String> {
        self.w.trace.tail()
    }

    /// The leader of the highest term among live nodes, if any.
    pub fn leader(&self) -> Option<raft::NodeId> {
        self.w.leader_id()
    }

    pub fn node(&self, id: raft::NodeId) -> NodeView {
        self.w.node_view(self.x(id))
    }

    /// A process crash (`power`: a power loss) of `id`; it stays down until
    /// [`Scenario::restart`].
    pub fn crash(&mut self, id: raft::NodeId, power: bool) {
        let x = self.x(id);
        self.w.crash_node(x, power);
    }

    pub fn restart(&mut self, id: raft::NodeId) {
        let x = self.x(id);
        self.w.restart_node(x);
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: raft::NodeId) {
        let x = self.x(id);
        self.w.isolate(x);
    }

    pub fn heal(&mut self) {
        self.w.heal_network();
    }

    /// `id` takes a snapshot now (written over the next few virtual ms).
    /// False if it has applied nothing since its last one.
    pub fn snapshot_now(&mut self, id: raft::NodeId) -> bool {
        let x = self.x(id);
        self.w.snapshot_now(x)
    }

    /// Crashes `id` (`power`: as a power loss) the next time it reaches
    /// `point`; it then stays down until [`Scenario::restart`].
    pub fn arm_crash(&mut self, id: raft::NodeId, point: CrashPoint, power: bool) {
        let x = self.x(id);
        self.w.arm_crash(x, point, power);
    }

    /// The crash points nodes crashed at, in order.
    pub fn crash_points_hit(&self) -> &[(raft::NodeId, CrashPoint)] {
        &self.w.crash_points_hit
    }

    pub fn stats(&self) -> &SimStats {
        &self.w.stats
    }

    /// Heals and restarts everything, then checks liveness, durability and
    /// linearizability, as at the end of [`run`].
    pub fn finish(mut self) -> SimOutcome {
        self.w.end();
        let options = self.options.clone();
        outcome_of(&options, &mut self.w)
    }
}

/// Explains a non-linearizable key: the operation no order could place,
/// the register's value where the search got stuck, and the operations
/// around it.
pub fn describe_lin_violation(history: &[HistoryOp], key: &[u8], result: &LinResult) -> String {
    let LinResult::Violation {
        op,
        linearized,
        state,
    } = result
    else {
        return format!("{result:?}");
    };
    let bad = &history[*op];
    let state = state.as_ref().map_or("nil".to_string(), |v| {
        String::from_utf8_lossy(v).into_owned()
    });
    let mut out = format!(
        "no linearization: after {linearized} operations the register holds {state}, and {} cannot be placed\n",
        bad.describe()
    );
    let end = |h: &HistoryOp| match h.outcome {
        Outcome::Ok(_) => h.complete_seq,
        _ => u64::MAX,
    };
    let mut related: Vec<&HistoryOp> = history
        .iter()
        .filter(|h| h.op.key() == key && !matches!(h.outcome, Outcome::Failed(_)))
        .filter(|h| h.invoke_seq <= end(bad))
        .collect();
    related.sort_by_key(|h| h.invoke_seq);
    let skip = related.len().saturating_sub(20);
    out.push_str(&format!(
        "  the last {} operations on this key invoked before it returned (failed ones omitted):\n",
        related.len() - skip
    ));
    for h in &related[skip..] {
        let mark = if h.id == bad.id { "✗" } else { " " };
        out.push_str(&format!("  {mark} {}\n", h.describe()));
    }
    out
}
