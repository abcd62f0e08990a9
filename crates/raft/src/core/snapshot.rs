//! Snapshots and log compaction (§7): what a follower does with each chunk of
//! InstallSnapshot, installing one, compacting the log behind the state
//! machine, and the leader's side of a transfer.

use super::*;

impl RaftCore {
    pub(super) fn snapshot_reply(&self, success: bool, installed: bool) -> InstallSnapshotReply {
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
        if args.term < self.term || from == self.id || from == 0 {
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
    ///
    /// `membership` is the snapshot's configuration (§7: a snapshot holds
    /// "the latest configuration as of the last included index"); it is in
    /// force unless a kept suffix of the log has a later one.
    pub fn restore_snapshot(
        &mut self,
        index: LogIndex,
        term: Term,
        membership: Membership,
    ) -> Option<bool> {
        if index <= self.commit_index {
            return None;
        }
        let kept = self.log.restore(index, term);
        if kept {
            self.membership.compact(index);
        } else {
            self.membership.reset(index, membership);
        }
        self.membership_changed();
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
        let compacted = self.log.compact(index);
        if compacted {
            self.membership.compact(index);
        }
        compacted
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
        p.inflight.reset();
        if success {
            p.match_index = p.match_index.max(index);
            p.next_index = index + 1;
            p.ticks_since_ack = 0;
            self.maybe_commit();
            self.send_appends(peer);
        }
    }
}
