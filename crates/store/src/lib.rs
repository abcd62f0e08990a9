//! The key-value state machine: the journal's "Day 8", on the [`StateMachine`]
//! trait. Keys and values are bytes. Writes arrive as committed log entries
//! (encoded [`KvCommand`]s); reads are [`KvQuery`]s answered by the leader
//! after a ReadIndex round.
//!
//! `apply` is deterministic: it reads nothing but the command and the current
//! map, so every replica that applies the same log reaches the same state.

use std::io::{Read, Write};

use bytes::Bytes;
use raft::{LogIndex, SnapshotWriter, StateMachine};
use serde::{Deserialize, Serialize};

/// `serde(with)` helpers for lists of byte strings: each item is written as
/// one byte string (`serde_bytes`), not as a sequence of `u8`. postcard
/// writes both the same way (a varint length, then the bytes), so the bytes
/// on the wire and in the log do not change; but a byte string is copied at
/// once, where a sequence goes through serde one byte at a time. (A 4 MB
/// `MSET` took 300 ms to decode in a debug build, on the Raft loop, long
/// enough for the leader to miss its check-quorum round.)
mod byte_lists {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub mod keys {
        use super::*;

        pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|k| Bytes::new(k)))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
            let items = Vec::<ByteBuf>::deserialize(d)?;
            Ok(items.into_iter().map(ByteBuf::into_vec).collect())
        }
    }

    pub mod pairs {
        use super::*;

        type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

        pub fn serialize<S: Serializer>(v: &[(Vec<u8>, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|(k, v)| (Bytes::new(k), Bytes::new(v))))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Pairs, D::Error> {
            let items = Vec::<(ByteBuf, ByteBuf)>::deserialize(d)?;
            Ok(items
                .into_iter()
                .map(|(k, v)| (k.into_vec(), v.into_vec()))
                .collect())
        }
    }

    pub mod values {
        use super::*;

        pub fn serialize<S: Serializer>(v: &[Option<Vec<u8>>], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|v| v.as_deref().map(Bytes::new)))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<Option<Vec<u8>>>, D::Error> {
            let items = Vec::<Option<ByteBuf>>::deserialize(d)?;
            Ok(items
                .into_iter()
                .map(|v| v.map(ByteBuf::into_vec))
                .collect())
        }
    }
}

