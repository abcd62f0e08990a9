//! Simulated clients and the history they record.
//!
//! Each client has at most one operation in flight, over a small key space
//! so that operations collide. It talks to one node per attempt: the last
//! leader it heard of, or a random node (followers answer "not leader" with a
//! hint, as a Redis cluster answers MOVED). Like a real client it gives up
//! after a timeout and sometimes retries the same command as a new operation.
//!
//! Outcomes follow Jepsen's convention: `Ok` (the effect happened, with this
//! answer), `Failed` (it certainly did not happen: refused, or a read) and
//! `Unknown` (a write whose fate the client cannot know: timeout or a
//! connection lost to a crash).

use std::collections::BTreeMap;

use raft::{LogIndex, NodeId, Term};

use crate::linearizability::{LinOp, RegisterOp, RegisterOutput};
use crate::rng::SimRng;
use raftkv_store::{KvCommand, KvOutput};

/// A client command on one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvOp {
    Get {
        key: Vec<u8>,
    },
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    SetIfEq {
        key: Vec<u8>,
        value: Vec<u8>,
        expected: Vec<u8>,
    },
    Incr {
        key: Vec<u8>,
    },
}

impl KvOp {
    pub fn key(&self) -> &[u8] {
        match self {
            KvOp::Get { key }
            | KvOp::Set { key, .. }
            | KvOp::SetIfEq { key, .. }
            | KvOp::Incr { key } => key,
        }
    }

    pub fn is_read(&self) -> bool {
        matches!(self, KvOp::Get { .. })
    }

    /// The log command of a write (`None` for a read).
    pub fn command(&self) -> Option<KvCommand> {
        match self.clone() {
            KvOp::Get { .. } => None,
            KvOp::Set { key, value } => Some(KvCommand::Set { key, value }),
            KvOp::SetIfEq {
                key,
                value,
                expected,
            } => Some(KvCommand::SetIfEq {
                key,
                value,
                expected,
            }),
            KvOp::Incr { key } => Some(KvCommand::IncrBy { key, by: 1 }),
        }
    }

    fn register_op(&self) -> RegisterOp {
        match self.clone() {
            KvOp::Get { .. } => RegisterOp::Read,
            KvOp::Set { value, .. } => RegisterOp::Write(value),
            KvOp::SetIfEq {
                value, expected, ..
            } => RegisterOp::Cas {
                expected,
                new: value,
            },
            KvOp::Incr { .. } => RegisterOp::Incr,
        }
    }
}

impl std::fmt::Display for KvOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self {
            KvOp::Get { key } => write!(f, "GET {}", s(key)),
            KvOp::Set { key, value } => write!(f, "SET {} {}", s(key), s(value)),
            KvOp::SetIfEq {
                key,
                value,
                expected,
            } => write!(f, "SET {} {} IFEQ {}", s(key), s(value), s(expected)),
            KvOp::Incr { key } => write!(f, "INCR {}", s(key)),
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Ok(KvOutput),
    Failed(String),
    Unknown(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Pending => f.write_str("pending"),
            Outcome::Ok(KvOutput::Ok) => f.write_str("ok"),
            Outcome::Ok(KvOutput::Nil) => f.write_str("ok nil"),
            Outcome::Ok(KvOutput::Integer(n)) => write!(f, "ok {n}"),
            Outcome::Ok(KvOutput::Value(v)) => write!(f, "ok {}", String::from_utf8_lossy(v)),
            Outcome::Ok(KvOutput::Error(e)) => write!(f, "ok error {e:?}"),
            Outcome::Ok(other) => write!(f, "ok {other:?}"),
            Outcome::Failed(why) => write!(f, "failed ({why})"),
            Outcome::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

/// One operation of the history: its invocation and its completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryOp {
    pub id: usize,
    pub client: usize,
    pub node: NodeId,
    pub op: KvOp,
    /// Position in the run's total order of events, and virtual time (µs).
    pub invoke_seq: u64,
    pub invoke_us: u64,
    pub outcome: Outcome,
    pub complete_seq: u64,
    pub complete_us: u64,
    /// Where a write landed in the leader's log, once proposed.
    pub proposed_at: Option<(LogIndex, Term)>,
}

impl HistoryOp {
    pub fn is_pending(&self) -> bool {
        self.outcome == Outcome::Pending
    }

