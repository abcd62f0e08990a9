//! `RaftNode`: the [`Driver`] on tokio, with a real disk and a real network.
//!
//! The driver decides what to write, send, apply and answer; the node
//! carries its [`Effect`]s out: writes go to a [`Storage`] through the log
//! writer of [`crate::log_writer`] (on a background thread, or inline in
//! tests; durability comes back as a [`WriteDone`] either way), requests go out through the
//! [`Transport`] (each RPC on its own task, so one slow or dead peer never
//! delays the others), replies go back on the channel their request came
//! with, answers go to the clients' channels. This mirrors etcd's `Node`
//! around `RawNode`. The simulator carries out the same effects in its
//! virtual world.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::core::{
    ConfChange, Event, Membership, MembershipError, RaftCore, SnapshotChunkVerdict, TransferError,
};
use crate::driver::{ClientError, DiskOp, Driver, Effect, SnapshotRefusal};
use crate::log_writer::{LogWriter, WriteDone};
use crate::message::{InstallSnapshotArgs, Message, Rpc};
use crate::observer::{NoopObserver, Observer};
use crate::state_machine::{SnapshotWriter, StateMachine};
use crate::storage::{Storage, StorageError};
use crate::transport::{IncomingRpc, Transport};
use crate::types::{LogIndex, NodeId, Term};

/// Where a client's answer goes.
pub type Reply<O> = oneshot::Sender<Result<O, ClientError>>;

/// What came back from a peer: its reply, or word that it was unreachable.
#[derive(Debug)]
pub enum PeerEvent {
    Reply(Message),
    Unreachable(NodeId),
    /// A snapshot transfer to `peer` ended.
    SnapshotSent {
        peer: NodeId,
        index: LogIndex,
        success: bool,
    },
}

/// What a round of [`RaftNode::process_ready`] leaves to the layer above.
#[derive(Debug, Default)]
pub struct Output {
    pub events: Vec<Event>,
    /// Followers that need the current snapshot streamed to them.
    pub snapshots_to_send: Vec<NodeId>,
}

/// The channels a node's outside world reads: what came back from peers,
/// and which disk writes are durable. The owner passes each item back in,
/// through [`RaftNode::handle_peer_event`] and [`RaftNode::write_done`].
/// A snapshot chunk the core has ruled on ([`RaftNode::receive_snapshot_chunk`]).
pub struct SnapshotChunk {
    pub from: NodeId,
    pub args: InstallSnapshotArgs,
    pub verdict: SnapshotChunkVerdict,
    /// Where its reply goes, with [`RaftNode::reply_when_durable`].
    pub reply: ReplySlot,
}

/// The way back to the peer that sent a request. Opaque: a reply can only
/// go where its request came from.
pub struct ReplySlot {
    to: NodeId,
    reply: oneshot::Sender<Rpc>,
}

pub struct NodeInbox {
    pub peer_events: mpsc::UnboundedReceiver<PeerEvent>,
    pub write_done: mpsc::UnboundedReceiver<WriteDone>,
}

/// How the node's disk writes run; either way, the node submits them and
/// learns of their durability from [`WriteDone`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskMode {
    /// On a background thread, with group commit (production).
    Background,
    /// At submission, on the node's own thread (tests on virtual time).
    Inline,
}

pub struct RaftNode<T: Transport, M: StateMachine> {
    driver: Driver<M, Reply<M::Output>>,
    disk: LogWriter,
    transport: Arc<T>,
    peer_events: mpsc::UnboundedSender<PeerEvent>,
    /// Incoming requests waiting for their reply, per peer, oldest first.
    /// The driver answers every request exactly once and in the order it
    /// was stepped, so the next reply addressed to a peer belongs to the
    /// oldest.
    awaiting_reply: HashMap<NodeId, VecDeque<oneshot::Sender<Rpc>>>,
    observer: Arc<dyn Observer>,
    /// The buffer effects are carried out from (kept, so that a busy node
    /// does not allocate one per round).
    effects: Vec<Effect<Reply<M::Output>, M::Output>>,
}

impl<T: Transport, M: StateMachine> RaftNode<T, M> {
    /// Wraps `core` and its `state_machine` (which has applied everything up
    /// to `core.applied_index()`), writing to `storage` as `disk` says.
    /// Replies from peers and write completions arrive on the returned
    /// [`NodeInbox`].
    pub fn new(
        core: RaftCore,
        state_machine: M,
        storage: Box<dyn Storage>,
        transport: T,
        disk: DiskMode,
    ) -> std::io::Result<(Self, NodeInbox)> {
        let (peer_tx, peer_events) = mpsc::unbounded_channel();
        let (done_tx, write_done) = mpsc::unbounded_channel();
        let disk = match disk {
            DiskMode::Background => LogWriter::start(storage, done_tx)?,
            DiskMode::Inline => LogWriter::inline(storage, done_tx),
        };
        let node = RaftNode {
            driver: Driver::new(core, state_machine),
            disk,
            transport: Arc::new(transport),
            peer_events: peer_tx,
            awaiting_reply: HashMap::new(),
            observer: Arc::new(NoopObserver),
            effects: Vec::new(),
        };
        Ok((
            node,
            NodeInbox {
                peer_events,
                write_done,
            },
        ))
    }