/// A write. Each is one log entry; MSET is one entry, hence atomic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    Set {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Valkey's `SET key value IFEQ expected`: set only if the current value
    /// equals `expected` (a compare-and-set).
    SetIfEq {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        #[serde(with = "serde_bytes")]
        expected: Vec<u8>,
    },
    Del {
        #[serde(with = "byte_lists::keys")]
        keys: Vec<Vec<u8>>,
    },
    IncrBy {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        by: i64,
    },
    MSet {
        #[serde(with = "byte_lists::pairs")]
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    // New variants go last: postcard numbers them in order, and the log
    // holds entries written by every earlier version.
    /// `SET key value [NX|XX] [GET]` (and `GETSET`): set unless the
    /// condition fails; with `get`, answer the old value either way.
    SetWith {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        condition: Option<SetCondition>,
        get: bool,
    },
    /// `SETNX`: 1 if set, 0 if the key existed.
    SetNx {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// `GETDEL`: the value, and the key is gone.
    GetDel {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// `APPEND`: the new length. `max_len` is the server's value limit when
    /// the leader took the command, carried in the entry so that every
    /// replica refuses the same appends.
    Append {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        max_len: u64,
    },
    /// `SETRANGE`: overwrite from `offset` (zero-padding), the new length.
    SetRange {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        offset: u64,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// `MSETNX`: all or nothing, 1 if set, 0 if any key existed.
    MSetNx {
        #[serde(with = "byte_lists::pairs")]
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// `DELIFEQ key value`: delete only if the value is `value` (1/0): the
    /// safe unlock of a `SET lock token NX` lock.
    DelIfEq {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// `RENAME` (`nx: false`) and `RENAMENX` (`nx: true`).
    Rename {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        new_key: Vec<u8>,
        nx: bool,
    },
    /// `FLUSHDB` and `FLUSHALL` (one database): every key goes, in one entry.
    FlushAll,
    /// `MULTI` ... `EXEC`: the queued commands, writes and reads, applied
    /// one after the other in one entry, so nothing else runs between them
    /// on any replica; the answer is each command's output, in order.
    Exec { ops: Vec<TxOp> },
    /// A command stamped with the leader's wall clock when it proposed it
    /// (Unix ms; [`encode_stamped`]). Applying it first moves the store's
    /// clock ([`KvStore::clock_ms`]) to the stamp, never back: time as the
    /// log carries it, the same on every replica and in every replay,
    /// which is what expiry will be decided against.
    At {
        now_ms: u64,
        command: Box<KvCommand>,
    },
}

/// `KvCommand::At`'s place among the variants (postcard writes a variant
/// as its index, a varint).
const AT_VARIANT: u32 = 15;

/// The log bytes of `KvCommand::At { now_ms, command }`, written without
/// copying `command` into a `Box` first (the leader stamps every write).
pub fn encode_stamped(command: &KvCommand, now_ms: u64) -> Vec<u8> {
    // Serialising these plain values into a Vec cannot fail.
    let out = postcard::to_allocvec(&AT_VARIANT).unwrap_or_default();
    let out = postcard::to_extend(&now_ms, out).unwrap_or_default();
    postcard::to_extend(command, out).unwrap_or_default()
}

/// One command queued in a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxOp {
    Write(KvCommand),
    /// Answered from the state at its place in the transaction.
    Read(KvQuery),
}

/// `SET`'s `NX` (only if missing) or `XX` (only if present).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCondition {
    Nx,
    Xx,
}

/// Redis' limit on a string's length (`proto-max-bulk-len`'s default),
/// which `SETRANGE` checks before it pads.
pub const MAX_STRING_LEN: u64 = 512 << 20;
pub const STRING_TOO_LONG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

impl KvCommand {
    /// Whether this command may change every key (`FLUSHALL`): then
    /// [`KvCommand::keys`] lists none, and a digest or a `WATCH` must look
    /// at them all.
    pub fn touches_every_key(&self) -> bool {
        match self {
            KvCommand::FlushAll => true,
            KvCommand::At { command, .. } => command.touches_every_key(),
            KvCommand::Exec { ops } => ops
                .iter()
                .any(|op| matches!(op, TxOp::Write(c) if c.touches_every_key())),
            _ => false,
        }
    }

    /// The keys this command may change (for a state digest, and for
    /// `WATCH`).
    pub fn keys(&self) -> Vec<&[u8]> {
        match self {
            KvCommand::Set { key, .. }
            | KvCommand::SetIfEq { key, .. }
            | KvCommand::IncrBy { key, .. }
            | KvCommand::SetWith { key, .. }
            | KvCommand::SetNx { key, .. }
            | KvCommand::GetDel { key }
            | KvCommand::Append { key, .. }
            | KvCommand::SetRange { key, .. }
            | KvCommand::DelIfEq { key, .. } => vec![key],
            KvCommand::Rename { key, new_key, .. } => vec![key, new_key],
            // Every key: see `touches_every_key`.
            KvCommand::FlushAll => Vec::new(),
            KvCommand::At { command, .. } => command.keys(),
            KvCommand::Exec { ops } => ops
                .iter()
                .flat_map(|op| match op {
                    TxOp::Write(c) => c.keys(),
                    TxOp::Read(_) => Vec::new(),
                })
                .collect(),
            KvCommand::Del { keys } => keys.iter().map(Vec::as_slice).collect(),
            KvCommand::MSet { pairs } | KvCommand::MSetNx { pairs } => {
                pairs.iter().map(|(k, _)| k.as_slice()).collect()
            }
        }
    }
}

/// A read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvQuery {
    Get {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    MGet {
        #[serde(with = "byte_lists::keys")]
        keys: Vec<Vec<u8>>,
    },
    Exists {
        #[serde(with = "byte_lists::keys")]
        keys: Vec<Vec<u8>>,
    },
    DbSize,
    // New variants go last (see `KvCommand`).
    Strlen {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// `GETRANGE key start end`, Redis' index rules.
    GetRange {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        start: i64,
        end: i64,
    },
    /// `TYPE`: `string`, or `none` for a missing key.
    Type {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// `KEYS pattern`, Redis' glob syntax (`*`, `?`, `[a-z]`, `[^x]`, `\`).
    Keys {
        #[serde(with = "serde_bytes")]
        pattern: Vec<u8>,
    },
    /// `RANDOMKEY`: a key, or nil when there is none. `seed` picks which
    /// (the server draws it), so the answer does not depend on the map's
    /// iteration order alone.
    RandomKey {
        seed: u64,
    },
}

/// What a command or query returns; maps one-to-one onto RESP replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOutput {
    Ok,
    /// No value (GET of a missing key, a failed IFEQ).
    Nil,
    Integer(i64),
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    Values(#[serde(with = "byte_lists::values")] Vec<Option<Vec<u8>>>),
    /// A command-level error (the state is unchanged), e.g. INCR of a string.
    Error(String),
    // New variants go last (see `KvCommand`).
    /// A status reply (`+string`, `TYPE`'s answer).
    Status(String),
    /// `EXEC`'s answer: one output per queued command.
    Multi(Vec<KvOutput>),
}

pub const NO_SUCH_KEY: &str = "ERR no such key";
pub const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
pub const OVERFLOW: &str = "ERR increment or decrement would overflow";

/// The replicated map.
///
/// An immutable hash array mapped trie (`imbl::HashMap`): cloning it is O(1)
/// and the clone shares structure with the original, so a snapshot is a
/// clone taken between two applies and written out on another thread while
/// applying goes on (copy-on-write at the granularity of trie nodes). Keys
/// and values are `Bytes`, so copying a trie node copies reference counts,
/// not data.
#[derive(Debug, Default, Clone)]
pub struct KvStore {
    map: imbl::HashMap<Bytes, Bytes>,
    /// The latest time a leader stamped on an applied entry (Unix ms; 0
    /// before any). It never goes back, even if a new leader's clock is
    /// behind the old one's.
    clock_ms: u64,
}

impl KvStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The store's clock: see [`KvCommand::At`].
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(|v| v.as_ref())
    }

    /// Applies one write (the pure part of `apply`).
    pub fn execute(&mut self, cmd: KvCommand) -> KvOutput {
        match cmd {
            KvCommand::Set { key, value } => {
                self.map.insert(key.into(), value.into());
                KvOutput::Ok
            }
            KvCommand::SetIfEq {
                key,
                value,
                expected,
            } => match self.map.get(key.as_slice()) {
                Some(current) if current.as_ref() == expected.as_slice() => {
                    self.map.insert(key.into(), value.into());
                    KvOutput::Ok
                }
                _ => KvOutput::Nil,
            },
            KvCommand::Del { keys } => {
                let removed = keys
                    .iter()
                    .filter(|k| self.map.remove(k.as_slice()).is_some())
                    .count();
                KvOutput::Integer(removed as i64)
            }
            KvCommand::IncrBy { key, by } => self.incr_by(key, by),
            KvCommand::MSet { pairs } => {
                for (k, v) in pairs {
                    self.map.insert(k.into(), v.into());
                }
                KvOutput::Ok
            }
            KvCommand::SetWith {
                key,
                value,
                condition,
                get,
            } => {
                let old = self.map.get(key.as_slice()).cloned();
                let allowed = match condition {
                    None => true,
                    Some(SetCondition::Nx) => old.is_none(),
                    Some(SetCondition::Xx) => old.is_some(),
                };
                if allowed {
                    self.map.insert(key.into(), value.into());
                }
                match (get, old) {
                    (true, Some(v)) => KvOutput::Value(v.to_vec()),
                    (true, None) => KvOutput::Nil,
                    (false, _) if allowed => KvOutput::Ok,
                    (false, _) => KvOutput::Nil,
                }
            }
            KvCommand::SetNx { key, value } => {
                if self.map.contains_key(key.as_slice()) {
                    KvOutput::Integer(0)
                } else {
                    self.map.insert(key.into(), value.into());
                    KvOutput::Integer(1)
                }
            }
            KvCommand::GetDel { key } => match self.map.remove(key.as_slice()) {
                Some(v) => KvOutput::Value(v.to_vec()),
                None => KvOutput::Nil,
            },
            KvCommand::Append {
                key,
                value,
                max_len,
            } => {
                let old = self.map.get(key.as_slice()).map_or(&[][..], |v| v.as_ref());
                let len = old.len() as u64 + value.len() as u64;
                if len > max_len {
                    return KvOutput::Error(STRING_TOO_LONG.to_string());
                }
                let mut joined = Vec::with_capacity(len as usize);
                joined.extend_from_slice(old);
                joined.extend_from_slice(&value);
                self.map.insert(key.into(), joined.into());
                KvOutput::Integer(len as i64)
            }
            KvCommand::SetRange { key, offset, value } => {
                let old = self.map.get(key.as_slice());
                let old_len = old.map_or(0, |v| v.len());
                if value.is_empty() {
                    // Nothing to write: the length as it is, no key made.
                    return KvOutput::Integer(old_len as i64);
                }
                let end = offset.saturating_add(value.len() as u64);
                if end > MAX_STRING_LEN {
                    return KvOutput::Error(STRING_TOO_LONG.to_string());
                }
                let mut bytes = old.map_or_else(Vec::new, |v| v.to_vec());
                let (offset, end) = (offset as usize, end as usize);
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[offset..end].copy_from_slice(&value);
                let len = bytes.len();
                self.map.insert(key.into(), bytes.into());
                KvOutput::Integer(len as i64)
            }
            KvCommand::MSetNx { pairs } => {
                if pairs
                    .iter()
                    .any(|(k, _)| self.map.contains_key(k.as_slice()))
                {
                    return KvOutput::Integer(0);
                }
                for (k, v) in pairs {
                    self.map.insert(k.into(), v.into());
                }
                KvOutput::Integer(1)
            }
            KvCommand::DelIfEq { key, value } => match self.map.get(key.as_slice()) {
                Some(v) if v.as_ref() == value.as_slice() => {
                    self.map.remove(key.as_slice());
                    KvOutput::Integer(1)
                }
                _ => KvOutput::Integer(0),
            },
            KvCommand::Rename { key, new_key, nx } => {
                let Some(value) = self.map.get(key.as_slice()).cloned() else {
                    return KvOutput::Error(NO_SUCH_KEY.to_string());
                };
                if nx && self.map.contains_key(new_key.as_slice()) {
                    // Also when renaming a key to itself, as Redis answers.
                    return KvOutput::Integer(0);
                }
                if key != new_key {
                    self.map.remove(key.as_slice());
                    self.map.insert(new_key.into(), value);
                }
                if nx {
                    KvOutput::Integer(1)
                } else {
                    KvOutput::Ok
                }
            }
            KvCommand::FlushAll => {
                self.map = imbl::HashMap::new();
                KvOutput::Ok
            }
            KvCommand::At { now_ms, command } => {
                self.clock_ms = self.clock_ms.max(now_ms);
                self.execute(*command)
            }
            KvCommand::Exec { ops } => KvOutput::Multi(
                ops.into_iter()
                    .map(|op| match op {
                        TxOp::Write(c) => self.execute(c),
                        TxOp::Read(q) => self.query(&q),
                    })
                    .collect(),
            ),
        }
    }

    fn incr_by(&mut self, key: Vec<u8>, by: i64) -> KvOutput {
        let current = match self.map.get(key.as_slice()) {
            None => 0,
            Some(v) => match parse_i64(v) {
                Some(n) => n,
                None => return KvOutput::Error(NOT_AN_INTEGER.to_string()),
            },
        };
        match current.checked_add(by) {
            Some(n) => {
                self.map
                    .insert(key.into(), n.to_string().into_bytes().into());
                KvOutput::Integer(n)
            }
            None => KvOutput::Error(OVERFLOW.to_string()),
        }
    }

    /// Answers one read.
    pub fn query(&self, q: &KvQuery) -> KvOutput {
        match q {
            KvQuery::Get { key } => match self.map.get(key.as_slice()) {
                Some(v) => KvOutput::Value(v.to_vec()),
                None => KvOutput::Nil,
            },
            KvQuery::MGet { keys } => KvOutput::Values(
                keys.iter()
                    .map(|k| self.map.get(k.as_slice()).map(|v| v.to_vec()))
                    .collect(),
            ),
            KvQuery::Exists { keys } => KvOutput::Integer(
                keys.iter()
                    .filter(|k| self.map.contains_key(k.as_slice()))
                    .count() as i64,
            ),
            KvQuery::DbSize => KvOutput::Integer(self.map.len() as i64),
            KvQuery::Strlen { key } => {
                KvOutput::Integer(self.map.get(key.as_slice()).map_or(0, |v| v.len()) as i64)
            }
            KvQuery::GetRange { key, start, end } => {
                let v = self.map.get(key.as_slice()).map_or(&[][..], |v| v.as_ref());
                KvOutput::Value(get_range(v, *start, *end).to_vec())
            }
            KvQuery::Type { key } => KvOutput::Status(
                if self.map.contains_key(key.as_slice()) {
                    "string"
                } else {
                    "none"
                }
                .to_string(),
            ),
            KvQuery::Keys { pattern } => KvOutput::Values(
                self.map
                    .keys()
                    // Redis' `KEYS *` lists every key, the empty one too.
                    .filter(|k| pattern.as_slice() == b"*" || glob_match(pattern, k))
                    .map(|k| Some(k.to_vec()))
                    .collect(),
            ),
            KvQuery::RandomKey { seed } => match self.map.len() {
                0 => KvOutput::Nil,
                n => {
                    // O(n), as KEYS is; Redis picks a bucket in O(1).
                    let at = (*seed % n as u64) as usize;
                    self.map
                        .keys()
                        .nth(at)
                        .map_or(KvOutput::Nil, |k| KvOutput::Value(k.to_vec()))
                }
            },
        }
    }
}

/// Redis' glob matching (`stringmatchlen` in `util.c`, case-sensitive),
/// step for step: `*` any run, `?` any byte, `[abc]`, `[^abc]`, `[a-z]`
/// classes, and `\` quoting the next byte. Like Redis', it never matches
/// an empty string (`KEYS *` is special-cased by its caller).
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let (plen, slen) = (pattern.len(), s.len());
    while p < plen && i < slen {
        match pattern[p] {
            b'*' => {
                while p + 1 < plen && pattern[p + 1] == b'*' {
                    p += 1;
                }
                if p + 1 == plen {
                    return true;
                }
                return (i..slen).any(|at| glob_match(&pattern[p + 1..], &s[at..]));
            }
            b'?' => i += 1,
            b'[' => {
                p += 1;
                let not = p < plen && pattern[p] == b'^';
                if not {
                    p += 1;
                }
                let mut matched = false;
                loop {
                    if p + 1 < plen && pattern[p] == b'\\' {
                        p += 1;
                        if pattern[p] == s[i] {
                            matched = true;
                        }
                    } else if p < plen && pattern[p] == b']' {
                        break;
                    } else if p >= plen {
                        // An unclosed class ends the pattern.
                        p -= 1;
                        break;
                    } else if p + 2 < plen && pattern[p + 1] == b'-' {
                        let (mut lo, mut hi) = (pattern[p], pattern[p + 2]);
                        if lo > hi {
                            std::mem::swap(&mut lo, &mut hi);
                        }
                        p += 2;
                        if (lo..=hi).contains(&s[i]) {
                            matched = true;
                        }
                    } else if pattern[p] == s[i] {
                        matched = true;
                    }
                    p += 1;
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                i += 1;
            }
            b'\\' if p + 1 < plen => {
                p += 1;
                if pattern[p] != s[i] {
                    return false;
                }
                i += 1;
            }
            c => {
                if c != s[i] {
                    return false;
                }
                i += 1;
            }
        }
        p += 1;
        if i == slen {
            while p < plen && pattern[p] == b'*' {
                p += 1;
            }
            break;
        }
    }
    p == plen && i == slen
}

/// `GETRANGE`'s slice of `v`, by Redis 7's rules: negative indexes count
/// from the end, both ends are clamped, and an empty or inverted range is
/// empty.
fn get_range(v: &[u8], start: i64, end: i64) -> &[u8] {
    let len = v.len() as i64;
    if start < 0 && end < 0 && start > end {
        return &[];
    }
    let mut start = if start < 0 { len + start } else { start };
    let mut end = if end < 0 { len + end } else { end };
    if start < 0 {
        start = 0;
    }
    if end < 0 {
        end = 0;
    }
    if end >= len {
        end = len - 1;
    }
    if len == 0 || start > end {
        return &[];
    }
    &v[start as usize..=end as usize]
}

/// Redis' integer rule: an optional '-', digits, no spaces or '+', no
/// leading zeros, within i64.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(bytes).ok()?;
    if s.is_empty()
        || s.starts_with('+')
        || (s.len() > 1 && s.starts_with('0'))
        || s.starts_with("-0")
    {
        return None;
    }
    s.parse().ok()
}

/// Encodes a command for the log (postcard: compact and serde-based).
pub fn encode_command(cmd: &KvCommand) -> Vec<u8> {
    // Serialising these plain enums into a Vec cannot fail.
    postcard::to_allocvec(cmd).unwrap_or_default()
}

pub fn encode_query(q: &KvQuery) -> Vec<u8> {
    postcard::to_allocvec(q).unwrap_or_default()
}

impl StateMachine for KvStore {
    type Output = KvOutput;

    fn apply(&mut self, index: LogIndex, command: &[u8]) -> KvOutput {
        match postcard::from_bytes::<KvCommand>(command) {
            Ok(cmd) => self.execute(cmd),
            Err(e) => {
                // Every replica sees the same bytes and makes the same
                // decision, so refusing here keeps them identical.
                tracing::error!(index, error = %e, "undecodable command in the log");
                KvOutput::Error(format!("ERR undecodable command at index {index}"))
            }
        }
    }

    fn query(&self, query: &[u8]) -> KvOutput {
        match postcard::from_bytes::<KvQuery>(query) {
            Ok(q) => KvStore::query(self, &q),
            Err(_) => KvOutput::Error("ERR undecodable query".to_string()),
        }
    }

    fn snapshot(&self) -> Option<Box<dyn SnapshotWriter>> {
        // O(1): the clone shares the trie; later applies copy what they touch.
        Some(Box::new(KvImage(self.map.clone(), self.clock_ms)))
    }

    fn restore(&mut self, image: &mut dyn Read) -> std::io::Result<()> {
        (self.map, self.clock_ms) = read_image(image)?;
        Ok(())
    }
}

/// A point-in-time copy of the map, written as:
/// `count u64`, then per pair `key_len u32, key, value_len u32, value`
/// (little-endian). The snapshot file around it carries the checksum.
///
/// then the trailer: `IMAGE_TRAILER` (4 bytes), `clock_ms u64`. An image
/// written before the trailer existed ends after the pairs, and reads as
/// clock 0.
struct KvImage(imbl::HashMap<Bytes, Bytes>, u64);

/// Marks the trailer after the pairs ("KvT1").
const IMAGE_TRAILER: [u8; 4] = *b"KvT1";

impl SnapshotWriter for KvImage {
    fn write_to(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
        out.write_all(&(self.0.len() as u64).to_le_bytes())?;
        for (k, v) in self.0.iter() {
            out.write_all(&(k.len() as u32).to_le_bytes())?;
            out.write_all(k)?;
            out.write_all(&(v.len() as u32).to_le_bytes())?;
            out.write_all(v)?;
        }
        out.write_all(&IMAGE_TRAILER)?;
        out.write_all(&self.1.to_le_bytes())?;
        out.flush()
    }
}

/// Largest key or value a snapshot may hold (far above the server's limits;
/// anything bigger means the image is damaged).
const MAX_IMAGE_ITEM: u32 = 1 << 30;

fn read_image(image: &mut dyn Read) -> std::io::Result<(imbl::HashMap<Bytes, Bytes>, u64)> {
    let mut input = std::io::BufReader::with_capacity(1 << 16, image);
    let mut n8 = [0u8; 8];
    input.read_exact(&mut n8)?;
    let count = u64::from_le_bytes(n8);
    let mut map = imbl::HashMap::new();
    for _ in 0..count {
        let key = read_item(&mut input)?;
        let value = read_item(&mut input)?;
        map.insert(key, value);
    }
    // The trailer, or the end of an image from before it.
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut input, &mut magic)?;
    if got == 0 {
        return Ok((map, 0));
    }
    if got < magic.len() || magic != IMAGE_TRAILER {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "snapshot image: unexpected bytes after the pairs",
        ));
    }
    input.read_exact(&mut n8)?;
    Ok((map, u64::from_le_bytes(n8)))
}