    /// A readable line: `op 12 c1@n2 [100.000ms, 130.000ms] SET k1 17 → ok`.
    pub fn describe(&self) -> String {
        let end = match self.outcome {
            Outcome::Pending | Outcome::Unknown(_) => "∞".to_string(),
            _ => crate::trace::fmt_time(self.complete_us),
        };
        format!(
            "op {} c{}@n{} [{}, {}] {} → {}",
            self.id,
            self.client,
            self.node,
            crate::trace::fmt_time(self.invoke_us),
            end,
            self.op,
            self.outcome
        )
    }

    /// The operation as the linearizability checker sees it, or `None` when
    /// it certainly had no effect (a failure, or a read without an answer).
    pub fn to_lin_op(&self) -> Option<(Vec<u8>, LinOp)> {
        let output = match (&self.op, &self.outcome) {
            (_, Outcome::Failed(_)) => return None,
            (KvOp::Get { .. }, Outcome::Pending | Outcome::Unknown(_)) => return None,
            (_, Outcome::Pending | Outcome::Unknown(_)) => RegisterOutput::Unknown,
            (KvOp::Get { .. }, Outcome::Ok(KvOutput::Value(v))) => {
                RegisterOutput::Value(Some(v.clone()))
            }
            (KvOp::Get { .. }, Outcome::Ok(KvOutput::Nil)) => RegisterOutput::Value(None),
            (KvOp::SetIfEq { .. }, Outcome::Ok(KvOutput::Nil)) => RegisterOutput::CasFailed,
            (_, Outcome::Ok(KvOutput::Ok)) => RegisterOutput::Ok,
            (_, Outcome::Ok(KvOutput::Integer(n))) => RegisterOutput::Integer(*n),
            (_, Outcome::Ok(KvOutput::Error(_))) => RegisterOutput::Error,
            // An answer no sequential register gives; the checker refuses it.
            (_, Outcome::Ok(_)) => RegisterOutput::Value(Some(b"<unexpected output>".to_vec())),
        };
        let ret = match self.outcome {
            Outcome::Ok(_) => Some(self.complete_seq),
            _ => None,
        };
        Some((
            self.op.key().to_vec(),
            LinOp {
                id: self.id,
                op: self.op.register_op(),
                output,
                call: self.invoke_seq,
                ret,
            },
        ))
    }
}

/// One simulated client.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub in_flight: Option<usize>,
    /// The node that last claimed, or was said, to lead.
    pub leader_hint: Option<NodeId>,
    /// The last value this client saw per key (for SET IFEQ's `expected`).
    pub last_seen: BTreeMap<Vec<u8>, Vec<u8>>,
    /// A command to try again after a failure, as a new operation.
    pub retry: Option<KvOp>,
}

/// Picks the next command: reads and writes of every kind on a few keys.
/// Values are unique integers (so INCR usually applies), now and then a
/// non-integer (so INCR's error path is exercised too).
pub fn choose_op(rng: &mut SimRng, client: &Client, keys: usize, unique: &mut u64) -> KvOp {
    let key = format!("k{}", rng.below(keys.max(1) as u64)).into_bytes();
    *unique += 1;
    let fresh = if rng.chance(0.1) {
        format!("x{unique}")
    } else {
        format!("{}", *unique * 10)
    }
    .into_bytes();
    match rng.below(100) {
        0..=34 => KvOp::Get { key },
        35..=64 => KvOp::Set { key, value: fresh },
        65..=84 => {
            let expected = match client.last_seen.get(&key) {
                Some(v) if rng.chance(0.8) => v.clone(),
                _ => format!("{}", rng.below(*unique + 1) * 10).into_bytes(),
            };
            KvOp::SetIfEq {
                key,
                value: fresh,
                expected,
            }
        }
        _ => KvOp::Incr { key },
    }
}
