//! `RaftCore`: the whole protocol as a pure, deterministic state machine.
//!
//! Inputs: [`RaftCore::step`] (a message from a peer), [`RaftCore::tick`] (one
//! unit of logical time), [`RaftCore::propose`] (a client command) and
//! [`RaftCore::read_index`] (a linearizable read). Output: a [`Ready`] from
//! [`RaftCore::ready`], saying what to persist, what to send, what to apply.
//!
//! No IO, no clock, no global randomness: the election-timeout RNG is seeded
//! by the caller. Given the same inputs, the core makes the same decisions,
//! which is what lets the simulator replay a failure from its seed.
//!
//! Roles follow Figure 4: Follower → (PreCandidate →) Candidate → Leader, and
//! back to Follower on any higher term (§5.1).

use std::collections::{BTreeMap, VecDeque};

use thiserror::Error;

use crate::config::{ConfigError, RaftConfig};
use crate::log::RaftLog;
use crate::message::{
    AppendEntriesArgs, AppendEntriesReply, InstallSnapshotArgs, InstallSnapshotReply, Message,
    RequestVoteArgs, RequestVoteReply, Rpc,
};
use crate::storage::RecoveredState;
use crate::types::{HardState, LogEntry, LogIndex, NodeId, RaftState, Term};

/// Why a read was refused, or a proposal: this node does not lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NotLeader {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
}

/// Why [`RaftCore::propose`] refused a command. Nothing was appended to the
/// log, so the caller may retry (elsewhere, or smaller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProposeError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// The command is larger than [`RaftConfig::max_entry_bytes`]. Refused
    /// on every node, leader or not: retrying cannot help.
    #[error("command of {size} bytes is over the {limit}-byte entry limit")]
    TooLarge { size: usize, limit: usize },
}

/// Why a core could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CoreError {
    #[error("node id must be positive")]
    ZeroId,
    #[error("node {id} is not among the voters {voters:?}")]
    NotAVoter { id: NodeId, voters: Vec<NodeId> },
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(
        "recovered log is not contiguous from the snapshot (entry {position} has index {index})"
    )]
    BadLog { position: usize, index: LogIndex },
}

/// The outcome of a [`RaftCore::read_index`] request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's id for the read.
    pub id: u64,
    /// `Ok(read_index)`: once the state machine has applied `read_index`, a read
    /// of it is linearizable. `Err`: leadership was lost first; retry elsewhere.
    pub result: Result<LogIndex, NotLeader>,
}

/// What a follower should do with a chunk of InstallSnapshot (§7), decided
/// by [`RaftCore::handle_snapshot_chunk`]. The driver owns the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotChunkVerdict {
    /// From a stale leader: refuse, telling it our term.
    Refuse { term: Term },
    /// We already hold everything the snapshot covers (committed): reply
    /// that it is installed, without writing anything.
    Covered { term: Term },
    /// Write the chunk.
    Accept { term: Term },
}

/// Something the driver may want to know about (logs, metrics, waiters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The role, term or known leader changed.
    StateChanged {
        state: RaftState,
        term: Term,
        leader: Option<NodeId>,
    },
}

/// What the driver must do next, in this order:
/// 1. send `messages` (they do not depend on this Ready's persistence);
/// 2. durably write `hard_state` and `entries`;
/// 3. call [`RaftCore::advance`];
/// 4. send `persisted_messages` (votes and AppendEntries replies: Figure 2,
///    "respond to RPCs only after updating stable storage");
/// 5. apply `committed_entries` in order, answer `read_states`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ready {
    pub hard_state: Option<HardState>,
    pub entries: Vec<LogEntry>,
    /// Leader AppendEntries: safe to send before the leader's own disk write
    /// (thesis §10.2.1), since the leader counts itself only once durable.
    pub messages: Vec<Message>,
    /// Messages that must wait until `hard_state` and `entries` are durable.
    pub persisted_messages: Vec<Message>,
    pub committed_entries: Vec<LogEntry>,
    pub read_states: Vec<ReadState>,
    pub events: Vec<Event>,
    /// Leader: followers that need the current snapshot (their next entry
    /// was compacted away). Stream it, then call
    /// [`RaftCore::snapshot_sent`].
    pub snapshots_to_send: Vec<NodeId>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.events.is_empty()
            && self.snapshots_to_send.is_empty()
    }
}

/// The leader's view of one follower (Figure 2, "Volatile state on leaders",
/// plus flow control as in etcd's `tracker/progress.go`).
#[derive(Debug, Clone)]
struct Progress {
    /// Index of the next log entry to send to that server.
    next_index: LogIndex,
    /// Index of the highest log entry known to be replicated on that server.
    match_index: LogIndex,
    /// Probing: we do not know where the logs agree, so send one
    /// AppendEntries at a time. Otherwise we stream optimistically.
    probing: bool,
    /// Last index of each AppendEntries in flight, oldest first.
    inflight: VecDeque<LogIndex>,
    /// Ticks since this follower last answered (check-quorum).
    ticks_since_contact: u64,
    /// Ticks since this follower last acknowledged new entries.
    ticks_since_ack: u64,
    /// Highest heartbeat round this follower has echoed (ReadIndex).
    read_round: u64,
    /// The highest commit index this follower can have learned from us.
    commit_told: LogIndex,
    /// A snapshot ending at this index is being sent (§7); no appends until
    /// the transfer ends.
    snapshot_pending: Option<LogIndex>,
    /// Whether this follower's acknowledgements count toward a majority
    /// (commit, ReadIndex rounds and leases, check-quorum): false once it
    /// said it may not vote (see `AppendEntriesReply::voter`).
    voter: bool,
}

#[derive(Debug, Clone)]
struct PendingRead {
    id: u64,
    index: LogIndex,
    round: u64,
}

/// Switches that break one rule each, so tests can prove the checks catch
/// the bug. All off by default; the simulator turns them on one at a time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BugSwitches {
    /// Figure 8: commit entries of earlier terms by counting replicas.
    pub commit_previous_term_by_counting: bool,
    /// Forget to persist the vote (the hard state is not reported).
    pub forget_to_persist_vote: bool,
    /// Truncate the log on any AppendEntries, even a stale one.
    pub truncate_on_stale_append: bool,
    /// Serve reads without confirming leadership with a heartbeat round.
    pub read_without_quorum_check: bool,
    /// Do not append a no-op when taking office.
    pub skip_noop_on_election: bool,
    /// Lease reads: trust a lease twice the minimum election timeout, as if
    /// clocks never drifted and followers waited longer than they do.
    pub lease_ignores_clock_drift: bool,
}

