//! `RaftServer` and `RaftHandle`: the client API over a [`RaftNode`].
//!
//! One tokio task owns the node and the [`StateMachine`]; clients talk to it
//! through a cloneable [`RaftHandle`]. Single ownership instead of
//! `Arc<Mutex<_>>`: the task is the only one that ever touches the core, so
//! there is nothing to lock and no lock to hold across an `.await`.

mod membership;
mod receive;
mod snapshots;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use self::membership::{ChangeReply, PendingChanges, TransferReply};
use self::snapshots::{reconcile, restore_latest, Snapshots};
use crate::clock::TickClock;
use crate::config::RaftConfig;
use crate::core::{ConfChange, CoreError, Event, Membership, RaftCore};
use crate::log_writer::WriteDone;
use crate::message::Rpc;
use crate::node::{DiskMode, NodeInbox, PeerEvent, RaftNode, Reply};
use crate::observer::Observer;
use crate::snapshot::SnapshotStore;
use crate::state_machine::StateMachine;
use crate::storage::{Storage, StorageError};
use crate::transport::{IncomingRpc, Transport};
use crate::types::{LogIndex, NodeId, RaftState, Term};

pub use self::membership::AdminError;
pub use crate::driver::ClientError;

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
    /// The configuration in force (thesis §4.1: the latest in the log).
    pub membership: Arc<Membership>,
    /// The index of the entry that holds it (at or below the snapshot's
    /// index for the one a snapshot carries; 0 for the bootstrap one).
    pub membership_index: LogIndex,
    /// Leader: the target of a leadership transfer under way (§3.10).
    pub transfer_target: Option<NodeId>,
}

/// The outcome of a queued command, once the server has it.
pub type Pending<O> = oneshot::Receiver<Result<O, ClientError>>;

enum Command<O> {
    Submit {
        data: Vec<u8>,
        reply: Reply<O>,
    },
    Read {
        query: Vec<u8>,
        reply: Reply<O>,
    },
    Snapshot {
        reply: SnapshotReply,
    },
    SetMayVote(bool),
    ChangeMembership {
        change: ConfChange,
        reply: ChangeReply,
    },
    TransferLeadership {
        target: NodeId,
        reply: TransferReply,
    },
    Shutdown,
}

type SnapshotReply = oneshot::Sender<Result<LogIndex, String>>;

/// A cloneable handle to a running [`RaftServer`].
pub struct RaftHandle<O> {
    commands: mpsc::Sender<Command<O>>,
    status: watch::Receiver<Status>,
    /// The shortest election timeout, the unit of membership's waits.
    election_timeout: Duration,
}

