//! Log replication (§5.3) and the commit rule (§5.4.2): proposals, the
//! follower's consistency check and conflict truncation, the leader's
//! per-follower progress (probing, pipelining, fast backup), heartbeats, and
//! advancing the commit index only by an entry of the leader's own term.

use super::*;

impl RaftCore {
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
        // Thesis §3.10 step 1: no new requests while handing over, so the
        // target can catch up with a log that stops growing.
        if let Some(t) = self.transfer {
            return Err(ProposeError::Transferring { target: t.target });
        }
        let index = self.log.last_index() + 1;
        self.log.append(LogEntry::new(self.term, index, data));
        self.need_broadcast = true;
        Ok((index, self.term))
    }

    pub(super) fn handle_append_entries(&mut self, from: NodeId, a: AppendEntriesArgs) {
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
                    self.log_changed_from(a.prev_log_index + 1);
                }
                let first_written = self.log.append_from_leader(a.entries);
                if let Some(first) = first_written {
                    // §4.1: configurations in what was cut off are gone;
                    // those in what came in are in force now.
                    self.log_changed_from(first);
                }
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

    pub(super) fn append_reply(
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

    pub(super) fn handle_append_reply(&mut self, from: NodeId, r: AppendEntriesReply) {
        if self.state != RaftState::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.ticks_since_contact = 0;
        p.record_vote_right(r.voter);
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
            p.inflight.free_to(m);
            self.maybe_commit();
            self.maybe_send_timeout_now(from);
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
            p.inflight.reset();
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
            p.inflight.reset();
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
    pub(super) fn send_appends(&mut self, to: NodeId) -> bool {
        let mut sent = false;
        loop {
            let Some(p) = self.progress.get(&to) else {
                return sent;
            };
            let can_send = if p.probing {
                p.inflight.is_empty()
            } else {
                !p.inflight.is_full(self.config.max_inflight_appends)
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
                    p.inflight.reset();
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
                p.inflight.add(last);
                p.commit_told = p.commit_told.max(commit.min(last));
                if !probing {
                    // Pipelining: assume success and move on.
                    p.next_index = last + 1;
                }
            }
            self.send_append(to, args);
            sent = true;
            if probing {
                return sent;
            }
        }
    }

    /// Thesis §10.2.1: a leader's AppendEntries may leave before its own
    /// disk write, because its term was durable before it could be elected
    /// (its RequestVotes waited for it). A leader that elected itself alone
    /// (the only voter, learners around it) asked nobody: until the Ready
    /// with its term and its no-op is durable, its AppendEntries wait too.
    /// Otherwise a power loss takes it back to the old term, it wins the
    /// same term again with a different log, and a learner that got the
    /// first one holds another entry under the same index and term (Log
    /// Matching broken). The simulator found it (seed 5018705).
    fn send_append(&mut self, to: NodeId, args: AppendEntriesArgs) {
        if self.persisted_index < self.term_durable_at {
            self.send_after_persist(to, Rpc::AppendEntries(args));
        } else {
            self.send_now(to, Rpc::AppendEntries(args));
        }
    }

    /// A heartbeat is an AppendEntries with no entries whose consistency
    /// check is at the follower's known match index, so it always succeeds on
    /// a follower of this term and never interferes with entries in flight.
    pub(super) fn send_heartbeat(&mut self, to: NodeId) {
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
        self.send_append(to, args);
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let peers = self.replication_targets();
        for peer in peers {
            let recover = match self.progress.get_mut(&peer) {
                Some(p) if p.probing => {
                    // Re-send a probe that may have been lost.
                    p.inflight.reset();
                    true
                }
                Some(p)
                    if !p.inflight.is_empty() && p.ticks_since_ack >= self.election_ticks_min =>
                {
                    // Entries in flight for a whole election timeout with no
                    // acknowledgement: assume they were lost and probe again.
                    p.probing = true;
                    p.next_index = p.match_index + 1;
                    p.inflight.reset();
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
    pub(super) fn maybe_commit(&mut self) {
        if self.state != RaftState::Leader {
            return;
        }
        // A follower that may not vote holds entries but counts for no
        // majority: it forgot its term, so it may have acknowledged a
        // deposed leader (`AppendEntriesReply::voter`).
        // Thesis §10.2.1: the leader counts its own copy once durable.
        let n = self.voters_agreed_value(self.persisted_index, |p| p.match_index);
        if n <= self.commit_index {
            return;
        }
        // Figure 8: an entry from an earlier term is never committed by
        // counting replicas; it commits only indirectly, when an entry of the
        // current term after it does.
        let own_term = self.log.term(n) == Some(self.term);
        if own_term || self.bugs.commit_previous_term_by_counting {
            let config_index = self.membership.current_index();
            let config_committed = self.commit_index < config_index && n >= config_index;
            self.commit_index = n;
            if config_committed {
                // The servers it removed are no longer replicated to.
                self.membership_changed();
            }
            self.need_broadcast = true;
            if own_term && !self.reads_awaiting_commit.is_empty() {
                for id in std::mem::take(&mut self.reads_awaiting_commit) {
                    self.register_read(id);
                }
            }
            self.maybe_step_down_removed();
        }
    }
}