/// Reads until `buf` is full or the input ends; how many bytes it got.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn read_item(input: &mut impl Read) -> std::io::Result<Bytes> {
    let mut n4 = [0u8; 4];
    input.read_exact(&mut n4)?;
    let len = u32::from_le_bytes(n4);
    if len > MAX_IMAGE_ITEM {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("snapshot item of {len} bytes is implausible"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    input.read_exact(&mut buf)?;
    Ok(buf.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    /// Log entries written before `serde_bytes` was used must still decode:
    /// postcard writes a byte string and a sequence of `u8` the same way
    /// (a varint length, then the bytes).
    #[test]
    fn byte_fields_encode_as_they_did_before_serde_bytes() {
        #[derive(Serialize)]
        enum Before {
            Set { key: Vec<u8>, value: Vec<u8> },
            _SetIfEq,
            Del { keys: Vec<Vec<u8>> },
            _IncrBy,
            MSet { pairs: Vec<(Vec<u8>, Vec<u8>)> },
        }
        #[derive(Serialize)]
        enum BeforeOutput {
            _Ok,
            _Nil,
            _Integer,
            _Value,
            Values(Vec<Option<Vec<u8>>>),
        }
        let value = vec![7u8; 300];
        let pairs = vec![(b("a"), value.clone()), (b("b"), Vec::new())];
        let keys = vec![b("a"), vec![9; 200], Vec::new()];
        let cases = [
            (
                Before::Set {
                    key: b("key:1"),
                    value: value.clone(),
                },
                KvCommand::Set {
                    key: b("key:1"),
                    value: value.clone(),
                },
            ),
            (
                Before::Del { keys: keys.clone() },
                KvCommand::Del { keys: keys.clone() },
            ),
            (
                Before::MSet {
                    pairs: pairs.clone(),
                },
                KvCommand::MSet { pairs },
            ),
        ];
        for (before, cmd) in cases {
            let old = postcard::to_allocvec(&before).expect("encodes");
            assert_eq!(encode_command(&cmd), old, "{cmd:?}");
            assert_eq!(postcard::from_bytes::<KvCommand>(&old).ok(), Some(cmd));
        }
        let values = vec![None, Some(value), Some(Vec::new())];
        let old = postcard::to_allocvec(&BeforeOutput::Values(values.clone())).expect("encodes");
        let new = KvOutput::Values(values);
        assert_eq!(postcard::to_allocvec(&new).ok(), Some(old.clone()));
        assert_eq!(postcard::from_bytes::<KvOutput>(&old).ok(), Some(new));
    }

    #[test]
    fn set_then_get_returns_the_value() {
        let mut kv = KvStore::new();
        assert_eq!(
            kv.execute(KvCommand::Set {
                key: b("k"),
                value: b("v")
            }),
            KvOutput::Ok
        );
        assert_eq!(
            kv.query(&KvQuery::Get { key: b("k") }),
            KvOutput::Value(b("v"))
        );
        assert_eq!(kv.query(&KvQuery::Get { key: b("x") }), KvOutput::Nil);
    }

    #[test]
    fn set_ifeq_sets_only_when_the_current_value_matches() {
        let mut kv = KvStore::new();
        let cas = |v: &str, e: &str| KvCommand::SetIfEq {
            key: b("k"),
            value: b(v),
            expected: b(e),
        };
        assert_eq!(kv.execute(cas("1", "0")), KvOutput::Nil, "missing key: nil");
        kv.execute(KvCommand::Set {
            key: b("k"),
            value: b("a"),
        });
        assert_eq!(kv.execute(cas("b", "x")), KvOutput::Nil);
        assert_eq!(kv.get(b"k"), Some(&b"a"[..]));
        assert_eq!(kv.execute(cas("b", "a")), KvOutput::Ok);
        assert_eq!(kv.get(b"k"), Some(&b"b"[..]));
    }

    #[test]
    fn del_and_exists_count_keys_that_existed() {
        let mut kv = KvStore::new();
        kv.execute(KvCommand::MSet {
            pairs: vec![(b("a"), b("1")), (b("b"), b("2"))],
        });
        let keys = vec![b("a"), b("b"), b("c"), b("a")];
        assert_eq!(
            kv.query(&KvQuery::Exists { keys: keys.clone() }),
            KvOutput::Integer(3)
        );
        assert_eq!(kv.execute(KvCommand::Del { keys }), KvOutput::Integer(2));
        assert_eq!(kv.query(&KvQuery::DbSize), KvOutput::Integer(0));
    }

    #[test]
    fn incr_starts_from_zero_and_refuses_non_integers_and_overflow() {
        let mut kv = KvStore::new();
        assert_eq!(
            kv.execute(KvCommand::IncrBy { key: b("n"), by: 5 }),
            KvOutput::Integer(5)
        );
        assert_eq!(
            kv.execute(KvCommand::IncrBy {
                key: b("n"),
                by: -7
            }),
            KvOutput::Integer(-2)
        );
        kv.execute(KvCommand::Set {
            key: b("s"),
            value: b("abc"),
        });
        assert_eq!(
            kv.execute(KvCommand::IncrBy { key: b("s"), by: 1 }),
            KvOutput::Error(NOT_AN_INTEGER.into())
        );
        assert_eq!(
            kv.get(b"s"),
            Some(&b"abc"[..]),
            "a failed INCR changes nothing"
        );
        kv.execute(KvCommand::Set {
            key: b("m"),
            value: i64::MAX.to_string().into_bytes(),
        });
        assert_eq!(
            kv.execute(KvCommand::IncrBy { key: b("m"), by: 1 }),
            KvOutput::Error(OVERFLOW.into())
        );
    }

    #[test]
    fn integers_follow_redis_rules() {
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b"-42"), Some(-42));
        for bad in [
            "",
            "+1",
            "01",
            " 1",
            "1 ",
            "1.0",
            "-0",
            "99999999999999999999",
        ] {
            assert_eq!(parse_i64(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_i64(b"0"), Some(0));
    }

    #[test]
    fn apply_decodes_commands_from_the_log_and_refuses_garbage_deterministically() {
        let mut kv = KvStore::new();
        let cmd = encode_command(&KvCommand::Set {
            key: b("k"),
            value: b("v"),
        });
        assert_eq!(StateMachine::apply(&mut kv, 1, &cmd), KvOutput::Ok);
        assert!(matches!(
            StateMachine::apply(&mut kv, 2, &[0xff, 0xff, 0xff]),
            KvOutput::Error(_)
        ));
        assert_eq!(kv.len(), 1);
    }

    #[test]
    fn a_snapshot_restores_the_same_map_and_later_writes_do_not_leak_into_it() {
        let mut kv = KvStore::new();
        for i in 0..1000u32 {
            kv.execute(KvCommand::Set {
                key: i.to_le_bytes().to_vec(),
                value: vec![i as u8; 10],
            });
        }
        let mut image = StateMachine::snapshot(&kv).expect("supported");
        // Writes after the snapshot was taken must not appear in it.
        kv.execute(KvCommand::Set {
            key: b("late"),
            value: b("x"),
        });
        let mut bytes = Vec::new();
        image.write_to(&mut bytes).expect("write");
        let mut restored = KvStore::new();
        StateMachine::restore(&mut restored, &mut bytes.as_slice()).expect("restore");
        assert_eq!(restored.len(), 1000);
        assert_eq!(restored.get(&7u32.to_le_bytes()), Some(&[7u8; 10][..]));
        assert_eq!(restored.get(b"late"), None);
    }

    #[test]
    fn a_truncated_or_damaged_image_is_refused() {
        let mut kv = KvStore::new();
        kv.execute(KvCommand::Set {
            key: b("k"),
            value: b("v"),
        });
        let mut bytes = Vec::new();
        StateMachine::snapshot(&kv)
            .expect("supported")
            .write_to(&mut bytes)
            .expect("write");
        let mut restored = KvStore::new();
        assert!(StateMachine::restore(&mut restored, &mut &bytes[..bytes.len() - 1]).is_err());
        let mut huge = bytes.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(StateMachine::restore(&mut restored, &mut huge.as_slice()).is_err());
    }

    #[test]
    fn mset_is_one_command_so_it_applies_atomically() {
        let mut kv = KvStore::new();
        let cmd = KvCommand::MSet {
            pairs: vec![(b("a"), b("1")), (b("b"), b("2"))],
        };
        let bytes = encode_command(&cmd);
        StateMachine::apply(&mut kv, 1, &bytes);
        assert_eq!(
            kv.query(&KvQuery::MGet {
                keys: vec![b("a"), b("b"), b("z")]
            }),
            KvOutput::Values(vec![Some(b("1")), Some(b("2")), None])
        );
    }

    fn run(kv: &mut KvStore, cmd: KvCommand) -> KvOutput {
        // Through the log's encoding, as a replica applies it.
        StateMachine::apply(kv, 1, &encode_command(&cmd))
    }

    fn get(kv: &KvStore, key: &str) -> Option<Vec<u8>> {
        kv.get(key.as_bytes()).map(<[u8]>::to_vec)
    }

    #[test]
    fn set_nx_xx_and_get_follow_redis() {
        let mut kv = KvStore::new();
        let set = |condition, get| KvCommand::SetWith {
            key: b("k"),
            value: b("v1"),
            condition,
            get,
        };
        // XX on a missing key: nothing set, nil.
        assert_eq!(
            run(&mut kv, set(Some(SetCondition::Xx), false)),
            KvOutput::Nil
        );
        assert_eq!(get(&kv, "k"), None);
        // NX on a missing key: set.
        assert_eq!(
            run(&mut kv, set(Some(SetCondition::Nx), false)),
            KvOutput::Ok
        );
        // NX again: not set; with GET, the old value either way.
        let again = KvCommand::SetWith {
            key: b("k"),
            value: b("v2"),
            condition: Some(SetCondition::Nx),
            get: true,
        };
        assert_eq!(run(&mut kv, again), KvOutput::Value(b("v1")));
        assert_eq!(get(&kv, "k"), Some(b("v1")));
        // GETSET: the old value, and set.
        let getset = KvCommand::SetWith {
            key: b("k"),
            value: b("v3"),
            condition: None,
            get: true,
        };
        assert_eq!(run(&mut kv, getset), KvOutput::Value(b("v1")));
        assert_eq!(get(&kv, "k"), Some(b("v3")));
    }

    #[test]
    fn setnx_msetnx_getdel_and_delifeq() {
        let mut kv = KvStore::new();
        let setnx = |v: &str| KvCommand::SetNx {
            key: b("lock"),
            value: b(v),
        };
        assert_eq!(run(&mut kv, setnx("t1")), KvOutput::Integer(1));
        assert_eq!(run(&mut kv, setnx("t2")), KvOutput::Integer(0));
        // DELIFEQ: only the holder of the token unlocks.
        let unlock = |v: &str| KvCommand::DelIfEq {
            key: b("lock"),
            value: b(v),
        };
        assert_eq!(run(&mut kv, unlock("t2")), KvOutput::Integer(0));
        assert_eq!(get(&kv, "lock"), Some(b("t1")));
        assert_eq!(run(&mut kv, unlock("t1")), KvOutput::Integer(1));
        assert_eq!(get(&kv, "lock"), None);
        // MSETNX is all or nothing.
        let msetnx = |pairs: &[(&str, &str)]| KvCommand::MSetNx {
            pairs: pairs.iter().map(|(k, v)| (b(k), b(v))).collect(),
        };
        assert_eq!(
            run(&mut kv, msetnx(&[("a", "1"), ("b", "2")])),
            KvOutput::Integer(1)
        );
        assert_eq!(
            run(&mut kv, msetnx(&[("c", "3"), ("a", "9")])),
            KvOutput::Integer(0)
        );
        assert_eq!(get(&kv, "c"), None);
        assert_eq!(get(&kv, "a"), Some(b("1")));
        assert_eq!(
            run(&mut kv, KvCommand::GetDel { key: b("a") }),
            KvOutput::Value(b("1"))
        );
        assert_eq!(
            run(&mut kv, KvCommand::GetDel { key: b("a") }),
            KvOutput::Nil
        );
    }

    #[test]
    fn append_setrange_getrange_and_strlen() {
        let mut kv = KvStore::new();
        let append = |v: &str, max_len| KvCommand::Append {
            key: b("s"),
            value: b(v),
            max_len,
        };
        assert_eq!(run(&mut kv, append("Hello", 100)), KvOutput::Integer(5));
        assert_eq!(run(&mut kv, append(" World", 100)), KvOutput::Integer(11));
        // Over the limit the leader put in the entry: refused, unchanged.
        assert_eq!(
            run(&mut kv, append("!", 11)),
            KvOutput::Error(STRING_TOO_LONG.to_string())
        );
        assert_eq!(get(&kv, "s"), Some(b("Hello World")));
        let range = |start, end| {
            kv.query(&KvQuery::GetRange {
                key: b("s"),
                start,
                end,
            })
        };
        // Redis' examples (GETRANGE): 0 3, -3 -1, 0 -1, 10 100; and the edges.
        assert_eq!(range(0, 3), KvOutput::Value(b("Hell")));
        assert_eq!(range(-3, -1), KvOutput::Value(b("rld")));
        assert_eq!(range(0, -1), KvOutput::Value(b("Hello World")));
        assert_eq!(range(10, 100), KvOutput::Value(b("d")));
        assert_eq!(range(5, 3), KvOutput::Value(b("")));
        assert_eq!(range(-1, -5), KvOutput::Value(b("")));
        assert_eq!(range(-100, 2), KvOutput::Value(b("Hel")));
        let setrange = |key: &str, offset, v: &str| KvCommand::SetRange {
            key: b(key),
            offset,
            value: b(v),
        };
        assert_eq!(
            run(&mut kv, setrange("s", 6, "Redis")),
            KvOutput::Integer(11)
        );
        assert_eq!(get(&kv, "s"), Some(b("Hello Redis")));
        // Padding with zero bytes; an empty value on a missing key makes none.
        assert_eq!(run(&mut kv, setrange("p", 3, "x")), KvOutput::Integer(4));
        assert_eq!(get(&kv, "p"), Some(vec![0, 0, 0, b'x']));
        assert_eq!(run(&mut kv, setrange("none", 5, "")), KvOutput::Integer(0));
        assert_eq!(get(&kv, "none"), None);
        assert_eq!(
            kv.query(&KvQuery::Strlen { key: b("s") }),
            KvOutput::Integer(11)
        );
        assert_eq!(
            kv.query(&KvQuery::Strlen { key: b("none") }),
            KvOutput::Integer(0)
        );
    }

    #[test]
    fn every_command_names_the_keys_it_may_change() {
        let cmd = KvCommand::MSetNx {
            pairs: vec![(b("a"), b("1")), (b("b"), b("2"))],
        };
        assert_eq!(cmd.keys(), vec![&b"a"[..], &b"b"[..]]);
        let cmd = KvCommand::DelIfEq {
            key: b("k"),
            value: b("v"),
        };
        assert_eq!(cmd.keys(), vec![&b"k"[..]]);
    }

    #[test]
    fn glob_patterns_match_as_redis_does() {
        let m = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes());
        assert!(m("h?llo", "hello") && m("h?llo", "hallo") && !m("h?llo", "hllo"));
        assert!(m("h*llo", "hllo") && m("h*llo", "heeeello"));
        assert!(m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && m("h[b-a]llo", "hallo"));
        assert!(m(r"\[x\]", "[x]") && m(r"a\\b", r"a\b"));
        // An unclosed class ends the pattern; `*` never matches "".
        assert!(m("h[a-", "ha") && !m("*", ""));
        assert!(m("**o", "hello") && m("*o*", "hello") && !m("nomatch*", "x"));
    }

    #[test]
    fn rename_renamenx_type_and_flush() {
        let mut kv = KvStore::new();
        run(
            &mut kv,
            KvCommand::Set {
                key: b("a"),
                value: b("1"),
            },
        );
        run(
            &mut kv,
            KvCommand::Set {
                key: b("b"),
                value: b("2"),
            },
        );
        let rename = |key: &str, new_key: &str, nx| KvCommand::Rename {
            key: b(key),
            new_key: b(new_key),
            nx,
        };
        assert_eq!(
            run(&mut kv, rename("missing", "x", false)),
            KvOutput::Error(NO_SUCH_KEY.to_string())
        );
        assert_eq!(run(&mut kv, rename("a", "a", false)), KvOutput::Ok);
        assert_eq!(run(&mut kv, rename("a", "b", true)), KvOutput::Integer(0));
        assert_eq!(run(&mut kv, rename("a", "a", true)), KvOutput::Integer(0));
        assert_eq!(run(&mut kv, rename("a", "c", true)), KvOutput::Integer(1));
        assert_eq!((get(&kv, "a"), get(&kv, "c")), (None, Some(b("1"))));
        assert_eq!(run(&mut kv, rename("c", "b", false)), KvOutput::Ok);
        assert_eq!(get(&kv, "b"), Some(b("1")));
        assert_eq!(
            kv.query(&KvQuery::Type { key: b("b") }),
            KvOutput::Status("string".into())
        );
        assert_eq!(
            kv.query(&KvQuery::Type { key: b("zz") }),
            KvOutput::Status("none".into())
        );
        assert_eq!(run(&mut kv, KvCommand::FlushAll), KvOutput::Ok);
        assert!(kv.is_empty());
        assert_eq!(kv.query(&KvQuery::RandomKey { seed: 7 }), KvOutput::Nil);
    }

    #[test]
    fn exec_applies_its_commands_in_order_in_one_entry() {
        let mut kv = KvStore::new();
        let exec = KvCommand::Exec {
            ops: vec![
                TxOp::Write(KvCommand::Set {
                    key: b("t"),
                    value: b("x"),
                }),
                TxOp::Write(KvCommand::IncrBy { key: b("t"), by: 1 }),
                TxOp::Read(KvQuery::Get { key: b("t") }),
                TxOp::Write(KvCommand::Del { keys: vec![b("u")] }),
            ],
        };
        assert_eq!(exec.keys(), vec![&b"t"[..], &b"t"[..], &b"u"[..]]);
        assert!(!exec.touches_every_key());
        // A command that fails inside answers its error; the others run
        // (Redis' EXEC semantics: no rollback).
        assert_eq!(
            run(&mut kv, exec),
            KvOutput::Multi(vec![
                KvOutput::Ok,
                KvOutput::Error(NOT_AN_INTEGER.to_string()),
                KvOutput::Value(b("x")),
                KvOutput::Integer(0),
            ])
        );
        let flush = KvCommand::Exec {
            ops: vec![TxOp::Write(KvCommand::FlushAll)],
        };
        assert!(flush.touches_every_key());
    }

    #[test]
    fn a_stamped_command_moves_the_clock_forward_never_back() {
        let mut kv = KvStore::new();
        let set = KvCommand::Set {
            key: b("k"),
            value: b("v"),
        };
        // The hand-made encoding is the derived one.
        let stamped = KvCommand::At {
            now_ms: 1_700_000_000_123,
            command: Box::new(set.clone()),
        };
        assert_eq!(
            encode_stamped(&set, 1_700_000_000_123),
            encode_command(&stamped)
        );
        assert_eq!(stamped.keys(), vec![&b"k"[..]]);
        assert_eq!(
            StateMachine::apply(&mut kv, 1, &encode_stamped(&set, 2_000)),
            KvOutput::Ok
        );
        assert_eq!((kv.clock_ms(), get(&kv, "k")), (2_000, Some(b("v"))));
        // A new leader whose clock is behind: time does not go back.
        StateMachine::apply(&mut kv, 2, &encode_stamped(&set, 1_500));
        assert_eq!(kv.clock_ms(), 2_000);
        // An unstamped command (an old entry) leaves it alone.
        StateMachine::apply(&mut kv, 3, &encode_command(&set));
        assert_eq!(kv.clock_ms(), 2_000);
    }

    #[test]
    fn the_clock_survives_a_snapshot_and_an_old_image_reads_as_clock_zero() {
        let mut kv = KvStore::new();
        let set = KvCommand::Set {
            key: b("k"),
            value: b("v"),
        };
        StateMachine::apply(&mut kv, 1, &encode_stamped(&set, 42_000));
        let mut image = Vec::new();
        StateMachine::snapshot(&kv)
            .expect("supported")
            .write_to(&mut image)
            .expect("write");
        let mut restored = KvStore::new();
        StateMachine::restore(&mut restored, &mut image.as_slice()).expect("restore");
        assert_eq!(
            (restored.clock_ms(), get(&restored, "k")),
            (42_000, Some(b("v")))
        );
        // Without the trailer: an image from before it.
        let old = &image[..image.len() - 12];
        let mut restored = KvStore::new();
        StateMachine::restore(&mut restored, &mut &old[..]).expect("restore an old image");
        assert_eq!(
            (restored.clock_ms(), get(&restored, "k")),
            (0, Some(b("v")))
        );
        // Anything else after the pairs is damage.
        let mut bad = old.to_vec();
        bad.extend_from_slice(b"junk");
        assert!(StateMachine::restore(&mut KvStore::new(), &mut bad.as_slice()).is_err());
    }
}
