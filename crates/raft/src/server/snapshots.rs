//! The server's side of snapshots (§7): when to take one (the policy), the
//! file it goes to (written on a blocking thread while applying goes on),
//! streaming it to followers that fell behind the compacted log, and
//! receiving one in chunks. What a snapshot does to the log, the state
//! machine and waiting clients is the driver's (`crate::driver`); the bytes
//! and files are here.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::receive::Receive;
use super::RaftServer;
use crate::driver::SnapshotRefusal;
use crate::message::{InstallSnapshotArgs, InstallSnapshotReply, Message, Rpc};
use crate::node::PeerEvent;
use crate::snapshot::{SnapshotMeta, SnapshotStore};
use crate::state_machine::StateMachine;
use crate::storage::{RecoveredState, Storage, StorageError};
use crate::transport::{Transport, TransportExt};
use crate::types::{LogIndex, NodeId, Term};

pub(super) type SnapshotReply = oneshot::Sender<Result<LogIndex, String>>;

/// Counters shared with snapshot-sending tasks.
#[derive(Default)]
pub(super) struct SnapshotStats {
    /// Transfers under way.
    pub(super) sending: AtomicU64,
    pub(super) bytes_sent: AtomicU64,
}

/// What a background snapshot write reports when it ends.
pub(super) struct SnapshotDone {
    meta: SnapshotMeta,
    result: Result<(), StorageError>,
}

/// The server's snapshot state.
pub(super) struct Snapshots {
    pub(super) store: Option<Arc<SnapshotStore>>,
    after_entries: u64,
    after_bytes: u64,
    pub(super) keep: usize,
    chunk_bytes: usize,
    /// The last index of a snapshot being written in the background.
    pub(super) writing: Option<LogIndex>,
    /// Admin requests waiting for the snapshot being written.
    pub(super) waiters: Vec<SnapshotReply>,
    done_tx: mpsc::UnboundedSender<SnapshotDone>,
    pub(super) done_rx: mpsc::UnboundedReceiver<SnapshotDone>,
    /// Follower: the snapshot arriving in chunks (`super::receive`).
    pub(super) receive: Receive,
    /// Leader: followers a transfer is running to.
    pub(super) sending: HashSet<NodeId>,
    pub(super) stats: Arc<SnapshotStats>,
}

impl Snapshots {
    /// `policy`: (after entries, after bytes, snapshots to keep).
    pub(super) fn new(
        store: Option<Arc<SnapshotStore>>,
        policy: (u64, u64, usize),
        chunk_bytes: usize,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Snapshots {
            store,
            after_entries: policy.0,
            after_bytes: policy.1,
            keep: policy.2,
            chunk_bytes,
            writing: None,
            waiters: Vec::new(),
            done_tx,
            done_rx,
            receive: Receive::default(),
            sending: HashSet::new(),
            stats: Arc::new(SnapshotStats::default()),
        }
    }
}

impl Snapshots {
    /// Deletes snapshots beyond the newest `keep`, on the blocking pool:
    /// unlinks and a directory fsync are disk waits the loop must not take.
    pub(super) fn retain_in_background(&self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let keep = self.keep;
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.retain(keep) {
                tracing::warn!(error = %e, "could not delete old snapshots");
            }
        });
    }
}

/// Restores the state machine from the newest valid snapshot, if any.
pub(super) fn restore_latest<M: StateMachine>(
    store: &SnapshotStore,
    state_machine: &mut M,
) -> Result<Option<SnapshotMeta>, StorageError> {
    let Some((_, path)) = store.latest()? else {
        return Ok(None);
    };
    let (meta, mut body) = store.open_body(&path)?;
    state_machine
        .restore(&mut body)
        .map_err(|source| StorageError::Io {
            path: path.clone(),
            source,
        })?;
    tracing::info!(last_index = meta.last_index, last_term = meta.last_term, path = %path.display(), "restored state machine from snapshot");
    Ok(Some(meta))
}

