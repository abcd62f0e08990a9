//! The deterministic simulator (`raftkv_sim`): fixed seeds across fault
//! mixes must pass every invariant; a seed must replay exactly; the
//! linearizability checker must tell a stale read from a good history; and
//! each bug switch must be caught within a bounded number of seeds; and
//! snapshots (§7) must survive crashes while they are taken and installed;
//! and membership changes (thesis chapter 4) must be safe under every fault.
//!
//! Guide: docs/12-simulation.md. More seeds: `raftkv sim --seeds 10000`.

mod each_injected_bug_is_caught_within_a_bounded_number_of_seeds;
mod fault_mixes;
mod found_by_the_simulator;
mod linearizability;
mod liveness;
mod membership;
mod snapshots;

use std::time::Instant;

use raftkv_sim::linearizability::{
    check_history, check_register, LinOp, LinResult, RegisterOp, RegisterOutput,
};
use raftkv_sim::{
    run, Bug, CrashPoint, FaultMix, Scenario, SimOptions, SimOutcome, SimStats, ViolationKind,
};

fn options(seed: u64, nodes: usize, steps: u64, faults: FaultMix) -> SimOptions {
    SimOptions {
        seed,
        nodes,
        steps,
        faults,
        ..SimOptions::default()
    }
}

/// Runs the seeds and fails with the full report of the first failure.
fn assert_seeds_pass(nodes: usize, steps: u64, mixes: &[(&str, FaultMix)], seeds: u64) {
    let started = Instant::now();
    let mut total_steps = 0;
    let mut inconclusive = 0;
    for (name, mix) in mixes {
        for seed in 0..seeds {
            let outcome = run(&options(seed, nodes, steps, *mix));
            assert!(outcome.passed(), "fault mix {name}:\n{}", outcome.report());
            total_steps += outcome.stats.steps;
            inconclusive += outcome.stats.lin_inconclusive_keys;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let runs = mixes.len() as u64 * seeds;
    println!(
        "{nodes} nodes: {runs} seeds passed in {secs:.2} s ({:.1} seeds/s, {:.0} steps/s), {inconclusive} inconclusive key histories",
        runs as f64 / secs,
        total_steps as f64 / secs
    );
}

fn mixes() -> Vec<(&'static str, FaultMix)> {
    vec![
        ("none", FaultMix::none()),
        ("partitions", FaultMix::partitions()),
        ("crashes+power loss", FaultMix::crashes()),
        ("loss+dup+reorder+long delays", FaultMix::network()),
        ("all", FaultMix::all()),
    ]
}
