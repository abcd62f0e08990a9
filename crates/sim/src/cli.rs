//! `raftkv sim`: run many seeds, or replay one.
//!
//! ```text
//! raftkv sim --seeds 1000 --nodes 5 --faults all
//! raftkv sim --seed 17 --nodes 3 --steps 5000 --faults crash,power,loss
//! raftkv sim --seeds 500 --faults snapshots
//! ```
//!
//! Exits 0 when every seed passes. On a failure it prints the seed, the
//! command that replays it, the state of every node and the last events.

use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::{run as run_seed, Bug, FaultMix, SimOptions};

#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Run this many seeds, from --first-seed on (default 100).
    #[arg(long, conflicts_with = "seed")]
    pub seeds: Option<u64>,
    /// Run exactly this seed (a replay); prints its report even if it passes.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The first seed of a --seeds run (default: from the clock; printed).
    #[arg(long)]
    pub first_seed: Option<u64>,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Events per seed before the faults heal.
    #[arg(long, default_value_t = 20_000)]
    pub steps: u64,
    /// Faults: none, all, partitions, crashes, network, snapshots, or a
    /// comma list of partition, asym, bridge, crash, power, loss, dup,
    /// reorder, delay, drift, snapshot, snapshot-churn, pause, clock-stop, wipe,
    /// membership (add, remove, promote and leadership transfer, the leader
    /// included) (`all` is every one but snapshot-churn and clock-stop).
    #[arg(long, default_value = "all")]
    pub faults: FaultMix,
    /// Concurrent clients.
    #[arg(long, default_value_t = 3)]
    pub clients: usize,
    /// Keys in use (few, so that operations collide).
    #[arg(long, default_value_t = 3)]
    pub keys: usize,
    /// Break one rule in every core, to see the simulator catch it:
    /// commit-previous-term-by-counting, forget-to-persist-vote,
    /// truncate-on-stale-append, read-without-quorum-check, skip-noop-on-election;
    /// or one in the simulator's driver: compact-before-snapshot-durable,
    /// install-without-restore, keep-superseded-log, skip-missed-ticks,
    /// ignore-vote-right, forget-removed-incarnations (with membership).
    #[arg(long)]
    pub bug: Option<Bug>,
    /// Fix pre-vote on or off (default: drawn from the seed).
    #[arg(long)]
    pub pre_vote: Option<bool>,
    /// Fix check-quorum on or off (default: drawn from the seed).
    #[arg(long)]
    pub check_quorum: Option<bool>,
    /// Fix the maximum entries per AppendEntries (default: drawn from the seed).
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Serve reads from leader leases (thesis §6.4.1; forces check-quorum on).
    #[arg(long)]
    pub lease_reads: bool,
    /// With snapshots: take one every N applied entries (default: drawn).
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// With snapshots: bytes per InstallSnapshot chunk (default: drawn).
    #[arg(long)]
    pub snapshot_chunk: Option<usize>,
    /// Trace lines shown for a failure.
    #[arg(long, default_value_t = 200)]
    pub trace_lines: usize,
    /// With --seed: print every event of the run, not just the last ones.
    #[arg(long)]
    pub full_trace: bool,
    /// Keep running after the first failing seed.
    #[arg(long)]
    pub keep_going: bool,
}

impl SimArgs {
    fn options(&self, seed: u64) -> SimOptions {
        SimOptions {
            seed,
            nodes: self.nodes,
            steps: self.steps,
            faults: self.faults,
            bug: self.bug,
            clients: self.clients,
            keys: self.keys,
            trace_lines: self.trace_lines,
            keep_full_trace: self.full_trace && self.seed.is_some(),
            pre_vote: self.pre_vote,
            check_quorum: self.check_quorum,
            max_entries_per_append: self.max_batch,
            lease_reads: self.lease_reads,
            snapshot_every: self.snapshot_every,
            snapshot_chunk: self.snapshot_chunk,
            ..SimOptions::default()
        }
    }
}

/// Runs `raftkv sim`.
pub fn run(args: SimArgs) -> ExitCode {
    if args.nodes == 0 || args.nodes > 9 {
        eprintln!("raftkv sim: --nodes must be between 1 and 9");
        return ExitCode::FAILURE;
    }
    if let Some(seed) = args.seed {
        let outcome = run_seed(&args.options(seed));
        if let Some(all) = &outcome.full_trace {
            for line in all {
                println!("{line}");
            }
        }
        print!("{}", outcome.report());
        return if outcome.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let count = args.seeds.unwrap_or(100);
    let first = args.first_seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() * 1000 + d.subsec_millis() as u64)
    });
    println!(
        "raftkv sim: seeds {first}..{} ({count}), {} nodes, {} steps, faults {}{}",
        first + count,
        args.nodes,
        args.steps,
        args.faults,
        args.bug.map_or(String::new(), |b| format!(", bug {b}"))
    );
    let started = Instant::now();
    let (mut failed, mut steps, mut inconclusive, mut ran) = (Vec::new(), 0u64, 0usize, 0u64);
    let (mut changes, mut transfers) = (0u64, 0u64);
    for seed in first..first + count {
        let outcome = run_seed(&args.options(seed));
        ran += 1;
        steps += outcome.stats.steps;
        inconclusive += outcome.stats.lin_inconclusive_keys;
        changes += outcome.stats.membership_changes_committed;
        transfers += outcome.stats.transfers;
        if !outcome.passed() {
            print!("{}", outcome.report());
            failed.push(seed);
            if !args.keep_going {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "{} of {ran} seeds passed in {secs:.1} s: {:.1} seeds/s, {:.0} steps/s; {inconclusive} key histories inconclusive (checker budget)",
        ran - failed.len() as u64,
        ran as f64 / secs,
        steps as f64 / secs
    );
    if args.faults.membership {
        println!("membership: {changes} configuration changes committed, {transfers} leadership transfers asked");
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failing seeds: {failed:?}");
        ExitCode::FAILURE
    }
}
