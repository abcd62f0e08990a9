//! Liveness: after the faults heal, a leader commits an entry of its term and a
//! client write commits on every node, within a bound.

use super::*;

#[test]
fn liveness_after_faults_heal() {
    // Every seed heals at the end; a leader must then commit an entry of its
    // term on every node, and a client write must commit everywhere, within
    // the bound (the run fails otherwise). Here we also look at how long it took.
    let mut worst = 0;
    for seed in 100..110 {
        for nodes in [3, 5] {
            let outcome = run(&options(seed, nodes, 3_000, FaultMix::all()));
            assert!(outcome.passed(), "{}", outcome.report());
            worst = worst.max(outcome.stats.liveness_ms);
        }
    }
    println!("slowest recovery after healing: {worst} virtual ms");
    assert!(worst < 15_000);
}