/// The Raft state machine of one server. See the module documentation.
pub struct RaftCore {
    id: NodeId,
    /// Every voter, this node included, sorted.
    voters: Vec<NodeId>,
    config: RaftConfig,
    heartbeat_ticks: u64,
    election_ticks_min: u64,
    election_ticks_max: u64,

    // Persistent state (Figure 2), durable once handed out in a Ready.
    term: Term,
    voted_for: Option<NodeId>,
    log: RaftLog,

    // Volatile state.
    state: RaftState,
    leader_id: Option<NodeId>,
    commit_index: LogIndex,
    /// Highest index handed out for applying.
    applied_index: LogIndex,
    /// Highest index known durable on this node's own disk.
    persisted_index: LogIndex,

    election_elapsed: u64,
    randomized_election_timeout: u64,
    heartbeat_elapsed: u64,
    /// Votes received in the current (pre-)election: id → granted.
    votes: BTreeMap<NodeId, bool>,
    /// Leader only: one entry per other voter.
    progress: BTreeMap<NodeId, Progress>,
    rng: fastrand::Rng,

    // ReadIndex (thesis §6.4).
    read_round: u64,
    read_round_needed: bool,
    pending_reads: Vec<PendingRead>,
    /// Reads that arrived before this leader's first commit in its term.
    reads_awaiting_commit: Vec<u64>,
    /// Ticks since this core was created: the clock of the read lease.
    ticks: u64,
    /// Leader with lease reads (thesis §6.4.1): when each heartbeat round
    /// still of interest started, in `ticks`, oldest first.
    round_started: VecDeque<(u64, u64)>,
    /// Reads answered from the lease, without a round (for metrics).
    lease_reads_served: u64,

    // Outputs, drained by ready().
    last_hard_state: HardState,
    last_soft_state: (RaftState, Term, Option<NodeId>),
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,
    events: Vec<Event>,
    /// Leader: new entries or a new commit index to tell followers about.
    need_broadcast: bool,
    snapshots_to_send: Vec<NodeId>,
    /// False while this server's data dir may have replaced a wiped one
    /// (`crate::incarnation`): it then neither votes nor campaigns.
    may_vote: bool,
    bugs: BugSwitches,
}

impl RaftCore {
    /// Builds a core from what storage recovered. `seed` drives the
    /// election-timeout randomness; give each node a different one.
    pub fn new(
        id: NodeId,
        voters: &[NodeId],
        config: RaftConfig,
        recovered: RecoveredState,
        seed: u64,
    ) -> Result<Self, CoreError> {
        Self::with_snapshot(id, voters, config, recovered, None, seed)
    }

    /// Builds a core whose log starts after a snapshot ending at
    /// `snapshot = Some((index, term))` (§7): the state machine was restored
    /// from it, so everything up to `index` counts as committed and applied.
    /// `recovered.entries` must then start at `index + 1` (or be empty).
    pub fn with_snapshot(
        id: NodeId,
        voters: &[NodeId],
        config: RaftConfig,
        recovered: RecoveredState,
        snapshot: Option<(LogIndex, Term)>,
        seed: u64,
    ) -> Result<Self, CoreError> {
        if id == 0 {
            return Err(CoreError::ZeroId);
        }
        let mut voters = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        if !voters.contains(&id) {
            return Err(CoreError::NotAVoter { id, voters });
        }
        config.validate()?;
        let (base_index, base_term) = snapshot.unwrap_or((0, 0));
        for (position, e) in recovered.entries.iter().enumerate() {
            if e.index != base_index + position as LogIndex + 1 {
                return Err(CoreError::BadLog {
                    position,
                    index: e.index,
                });
            }
        }
        let log = RaftLog::with_snapshot(base_index, base_term, recovered.entries);
        let hs = recovered.hard_state;
        let mut core = RaftCore {
            id,
            voters,
            heartbeat_ticks: config.heartbeat_ticks(),
            election_ticks_min: config.election_ticks_min(),
            election_ticks_max: config.election_ticks_max(),
            config,
            term: hs.term,
            voted_for: hs.voted_for,
            persisted_index: log.last_index(),
            log,
            state: RaftState::Follower,
            leader_id: None,
            commit_index: base_index,
            applied_index: base_index,
            election_elapsed: 0,
            randomized_election_timeout: 0,
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            rng: fastrand::Rng::with_seed(seed),
            read_round: 0,
            read_round_needed: false,
            pending_reads: Vec::new(),
            reads_awaiting_commit: Vec::new(),
            ticks: 0,
            round_started: VecDeque::new(),
            lease_reads_served: 0,
            last_hard_state: hs,
            last_soft_state: (RaftState::Follower, hs.term, None),
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            events: Vec::new(),
            need_broadcast: false,
            snapshots_to_send: Vec::new(),
            may_vote: true,
            bugs: BugSwitches::default(),
        };
        core.reset_election_timer();
        Ok(core)
    }

    /// Test-only fault injection; see [`BugSwitches`].
    pub fn set_bug_switches(&mut self, bugs: BugSwitches) {
        self.bugs = bugs;
    }

    /// Whether this server may vote and campaign (default: yes). A driver
    /// whose data dir is new turns it off until the other voters vouch that
    /// it never voted under another incarnation (`crate::incarnation`):
    /// §5.2 allows one vote per term, and a wiped disk forgets which.
    pub fn set_may_vote(&mut self, may_vote: bool) {
        self.may_vote = may_vote;
    }

    pub fn may_vote(&self) -> bool {
        self.may_vote
    }

