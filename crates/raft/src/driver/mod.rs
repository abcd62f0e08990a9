//! `Driver`: the one loop between the core and the world.
//!
//! [`RaftCore`] decides and hands out a [`Ready`]; something must then write
//! it to disk, send its messages, apply what committed and answer the
//! clients, in the order Figure 2 demands. That something is this driver,
//! and there is only one: the production node ([`crate::RaftNode`]), the
//! integration tests and the simulator (`raftkv sim`) all run it, so what the
//! simulator proves about ordering, durability and client answers is proved
//! about the code that ships.
//!
//! Like the core, the driver does no IO and reads no clock. Its inputs are
//! method calls (a tick, a message, a proposal, "the disk is durable up to
//! write 7"); its outputs are [`Effect`]s, taken with
//! [`Driver::take_effects`] and carried out by whoever owns the world:
//!
//! ```text
//!  tick / step / propose / read ─▶ ┌────────┐ ─▶ Send, Disk(op #n), Answer, ...
//!                                  │ Driver │
//!  durable(n) ◀── the disk says ── └────────┘ ─▶ SendDurable (what waited for #n)
//! ```
//!
//! The disk path is one path: every write is numbered, and whatever depends
//! on it (the leader counting its own copy, thesis §10.2.1; vote and append
//! replies, Figure 2) waits for [`Driver::durable`] with that number. A disk
//! that writes inline reports at once; a background writer reports later;
//! the simulator's disk reports when its virtual fsync completes.

mod clients;

use std::collections::VecDeque;

pub use self::clients::ClientError;
use self::clients::Waiters;

use crate::core::{
    ConfChange, Event, Membership, MembershipError, RaftCore, ReadState, Ready,
    SnapshotChunkVerdict, TransferError,
};
use crate::message::{InstallSnapshotArgs, Message};
use crate::state_machine::StateMachine;
use crate::types::{EntryKind, HardState, LogEntry, LogIndex, NodeId, Term};

/// A write to stable storage, numbered in the order it must happen. When
/// every op up to `seq` is durable, call [`Driver::durable`] with `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskOp {
    /// The hard state (if it changed) and new entries, which may replace a
    /// suffix of the log (`Storage::persist`).
    Persist {
        seq: u64,
        hard_state: Option<HardState>,
        entries: Vec<LogEntry>,
    },
    /// §7: a durable snapshot covers the log up to `index`: drop it.
    Compact { seq: u64, index: LogIndex },
    /// §7: an installed snapshot replaced the whole log, which now ends at
    /// `index` of `term`.
    Reset {
        seq: u64,
        index: LogIndex,
        term: Term,
    },
}

impl DiskOp {
    pub fn seq(&self) -> u64 {
        match self {
            DiskOp::Persist { seq, .. }
            | DiskOp::Compact { seq, .. }
            | DiskOp::Reset { seq, .. } => *seq,
        }
    }
}

/// Something the driver's owner must do, in the order given.
#[derive(Debug)]
pub enum Effect<W, O> {
    /// Send now: it promises nothing about this node's disk (a leader's
    /// AppendEntries may leave before its own write, thesis §10.2.1).
    Send(Message),
    /// Send now: the disk writes it depends on are durable (Figure 2:
    /// "respond to RPCs only after updating stable storage").
    SendDurable(Message),
    /// Write this, after every op before it.
    Disk(DiskOp),
    /// A client's request ended.
    Answer(W, Result<O, ClientError>),
    /// Read `id` learned its read index (thesis §6.4 step 3); it is served
    /// once the state machine has applied that far.
    ReadIndex { id: u64, index: LogIndex },
    /// Leader: stream the newest snapshot to this follower, then call
    /// [`Driver::snapshot_sent`].
    SendSnapshot(NodeId),
    /// Role, term or leader changed.
    Event(Event),
    /// An entry was applied (only after [`Driver::record_applied`]: the
    /// simulator checks State Machine Safety with it).
    Applied(LogEntry),
}

