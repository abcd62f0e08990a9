//! The log writer: a background thread that makes the log durable while
//! the node goes on (or, in tests, the same interface writing inline).
//!
//! `RaftNode` hands each Ready's hard state and entries to this thread and
//! keeps working: it sends the leader's AppendEntries, takes new proposals,
//! steps replies. Writes complete in order; only then does the node count
//! its own copy (thesis §10.2.1) and send the replies that depend on them
//! (Figure 2: "respond to RPCs only after updating stable storage").
//!
//! While one fsync runs, the next writes queue up, and the thread merges them
//! into one batch: the busier the node, the more entries each fsync covers
//! (group commit), with no timer and no tuning.
//!
//! ```text
//!  server task:  ready#1 ─┐   ready#2 ─┐  ready#3 ─┐
//!  writer:             [persist #1 ······][persist #2+#3 ······]
//!  server task:                     done#1 ─▶ advance, send replies #1
//! ```

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::driver::DiskOp;
use crate::storage::{Storage, StorageError};
use crate::types::{HardState, LogEntry};

/// One unit of work: a disk op of the driver, numbered; completions are
/// reported by number.
pub(crate) type Job = DiskOp;

/// Every job up to `seq` is durable (or failed with `result`).
#[derive(Debug)]
pub struct WriteDone {
    pub seq: u64,
    pub result: Result<(), StorageError>,
    pub entries: usize,
    pub elapsed: Duration,
}

/// Where the node's disk ops go: one interface, two ways to run it. The
/// node submits ops and learns of their durability from [`WriteDone`]s on
/// a channel, whichever way they run, so tests take the very path that
/// ships.
pub(crate) enum LogWriter {
    /// On a thread of its own, merging the ops that queue up during an
    /// fsync (production: `raftkv server`).
    Background { jobs: std_mpsc::Sender<Job> },
    /// At submission, on the caller's thread (tests: virtual time and a
    /// `MemoryStorage` or a spy, with every write done by the time
    /// `submit` returns). Completions still arrive on the channel.
    Inline {
        storage: Box<dyn Storage>,
        done: mpsc::UnboundedSender<WriteDone>,
        failed: Option<String>,
    },
}

impl LogWriter {
    /// Moves `storage` onto a new thread. Completions arrive on `done`.
    pub(crate) fn start(
        mut storage: Box<dyn Storage>,
        done: mpsc::UnboundedSender<WriteDone>,
    ) -> std::io::Result<LogWriter> {
        let (tx, rx) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || run(storage.as_mut(), rx, done))?;
        Ok(LogWriter::Background { jobs: tx })
    }

    /// Writes on the caller's thread. Completions arrive on `done`.
    pub(crate) fn inline(
        storage: Box<dyn Storage>,
        done: mpsc::UnboundedSender<WriteDone>,
    ) -> LogWriter {
        LogWriter::Inline {
            storage,
            done,
            failed: None,
        }
    }

    /// Queues a job; false if the writer is gone (it stopped after a
    /// storage failure, which was reported, or nobody listens any more).
    pub(crate) fn submit(&mut self, job: Job) -> bool {
        match self {
            LogWriter::Background { jobs } => jobs.send(job).is_ok(),
            LogWriter::Inline {
                storage,
                done,
                failed,
            } => {
                let report = write(storage.as_mut(), failed, job, None);
                done.send(report).is_ok()
            }
        }
    }
}

fn run(
    storage: &mut dyn Storage,
    jobs: std_mpsc::Receiver<Job>,
    done: mpsc::UnboundedSender<WriteDone>,
) {
    let mut failed: Option<String> = None;
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(j) => j,
            None => match jobs.recv() {
                Ok(j) => j,
                // The node dropped its end: nothing more to write.
                Err(_) => return,
            },
        };
        let report = write(storage, &mut failed, job, Some((&jobs, &mut next)));
        if done.send(report).is_err() {
            return;
        }
    }
}

