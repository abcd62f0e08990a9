//! Stable storage (Figure 2: "updated on stable storage before responding to RPCs").
//!
//! `RaftCore` never touches storage: it says *what* must be durable in each
//! [`Ready`](crate::Ready), and the driver ([`RaftNode`](crate::RaftNode))
//! writes it through this trait *before* sending the messages that depend on it.

use std::path::PathBuf;

use thiserror::Error;

use crate::types::{HardState, LogEntry, LogIndex, Term};

// What `recover` returns is plain data, in `types` so that the pure core
// can take it without depending on the storage layer.
pub use crate::types::RecoveredState;

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

    /// Index of the first entry still stored: 1 until [`compact`](Self::compact)
    /// discards a prefix; `index + 1` right after [`reset`](Self::reset)`(index, _)`.
    /// Equal to `last_index() + 1` when no entry is stored.
    fn first_index(&self) -> LogIndex;

    /// Index of the last stored entry; 0 if the log was never written. After
    /// [`reset`](Self::reset)`(index, _)` and before the next append it is
    /// `index`, so that appending at `index + 1` leaves no gap. Compaction
    /// never changes it.
    fn last_index(&self) -> LogIndex;

    /// Entries with `lo <= index < hi`. A range reaching below
    /// [`first_index`](Self::first_index) (compacted away) or past
    /// [`last_index`](Self::last_index) is [`StorageError::Invalid`].
    fn entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<LogEntry>, StorageError>;

    /// Discards stored entries with index `<= index`; they are covered by a
    /// durable snapshot (§7). Implementations may keep some of them
    /// ([`FileStorage`](crate::FileStorage) drops whole segments only), but
    /// never discard an entry after `index`, and never change
    /// [`last_index`](Self::last_index). A no-op when nothing is covered.
    /// Durable when it returns.
    ///
    /// The default keeps everything, which the contract allows; it exists so
    /// that wrappers written before compaction still compile. Wrappers should
    /// forward it.
    fn compact(&mut self, index: LogIndex) -> Result<(), StorageError> {
        let _ = index;
        Ok(())
    }

    /// After installing a snapshot whose last entry is (`index`, `term`):
    /// discards the whole log, durably, keeping the hard state. The next
    /// [`persist`](Self::persist) of entries must start at `index + 1`
    /// (anything else is [`StorageError::Invalid`], like a gap), and
    /// [`recover`](Self::recover) afterwards returns no entries at or below
    /// `index`.
    ///
    /// The default refuses with [`StorageError::Invalid`]: a storage cannot
    /// pretend to have discarded its log. Wrappers should forward it.
    fn reset(&mut self, index: LogIndex, term: Term) -> Result<(), StorageError> {
        Err(StorageError::Invalid(format!(
            "this storage cannot reset its log to a snapshot at ({index}, {term})"
        )))
    }
}

/// Storage that lives in memory: fast and side-effect free, for tests.
/// "Durable" here means "survives a simulated restart" when the test keeps the
/// value (see [`MemoryStorage::clone`]).
///
/// The log holds entries `first_index()..=last_index()`; entries before them
/// were compacted or replaced by a snapshot.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    hard_state: HardState,
    /// Index of the entry before `entries[0]`: the snapshot the log follows
    /// (0 when there is none).
    offset: LogIndex,
    entries: Vec<LogEntry>,
    /// Test hook: when set, every write (`persist`, `compact`, `reset`) fails
    /// (to test fail-stop).
    fail_writes: bool,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// A storage that already holds this state, as if written by an earlier
    /// run. `entries` are consecutive; they usually start at index 1, and a
    /// log that starts later is taken to follow a snapshot.
    pub fn with_state(hard_state: HardState, entries: Vec<LogEntry>) -> Self {
        MemoryStorage {
            hard_state,
            offset: entries.first().map_or(0, |e| e.index.saturating_sub(1)),
            entries,
            fail_writes: false,
        }
    }

    /// Makes every later write (`persist`, `compact`, `reset`) fail, as a
    /// broken disk would.
    pub fn set_fail_writes(&mut self, fail: bool) {
        self.fail_writes = fail;
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The stored entries: `first_index()..=last_index()`.
    pub fn log(&self) -> &[LogEntry] {
        &self.entries
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        match self.fail_writes {
            false => Ok(()),
            true => Err(StorageError::Io {
                path: PathBuf::from("<memory>"),
                source: std::io::Error::other("injected write failure"),
            }),
        }
    }

    /// Position of entry `index` in `entries`; `index` must be stored or be
    /// `last_index() + 1`.
    fn position(&self, index: LogIndex) -> usize {
        (index - self.offset - 1) as usize
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
        self.check_writable()?;
        if let Some(first) = entries.first() {
            let last = self.last_index();
            if first.index <= self.offset || first.index > last + 1 {
                return Err(StorageError::Invalid(format!(
                    "append at index {} would leave a gap after {} (entries from {} are stored)",
                    first.index,
                    last,
                    self.first_index()
                )));
            }
            self.entries.truncate(self.position(first.index));
            self.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hard_state {
            self.hard_state = *hs;
        }
        Ok(())
    }

    fn first_index(&self) -> LogIndex {
        self.offset + 1
    }

    fn last_index(&self) -> LogIndex {
        self.offset + self.entries.len() as LogIndex
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<LogEntry>, StorageError> {
        let (first, last) = (self.first_index(), self.last_index());
        if lo < first || hi < lo || hi > last + 1 {
            return Err(StorageError::Invalid(format!(
                "entries({lo}, {hi}) out of range {first}..={last}"
            )));
        }
        Ok(self.entries[self.position(lo)..self.position(hi)].to_vec())
    }

    fn compact(&mut self, index: LogIndex) -> Result<(), StorageError> {
        self.check_writable()?;
        let covered = index.min(self.last_index());
        if covered >= self.first_index() {
            self.entries.drain(..=self.position(covered));
            self.offset = covered;
        }
        Ok(())
    }

    fn reset(&mut self, index: LogIndex, _term: Term) -> Result<(), StorageError> {
        self.check_writable()?;
        if index == LogIndex::MAX {
            return Err(StorageError::Invalid("reset to the largest index".into()));
        }
        self.entries.clear();
        self.offset = index;
        Ok(())
    }
}
