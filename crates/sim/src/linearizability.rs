//! A linearizability checker for the KV history, one key at a time.
//!
//! Linearizability is *local* (Herlihy & Wing 1990): a history is
//! linearizable iff its restriction to every object is, so each key is a
//! register checked on its own. Per key the search is Wing & Gong's (1993):
//! repeatedly pick an operation whose call precedes every pending return,
//! apply it to the model, and backtrack when a return is reached before its
//! operation was placed; with Porcupine's memoisation (Athalye 2017) of
//! `(set of linearized ops, model state)` so that equivalent orders are
//! explored once.
//!
//! An operation with an unknown outcome (a timed-out or interrupted write)
//! has its return at infinity: it may take effect anywhere after its call,
//! including after everything else, which is the same as never.

use std::collections::{BTreeMap, HashSet};

use raftkv_store::parse_i64;

/// What a client asked of one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegisterOp {
    /// GET.
    Read,
    /// SET.
    Write(Vec<u8>),
    /// SET key new IFEQ expected.
    Cas { expected: Vec<u8>, new: Vec<u8> },
    /// INCR.
    Incr,
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegisterOutput {
    /// A read's answer (`None` = nil).
    Value(Option<Vec<u8>>),
    /// SET, or a CAS that matched.
    Ok,
    /// A CAS that did not match (nil): nothing changed.
    CasFailed,
    /// INCR's new value.
    Integer(i64),
    /// INCR of a value that is not an integer: nothing changed.
    Error,
    /// No answer: the write may or may not have happened.
    Unknown,
}

/// One operation of a single-key history. Times are any totally ordered
/// clock (the simulator uses its event sequence numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinOp {
    /// The caller's id for the operation, echoed in a violation.
    pub id: usize,
    pub op: RegisterOp,
    pub output: RegisterOutput,
    pub call: u64,
    /// `None`: no response was ever received (unknown outcome).
    pub ret: Option<u64>,
}

/// The verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinResult {
    Linearizable,
    /// No order exists. `op` is the operation the deepest partial
    /// linearization could not place; `state` the register's value there.
    Violation {
        op: usize,
        linearized: usize,
        state: Option<Vec<u8>>,
    },
    /// The step budget ran out first (not a failure, but counted).
    Inconclusive,
}

/// The sequential specification of a register with Redis semantics: applies
/// `op` to `state` and returns the new state if `output` is what a
/// sequential execution would have answered.
pub fn step(
    state: &Option<Vec<u8>>,
    op: &RegisterOp,
    output: &RegisterOutput,
) -> Option<Option<Vec<u8>>> {
    let unknown = *output == RegisterOutput::Unknown;
    match op {
        RegisterOp::Read => match output {
            RegisterOutput::Value(v) if v == state => Some(state.clone()),
            RegisterOutput::Unknown => Some(state.clone()),
            _ => None,
        },
        RegisterOp::Write(v) => (unknown || *output == RegisterOutput::Ok).then(|| Some(v.clone())),
        RegisterOp::Cas { expected, new } => {
            if state.as_ref() == Some(expected) {
                (unknown || *output == RegisterOutput::Ok).then(|| Some(new.clone()))
            } else {
                (unknown || *output == RegisterOutput::CasFailed).then(|| state.clone())
            }
        }
        RegisterOp::Incr => {
            let current = match state {
                None => Some(0),
                Some(v) => parse_i64(v),
            };
            match current.and_then(|n| n.checked_add(1)) {
                Some(n) => (unknown || *output == RegisterOutput::Integer(n))
                    .then(|| Some(n.to_string().into_bytes())),
                None => (unknown || *output == RegisterOutput::Error).then(|| state.clone()),
            }
        }
    }
}