    /// Reports what the node does to `observer` (metrics).
    pub fn set_observer(&mut self, observer: Arc<dyn Observer>) {
        self.observer = observer;
    }

    pub fn observer(&self) -> &Arc<dyn Observer> {
        &self.observer
    }

    pub fn core(&self) -> &RaftCore {
        self.driver.core()
    }

    pub fn driver(&self) -> &Driver<M, Reply<M::Output>> {
        &self.driver
    }

    pub fn tick(&mut self) {
        self.driver.tick();
    }

    /// Whether `from` may send this node requests: another voter.
    /// Any other server may ask: with membership changes (thesis §4) a
    /// request can come from a leader this log does not list yet (a node
    /// that is joining knows no one). The core's term rules keep stale and
    /// removed servers harmless.
    fn accepts_requests_from(&self, from: NodeId) -> bool {
        from != self.core().id() && from != 0
    }

    /// A request from a peer: step it; the reply is sent from
    /// `process_ready` once what it depends on is durable.
    pub fn receive(&mut self, incoming: IncomingRpc) {
        self.observer.message_received(incoming.from, &incoming.rpc);
        if !incoming.rpc.is_request() || !self.accepts_requests_from(incoming.from) {
            // Not for us: dropping the reply sender tells the caller.
            tracing::debug!(from = incoming.from, "dropping request from a non-member");
            return;
        }
        let me = self.core().id();
        self.awaiting_reply
            .entry(incoming.from)
            .or_default()
            .push_back(incoming.reply);
        self.driver.step(Message {
            from: incoming.from,
            to: me,
            rpc: incoming.rpc,
        });
    }

    /// A chunk of InstallSnapshot (§7): the core's verdict, for the server,
    /// which keeps the bytes. The reply must follow with
    /// [`RaftNode::reply_when_durable`], which may be later, after other
    /// requests from the same peer were answered: the chunk's reply slot
    /// travels with it instead of queueing with theirs. `None` when the
    /// request is not for this node (dropped, which tells the caller).
    pub fn receive_snapshot_chunk(&mut self, incoming: IncomingRpc) -> Option<SnapshotChunk> {
        self.observer.message_received(incoming.from, &incoming.rpc);
        let IncomingRpc { from, rpc, reply } = incoming;
        let Rpc::InstallSnapshot(args) = rpc else {
            return None;
        };
        if !self.accepts_requests_from(from) {
            tracing::debug!(from, "dropping a snapshot chunk from a non-member");
            return None;
        }
        let verdict = self.driver.snapshot_chunk(from, &args);
        Some(SnapshotChunk {
            from,
            args,
            verdict,
            reply: ReplySlot { to: from, reply },
        })
    }

    /// Sends `rpc` back on `slot` once everything written so far is
    /// durable.
    pub fn reply_when_durable(&mut self, slot: ReplySlot, rpc: Rpc) {
        let (me, to) = (self.core().id(), slot.to);
        // Replies to earlier requests from `to` are parked in the driver
        // before this one (`send_when_durable` runs the pending Ready
        // first), and their slots are ahead of this one in the queue: the
        // two stay in step.
        self.awaiting_reply
            .entry(to)
            .or_default()
            .push_back(slot.reply);
        self.driver.send_when_durable(Message { from: me, to, rpc });
    }

    /// Proposes `command`; `reply` gets the state machine's output once it
    /// is applied (or why not).
    pub fn propose(&mut self, command: Vec<u8>, reply: Reply<M::Output>) {
        self.driver.propose(command, reply);
    }

    /// A linearizable read (thesis §6.4).
    pub fn read(&mut self, query: Vec<u8>, reply: Reply<M::Output>) {
        self.driver.read(query, reply);
    }

    /// Leader: appends a configuration change (thesis §4.1).
    pub fn propose_conf_change(
        &mut self,
        change: &ConfChange,
    ) -> Result<(LogIndex, Term), MembershipError> {
        self.driver.propose_conf_change(change)
    }

