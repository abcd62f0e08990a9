//! The in-memory view of the replicated log that `RaftCore` reasons about.
//!
//! The core keeps the entries it knows in memory and remembers which suffix
//! is *unstable*: appended here but not yet handed to the driver to make
//! durable. (etcd splits the same idea into `log.go` and `log_unstable.go`.)
//!
//! After log compaction (§7) the log starts after a snapshot: the entries up
//! to `snapshot_index` are gone, summarised by the snapshot, and only the last
//! one's term (`snapshot_term`) is remembered, for the consistency check.
//!
//! ```text
//!   snapshot ──┐
//!   [1 .. 100] │ 101 102 103 104 105
//!              │  └── entries ────┘
//!              │              └ unstable_from = 104: 104, 105 not yet durable
//! ```

use crate::types::{LogEntry, LogIndex, Term};

#[derive(Debug, Clone)]
pub struct RaftLog {
    /// Last index and term covered by the snapshot; (0, 0) when none.
    snapshot_index: LogIndex,
    snapshot_term: Term,
    /// `entries[i]` has index `snapshot_index + 1 + i`.
    entries: Vec<LogEntry>,
    /// The first index not yet handed out for persistence.
    unstable_from: LogIndex,
}

impl RaftLog {
    /// A log recovered from storage: everything in it is already durable.
    pub fn new(entries: Vec<LogEntry>) -> Self {
        Self::with_snapshot(0, 0, entries)
    }

    /// A log that starts after a snapshot ending at (`index`, `term`);
    /// `entries` must start at `index + 1`.
    pub fn with_snapshot(index: LogIndex, term: Term, entries: Vec<LogEntry>) -> Self {
        let unstable_from = index + entries.len() as LogIndex + 1;
        RaftLog {
            snapshot_index: index,
            snapshot_term: term,
            entries,
            unstable_from,
        }
    }

    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    pub fn snapshot_term(&self) -> Term {
        self.snapshot_term
    }

    /// The first index whose entry is still held (may be past the last).
    pub fn first_index(&self) -> LogIndex {
        self.snapshot_index + 1
    }

