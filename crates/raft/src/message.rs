//! The RPCs of Figure 2, as plain serialisable data.
//!
//! `RaftCore` consumes and produces [`Message`]s; the driver maps the request
//! kinds onto [`Transport`](crate::Transport) calls and feeds the replies back.

use serde::{Deserialize, Serialize};

use crate::types::{LogEntry, LogIndex, NodeId, Term};

/// RequestVote RPC arguments (Figure 2), also used for pre-votes (thesis §9.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVoteArgs {
    /// The candidate's term; for a pre-vote, the term it *would* campaign in.
    pub term: Term,
    pub candidate_id: NodeId,
    pub last_log_index: LogIndex,
    pub last_log_term: Term,
    /// A pre-vote changes no state on the receiver.
    pub pre_vote: bool,
    /// Thesis §3.10: the leader asked this candidate to campaign
    /// (`TimeoutNow`), so receivers vote although they heard from that
    /// leader recently (the §4.2.3 abstention is against disruptive
    /// servers, not this one).
    #[serde(default)]
    pub leadership_transfer: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVoteReply {
    /// The receiver's current term, for the candidate to update itself; for a
    /// granted pre-vote, the term that was asked about.
    pub term: Term,
    pub vote_granted: bool,
    pub pre_vote: bool,
}

/// AppendEntries RPC arguments (Figure 2): replicates entries and, when
/// `entries` is empty, serves as a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntriesArgs {
    pub term: Term,
    pub leader_id: NodeId,
    /// Index of the log entry immediately preceding the new ones.
    pub prev_log_index: LogIndex,
    pub prev_log_term: Term,
    pub entries: Vec<LogEntry>,
    pub leader_commit: LogIndex,
    /// The leader's heartbeat round, echoed in the reply: a ReadIndex read
    /// (thesis §6.4) is served once a majority has answered its round.
    pub read_round: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntriesReply {
    pub term: Term,
    pub success: bool,
    /// On success: the index up to which the follower's log now matches the
    /// leader's (`prev_log_index + entries.len()`).
    pub match_index: LogIndex,
    /// On failure: the `prev_log_index` that was refused (to spot stale replies).
    pub rejected_prev_index: LogIndex,
    /// Thesis §5.3 fast backup: the first index of the conflicting term, or
    /// one past the follower's last entry when its log is too short.
    pub conflict_index: LogIndex,
    /// The term of the follower's entry at `prev_log_index`, if it has one.
    pub conflict_term: Option<Term>,
    /// `read_round` of the request, echoed.
    pub read_round: u64,
    /// False from a server that may not vote (its data dir may have
    /// replaced a wiped one: `crate::incarnation`). It forgot its term as
    /// well as its vote, so it may acknowledge a deposed leader's entries:
    /// the leader replicates to it but counts it toward no majority.
    pub voter: bool,
}

/// InstallSnapshot RPC arguments (Figure 13, §7): one chunk of the
/// leader's snapshot file. Chunks are sent one at a time, each acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotArgs {
    pub term: Term,
    pub leader_id: NodeId,
    /// The snapshot replaces all entries up to and including this index.
    pub last_included_index: LogIndex,
    pub last_included_term: Term,
    /// Byte offset of `data` in the snapshot file.
    pub offset: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Total size of the snapshot file in bytes.
    pub total_size: u64,
    /// True if this is the last chunk.
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotReply {
    /// The receiver's current term, for the leader to update itself.
    pub term: Term,
    /// The chunk was written; `next_offset` is where the next one starts.
    pub success: bool,
    /// The offset the receiver expects next (lets the leader resume or
    /// restart a transfer).
    pub next_offset: u64,
    /// The snapshot is installed (or the receiver already had everything).
    pub installed: bool,
}

/// Thesis §3.10, the last step of a leadership transfer: the leader tells
/// the target, whose log is now as long as its own, to campaign at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNowArgs {
    pub term: Term,
    pub leader_id: NodeId,
}

/// The answer to `TimeoutNow`: only its term matters (every request gets
/// one reply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNowReply {
    pub term: Term,
}

/// The payload of a message between two servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rpc {
    RequestVote(RequestVoteArgs),
    RequestVoteReply(RequestVoteReply),
    AppendEntries(AppendEntriesArgs),
    AppendEntriesReply(AppendEntriesReply),
    InstallSnapshot(InstallSnapshotArgs),
    InstallSnapshotReply(InstallSnapshotReply),
    TimeoutNow(TimeoutNowArgs),
    TimeoutNowReply(TimeoutNowReply),
}

impl Rpc {
    /// The term the sender had when it sent this.
    pub fn term(&self) -> Term {
        match self {
            Rpc::RequestVote(a) => a.term,
            Rpc::RequestVoteReply(r) => r.term,
            Rpc::AppendEntries(a) => a.term,
            Rpc::AppendEntriesReply(r) => r.term,
            Rpc::InstallSnapshot(a) => a.term,
            Rpc::InstallSnapshotReply(r) => r.term,
            Rpc::TimeoutNow(a) => a.term,
            Rpc::TimeoutNowReply(r) => r.term,
        }
    }

    /// Requests expect a reply; replies do not.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Rpc::RequestVote(_)
                | Rpc::AppendEntries(_)
                | Rpc::InstallSnapshot(_)
                | Rpc::TimeoutNow(_)
        )
    }

    /// A short name for traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Rpc::RequestVote(a) if a.pre_vote => "PreVote",
            Rpc::RequestVote(_) => "RequestVote",
            Rpc::RequestVoteReply(r) if r.pre_vote => "PreVoteReply",
            Rpc::RequestVoteReply(_) => "RequestVoteReply",
            Rpc::AppendEntries(_) => "AppendEntries",
            Rpc::AppendEntriesReply(_) => "AppendEntriesReply",
            Rpc::InstallSnapshot(_) => "InstallSnapshot",
            Rpc::InstallSnapshotReply(_) => "InstallSnapshotReply",
            Rpc::TimeoutNow(_) => "TimeoutNow",
            Rpc::TimeoutNowReply(_) => "TimeoutNowReply",
        }
    }
}

/// A message from one server to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub rpc: Rpc,
}