/// Fits the recovered log to the snapshot: the snapshot wins over the
/// entries it covers (§7). Refuses a log that starts after the snapshot (a
/// gap no one can fill), and discards a log that the snapshot superseded.
pub(super) fn reconcile(
    snapshot: Option<SnapshotMeta>,
    recovered: RecoveredState,
    storage: &mut dyn Storage,
) -> Result<RecoveredState, StorageError> {
    let Some(meta) = snapshot else {
        return Ok(recovered);
    };
    let (s, t) = (meta.last_index, meta.last_term);
    let term_at_s = recovered
        .entries
        .iter()
        .find(|e| e.index == s)
        .map(|e| e.term);
    let after: Vec<_> = recovered
        .entries
        .into_iter()
        .filter(|e| e.index > s)
        .collect();
    if after.is_empty() && storage.last_index() > s {
        return Err(StorageError::Invalid(format!(
            "the log ends at index {} with no entries after the snapshot at {s}: entries {}..={} are missing; refusing to start",
            storage.last_index(),
            s + 1,
            storage.last_index()
        )));
    }
    if let Some(first) = after.first() {
        if first.index != s + 1 {
            return Err(StorageError::Invalid(format!(
                "the log starts at index {} but the snapshot ends at {s}: entries {}..{} are missing; refusing to start",
                first.index,
                s + 1,
                first.index - 1
            )));
        }
    }
    let superseded = matches!(term_at_s, Some(term) if term != t);
    let log_behind = storage.last_index() < s;
    if superseded || log_behind {
        // A crash between installing a snapshot and resetting the log: the
        // old log is not part of the snapshot's history. Start after it.
        tracing::warn!(
            snapshot_index = s,
            "log does not continue the snapshot; discarding it"
        );
        storage.reset(s, t)?;
        return Ok(RecoveredState {
            hard_state: recovered.hard_state,
            entries: Vec::new(),
        });
    }
    Ok(RecoveredState {
        hard_state: recovered.hard_state,
        entries: after,
    })
}

impl<T: Transport, M: StateMachine> RaftServer<T, M> {
    /// Starts a snapshot if the policy says so, or if an operator asked
    /// (`admin`). The state machine image is taken here, between two
    /// applies, and written on a blocking thread, so applying goes on.
    pub(super) fn maybe_snapshot(&mut self, admin: Option<SnapshotReply>) {
        let Some(store) = self.snap.store.clone() else {
            if let Some(reply) = admin {
                let _ = reply.send(Err("snapshots are not configured on this node".into()));
            }
            return;
        };
        // after_entries == 0 turns the automatic policy off altogether.
        let (entries_since, bytes_since) = self.node.driver().applied_since_snapshot();
        let due = self.snap.after_entries > 0
            && (entries_since >= self.snap.after_entries || bytes_since >= self.snap.after_bytes);
        if let Some(reply) = admin {
            self.snap.waiters.push(reply);
        } else if !due {
            return;
        }
        if self.snap.writing.is_some() {
            // One at a time; waiters get the one under way.
            return;
        }
        let (index, term, mut image) = match self.node.take_snapshot() {
            Ok(taken) => taken,
            Err(refusal) => {
                let answer = match refusal {
                    // Nothing new since the last snapshot: it is the answer.
                    SnapshotRefusal::NothingNew(index) => Ok(index),
                    SnapshotRefusal::Failed(why) => Err(why),
                };
                for w in self.snap.waiters.drain(..) {
                    let _ = w.send(answer.clone());
                }
                return;
            }
        };
        let core = self.node.core();
        let meta = SnapshotMeta {
            last_index: index,
            last_term: term,
            membership: core.membership_at(index).clone(),
        };
        self.snap.writing = Some(index);
        let done_tx = self.snap.done_tx.clone();
        tracing::info!(id = core.id(), last_index = index, "taking a snapshot");
        tokio::task::spawn_blocking(move || {
            let result = store
                .write(&meta, &mut |out| image.write_to(out))
                .map(|_| ());
            let _ = done_tx.send(SnapshotDone { meta, result });
        });
    }

    /// A background snapshot write ended: on success, compact the log
    /// (only now, with the snapshot durable) and drop old snapshot files.
    pub(super) fn snapshot_written(&mut self, done: SnapshotDone) {
        self.snap.writing = None;
        let index = done.meta.last_index;
        match done.result {
            Ok(()) => {
                self.node.compact_log(index);
                self.snap.retain_in_background();
                tracing::info!(
                    id = self.node.core().id(),
                    last_index = index,
                    "snapshot durable; log compacted"
                );
                for w in self.snap.waiters.drain(..) {
                    let _ = w.send(Ok(index));
                }
            }
            Err(e) => {
                // The log is intact; a later attempt may succeed.
                tracing::error!(error = %e, "writing a snapshot failed");
                for w in self.snap.waiters.drain(..) {
                    let _ = w.send(Err(format!("snapshot failed: {e}")));
                }
            }
        }
    }

