//! A simulated disk that knows the difference between *written* and *fsynced*.
//!
//! `write` queues a batch (a Ready's hard state and entries) as unsynced
//! operations; `sync` makes every queued operation durable, as `fdatasync`
//! does. A crash decides what survives:
//!
//! * a **process crash** keeps everything written (the OS page cache
//!   survives the process);
//! * a **power loss** keeps what was synced plus a random *prefix* of the
//!   unsynced operations, as a real disk that writes in order may have got
//!   some of them down before the lights went out.
//!
//! Within one batch the hard state is written before the entries (the order
//! of a write-ahead log record), and entries one by one, so a torn batch keeps
//! the new term and vote and some of the entries.
//!
//! **Log compaction (§7).** The durable log may start after a prefix that a
//! snapshot covers: `compact(i)` drops the durable entries up to `i` and
//! `reset(i, t)` drops them all (the log then ends at `i`), as
//! `Storage::compact` and `Storage::reset` do; both are durable when they
//! return. Beside the log lives a **snapshot directory**: snapshot files that
//! were renamed into place, and whether the directory was fsynced since. A
//! process crash keeps every rename; a power loss keeps a rename whose
//! directory fsync had not happened only if the RNG says so. (Temp files are
//! the driver's: a crash always loses them.) At most [`SNAPSHOTS_KEPT`]
//! snapshots are kept.

use raft::{EntryKind, HardState, LogEntry, LogIndex, Membership, RecoveredState, Term};

use crate::snapshot::SimSnapshot;

/// Snapshots kept after each new one (`RaftConfig::snapshots_to_keep`'s
/// default): the newest and the one before.
pub const SNAPSHOTS_KEPT: usize = 2;

/// One write that is not yet durable.
#[derive(Debug, Clone)]
enum WriteOp {
    HardState(HardState),
    /// Replaces everything at and after `entry.index` (§5.3 truncation).
    Entry(LogEntry),
}

/// What a crash kept of the unsynced writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashLoss {
    pub kept: usize,
    pub unsynced: usize,
    /// Snapshot renames whose directory fsync had not happened: kept, lost.
    pub renames_kept: usize,
    pub renames_lost: usize,
}

/// The configurations a restarted node starts with (see
/// [`SimDisk::restart_membership`]); `None` is the bootstrap list.
#[derive(Debug, Clone, Default)]
pub struct RestartConfig {
    pub latest: Option<Membership>,
    pub before: Option<Membership>,
    /// `latest` is a log entry, not known committed after the restart.
    pub from_log: bool,
}

