//! The follower's side of InstallSnapshot (§7): chunks go to a temp file,
//! the last one is verified, made durable and renamed into place, and the
//! state machine is restored from it before the reply says "installed".
//!
//! The file work (create, write, verify, fsync, rename, read back) runs on
//! tokio's blocking pool, one chunk at a time and in arrival order, so the
//! server's loop, which heartbeats, votes and clients share, never waits for
//! the disk. Only what must touch the node stays on the loop: the core's
//! verdict on a chunk when it arrives, and restoring the state machine from
//! the verified image at the end.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::RaftServer;
use crate::core::SnapshotChunkVerdict;
use crate::message::{InstallSnapshotArgs, InstallSnapshotReply, Rpc};
use crate::node::{ReplySlot, SnapshotChunk};
use crate::snapshot::{IncomingSnapshot, SnapshotMeta, SnapshotStore};
use crate::state_machine::StateMachine;
use crate::storage::StorageError;
use crate::transport::{IncomingRpc, Transport};
use crate::types::{LogIndex, Term};

/// A snapshot arriving in chunks, with the last index it stands for.
pub(super) struct Partial {
    file: IncomingSnapshot,
    last_index: LogIndex,
}

/// A chunk the core accepted, waiting for its turn on the blocking pool.
struct ChunkJob {
    reply: ReplySlot,
    term: Term,
    args: InstallSnapshotArgs,
}

/// What a chunk job reports back to the loop.
pub(super) struct ChunkWritten {
    reply: ReplySlot,
    term: Term,
    /// The partial snapshot, handed back for the next chunk (`None` once it
    /// is complete, or if the chunk could not start one).
    partial: Option<Partial>,
    outcome: Result<ChunkOutcome, StorageError>,
}

enum ChunkOutcome {
    /// The reply is ready: the chunk was taken, or refused.
    Answer(InstallSnapshotReply),
    /// The last chunk arrived and the file is durable and verified; `image`
    /// is its body, for the state machine to restore on the loop.
    Complete {
        meta: SnapshotMeta,
        image: Vec<u8>,
        next_offset: u64,
    },
}

/// The follower's receiving state.
pub(super) struct Receive {
    /// `None` while a job holds it, or when no transfer is under way.
    partial: Option<Partial>,
    /// A job is running on the blocking pool, on a snapshot of this last
    /// index.
    busy: Option<LogIndex>,
    /// Chunks that arrived while a job ran.
    queued: VecDeque<ChunkJob>,
    /// The partial snapshot was overtaken while a job held it: drop it when
    /// the job hands it back.
    discard: bool,
    done_tx: mpsc::UnboundedSender<ChunkWritten>,
    pub(super) done_rx: mpsc::UnboundedReceiver<ChunkWritten>,
}

impl Default for Receive {
    fn default() -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Receive {
            partial: None,
            busy: None,
            queued: VecDeque::new(),
            discard: false,
            done_tx,
            done_rx,
        }
    }
}

impl Receive {
    /// Whether a snapshot is being received.
    pub(super) fn in_progress(&self) -> bool {
        self.partial.is_some() || self.busy.is_some() || !self.queued.is_empty()
    }

    /// Drops a partial snapshot that no longer matters (its temp file is
    /// deleted, on the blocking pool), now or when its job hands it back.
    /// `covered`: only if it stands for no more than this index.
    pub(super) fn discard_up_to(&mut self, covered: LogIndex) {
        match &self.partial {
            Some(p) if p.last_index <= covered => {
                if let Some(partial) = self.partial.take() {
                    tokio::task::spawn_blocking(move || drop(partial));
                }
            }
            Some(_) => {}
            None if self.busy.is_some_and(|index| index <= covered) => self.discard = true,
            None => {}
        }
    }
}

impl<T: Transport, M: StateMachine> RaftServer<T, M> {
    /// Follower: one chunk of InstallSnapshot. The core rules on it here
    /// (its term, its leader); the bytes go to the blocking pool. The reply
    /// waits for the disk: the chunk may have raised our term, and an
    /// install resets or compacts the log.
    pub(super) fn receive_snapshot_chunk(&mut self, rpc: IncomingRpc) {
        let Some(SnapshotChunk {
            args,
            verdict,
            reply,
            ..
        }) = self.node.receive_snapshot_chunk(rpc)
        else {
            return;
        };
        let answer = match verdict {
            SnapshotChunkVerdict::Refuse { term } => answer(term, false, 0, false),
            SnapshotChunkVerdict::Covered { term } => {
                self.snap.receive.discard_up_to(LogIndex::MAX);
                answer(term, true, args.total_size, true)
            }
            SnapshotChunkVerdict::Accept { term } => {
                if self.snap.store.is_none() {
                    answer(term, false, 0, false)
                } else {
                    self.snap
                        .receive
                        .queued
                        .push_back(ChunkJob { reply, term, args });
                    self.start_chunk_job();
                    return;
                }
            }
        };
        self.node
            .reply_when_durable(reply, Rpc::InstallSnapshotReply(answer));
    }

