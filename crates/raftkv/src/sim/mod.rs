//! A deterministic simulator of a raftkv cluster, for finding the rare
//! interleavings of crashes, partitions and message reordering that unit
//! tests never reach, and replaying any failure from its seed.
//!
//! One thread runs N [`raft::RaftCore`]s, each with a [`KvStore`](crate::kv::KvStore)
//! and a simulated disk, on a virtual clock; clients issue GET, SET,
//! SET IFEQ and INCR; faults are injected; every choice comes from one
//! seeded RNG. After every step the invariants of Figure 3 of the Raft
//! paper are checked ([`checker`]); at the end the client history must be
//! linearizable ([`linearizability`]) and the healed cluster must make
//! progress. The guide chapter is `docs/simulation.md`.
//!
//! * [`world`]: the event loop and the driver of each core (Ready, disk, apply)
//! * [`disk`]: written versus fsynced; what a crash or a power loss keeps
//! * [`network`]: delays, loss, duplication, reordering, partitions
//! * [`client`]: clients and the history they record
//! * [`faults`]: the fault mix and the bug switches
//! * [`trace`]: the readable record of the last events
//! * [`cli`]: `raftkv sim`

pub mod checker;
pub mod cli;
pub mod client;
pub mod disk;
pub mod faults;
pub mod linearizability;
pub mod network;
pub mod rng;
pub mod trace;
mod world;

pub use checker::{Violation, ViolationKind};
pub use client::{HistoryOp, KvOp, Outcome};
pub use faults::{Bug, FaultMix};
pub use linearizability::LinResult;

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
    pub partitions: u64,
    pub ops_ok: u64,
    pub ops_failed: u64,
    pub ops_unknown: u64,
    /// Keys whose history the checker could not decide within its budget.
    pub lin_inconclusive_keys: usize,
    /// Virtual ms from the heal to a converged cluster.
    pub liveness_ms: u64,
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
            "stats: {} steps, {} virtual ms, {} elections, {} crashes ({} power losses), {} partitions, ops {} ok / {} failed / {} unknown\n",
            s.steps, s.virtual_ms, s.elections, s.crashes, s.power_losses, s.partitions, s.ops_ok, s.ops_failed, s.ops_unknown
        ));
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