const NONE: usize = usize::MAX;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(n: usize) -> Self {
        Bitset(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Checks one register's history (initially nil). `budget` bounds the
/// search steps; beyond it the answer is [`LinResult::Inconclusive`].
pub fn check_register(ops: &[LinOp], budget: u64) -> LinResult {
    let n = ops.len();
    if n == 0 {
        return LinResult::Linearizable;
    }
    // Call and return events in time order; at equal times calls first
    // (overlapping is the permissive reading). Node 2n is the list head.
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, 0, i));
        events.push((op.ret.unwrap_or(u64::MAX), 1, i));
    }
    events.sort_unstable();
    let head = 2 * n;
    let mut next = vec![NONE; 2 * n + 1];
    let mut prev = vec![NONE; 2 * n + 1];
    let mut is_call = vec![false; 2 * n];
    let mut op_of = vec![0usize; 2 * n];
    let mut ret_node = vec![0usize; n];
    let mut last = head;
    for (k, &(_, kind, i)) in events.iter().enumerate() {
        is_call[k] = kind == 0;
        op_of[k] = i;
        if kind == 1 {
            ret_node[i] = k;
        }
        next[last] = k;
        prev[k] = last;
        last = k;
    }

    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, c: usize, r: usize| {
        next[prev[c]] = next[c];
        prev[next[c]] = prev[c]; // a call is always followed by its return
        next[prev[r]] = next[r];
        if next[r] != NONE {
            prev[next[r]] = prev[r];
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, c: usize, r: usize| {
        next[prev[r]] = r;
        if next[r] != NONE {
            prev[next[r]] = r;
        }
        next[prev[c]] = c;
        prev[next[c]] = c;
    };

    let mut linearized = Bitset::new(n);
    let mut cache: HashSet<(Bitset, Option<Vec<u8>>)> = HashSet::new();
    let mut calls: Vec<(usize, Option<Vec<u8>>)> = Vec::new();
    let mut state: Option<Vec<u8>> = None;
    let mut best: (usize, usize, Option<Vec<u8>>) = (0, 0, None);
    let mut entry = next[head];
    let mut steps = 0u64;
    while next[head] != NONE {
        steps += 1;
        if steps > budget {
            return LinResult::Inconclusive;
        }
        if is_call[entry] {
            let i = op_of[entry];
            if let Some(new_state) = step(&state, &ops[i].op, &ops[i].output) {
                let mut candidate = linearized.clone();
                candidate.set(i);
                if cache.insert((candidate.clone(), new_state.clone())) {
                    calls.push((entry, std::mem::replace(&mut state, new_state)));
                    linearized = candidate;
                    lift(&mut next, &mut prev, entry, ret_node[i]);
                    entry = next[head];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            // A return before its operation could be placed: backtrack.
            if calls.len() >= best.0 {
                best = (calls.len(), op_of[entry], state.clone());
            }
            let Some((c, s)) = calls.pop() else {
                return LinResult::Violation {
                    op: ops[best.1].id,
                    linearized: best.0,
                    state: best.2,
                };
            };
            let i = op_of[c];
            state = s;
            linearized.clear(i);
            unlift(&mut next, &mut prev, c, ret_node[i]);
            entry = next[c];
        }
    }
    LinResult::Linearizable
}

/// The verdict for a whole multi-key history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryVerdict {
    /// Keys whose history has no linearization, with the verdict.
    pub violations: Vec<(Vec<u8>, LinResult)>,
    /// Keys the budget could not decide.
    pub inconclusive: Vec<Vec<u8>>,
}

/// Checks every key of `ops` (`(key, op)` pairs) separately.
pub fn check_history(ops: &[(Vec<u8>, LinOp)], budget_per_key: u64) -> HistoryVerdict {
    let mut by_key: BTreeMap<&[u8], Vec<LinOp>> = BTreeMap::new();
    for (k, op) in ops {
        by_key.entry(k.as_slice()).or_default().push(op.clone());
    }
    let mut verdict = HistoryVerdict::default();
    for (key, ops) in by_key {
        match check_register(&ops, budget_per_key) {
            LinResult::Linearizable => {}
            LinResult::Inconclusive => verdict.inconclusive.push(key.to_vec()),
            v @ LinResult::Violation { .. } => verdict.violations.push((key.to_vec(), v)),
        }
    }
    verdict
}
