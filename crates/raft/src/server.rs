//! `RaftServer` and `RaftHandle`: the client API over a [`RaftNode`].
//!
//! One tokio task owns the node and the [`StateMachine`]; clients talk to it
//! through a cloneable [`RaftHandle`]. Single ownership instead of
//! `Arc<Mutex<_>>`: the task is the only one that ever touches the core, so
//! there is nothing to lock and no lock to hold across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::RaftConfig;
use crate::core::{CoreError, Event, NotLeader, RaftCore};
use crate::node::{Output, PeerEvent, RaftNode};
use crate::observer::{NoopObserver, Observer};
use crate::storage::{Storage, StorageError};
use crate::transport::{IncomingRpc, Transport};
use crate::types::{EntryKind, LogIndex, NodeId, RaftState, Term};

/// The application the log drives (Figure 2: "apply log[lastApplied] to
/// state machine"). `apply` must be deterministic: every server applies the
/// same commands in the same order and must reach the same state.
///
/// Snapshots will add `snapshot`/`restore` methods with default bodies, so
/// existing implementations keep compiling.
pub trait StateMachine: Send + 'static {
    /// What applying a command (or running a query) returns to the client.
    type Output: Send + 'static;

    /// Applies the committed command at `index`.
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Self::Output;

    /// Answers a read-only query against the current state.
    fn query(&self, query: &[u8]) -> Self::Output;
}

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
    /// The server stopped before the outcome was known.
    #[error("the raft server has stopped")]
    Stopped,
}

impl From<NotLeader> for ClientError {
    fn from(e: NotLeader) -> Self {
        match e {
            NotLeader::NotLeader { leader_hint } => ClientError::NotLeader { leader_hint },
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
}

type Reply<O> = oneshot::Sender<Result<O, ClientError>>;
/// A read query and where to send its answer.
type PendingQuery<O> = (Vec<u8>, Reply<O>);

enum Command<O> {
    Submit { data: Vec<u8>, reply: Reply<O> },
    Read { query: Vec<u8>, reply: Reply<O> },
    Shutdown,
}

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
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Submit {
                data: command,
                reply: tx,
            })
            .await
            .map_err(|_| ClientError::Stopped)?;
        rx.await.map_err(|_| ClientError::Stopped)?
    }

    /// A linearizable read (ReadIndex, thesis §6.4): resolves with the
    /// state machine's answer to `query` once the leader has confirmed its
    /// leadership and applied everything committed before the read began.
    pub async fn read(&self, query: Vec<u8>) -> Result<O, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Read { query, reply: tx })
            .await
            .map_err(|_| ClientError::Stopped)?;
        rx.await.map_err(|_| ClientError::Stopped)?
    }

    /// Enqueues `command` and returns at once with a receiver for its
    /// outcome. Calls made one after another are proposed in that order,
    /// which lets a connection pipeline writes and keep their order. Waits
    /// (backpressure) while the server's bounded queue is full.
    pub async fn enqueue_submit(
        &self,
        command: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<O, ClientError>>, ClientError> {
        let (tx, rx) = oneshot::channel();
        let permit = self
            .commands
            .reserve()
            .await
            .map_err(|_| ClientError::Stopped)?;
        permit.send(Command::Submit {
            data: command,
            reply: tx,
        });
        Ok(rx)
    }

    /// Like [`RaftHandle::enqueue_submit`], for a linearizable read.
    pub async fn enqueue_read(
        &self,
        query: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<O, ClientError>>, ClientError> {
        let (tx, rx) = oneshot::channel();
        let permit = self
            .commands
            .reserve()
            .await
            .map_err(|_| ClientError::Stopped)?;
        permit.send(Command::Read { query, reply: tx });
        Ok(rx)
    }

    /// The latest status (updated after every step of the server loop).
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.clone()
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

/// Capacity of the client command queue: beyond it, `submit` waits.
const COMMAND_QUEUE: usize = 4096;
/// Commands taken per loop iteration, so one batch becomes one fsync.
const MAX_BATCH: usize = 1024;

/// The server task's state.
pub struct RaftServer<T: Transport, M: StateMachine> {
    node: RaftNode<T>,
    peer_events: mpsc::UnboundedReceiver<PeerEvent>,
    incoming: mpsc::Receiver<IncomingRpc>,
    commands: mpsc::Receiver<Command<M::Output>>,
    state_machine: M,
    tick_interval: Duration,
    /// Proposals waiting for their index to be applied: index → (term, reply).
    waiting_apply: BTreeMap<LogIndex, (Term, Reply<M::Output>)>,
    /// Reads waiting for the leader to confirm it still leads.
    waiting_read_index: HashMap<u64, PendingQuery<M::Output>>,
    /// Reads confirmed, waiting for `last_applied >= read index`.
    waiting_applied: BTreeMap<(LogIndex, u64), PendingQuery<M::Output>>,
    next_read_id: u64,
    last_applied: LogIndex,
    status: watch::Sender<Status>,
}

impl<T: Transport, M: StateMachine> RaftServer<T, M> {
    /// Recovers state from storage, builds the core and spawns the server
    /// task. Returns the client handle and the task (which ends with an error
    /// on storage failure).
    #[allow(clippy::type_complexity)]
    pub fn spawn(
        parts: ServerParts<T, M>,
    ) -> Result<(RaftHandle<M::Output>, JoinHandle<Result<(), ServerError>>), ServerError> {
        Self::spawn_observed(parts, Arc::new(NoopObserver))
    }

    /// Like [`RaftServer::spawn`], reporting to `observer` (metrics).
    #[allow(clippy::type_complexity)]
    pub fn spawn_observed(
        parts: ServerParts<T, M>,
        observer: Arc<dyn Observer>,
    ) -> Result<(RaftHandle<M::Output>, JoinHandle<Result<(), ServerError>>), ServerError> {
        let mut storage = parts.storage;
        let recovered = storage.recover()?;
        let tick_interval = parts.config.tick_interval;
        let core = RaftCore::new(parts.id, &parts.voters, parts.config, recovered, parts.seed)?;
        let (mut node, peer_events) = RaftNode::new(core, storage, parts.transport);
        node.set_observer(observer);
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (status_tx, status_rx) = watch::channel(status_of(node.core()));
        let server = RaftServer {
            node,
            peer_events,
            incoming: parts.incoming,
            commands: cmd_rx,
            state_machine: parts.state_machine,
            tick_interval,
            waiting_apply: BTreeMap::new(),
            waiting_read_index: HashMap::new(),
            waiting_applied: BTreeMap::new(),
            next_read_id: 1,
            last_applied: 0,
            status: status_tx,
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
        let mut ticker = tokio::time::interval_at(start, self.tick_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                _ = ticker.tick() => self.node.tick(),
                Some(rpc) = self.incoming.recv() => self.node.receive(rpc),
                Some(event) = self.peer_events.recv() => self.node.handle_peer_event(event),
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown) | None => break Ok(()),
                    Some(cmd) => {
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
                Ok(out) => self.apply(out),
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

    fn publish_status(&mut self) {
        let mut status = status_of(self.node.core());
        status.last_applied = self.last_applied;
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
