//! `RaftServer` and `RaftHandle`: the client API over a [`RaftNode`].
//!
//! One tokio task owns the node and the [`StateMachine`]; clients talk to it
//! through a cloneable [`RaftHandle`]. Single ownership instead of
//! `Arc<Mutex<_>>`: the task is the only one that ever touches the core, so
//! there is nothing to lock and no lock to hold across an `.await`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::clock::TickClock;
use crate::config::RaftConfig;
use crate::core::SnapshotChunkVerdict;
use crate::core::{CoreError, Event, NotLeader, ProposeError, RaftCore};
use crate::log_writer::WriteDone;
use crate::message::{InstallSnapshotArgs, InstallSnapshotReply, Message, Rpc};
use crate::node::{Output, PeerEvent, RaftNode};
use crate::observer::Observer;
use crate::snapshot::{IncomingSnapshot, SnapshotMeta, SnapshotStore};
use crate::state_machine::StateMachine;
use crate::storage::RecoveredState;
use crate::storage::{Storage, StorageError};
use crate::transport::{IncomingRpc, Transport};
use crate::types::{EntryKind, LogIndex, NodeId, RaftState, Term};

/// Why a client request failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientError {
    /// This node does not lead. Nothing was proposed: safe to retry elsewhere.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// The entry was overwritten by a later leader: it was not applied and
    /// never will be.
    #[error("leadership lost: the entry was overwritten before it committed")]
    LeadershipLost,
    /// The command is over `RaftConfig::max_entry_bytes`: nothing was
    /// proposed, and retrying the same command cannot help.
    #[error("command of {size} bytes is over the {limit}-byte entry limit")]
    TooLarge { size: usize, limit: usize },
    /// The server stopped before the outcome was known.
    #[error("the raft server has stopped")]
    Stopped,
    /// The outcome is not known: e.g. this node installed a snapshot from a
    /// new leader that may or may not contain the command.
    #[error("the outcome is unknown")]
    Unknown,
}

impl From<NotLeader> for ClientError {
    fn from(e: NotLeader) -> Self {
        match e {
            NotLeader::NotLeader { leader_hint } => ClientError::NotLeader { leader_hint },
        }
    }
}

impl From<ProposeError> for ClientError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotLeader { leader_hint } => ClientError::NotLeader { leader_hint },
            ProposeError::TooLarge { size, limit } => ClientError::TooLarge { size, limit },
        }
    }
}

/// Why the server could not start or had to stop.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("storage failed, node stopped: {0}")]
    Storage(#[from] StorageError),
}

/// A snapshot of the node's state for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub state: RaftState,
    pub term: Term,
    pub leader_id: Option<NodeId>,
    pub commit_index: LogIndex,
    pub last_applied: LogIndex,
    pub last_log_index: LogIndex,
    pub last_log_term: Term,
    /// Leader only: `(peer, match_index, next_index)`.
    pub replication: Vec<(NodeId, LogIndex, LogIndex)>,
    /// Leader only: `(peer, milliseconds since it last answered)`, to the
    /// resolution of one tick.
    pub last_contact_ms: Vec<(NodeId, u64)>,
    /// Last index of the snapshot the log starts after (0: none).
    pub snapshot_last_index: LogIndex,
    /// Snapshots being written or sent right now.
    pub snapshot_in_progress: bool,
    /// Bytes of snapshot sent to followers since start.
    pub snapshot_bytes_sent: u64,
    /// Thesis §6.4.1: whether reads may be served from a leader lease.
    pub lease_reads: bool,
    /// Reads this node answered from its lease since it started.
    pub lease_reads_served: u64,
    /// Whether this node may vote and campaign (`crate::incarnation`).
    pub may_vote: bool,
}

type Reply<O> = oneshot::Sender<Result<O, ClientError>>;
/// The outcome of a queued command, once the server has it.
pub type Pending<O> = oneshot::Receiver<Result<O, ClientError>>;
/// A read query and where to send its answer.
type PendingQuery<O> = (Vec<u8>, Reply<O>);

enum Command<O> {
    Submit { data: Vec<u8>, reply: Reply<O> },
    Read { query: Vec<u8>, reply: Reply<O> },
    Snapshot { reply: SnapshotReply },
    SetMayVote(bool),
    Shutdown,
}

