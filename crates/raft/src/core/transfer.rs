//! Leadership transfer (thesis §3.10): the leader hands its role to a
//! chosen voter, before maintenance or a graceful shutdown, so that clients
//! see a short handover instead of an election timeout.
//!
//! The thesis's steps: the leader stops accepting new client requests;
//! brings the target's log up to date with its own (ordinary replication);
//! sends it `TimeoutNow`, on which the target starts an election at once,
//! without waiting for its timer and without a pre-vote; and gives up if the
//! transfer has not finished within an election timeout, accepting requests
//! again. The target's RequestVote says it was asked to campaign, so the
//! other servers vote although they heard from the leader recently (the
//! §4.2.3 abstention exists against disruptive servers; this one was sent).
//!
//! Lease reads (thesis §6.4.1) rest on that abstention: once `TimeoutNow`
//! is out, servers may vote for the target at any moment, so the leader
//! answers no more reads from its lease.

use thiserror::Error;

use super::RaftCore;
use crate::message::{Rpc, TimeoutNowArgs};
use crate::types::{NodeId, RaftState};

/// A transfer under way, on the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transfer {
    pub(crate) target: NodeId,
    /// Ticks since it started; it is abandoned after an election timeout.
    pub(crate) elapsed: u64,
    /// `TimeoutNow` went out: the lease is over.
    pub(crate) timeout_now_sent: bool,
}

/// Why [`RaftCore::transfer_leadership`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TransferError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("node {0} is not a voter")]
    NotAVoter(NodeId),
    #[error("a transfer to node {0} is already under way")]
    InProgress(NodeId),
}

impl RaftCore {
    /// Leader: starts handing leadership to `target` (§3.10). Proposals are
    /// refused until it ends: when another server leads (this one steps
    /// down on its higher term), or after an election timeout (then this
    /// one leads on). `target == self` is a no-op.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), TransferError> {
        if self.state != RaftState::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if target == self.id {
            return Ok(());
        }
        if !self.membership.current().is_voter(target) {
            return Err(TransferError::NotAVoter(target));
        }
        if let Some(t) = self.transfer {
            if t.target == target {
                return Ok(());
            }
            return Err(TransferError::InProgress(t.target));
        }
        tracing::info!(
            id = self.id,
            term = self.term,
            target,
            "transferring leadership"
        );
        self.transfer = Some(Transfer {
            target,
            elapsed: 0,
            timeout_now_sent: false,
        });
        // Step 2: bring its log up to date; `handle_append_reply` calls
        // `maybe_send_timeout_now` as it catches up. Whatever is in flight
        // to it may have been lost: probe from its match index now rather
        // than wait an election timeout (the transfer's whole budget) for
        // the usual recovery.
        if self
            .progress
            .get(&target)
            .is_some_and(|p| p.match_index < self.log.last_index())
        {
            self.report_unreachable(target);
        }
        self.send_appends(target);
        self.maybe_send_timeout_now(target);
        Ok(())
    }

    /// The target of the transfer under way, if any.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.target)
    }

    /// Step 3: once `peer`, the target, holds our whole log, tell it to
    /// campaign now.
    pub(super) fn maybe_send_timeout_now(&mut self, peer: NodeId) {
        let last = self.log.last_index();
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        if t.target != peer || t.timeout_now_sent {
            return;
        }
        if self
            .progress
            .get(&peer)
            .is_none_or(|p| p.match_index < last)
        {
            return;
        }
        t.timeout_now_sent = true;
        let args = TimeoutNowArgs {
            term: self.term,
            leader_id: self.id,
        };
        self.send_now(peer, Rpc::TimeoutNow(args));
    }

    /// Step 4: a transfer that did not end within an election timeout is
    /// abandoned, and proposals are accepted again.
    pub(super) fn tick_transfer(&mut self) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        t.elapsed += 1;
        if t.elapsed >= self.election_ticks_min {
            tracing::info!(
                id = self.id,
                target = t.target,
                "leadership transfer timed out"
            );
            self.transfer = None;
        }
    }

    /// The target: `TimeoutNow` from the leader of our term. A voter that
    /// may vote campaigns at once, skipping pre-vote (thesis §9.6 would
    /// only ask the others whether it may, and they would say no: they hear
    /// from the leader).
    pub(super) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.state != RaftState::Follower
            || self.leader_id != Some(from)
            || !self.membership.current().is_voter(self.id)
            || !self.may_vote
        {
            return;
        }
        tracing::info!(
            id = self.id,
            term = self.term,
            from,
            "asked to campaign (leadership transfer)"
        );
        self.become_candidate_for_transfer();
    }
}