    // ----- Accessors ------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn voters(&self) -> &[NodeId] {
        &self.voters
    }
    pub fn state(&self) -> RaftState {
        self.state
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }
    pub fn is_leader(&self) -> bool {
        self.state == RaftState::Leader
    }
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }
    pub fn last_log_index(&self) -> LogIndex {
        self.log.last_index()
    }
    pub fn last_log_term(&self) -> Term {
        self.log.last_term()
    }
    pub fn persisted_index(&self) -> LogIndex {
        self.persisted_index
    }
    pub fn config(&self) -> &RaftConfig {
        &self.config
    }
    /// Last index covered by the snapshot the log starts after (0: none).
    pub fn snapshot_index(&self) -> LogIndex {
        self.log.snapshot_index()
    }
    pub fn snapshot_term(&self) -> Term {
        self.log.snapshot_term()
    }
    /// The term of the entry at `index` (also the snapshot's last index).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }
    /// The entry at `index`, if this node's log has it.
    pub fn entry(&self, index: LogIndex) -> Option<&LogEntry> {
        self.log.entry(index)
    }
    /// Leader only: `(peer, match_index, next_index)` for each follower.
    pub fn replication_progress(&self) -> Vec<(NodeId, LogIndex, LogIndex)> {
        self.progress
            .iter()
            .map(|(id, p)| (*id, p.match_index, p.next_index))
            .collect()
    }
    /// Leader only: ticks since each follower last answered.
    pub fn peer_contact_ticks(&self) -> Vec<(NodeId, u64)> {
        self.progress
            .iter()
            .map(|(id, p)| (*id, p.ticks_since_contact))
            .collect()
    }

    fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        let me = self.id;
        self.voters.iter().copied().filter(move |&v| v != me)
    }

    // ----- Inputs -----------------------------------------------------------

    /// One unit of logical time (§5.2: election timeouts and heartbeats).
    pub fn tick(&mut self) {
        self.ticks += 1;
        match self.state {
            RaftState::Leader => self.tick_leader(),
            _ => {
                self.election_elapsed += 1;
                if self.election_elapsed >= self.randomized_election_timeout && self.may_vote {
                    // §5.2: "If election timeout elapses without receiving
                    // AppendEntries RPC from current leader or granting vote to
                    // candidate: convert to candidate."
                    self.campaign();
                }
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        for p in self.progress.values_mut() {
            p.ticks_since_contact = p.ticks_since_contact.saturating_add(1);
            p.ticks_since_ack = p.ticks_since_ack.saturating_add(1);
        }
        // Thesis §6.2 check-quorum: a leader that cannot reach a majority
        // within an election timeout steps down, so clients are not stuck
        // waiting on a leader that can no longer commit.
        if self.config.check_quorum && !self.quorum_recently_active() {
            tracing::info!(
                id = self.id,
                term = self.term,
                "check-quorum failed: stepping down"
            );
            self.become_follower(self.term, None);
            return;
        }
        if self.heartbeat_elapsed >= self.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            if self.config.lease_reads {
                // Thesis §6.4.1: every heartbeat is a new round, so each
                // majority of acknowledgements extends the lease.
                self.start_read_round();
            }
            self.broadcast_heartbeat();
        }
    }

    fn quorum_recently_active(&self) -> bool {
        let active = 1 + self
            .progress
            .values()
            .filter(|p| p.voter && p.ticks_since_contact < self.election_ticks_min)
            .count();
        active >= self.quorum()
    }

    /// Client proposal (§5.3: "the leader appends the command to its log as a
    /// new entry"). Returns the entry's index and term; the command is applied
    /// when that index commits with that term. Followers and candidates refuse,
    /// with a hint of who leads.
    ///
    /// A command over [`RaftConfig::max_entry_bytes`] is refused on every
    /// node: once in the log, every AppendEntries to a follower that lacks it
    /// would start with it, so an entry the transport cannot carry would stop
    /// replication for good. Refusing it here, before it touches the log,
    /// means replication never meets an entry it cannot send (see
    /// [`RaftConfig::max_append_bytes`]).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(LogIndex, Term), ProposeError> {
        if data.len() > self.config.max_entry_bytes {
            return Err(ProposeError::TooLarge {
                size: data.len(),
                limit: self.config.max_entry_bytes,
            });
        }
        if self.state != RaftState::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        let index = self.log.last_index() + 1;
        self.log.append(LogEntry::new(self.term, index, data));
        self.need_broadcast = true;
        Ok((index, self.term))
    }

    /// A linearizable read (thesis §6.4, ReadIndex). The answer arrives in a
    /// later Ready's `read_states` under `id`: the index the state machine
    /// must have applied before the read is served.
    pub fn read_index(&mut self, id: u64) -> Result<(), NotLeader> {
        if self.state != RaftState::Leader {
            return Err(NotLeader::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        // Thesis §6.4 step 1: a new leader does not know the commit index
        // until an entry of its own term commits (its no-op), so it waits.
        if self.log.term(self.commit_index) != Some(self.term) {
            self.reads_awaiting_commit.push(id);
            return Ok(());
        }
        if self.lease_valid() {
            // Thesis §6.4.1: within the lease no other leader can exist, so
            // the commit index is current without asking anyone.
            self.lease_reads_served += 1;
            self.read_states.push(ReadState {
                id,
                result: Ok(self.commit_index),
            });
            return Ok(());
        }
        self.register_read(id);
        Ok(())
    }

    /// How many reads this core answered from its lease (thesis §6.4.1)
    /// rather than with a heartbeat round.
    pub fn lease_reads_served(&self) -> u64 {
        self.lease_reads_served
    }

    /// Thesis §6.4.1, lease reads: true while no other server can have been
    /// elected. A majority acknowledged a heartbeat round that started at
    /// tick `k`; each of them received it after `k` and, by the
    /// vote-abstention rule (thesis §4.2.3, see `in_lease`), grants no vote
    /// for a minimum election timeout of its own clock. So no other leader
    /// exists until `k + lease_ticks` on ours (the drift margin is in
    /// `lease_ticks`). Our tick `k` was already partly over when the round
    /// started, so `ticks - k` whole ticks plus a part of one have passed:
    /// the lease holds while `ticks - k + 1 <= lease_ticks`.
    fn lease_valid(&mut self) -> bool {
        if !self.config.lease_reads || self.state != RaftState::Leader {
            return false;
        }
        let Some(acked) = self.quorum_read_round() else {
            return false;
        };
        // Rounds older than the one a majority acknowledged no longer matter.
        while self.round_started.len() > 1
            && self.round_started.front().is_some_and(|&(r, _)| r < acked)
        {
            self.round_started.pop_front();
        }
        let lease = if self.bugs.lease_ignores_clock_drift {
            2 * self.election_ticks_min
        } else {
            self.config.lease_ticks()
        };
        match self.round_started.front() {
            // `started` was read from `ticks`, which only grows.
            Some(&(round, started)) if round == acked => self.ticks - started < lease,
            _ => false,
        }
    }

    /// The newest heartbeat round a majority (this leader included) has
    /// echoed, if any.
    fn quorum_read_round(&self) -> Option<u64> {
        // A follower that may not vote confirms nothing (it may be behind
        // a term it forgot).
        let mut rounds: Vec<u64> = self
            .progress
            .values()
            .map(|p| if p.voter { p.read_round } else { 0 })
            .collect();
        rounds.push(self.read_round);
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        rounds.get(self.quorum() - 1).copied()
    }

    /// Reads wait for a round, and none is in flight: at most one ReadIndex
    /// round is outstanding, and every read that arrives meanwhile shares
    /// the next one (batching by design: under load, a round per round
    /// trip, not a round per loop turn). A lost round is re-sent by the next
    /// heartbeat, which carries the same round number.
    fn read_round_can_start(&self) -> bool {
        self.read_round_needed && !self.read_round_in_flight()
    }

    /// The newest round has not yet been echoed by a majority.
    fn read_round_in_flight(&self) -> bool {
        let echoed = 1 + self
            .progress
            .values()
            .filter(|p| p.voter && p.read_round >= self.read_round)
            .count();
        echoed < self.quorum()
    }

    fn start_read_round(&mut self) {
        self.read_round += 1;
        if self.config.lease_reads {
            self.round_started.push_back((self.read_round, self.ticks));
        }
    }

    fn register_read(&mut self, id: u64) {
        if self.voters.len() == 1 || self.bugs.read_without_quorum_check {
            self.read_states.push(ReadState {
                id,
                result: Ok(self.commit_index),
            });
            return;
        }
        // Step 2: confirm leadership with a round of heartbeats; every read
        // registered before the next flush shares the same round (batching).
        self.pending_reads.push(PendingRead {
            id,
            index: self.commit_index,
            round: self.read_round + 1,
        });
        self.read_round_needed = true;
    }

    /// Tells a leader that a message to `peer` could not be delivered, so the
    /// entries in flight are probably lost: go back to probing.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        if let Some(p) = self.progress.get_mut(&peer) {
            if !p.probing {
                p.probing = true;
                p.next_index = p.match_index + 1;
                p.inflight.clear();
            }
        }
    }

    /// Handles a message from a peer.
    pub fn step(&mut self, msg: Message) {
        // (The driver only steps requests from voters, so every request
        // stepped here gets exactly one reply.)
        if msg.to != self.id || !self.voters.contains(&msg.from) || msg.from == self.id {
            tracing::debug!(
                id = self.id,
                from = msg.from,
                to = msg.to,
                "ignoring misaddressed message"
            );
            return;
        }
        let from = msg.from;
        let msg_term = msg.rpc.term();
        if msg_term > self.term {
            // §5.1: "If RPC request or response contains term T > currentTerm:
            // set currentTerm = T, convert to follower" — with two exceptions.
            match &msg.rpc {
                // A pre-vote changes nothing on the receiver (thesis §9.6).
                Rpc::RequestVote(a) if a.pre_vote => {}
                // A granted pre-vote reply carries the term that was asked about.
                Rpc::RequestVoteReply(r) if r.pre_vote && r.vote_granted => {}
                Rpc::RequestVote(a) if self.config.check_quorum && self.in_lease() => {
                    // Thesis §4.2.3: a server that has heard from a current
                    // leader within the minimum election timeout neither
                    // updates its term nor grants its vote: a removed or
                    // partitioned server cannot disrupt a working cluster.
                    // (The refusal carries our lower term; the candidate
                    // ignores it.)
                    let reply = RequestVoteReply {
                        term: self.term,
                        vote_granted: false,
                        pre_vote: a.pre_vote,
                    };
                    self.send_after_persist(from, Rpc::RequestVoteReply(reply));
                    return;
                }
                Rpc::AppendEntries(_) | Rpc::InstallSnapshot(_) => {
                    self.become_follower(msg_term, Some(from))
                }
                _ => self.become_follower(msg_term, None),
            }
        } else if msg_term < self.term {
            match msg.rpc {
                // A stale leader learns our term from the reply and steps down.
                // The reply carries *our* term, so if that old leader has
                // since restarted and leads our term, it will take this reply
                // as one of its own: it must not echo the request's
                // ReadIndex round (rounds restart from 0 in a new life), or
                // it would confirm reads nobody confirmed. Round 0 confirms
                // nothing. (Found by the simulator, seed 101674.)
                Rpc::AppendEntries(a) => {
                    let reply = self.append_reply(false, 0, a.prev_log_index, 0, None, 0);
                    self.send_after_persist(from, Rpc::AppendEntriesReply(reply));
                }
                Rpc::RequestVote(a) => {
                    let reply = RequestVoteReply {
                        term: self.term,
                        vote_granted: false,
                        pre_vote: a.pre_vote,
                    };
                    self.send_after_persist(from, Rpc::RequestVoteReply(reply));
                }
                Rpc::InstallSnapshot(_) => {
                    let reply = self.snapshot_reply(false, false);
                    self.send_after_persist(from, Rpc::InstallSnapshotReply(reply));
                }
                // Replies from an earlier term answer questions nobody is asking.
                _ => {}
            }
            return;
        }
        match msg.rpc {
            Rpc::RequestVote(a) => self.handle_request_vote(from, a),
            Rpc::RequestVoteReply(r) => self.handle_vote_reply(from, r),
            Rpc::AppendEntries(a) => self.handle_append_entries(from, a),
            Rpc::AppendEntriesReply(r) => self.handle_append_reply(from, r),
            Rpc::InstallSnapshot(a) => {
                // Drivers hand chunks to `handle_snapshot_chunk`, since the
                // bytes are theirs to store. A chunk stepped here still
                // counts as word from the leader, and is refused so that the
                // leader restarts the transfer (every request gets a reply).
                let _ = self.handle_snapshot_chunk(from, &a);
                let reply = self.snapshot_reply(false, false);
                self.send_after_persist(from, Rpc::InstallSnapshotReply(reply));
            }
            // Only the term of these matters (handled above); the transfer's
            // outcome arrives through `snapshot_sent`.
            Rpc::InstallSnapshotReply(_) => {}
        }
    }

    fn snapshot_reply(&self, success: bool, installed: bool) -> InstallSnapshotReply {
        InstallSnapshotReply {
            term: self.term,
            success,
            next_offset: 0,
            installed,
        }
    }

    // ----- Snapshots (§7) ----------------------------------------------------

    /// A chunk of InstallSnapshot arrived from `from`. Applies the term rules
    /// of any request from a leader (a stale one is refused; a current one
    /// resets the election timer, so a long transfer does not cause an
    /// election) and says what to do with the bytes. The hard state may have
    /// changed: run a Ready through storage before replying.
    pub fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        args: &InstallSnapshotArgs,
    ) -> SnapshotChunkVerdict {
        if args.term < self.term || !self.voters.contains(&from) || from == self.id {
            return SnapshotChunkVerdict::Refuse { term: self.term };
        }
        if args.term > self.term || self.state != RaftState::Follower {
            self.become_follower(args.term, Some(from));
        }
        self.leader_id = Some(from);
        self.election_elapsed = 0;
        if args.last_included_index <= self.commit_index {
            return SnapshotChunkVerdict::Covered { term: self.term };
        }
        SnapshotChunkVerdict::Accept { term: self.term }
    }

    /// The snapshot ending at (`index`, `term`) is durable on this node and
    /// the state machine was restored from it: the log now starts after it
    /// (§7), and everything it covers counts as committed and applied.
    /// Returns `Some(true)` when a suffix of the log was kept (the storage
    /// should `compact`), `Some(false)` when the log was discarded (the
    /// storage should `reset`), and `None` when the snapshot is older than
    /// what this node already committed (nothing changes).
    pub fn restore_snapshot(&mut self, index: LogIndex, term: Term) -> Option<bool> {
        if index <= self.commit_index {
            return None;
        }
        let kept = self.log.restore(index, term);
        self.commit_index = index;
        self.applied_index = index;
        self.persisted_index = if kept {
            self.persisted_index.max(index)
        } else {
            index
        };
        Some(kept)
    }

    /// Forgets log entries up to `index`, now covered by a durable snapshot
    /// of the state machine. Only applied, durable entries may go. Returns
    /// whether anything was compacted.
    pub fn compact(&mut self, index: LogIndex) -> bool {
        if index > self.applied_index || index > self.persisted_index {
            return false;
        }
        self.log.compact(index)
    }

    /// The leader's snapshot transfer to `peer` ended. On success the
    /// follower holds everything up to `index`; replication resumes after it.
    pub fn snapshot_sent(&mut self, peer: NodeId, index: LogIndex, success: bool) {
        let Some(p) = self.progress.get_mut(&peer) else {
            return;
        };
        // The driver sends the newest snapshot it has, which may be newer
        // than the one that was pending: any index will do.
        if p.snapshot_pending.is_none() {
            return;
        }
        p.snapshot_pending = None;
        p.probing = true;
        p.inflight.clear();
        if success {
            p.match_index = p.match_index.max(index);
            p.next_index = index + 1;
            p.ticks_since_ack = 0;
            self.maybe_commit();
            self.send_appends(peer);
        }
    }

    /// True while this node believes a leader is alive: a follower that heard
    /// from one within the minimum election timeout, or a leader in contact
    /// with a majority.
    fn in_lease(&self) -> bool {
        match self.state {
            RaftState::Leader => self.quorum_recently_active(),
            RaftState::Follower => {
                (self.leader_id.is_some() && self.election_elapsed < self.election_ticks_min)
                    // Thesis §6.4.1: with leases, a restarted server may have
                    // acknowledged a leader just before it stopped, and it
                    // does not remember: it waits out a minimum election
                    // timeout before voting, as if it had just heard from one.
                    || (self.config.lease_reads && self.ticks < self.election_ticks_min)
            }
            _ => false,
        }
    }

    // ----- Elections (§5.2, §5.4.1, thesis §9.6) ---------------------------

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.randomized_election_timeout = self
            .rng
            .u64(self.election_ticks_min..self.election_ticks_max);
    }

    fn campaign(&mut self) {
        if self.config.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate();
        }
    }

    fn become_pre_candidate(&mut self) {
        self.state = RaftState::PreCandidate;
        self.leader_id = None;
        self.progress.clear();
        self.fail_pending_reads();
        self.reset_election_timer();
        self.votes.clear();
        self.votes.insert(self.id, true);
        tracing::debug!(id = self.id, term = self.term, "pre-vote campaign");
        if self.votes_granted() >= self.quorum() {
            self.become_candidate();
            return;
        }
        self.request_votes(self.term + 1, true);
    }

    fn become_candidate(&mut self) {
        // §5.2: "increment currentTerm, vote for self, reset election timer,
        // send RequestVote RPCs to all other servers".
        self.term += 1;
        self.voted_for = Some(self.id);
        self.state = RaftState::Candidate;
        self.leader_id = None;
        self.progress.clear();
        self.fail_pending_reads();
        self.reset_election_timer();
        self.votes.clear();
        self.votes.insert(self.id, true);
        tracing::debug!(id = self.id, term = self.term, "election campaign");
        if self.votes_granted() >= self.quorum() {
            self.become_leader();
            return;
        }
        self.request_votes(self.term, false);
    }

    fn request_votes(&mut self, term: Term, pre_vote: bool) {
        let args = RequestVoteArgs {
            term,
            candidate_id: self.id,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote,
        };
        let peers: Vec<NodeId> = self.peers().collect();
        for peer in peers {
            // Sent after persistence: the candidate's new term and self-vote
            // must be durable before it asks (a restarted node must not vote
            // again in a term where it already voted for itself).
            self.send_after_persist(peer, Rpc::RequestVote(args.clone()));
        }
    }

    fn votes_granted(&self) -> usize {
        self.votes.values().filter(|&&g| g).count()
    }

    fn votes_rejected(&self) -> usize {
        self.votes.values().filter(|&&g| !g).count()
    }

    fn handle_request_vote(&mut self, from: NodeId, a: RequestVoteArgs) {
        let log_ok = self.log.is_up_to_date(a.last_log_index, a.last_log_term);
        if a.pre_vote {
            // Thesis §9.6: grant a pre-vote only to a candidate whose log is
            // up to date and only if we have not heard from a leader within
            // the minimum election timeout. Nothing is changed or persisted.
            let grant = a.term > self.term && log_ok && !self.in_lease() && self.may_vote;
            let reply = RequestVoteReply {
                term: if grant { a.term } else { self.term },
                vote_granted: grant,
                pre_vote: true,
            };
            self.send_after_persist(from, Rpc::RequestVoteReply(reply));
            return;
        }
        // Figure 2, RequestVote receiver: "If votedFor is null or candidateId,
        // and candidate's log is at least as up-to-date as receiver's log,
        // grant vote" (§5.2, §5.4.1). We also refuse while we know a leader
        // of this term: it already has a majority.
        let can_vote = self.voted_for == Some(a.candidate_id)
            || (self.voted_for.is_none() && self.leader_id.is_none());
        // A server that may have voted in a life it forgot grants nothing
        // (see `set_may_vote`).
        let grant = can_vote && log_ok && self.may_vote;
        if grant {
            self.voted_for = Some(a.candidate_id);
            self.reset_election_timer();
        }
        let reply = RequestVoteReply {
            term: self.term,
            vote_granted: grant,
            pre_vote: false,
        };
        // The vote is sent only once `voted_for` is durable.
        self.send_after_persist(from, Rpc::RequestVoteReply(reply));
    }

    fn handle_vote_reply(&mut self, from: NodeId, r: RequestVoteReply) {
        let expected = match self.state {
            RaftState::PreCandidate if r.pre_vote => !r.vote_granted || r.term == self.term + 1,
            RaftState::Candidate if !r.pre_vote => r.term == self.term,
            _ => false,
        };
        if !expected {
            return;
        }
        self.votes.insert(from, r.vote_granted);
        if self.votes_granted() >= self.quorum() {
            if self.state == RaftState::PreCandidate {
                self.become_candidate();
            } else {
                self.become_leader();
            }
        } else if self.votes_rejected() >= self.quorum() {
            // Lost: wait for a leader or the next timeout as a follower.
            self.become_follower(self.term, None);
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.voted_for = None;
        }
        let was_leader = self.state == RaftState::Leader;
        self.state = RaftState::Follower;
        self.leader_id = leader;
        self.votes.clear();
        self.progress.clear();
        self.round_started.clear();
        self.fail_pending_reads();
        self.reset_election_timer();
        if was_leader {
            tracing::info!(id = self.id, term = self.term, "stepped down");
        }
    }

    fn become_leader(&mut self) {
        tracing::info!(id = self.id, term = self.term, "became leader");
        self.state = RaftState::Leader;
        self.leader_id = Some(self.id);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        let next_index = self.log.last_index() + 1;
        let peers: Vec<NodeId> = self.peers().collect();
        self.progress = peers
            .into_iter()
            .map(|p| {
                (
                    p,
                    Progress {
                        // Figure 2: "initialized to leader last log index + 1".
                        next_index,
                        match_index: 0,
                        probing: true,
                        inflight: VecDeque::new(),
                        ticks_since_contact: 0,
                        ticks_since_ack: 0,
                        read_round: 0,
                        commit_told: 0,
                        snapshot_pending: None,
                        voter: true,
                    },
                )
            })
            .collect();
        // §8: a leader commits a blank no-op entry at the start of its term, so
        // that entries of earlier terms commit (§5.4.2) and reads are safe.
        if !self.bugs.skip_noop_on_election {
            let index = self.log.last_index() + 1;
            self.log.append(LogEntry::noop(self.term, index));
        }
        self.need_broadcast = true;
        self.round_started.clear();
        if self.config.lease_reads {
            // The no-op's AppendEntries carry the first round of the lease.
            self.start_read_round();
        }
        self.maybe_commit();
    }

    // ----- Log replication (§5.3) -------------------------------------------

    fn handle_append_entries(&mut self, from: NodeId, a: AppendEntriesArgs) {
        // Here a.term == self.term. §5.2: a candidate that receives
        // AppendEntries from the leader of its term returns to follower.
        if self.state != RaftState::Follower {
            self.become_follower(self.term, Some(from));
        }
        self.leader_id = Some(from);
        self.election_elapsed = 0;

        // Entries must follow prev_log_index one by one, with terms no newer
        // than the leader's. (Checked arithmetic: these numbers come from the
        // network.)
        let consecutive = a.entries.iter().enumerate().all(|(i, e)| {
            a.prev_log_index.checked_add(1 + i as LogIndex) == Some(e.index) && e.term <= a.term
        });
        let read_round = a.read_round;
        let mut a = a;
        let snapshot_index = self.log.snapshot_index();
        if consecutive && a.prev_log_index < snapshot_index {
            // Entries up to our snapshot are committed, so they equal the
            // leader's (Log Matching, Leader Completeness): skip them and
            // check consistency at the snapshot's last entry instead.
            let skip = (snapshot_index - a.prev_log_index) as usize;
            if skip >= a.entries.len() {
                let match_index = a.prev_log_index + a.entries.len() as LogIndex;
                let reply = self.append_reply(true, match_index, 0, 0, None, read_round);
                self.send_after_persist(from, Rpc::AppendEntriesReply(reply));
                return;
            }
            a.entries.drain(..skip);
            a.prev_log_index = snapshot_index;
            a.prev_log_term = self.log.snapshot_term();
        }
        if !consecutive {
            // Every request gets exactly one reply (the driver relies on it).
            tracing::warn!(id = self.id, from, "refusing malformed AppendEntries");
            let last = self.log.last_index();
            let reply = self.append_reply(false, 0, a.prev_log_index, last + 1, None, read_round);
            self.send_after_persist(from, Rpc::AppendEntriesReply(reply));
            return;
        }
        match self.log.term(a.prev_log_index) {
            Some(t) if t == a.prev_log_term => {
                let match_index = a.prev_log_index + a.entries.len() as LogIndex;
                if self.bugs.truncate_on_stale_append {
                    self.log.truncate_after_for_bug(a.prev_log_index);
                }
                self.log.append_from_leader(a.entries);
                self.persisted_index = self.persisted_index.min(self.log.unstable_from() - 1);
                // Figure 2: "If leaderCommit > commitIndex, set commitIndex =
                // min(leaderCommit, index of last new entry)".
                let new_commit = a.leader_commit.min(match_index);
                if new_commit > self.commit_index {
                    self.commit_index = new_commit;
                }
                let reply = self.append_reply(true, match_index, 0, 0, None, read_round);
                self.send_after_persist(from, Rpc::AppendEntriesReply(reply));
            }
            conflict => {
                // Figure 2: "Reply false if log doesn't contain an entry at
                // prevLogIndex whose term matches prevLogTerm", with the
                // thesis §5.3 hint so the leader skips a whole term at once.
                let (conflict_index, conflict_term) = match conflict {
                    Some(t) => (self.log.first_index_of_term_at(a.prev_log_index), Some(t)),
                    None => (self.log.last_index() + 1, None),
                };
                let reply = self.append_reply(
                    false,
                    0,
                    a.prev_log_index,
                    conflict_index,
                    conflict_term,
                    read_round,
                );
                self.send_after_persist(from, Rpc::AppendEntriesReply(reply));
            }
        }
    }

    fn append_reply(
        &self,
        success: bool,
        match_index: LogIndex,
        rejected_prev_index: LogIndex,
        conflict_index: LogIndex,
        conflict_term: Option<Term>,
        read_round: u64,
    ) -> AppendEntriesReply {
        AppendEntriesReply {
            term: self.term,
            success,
            match_index,
            rejected_prev_index,
            conflict_index,
            conflict_term,
            read_round,
            voter: self.may_vote,
        }
    }

    fn handle_append_reply(&mut self, from: NodeId, r: AppendEntriesReply) {
        if self.state != RaftState::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.ticks_since_contact = 0;
        // Sticky for the term: a late reply from before the follower lost
        // its disk says `voter` too, and must not make the acknowledgements
        // of its new, forgetful self count again.
        p.voter &= r.voter;
        // Any reply in our term acknowledges us as leader: it counts for the
        // heartbeat round of ReadIndex, success or not.
        p.read_round = p.read_round.max(r.read_round);
        if p.snapshot_pending.is_some() {
            // Heartbeat replies during a snapshot transfer say nothing new.
            self.release_reads();
            return;
        }
        if r.success {
            if r.match_index > last_index {
                tracing::warn!(from, r.match_index, "ignoring reply beyond our log");
                return;
            }
            if r.match_index > p.match_index {
                p.match_index = r.match_index;
                p.ticks_since_ack = 0;
            }
            if p.probing && r.match_index + 1 >= p.next_index {
                // The probe found where our logs agree: start streaming.
                p.probing = false;
            }
            p.next_index = p.next_index.max(p.match_index + 1);
            let m = p.match_index;
            p.inflight.retain(|&i| i > m);
            self.maybe_commit();
        } else if r.rejected_prev_index > p.match_index {
            // §5.3: "After a rejection, the leader decrements nextIndex and
            // retries" — using the fast-backup hint to skip a term at a time.
            let hinted = match r.conflict_term {
                Some(t) => self
                    .log
                    .last_index_of_term(t)
                    .map_or(r.conflict_index, |i| i + 1),
                None => r.conflict_index,
            };
            let hinted = hinted.min(r.rejected_prev_index);
            p.next_index = hinted.max(p.match_index + 1);
            p.probing = true;
            p.inflight.clear();
        } else if r.rejected_prev_index == p.match_index
            && r.conflict_term.is_none()
            && r.conflict_index <= p.match_index
        {
            // A check at exactly the match index failed (heartbeats check
            // there): the follower's log ends before entries it once
            // acknowledged. It lost its disk (an operator wiped its data
            // dir), or, rarely, this is an old reply overtaken by a later
            // success. Probing again from where it says it ends is the only
            // way forward in the first case and costs a round trip in the
            // second. (Lowering match_index never lowers commit_index.)
            tracing::debug!(
                peer = from,
                r.conflict_index,
                match_index = p.match_index,
                "follower log shorter than acknowledged; probing again"
            );
            p.match_index = r.conflict_index.saturating_sub(1);
            p.next_index = r.conflict_index.max(1);
            p.probing = true;
            p.inflight.clear();
        } else {
            // A stale rejection: we already know the logs agree beyond it.
        }
        self.release_reads();
        if !self.send_appends(from) {
            // Let a follower that has caught up learn the commit index now
            // rather than at the next heartbeat.
            if self.commit_untold(from) {
                self.send_heartbeat(from);
            }
        }
    }

    /// Sends as many AppendEntries with entries to `to` as flow control allows.
    /// Returns whether anything was sent.
    fn send_appends(&mut self, to: NodeId) -> bool {
        let mut sent = false;
        loop {
            let Some(p) = self.progress.get(&to) else {
                return sent;
            };
            let can_send = if p.probing {
                p.inflight.is_empty()
            } else {
                p.inflight.len() < self.config.max_inflight_appends
            };
            if p.snapshot_pending.is_some() {
                return sent;
            }
            if p.next_index <= self.log.snapshot_index() {
                // §7: the entries this follower needs were compacted away;
                // it gets the snapshot instead.
                let index = self.log.snapshot_index();
                if let Some(p) = self.progress.get_mut(&to) {
                    p.snapshot_pending = Some(index);
                    p.inflight.clear();
                }
                self.snapshots_to_send.push(to);
                return sent;
            }
            if !can_send || p.next_index > self.log.last_index() {
                return sent;
            }
            let next = p.next_index;
            let probing = p.probing;
            let entries = self.log.slice(
                next,
                self.config.max_entries_per_append,
                self.config.max_bytes_per_append,
            );
            let Some(last) = entries.last().map(|e| e.index) else {
                return sent;
            };
            let prev_log_index = next - 1;
            let Some(prev_log_term) = self.log.term(prev_log_index) else {
                return sent;
            };
            let args = AppendEntriesArgs {
                term: self.term,
                leader_id: self.id,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit: self.commit_index,
                read_round: self.read_round,
            };
            let commit = self.commit_index;
            if let Some(p) = self.progress.get_mut(&to) {
                p.inflight.push_back(last);
                p.commit_told = p.commit_told.max(commit.min(last));
                if !probing {
                    // Pipelining: assume success and move on.
                    p.next_index = last + 1;
                }
            }
            self.send_now(to, Rpc::AppendEntries(args));
            sent = true;
            if probing {
                return sent;
            }
        }
    }

    /// A heartbeat is an AppendEntries with no entries whose consistency
    /// check is at the follower's known match index, so it always succeeds on
    /// a follower of this term and never interferes with entries in flight.
    fn send_heartbeat(&mut self, to: NodeId) {
        let commit = self.commit_index;
        let Some(p) = self.progress.get_mut(&to) else {
            return;
        };
        // A match index inside the compacted prefix has no term here any
        // more: check at the snapshot's last entry (a follower still behind
        // it refuses, which is fine: the reply still confirms our term).
        let prev_log_index = p.match_index.max(self.log.snapshot_index());
        p.commit_told = p.commit_told.max(commit.min(p.match_index));
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            return;
        };
        let args = AppendEntriesArgs {
            term: self.term,
            leader_id: self.id,
            prev_log_index,
            prev_log_term,
            entries: Vec::new(),
            leader_commit: self.commit_index,
            read_round: self.read_round,
        };
        self.send_now(to, Rpc::AppendEntries(args));
    }

    fn broadcast_heartbeat(&mut self) {
        let peers: Vec<NodeId> = self.peers().collect();
        for peer in peers {
            let recover = match self.progress.get_mut(&peer) {
                Some(p) if p.probing => {
                    // Re-send a probe that may have been lost.
                    p.inflight.clear();
                    true
                }
                Some(p)
                    if !p.inflight.is_empty() && p.ticks_since_ack >= self.election_ticks_min =>
                {
                    // Entries in flight for a whole election timeout with no
                    // acknowledgement: assume they were lost and probe again.
                    p.probing = true;
                    p.next_index = p.match_index + 1;
                    p.inflight.clear();
                    true
                }
                _ => false,
            };
            if recover {
                self.send_appends(peer);
            }
            self.send_heartbeat(peer);
        }
    }

    /// §5.3/§5.4.2: "If there exists an N such that N > commitIndex, a majority
    /// of matchIndex[i] ≥ N, and log[N].term == currentTerm: set commitIndex = N".
    fn maybe_commit(&mut self) {
        if self.state != RaftState::Leader {
            return;
        }
        // A follower that may not vote holds entries but counts for no
        // majority: it forgot its term, so it may have acknowledged a
        // deposed leader (`AppendEntriesReply::voter`).
        let mut matched: Vec<LogIndex> = self
            .progress
            .values()
            .map(|p| if p.voter { p.match_index } else { 0 })
            .collect();
        matched.push(self.persisted_index);
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&n) = matched.get(self.quorum() - 1) else {
            return;
        };
        if n <= self.commit_index {
            return;
        }
        // Figure 8: an entry from an earlier term is never committed by
        // counting replicas; it commits only indirectly, when an entry of the
        // current term after it does.
        let own_term = self.log.term(n) == Some(self.term);
        if own_term || self.bugs.commit_previous_term_by_counting {
            self.commit_index = n;
            self.need_broadcast = true;
            if own_term && !self.reads_awaiting_commit.is_empty() {
                for id in std::mem::take(&mut self.reads_awaiting_commit) {
                    self.register_read(id);
                }
            }
        }
    }

    /// Answers the pending reads whose heartbeat round a majority has echoed.
    fn release_reads(&mut self) {
        if self.pending_reads.is_empty() {
            return;
        }
        let Some(acked) = self.quorum_read_round() else {
            return;
        };
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_reads)
            .into_iter()
            .partition(|r| r.round <= acked);
        self.pending_reads = waiting;
        self.read_states
            .extend(ready.into_iter().map(|r| ReadState {
                id: r.id,
                result: Ok(r.index),
            }));
    }

    fn fail_pending_reads(&mut self) {
        let hint = self.leader_id;
        let ids: Vec<u64> = self
            .pending_reads
            .drain(..)
            .map(|r| r.id)
            .chain(self.reads_awaiting_commit.drain(..))
            .collect();
        self.read_round_needed = false;
        for id in ids {
            self.read_states.push(ReadState {
                id,
                result: Err(NotLeader::NotLeader { leader_hint: hint }),
            });
        }
    }

    // ----- Output -----------------------------------------------------------

    fn send_now(&mut self, to: NodeId, rpc: Rpc) {
        self.messages.push(Message {
            from: self.id,
            to,
            rpc,
        });
    }

    fn send_after_persist(&mut self, to: NodeId, rpc: Rpc) {
        self.persisted_messages.push(Message {
            from: self.id,
            to,
            rpc,
        });
    }

    /// Sends what a leader batched up since the last Ready: new entries, a new
    /// commit index, a heartbeat round for pending reads.
    fn flush(&mut self) {
        if self.state != RaftState::Leader {
            self.need_broadcast = false;
            return;
        }
        let new_round = self.read_round_can_start();
        if new_round {
            self.start_read_round();
            self.read_round_needed = false;
        }
        if self.need_broadcast || new_round {
            self.need_broadcast = false;
            let peers: Vec<NodeId> = self.peers().collect();
            for peer in peers {
                let sent = self.send_appends(peer);
                // With nothing to append, a heartbeat is still needed for a
                // new read round, or to tell a new commit index; not when
                // this follower already heard it (a reply may have just
                // triggered a commit notice: see `handle_append_reply`).
                if !sent && (new_round || self.commit_untold(peer)) {
                    self.send_heartbeat(peer);
                }
            }
        }
    }

    /// Whether `peer` holds entries that are committed without having been
    /// told so.
    fn commit_untold(&self, peer: NodeId) -> bool {
        self.progress
            .get(&peer)
            .is_some_and(|p| p.commit_told < self.commit_index.min(p.match_index))
    }

    /// Returns what the driver must do now (see [`Ready`] for the order).
    pub fn ready(&mut self) -> Ready {
        self.flush();
        let hs = HardState {
            term: self.term,
            voted_for: self.voted_for,
        };
        let hard_state = if hs != self.last_hard_state {
            self.last_hard_state = hs;
            if self.bugs.forget_to_persist_vote {
                Some(HardState {
                    term: hs.term,
                    voted_for: None,
                })
            } else {
                Some(hs)
            }
        } else {
            None
        };
        let entries = self.log.take_unstable();
        let committed_entries = self
            .log
            .range(self.applied_index, self.commit_index)
            .to_vec();
        if let Some(last) = committed_entries.last() {
            self.applied_index = last.index;
        }
        let soft = (self.state, self.term, self.leader_id);
        let mut events = std::mem::take(&mut self.events);
        if soft != self.last_soft_state {
            self.last_soft_state = soft;
            events.push(Event::StateChanged {
                state: soft.0,
                term: soft.1,
                leader: soft.2,
            });
        }
        Ready {
            hard_state,
            entries,
            messages: std::mem::take(&mut self.messages),
            persisted_messages: std::mem::take(&mut self.persisted_messages),
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
            events,
            snapshots_to_send: std::mem::take(&mut self.snapshots_to_send),
        }
    }

    /// Whether a call to [`RaftCore::ready`] would return anything.
    pub fn has_ready(&self) -> bool {
        let hs = HardState {
            term: self.term,
            voted_for: self.voted_for,
        };
        hs != self.last_hard_state
            || self.log.has_unstable()
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || !self.read_states.is_empty()
            || !self.events.is_empty()
            || !self.snapshots_to_send.is_empty()
            || self.commit_index > self.applied_index
            || (self.state == RaftState::Leader
                && (self.need_broadcast || self.read_round_can_start()))
            || (self.state, self.term, self.leader_id) != self.last_soft_state
    }

    /// Tells the core that everything in `ready` is durable. The leader now
    /// counts itself for the entries (thesis §10.2.1).
    pub fn advance(&mut self, ready: &Ready) {
        self.persisted(ready.entries.last().map(|e| (e.index, e.term)));
    }

    /// Like [`RaftCore::advance`] for a driver that writes in the
    /// background: the Ready whose last entry was `last_entry` is durable
    /// (Readys become durable in the order they were handed out). The core
    /// may have moved on meanwhile; an entry since overwritten counts for
    /// nothing.
    pub fn persisted(&mut self, last_entry: Option<(LogIndex, Term)>) {
        if let Some((index, term)) = last_entry {
            if self.log.term(index) == Some(term) && self.log.unstable_from() > index {
                self.persisted_index = self.persisted_index.max(index);
            }
        }
        self.maybe_commit();
    }
}
