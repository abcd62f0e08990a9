//! Linearizable reads without log entries (thesis §6.4): ReadIndex, with a
//! heartbeat round that confirms leadership, and leases (thesis §6.4.1),
//! which trust the election timeout instead of a round.

use super::*;

impl RaftCore {
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
    pub(super) fn lease_valid(&mut self) -> bool {
        if !self.config.lease_reads || self.state != RaftState::Leader {
            return false;
        }
        // Thesis §3.10: after `TimeoutNow` the voters may elect the target
        // at any moment, abstention or not: no lease.
        if self.transfer.is_some_and(|t| t.timeout_now_sent) {
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
    pub(super) fn quorum_read_round(&self) -> Option<u64> {
        // A follower that may not vote confirms nothing (it may be behind
        // a term it forgot).
        let round = self.voters_agreed_value(self.read_round, |p| p.read_round);
        // Round 0 is "none yet": no round has been echoed.
        (round > 0).then_some(round)
    }

    /// Reads wait for a round, and none is in flight: at most one ReadIndex
    /// round is outstanding, and every read that arrives meanwhile shares
    /// the next one (batching by design: under load, a round per round
    /// trip, not a round per loop turn). A lost round is re-sent by the next
    /// heartbeat, which carries the same round number.
    pub(super) fn read_round_can_start(&self) -> bool {
        self.read_round_needed && !self.read_round_in_flight()
    }

    /// The newest round has not yet been echoed by a majority.
    pub(super) fn read_round_in_flight(&self) -> bool {
        !self.voters_agree(|p| p.read_round >= self.read_round)
    }

    pub(super) fn start_read_round(&mut self) {
        self.read_round += 1;
        if self.config.lease_reads {
            self.round_started.push_back((self.read_round, self.ticks));
        }
    }

    pub(super) fn register_read(&mut self, id: u64) {
        if self.voters() == [self.id] || self.bugs.read_without_quorum_check {
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

    /// True while this node believes a leader is alive: a follower that heard
    /// from one within the minimum election timeout, or a leader in contact
    /// with a majority.
    pub(super) fn in_lease(&self) -> bool {
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

    /// Answers the pending reads whose heartbeat round a majority has echoed.
    pub(super) fn release_reads(&mut self) {
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

    pub(super) fn fail_pending_reads(&mut self) {
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
}