/// Carries out one job (with `queued`, merged with the persists waiting
/// behind it: group commit) and reports it.
fn write(
    storage: &mut dyn Storage,
    failed: &mut Option<String>,
    job: Job,
    queued: Option<(&std_mpsc::Receiver<Job>, &mut Option<Job>)>,
) -> WriteDone {
    let started = Instant::now();
    let (seq, entries, result) = match job {
        Job::Persist {
            seq,
            hard_state,
            entries,
        } => {
            // Group commit: fold in every persist already waiting.
            let (seq, hard_state, entries) = match queued {
                Some((jobs, next)) => merge(seq, hard_state, entries, jobs, next),
                None => (seq, hard_state, entries),
            };
            let n = entries.len();
            let r = guard(failed, || storage.persist(hard_state.as_ref(), &entries));
            (seq, n, r)
        }
        Job::Compact { seq, index } => (seq, 0, guard(failed, || storage.compact(index))),
        Job::Reset { seq, index, term } => (seq, 0, guard(failed, || storage.reset(index, term))),
    };
    if let Err(e) = &result {
        failed.get_or_insert_with(|| e.to_string());
    }
    WriteDone {
        seq,
        result,
        entries,
        elapsed: started.elapsed(),
    }
}

/// After a failure, every later write fails too (fail-stop: nothing may be
/// acknowledged on top of a write that did not happen).
fn guard(
    failed: &Option<String>,
    write: impl FnOnce() -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    match failed {
        Some(e) => Err(StorageError::Invalid(format!(
            "storage failed earlier: {e}"
        ))),
        None => write(),
    }
}

/// Merges queued persist jobs into one: the newest hard state, and the
/// entries as the log would look after applying each job in order (a later
/// job that starts at or before an earlier one's entries replaces them from
/// there, exactly as `Storage::persist` would). Stops at the first job that
/// is not a persist, keeping it for later.
fn merge(
    mut seq: u64,
    mut hard_state: Option<HardState>,
    mut entries: Vec<LogEntry>,
    jobs: &std_mpsc::Receiver<Job>,
    next: &mut Option<Job>,
) -> (u64, Option<HardState>, Vec<LogEntry>) {
    while let Ok(job) = jobs.try_recv() {
        match job {
            Job::Persist {
                seq: s,
                hard_state: hs,
                entries: more,
            } => {
                seq = s;
                if hs.is_some() {
                    hard_state = hs;
                }
                if let Some(first) = more.first() {
                    let keep = entries.partition_point(|e| e.index < first.index);
                    entries.truncate(keep);
                    entries.extend(more);
                }
            }
            other => {
                *next = Some(other);
                break;
            }
        }
    }
    (seq, hard_state, entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LogIndex, Term};

    fn e(index: LogIndex, term: Term) -> LogEntry {
        LogEntry::new(term, index, vec![])
    }

    #[test]
    fn merging_keeps_the_log_a_sequence_of_persists_would_leave() {
        let (tx, rx) = std_mpsc::channel();
        tx.send(Job::Persist {
            seq: 2,
            hard_state: Some(HardState {
                term: 3,
                voted_for: None,
            }),
            entries: vec![e(3, 3), e(4, 3)],
        })
        .expect("send");
        // A conflict rewrites from index 4.
        tx.send(Job::Persist {
            seq: 3,
            hard_state: None,
            entries: vec![e(4, 4), e(5, 4)],
        })
        .expect("send");
        tx.send(Job::Compact { seq: 4, index: 1 }).expect("send");
        let mut next = None;
        let (seq, hs, entries) = merge(1, None, vec![e(1, 1), e(2, 1)], &rx, &mut next);
        assert_eq!(seq, 3);
        assert_eq!(
            hs,
            Some(HardState {
                term: 3,
                voted_for: None
            })
        );
        let got: Vec<(u64, u64)> = entries.iter().map(|x| (x.index, x.term)).collect();
        assert_eq!(got, vec![(1, 1), (2, 1), (3, 3), (4, 4), (5, 4)]);
        assert!(
            matches!(next, Some(Job::Compact { seq: 4, .. })),
            "the compact waits its turn"
        );
    }
}