type SnapshotReply = oneshot::Sender<Result<LogIndex, String>>;

/// A cloneable handle to a running [`RaftServer`].
pub struct RaftHandle<O> {
    commands: mpsc::Sender<Command<O>>,
    status: watch::Receiver<Status>,
}

impl<O> Clone for RaftHandle<O> {
    fn clone(&self) -> Self {
        RaftHandle {
            commands: self.commands.clone(),
            status: self.status.clone(),
        }
    }
}

impl<O: Send + 'static> RaftHandle<O> {
    /// Proposes `command`; resolves once it is committed and applied, with the
    /// state machine's output.
    pub async fn submit(&self, command: Vec<u8>) -> Result<O, ClientError> {
        let rx = self.enqueue_submit(command).await?;
        rx.await.map_err(|_| ClientError::Stopped)?
    }

    /// A linearizable read (ReadIndex, thesis §6.4): resolves with the
    /// state machine's answer to `query` once the leader has confirmed its
    /// leadership and applied everything committed before the read began.
    pub async fn read(&self, query: Vec<u8>) -> Result<O, ClientError> {
        let rx = self.enqueue_read(query).await?;
        rx.await.map_err(|_| ClientError::Stopped)?
    }

    /// Enqueues `command` and returns at once with a receiver for its
    /// outcome. Calls made one after another are proposed in that order,
    /// which lets a connection pipeline writes and keep their order. Waits
    /// (backpressure) while the server's bounded queue is full.
    pub async fn enqueue_submit(&self, command: Vec<u8>) -> Result<Pending<O>, ClientError> {
        self.enqueue(|reply| Command::Submit {
            data: command,
            reply,
        })
        .await
    }

    /// Like [`RaftHandle::enqueue_submit`], for a linearizable read.
    pub async fn enqueue_read(&self, query: Vec<u8>) -> Result<Pending<O>, ClientError> {
        self.enqueue(|reply| Command::Read { query, reply }).await
    }

    /// Waits for room in the bounded queue, then queues the command.
    async fn enqueue(
        &self,
        command: impl FnOnce(Reply<O>) -> Command<O>,
    ) -> Result<Pending<O>, ClientError> {
        let (tx, rx) = oneshot::channel();
        let permit = self
            .commands
            .reserve()
            .await
            .map_err(|_| ClientError::Stopped)?;
        permit.send(command(tx));
        Ok(rx)
    }

    /// The latest status (updated after every step of the server loop).
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// The role and known leader, without copying the whole status (the
    /// hot path of request routing).
    pub fn role(&self) -> (RaftState, Option<NodeId>) {
        let s = self.status.borrow();
        (s.state, s.leader_id)
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Takes a snapshot now and compacts the log (§7); resolves with the
    /// snapshot's last index once it is durable.
    pub async fn snapshot(&self) -> Result<LogIndex, String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Snapshot { reply: tx })
            .await
            .map_err(|_| "the raft server has stopped".to_string())?;
        rx.await
            .map_err(|_| "the raft server has stopped".to_string())?
    }

    /// Gives or withholds this server's right to vote and campaign (see
    /// `RaftCore::set_may_vote` and `crate::incarnation`).
    pub async fn set_may_vote(&self, may_vote: bool) {
        let _ = self.commands.send(Command::SetMayVote(may_vote)).await;
    }

    /// Asks the server to stop; pending requests fail with `Stopped`.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }
}

/// Everything needed to start a server.
pub struct ServerParts<T: Transport, M: StateMachine> {
    pub id: NodeId,
    pub voters: Vec<NodeId>,
    pub config: RaftConfig,
    pub storage: Box<dyn Storage>,
    pub transport: T,
    pub incoming: mpsc::Receiver<IncomingRpc>,
    pub state_machine: M,
    /// Seed of the election-timeout RNG.
    pub seed: u64,
}

