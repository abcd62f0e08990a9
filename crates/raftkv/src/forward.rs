//! What a follower sends the leader when it forwards client commands, and
//! what comes back. A batch holds consecutive commands of one connection,
//! all writes or all reads, so the leader proposes them in order.

use serde::{Deserialize, Serialize};

use crate::kv::{KvCommand, KvOutput, KvQuery};

/// Commands a connection runs as one unit: consecutive commands, all
/// writes or all reads. The same type is what a follower forwards to the
/// leader (postcard-encoded in a peer frame), so a batch travels as it was
/// built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Batch {
    Writes(Vec<KvCommand>),
    Reads(Vec<KvQuery>),
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        match self {
            Batch::Writes(w) => w.len(),
            Batch::Reads(r) => r.len(),
        }
    }

    /// Appends `other`'s commands if it is of the same kind; hands it back
    /// otherwise.
    pub fn append(&mut self, other: Batch) -> Result<(), Batch> {
        match (self, other) {
            (Batch::Writes(w), Batch::Writes(more)) => w.extend(more),
            (Batch::Reads(r), Batch::Reads(more)) => r.extend(more),
            (_, other) => return Err(other),
        }
        Ok(())
    }

    /// The commands from `at` on (the batch keeps those before).
    pub fn split_off(&mut self, at: usize) -> Batch {
        match self {
            Batch::Writes(w) => Batch::Writes(w.split_off(at.min(w.len()))),
            Batch::Reads(r) => Batch::Reads(r.split_off(at.min(r.len()))),
        }
    }
}

/// The fate of one forwarded command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done(KvOutput),
    /// Certainly not applied, and never will be (nothing was proposed, or
    /// the entry was overwritten). Safe to retry.
    NotApplied,
    /// Not known: the write may still take effect.
    Unknown,
}

impl Outcome {
    /// An upper bound on the outcome's encoded size, cheap to compute: what
    /// a leader counts to keep a forward reply within one frame.
    pub fn size_bound(&self) -> usize {
        match self {
            Outcome::Done(out) => FIELD + output_bound(out),
            Outcome::NotApplied | Outcome::Unknown => FIELD,
        }
    }
}

/// At least what a tag, a varint length or an integer takes.
const FIELD: usize = 16;

/// An upper bound on an output's encoded size.
fn output_bound(out: &KvOutput) -> usize {
    match out {
        KvOutput::Ok | KvOutput::Nil => 0,
        KvOutput::Integer(_) => FIELD,
        KvOutput::Value(v) => FIELD + v.len(),
        KvOutput::Error(e) | KvOutput::Status(e) => FIELD + e.len(),
        KvOutput::Values(vs) => {
            FIELD
                + vs.iter()
                    .map(|v| FIELD + v.as_ref().map_or(0, Vec::len))
                    .sum::<usize>()
        }
        KvOutput::Multi(outs) => {
            FIELD + outs.iter().map(|o| FIELD + output_bound(o)).sum::<usize>()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardReply {
    /// The receiver does not lead; nothing was proposed.
    NotLeader {
        leader_hint: Option<u64>,
    },
    Outcomes(Vec<Outcome>),
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain enums into a Vec cannot fail.
    postcard::to_allocvec(v).unwrap_or_default()
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_never_encodes_larger_than_its_size_bound() {
        let big = vec![0xff; 16_384];
        let outcomes = [
            Outcome::Done(KvOutput::Ok),
            Outcome::Done(KvOutput::Nil),
            Outcome::Done(KvOutput::Integer(i64::MIN)),
            Outcome::Done(KvOutput::Value(big.clone())),
            Outcome::Done(KvOutput::Error("E".repeat(200))),
            Outcome::Done(KvOutput::Values(vec![
                None,
                Some(big.clone()),
                Some(Vec::new()),
            ])),
            Outcome::NotApplied,
            Outcome::Unknown,
        ];
        for o in outcomes {
            let len = encode(&o).len();
            assert!(len <= o.size_bound(), "{o:?}: {len} > {}", o.size_bound());
        }
    }
}