    /// Leader: streams the newest snapshot to each follower that needs it,
    /// one chunk at a time (each acknowledged), on its own task, so
    /// heartbeats keep flowing meanwhile.
    pub(super) fn send_snapshots(&mut self, peers: &[NodeId]) {
        for &peer in peers {
            let events = self.node.peer_event_sender();
            let Some(store) = self.snap.store.clone() else {
                let _ = events.send(PeerEvent::SnapshotSent {
                    peer,
                    index: 0,
                    success: false,
                });
                continue;
            };
            if !self.snap.sending.insert(peer) {
                continue;
            }
            let transport = Arc::clone(self.node.transport());
            let stats = Arc::clone(&self.snap.stats);
            let (term, me) = (self.node.core().term(), self.node.core().id());
            let chunk = self.snap.chunk_bytes;
            stats.sending.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let outcome =
                    stream_snapshot(&*transport, &store, peer, term, me, chunk, &stats).await;
                stats.sending.fetch_sub(1, Ordering::Relaxed);
                let ended = |index, success| PeerEvent::SnapshotSent {
                    peer,
                    index,
                    success,
                };
                let reports = match outcome {
                    Ok(index) => vec![ended(index, true)],
                    Err(StreamEnd::HigherTerm(reply)) => vec![
                        PeerEvent::Reply(Message {
                            from: peer,
                            to: me,
                            rpc: Rpc::InstallSnapshotReply(reply),
                        }),
                        ended(0, false),
                    ],
                    Err(StreamEnd::Failed(reason)) => {
                        tracing::warn!(peer, reason = %reason, "snapshot transfer failed");
                        vec![ended(0, false)]
                    }
                };
                for event in reports {
                    // The node may have stopped; then nobody needs to know.
                    let _ = events.send(event);
                }
            });
        }
    }
}

enum StreamEnd {
    /// The follower knows a later term: the leader must step down.
    HigherTerm(InstallSnapshotReply),
    Failed(String),
}

/// Sends the newest snapshot file to `peer` in chunks; returns its last
/// index once the follower says it is installed.
async fn stream_snapshot<T: Transport>(
    transport: &T,
    store: &SnapshotStore,
    peer: NodeId,
    term: Term,
    me: NodeId,
    chunk: usize,
    stats: &SnapshotStats,
) -> Result<LogIndex, StreamEnd> {
    let failed = |e: &dyn std::fmt::Display| StreamEnd::Failed(e.to_string());
    // File IO runs on tokio's blocking pool, not on this task's thread,
    // which heartbeats and client traffic share.
    let latest = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.latest())
            .await
            .map_err(|e| failed(&e))?
    };
    let Some((meta, path)) = latest.map_err(|e| failed(&e))? else {
        return Err(StreamEnd::Failed("no snapshot on disk".into()));
    };
    tracing::info!(peer, last_index = meta.last_index, "sending snapshot");
    let mut offset = 0u64;
    let mut restarts = 0;
    loop {
        let read = {
            let (store, path) = (store.clone(), path.clone());
            tokio::task::spawn_blocking(move || store.read_chunk(&path, offset, chunk))
                .await
                .map_err(|e| failed(&e))?
        };
        let (data, total) = read.map_err(|e| failed(&e))?;
        let len = data.len() as u64;
        let done = offset + len >= total;
        let args = InstallSnapshotArgs {
            term,
            leader_id: me,
            last_included_index: meta.last_index,
            last_included_term: meta.last_term,
            offset,
            data,
            total_size: total,
            done,
        };
        let reply = transport
            .install_snapshot(peer, args)
            .await
            .map_err(|e| failed(&e))?;
        if reply.term > term {
            return Err(StreamEnd::HigherTerm(reply));
        }
        if reply.installed {
            if reply.success {
                stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
            }
            return Ok(meta.last_index);
        }
        if !reply.success {
            // Resume where the follower is, or start over; but not forever.
            restarts += 1;
            if restarts > 3 || reply.next_offset > total {
                return Err(StreamEnd::Failed(
                    "the follower kept refusing chunks".into(),
                ));
            }
            offset = reply.next_offset;
            continue;
        }
        stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
        offset = reply.next_offset.max(offset + len);
        if done {
            return Err(StreamEnd::Failed(
                "the follower took the last chunk but did not install".into(),
            ));
        }
    }
}