#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    hard_state: HardState,
    /// The durable log holds `offset + 1 ..= offset + entries.len()`;
    /// entries up to `offset` were compacted (or reset) away.
    offset: LogIndex,
    /// The term of the entry at `offset` (0 when `offset` is 0).
    offset_term: Term,
    entries: Vec<LogEntry>,
    unsynced: Vec<WriteOp>,
    /// Snapshot files whose rename is durable, oldest first (by index, term).
    snapshots: Vec<SimSnapshot>,
    /// Renamed into place, the directory not yet fsynced.
    renamed: Vec<SimSnapshot>,
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a batch. Returns an error if the batch would leave a gap in the
    /// log, or rewrite the compacted prefix: the core asked for something no
    /// storage can do.
    pub fn write(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[LogEntry],
    ) -> Result<(), String> {
        if let Some(first) = entries.first() {
            let logical_last = self.logical_last_index();
            if first.index == 0 || first.index > logical_last + 1 {
                return Err(format!(
                    "append at index {} would leave a gap after {}",
                    first.index, logical_last
                ));
            }
            if first.index <= self.offset {
                return Err(format!(
                    "append at index {} rewrites the compacted prefix (the log starts after {})",
                    first.index, self.offset
                ));
            }
        }
        if let Some(hs) = hard_state {
            self.unsynced.push(WriteOp::HardState(*hs));
        }
        self.unsynced
            .extend(entries.iter().cloned().map(WriteOp::Entry));
        Ok(())
    }

    /// The last index the log will have once everything written is synced.
    fn logical_last_index(&self) -> u64 {
        let mut last = self.durable_last_index();
        for op in &self.unsynced {
            if let WriteOp::Entry(e) = op {
                last = e.index;
            }
        }
        last
    }

    pub fn unsynced_ops(&self) -> usize {
        self.unsynced.len()
    }

    /// `fdatasync`: every queued write becomes durable. Returns how many.
    pub fn sync(&mut self) -> usize {
        let ops = std::mem::take(&mut self.unsynced);
        let n = ops.len();
        for op in ops {
            self.apply(op);
        }
        n
    }

    fn apply(&mut self, op: WriteOp) {
        match op {
            WriteOp::HardState(hs) => self.hard_state = hs,
            WriteOp::Entry(e) => {
                // `write` refused gaps and writes into the compacted prefix,
                // and a prefix of in-order writes never creates a gap.
                if e.index <= self.offset {
                    return;
                }
                self.entries.truncate((e.index - self.offset - 1) as usize);
                self.entries.push(e);
            }
        }
    }

    /// A process crash: the page cache survives, so does every write and
    /// every rename.
    pub fn process_crash(&mut self) -> CrashLoss {
        let n = self.sync();
        let renames = self.dir_sync();
        CrashLoss {
            kept: n,
            unsynced: n,
            renames_kept: renames,
            renames_lost: 0,
        }
    }

    /// A power loss that kept the first `keep` unsynced writes, and the
    /// snapshot renames not yet made durable for which `keep_rename` says so.
    pub fn power_loss(&mut self, keep: usize, mut keep_rename: impl FnMut() -> bool) -> CrashLoss {
        let ops = std::mem::take(&mut self.unsynced);
        let unsynced = ops.len();
        let kept = keep.min(unsynced);
        for op in ops.into_iter().take(kept) {
            self.apply(op);
        }
        let (mut renames_kept, mut renames_lost) = (0, 0);
        for snap in std::mem::take(&mut self.renamed) {
            if keep_rename() {
                renames_kept += 1;
                self.add_snapshot(snap);
            } else {
                renames_lost += 1;
            }
        }
        CrashLoss {
            kept,
            unsynced,
            renames_kept,
            renames_lost,
        }
    }

    /// What a restarting node reads back: the durable state only, the log
    /// after its compacted prefix (see [`SimDisk::log_start`]).
    pub fn recover(&self) -> RecoveredState {
        debug_assert!(self.unsynced.is_empty(), "recover after a crash");
        RecoveredState {
            hard_state: self.hard_state,
            entries: self.entries.clone(),
        }
    }

    pub fn durable_hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Durable entries held (after the compacted prefix).
    pub fn durable_len(&self) -> usize {
        self.entries.len()
    }

    /// `(offset, term)`: the durable log holds the entries after `offset`.
    pub fn log_start(&self) -> (LogIndex, Term) {
        (self.offset, self.offset_term)
    }

    /// The index of the last durable entry (the reset point if none since).
    pub fn durable_last_index(&self) -> LogIndex {
        self.offset + self.entries.len() as LogIndex
    }

    /// The term of the durable entry at `index`, if the log holds it (the
    /// compaction point counts, with its term).
    pub fn durable_term(&self, index: u64) -> Option<u64> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        if index < self.offset {
            return None;
        }
        self.entries
            .get((index - self.offset - 1) as usize)
            .map(|e| e.term)
    }

    /// `(index, term)` of the last durable entry, `(0, 0)` if none.
    pub fn durable_last(&self) -> (u64, u64) {
        self.entries
            .last()
            .map_or((self.offset, self.offset_term), |e| (e.index, e.term))
    }

    /// `Storage::compact`: drops the durable entries up to `index` (a durable
    /// snapshot covers them). Unsynced writes stay queued. Returns how many
    /// entries went.
    pub fn compact(&mut self, index: LogIndex) -> usize {
        let covered = index.min(self.durable_last_index());
        if covered <= self.offset {
            return 0;
        }
        let n = (covered - self.offset) as usize;
        self.offset_term = self.entries[n - 1].term;
        self.entries.drain(..n);
        self.offset = covered;
        n
    }

    /// `Storage::reset`: the whole log goes (durably, with whatever was
    /// queued before it); the log now ends at `index`, of `term`.
    pub fn reset(&mut self, index: LogIndex, term: Term) {
        self.sync();
        self.entries.clear();
        self.offset = index;
        self.offset_term = term;
    }

    // ----- The snapshot directory ---------------------------------------------

    /// A snapshot file renamed into place: visible, durable only after
    /// [`SimDisk::dir_sync`].
    pub fn rename_snapshot(&mut self, snap: SimSnapshot) {
        self.renamed.push(snap);
    }

    /// fsync of the snapshot directory: renames become durable. Returns how
    /// many.
    pub fn dir_sync(&mut self) -> usize {
        let renamed = std::mem::take(&mut self.renamed);
        let n = renamed.len();
        for snap in renamed {
            self.add_snapshot(snap);
        }
        n
    }

    /// A snapshot made durable in one go (temp file, fsync, rename, fsync
    /// of the directory): what a verified received snapshot gets.
    pub fn store_snapshot(&mut self, snap: SimSnapshot) {
        self.dir_sync();
        self.add_snapshot(snap);
    }

    fn add_snapshot(&mut self, snap: SimSnapshot) {
        let key = (snap.index, snap.term);
        self.snapshots.retain(|s| (s.index, s.term) != key);
        let at = self
            .snapshots
            .iter()
            .position(|s| (s.index, s.term) > key)
            .unwrap_or(self.snapshots.len());
        self.snapshots.insert(at, snap);
    }

    /// Deletes all but the newest `keep` durable snapshots.
    pub fn retain_snapshots(&mut self, keep: usize) {
        let extra = self.snapshots.len().saturating_sub(keep.max(1));
        self.snapshots.drain(..extra);
    }

    /// The newest snapshot in the directory (renamed ones included: they
    /// are visible to the running node).
    pub fn latest_snapshot(&self) -> Option<&SimSnapshot> {
        self.snapshots
            .iter()
            .chain(self.renamed.iter())
            .max_by_key(|s| (s.index, s.term))
    }

    /// The newest durable snapshot (what a restart reads).
    pub fn latest_durable_snapshot(&self) -> Option<&SimSnapshot> {
        self.snapshots.last()
    }

    /// `(index, term)` of every durable snapshot, oldest first.
    pub fn snapshot_list(&self) -> Vec<(LogIndex, Term)> {
        self.snapshots.iter().map(|s| (s.index, s.term)).collect()
    }

    /// The configurations a restart would start with (thesis §4.1): the
    /// latest and the one before it, each `None` for the node's bootstrap
    /// list. The latest is the last configuration entry of the durable log
    /// a restart keeps, else the newest durable snapshot's. When it is an
    /// entry, the restarted node does not know it committed (its commit
    /// index starts at the snapshot), so it may campaign as a voter of the
    /// one before (`RaftCore::may_campaign`): `RestartConfig::from_log`.
    pub fn restart_membership(&self) -> RestartConfig {
        let snap = self.latest_durable_snapshot();
        let s = snap.map_or(0, |snap| snap.index);
        let base = snap.map(|snap| snap.membership.clone());
        // As `restart_view` and `recover_node`: a log that does not continue
        // the snapshot, or ends before it, is discarded at restart.
        let log_kept = snap.is_none_or(|snap| {
            self.durable_last_index() >= snap.index
                && self.durable_term(snap.index).is_none_or(|t| t == snap.term)
        });
        let mut found = Vec::new();
        if log_kept {
            found = self
                .entries
                .iter()
                .rev()
                .take_while(|e| e.index > s)
                .filter(|e| e.kind == EntryKind::ConfChange)
                .filter_map(|e| Membership::decode(&e.data).ok())
                .take(2)
                .collect();
        }
        let mut found = found.into_iter();
        match found.next() {
            Some(latest) => RestartConfig {
                latest: Some(latest),
                before: found.next().or(base),
                from_log: true,
            },
            None => RestartConfig {
                latest: base,
                before: None,
                from_log: false,
            },
        }
    }

    /// What a restart would present as its log: `(last index, last term)`
    /// after reconciling the newest durable snapshot with the durable log
    /// (see `World::reconcile`), and the index up to which the snapshot
    /// covers it.
    pub fn restart_view(&self) -> (LogIndex, Term, LogIndex) {
        let (s, t) = self
            .latest_durable_snapshot()
            .map_or((0, 0), |snap| (snap.index, snap.term));
        let last = self.durable_last();
        if s == 0 {
            return (last.0, last.1, 0);
        }
        let superseded = self.durable_term(s).is_some_and(|term| term != t);
        if superseded || last.0 < s {
            (s, t, s)
        } else {
            (last.0, last.1, s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(term: u64, index: u64) -> LogEntry {
        LogEntry::new(term, index, vec![])
    }

    fn hs(term: u64, voted_for: Option<u64>) -> HardState {
        HardState { term, voted_for }
    }

    #[test]
    fn a_power_loss_keeps_the_synced_state_and_a_prefix_of_the_rest() {
        let mut d = SimDisk::new();
        d.write(Some(&hs(1, Some(1))), &[e(1, 1), e(1, 2)]).unwrap();
        d.sync();
        d.write(Some(&hs(2, Some(2))), &[e(2, 2), e(2, 3)]).unwrap();
        let loss = d.power_loss(2, || true);
        assert_eq!(
            loss,
            CrashLoss {
                kept: 2,
                unsynced: 3,
                renames_kept: 0,
                renames_lost: 0,
            }
        );
        let r = d.recover();
        assert_eq!(r.hard_state, hs(2, Some(2)));
        let terms: Vec<u64> = r.entries.iter().map(|e| e.term).collect();
        assert_eq!(terms, vec![1, 2], "index 2 was replaced, index 3 lost");
    }

    #[test]
    fn a_process_crash_keeps_every_write() {
        let mut d = SimDisk::new();
        d.write(Some(&hs(3, None)), &[e(3, 1)]).unwrap();
        d.process_crash();
        assert_eq!(d.recover().entries.len(), 1);
        assert_eq!(d.recover().hard_state.term, 3);
    }

    #[test]
    fn a_write_that_would_leave_a_gap_is_refused() {
        let mut d = SimDisk::new();
        assert!(d.write(None, &[e(1, 2)]).is_err());
    }

    fn snap(index: u64, term: u64) -> SimSnapshot {
        SimSnapshot::take(
            &raftkv_store::KvStore::new(),
            index,
            term,
            &raft::Membership::new(&[1, 2, 3], &[]),
        )
    }

    #[test]
    fn compaction_keeps_the_log_after_the_snapshot_and_later_writes_follow_it() {
        let mut d = SimDisk::new();
        d.write(None, &[e(1, 1), e(1, 2), e(2, 3), e(2, 4)])
            .unwrap();
        d.sync();
        assert_eq!(d.compact(3), 3);
        assert_eq!(d.log_start(), (3, 2));
        assert_eq!(d.durable_last(), (4, 2));
        assert_eq!(d.durable_term(3), Some(2));
        assert_eq!(d.durable_term(2), None);
        assert!(
            d.write(None, &[e(3, 3)]).is_err(),
            "into the compacted prefix"
        );
        d.write(None, &[e(3, 4), e(3, 5)]).unwrap();
        d.sync();
        let r = d.recover();
        let ids: Vec<(u64, u64)> = r.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(ids, vec![(4, 3), (5, 3)]);
    }

    #[test]
    fn a_reset_empties_the_log_which_then_ends_at_the_snapshot() {
        let mut d = SimDisk::new();
        d.write(None, &[e(1, 1), e(1, 2)]).unwrap();
        d.reset(10, 4);
        assert_eq!(d.durable_last(), (10, 4));
        assert!(d.write(None, &[e(4, 12)]).is_err(), "a gap after 10");
        d.write(None, &[e(4, 11)]).unwrap();
        d.sync();
        assert_eq!(d.durable_last(), (11, 4));
    }

    #[test]
    fn a_rename_survives_a_process_crash_but_a_power_loss_only_if_the_directory_was_synced() {
        let mut d = SimDisk::new();
        d.rename_snapshot(snap(5, 1));
        d.process_crash();
        assert_eq!(d.snapshot_list(), vec![(5, 1)]);
        d.rename_snapshot(snap(9, 2));
        assert_eq!(d.latest_snapshot().map(|s| s.index), Some(9));
        let loss = d.power_loss(0, || false);
        assert_eq!(loss.renames_lost, 1);
        assert_eq!(d.snapshot_list(), vec![(5, 1)]);
        d.rename_snapshot(snap(9, 2));
        d.dir_sync();
        d.power_loss(0, || false);
        assert_eq!(d.snapshot_list(), vec![(5, 1), (9, 2)]);
        d.store_snapshot(snap(12, 2));
        d.retain_snapshots(SNAPSHOTS_KEPT);
        assert_eq!(d.snapshot_list(), vec![(9, 2), (12, 2)]);
    }

    #[test]
    fn the_restart_view_lets_the_snapshot_win_over_a_short_or_superseded_log() {
        let mut d = SimDisk::new();
        d.write(None, &[e(1, 1), e(1, 2), e(1, 3)]).unwrap();
        d.sync();
        assert_eq!(d.restart_view(), (3, 1, 0));
        d.store_snapshot(snap(2, 1));
        assert_eq!(
            d.restart_view(),
            (3, 1, 2),
            "the log continues the snapshot"
        );
        d.store_snapshot(snap(5, 2));
        assert_eq!(
            d.restart_view(),
            (5, 2, 5),
            "the log is behind the snapshot"
        );
        d.store_snapshot(snap(3, 2));
        d.retain_snapshots(1);
        assert_eq!(d.snapshot_list(), vec![(5, 2)]);
    }
}
