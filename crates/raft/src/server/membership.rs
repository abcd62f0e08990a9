//! Cluster administration through a [`RaftHandle`]: changing the
//! membership (thesis chapter 4) and handing leadership over (§3.10).
//!
//! The core decides *whether* a change may be proposed and keeps the
//! configuration in force; this room is the waiting around it, which needs
//! time and so does not belong in the core:
//!
//! * a change is answered once its entry is **applied** (so committed) with
//!   the term it was proposed in, or fails if a later leader overwrote it;
//! * a new voter is first a learner, and is promoted only once it has
//!   **caught up** (§4.2.1: "the leader should abort the change if the new
//!   server does not catch up", measured in rounds, below), so adding a
//!   server never leaves the cluster waiting on an empty log for its commits;
//! * a transfer is done when the target **leads**, and fails once the core
//!   gives it up (after an election timeout).

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Command, RaftHandle, Status};
use crate::core::{ConfChange, Membership, MembershipError, RaftCore, TransferError};
use crate::types::{LogIndex, NodeId, RaftState, Term};

/// Why an administrative request did not happen (or may not have).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdminError {
    /// Changes and transfers are the leader's to make.
    #[error("not the leader")]
    NotLeader { leader_hint: Option<NodeId> },
    /// §4.1: one change at a time.
    #[error("a configuration change is in progress (index {index}); one change at a time")]
    ChangeInProgress { index: LogIndex },
    /// A new leader has not committed an entry of its term yet (thesis
    /// errata); it will within a round trip.
    #[error("the leader has not committed an entry of its term yet; retry shortly")]
    LeaderNotReady,
    /// The core refused the request (not a member, already one, ...).
    #[error("{0}")]
    Refused(String),
    /// A later leader's log replaced the change's entry: it never happened.
    #[error("the change was lost to a leader change; retry")]
    Lost,
    /// §4.2.1: the new server did not catch up within the rounds allowed;
    /// it stays a learner.
    #[error("node {id} did not catch up with the leader's log; it stays a learner")]
    NotCaughtUp { id: NodeId },
    /// §3.10: the target did not take over within an election timeout.
    #[error("leadership transfer to node {target} did not complete")]
    TransferFailed { target: NodeId },
    /// No other voter to hand leadership to.
    #[error("no other voter to transfer leadership to")]
    NoTransferTarget,
    #[error("timed out")]
    Timeout,
    #[error("the raft server has stopped")]
    Stopped,
}

impl From<MembershipError> for AdminError {
    fn from(e: MembershipError) -> Self {
        match e {
            MembershipError::NotLeader { leader_hint } => AdminError::NotLeader { leader_hint },
            MembershipError::ChangeInProgress { index } => AdminError::ChangeInProgress { index },
            MembershipError::LeaderNotReady => AdminError::LeaderNotReady,
            MembershipError::Transferring { target } => AdminError::NotLeader {
                leader_hint: Some(target),
            },
            other => AdminError::Refused(other.to_string()),
        }
    }
}

impl From<TransferError> for AdminError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::NotLeader { leader_hint } => AdminError::NotLeader { leader_hint },
            other => AdminError::Refused(other.to_string()),
        }
    }
}

pub(super) type ChangeReply = oneshot::Sender<Result<Membership, AdminError>>;
pub(super) type TransferReply = oneshot::Sender<Result<(), AdminError>>;

/// §4.2.1's catch-up rounds: a round replicates up to the leader's last
/// index as it was when the round began; a round that finishes within an
/// election timeout shows the learner keeps up, and it is promoted.
const CATCH_UP_ROUNDS: usize = 10;

/// Changes proposed by this server, waiting to be applied.
#[derive(Default)]
pub(super) struct PendingChanges {
    waiting: Vec<(LogIndex, Term, ChangeReply)>,
}

impl PendingChanges {
    pub(super) fn push(&mut self, index: LogIndex, term: Term, reply: ChangeReply) {
        self.waiting.push((index, term, reply));
    }

    /// Answers every change the state machine has applied up to: done when
    /// the entry at its index still has its term (Log Matching, §5.3), lost
    /// otherwise.
    pub(super) fn settle(&mut self, core: &RaftCore, last_applied: LogIndex) {
        if self.waiting.is_empty() {
            return;
        }
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(index, _, _)| *index <= last_applied);
        self.waiting = waiting;
        for (index, term, reply) in done {
            let result = match core.term_at(index) {
                Some(t) if t == term => Ok(core.membership_at(index).clone()),
                Some(_) => Err(AdminError::Lost),
                // Compacted away already: a snapshot covers it, so it
                // committed, but whose entry it was is no longer known.
                None => Err(AdminError::Refused(format!(
                    "the outcome of the change at index {index} is unknown; check the membership"
                ))),
            };
            let _ = reply.send(result);
        }
    }

    pub(super) fn fail_all(&mut self) {
        for (_, _, reply) in self.waiting.drain(..) {
            let _ = reply.send(Err(AdminError::Stopped));
        }
    }
}

