//! Elections (§5.2), pre-vote (thesis §9.6) and check-quorum (thesis §6.2):
//! the election timer, the roles a server passes through on its way to
//! leading (Figure 4), the vote rule with §5.4.1's up-to-date check, and what
//! a new leader does on taking office.

use super::quorum::{self, VoteResult};
use super::*;

impl RaftCore {
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.tick_transfer();
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
            self.forget_departed();
            if self.config.lease_reads {
                // Thesis §6.4.1: every heartbeat is a new round, so each
                // majority of acknowledgements extends the lease.
                self.start_read_round();
            }
            self.broadcast_heartbeat();
        }
    }

    pub(super) fn quorum_recently_active(&self) -> bool {
        self.voters_agree(|p| p.ticks_since_contact < self.election_ticks_min)
    }

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.randomized_election_timeout = self
            .rng
            .u64(self.election_ticks_min..self.election_ticks_max);
    }

    pub(super) fn campaign(&mut self) {
        if !self.may_campaign() {
            self.reset_election_timer();
            return;
        }
        if self.config.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate();
        }
    }

    /// §4.2.2: a server that is not a voter of its latest configuration (a
    /// learner, a node that was removed, one still joining) never
    /// campaigns, with one exception: a voter whose own removal is in its
    /// log but not known committed. A leader that removed itself leads
    /// until the removal commits; if it lost leadership before it had
    /// replicated the entry to the new voters, they lack it and cannot
    /// win without its vote, which its longer log refuses, so it must be
    /// the one to campaign again and finish the change. Only the new
    /// voters' votes count (`vote_result` uses the latest configuration,
    /// which does not contain it), and once its removal commits it steps
    /// down (`maybe_step_down_removed`). The simulator found the deadlock
    /// without this (issue 15).
    pub(super) fn may_campaign(&self) -> bool {
        let latest = self.membership.current_index();
        self.membership.current().is_voter(self.id)
            || (latest > self.commit_index
                && self
                    .membership
                    .at(latest.saturating_sub(1))
                    .is_voter(self.id))
    }

    pub(super) fn become_pre_candidate(&mut self) {
        self.state = RaftState::PreCandidate;
        self.leader_id = None;
        self.progress.clear();
        self.fail_pending_reads();
        self.reset_election_timer();
        self.votes.clear();
        self.votes.insert(self.id, true);
        tracing::debug!(id = self.id, term = self.term, "pre-vote campaign");
        if self.vote_result() == VoteResult::Won {
            self.become_candidate();
            return;
        }
        self.request_votes(self.term + 1, true, false);
    }

    /// Thesis §3.10: `TimeoutNow` from the leader: campaign now, telling
    /// the voters that this election was asked for.
    pub(super) fn become_candidate_for_transfer(&mut self) {
        self.start_election(true);
    }

    pub(super) fn become_candidate(&mut self) {
        self.start_election(false);
    }

    fn start_election(&mut self, leadership_transfer: bool) {
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
        if self.vote_result() == VoteResult::Won {
            self.become_leader();
            return;
        }
        self.request_votes(self.term, false, leadership_transfer);
    }

    pub(super) fn request_votes(&mut self, term: Term, pre_vote: bool, leadership_transfer: bool) {
        let args = RequestVoteArgs {
            term,
            candidate_id: self.id,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote,
            leadership_transfer,
        };
        let peers: Vec<NodeId> = self.peers().collect();
        for peer in peers {
            // Sent after persistence: the candidate's new term and self-vote
            // must be durable before it asks (a restarted node must not vote
            // again in a term where it already voted for itself).
            self.send_after_persist(peer, Rpc::RequestVote(args.clone()));
        }
    }

    /// §5.2: "A candidate wins an election if it receives votes from a
    /// majority of the servers in the full cluster for the same term."
    pub(super) fn vote_result(&self) -> VoteResult {
        quorum::vote_result(self.voters(), &self.votes)
    }

    pub(super) fn handle_request_vote(&mut self, from: NodeId, a: RequestVoteArgs) {
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

    pub(super) fn handle_vote_reply(&mut self, from: NodeId, r: RequestVoteReply) {
        let expected = match self.state {
            RaftState::PreCandidate if r.pre_vote => !r.vote_granted || r.term == self.term + 1,
            RaftState::Candidate if !r.pre_vote => r.term == self.term,
            _ => false,
        };
        if !expected {
            return;
        }
        self.votes.insert(from, r.vote_granted);
        match self.vote_result() {
            VoteResult::Won if self.state == RaftState::PreCandidate => self.become_candidate(),
            VoteResult::Won => self.become_leader(),
            // Lost: wait for a leader or the next timeout as a follower.
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
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
        self.transfer = None;
        self.fail_pending_reads();
        self.reset_election_timer();
        if was_leader {
            tracing::info!(id = self.id, term = self.term, "stepped down");
        }
    }

    pub(super) fn become_leader(&mut self) {
        tracing::info!(id = self.id, term = self.term, "became leader");
        self.state = RaftState::Leader;
        self.leader_id = Some(self.id);
        // Elected by its own vote alone (the only voter), it asked nobody,
        // so its new term is not durable yet: replication waits for the
        // disk until the no-op is (`send_append`).
        let alone = !self
            .votes
            .iter()
            .any(|(&id, &granted)| id != self.id && granted);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        // Figure 2: nextIndex "initialized to leader last log index + 1",
        // for every voter and learner (§4.2.1: learners get the log too),
        // and for servers an uncommitted change removes (they must hear of it).
        let next_index = self.log.last_index() + 1;
        let peers = self.replication_targets();
        self.progress = peers
            .into_iter()
            .map(|p| (p, Progress::new(next_index)))
            .collect();
        // §8: a leader commits a blank no-op entry at the start of its term, so
        // that entries of earlier terms commit (§5.4.2) and reads are safe.
        if !self.bugs.skip_noop_on_election {
            let index = self.log.last_index() + 1;
            self.log.append(LogEntry::noop(self.term, index));
        }
        self.term_durable_at = if alone { self.log.last_index() } else { 0 };
        self.need_broadcast = true;
        self.round_started.clear();
        if self.config.lease_reads {
            // The no-op's AppendEntries carry the first round of the lease.
            self.start_read_round();
        }
        self.maybe_commit();
    }

    // ----- Log replication (§5.3) -------------------------------------------
}
