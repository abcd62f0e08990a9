//! The driver's side of snapshots (§7), as `RaftServer` does it, with crash
//! points between the steps:
//!
//! * **taking a snapshot** (`maybe_snapshot` / `snapshot_written`): the
//!   image of the `KvStore` at the applied index goes to a temp file, which
//!   is fsynced, renamed, the directory fsynced; only then is the log
//!   compacted, in the core and on the disk. Each step is its own event, a
//!   few virtual ms apart, so the node goes on applying meanwhile and a
//!   crash can strike between any two;
//! * **sending** (`send_snapshots` / `stream_snapshot`): for each follower a
//!   Ready names, the newest snapshot file goes out in chunks, one in flight,
//!   each acknowledged; a lost chunk times out and the transfer fails
//!   (`snapshot_sent(peer, 0, false)`: the core asks again later);
//! * **receiving** (`server::receive`: `receive_snapshot_chunk` /
//!   `write_chunk` / `chunk_written` / `install_received`): the core's
//!   `handle_snapshot_chunk` decides; any hard-state change is made durable
//!   before the reply; chunks accumulate in a volatile buffer; the last one
//!   goes to the server's blocking pool (a `SnapshotReceived` event a
//!   little later, while the node handles other messages), which verifies
//!   and stores it durably; then `restore_snapshot` says whether the log is
//!   compacted or reset, the `KvStore` is restored from the image, and the
//!   reply carries the term of that moment;
//! * **restarting** (`restore_latest` / `reconcile`): the newest durable
//!   snapshot plus the log after it.

use raft::{
    InstallSnapshotArgs, InstallSnapshotReply, LogIndex, Membership, Message, NodeId, RaftCore,
    RecoveredState, Rpc, SnapshotChunkVerdict, Term,
};

use super::{Event, World};
use crate::checker::ViolationKind;
use crate::disk::SNAPSHOTS_KEPT;
use crate::faults::Bug;
use crate::snapshot::{CrashPoint, SimSnapshot};
use raftkv_store::KvStore;

/// Chance that the nemesis crashes a node at a crash point it reaches:
/// installs are rarer than snapshots, so their points get more.
fn crash_chance(point: CrashPoint) -> f64 {
    match point {
        CrashPoint::InstallStored | CrashPoint::InstallLogReset => 0.1,
        _ => 0.03,
    }
}
/// A chunk unanswered for this long has failed (a transport's RPC timeout).
const CHUNK_TIMEOUT_US: u64 = 150_000;
/// Refused chunks before a transfer gives up (as `stream_snapshot`).
const MAX_RESTARTS: u32 = 3;

/// A snapshot being written: how far it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The temp file is written, not synced.
    Written,
    /// The temp file is synced, not renamed.
    Synced,
    /// Renamed into place; the directory not yet synced.
    Renamed,
    /// Durable; the log not yet compacted.
    Durable,
}

#[derive(Debug)]
pub(super) struct SnapshotWrite {
    snap: SimSnapshot,
    stage: Stage,
}

impl SnapshotWrite {
    /// Whether a crash now would leave the file in place (a rename is at
    /// least in the page cache).
    pub(super) fn renamed(&self) -> bool {
        matches!(self.stage, Stage::Renamed | Stage::Durable)
    }

    pub(super) fn index(&self) -> LogIndex {
        self.snap.index
    }
}

/// A leader's transfer of one snapshot to one follower.
#[derive(Debug)]
pub(super) struct Transfer {
    /// The leader's term when it started.
    term: Term,
    snap: SimSnapshot,
    /// Where the next chunk starts.
    offset: usize,
    /// The chunk in flight: its rpc id and where it ends.
    awaiting: Option<(u64, usize)>,
    restarts: u32,
}

/// A snapshot arriving in chunks (the temp file of `IncomingSnapshot`).
#[derive(Debug)]
pub(super) struct Incoming {
    index: LogIndex,
    bytes: Vec<u8>,
}