impl<O: Send + 'static> RaftHandle<O> {
    /// The configuration in force on this server (thesis §4.1: the latest
    /// in its log, committed or not).
    pub fn membership(&self) -> Arc<Membership> {
        self.status.borrow().membership.clone()
    }

    /// Leader: makes one membership change (§4.1) and resolves with the new
    /// configuration once it is committed and applied. Adding a voter
    /// should go through [`RaftHandle::add_voter`] instead, which catches it
    /// up as a learner first.
    pub async fn change_membership(&self, change: ConfChange) -> Result<Membership, AdminError> {
        // A leader elected a moment ago commits its first entry within a
        // round trip: wait for that rather than refuse.
        let patience = Instant::now() + self.election_timeout * 4;
        loop {
            let (tx, rx) = oneshot::channel();
            self.commands
                .send(Command::ChangeMembership {
                    change: change.clone(),
                    reply: tx,
                })
                .await
                .map_err(|_| AdminError::Stopped)?;
            match rx.await.map_err(|_| AdminError::Stopped)? {
                Err(AdminError::LeaderNotReady) if Instant::now() < patience => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                result => return result,
            }
        }
    }

    /// Leader: adds `id` as a learner (§4.2.1), waits until it has caught
    /// up, then promotes it to voter. If it does not catch up, it stays a
    /// learner and the error says so.
    pub async fn add_voter(&self, id: NodeId, address: String) -> Result<Membership, AdminError> {
        self.change_membership(ConfChange::AddLearner { id, address })
            .await?;
        self.promote(id).await
    }

    /// Leader: promotes learner `id` to voter once it has caught up
    /// (§4.2.1), so that the change never leaves commits waiting on it.
    pub async fn promote(&self, id: NodeId) -> Result<Membership, AdminError> {
        self.catch_up(id).await?;
        self.change_membership(ConfChange::Promote { id }).await
    }

    /// §4.2.1: replication to `id` in rounds, each to the leader's last
    /// index at its start; caught up once a round takes less than an
    /// election timeout.
    async fn catch_up(&self, id: NodeId) -> Result<(), AdminError> {
        let mut status = self.status.clone();
        for _ in 0..CATCH_UP_ROUNDS {
            let started = Instant::now();
            let goal = {
                let s = status.borrow_and_update();
                leader_only(&s)?;
                if !s.membership.is_learner(id) {
                    return Err(AdminError::Refused(format!("node {id} is not a learner")));
                }
                s.last_log_index
            };
            // A round may last far longer than an election timeout (a
            // snapshot to send); it only has to end.
            let round = async {
                loop {
                    {
                        let s = status.borrow_and_update();
                        leader_only(&s)?;
                        if match_index(&s, id) >= goal {
                            return Ok::<(), AdminError>(());
                        }
                    }
                    status.changed().await.map_err(|_| AdminError::Stopped)?;
                }
            };
            match tokio::time::timeout(self.catch_up_round_limit(), round).await {
                Ok(result) => result?,
                Err(_) => return Err(AdminError::NotCaughtUp { id }),
            }
            if started.elapsed() < self.election_timeout {
                return Ok(());
            }
        }
        Err(AdminError::NotCaughtUp { id })
    }

    /// How long one catch-up round may take before the learner is judged
    /// unable to keep up at all (down, or unreachable).
    fn catch_up_round_limit(&self) -> Duration {
        (self.election_timeout * 100).max(Duration::from_secs(30))
    }

    /// Leader: hands leadership to `target`, or with `None` to the voter
    /// whose log is furthest along (§3.10). Resolves once this server has
    /// heard from `target` as the new leader.
    pub async fn transfer_leadership(&self, target: Option<NodeId>) -> Result<NodeId, AdminError> {
        let target = match target {
            Some(t) => t,
            None => {
                let s = self.status.borrow();
                leader_only(&s)?;
                most_up_to_date_voter(&s).ok_or(AdminError::NoTransferTarget)?
            }
        };
        let mut status = self.status.clone();
        status.borrow_and_update();
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::TransferLeadership { target, reply: tx })
            .await
            .map_err(|_| AdminError::Stopped)?;
        rx.await.map_err(|_| AdminError::Stopped)??;
        // The core ends the transfer when another server leads (this one
        // steps down on its term) or gives up after an election timeout.
        // The status may not show the transfer yet (it is published after
        // the server's round): a leader with no transfer counts as "given
        // up" only once the transfer was seen.
        let mut seen = false;
        let wait = async {
            loop {
                {
                    let s = status.borrow_and_update();
                    if s.leader_id == Some(target) {
                        return Ok(target);
                    }
                    if s.id == target {
                        return Ok(target); // the target itself was asked
                    }
                    seen |= s.transfer_target == Some(target);
                    if seen && s.state == RaftState::Leader && s.transfer_target.is_none() {
                        return Err(AdminError::TransferFailed { target });
                    }
                }
                status.changed().await.map_err(|_| AdminError::Stopped)?;
            }
        };
        match tokio::time::timeout(self.election_timeout * 4, wait).await {
            Ok(result) => result,
            Err(_) => Err(AdminError::TransferFailed { target }),
        }
    }
}

fn leader_only(s: &Status) -> Result<(), AdminError> {
    match s.state {
        RaftState::Leader => Ok(()),
        _ => Err(AdminError::NotLeader {
            leader_hint: s.leader_id,
        }),
    }
}

fn match_index(s: &Status, id: NodeId) -> LogIndex {
    s.replication
        .iter()
        .find(|(peer, _, _)| *peer == id)
        .map_or(0, |(_, m, _)| *m)
}

/// The other voter with the highest match index (ties: the lowest id).
pub(super) fn most_up_to_date_voter(s: &Status) -> Option<NodeId> {
    s.membership
        .voters()
        .iter()
        .copied()
        .filter(|v| *v != s.id)
        .max_by_key(|v| (match_index(s, *v), std::cmp::Reverse(*v)))
}