    /// Leader: starts a leadership transfer to `target` (thesis §3.10).
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), TransferError> {
        self.driver.transfer_leadership(target)
    }

    pub fn set_may_vote(&mut self, may_vote: bool) {
        self.driver.set_may_vote(may_vote);
    }

    /// The transport this node sends with (the snapshot sender uses it too).
    pub fn transport(&self) -> &Arc<T> {
        &self.transport
    }

    /// A sender for peer events, for tasks that talk to peers on the
    /// node's behalf (snapshot transfers report their end through it).
    pub fn peer_event_sender(&self) -> mpsc::UnboundedSender<PeerEvent> {
        self.peer_events.clone()
    }

    /// A disk write completed: count what is now durable. An error means
    /// storage failed: stop.
    pub fn write_done(&mut self, done: WriteDone) -> Result<(), StorageError> {
        done.result?;
        self.observer.persisted(done.entries, done.elapsed);
        self.driver.durable(done.seq);
        Ok(())
    }

    /// A peer answered, or could not be reached, or a snapshot transfer
    /// ended.
    pub fn handle_peer_event(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Reply(m) => {
                self.observer.message_received(m.from, &m.rpc);
                self.driver.step(m)
            }
            PeerEvent::Unreachable(peer) => self.driver.report_unreachable(peer),
            PeerEvent::SnapshotSent {
                peer,
                index,
                success,
            } => self.driver.snapshot_sent(peer, index, success),
        }
    }

    /// §7: a snapshot up to `index` is durable; forget the log before it.
    pub fn compact_log(&mut self, index: LogIndex) -> bool {
        self.driver.compact_log(index)
    }

    /// §7: see [`Driver::take_snapshot`].
    pub fn take_snapshot(
        &mut self,
    ) -> Result<(LogIndex, Term, Box<dyn SnapshotWriter>), SnapshotRefusal> {
        self.driver.take_snapshot()
    }

    /// §7: see [`Driver::install_snapshot`].
    pub fn install_snapshot(
        &mut self,
        index: LogIndex,
        term: Term,
        membership: Membership,
        image: &mut dyn std::io::Read,
    ) -> std::io::Result<bool> {
        self.driver.install_snapshot(index, term, membership, image)
    }

    /// Every waiting client gets `Stopped`.
    pub fn stop(&mut self) {
        self.driver.stop();
        for effect in self.driver.take_effects() {
            if let Effect::Answer(reply, result) = effect {
                let _ = reply.send(result);
            }
        }
    }

    /// Runs the driver until it has nothing more to do, carrying out its
    /// effects. A storage error is returned at once: the caller must stop
    /// the node (fail-stop), since continuing could acknowledge what is not
    /// durable.
    pub fn process_ready(&mut self) -> Result<Output, StorageError> {
        let mut out = Output::default();
        let mut effects = std::mem::take(&mut self.effects);
        loop {
            // IO first (writes start, messages leave), then the state
            // machine's work, then again whatever that caused.
            self.driver.process_ready();
            if !self.driver.has_effects() {
                if !self.driver.has_committed() {
                    self.effects = effects;
                    return Ok(out);
                }
                self.driver.apply_committed();
            }
            self.driver.swap_effects(&mut effects);
            for effect in effects.drain(..) {
                match effect {
                    Effect::Send(m) | Effect::SendDurable(m) => self.send(m),
                    Effect::Disk(op) => self.write(op)?,
                    Effect::Answer(reply, result) => {
                        // The client may have given up; nothing to do then.
                        let _ = reply.send(result);
                    }
                    Effect::SendSnapshot(peer) => out.snapshots_to_send.push(peer),
                    Effect::Event(event) => {
                        let Event::StateChanged {
                            state,
                            term,
                            leader,
                        } = &event;
                        self.observer.state_changed(*state, *term, *leader);
                        out.events.push(event);
                    }
                    Effect::ReadIndex { .. } | Effect::Applied(_) => {}
                }
            }
        }
    }

    fn write(&mut self, op: DiskOp) -> Result<(), StorageError> {
        if self.disk.submit(op) {
            Ok(())
        } else {
            Err(writer_gone())
        }
    }

    fn send(&mut self, m: Message) {
        self.observer.message_sent(m.to, &m.rpc);
        if !m.rpc.is_request() {
            match self
                .awaiting_reply
                .get_mut(&m.to)
                .and_then(|q| q.pop_front())
            {
                // The requester may have given up; nothing to do then.
                Some(reply) => {
                    let _ = reply.send(m.rpc);
                }
                None => tracing::debug!(to = m.to, "reply with no waiting request"),
            }
            return;
        }
        let transport = Arc::clone(&self.transport);
        let events = self.peer_events.clone();
        let me = m.from;
        let to = m.to;
        tokio::spawn(async move {
            let event = match transport.send(to, m.rpc).await {
                // Only a reply may be stepped as one: a request here would
                // take the place of a real request's reply (`awaiting_reply`).
                Ok(rpc) if !rpc.is_request() => PeerEvent::Reply(Message {
                    from: to,
                    to: me,
                    rpc,
                }),
                Ok(rpc) => {
                    tracing::warn!(to, "node {to} answered a request with {}", rpc.kind());
                    PeerEvent::Unreachable(to)
                }
                Err(e) => {
                    tracing::trace!(to, error = %e, "rpc failed");
                    PeerEvent::Unreachable(to)
                }
            };
            // The node may have stopped; then nobody needs the reply.
            let _ = events.send(event);
        });
    }
}

fn writer_gone() -> StorageError {
    StorageError::Invalid("the log writer thread has stopped after a storage failure".into())
}
