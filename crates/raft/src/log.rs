//! The in-memory view of the replicated log that `RaftCore` reasons about.
//!
//! The core keeps every entry it knows in memory and remembers which suffix is
//! *unstable*: appended here but not yet handed to the driver to make durable.
//! (etcd splits the same idea into `log.go` and `log_unstable.go`.)

use crate::types::{LogEntry, LogIndex, Term};

#[derive(Debug, Clone)]
pub struct RaftLog {
    /// `entries[i]` has index `i + 1`.
    entries: Vec<LogEntry>,
    /// The first index not yet handed out for persistence.
    unstable_from: LogIndex,
}

impl RaftLog {
    /// A log recovered from storage: everything in it is already durable.
    pub fn new(entries: Vec<LogEntry>) -> Self {
        let unstable_from = entries.len() as LogIndex + 1;
        RaftLog {
            entries,
            unstable_from,
        }
    }

    pub fn last_index(&self) -> LogIndex {
        self.entries.len() as LogIndex
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(0, |e| e.term)
    }

    /// The term of the entry at `index`; index 0 has term 0 (the empty prefix
    /// every log shares); `None` when the log does not reach `index`.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: LogIndex) -> Option<&LogEntry> {
        if index == 0 {
            return None;
        }
        self.entries.get((index - 1) as usize)
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
    /// that the consistency check at `prev_log_index` already passed.
    ///
    /// Entries that are already present with the same term are skipped: a
    /// duplicated, stale or reordered AppendEntries must never truncate
    /// entries that match ("If an existing entry conflicts with a new one
    /// (same index but different terms), delete the existing entry and all
    /// that follow it"). Returns the index of the last entry in `entries`.
    pub fn append_from_leader(&mut self, entries: &[LogEntry]) -> LogIndex {
        for (pos, entry) in entries.iter().enumerate() {
            match self.term(entry.index) {
                Some(t) if t == entry.term => continue,
                Some(_) => {
                    // The first conflict: cut here and take the rest.
                    self.truncate_from(entry.index);
                    self.entries.extend_from_slice(&entries[pos..]);
                    break;
                }
                None => {
                    self.entries.extend_from_slice(&entries[pos..]);
                    break;
                }
            }
        }
        entries.last().map_or(0, |e| e.index)
    }

    /// The first index not yet handed out for persistence.
    pub fn unstable_from(&self) -> LogIndex {
        self.unstable_from
    }

    /// For [`BugSwitches::truncate_on_stale_append`](crate::BugSwitches) only:
    /// drops everything after `index` whether or not it conflicts.
    pub fn truncate_after_for_bug(&mut self, index: LogIndex) {
        if index < self.last_index() {
            self.truncate_from(index + 1);
        }
    }

    /// Removes every entry at or after `index`.
    fn truncate_from(&mut self, index: LogIndex) {
        debug_assert!(index >= 1);
        self.entries.truncate((index - 1) as usize);
        self.unstable_from = self.unstable_from.min(index);
    }

    /// Entries in `[lo, last]`, at most `max_count` of them and about
    /// `max_bytes` (always at least one if any exist).
    pub fn slice(&self, lo: LogIndex, max_count: usize, max_bytes: usize) -> Vec<LogEntry> {
        if lo == 0 || lo > self.last_index() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in &self.entries[(lo - 1) as usize..] {
            if !out.is_empty() && (out.len() >= max_count || bytes + e.size() > max_bytes) {
                break;
            }
            bytes += e.size();
            out.push(e.clone());
        }
        out
    }

    /// Entries in `(after, upto]`.
    pub fn range(&self, after: LogIndex, upto: LogIndex) -> &[LogEntry] {
        let upto = upto.min(self.last_index());
        if after >= upto {
            return &[];
        }
        &self.entries[after as usize..upto as usize]
    }

    /// Thesis §5.3 (fast backup), follower side: the first index of the term
    /// that holds `index`, so the leader can skip that whole term at once.
    pub fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term(index) else {
            return self.last_index() + 1;
        };
        let mut i = index;
        while i > 1 && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// Fast backup, leader side: the last index whose entry has `term`, if the
    /// leader has any entry of that term.
    pub fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.term <= term)
            .filter(|e| e.term == term)
            .map(|e| e.index)
    }

    /// The entries not yet handed out for persistence; marks them handed out.
    pub fn take_unstable(&mut self) -> Vec<LogEntry> {
        let from = self.unstable_from;
        self.unstable_from = self.last_index() + 1;
        self.range(from.saturating_sub(1), self.last_index())
            .to_vec()
    }

    pub fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }
}
