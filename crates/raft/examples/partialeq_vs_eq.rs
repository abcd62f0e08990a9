//! `PartialEq` versus `Eq`: the journal's Day 1 question, answered with the
//! raft crate's types and with `f64`.
//!
//! Run it with `cargo run -p raft --example partialeq_vs_eq`. Chapter 7 of
//! the guide ("derive: what each one generates", "PartialEq versus Eq") is
//! the prose version. The story is written into a `String` (so that
//! `tests/examples_run.rs` can check it), and `main` prints it.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use raft::{LogEntry, NodeId, RaftState, Term};

fn main() {
    let mut out = String::new();
    narrate(&mut out).expect("writing to a String");
    print!("{out}");
}

/// A link fault with a loss *probability*: a float. It can derive
/// `PartialEq` (compare field by field) but not `Eq`: adding `Eq` to this
/// derive fails with "the trait bound `f64: Eq` is not satisfied".
#[derive(Debug, Clone, Copy, PartialEq)]
struct LinkLoss {
    from: NodeId,
    to: NodeId,
    probability: f64,
}

/// `x == x`. Clippy flags that expression as a likely typo (`eq_op`), which
/// is usually right; here it is the whole point, so we allow it.
#[allow(clippy::eq_op)]
fn equals_itself<T: PartialEq>(x: &T) -> bool {
    x == x
}

/// The same, but only types with `Eq` may call it: the compiler checks the
/// bound `T: Eq` at every call.
fn is_reflexive<T: Eq>(x: &T) -> bool {
    equals_itself(x)
}

pub fn narrate(out: &mut String) -> std::fmt::Result {
    // -- What each derive on `RaftState` gives you ---------------------------
    // `RaftState` derives Debug, Clone, Copy, PartialEq, Eq, Hash (types.rs).
    writeln!(out, "-- the derives on RaftState --")?;
    let a = RaftState::Leader;
    let b = a; // Copy: `a` is copied, not moved, so we can still use it
    writeln!(out, "Debug prints {a:?}; Copy kept both: {a:?} and {b:?}")?;
    writeln!(
        out,
        "PartialEq gives ==: Leader == Leader is {}, Leader == Follower is {}",
        a == b,
        a == RaftState::Follower
    )?;
    // `LogEntry` derives Clone and PartialEq, Eq but not Copy (it owns a Vec).
    let entry = LogEntry::new(2, 7, b"SET x 1".to_vec());
    let copy = entry.clone(); // explicit: copying the bytes costs something
    writeln!(
        out,
        "a cloned LogEntry is == to the original: {}",
        copy == entry
    )?;

    // -- Eq + Hash: RaftState can be a HashMap key ----------------------------
    writeln!(out, "-- RaftState as a HashMap key --")?;
    let cluster = [
        RaftState::Follower,
        RaftState::Leader,
        RaftState::Follower,
        RaftState::Candidate,
        RaftState::Follower,
    ];
    let mut count: HashMap<RaftState, usize> = HashMap::new();
    for state in cluster {
        *count.entry(state).or_insert(0) += 1;
    }
    // A HashMap has no fixed order; print in an order we choose.
    for state in [RaftState::Leader, RaftState::Candidate, RaftState::Follower] {
        let n = count.get(&state).copied().unwrap_or(0);
        writeln!(out, "{state}s: {n}")?;
    }

    // -- Term is a u64: Eq and Hash too -------------------------------------
    writeln!(out, "-- Term (u64) is Eq --")?;
    let terms_seen: HashSet<Term> = [1, 1, 2, 3, 3, 3].into_iter().collect();
    let mut sorted: Vec<Term> = terms_seen.into_iter().collect();
    sorted.sort();
    writeln!(out, "distinct terms in a log: {sorted:?}")?;
    let term: Term = 5;
    writeln!(
        out,
        "every Term equals itself: {}; so does every RaftState: {}",
        is_reflexive(&term),
        is_reflexive(&RaftState::Candidate)
    )?;

    // -- f64 is only PartialEq: NaN is not equal to itself -------------------
    writeln!(out, "-- f64 is only PartialEq --")?;
    let nan = f64::NAN;
    writeln!(out, "f64::NAN == f64::NAN is {}", equals_itself(&nan))?;
    writeln!(out, "1.5 == 1.5 is {}", equals_itself(&1.5_f64))?;
    // `is_reflexive(&nan)` does not compile: "the trait bound `f64: Eq` is not
    // satisfied". Neither does a set of floats:
    //
    //     let mut set: HashSet<f64> = HashSet::new();
    //     set.insert(0.5); // error: `f64: Eq` and `f64: Hash` are not satisfied
    //
    // A key equal to nothing, not even itself, could be stored but never found.
    //
    // When you do need to sort or compare floats, `total_cmp` is a total
    // order (IEEE 754 totalOrder) in which NaN equals itself:
    writeln!(
        out,
        "f64::NAN.total_cmp(&f64::NAN) is {:?}",
        nan.total_cmp(&nan)
    )?;
    let mut losses = vec![0.5, f64::NAN, 0.1, 0.0];
    // `losses.sort()` does not compile (`sort` needs `Ord`); this does:
    losses.sort_by(|x, y| x.total_cmp(y));
    writeln!(out, "sorted with total_cmp: {losses:?}")?;
    writeln!(
        out,
        "0.1 vs NaN: partial_cmp gives {:?}, total_cmp gives {:?}",
        0.1_f64.partial_cmp(&nan),
        0.1_f64.total_cmp(&nan)
    )?;

    // -- A float is fine as a value, just not as a key ---------------------
    // The in-memory network does exactly this: `HashMap<(NodeId, NodeId), f64>`
    // (transport_memory.rs) keys on a pair of u64s and stores the float.
    writeln!(out, "-- floats as values --")?;
    let link = LinkLoss {
        from: 1,
        to: 2,
        probability: 0.25,
    };
    let mut loss: HashMap<(NodeId, NodeId), f64> = HashMap::new();
    loss.insert((link.from, link.to), link.probability);
    writeln!(out, "loss on link 1 -> 2: {:?}", loss.get(&(1, 2)))?;
    let broken = LinkLoss {
        probability: f64::NAN,
        ..link
    };
    writeln!(
        out,
        "a LinkLoss equals itself: {}; one holding NaN does not: {}",
        equals_itself(&link),
        equals_itself(&broken)
    )?;
    Ok(())
}