/// Optional parts of a server.
#[derive(Default)]
pub struct ServerExtras {
    /// Reports what the node does (metrics).
    pub observer: Option<Arc<dyn Observer>>,
    /// Where snapshots live. Without it, the log is never compacted.
    pub snapshots: Option<SnapshotStore>,
    /// Write the log on a background thread (see `log_writer`): faster
    /// under load, but a thread outside tokio, so tests on tokio's paused
    /// clock leave it off (the clock would jump while the disk works).
    pub background_writes: bool,
    /// Start without the right to vote or campaign, until
    /// [`RaftHandle::set_may_vote`] gives it (a new data dir that the other
    /// voters have not vouched for yet: `crate::incarnation`).
    pub vote_withheld: bool,
}

/// Capacity of the client command queue: beyond it, `submit` waits.
const COMMAND_QUEUE: usize = 4096;
/// Commands taken per loop iteration, so one batch becomes one fsync.
const MAX_BATCH: usize = 1024;

/// The server task's state.
pub struct RaftServer<T: Transport, M: StateMachine> {
    node: RaftNode<T>,
    /// Completions of the background log writer.
    write_done: mpsc::UnboundedReceiver<WriteDone>,
    peer_events: mpsc::UnboundedReceiver<PeerEvent>,
    incoming: mpsc::Receiver<IncomingRpc>,
    commands: mpsc::Receiver<Command<M::Output>>,
    state_machine: M,
    tick_interval: Duration,
    /// The monotonic clock the core's ticks follow, from `started`.
    started: tokio::time::Instant,
    tick_clock: TickClock,
    max_catch_up_ticks: u64,
    /// Proposals waiting for their index to be applied: index → (term, reply).
    waiting_apply: BTreeMap<LogIndex, (Term, Reply<M::Output>)>,
    /// Reads waiting for the leader to confirm it still leads.
    waiting_read_index: HashMap<u64, PendingQuery<M::Output>>,
    /// Reads confirmed, waiting for `last_applied >= read index`.
    waiting_applied: BTreeMap<(LogIndex, u64), PendingQuery<M::Output>>,
    next_read_id: u64,
    last_applied: LogIndex,
    status: watch::Sender<Status>,
    snap: Snapshots,
}

impl<T: Transport, M: StateMachine> RaftServer<T, M> {
    /// Recovers state from storage, builds the core and spawns the server
    /// task. Returns the client handle and the task (which ends with an error
    /// on storage failure).
    #[allow(clippy::type_complexity)]
    pub fn spawn(
        parts: ServerParts<T, M>,
    ) -> Result<(RaftHandle<M::Output>, JoinHandle<Result<(), ServerError>>), ServerError> {
        Self::spawn_with(parts, ServerExtras::default())
    }