fn answer(term: Term, success: bool, next_offset: u64, installed: bool) -> InstallSnapshotReply {
    InstallSnapshotReply {
        term,
        success,
        next_offset,
        installed,
    }
}

impl World {
    // ----- Crash points ---------------------------------------------------------

    /// Crashes `x` here if a scenario armed this point, or now and then when
    /// the mix has snapshots and node faults. True when it crashed: the
    /// caller must stop touching the node.
    pub(super) fn crash_point(&mut self, x: usize, point: CrashPoint) -> bool {
        let armed = self.armed.remove(&(x, point));
        let random = armed.is_none()
            && self.faults_on
            && self.opts.faults.snapshot
            && self.opts.faults.node_faults()
            && self.rng.chance(crash_chance(point));
        if armed.is_none() && !random {
            return false;
        }
        let id = self.nodes[x].id;
        self.trace(format!("n{id} crash point: {point}"));
        self.crash_points_hit.push((id, point));
        self.stats.snapshot_crashes += 1;
        match armed {
            // A scenario restarts the node itself, after a look at its disk.
            Some(power) => self.crash(x, power),
            None => self.crash_and_schedule_restart(x, true),
        }
        true
    }

    /// Scenario: crash `x` the next time it reaches `point`.
    pub(crate) fn arm_crash(&mut self, x: usize, point: CrashPoint, power: bool) {
        self.armed.insert((x, point), power);
    }

    // ----- Taking snapshots ------------------------------------------------------