impl<O> Clone for RaftHandle<O> {
    fn clone(&self) -> Self {
        RaftHandle {
            commands: self.commands.clone(),
            status: self.status.clone(),
            election_timeout: self.election_timeout,
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
    /// The configuration to start from when neither a snapshot nor the
    /// log holds one: the bootstrap voters of a new cluster (with their
    /// addresses, for the transport), or an empty one for a server that
    /// joins an existing cluster and waits to be added (thesis §4.1).
    pub membership: Membership,
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
    node: RaftNode<T, M>,
    /// Completions of the log writer.
    write_done: mpsc::UnboundedReceiver<WriteDone>,
    peer_events: mpsc::UnboundedReceiver<PeerEvent>,
    incoming: mpsc::Receiver<IncomingRpc>,
    commands: mpsc::Receiver<Command<M::Output>>,
    tick_interval: Duration,
    /// The monotonic clock the core's ticks follow, from `started`.
    started: tokio::time::Instant,
    tick_clock: TickClock,
    max_catch_up_ticks: u64,
    status: watch::Sender<Status>,
    snap: Snapshots,
    /// Membership changes proposed here, waiting to be applied.
    changes: PendingChanges,
    /// The configuration in force as last published (and told to the
    /// transport).
    membership: Arc<Membership>,
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
        let election_timeout = parts.config.election_timeout_min;
        let max_catch_up_ticks = parts.config.max_catch_up_ticks();
        let chunk_bytes = parts.config.snapshot_chunk_bytes;
        let policy = (
            parts.config.snapshot_after_entries,
            parts.config.snapshot_after_bytes,
            parts.config.snapshots_to_keep,
        );
        // §7 and thesis §4.1: the configuration at the snapshot's index is
        // in its header (the log entries that held it may be gone); without
        // a snapshot, the bootstrap one. Configuration entries in the log
        // after it override either.
        let (membership, base) = match snapshot {
            Some(m) => (m.membership, Some((m.last_index, m.last_term))),
            None => (parts.membership, None),
        };
        let core = RaftCore::start(
            parts.id,
            membership,
            parts.config,
            recovered,
            base,
            parts.seed,
        )?;
        let mut core = core;
        core.set_may_vote(!extras.vote_withheld);
        // With the background writer, the server goes on sending,
        // proposing and stepping replies while an fsync runs; inline (tests
        // on virtual time), each write is done when submitted. Either way
        // durability comes back on `write_done`.
        let disk = if extras.background_writes {
            DiskMode::Background
        } else {
            DiskMode::Inline
        };
        let (mut node, inbox) = RaftNode::new(core, state_machine, storage, parts.transport, disk)
            .map_err(|source| StorageError::Io {
                path: "<log writer thread>".into(),
                source,
            })?;
        let NodeInbox {
            peer_events,
            write_done,
        } = inbox;
        if let Some(observer) = extras.observer {
            node.set_observer(observer);
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let membership = Arc::new(node.core().membership().0.clone());
        node.transport().members_changed(&membership);
        let (status_tx, status_rx) = watch::channel(status_of(node.core(), membership.clone()));
        let server = RaftServer {
            node,
            write_done,
            peer_events,
            incoming: parts.incoming,
            commands: cmd_rx,
            tick_interval,
            started: tokio::time::Instant::now(),
            tick_clock: TickClock::new(
                0,
                u64::try_from(tick_interval.as_micros()).unwrap_or(u64::MAX),
            ),
            max_catch_up_ticks,
            status: status_tx,
            snap: Snapshots::new(store, policy, chunk_bytes),
            changes: PendingChanges::default(),
            membership,
        };
        let task = tokio::spawn(server.run());
        Ok((
            RaftHandle {
                commands: cmd_tx,
                status: status_rx,
                election_timeout,
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
                    self.receive(rpc);
                    // Take every request already waiting, so a burst of
                    // AppendEntries becomes one fsync on this follower.
                    self.drain_incoming();
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
                    self.snapshot_written(done);
                }
                Some(done) = self.snap.receive.done_rx.recv() => {
                    self.catch_up_ticks();
                    if let Err(e) = self.chunk_written(done) {
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
                Ok(out) => self.after_ready(out),
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
            Command::Submit { data, reply } => self.node.propose(data, reply),
            Command::Read { query, reply } => self.node.read(query, reply),
            Command::Snapshot { reply } => self.maybe_snapshot(Some(reply)),
            Command::SetMayVote(may_vote) => self.node.set_may_vote(may_vote),
            Command::ChangeMembership { change, reply } => {
                match self.node.propose_conf_change(&change) {
                    Ok((index, term)) => self.changes.push(index, term, reply),
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::TransferLeadership { target, reply } => {
                let result = self.node.transfer_leadership(target).map_err(Into::into);
                let _ = reply.send(result);
            }
            Command::Shutdown => {}
        }
    }

    /// What a round of the driver left for the server: logs, snapshot
    /// transfers, the snapshot policy.
    fn after_ready(&mut self, out: crate::node::Output) {
        // Before any snapshot below: a change's entry must still be in the
        // log to tell whose it was.
        let applied = self.node.driver().last_applied();
        self.changes.settle(self.node.core(), applied);
        self.follow_membership();
        for event in &out.events {
            let Event::StateChanged {
                state,
                term,
                leader,
            } = event;
            tracing::info!(id = self.node.core().id(), %state, term, leader = ?leader, "state changed");
        }
        self.send_snapshots(&out.snapshots_to_send);
        // An incoming snapshot the log has overtaken (its leader gave up on
        // the transfer, a later leader caught us up by entries) is dropped,
        // with its temp file.
        let applied = self.node.driver().last_applied();
        self.snap.receive.discard_up_to(applied);
        self.maybe_snapshot(None);
    }

    /// Steps one request; snapshot chunks take their own path
    /// (`receive`).
    fn receive(&mut self, rpc: IncomingRpc) {
        if let Rpc::InstallSnapshot(_) = rpc.rpc {
            self.receive_snapshot_chunk(rpc);
        } else {
            self.node.receive(rpc);
        }
    }

    /// Steps requests that are already queued (bounded).
    fn drain_incoming(&mut self) {
        for _ in 0..MAX_BATCH {
            let Ok(rpc) = self.incoming.try_recv() else {
                break;
            };
            self.receive(rpc);
        }
    }

    /// Thesis §4.1: the configuration in force changes when an entry is
    /// appended (or truncated, or a snapshot installed); the transport
    /// learns where new members are before anything is sent to them.
    fn follow_membership(&mut self) {
        let current = self.node.core().membership().0;
        if *current == *self.membership {
            return;
        }
        let id = self.node.core().id();
        let was_member = self.membership.contains(id);
        let next = Arc::new(current.clone());
        self.node.transport().members_changed(&next);
        tracing::info!(
            id,
            voters = ?next.voters(),
            learners = ?next.learners(),
            "configuration changed"
        );
        if was_member && !next.contains(id) {
            tracing::warn!(
                id,
                "this node was removed from the cluster: it no longer votes or campaigns \
                 (thesis §4.2.2); stop it, or add it back as a new member"
            );
        }
        self.membership = next;
    }

    fn publish_status(&mut self) {
        let mut status = status_of(self.node.core(), self.membership.clone());
        status.last_applied = self.node.driver().last_applied();
        status.snapshot_in_progress = self.snap.writing.is_some()
            || self.snap.receive.in_progress()
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
        self.changes.fail_all();
        self.node.stop();
    }
}

fn status_of(core: &RaftCore, membership: Arc<Membership>) -> Status {
    Status {
        membership,
        membership_index: core.membership().1,
        transfer_target: core.transfer_target(),
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