    /// Like [`RaftServer::spawn`], with metrics and/or snapshots.
    #[allow(clippy::type_complexity)]
    pub fn spawn_with(
        parts: ServerParts<T, M>,
        extras: ServerExtras,
    ) -> Result<(RaftHandle<M::Output>, JoinHandle<Result<(), ServerError>>), ServerError> {
        let mut storage = parts.storage;
        let mut state_machine = parts.state_machine;
        let recovered = storage.recover()?;
        let store = extras.snapshots.map(Arc::new);
        // §7: a node restarts from its latest snapshot plus the log after it.
        let snapshot = match &store {
            Some(store) => restore_latest(store, &mut state_machine)?,
            None => None,
        };
        let recovered = reconcile(snapshot.clone(), recovered, storage.as_mut())?;
        let tick_interval = parts.config.tick_interval;
        let max_catch_up_ticks = parts.config.max_catch_up_ticks();
        let chunk_bytes = parts.config.snapshot_chunk_bytes;
        let policy = (
            parts.config.snapshot_after_entries,
            parts.config.snapshot_after_bytes,
            parts.config.snapshots_to_keep,
        );
        let core = RaftCore::with_snapshot(
            parts.id,
            &parts.voters,
            parts.config,
            recovered,
            snapshot.map(|m| (m.last_index, m.last_term)),
            parts.seed,
        )?;
        let mut core = core;
        core.set_may_vote(!extras.vote_withheld);
        let (mut node, peer_events) = RaftNode::new(core, storage, parts.transport);
        if let Some(observer) = extras.observer {
            node.set_observer(observer);
        }
        // With a background writer, the server goes on sending, proposing
        // and stepping replies while an fsync runs. (Without one, the
        // receiver below never yields.)
        let (_no_writer, mut write_done) = mpsc::unbounded_channel();
        if extras.background_writes {
            write_done = node
                .start_background_writer()
                .map_err(|source| StorageError::Io {
                    path: "<log writer thread>".into(),
                    source,
                })?;
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (status_tx, status_rx) = watch::channel(status_of(node.core()));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let last_applied = node.core().applied_index();
        let server = RaftServer {
            node,
            write_done,
            peer_events,
            incoming: parts.incoming,
            commands: cmd_rx,
            state_machine,
            tick_interval,
            started: tokio::time::Instant::now(),
            tick_clock: TickClock::new(
                0,
                u64::try_from(tick_interval.as_micros()).unwrap_or(u64::MAX),
            ),
            max_catch_up_ticks,
            waiting_apply: BTreeMap::new(),
            waiting_read_index: HashMap::new(),
            waiting_applied: BTreeMap::new(),
            next_read_id: 1,
            last_applied,
            status: status_tx,
            snap: Snapshots {
                store,
                after_entries: policy.0,
                after_bytes: policy.1,
                keep: policy.2,
                chunk_bytes,
                entries_since: 0,
                bytes_since: 0,
                writing: None,
                waiters: Vec::new(),
                done_tx,
                done_rx,
                incoming: None,
                incoming_index: 0,
                sending: Default::default(),
                stats: Arc::new(SnapshotStats::default()),
            },
        };
        let task = tokio::spawn(server.run());
        Ok((
            RaftHandle {
                commands: cmd_tx,
                status: status_rx,
            },
            task,
        ))
    }

    async fn run(mut self) -> Result<(), ServerError> {
        let start = tokio::time::Instant::now() + self.tick_interval;
        // The ticker only wakes the loop; `catch_up_ticks` counts the time,
        // so a tick it misses (a pause) is made up, not lost.
        let mut ticker = tokio::time::interval_at(start, self.tick_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let result = loop {
            // Every branch first runs the ticks that came due (thesis
            // §6.4.1, see `crate::clock`): after a pause, the replies queued
            // meanwhile must meet a core that knows how much time passed.
            tokio::select! {
                _ = ticker.tick() => self.catch_up_ticks(),
                Some(rpc) = self.incoming.recv() => {
                    self.catch_up_ticks();
                    if let Rpc::InstallSnapshot(_) = rpc.rpc {
                        if let Err(e) = self.receive_snapshot_chunk(rpc) {
                            tracing::error!(id = self.node.core().id(), error = %e, "storage failed; stopping this node");
                            break Err(ServerError::Storage(e));
                        }
                    } else {
                        self.node.receive(rpc);
                    }
                    // Take every request already waiting, so a burst of
                    // AppendEntries becomes one fsync on this follower.
                    if let Err(e) = self.drain_incoming() {
                        tracing::error!(id = self.node.core().id(), error = %e, "storage failed; stopping this node");
                        break Err(ServerError::Storage(e));
                    }
                }
                Some(done) = self.write_done.recv() => {
                    self.catch_up_ticks();
                    let mut result = self.node.write_done(done);
                    while result.is_ok() {
                        let Ok(more) = self.write_done.try_recv() else { break };
                        result = self.node.write_done(more);
                    }
                    if let Err(e) = result {
                        tracing::error!(id = self.node.core().id(), error = %e, "storage failed; stopping this node");
                        break Err(ServerError::Storage(e));
                    }
                }
                Some(done) = self.snap.done_rx.recv() => {
                    self.catch_up_ticks();
                    if let Err(e) = self.snapshot_written(done) {
                        tracing::error!(id = self.node.core().id(), error = %e, "storage failed; stopping this node");
                        break Err(ServerError::Storage(e));
                    }
                }
                Some(event) = self.peer_events.recv() => {
                    self.catch_up_ticks();
                    if let PeerEvent::SnapshotSent { peer, .. } = &event {
                        self.snap.sending.remove(peer);
                    }
                    self.node.handle_peer_event(event);
                    // Likewise every reply already back: one commit step.
                    for _ in 0..MAX_BATCH {
                        let Ok(event) = self.peer_events.try_recv() else { break };
                        if let PeerEvent::SnapshotSent { peer, .. } = &event {
                            self.snap.sending.remove(peer);
                        }
                        self.node.handle_peer_event(event);
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown) | None => break Ok(()),
                    Some(cmd) => {
                        self.catch_up_ticks();
                        let mut proposals = usize::from(matches!(cmd, Command::Submit { .. }));
                        self.handle_command(cmd);
                        // Take what else is queued, so a burst of proposals
                        // becomes one AppendEntries and one fsync.
                        let mut stop = false;
                        for _ in 0..MAX_BATCH {
                            match self.commands.try_recv() {
                                Ok(Command::Shutdown) => { stop = true; break; }
                                Ok(cmd) => {
                                    proposals += usize::from(matches!(cmd, Command::Submit { .. }));
                                    self.handle_command(cmd);
                                }
                                Err(_) => break,
                            }
                        }
                        if proposals > 0 {
                            self.node.observer().proposals_batched(proposals);
                        }
                        if stop { break Ok(()); }
                    }
                },
            }
            match self.node.process_ready() {
                Ok(out) => {
                    self.send_snapshots(&out.snapshots_to_send);
                    self.apply(out);
                    self.maybe_snapshot(None);
                }
                Err(e) => {
                    // Fail-stop: a node that cannot persist must not go on.
                    tracing::error!(id = self.node.core().id(), error = %e, "storage failed; stopping this node");
                    break Err(ServerError::Storage(e));
                }
            }
            self.publish_status();
        };
        self.fail_all();
        result
    }

    /// Runs every tick that came due since the last input (see
    /// [`crate::clock`]), at most [`RaftConfig::max_catch_up_ticks`].
    fn catch_up_ticks(&mut self) {
        let now_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let due = self.tick_clock.due(now_us);
        for _ in 0..due.min(self.max_catch_up_ticks) {
            self.node.tick();
        }
    }

    fn handle_command(&mut self, cmd: Command<M::Output>) {
        match cmd {
            Command::Submit { data, reply } => match self.node.core_mut().propose(data) {
                Ok((index, term)) => {
                    // A waiter from an older term at the same index lost its
                    // entry: this node would not propose here otherwise.
                    if let Some((_, old)) = self.waiting_apply.insert(index, (term, reply)) {
                        let _ = old.send(Err(ClientError::LeadershipLost));
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Read { query, reply } => {
                let id = self.next_read_id;
                self.next_read_id += 1;
                match self.node.core_mut().read_index(id) {
                    Ok(()) => {
                        self.waiting_read_index.insert(id, (query, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Snapshot { reply } => self.maybe_snapshot(Some(reply)),
            Command::SetMayVote(may_vote) => self.node.core_mut().set_may_vote(may_vote),
            Command::Shutdown => {}
        }
    }

    fn apply(&mut self, out: Output) {
        for event in &out.events {
            let Event::StateChanged {
                state,
                term,
                leader,
            } = event;
            tracing::info!(id = self.node.core().id(), %state, term, leader = ?leader, "state changed");
        }
        let last_applied_entry = out.committed_entries.last().map(|e| (e.index, e.term));
        for entry in out.committed_entries {
            let output = match entry.kind {
                EntryKind::Normal => Some(self.state_machine.apply(entry.index, &entry.data)),
                EntryKind::Noop => None,
            };
            self.last_applied = entry.index;
            self.snap.entries_since += 1;
            self.snap.bytes_since += entry.size() as u64;
            // The waiter for this index learns its fate: same term means the
            // very entry it proposed (Log Matching, §5.3); another term means
            // its entry was overwritten by a later leader.
            if let Some((term, reply)) = self.waiting_apply.remove(&entry.index) {
                let result = match output {
                    Some(output) if term == entry.term => Ok(output),
                    _ => Err(ClientError::LeadershipLost),
                };
                let _ = reply.send(result);
            }
        }
        // Terms never decrease along a log, so once an entry of term T is
        // applied, a waiter of an older term at a later index can never see
        // its entry commit: fail it now instead of when the index fills.
        if let Some((applied_index, applied_term)) = last_applied_entry {
            let doomed: Vec<LogIndex> = self
                .waiting_apply
                .range(applied_index + 1..)
                .filter(|(_, (term, _))| *term < applied_term)
                .map(|(i, _)| *i)
                .collect();
            for index in doomed {
                if let Some((_, reply)) = self.waiting_apply.remove(&index) {
                    let _ = reply.send(Err(ClientError::LeadershipLost));
                }
            }
        }
        for rs in out.read_states {
            let Some((query, reply)) = self.waiting_read_index.remove(&rs.id) else {
                continue;
            };
            match rs.result {
                Ok(index) => {
                    self.waiting_applied.insert((index, rs.id), (query, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            }
        }
        // An incoming snapshot the log has overtaken (its leader gave up on
        // the transfer, a later leader caught us up by entries) is dropped,
        // with its temp file.
        if self.snap.incoming_index <= self.last_applied {
            self.snap.incoming = None;
        }
        // Thesis §6.4 step 4: serve each read once the state machine has
        // applied at least its read index.
        while let Some(entry) = self.waiting_applied.first_entry() {
            if entry.key().0 > self.last_applied {
                break;
            }
            let (query, reply) = entry.remove();
            let _ = reply.send(Ok(self.state_machine.query(&query)));
        }
    }

    /// Steps requests that are already queued (bounded), handling snapshot
    /// chunks on their own path.
    fn drain_incoming(&mut self) -> Result<(), StorageError> {
        for _ in 0..MAX_BATCH {
            let Ok(rpc) = self.incoming.try_recv() else {
                break;
            };
            if let Rpc::InstallSnapshot(_) = rpc.rpc {
                self.receive_snapshot_chunk(rpc)?;
            } else {
                self.node.receive(rpc);
            }
        }
        Ok(())
    }

    fn publish_status(&mut self) {
        let mut status = status_of(self.node.core());
        status.last_applied = self.last_applied;
        status.snapshot_in_progress = self.snap.writing.is_some()
            || self.snap.incoming.is_some()
            || self.snap.stats.sending.load(Ordering::Relaxed) > 0;
        status.snapshot_bytes_sent = self.snap.stats.bytes_sent.load(Ordering::Relaxed);
        self.status.send_if_modified(|old| {
            if *old != status {
                *old = status;
                true
            } else {
                false
            }
        });
    }

    fn fail_all(&mut self) {
        for w in self.snap.waiters.drain(..) {
            let _ = w.send(Err("the raft server has stopped".to_string()));
        }
        for (_, (_, reply)) in std::mem::take(&mut self.waiting_apply) {
            let _ = reply.send(Err(ClientError::Stopped));
        }
        for (_, (_, reply)) in std::mem::take(&mut self.waiting_read_index) {
            let _ = reply.send(Err(ClientError::Stopped));
        }
        for (_, (_, reply)) in std::mem::take(&mut self.waiting_applied) {
            let _ = reply.send(Err(ClientError::Stopped));
        }
    }
}

fn status_of(core: &RaftCore) -> Status {
    Status {
        id: core.id(),
        state: core.state(),
        term: core.term(),
        leader_id: core.leader_id(),
        commit_index: core.commit_index(),
        last_applied: core.applied_index(),
        last_log_index: core.last_log_index(),
        last_log_term: core.last_log_term(),
        replication: core.replication_progress(),
        snapshot_last_index: core.snapshot_index(),
        snapshot_in_progress: false,
        snapshot_bytes_sent: 0,
        lease_reads: core.config().lease_reads,
        lease_reads_served: core.lease_reads_served(),
        may_vote: core.may_vote(),
        last_contact_ms: core
            .peer_contact_ticks()
            .into_iter()
            .map(|(id, ticks)| {
                let tick_ms = core.config().tick_interval.as_millis() as u64;
                (id, ticks.saturating_mul(tick_ms))
            })
            .collect(),
    }
}

// ----- Snapshots (§7) ----------------------------------------------------------

/// Counters shared with snapshot-sending tasks.
#[derive(Default)]
struct SnapshotStats {
    /// Transfers under way.
    sending: AtomicU64,
    bytes_sent: AtomicU64,
}

/// What a background snapshot write reports when it ends.
struct SnapshotDone {
    meta: SnapshotMeta,
    result: Result<(), StorageError>,
}

/// The server's snapshot state.
struct Snapshots {
    store: Option<Arc<SnapshotStore>>,
    after_entries: u64,
    after_bytes: u64,
    keep: usize,
    chunk_bytes: usize,
    /// Applied since the last snapshot (the policy's counters).
    entries_since: u64,
    bytes_since: u64,
    /// The last index of a snapshot being written in the background.
    writing: Option<LogIndex>,
    /// Admin requests waiting for the snapshot being written.
    waiters: Vec<SnapshotReply>,
    done_tx: mpsc::UnboundedSender<SnapshotDone>,
    done_rx: mpsc::UnboundedReceiver<SnapshotDone>,
    /// Follower: a snapshot arriving in chunks, and its last index.
    incoming: Option<IncomingSnapshot>,
    incoming_index: LogIndex,
    /// Leader: followers a transfer is running to.
    sending: HashSet<NodeId>,
    stats: Arc<SnapshotStats>,
}

/// Restores the state machine from the newest valid snapshot, if any.
fn restore_latest<M: StateMachine>(
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
fn reconcile(
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
    fn maybe_snapshot(&mut self, admin: Option<SnapshotReply>) {
        let Some(store) = self.snap.store.clone() else {
            if let Some(reply) = admin {
                let _ = reply.send(Err("snapshots are not configured on this node".into()));
            }
            return;
        };
        // after_entries == 0 turns the automatic policy off altogether.
        let due = self.snap.after_entries > 0
            && (self.snap.entries_since >= self.snap.after_entries
                || self.snap.bytes_since >= self.snap.after_bytes);
        if let Some(reply) = admin {
            self.snap.waiters.push(reply);
        } else if !due {
            return;
        }
        if self.snap.writing.is_some() {
            // One at a time; waiters get the one under way.
            return;
        }
        let index = self.last_applied;
        let core = self.node.core();
        if index == 0 || index <= core.snapshot_index() {
            // Nothing new since the last snapshot: it is the answer.
            let done = core.snapshot_index();
            for w in self.snap.waiters.drain(..) {
                let _ = w.send(Ok(done));
            }
            return;
        }
        let Some(term) = core.term_at(index) else {
            for w in self.snap.waiters.drain(..) {
                let _ = w.send(Err(format!("no term known for index {index}")));
            }
            return;
        };
        let Some(mut image) = self.state_machine.snapshot() else {
            for w in self.snap.waiters.drain(..) {
                let _ = w.send(Err("this state machine does not support snapshots".into()));
            }
            return;
        };
        let meta = SnapshotMeta {
            last_index: index,
            last_term: term,
            voters: core.voters().to_vec(),
        };
        self.snap.writing = Some(index);
        self.snap.entries_since = 0;
        self.snap.bytes_since = 0;
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
    fn snapshot_written(&mut self, done: SnapshotDone) -> Result<(), StorageError> {
        self.snap.writing = None;
        let index = done.meta.last_index;
        match done.result {
            Ok(()) => {
                self.node.compact_log(index)?;
                if let Some(store) = &self.snap.store {
                    if let Err(e) = store.retain(self.snap.keep) {
                        tracing::warn!(error = %e, "could not delete old snapshots");
                    }
                }
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
        Ok(())
    }

    /// Leader: streams the newest snapshot to each follower that needs it,
    /// one chunk at a time (each acknowledged), on its own task, so
    /// heartbeats keep flowing meanwhile.
    fn send_snapshots(&mut self, peers: &[NodeId]) {
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

    /// Follower: one chunk of InstallSnapshot. The bytes go to a temp file;
    /// the last chunk is verified, installed atomically, and the state
    /// machine restored from it, before the reply says "installed".
    fn receive_snapshot_chunk(&mut self, rpc: IncomingRpc) -> Result<(), StorageError> {
        let IncomingRpc { from, rpc, reply } = rpc;
        let Rpc::InstallSnapshot(args) = rpc else {
            return Ok(());
        };
        let verdict = self.node.core_mut().handle_snapshot_chunk(from, &args);
        // The chunk may have raised our term: durable before we answer.
        let out = self.node.process_ready()?;
        self.send_snapshots(&out.snapshots_to_send);
        self.apply(out);
        self.node.sync()?;
        let answer = match verdict {
            SnapshotChunkVerdict::Refuse { term } => snapshot_answer(term, false, 0, false),
            SnapshotChunkVerdict::Covered { term } => {
                self.snap.incoming = None;
                snapshot_answer(term, true, args.total_size, true)
            }
            SnapshotChunkVerdict::Accept { term } => self.accept_chunk(term, args)?,
        };
        let _ = reply.send(Rpc::InstallSnapshotReply(answer));
        Ok(())
    }

    fn accept_chunk(
        &mut self,
        term: Term,
        args: InstallSnapshotArgs,
    ) -> Result<InstallSnapshotReply, StorageError> {
        let Some(store) = self.snap.store.clone() else {
            return Ok(snapshot_answer(term, false, 0, false));
        };
        if args.offset == 0 {
            // A (re)start: forget any half-received one.
            self.snap.incoming = Some(store.begin_receive()?);
            self.snap.incoming_index = args.last_included_index;
        }
        let Some(incoming) = self.snap.incoming.as_mut() else {
            return Ok(snapshot_answer(term, false, 0, false));
        };
        if let Err(e) = incoming.write_chunk(args.offset, &args.data) {
            tracing::debug!(error = %e, "snapshot chunk out of place");
            let expected = incoming.offset();
            return Ok(snapshot_answer(term, false, expected, false));
        }
        let next = incoming.offset();
        if !args.done {
            return Ok(snapshot_answer(term, true, next, false));
        }
        let Some(incoming) = self.snap.incoming.take() else {
            return Ok(snapshot_answer(term, false, 0, false));
        };
        let (meta, path) = match incoming.finish() {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(error = %e, "received snapshot failed verification; asking for it again");
                return Ok(snapshot_answer(term, false, 0, false));
            }
        };
        self.install_received(&store, meta, &path)?;
        Ok(snapshot_answer(term, true, next, true))
    }

    /// Restores the state machine from a received snapshot and makes the
    /// log start after it.
    fn install_received(
        &mut self,
        store: &SnapshotStore,
        meta: SnapshotMeta,
        path: &std::path::Path,
    ) -> Result<(), StorageError> {
        if meta.last_index <= self.node.core().commit_index() {
            return Ok(());
        }
        let (meta, mut body) = store.open_body(path)?;
        self.state_machine
            .restore(&mut body)
            .map_err(|source| StorageError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        self.node
            .install_snapshot(meta.last_index, meta.last_term)?;
        tracing::info!(
            id = self.node.core().id(),
            last_index = meta.last_index,
            "installed snapshot from the leader"
        );
        self.last_applied = meta.last_index;
        self.snap.entries_since = 0;
        self.snap.bytes_since = 0;
        // Proposals this node made as leader, covered by the snapshot: their
        // fate is in the image, which does not say. Unknown.
        let covered: Vec<LogIndex> = self
            .waiting_apply
            .range(..=meta.last_index)
            .map(|(i, _)| *i)
            .collect();
        for index in covered {
            if let Some((_, reply)) = self.waiting_apply.remove(&index) {
                let _ = reply.send(Err(ClientError::Unknown));
            }
        }
        if let Err(e) = store.retain(self.snap.keep) {
            tracing::warn!(error = %e, "could not delete old snapshots");
        }
        Ok(())
    }
}

fn snapshot_answer(
    term: Term,
    success: bool,
    next_offset: u64,
    installed: bool,
) -> InstallSnapshotReply {
    InstallSnapshotReply {
        term,
        success,
        next_offset,
        installed,
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
    let Some((meta, path)) = store.latest().map_err(|e| failed(&e))? else {
        return Err(StreamEnd::Failed("no snapshot on disk".into()));
    };
    tracing::info!(peer, last_index = meta.last_index, "sending snapshot");
    let mut offset = 0u64;
    let mut restarts = 0;
    loop {
        let (data, total) = store
            .read_chunk(&path, offset, chunk)
            .map_err(|e| failed(&e))?;
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
