//! What a follower sends the leader when it forwards client commands, and
//! what comes back. A batch holds consecutive commands of one connection,
//! all writes or all reads, so the leader proposes them in order.

use serde::{Deserialize, Serialize};

use crate::kv::{KvCommand, KvOutput, KvQuery};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardRequest {
    Writes(Vec<KvCommand>),
    Reads(Vec<KvQuery>),
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