/// Sends that wait for the disk: they go once every op up to `seq` is
/// durable. Readys become durable in the order they were handed out.
struct AwaitingDisk {
    seq: u64,
    /// The Ready's last entry, for the core's own match index.
    last_entry: Option<(LogIndex, Term)>,
    messages: Vec<Message>,
}

/// The core, the state machine, the clients waiting on them, and the disk
/// writes in flight. See the module documentation.
pub struct Driver<M: StateMachine, W> {
    core: RaftCore,
    state_machine: M,
    last_applied: LogIndex,
    waiters: Waiters<W>,
    /// Number of the last disk op handed out.
    issued: u64,
    /// Every op up to this number is durable.
    durable: u64,
    awaiting_disk: VecDeque<AwaitingDisk>,
    effects: Vec<Effect<W, M::Output>>,
    /// Committed entries and confirmed reads of the Readys handled, in
    /// order, until [`Driver::apply_committed`].
    to_apply: Vec<(Vec<LogEntry>, Vec<ReadState>)>,
    record_applied: bool,
    /// Applied since the last snapshot: entries and bytes (the snapshot
    /// policy's counters).
    applied_since_snapshot: (u64, u64),
}

impl<M: StateMachine, W> Driver<M, W> {
    /// Drives `core`, whose state machine `state_machine` has applied
    /// everything up to `core.applied_index()` (a restored snapshot).
    pub fn new(core: RaftCore, state_machine: M) -> Self {
        Driver {
            last_applied: core.applied_index(),
            core,
            state_machine,
            waiters: Waiters::new(),
            issued: 0,
            durable: 0,
            awaiting_disk: VecDeque::new(),
            effects: Vec::new(),
            to_apply: Vec::new(),
            record_applied: false,
            applied_since_snapshot: (0, 0),
        }
    }

    pub fn core(&self) -> &RaftCore {
        &self.core
    }

    pub fn state_machine(&self) -> &M {
        &self.state_machine
    }

    /// The index of the last entry applied to the state machine.
    pub fn last_applied(&self) -> LogIndex {
        self.last_applied
    }

    /// Reports every applied entry as [`Effect::Applied`] from now on.
    pub fn record_applied(&mut self, on: bool) {
        self.record_applied = on;
    }

    /// Whether effects wait to be taken.
    pub fn has_effects(&self) -> bool {
        !self.effects.is_empty()
    }

    /// What to do, in order. Call after every batch of inputs (after
    /// [`Driver::process_ready`]).
    pub fn take_effects(&mut self) -> Vec<Effect<W, M::Output>> {
        std::mem::take(&mut self.effects)
    }

    /// Like [`Driver::take_effects`], into `buffer` (emptied first), which
    /// the driver keeps in exchange: a busy owner then allocates neither.
    pub fn swap_effects(&mut self, buffer: &mut Vec<Effect<W, M::Output>>) {
        buffer.clear();
        std::mem::swap(&mut self.effects, buffer);
    }

    // ----- Inputs --------------------------------------------------------------

    /// One tick of the logical clock (`crate::clock` decides when).
    pub fn tick(&mut self) {
        self.core.tick();
    }

    /// A message from a peer: a request or a reply.
    pub fn step(&mut self, message: Message) {
        self.core.step(message);
    }

