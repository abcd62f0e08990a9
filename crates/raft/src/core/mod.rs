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

//!
//! One file per concern, each an `impl RaftCore` block: `election.rs`
//! (§5.2, §9.6, §6.2), `replication.rs` (§5.3, §5.4.2), `read_only.rs`
//! (thesis §6.4), `snapshot.rs` (§7), `membership.rs` (thesis chapter 4:
//! who votes, one change at a time). This file holds the state itself
//! (Figure 2), the inputs ([`RaftCore::step`], [`RaftCore::tick`]) and the
//! outputs ([`RaftCore::ready`]).

mod election;
mod membership;
mod quorum;
mod read_only;
mod replication;
mod snapshot;
mod tracker;
mod transfer;

use std::collections::{BTreeMap, VecDeque};

use thiserror::Error;

use crate::config::{ConfigError, RaftConfig};
use crate::log::RaftLog;
use crate::message::{
    AppendEntriesArgs, AppendEntriesReply, InstallSnapshotArgs, InstallSnapshotReply, Message,
    RequestVoteArgs, RequestVoteReply, Rpc, TimeoutNowReply,
};
use crate::types::{
    EntryKind, HardState, LogEntry, LogIndex, NodeId, RaftState, RecoveredState, Term,
};

use self::membership::MembershipLog;
pub use self::membership::{ConfChange, ConfChangeError, Membership, MembershipError};
use self::tracker::Progress;
use self::transfer::Transfer;
pub use self::transfer::TransferError;

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
    /// Thesis §3.10: leadership is being handed to `target`; retry there
    /// shortly (or here, if the transfer times out).
    #[error("leadership is being transferred to node {target}")]
    Transferring { target: NodeId },
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
    #[error("the configuration entry at index {index} does not decode: {why}")]
    BadConfiguration { index: LogIndex, why: String },
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

#[derive(Debug, Clone)]
struct PendingRead {
    id: u64,
    index: LogIndex,
    round: u64,
}

/// Switches that break one rule each, so tests can prove the checks catch
/// the bug. All off by default; the simulator turns them on one at a time.
///
/// Public (as `raft::BugSwitches`, with [`RaftCore::set_bug_switches`]) only
/// with the `bug-switches` cargo feature, which the simulator and this
/// crate's own tests enable; without it nothing can turn one on, and every
/// check below reads a `false` that never changes.
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
/// A removed server that has not answered for this many election timeouts
/// is no longer replicated to (see [`RaftCore::forget_departed`]).
const DEPARTED_SILENCE_TIMEOUTS: u64 = 10;