    /// The nemesis's "node n snapshots now": a random live node with
    /// something applied since its last snapshot.
    pub(super) fn snapshot_fault(&mut self) {
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|&x| self.can_snapshot(x))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let x = self.rng.pick(&candidates);
        self.start_snapshot(x, "at random");
        self.after_input(x);
    }

    fn can_snapshot(&self, x: usize) -> bool {
        let n = &self.nodes[x];
        let Some(core) = n.core() else {
            return false;
        };
        let newest = n.disk.latest_snapshot().map_or(0, |s| s.index);
        let applied = n.applied();
        n.writing.is_none() && applied > core.snapshot_index() && applied > newest
    }

    /// After applying: the automatic policy, every `snapshot_every` entries.
    /// Also drops an incoming snapshot that the log has overtaken.
    pub(super) fn after_apply_snapshots(&mut self, x: usize) {
        let node = &mut self.nodes[x];
        let applied = node.applied();
        if node
            .incoming
            .as_ref()
            .is_some_and(|inc| inc.index <= applied)
        {
            node.incoming = None;
        }
        let since = node
            .driver
            .as_ref()
            .map_or(0, |d| d.applied_since_snapshot().0);
        if self.snapshot_every > 0 && since >= self.snapshot_every && self.can_snapshot(x) {
            self.start_snapshot(x, "policy");
        }
    }

    /// Scenario: take a snapshot now. False if there is nothing new to take.
    pub(crate) fn snapshot_now(&mut self, x: usize) -> bool {
        if !self.can_snapshot(x) {
            return false;
        }
        self.start_snapshot(x, "asked");
        self.after_input(x);
        true
    }

    /// `maybe_snapshot`: the image is taken here, between two applies, and
    /// written to a temp file; the next steps follow as events.
    fn start_snapshot(&mut self, x: usize, why: &str) {
        let node = &mut self.nodes[x];
        let Some(driver) = node.driver.as_mut() else {
            return;
        };
        // The driver's image would do; the file is built from the same
        // state in key order, so that a replay writes the same bytes.
        let Ok((index, term, _image)) = driver.take_snapshot() else {
            return;
        };
        // As `RaftServer` writes it: with the configuration in force at
        // `index` (format 2), so that whoever installs it learns it.
        let membership = driver.core().membership_at(index).clone();
        let snap = SimSnapshot::take(driver.state_machine().kv(), index, term, &membership);
        let (id, len) = (node.id, snap.len());
        node.writing = Some(SnapshotWrite {
            snap,
            stage: Stage::Written,
        });
        self.trace(format!(
            "n{id} snapshot at {index}/{term} ({why}): {len} bytes to a temp file"
        ));
        if self.has_bug(Bug::CompactBeforeSnapshotDurable) {
            if let Some(driver) = self.nodes[x].driver.as_mut() {
                driver.compact_log(index);
            }
        }
        if self.crash_point(x, CrashPoint::SnapshotWritten) {
            return;
        }
        self.schedule_snapshot_step(x);
    }

    fn schedule_snapshot_step(&mut self, x: usize) {
        let at = self.now + self.rng.range(200, 4_000);
        let inc = self.nodes[x].inc;
        self.schedule(at, Event::SnapshotStep { node: x, inc });
    }

    /// The next step of the snapshot being written: fsync the temp file,
    /// rename it, fsync the directory, compact the log.
    pub(super) fn snapshot_step(&mut self, x: usize) {
        let node = &mut self.nodes[x];
        let id = node.id;
        let Some(w) = node.writing.as_mut() else {
            return;
        };
        let (index, term, stage) = (w.snap.index, w.snap.term, w.stage);
        match stage {
            Stage::Written => {
                w.stage = Stage::Synced;
                if self.crash_point(x, CrashPoint::SnapshotSynced) {
                    return;
                }
            }
            Stage::Synced => {
                w.stage = Stage::Renamed;
                let snap = w.snap.clone();
                node.disk.rename_snapshot(snap);
                if self.crash_point(x, CrashPoint::SnapshotRenamed) {
                    return;
                }
            }
            Stage::Renamed => {
                w.stage = Stage::Durable;
                node.disk.dir_sync();
                node.disk.retain_snapshots(SNAPSHOTS_KEPT);
                self.stats.snapshots_taken += 1;
                self.trace(format!("n{id} snapshot {index}/{term} durable"));
                if self.crash_point(x, CrashPoint::SnapshotDurable) {
                    return;
                }
            }
            Stage::Durable => {
                // `snapshot_written`: only now, with the snapshot durable,
                // may the log before it go (in the core, then on disk).
                node.writing = None;
                let compacted = node.driver.as_mut().is_some_and(|d| d.compact_log(index));
                if compacted {
                    // The driver's Compact op goes to the disk now.
                    self.drain(x);
                } else {
                    let start = node.core().map_or(0, RaftCore::snapshot_index);
                    self.trace(format!(
                        "n{id} log not compacted to {index} (it starts after {start})"
                    ));
                }
                if self.crash_point(x, CrashPoint::SnapshotCompacted) {
                    return;
                }
                self.after_input(x);
                return;
            }
        }
        self.schedule_snapshot_step(x);
    }

    // ----- Sending (leader) ------------------------------------------------------

    /// `send_snapshots`: the core named these followers in a Ready.
    pub(super) fn send_snapshots(&mut self, x: usize, peers: Vec<NodeId>) {
        for peer in peers {
            let node = &mut self.nodes[x];
            let id = node.id;
            let Some(driver) = node.driver.as_mut() else {
                return;
            };
            let term = driver.core().term();
            if !driver.core().is_leader() {
                continue;
            }
            if node.sending.get(&peer).is_some_and(|t| t.term == term) {
                // One transfer at a time; this one will report.
                continue;
            }
            let Some(snap) = node.disk.latest_snapshot().cloned() else {
                driver.snapshot_sent(peer, 0, false);
                self.trace(format!("n{id} has no snapshot to send to n{peer}"));
                continue;
            };
            self.stats.snapshot_transfers += 1;
            self.trace(format!(
                "n{id} → n{peer} snapshot transfer of {}/{} ({} bytes, chunks of {})",
                snap.index,
                snap.term,
                snap.len(),
                self.snapshot_chunk
            ));
            self.nodes[x].sending.insert(
                peer,
                Transfer {
                    term,
                    snap,
                    offset: 0,
                    awaiting: None,
                    restarts: 0,
                },
            );
            self.send_chunk(x, peer);
        }
    }

    /// Sends the chunk at the transfer's offset and waits for its answer.
    /// (Called from inside a Ready: it does not drain the core.)
    fn send_chunk(&mut self, x: usize, peer: NodeId) {
        let rpc = self.next_rpc;
        self.next_rpc += 1;
        let chunk = self.snapshot_chunk;
        let node = &mut self.nodes[x];
        let id = node.id;
        let Some(t) = node.sending.get_mut(&peer) else {
            return;
        };
        let total = t.snap.len();
        let end = (t.offset + chunk).min(total);
        let args = InstallSnapshotArgs {
            term: t.term,
            leader_id: id,
            last_included_index: t.snap.index,
            last_included_term: t.snap.term,
            offset: t.offset as u64,
            data: t.snap.bytes[t.offset..end].to_vec(),
            total_size: total as u64,
            done: end >= total,
        };
        t.awaiting = Some((rpc, end));
        self.stats.snapshot_chunks += 1;
        let msg = Message {
            from: id,
            to: peer,
            rpc: Rpc::InstallSnapshot(args),
        };
        if !self.send_rpc(msg, rpc) {
            self.end_transfer(x, peer, None, "unreachable");
            return;
        }
        let inc = self.nodes[x].inc;
        self.schedule(
            self.now + CHUNK_TIMEOUT_US,
            Event::SnapshotChunkTimeout {
                node: x,
                inc,
                peer,
                rpc,
            },
        );
    }

    /// The transfer to `peer` ended: `Some(index)` installed, `None` failed.
    /// Tells the core (which, on failure, asks again later).
    fn end_transfer(&mut self, x: usize, peer: NodeId, installed: Option<LogIndex>, why: &str) {
        let node = &mut self.nodes[x];
        let id = node.id;
        if node.sending.remove(&peer).is_none() {
            return;
        }
        if let Some(driver) = node.driver.as_mut() {
            driver.snapshot_sent(peer, installed.unwrap_or(0), installed.is_some());
        }
        match installed {
            Some(index) => {
                self.trace(format!("n{id} → n{peer} snapshot {index} installed"));
            }
            None => {
                self.stats.snapshot_transfers_failed += 1;
                self.trace(format!("n{id} → n{peer} snapshot transfer failed: {why}"));
            }
        }
    }

    pub(super) fn snapshot_chunk_timeout(&mut self, x: usize, peer: NodeId, rpc: u64) {
        let waiting = self.nodes[x]
            .sending
            .get(&peer)
            .is_some_and(|t| t.awaiting.is_some_and(|(r, _)| r == rpc));
        if waiting {
            self.end_transfer(x, peer, None, "no answer to a chunk");
            self.after_input(x);
        }
    }

    /// An InstallSnapshotReply reached the leader `x`.
    pub(super) fn on_snapshot_reply(&mut self, x: usize, msg: Message, rpc: u64) {
        let Rpc::InstallSnapshotReply(r) = &msg.rpc else {
            return;
        };
        let r = r.clone();
        let peer = msg.from;
        let node = &mut self.nodes[x];
        let Some(driver) = node.driver.as_mut() else {
            return;
        };
        if r.term > driver.core().term() {
            // The follower knows a later term: the leader steps down.
            driver.step(msg);
            self.end_transfer(x, peer, None, "the follower is in a later term");
            self.after_input(x);
            return;
        }
        let (term, leader) = (driver.core().term(), driver.core().is_leader());
        let Some(t) = node.sending.get_mut(&peer) else {
            return;
        };
        let Some((_, end)) = t.awaiting.filter(|&(id, _)| id == rpc) else {
            // A duplicate, or the answer to a chunk that timed out.
            return;
        };
        t.awaiting = None;
        if t.term != term || !leader {
            node.sending.remove(&peer);
            return;
        }
        let total = t.snap.len();
        let index = t.snap.index;
        // What next: Ok(true) send the chunk at the (new) offset, Err(why)
        // the transfer failed; installed ends it well.
        let next: Result<(), &str> = if r.installed {
            Ok(())
        } else if r.success {
            t.offset = (r.next_offset as usize).max(end);
            if t.offset >= total {
                Err("the last chunk was taken, not installed")
            } else {
                Ok(())
            }
        } else {
            t.restarts += 1;
            if t.restarts > MAX_RESTARTS || r.next_offset as usize > total {
                Err("the follower kept refusing chunks")
            } else {
                // Resume where the follower is (0: start over).
                t.offset = r.next_offset as usize;
                Ok(())
            }
        };
        match next {
            _ if r.installed => self.end_transfer(x, peer, Some(index), ""),
            Ok(()) => self.send_chunk(x, peer),
            Err(why) => self.end_transfer(x, peer, None, why),
        }
        self.after_input(x);
    }

    // ----- Receiving (follower) --------------------------------------------------

    /// `receive_snapshot_chunk`: a chunk reached `x`. The driver's core
    /// decides; the answer waits in the driver until the disk holds what
    /// it promises (a raised term, an installed snapshot), then goes back
    /// on the chunk's RPC (`driving::send_durable` checks the promise).
    pub(super) fn on_snapshot_chunk(&mut self, x: usize, msg: Message, rpc: u64) {
        let from = msg.from;
        let Rpc::InstallSnapshot(args) = msg.rpc else {
            return;
        };
        let Some(driver) = self.nodes[x].driver.as_mut() else {
            return;
        };
        let verdict = driver.snapshot_chunk(from, &args);
        let id = self.nodes[x].id;
        let reply = match verdict {
            SnapshotChunkVerdict::Refuse { term } => answer(term, false, 0, false),
            SnapshotChunkVerdict::Covered { term } => {
                self.nodes[x].incoming = None;
                self.trace(format!(
                    "n{id} already holds everything up to {}: installed",
                    args.last_included_index
                ));
                answer(term, true, args.total_size, true)
            }
            SnapshotChunkVerdict::Accept { term } => {
                match self.accept_chunk(x, term, &args, (from, rpc)) {
                    ChunkAnswer::Now(reply) => reply,
                    ChunkAnswer::Later => {
                        self.after_input(x);
                        return;
                    }
                    ChunkAnswer::Crashed => return,
                }
            }
        };
        if self.reply_chunk(x, from, rpc, reply, args.last_included_index) {
            self.after_input(x);
        }
    }

    /// The reply to a chunk goes back on its RPC once the disk holds what
    /// it promises. False when the node is down (or a check failed).
    fn reply_chunk(
        &mut self,
        x: usize,
        from: NodeId,
        rpc: u64,
        reply: InstallSnapshotReply,
        index: LogIndex,
    ) -> bool {
        if self.violation.is_some() || !self.nodes[x].is_up() {
            return false;
        }
        let vouches = reply.installed.then_some(index);
        let node = &mut self.nodes[x];
        let id = node.id;
        node.chunk_replies
            .entry(from)
            .or_default()
            .push_back((rpc, vouches));
        if let Some(driver) = node.driver.as_mut() {
            driver.send_when_durable(Message {
                from: id,
                to: from,
                rpc: Rpc::InstallSnapshotReply(reply),
            });
        }
        true
    }

    /// `server::receive`: appends the chunk to the incoming buffer; the last
    /// one, verified, is stored and installed later (`chunk_stored`), as the
    /// server's blocking-pool job reports back while the node goes on
    /// answering heartbeats.
    fn accept_chunk(
        &mut self,
        x: usize,
        term: Term,
        args: &InstallSnapshotArgs,
        (from, rpc): (NodeId, u64),
    ) -> ChunkAnswer {
        let node = &mut self.nodes[x];
        if args.offset == 0 {
            // A (re)start: forget any half-received one.
            node.incoming = Some(Incoming {
                index: args.last_included_index,
                bytes: Vec::new(),
            });
        }
        let Some(incoming) = node.incoming.as_mut() else {
            return ChunkAnswer::Now(answer(term, false, 0, false));
        };
        if args.offset != incoming.bytes.len() as u64 {
            // Out of place (a duplicate, or a chunk of a transfer that
            // started over): say where we are.
            return ChunkAnswer::Now(answer(term, false, incoming.bytes.len() as u64, false));
        }
        incoming.bytes.extend_from_slice(&args.data);
        let next = incoming.bytes.len() as u64;
        if !args.done {
            if self.crash_point(x, CrashPoint::InstallMidTransfer) {
                return ChunkAnswer::Crashed;
            }
            return ChunkAnswer::Now(answer(term, true, next, false));
        }
        let bytes = node.incoming.take().map(|i| i.bytes).unwrap_or_default();
        // The server verifies, stores and reads the file back on its
        // blocking pool; the node handles other messages meanwhile.
        let at = self.now + self.rng.range(100, 2_000);
        let inc = self.nodes[x].inc;
        let received = Received {
            from,
            rpc,
            term,
            next,
            index: args.last_included_index,
            snapshot_term: args.last_included_term,
            leader: args.leader_id,
            bytes,
        };
        self.schedule(
            at,
            Event::SnapshotReceived {
                node: x,
                inc,
                received: Box::new(received),
            },
        );
        ChunkAnswer::Later
    }

    /// The blocking-pool job for the last chunk reported back
    /// (`server::receive::chunk_written`): verify, store durably, install,
    /// and answer with the current term.
    pub(super) fn snapshot_received(&mut self, x: usize, r: Received) {
        let id = self.nodes[x].id;
        let term = r.term;
        let refuse = answer(term, false, 0, false);
        let reply = match SimSnapshot::verify(r.bytes) {
            Ok(s) if (s.index, s.term) == (r.index, r.snapshot_term) => {
                // `IncomingSnapshot::finish`: fsync, rename, fsync the directory.
                let disk = &mut self.nodes[x].disk;
                disk.store_snapshot(s.clone());
                disk.retain_snapshots(SNAPSHOTS_KEPT);
                self.trace(format!(
                    "n{id} stored snapshot {}/{} from n{}",
                    s.index, s.term, r.leader
                ));
                if self.crash_point(x, CrashPoint::InstallStored) || !self.install(x, &s) {
                    return;
                }
                answer(term, true, r.next, true)
            }
            Ok(s) => {
                self.trace(format!(
                    "n{id} received snapshot says {}/{}, the transfer {}/{}: asking for it again",
                    s.index, s.term, r.index, r.snapshot_term
                ));
                refuse
            }
            Err(e) => {
                self.trace(format!(
                    "n{id} received snapshot fails verification ({e}): asking for it again"
                ));
                refuse
            }
        };
        // §5.1: the reply carries the current term, which may have risen
        // while the job ran.
        let current = self.nodes[x]
            .driver
            .as_ref()
            .map_or(term, |d| d.core().term());
        let reply = InstallSnapshotReply {
            term: reply.term.max(current),
            ..reply
        };
        if self.reply_chunk(x, r.from, r.rpc, reply, r.index) {
            self.after_input(x);
        }
    }

    /// `install_received`: the driver restores the KV store from the image
    /// and makes the log start after the snapshot (kept suffix: a Compact
    /// op; discarded: a Reset), answering the proposals it covers with
    /// "unknown". False when the node crashed (or a check failed).
    fn install(&mut self, x: usize, snap: &SimSnapshot) -> bool {
        let id = self.nodes[x].id;
        let Some(driver) = self.nodes[x].driver.as_mut() else {
            return false;
        };
        let commit = driver.core().commit_index();
        if snap.index <= commit {
            self.trace(format!(
                "n{id} snapshot {} is not ahead of its commit index {commit}: nothing to install",
                snap.index
            ));
            return true;
        }
        let kept_before = driver.core().term_at(snap.index) == Some(snap.term);
        let mut image = snap.image();
        // The configuration travels in the file (thesis §4.1): this node's
        // log may hold none of the changes the snapshot covers.
        match driver.install_snapshot(snap.index, snap.term, snap.membership.clone(), &mut image) {
            Ok(true) => {}
            Ok(false) => return true,
            Err(e) => {
                let text = format!("n{id} cannot restore a verified snapshot: {e}");
                self.fail(ViolationKind::StorageContract, text);
                return false;
            }
        }
        let node = &mut self.nodes[x];
        node.digest = node
            .driver
            .as_ref()
            .map_or(node.digest, |d| d.state_machine().digest());
        node.checked_applied = snap.index;
        node.last_commit = snap.index;
        node.leader_last = None;
        node.installs += 1;
        let digest = node.digest;
        self.stats.snapshots_installed += 1;
        let how = if kept_before {
            "log after it kept"
        } else {
            "log discarded"
        };
        self.trace(format!(
            "n{id} installed snapshot {}/{} ({how})",
            snap.index, snap.term
        ));
        let result = self.inv.on_state(id, snap.index, digest, true);
        self.check(result);
        if self.violation.is_some() {
            return false;
        }
        // The log's Compact or Reset goes to the disk now, and the answers
        // to the proposals the snapshot covers go out.
        self.drain(x);
        self.violation.is_none()
            && self.nodes[x].is_up()
            && !self.crash_point(x, CrashPoint::InstallLogReset)
    }

    // ----- Restarting ----------------------------------------------------------------

    /// `restore_latest` + `reconcile`: the newest durable snapshot, the
    /// `KvStore` restored from it, and the durable log fitted to it (the
    /// snapshot wins over the entries it covers; a log it superseded, or
    /// one that ends before it, is discarded; a log that starts after it is
    /// an error that must never happen).
    #[allow(clippy::type_complexity)]
    pub(super) fn recover_node(
        &mut self,
        x: usize,
    ) -> Result<
        (
            RecoveredState,
            Option<(LogIndex, Term, Membership)>,
            KvStore,
        ),
        String,
    > {
        let id = self.nodes[x].id;
        let keep_any_log = self.has_bug(Bug::KeepSupersededLog);
        let disk = &mut self.nodes[x].disk;
        let (start, _) = disk.log_start();
        let Some(snap) = disk.latest_durable_snapshot().cloned() else {
            if start > 0 {
                return Err(format!(
                    "the log starts after index {start}, and there is no snapshot"
                ));
            }
            return Ok((disk.recover(), None, KvStore::new()));
        };
        let (s, t) = (snap.index, snap.term);
        if start > s {
            return Err(format!(
                "the log starts after index {start}, but the newest snapshot ends at {s}: entries {}..={start} are missing",
                s + 1
            ));
        }
        let kv = snap
            .restore()
            .map_err(|e| format!("the snapshot at {s} does not restore: {e}"))?;
        let superseded = disk.durable_term(s).is_some_and(|term| term != t);
        let behind = disk.durable_last_index() < s;
        let recovered = disk.recover();
        let entries = if (superseded || behind) && !keep_any_log {
            // A crash between storing a snapshot and resetting the log.
            disk.reset(s, t);
            self.trace(format!(
                "n{id} log {} the snapshot at {s}/{t}: discarded",
                if superseded {
                    "does not continue"
                } else {
                    "ends before"
                }
            ));
            Vec::new()
        } else {
            recovered
                .entries
                .into_iter()
                .filter(|e| e.index > s)
                .collect()
        };
        Ok((
            RecoveredState {
                hard_state: recovered.hard_state,
                entries,
            },
            Some((s, t, snap.membership.clone())),
            kv,
        ))
    }
}

/// What `accept_chunk` did with a chunk.
enum ChunkAnswer {
    /// The reply is ready.
    Now(InstallSnapshotReply),
    /// The last chunk: the reply follows from `snapshot_received`.
    Later,
    /// The node crashed at a crash point.
    Crashed,
}

/// A complete snapshot transfer waiting for its blocking-pool job.
#[derive(Debug)]
pub(super) struct Received {
    from: NodeId,
    rpc: u64,
    term: Term,
    next: u64,
    index: LogIndex,
    snapshot_term: Term,
    leader: NodeId,
    bytes: Vec<u8>,
}
