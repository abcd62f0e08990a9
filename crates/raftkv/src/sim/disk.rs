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

use raft::{HardState, LogEntry, RecoveredState};

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
}

#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    hard_state: HardState,
    entries: Vec<LogEntry>,
    unsynced: Vec<WriteOp>,
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a batch. Returns an error if the batch would leave a gap in the
    /// log: the core asked for something no storage can do.
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
        let mut last = self.entries.len() as u64;
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
                // `write` refused gaps, and a prefix of in-order writes
                // never creates one.
                self.entries.truncate((e.index - 1) as usize);
                self.entries.push(e);
            }
        }
    }

    /// A process crash: the page cache survives, so does every write.
    pub fn process_crash(&mut self) -> CrashLoss {
        let n = self.sync();
        CrashLoss {
            kept: n,
            unsynced: n,
        }
    }

    /// A power loss that kept the first `keep` unsynced writes.
    pub fn power_loss(&mut self, keep: usize) -> CrashLoss {
        let ops = std::mem::take(&mut self.unsynced);
        let unsynced = ops.len();
        let kept = keep.min(unsynced);
        for op in ops.into_iter().take(kept) {
            self.apply(op);
        }
        CrashLoss { kept, unsynced }
    }

    /// What a restarting node reads back: the durable state only.
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

    pub fn durable_len(&self) -> usize {
        self.entries.len()
    }

    /// The term of the durable entry at `index`, if there is one.
    pub fn durable_term(&self, index: u64) -> Option<u64> {
        if index == 0 {
            return Some(0);
        }
        self.entries.get((index - 1) as usize).map(|e| e.term)
    }

    /// `(index, term)` of the last durable entry, `(0, 0)` if none.
    pub fn durable_last(&self) -> (u64, u64) {
        self.entries.last().map_or((0, 0), |e| (e.index, e.term))
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
        let loss = d.power_loss(2);
        assert_eq!(
            loss,
            CrashLoss {
                kept: 2,
                unsynced: 3
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
}
