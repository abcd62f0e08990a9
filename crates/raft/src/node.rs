//! `RaftNode`: the async driver around a [`RaftCore`].
//!
//! The core decides; the node does the IO: it persists what a [`Ready`] says
//! must be durable, sends messages (through the [`Transport`], each RPC on
//! its own task so one slow or dead peer never delays the others), and
//! routes replies back in. This mirrors etcd's `Node` around `RawNode`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::core::{Event, RaftCore, ReadState, Ready};
use crate::log_writer::{Job, LogWriter, WriteDone};
use crate::message::{Message, Rpc};
use crate::observer::{NoopObserver, Observer};
use crate::storage::{Storage, StorageError};
use crate::transport::{IncomingRpc, Transport};
use crate::types::{LogEntry, LogIndex, NodeId, Term};

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

/// What a round of [`RaftNode::process_ready`] produced for the layer above.
#[derive(Debug, Default)]
pub struct Output {
    pub committed_entries: Vec<LogEntry>,
    pub read_states: Vec<ReadState>,
    pub events: Vec<Event>,
    /// Followers that need the current snapshot streamed to them.
    pub snapshots_to_send: Vec<NodeId>,
}

/// Where the node's durable writes go.
enum Disk {
    /// Written inline: `process_ready` returns once everything is durable.
    Inline(Box<dyn Storage>),
    /// Written by a background thread (see [`crate::log_writer`]).
    Background(Background),
}

struct Background {
    writer: LogWriter,
    /// Number of the last job handed to the writer.
    issued: u64,
    /// Every job up to this number is durable.
    durable: u64,
    /// Readys whose effects wait for their writes, oldest first.
    pending: VecDeque<PendingReady>,
}

/// What a Ready still owes once the writes up to `seq` are durable.
struct PendingReady {
    seq: u64,
    last_entry: Option<(LogIndex, Term)>,
    messages: Vec<Message>,
}

pub struct RaftNode<T: Transport> {
    core: RaftCore,
    disk: Disk,
    transport: Arc<T>,
    peer_events: mpsc::UnboundedSender<PeerEvent>,
    /// Incoming requests waiting for their reply, per peer, oldest first.
    /// The core answers every request exactly once and in the order it was
    /// stepped, so the next reply addressed to a peer belongs to the oldest.
    awaiting_reply: HashMap<NodeId, VecDeque<oneshot::Sender<Rpc>>>,
    observer: Arc<dyn Observer>,
}