    /// Hands the next queued chunk to the blocking pool, if none is running.
    fn start_chunk_job(&mut self) {
        let receive = &mut self.snap.receive;
        if receive.busy.is_some() {
            return;
        }
        let (Some(store), Some(job)) = (self.snap.store.clone(), receive.queued.pop_front()) else {
            return;
        };
        let partial = receive.partial.take();
        receive.busy = Some(match &partial {
            _ if job.args.offset == 0 => job.args.last_included_index,
            Some(p) => p.last_index,
            None => 0,
        });
        let done_tx = receive.done_tx.clone();
        tokio::task::spawn_blocking(move || {
            let written = write_chunk(&store, partial, job);
            // The server may have stopped; dropping the report deletes the
            // temp file with it.
            let _ = done_tx.send(written);
        });
    }

    /// A chunk job ended: reply, install a complete snapshot, start the next.
    /// An error is a storage failure the node must stop for.
    pub(super) fn chunk_written(&mut self, done: ChunkWritten) -> Result<(), StorageError> {
        let receive = &mut self.snap.receive;
        receive.busy = None;
        receive.partial = done.partial;
        if std::mem::take(&mut receive.discard) {
            receive.discard_up_to(LogIndex::MAX);
        }
        let answered = match done.outcome? {
            ChunkOutcome::Answer(reply) => reply,
            ChunkOutcome::Complete {
                meta,
                image,
                next_offset,
            } => {
                self.install_received(meta, &image)?;
                answer(done.term, true, next_offset, true)
            }
        };
        // §5.1: a reply carries the current term, which the wait may have
        // raised.
        let answered = InstallSnapshotReply {
            term: answered.term.max(self.node.core().term()),
            ..answered
        };
        self.node
            .reply_when_durable(done.reply, Rpc::InstallSnapshotReply(answered));
        self.start_chunk_job();
        Ok(())
    }

    /// Restores the state machine from a received snapshot and makes the
    /// log start after it. One the log has overtaken meanwhile is kept on
    /// disk but changes nothing.
    fn install_received(&mut self, meta: SnapshotMeta, image: &[u8]) -> Result<(), StorageError> {
        if meta.last_index <= self.node.core().commit_index() {
            return Ok(());
        }
        let installed = self
            .node
            .install_snapshot(
                meta.last_index,
                meta.last_term,
                // The snapshot's header holds the configuration at its
                // index (§4.1: learners and addresses included).
                meta.membership.clone(),
                &mut &image[..],
            )
            .map_err(|e| {
                StorageError::Invalid(format!(
                    "the state machine could not restore the snapshot at index {}: {e}",
                    meta.last_index
                ))
            })?;
        if installed {
            tracing::info!(
                id = self.node.core().id(),
                last_index = meta.last_index,
                "installed snapshot from the leader"
            );
        }
        self.snap.retain_in_background();
        Ok(())
    }
}

/// On the blocking pool: writes one chunk; after the last, verifies, makes
/// the file durable and reads its body back for the state machine. The body
/// is read whole: the state machine holds its state in memory anyway, and
/// this way restoring it on the loop waits for no disk.
fn write_chunk(
    store: &Arc<SnapshotStore>,
    partial: Option<Partial>,
    job: ChunkJob,
) -> ChunkWritten {
    let ChunkJob { reply, term, args } = job;
    let mut partial = partial;
    let outcome = (|| {
        if args.offset == 0 {
            // A (re)start: forget any half-received one (dropping it
            // deletes its temp file).
            drop(partial.take());
            partial = Some(Partial {
                file: store.begin_receive()?,
                last_index: args.last_included_index,
            });
        }
        let Some(p) = partial.as_mut() else {
            return Ok(ChunkOutcome::Answer(answer(term, false, 0, false)));
        };
        if let Err(e) = p.file.write_chunk(args.offset, &args.data) {
            tracing::debug!(error = %e, "snapshot chunk out of place");
            let expected = p.file.offset();
            return Ok(ChunkOutcome::Answer(answer(term, false, expected, false)));
        }
        let next_offset = p.file.offset();
        if !args.done {
            return Ok(ChunkOutcome::Answer(answer(term, true, next_offset, false)));
        }
        let Some(p) = partial.take() else {
            return Ok(ChunkOutcome::Answer(answer(term, false, 0, false)));
        };
        let (_, path) = match p.file.finish() {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(error = %e, "received snapshot failed verification; asking for it again");
                return Ok(ChunkOutcome::Answer(answer(term, false, 0, false)));
            }
        };
        let (meta, mut body) = store.open_body(&path)?;
        let mut image = Vec::new();
        std::io::Read::read_to_end(&mut body, &mut image)
            .map_err(|source| StorageError::Io { path, source })?;
        Ok(ChunkOutcome::Complete {
            meta,
            image,
            next_offset,
        })
    })();
    ChunkWritten {
        reply,
        term,
        partial,
        outcome,
    }
}

fn answer(term: Term, success: bool, next_offset: u64, installed: bool) -> InstallSnapshotReply {
    InstallSnapshotReply {
        term,
        success,
        next_offset,
        installed,
    }
}