    /// The transport could not reach `peer`.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        self.core.report_unreachable(peer);
    }

    /// A snapshot transfer to `peer` ended.
    pub fn snapshot_sent(&mut self, peer: NodeId, index: LogIndex, success: bool) {
        self.core.snapshot_sent(peer, index, success);
    }

    /// Gives or withholds the right to vote and campaign
    /// (`crate::incarnation`).
    pub fn set_may_vote(&mut self, may_vote: bool) {
        self.core.set_may_vote(may_vote);
    }

    /// Proposes `command`; `waiter` is answered once it is applied (or
    /// lost). Returns where it went in the log, or `None` when it was
    /// refused (the waiter has its answer already).
    pub fn propose(&mut self, command: Vec<u8>, waiter: W) -> Option<(LogIndex, Term)> {
        match self.core.propose(command) {
            Ok((index, term)) => {
                if let Some(old) = self.waiters.proposed(index, term, waiter) {
                    self.answer(old, Err(ClientError::LeadershipLost));
                }
                Some((index, term))
            }
            Err(e) => {
                self.answer(waiter, Err(e.into()));
                None
            }
        }
    }

    /// Leader: appends the configuration `change` makes (thesis §4.1; see
    /// [`RaftCore::propose_conf_change`]). The caller learns that it is done
    /// from the commit index (and the entry's term at that index), as for
    /// any entry; nothing is answered here.
    pub fn propose_conf_change(
        &mut self,
        change: &ConfChange,
    ) -> Result<(LogIndex, Term), MembershipError> {
        self.core.propose_conf_change(change)
    }

    /// Leader: starts handing leadership to `target` (thesis §3.10; see
    /// [`RaftCore::transfer_leadership`]).
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), TransferError> {
        self.core.transfer_leadership(target)
    }

    /// A linearizable read (thesis §6.4): `waiter` is answered with the
    /// state machine's reply to `query` once the leader confirmed its
    /// leadership and applied everything committed before the read began.
    /// Returns the read's id (see [`Effect::ReadIndex`]), or `None` when it
    /// was refused (the waiter has its answer already).
    pub fn read(&mut self, query: Vec<u8>, waiter: W) -> Option<u64> {
        let id = self.waiters.next_read_id();
        match self.core.read_index(id) {
            Ok(()) => {
                self.waiters.read_unconfirmed(id, query, waiter);
                Some(id)
            }
            Err(e) => {
                self.answer(waiter, Err(e.into()));
                None
            }
        }
    }

    /// Every disk op up to `seq` is durable: send what waited for it.
    pub fn durable(&mut self, seq: u64) {
        self.durable = self.durable.max(seq);
        while self
            .awaiting_disk
            .front()
            .is_some_and(|a| a.seq <= self.durable)
        {
            let Some(a) = self.awaiting_disk.pop_front() else {
                break;
            };
            self.core.persisted(a.last_entry);
            self.effects
                .extend(a.messages.into_iter().map(Effect::SendDurable));
        }
    }

    /// Sends `message` once everything written so far is durable (a reply
    /// the driver's owner built, e.g. to a snapshot chunk).
    pub fn send_when_durable(&mut self, message: Message) {
        self.process_ready();
        self.awaiting_disk.push_back(AwaitingDisk {
            seq: self.issued,
            last_entry: None,
            messages: vec![message],
        });
        self.durable(self.durable);
    }

    /// Every waiting client gets `Stopped` (the node is going away).
    pub fn stop(&mut self) {
        for w in self.waiters.drain() {
            self.answer(w, Err(ClientError::Stopped));
        }
    }

    // ----- The Ready loop ------------------------------------------------------

    /// Runs every pending [`Ready`] up to its IO: messages out, writes
    /// numbered and handed out, durable-only messages held until their
    /// writes are reported. What committed waits for
    /// [`Driver::apply_committed`], which the owner calls once it has
    /// carried out these effects: a disk write then starts before the state
    /// machine's work, not after it (on a busy follower, applying a batch
    /// delays its fsync, its reply and so the leader's commit).
    pub fn process_ready(&mut self) {
        while self.core.has_ready() {
            let rd = self.core.ready();
            self.handle_ready(rd);
        }
    }

    /// Applies what the Readys handed out so far committed, then answers
    /// the reads whose read index the state machine has reached.
    pub fn apply_committed(&mut self) {
        for (entries, read_states) in std::mem::take(&mut self.to_apply) {
            self.apply(entries);
            self.confirm_reads(read_states);
        }
    }

    /// Whether [`Driver::apply_committed`] has anything to do.
    pub fn has_committed(&self) -> bool {
        !self.to_apply.is_empty()
    }

    fn handle_ready(&mut self, rd: Ready) {
        let Ready {
            hard_state,
            entries,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
            events,
            snapshots_to_send,
        } = rd;
        self.effects.extend(messages.into_iter().map(Effect::Send));
        self.effects.extend(events.into_iter().map(Effect::Event));
        let last_entry = entries.last().map(|e| (e.index, e.term));
        if hard_state.is_some() || !entries.is_empty() {
            self.issued += 1;
            self.effects.push(Effect::Disk(DiskOp::Persist {
                seq: self.issued,
                hard_state,
                entries,
            }));
        }
        // Even a Ready with nothing to write waits for the writes before
        // it: its replies may depend on them.
        self.awaiting_disk.push_back(AwaitingDisk {
            seq: self.issued,
            last_entry,
            messages: persisted_messages,
        });
        self.effects
            .extend(snapshots_to_send.into_iter().map(Effect::SendSnapshot));
        self.durable(self.durable);
        if !committed_entries.is_empty() || !read_states.is_empty() {
            self.to_apply.push((committed_entries, read_states));
        }
    }

    /// Figure 2: "if commitIndex > lastApplied: increment lastApplied, apply
    /// log[lastApplied] to state machine". Committed entries are durable on
    /// a majority, so applying them before this node's own copy is durable
    /// is safe: only the leader answers writes, and it commits only what it
    /// holds durably itself (§10.2.1).
    fn apply(&mut self, entries: Vec<LogEntry>) {
        let last = entries.last().map(|e| (e.index, e.term));
        for entry in entries {
            if entry.index <= self.last_applied {
                // Covered by a snapshot installed since it was handed out.
                continue;
            }
            let output = match entry.kind {
                EntryKind::Normal => Some(self.state_machine.apply(entry.index, &entry.data)),
                // Raft's own entries: a configuration is in force from the
                // moment it is appended (§4.1), not applied.
                EntryKind::Noop | EntryKind::ConfChange => None,
            };
            self.last_applied = entry.index;
            self.applied_since_snapshot.0 += 1;
            self.applied_since_snapshot.1 += entry.size() as u64;
            // The waiter for this index learns its fate: same term means
            // the very entry it proposed (Log Matching, §5.3); another term
            // means a later leader overwrote it.
            if let Some((w, same)) = self.waiters.applied(entry.index, entry.term) {
                let result = match output {
                    Some(output) if same => Ok(output),
                    _ => Err(ClientError::LeadershipLost),
                };
                self.answer(w, result);
            }
            if self.record_applied {
                self.effects.push(Effect::Applied(entry));
            }
        }
        if let Some((index, term)) = last {
            for w in self.waiters.doomed(index, term) {
                self.answer(w, Err(ClientError::LeadershipLost));
            }
        }
        self.serve_reads();
    }

    fn confirm_reads(&mut self, read_states: Vec<ReadState>) {
        for rs in read_states {
            match rs.result {
                Ok(index) => {
                    if self.waiters.read_confirmed(rs.id, index) {
                        self.effects.push(Effect::ReadIndex { id: rs.id, index });
                    }
                }
                Err(e) => {
                    if let Some(w) = self.waiters.read_refused(rs.id) {
                        self.answer(w, Err(e.into()));
                    }
                }
            }
        }
        self.serve_reads();
    }

    /// Thesis §6.4 step 4: serve each read once the state machine has
    /// applied at least its read index.
    fn serve_reads(&mut self) {
        while let Some((query, w)) = self.waiters.next_servable(self.last_applied) {
            let output = self.state_machine.query(&query);
            self.answer(w, Ok(output));
        }
    }

    fn answer(&mut self, waiter: W, result: Result<M::Output, ClientError>) {
        self.effects.push(Effect::Answer(waiter, result));
    }

    // ----- Snapshots (§7) ------------------------------------------------------

    /// Entries and bytes applied since the last snapshot was taken or
    /// installed (for a snapshot policy).
    pub fn applied_since_snapshot(&self) -> (u64, u64) {
        self.applied_since_snapshot
    }

    /// A snapshot of the state at [`Driver::last_applied`] is being taken:
    /// the policy's counters start again. Returns the image and the index
    /// and term it covers, or `None` when there is nothing new to take or
    /// the state machine cannot snapshot.
    pub fn take_snapshot(
        &mut self,
    ) -> Result<
        (
            LogIndex,
            Term,
            Box<dyn crate::state_machine::SnapshotWriter>,
        ),
        SnapshotRefusal,
    > {
        let index = self.last_applied;
        if index == 0 || index <= self.core.snapshot_index() {
            return Err(SnapshotRefusal::NothingNew(self.core.snapshot_index()));
        }
        let Some(term) = self.core.term_at(index) else {
            return Err(SnapshotRefusal::Failed(format!(
                "no term known for index {index}"
            )));
        };
        let Some(image) = self.state_machine.snapshot() else {
            return Err(SnapshotRefusal::Failed(
                "this state machine does not support snapshots".into(),
            ));
        };
        self.applied_since_snapshot = (0, 0);
        Ok((index, term, image))
    }

    /// §7: a snapshot up to `index` is durable; forget the log before it,
    /// in the core and (an op) on disk. Returns whether anything was
    /// compacted.
    pub fn compact_log(&mut self, index: LogIndex) -> bool {
        if !self.core.compact(index) {
            return false;
        }
        self.issued += 1;
        self.effects.push(Effect::Disk(DiskOp::Compact {
            seq: self.issued,
            index,
        }));
        true
    }

    /// §7: a chunk of InstallSnapshot from `from`. The core decides (and
    /// may have learned a new term: the answer must wait for it with
    /// [`Driver::send_when_durable`]); the owner keeps the bytes.
    pub fn snapshot_chunk(
        &mut self,
        from: NodeId,
        args: &InstallSnapshotArgs,
    ) -> SnapshotChunkVerdict {
        let verdict = self.core.handle_snapshot_chunk(from, args);
        self.process_ready();
        verdict
    }

    /// §7: a snapshot received from the leader, up to `index` of `term`, is
    /// stored durably: restore the state machine from `image` and make the
    /// log start after it (an op on disk: a reply saying "installed" must
    /// go with [`Driver::send_when_durable`]). Proposals it covers get
    /// `Unknown`: their fate is in the image, which does not say.
    /// Returns false when the snapshot was not ahead of the commit index
    /// (nothing changed).
    pub fn install_snapshot(
        &mut self,
        index: LogIndex,
        term: Term,
        membership: Membership,
        image: &mut dyn std::io::Read,
    ) -> std::io::Result<bool> {
        if index <= self.core.commit_index() {
            return Ok(false);
        }
        self.state_machine.restore(image)?;
        // Checked above: the snapshot is ahead of the commit index, so the
        // core takes it.
        let Some(kept) = self.core.restore_snapshot(index, term, membership) else {
            return Ok(false);
        };
        self.issued += 1;
        let seq = self.issued;
        self.effects.push(Effect::Disk(if kept {
            DiskOp::Compact { seq, index }
        } else {
            DiskOp::Reset { seq, index, term }
        }));
        self.last_applied = index;
        self.applied_since_snapshot = (0, 0);
        for w in self.waiters.covered(index) {
            self.answer(w, Err(ClientError::Unknown));
        }
        self.serve_reads();
        Ok(true)
    }
}

/// Why [`Driver::take_snapshot`] took none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotRefusal {
    /// Nothing applied since the snapshot at this index: it is the answer.
    NothingNew(LogIndex),
    Failed(String),
}
