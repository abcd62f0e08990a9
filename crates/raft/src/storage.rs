//! Stable storage (Figure 2: "updated on stable storage before responding to RPCs").
//!
//! `RaftCore` never touches storage: it says *what* must be durable in each
//! [`Ready`](crate::Ready), and the driver ([`RaftNode`](crate::RaftNode))
//! writes it through this trait *before* sending the messages that depend on it.

use std::path::PathBuf;

use thiserror::Error;

use crate::types::{HardState, LogEntry, LogIndex};

/// Everything a node recovers from its storage at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveredState {
    pub hard_state: HardState,
    /// The log, in index order, without gaps. Empty or starting at index 1
    /// until snapshots exist.
    pub entries: Vec<LogEntry>,
}

/// A storage failure. Raft cannot continue safely when stable storage fails:
/// a node that answers an RPC without having persisted would break the
/// protocol's promises, so the driver stops (fail-stop) on any of these.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A record failed its checksum or could not be decoded somewhere other
    /// than the very tail of the log.
    #[error("corrupt data in {path} at byte offset {offset}: {reason}")]
    Corruption {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The caller asked for something the storage cannot do (a gap in the
    /// log, an index that was never written).
    #[error("invalid storage request: {0}")]
    Invalid(String),
}

/// Durable storage of the hard state and the log.
///
/// Implementations: [`MemoryStorage`](crate::MemoryStorage) for tests and
/// [`FileStorage`](crate::FileStorage), a write-ahead log, for production.
pub trait Storage: Send + 'static {
    /// Reads back everything that was made durable.
    fn recover(&mut self) -> Result<RecoveredState, StorageError>;

    /// Durably records `hard_state` (if any) and `entries` (if any), then
    /// returns. One call is one batch: file storage issues one fdatasync.
    ///
    /// `entries` are consecutive. Any stored entry whose index is at or after
    /// `entries[0].index` is discarded first (§5.3: "if an existing entry
    /// conflicts with a new one, delete the existing entry and all that follow
    /// it"); the caller only writes from the first real conflict, so matching
    /// entries are never rewritten needlessly.
    fn persist(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[LogEntry],
    ) -> Result<(), StorageError>;

    /// Index of the first entry still stored (1 until snapshots compact the log).
    fn first_index(&self) -> LogIndex;

    /// Index of the last stored entry, 0 if the log is empty.
    fn last_index(&self) -> LogIndex;

    /// Entries with `lo <= index < hi`.
    fn entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<LogEntry>, StorageError>;
}

/// Storage that lives in memory: fast and side-effect free, for tests.
/// "Durable" here means "survives a simulated restart" when the test keeps the
/// value (see [`MemoryStorage::clone`]).
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    hard_state: HardState,
    entries: Vec<LogEntry>,
    /// Test hook: when set, every `persist` fails (to test fail-stop).
    fail_writes: bool,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// A storage that already holds this state, as if written by an earlier run.
    pub fn with_state(hard_state: HardState, entries: Vec<LogEntry>) -> Self {
        MemoryStorage {
            hard_state,
            entries,
            fail_writes: false,
        }
    }

    /// Makes every later `persist` fail, as a broken disk would.
    pub fn set_fail_writes(&mut self, fail: bool) {
        self.fail_writes = fail;
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn log(&self) -> &[LogEntry] {
        &self.entries
    }
}

impl Storage for MemoryStorage {
    fn recover(&mut self) -> Result<RecoveredState, StorageError> {
        Ok(RecoveredState {
            hard_state: self.hard_state,
            entries: self.entries.clone(),
        })
    }

    fn persist(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[LogEntry],
    ) -> Result<(), StorageError> {
        if self.fail_writes {
            return Err(StorageError::Io {
                path: PathBuf::from("<memory>"),
                source: std::io::Error::other("injected write failure"),
            });
        }
        if let Some(first) = entries.first() {
            let last = self.last_index();
            if first.index == 0 || first.index > last + 1 {
                return Err(StorageError::Invalid(format!(
                    "append at index {} would leave a gap after {}",
                    first.index, last
                )));
            }
            self.entries.truncate((first.index - 1) as usize);
            self.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hard_state {
            self.hard_state = *hs;
        }
        Ok(())
    }

    fn first_index(&self) -> LogIndex {
        1
    }

    fn last_index(&self) -> LogIndex {
        self.entries.len() as LogIndex
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<LogEntry>, StorageError> {
        if lo == 0 || hi < lo || hi > self.last_index() + 1 {
            return Err(StorageError::Invalid(format!(
                "entries({lo}, {hi}) out of range 1..={}",
                self.last_index()
            )));
        }
        Ok(self.entries[(lo - 1) as usize..(hi - 1) as usize].to_vec())
    }
}
