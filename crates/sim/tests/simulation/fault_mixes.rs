//! Fixed seeds across fault mixes pass every invariant, with three and five
//! nodes; lease reads survive clock drift and paused leaders, and a stopped
//! leader clock breaks them where the checker sees it (thesis §6.4.1);
//! ReadIndex is safe with stopped clocks (thesis §6.4); wiped nodes never vote
//! again; a seed replays exactly.

use super::*;

#[test]
fn seeds_pass_with_three_nodes_across_fault_mixes() {
    assert_seeds_pass(3, 10_000, &mixes(), 40);
}

#[test]
fn seeds_pass_with_five_nodes() {
    assert_seeds_pass(5, 10_000, &mixes(), 10);
}

#[test]
fn seeds_pass_with_lease_reads_under_clock_drift() {
    // Thesis §6.4.1: lease reads trade a timing assumption for latency. The
    // nodes' clocks drift by up to ±5 % here (inside the 10 % margin), with
    // every other fault on; the checker must still see linearizable reads.
    assert_lease_seeds_pass(30, 10_000, FaultMix::all(), 1_000);
}

/// Runs `seeds` seeds with lease reads; all must pass, and more than
/// `min_lease_reads` reads must have been served from leases (so the lease
/// path was exercised, not bypassed).
fn assert_lease_seeds_pass(seeds: u64, steps: u64, faults: FaultMix, min_lease_reads: u64) {
    let mut lease_reads = 0;
    for seed in 0..seeds {
        let outcome = run(&SimOptions {
            lease_reads: true,
            ..options(seed, 3, steps, faults)
        });
        assert!(outcome.passed(), "{}", outcome.report());
        lease_reads += outcome.stats.lease_reads;
    }
    assert!(
        lease_reads > min_lease_reads,
        "reads were served from leases: {lease_reads}"
    );
}

#[test]
fn lease_reads_survive_paused_leaders() {
    // Thesis §6.4.1, and issue 13's seed 99000396: a leader stopped for up
    // to a second (SIGSTOP, GC, a VM pause) while a partition lets the
    // others elect and commit. When it resumes, the acknowledgements queued
    // in its socket must not extend its lease: the driver runs the ticks
    // that came due first (`raft::clock`), so check-quorum steps it down
    // and the lease has run out. `skip_missed_ticks` below is the same run
    // with the old driver.
    let faults: FaultMix = "pause,partition".parse().expect("fault names");
    assert_lease_seeds_pass(40, 20_000, faults, 500);
}

#[test]
fn a_stopped_leader_clock_breaks_lease_reads_and_the_checker_sees_it() {
    // The assumption of lease reads (thesis §6.4.1), shown rather than
    // told: clocks advance at nearly the same rate. A leader whose clock
    // stops while it goes on working (drift far beyond
    // `lease_clock_drift_percent`) still believes in its lease, and once a
    // partition has let the others elect a new leader and commit, it
    // answers a read from its old state. The same faults with ReadIndex are
    // the next test.
    let faults: FaultMix = "clock-stop,partition".parse().expect("fault names");
    for seed in 0..200 {
        let outcome = run(&SimOptions {
            lease_reads: true,
            ..options(seed, 3, 20_000, faults)
        });
        if let Some(v) = &outcome.violation {
            assert!(
                matches!(
                    v.kind,
                    ViolationKind::StaleRead | ViolationKind::Linearizability
                ),
                "a stale read, not something else:\n{}",
                outcome.report()
            );
            println!("lease reads with a stopped clock: stale read at seed {seed}: {v}");
            return;
        }
    }
    panic!("no stale read within 200 seeds: the clock-stop fault no longer tests leases");
}

#[test]
fn read_index_is_safe_with_stopped_clocks_and_pauses() {
    // ReadIndex asks a majority for every batch of reads: no clock involved.
    let faults: FaultMix = "clock-stop,pause,partition,asym"
        .parse()
        .expect("fault names");
    for seed in 0..30 {
        let outcome = run(&options(seed, 3, 10_000, faults));
        assert!(outcome.passed(), "{}", outcome.report());
    }
}

#[test]
fn wiped_nodes_never_vote_again_so_no_two_leaders_share_a_term() {
    // Issue 13: a node whose data dir is lost restarts at term 0 with no
    // vote, and without `raft::incarnation` it would vote again in a term
    // where it already voted. Its peers' books know its old incarnation and
    // suspend its vote; the Election Safety check sees any second leader.
    let faults: FaultMix = "wipe,crash,partition".parse().expect("fault names");
    let mut wipes = 0;
    for (nodes, seeds) in [(3, 40), (5, 15)] {
        for seed in 0..seeds {
            let outcome = run(&options(seed, nodes, 20_000, faults));
            assert!(outcome.passed(), "{}", outcome.report());
            wipes += outcome.stats.wipes;
        }
    }
    assert!(wipes > 20, "data dirs were wiped: {wipes}");
}

#[test]
fn a_seed_replays_exactly() {
    for mix in [FaultMix::all(), FaultMix::snapshots()] {
        let opts = SimOptions {
            keep_full_trace: true,
            ..options(42, 3, 3_000, mix)
        };
        let a = run(&opts);
        let b = run(&opts);
        assert!(a.passed(), "{}", a.report());
        assert_eq!(a.trace_digest, b.trace_digest);
        assert_eq!(a.full_trace, b.full_trace);
        assert_eq!(a.history, b.history);
        assert_eq!(a.stats, b.stats);
        let c = run(&SimOptions { seed: 43, ..opts });
        assert_ne!(a.trace_digest, c.trace_digest, "another seed, another run");
    }
}
