//! The vocabulary of Raft: node ids, terms, log indexes, roles and log entries.
//!
//! Everything here is plain data. `#[derive(Serialize, Deserialize)]` makes it
//! ready to cross a network (the transport) and `#[derive(Clone, PartialEq, Eq)]`
//! lets tests compare whole values.

use serde::{Deserialize, Serialize};

/// A server's identity in the cluster (§5.1: "each server has a unique id").
/// Always positive; `0` is never a valid id and is used on the wire for "none".
pub type NodeId = u64;

/// A term number (§5.1). Terms act as a logical clock: they only ever grow.
pub type Term = u64;

/// The position of an entry in the log, starting at 1 (§5.3). Index 0 means
/// "before the first entry" and always has term 0.
pub type LogIndex = u64;

/// The role a server plays in a term (§5.1, Figure 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RaftState {
    /// Passive: answers leaders and candidates, never sends requests of its own.
    Follower,
    /// Thesis §9.6: asks "would you vote for me?" without raising its term,
    /// so a node that was partitioned cannot disrupt a healthy cluster.
    PreCandidate,
    /// Asks for votes in a new term (§5.2).
    Candidate,
    /// Handles all client requests and replicates the log (§5.3).
    Leader,
}

impl RaftState {
    /// The lower-case name used in `INFO raft`, logs and status pages.
    pub fn as_str(self) -> &'static str {
        match self {
            RaftState::Follower => "follower",
            RaftState::PreCandidate => "pre-candidate",
            RaftState::Candidate => "candidate",
            RaftState::Leader => "leader",
        }
    }
}

impl std::fmt::Display for RaftState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a log entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// A client command, opaque to Raft and applied to the state machine.
    Normal,
    /// The empty entry a new leader appends when it takes office (§8): once it
    /// commits, every entry of earlier terms is committed too (§5.4.2), and the
    /// leader knows its commit index is current, so it may serve reads.
    Noop,
    /// A new cluster configuration (thesis §4.1): the whole
    /// [`Membership`](crate::Membership) after one change, in force as soon
    /// as it is appended. Never applied to the state machine.
    ConfChange,
}

impl EntryKind {
    /// The one-byte tag used by the write-ahead log.
    pub fn to_byte(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::Noop => 1,
            EntryKind::ConfChange => 2,
        }
    }

    /// Inverse of [`EntryKind::to_byte`]; `None` for a byte no version wrote.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Noop),
            2 => Some(EntryKind::ConfChange),
            _ => None,
        }
    }
}

/// One entry of the replicated log (Figure 2: "each entry contains command for
/// state machine, and term when entry was received by leader").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub term: Term,
    pub index: LogIndex,
    pub kind: EntryKind,
    /// The command bytes; empty for a no-op. (`serde_bytes`: encoded and
    /// decoded as one byte string, not byte by byte; the bytes on the wire
    /// are the same.)
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl LogEntry {
    pub fn new(term: Term, index: LogIndex, data: Vec<u8>) -> Self {
        LogEntry {
            term,
            index,
            kind: EntryKind::Normal,
            data,
        }
    }

    pub fn noop(term: Term, index: LogIndex) -> Self {
        LogEntry {
            term,
            index,
            kind: EntryKind::Noop,
            data: Vec::new(),
        }
    }

    /// What [`LogEntry::size`] adds to the command's bytes for the entry's
    /// other fields.
    pub const SIZE_OVERHEAD: usize = 24;

    /// Approximate size on the wire and on disk, used for batching limits.
    pub fn size(&self) -> usize {
        self.data.len() + Self::SIZE_OVERHEAD
    }
}

/// The state every server must write to stable storage before answering an
/// RPC (Figure 2, "Persistent state on all servers"). The log is persisted
/// separately, entry by entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this server has seen.
    pub term: Term,
    /// The candidate that received this server's vote in `term`, if any.
    pub voted_for: Option<NodeId>,
}

/// Everything a node recovers from its storage at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveredState {
    pub hard_state: HardState,
    /// The log, in index order, without gaps. Once the log has been compacted
    /// ([`Storage::compact`](crate::Storage::compact)) or reset to a snapshot ([`Storage::reset`](crate::Storage::reset)) it may
    /// start after index 1: the entries before it are covered by a snapshot,
    /// which the caller recovers from its snapshot store. Empty when nothing is
    /// stored after the snapshot (or when nothing was ever stored).
    pub entries: Vec<LogEntry>,
}