    pub fn last_index(&self) -> LogIndex {
        self.snapshot_index + self.entries.len() as LogIndex
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term of the entry at `index`; index 0 has term 0 (the empty prefix
    /// every log shares) and the snapshot's last index has the snapshot's
    /// term; `None` when the log does not reach `index` or it was compacted.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: LogIndex) -> Option<&LogEntry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// §5.4.1: "Raft determines which of two logs is more up-to-date by comparing
    /// the index and term of the last entries in the logs. If the logs have last
    /// entries with different terms, then the log with the later term is more
    /// up-to-date. If the logs end with the same term, then whichever log is
    /// longer is more up-to-date."
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Leader-side append of a new entry (its index must be `last_index + 1`).
    pub fn append(&mut self, entry: LogEntry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        self.entries.push(entry);
    }

    /// Follower-side AppendEntries (Figure 2, receiver steps 3 and 4), given
    /// that the consistency check at the entry before `entries` passed and
    /// that every entry lies after the snapshot.
    ///
    /// Entries that are already present with the same term are skipped: a
    /// duplicated, stale or reordered AppendEntries must never truncate
    /// entries that match ("If an existing entry conflicts with a new one
    /// (same index but different terms), delete the existing entry and all
    /// that follow it"). Returns the index of the first entry written (the
    /// log changed from there on), or `None` if every entry was already
    /// there. (It takes the entries by value: they move from the message
    /// into the log without a copy.)
    pub fn append_from_leader(&mut self, mut entries: Vec<LogEntry>) -> Option<LogIndex> {
        for pos in 0..entries.len() {
            let entry = &entries[pos];
            let index = entry.index;
            match self.term(index) {
                Some(t) if t == entry.term => continue,
                Some(_) => {
                    // The first conflict: cut here and take the rest.
                    self.truncate_from(index);
                    self.entries.extend(entries.drain(pos..));
                    return Some(index);
                }
                None => {
                    self.entries.extend(entries.drain(pos..));
                    return Some(index);
                }
            }
        }
        None
    }

    /// The first index not yet handed out for persistence.
    pub fn unstable_from(&self) -> LogIndex {
        self.unstable_from
    }

    /// For [`BugSwitches::truncate_on_stale_append`](crate::BugSwitches) only:
    /// drops everything after `index` whether or not it conflicts.
    pub fn truncate_after_for_bug(&mut self, index: LogIndex) {
        if index >= self.snapshot_index && index < self.last_index() {
            self.truncate_from(index + 1);
        }
    }

    /// Removes every entry at or after `index` (never snapshot-covered ones:
    /// they are committed).
    fn truncate_from(&mut self, index: LogIndex) {
        debug_assert!(index > self.snapshot_index);
        let keep = index.saturating_sub(self.snapshot_index + 1) as usize;
        self.entries.truncate(keep);
        self.unstable_from = self.unstable_from.min(index);
    }

    /// Entries from `lo` on, at most `max_count` of them and at most
    /// `max_bytes` of [`LogEntry::size`] in all, except that the first entry
    /// is always included, however large: the sum is at most
    /// `max(max_bytes, first.size())`. So an entry larger than `max_bytes`
    /// travels alone and never blocks the log behind it, and no batch grows
    /// past what its largest entry needs (see `RaftConfig::max_append_bytes`).
    /// Empty when `lo` is compacted or past the end.
    pub fn slice(&self, lo: LogIndex, max_count: usize, max_bytes: usize) -> Vec<LogEntry> {
        if lo <= self.snapshot_index || lo > self.last_index() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in &self.entries[(lo - self.snapshot_index - 1) as usize..] {
            if !out.is_empty() && (out.len() >= max_count || bytes + e.size() > max_bytes) {
                break;
            }
            bytes += e.size();
            out.push(e.clone());
        }
        out
    }

    /// Entries in `(after, upto]`, clamped to what the log holds.
    pub fn range(&self, after: LogIndex, upto: LogIndex) -> &[LogEntry] {
        let after = after.max(self.snapshot_index);
        let upto = upto.min(self.last_index());
        if after >= upto {
            return &[];
        }
        let base = self.snapshot_index;
        &self.entries[(after - base) as usize..(upto - base) as usize]
    }

    /// Thesis §5.3 (fast backup), follower side: the first index of the term
    /// that holds `index`, so the leader can skip that whole term at once.
    pub fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term(index) else {
            return self.last_index() + 1;
        };
        let mut i = index;
        while i > self.first_index() && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// Fast backup, leader side: the last index whose entry has `term`, if the
    /// leader has any entry of that term (the snapshot's last entry counts).
    pub fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let in_entries = self
            .entries
            .iter()
            .rev()
            .find(|e| e.term <= term)
            .filter(|e| e.term == term)
            .map(|e| e.index);
        in_entries.or_else(|| {
            (self.snapshot_index > 0 && self.snapshot_term == term).then_some(self.snapshot_index)
        })
    }

    /// The entries not yet handed out for persistence; marks them handed out.
    pub fn take_unstable(&mut self) -> Vec<LogEntry> {
        let from = self.unstable_from.max(self.first_index());
        self.unstable_from = self.last_index() + 1;
        self.range(from - 1, self.last_index()).to_vec()
    }

    pub fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    /// §7: forgets the entries up to `index`, now covered by a durable
    /// snapshot. `index` must be held (not already compacted, not past the
    /// end); returns false and changes nothing otherwise.
    pub fn compact(&mut self, index: LogIndex) -> bool {
        if index <= self.snapshot_index || index > self.last_index() {
            return false;
        }
        let Some(term) = self.term(index) else {
            return false;
        };
        let drop = (index - self.snapshot_index) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.unstable_from = self.unstable_from.max(index + 1);
        true
    }

    /// §7, follower receiving InstallSnapshot: "If existing log entry has
    /// same index and term as snapshot's last included entry, retain log
    /// entries following it"; otherwise "discard the entire log". Returns
    /// whether a suffix was kept.
    pub fn restore(&mut self, index: LogIndex, term: Term) -> bool {
        let keep_suffix = index > self.snapshot_index && self.term(index) == Some(term);
        if keep_suffix {
            self.compact(index);
        } else {
            self.entries.clear();
            self.snapshot_index = index;
            self.snapshot_term = term;
            self.unstable_from = index + 1;
        }
        keep_suffix
    }
}