impl<T: Transport> RaftNode<T> {
    /// Wraps `core`; replies from peers arrive on the returned receiver and
    /// go back in through [`RaftNode::handle_peer_event`].
    pub fn new(
        core: RaftCore,
        storage: Box<dyn Storage>,
        transport: T,
    ) -> (Self, mpsc::UnboundedReceiver<PeerEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            RaftNode {
                core,
                disk: Disk::Inline(storage),
                transport: Arc::new(transport),
                peer_events: tx,
                awaiting_reply: HashMap::new(),
                observer: Arc::new(NoopObserver),
            },
            rx,
        )
    }

    /// Reports what the node does to `observer` (metrics).
    pub fn set_observer(&mut self, observer: Arc<dyn Observer>) {
        self.observer = observer;
    }

    pub fn observer(&self) -> &Arc<dyn Observer> {
        &self.observer
    }

    pub fn core(&self) -> &RaftCore {
        &self.core
    }

    pub fn core_mut(&mut self) -> &mut RaftCore {
        &mut self.core
    }

    pub fn tick(&mut self) {
        self.core.tick();
    }

    /// A request from a peer: step it; the reply is sent from `process_ready`
    /// once what it depends on is durable.
    pub fn receive(&mut self, incoming: IncomingRpc) {
        let me = self.core.id();
        self.observer.message_received(incoming.from, &incoming.rpc);
        if !incoming.rpc.is_request()
            || incoming.from == me
            || !self.core.voters().contains(&incoming.from)
        {
            // Not for us: dropping the reply sender tells the caller.
            tracing::debug!(from = incoming.from, "dropping request from a non-member");
            return;
        }
        self.awaiting_reply
            .entry(incoming.from)
            .or_default()
            .push_back(incoming.reply);
        self.core.step(Message {
            from: incoming.from,
            to: me,
            rpc: incoming.rpc,
        });
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

    /// Moves storage onto a background writer thread: from now on
    /// `process_ready` returns without waiting for the disk, and each
    /// completion arriving on the returned receiver must be passed to
    /// [`RaftNode::write_done`]. Meanwhile the node keeps sending, taking
    /// proposals and stepping replies; whatever waits for durability (the
    /// leader counting itself, replies to votes and appends) waits.
    pub fn start_background_writer(
        &mut self,
    ) -> std::io::Result<mpsc::UnboundedReceiver<WriteDone>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let placeholder = Disk::Inline(Box::new(crate::storage::MemoryStorage::new()));
        match std::mem::replace(&mut self.disk, placeholder) {
            Disk::Inline(storage) => {
                let writer = LogWriter::start(storage, tx)?;
                self.disk = Disk::Background(Background {
                    writer,
                    issued: 0,
                    durable: 0,
                    pending: VecDeque::new(),
                });
            }
            background => self.disk = background,
        }
        Ok(rx)
    }

    /// Runs a storage operation in order with the writes before it.
    fn storage_op(
        &mut self,
        inline: impl FnOnce(&mut dyn Storage) -> Result<(), StorageError>,
        job: impl FnOnce(u64) -> Job,
    ) -> Result<(), StorageError> {
        match &mut self.disk {
            Disk::Inline(storage) => inline(storage.as_mut()),
            Disk::Background(bg) => {
                bg.issued += 1;
                if bg.writer.submit(job(bg.issued)) {
                    Ok(())
                } else {
                    Err(writer_gone())
                }
            }
        }
    }

    /// Waits (blocking) until every write handed out so far is durable.
    /// For the rare paths that must answer only after the disk did (a
    /// snapshot chunk that changed the term, an installed snapshot).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        match &mut self.disk {
            Disk::Inline(_) => Ok(()),
            Disk::Background(bg) => {
                let (tx, rx) = std::sync::mpsc::channel();
                if !bg.writer.submit(Job::Barrier(tx)) {
                    return Err(writer_gone());
                }
                rx.recv().map_err(|_| writer_gone())?
            }
        }
    }

    /// §7: a snapshot up to `index` is durable; forget the log before it, in
    /// memory and on disk. Returns whether anything was compacted.
    pub fn compact_log(&mut self, index: LogIndex) -> Result<bool, StorageError> {
        if !self.core.compact(index) {
            return Ok(false);
        }
        self.storage_op(|s| s.compact(index), |seq| Job::Compact { seq, index })?;
        Ok(true)
    }

    /// §7: a snapshot received from the leader is durable and the state
    /// machine was restored from it: make the log start after it, in memory
    /// and on disk (durably, before returning). Returns false when the
    /// snapshot was stale (no change).
    pub fn install_snapshot(&mut self, index: LogIndex, term: Term) -> Result<bool, StorageError> {
        match self.core.restore_snapshot(index, term) {
            None => return Ok(false),
            Some(true) => {
                self.storage_op(|s| s.compact(index), |seq| Job::Compact { seq, index })?
            }
            Some(false) => self.storage_op(
                |s| s.reset(index, term),
                |seq| Job::Reset { seq, index, term },
            )?,
        }
        self.sync()?;
        Ok(true)
    }

    /// A background write completed: count what is now durable and send
    /// what was waiting for it. An error means storage failed: stop.
    pub fn write_done(&mut self, done: WriteDone) -> Result<(), StorageError> {
        done.result?;
        self.observer.persisted(done.entries, done.elapsed);
        if let Disk::Background(bg) = &mut self.disk {
            bg.durable = bg.durable.max(done.seq);
        }
        self.release_durable();
        Ok(())
    }

    /// Sends the replies (and advances the core) of every Ready whose
    /// writes are all durable.
    fn release_durable(&mut self) {
        loop {
            let Disk::Background(bg) = &mut self.disk else {
                return;
            };
            if bg.pending.front().is_none_or(|p| p.seq > bg.durable) {
                return;
            }
            let Some(p) = bg.pending.pop_front() else {
                return;
            };
            self.core.persisted(p.last_entry);
            for m in p.messages {
                self.send(m);
            }
        }
    }

    pub fn handle_peer_event(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Reply(m) => {
                self.observer.message_received(m.from, &m.rpc);
                self.core.step(m)
            }
            PeerEvent::Unreachable(peer) => self.core.report_unreachable(peer),
            PeerEvent::SnapshotSent {
                peer,
                index,
                success,
            } => self.core.snapshot_sent(peer, index, success),
        }
    }

    /// Runs every pending [`Ready`] through the IO in the order the protocol
    /// demands. A storage error is returned at once: the caller must stop the
    /// node (fail-stop), since continuing could acknowledge what is not durable.
    pub fn process_ready(&mut self) -> Result<Output, StorageError> {
        let mut out = Output::default();
        while self.core.has_ready() {
            let mut rd: Ready = self.core.ready();
            // Moved out, not cloned: `advance` below does not look at them.
            for m in std::mem::take(&mut rd.messages) {
                self.send(m);
            }
            for Event::StateChanged {
                state,
                term,
                leader,
            } in &rd.events
            {
                self.observer.state_changed(*state, *term, *leader);
            }
            let must_write = rd.hard_state.is_some() || !rd.entries.is_empty();
            match &mut self.disk {
                Disk::Inline(storage) => {
                    if must_write {
                        let started = std::time::Instant::now();
                        storage.persist(rd.hard_state.as_ref(), &rd.entries)?;
                        self.observer.persisted(rd.entries.len(), started.elapsed());
                    }
                    self.core.advance(&rd);
                    for m in rd.persisted_messages {
                        self.send(m);
                    }
                }
                Disk::Background(bg) => {
                    let last_entry = rd.entries.last().map(|e| (e.index, e.term));
                    if must_write {
                        bg.issued += 1;
                        let job = Job::Persist {
                            seq: bg.issued,
                            hard_state: rd.hard_state,
                            entries: rd.entries,
                        };
                        if !bg.writer.submit(job) {
                            return Err(writer_gone());
                        }
                    }
                    // Even a Ready with nothing to write waits for the
                    // writes before it: its replies may depend on them.
                    bg.pending.push_back(PendingReady {
                        seq: bg.issued,
                        last_entry,
                        messages: rd.persisted_messages,
                    });
                }
            }
            out.committed_entries.extend(rd.committed_entries);
            out.read_states.extend(rd.read_states);
            out.events.extend(rd.events);
            out.snapshots_to_send.extend(rd.snapshots_to_send);
            self.release_durable();
        }
        Ok(out)
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
            let result = match m.rpc {
                Rpc::RequestVote(args) => transport
                    .request_vote(to, args)
                    .await
                    .map(Rpc::RequestVoteReply),
                Rpc::AppendEntries(args) => transport
                    .append_entries(to, args)
                    .await
                    .map(Rpc::AppendEntriesReply),
                _ => return,
            };
            let event = match result {
                Ok(rpc) => PeerEvent::Reply(Message {
                    from: to,
                    to: me,
                    rpc,
                }),
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