pub struct RaftCore {
    id: NodeId,
    /// The configurations the log holds; the latest is in force (§4.1).
    membership: MembershipLog,
    /// Leader: a leadership transfer under way (thesis §3.10).
    transfer: Option<Transfer>,
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
    /// Leader: its AppendEntries wait for the disk until `persisted_index`
    /// reaches this (its term's no-op), when it elected itself alone (see
    /// `send_append`); 0 otherwise.
    term_durable_at: LogIndex,

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
        let membership = Membership::new(voters, &[]);
        if !membership.is_voter(id) {
            return Err(CoreError::NotAVoter {
                id,
                voters: membership.voters().to_vec(),
            });
        }
        Self::start(id, membership, config, recovered, snapshot, seed)
    }

    /// Builds a core from what storage recovered, with `membership` the
    /// configuration at the snapshot (or the bootstrap one, or an empty one
    /// for a node that joins an existing cluster). Configuration entries in
    /// `recovered.entries` override it (§4.1). This node need not be a voter:
    /// a learner, a joining or a removed node never campaigns (but see
    /// `may_campaign` for a voter whose own removal it has not seen commit).
    pub fn start(
        id: NodeId,
        membership: Membership,
        config: RaftConfig,
        recovered: RecoveredState,
        snapshot: Option<(LogIndex, Term)>,
        seed: u64,
    ) -> Result<Self, CoreError> {
        if id == 0 {
            return Err(CoreError::ZeroId);
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
        let mut memberships = MembershipLog::new(base_index, membership);
        for e in &recovered.entries {
            if e.kind == EntryKind::ConfChange {
                let m = Membership::decode(&e.data).map_err(|why| CoreError::BadConfiguration {
                    index: e.index,
                    why,
                })?;
                memberships.push(e.index, m);
            }
        }
        let log = RaftLog::with_snapshot(base_index, base_term, recovered.entries);
        let hs = recovered.hard_state;
        let mut core = RaftCore {
            id,
            membership: memberships,
            transfer: None,
            heartbeat_ticks: config.heartbeat_ticks(),
            election_ticks_min: config.election_ticks_min(),
            election_ticks_max: config.election_ticks_max(),
            config,
            term: hs.term,
            voted_for: hs.voted_for,
            persisted_index: log.last_index(),
            term_durable_at: 0,
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
    #[cfg(feature = "bug-switches")]
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

    /// The voters of the configuration in force (§4.1: the latest in the
    /// log, committed or not).
    pub fn voters(&self) -> &[NodeId] {
        self.membership.current().voters()
    }

    /// The learners of the configuration in force (§4.2.1).
    pub fn learners(&self) -> &[NodeId] {
        self.membership.current().learners()
    }

    /// The configuration in force, and the index of the entry that made it
    /// (the snapshot's or 0 if none did).
    pub fn membership(&self) -> (&Membership, LogIndex) {
        (self.membership.current(), self.membership.current_index())
    }

    /// The configuration in force at `index` (what a snapshot taken there
    /// must hold).
    pub fn membership_at(&self, index: LogIndex) -> &Membership {
        self.membership.at(index)
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

    /// Leader: whether a majority of the voters agree, this leader always,
    /// a follower when `agrees` holds of its `Progress`. A follower that may
    /// not vote agrees to nothing: it forgot its term, so it may have
    /// acknowledged a deposed leader (`AppendEntriesReply::voter`).
    fn voters_agree(&self, agrees: impl Fn(&Progress) -> bool) -> bool {
        quorum::has_majority(self.voters(), |id| {
            id == self.id || self.progress.get(&id).is_some_and(|p| p.voter && agrees(p))
        })
    }

    /// Leader: the largest value a majority of the voters has reached, with
    /// `own` for this leader and `value` of a follower's `Progress` (0 for a
    /// follower that may not vote, as in [`RaftCore::voters_agree`]).
    fn voters_agreed_value(&self, own: u64, value: impl Fn(&Progress) -> u64) -> u64 {
        quorum::agreed_value(self.voters(), |id| {
            if id == self.id {
                return own;
            }
            self.progress.get(&id).filter(|p| p.voter).map_or(0, &value)
        })
    }

    /// Every other member, voter or learner: the servers a leader
    /// replicates to and a candidate asks (learners' votes count for
    /// nothing, but a learner promoted in a log it has not seen yet may be
    /// asked anyway, and answering is harmless).
    fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        let me = self.id;
        let m = self.membership.current();
        m.voters()
            .iter()
            .chain(m.learners())
            .copied()
            .filter(move |&v| v != me)
    }

    /// Whether `id` was removed by a change this server knows committed:
    /// it is in neither the committed configuration nor the latest.
    fn knows_removed(&self, id: NodeId) -> bool {
        !self.membership.current().contains(id)
            && !self.membership.at(self.commit_index).contains(id)
    }

    /// Whom a leader replicates to: every other member of the configuration
    /// in force, and the servers it removed until they hold the entry that
    /// removes them and have been told it committed. A removed server then knows it is no longer a member
    /// (it stops campaigning at once, and says so) instead of timing out in
    /// silence and relying on §4.2.3 to be ignored. Their acknowledgements
    /// count for nothing: quorums see only the voters in force.
    pub(super) fn replication_targets(&self) -> Vec<NodeId> {
        let mut targets: Vec<NodeId> = self.peers().collect();
        let (current, index) = (self.membership.current(), self.membership.current_index());
        let departing = |id: NodeId| id != self.id && !current.contains(id);
        // Tracked already (this leader appended the removal) ...
        targets.extend(
            self.progress
                .iter()
                .filter(|(id, p)| {
                    departing(**id) && (p.match_index < index || p.commit_told < index)
                })
                .map(|(id, _)| *id),
        );
        // ... or removed by a change this leader found uncommitted.
        if index > self.commit_index {
            for id in self.membership.at(self.commit_index).members() {
                if departing(id) && !targets.contains(&id) {
                    targets.push(id);
                }
            }
        }
        targets
    }

    /// Leader: stops replicating to a removed server once it holds its
    /// removal and was told it committed, or once it has been silent for many election timeouts (it
    /// is down; it will learn of its removal, if ever, by other means).
    pub(super) fn forget_departed(&mut self) {
        let (current, index) = (self.membership.current(), self.membership.current_index());
        let silence = self
            .election_ticks_min
            .saturating_mul(DEPARTED_SILENCE_TIMEOUTS);
        self.progress.retain(|id, p| {
            current.contains(*id)
                || ((p.match_index < index || p.commit_told < index)
                    && p.ticks_since_contact < silence)
        });
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

    /// Tells a leader that a message to `peer` could not be delivered, so the
    /// entries in flight are probably lost: go back to probing.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        if let Some(p) = self.progress.get_mut(&peer) {
            if !p.probing {
                p.probing = true;
                p.next_index = p.match_index + 1;
                p.inflight.reset();
            }
        }
    }

    /// Handles a message from a peer.
    pub fn step(&mut self, msg: Message) {
        // Any server may send: membership changes (§4) mean a request can
        // come from a node this log does not list yet (a new leader whose
        // configuration entry has not reached us) or any more. The term
        // rules below are what keeps a stale or removed server harmless.
        if msg.to != self.id || msg.from == self.id || msg.from == 0 {
            tracing::debug!(
                id = self.id,
                from = msg.from,
                to = msg.to,
                "ignoring misaddressed message"
            );
            return;
        }
        let from = msg.from;
        if matches!(msg.rpc, Rpc::RequestVote(_)) && self.knows_removed(from) {
            // Thesis §4.2.3: a candidate that neither the committed
            // configuration nor the latest one contains was removed, and we
            // know the removal committed; it can never be elected by a
            // configuration we are part of. It may not know (a restarted
            // server relearns the commit index from a leader, and
            // `may_campaign` lets a server whose removal it has not seen
            // commit campaign): ignore it, term and all, so that it cannot
            // depose a leader even without pre-vote and check-quorum.
            tracing::debug!(
                id = self.id,
                from,
                "ignoring a vote request from a removed server"
            );
            return;
        }
        let msg_term = msg.rpc.term();
        if msg_term > self.term {
            // §5.1: "If RPC request or response contains term T > currentTerm:
            // set currentTerm = T, convert to follower" — with two exceptions.
            match &msg.rpc {
                // A pre-vote changes nothing on the receiver (thesis §9.6).
                Rpc::RequestVote(a) if a.pre_vote => {}
                // A granted pre-vote reply carries the term that was asked about.
                Rpc::RequestVoteReply(r) if r.pre_vote && r.vote_granted => {}
                Rpc::RequestVote(a)
                    if self.config.check_quorum && self.in_lease() && !a.leadership_transfer =>
                {
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
                Rpc::AppendEntries(_) | Rpc::InstallSnapshot(_) | Rpc::TimeoutNow(_) => {
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
                Rpc::TimeoutNow(_) => {
                    let reply = TimeoutNowReply { term: self.term };
                    self.send_after_persist(from, Rpc::TimeoutNowReply(reply));
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
            Rpc::TimeoutNow(_) => {
                self.handle_timeout_now(from);
                // Sent after the campaign's term and self-vote are durable,
                // like its RequestVotes.
                let reply = TimeoutNowReply { term: self.term };
                self.send_after_persist(from, Rpc::TimeoutNowReply(reply));
            }
            // Only the term of these matters (handled above); the transfer's
            // outcome arrives through `snapshot_sent`, and a transfer ends
            // when the target leads (its higher term reaches us).
            Rpc::InstallSnapshotReply(_) | Rpc::TimeoutNowReply(_) => {}
        }
    }

    pub(super) fn send_now(&mut self, to: NodeId, rpc: Rpc) {
        self.messages.push(Message {
            from: self.id,
            to,
            rpc,
        });
    }

    pub(super) fn send_after_persist(&mut self, to: NodeId, rpc: Rpc) {
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
            let peers = self.replication_targets();
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
