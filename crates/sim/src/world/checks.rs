//! The per-step checks over every node's core and disk: commit safety
//! (a committed entry survives on any majority a new leader could win),
//! Election Safety, commit indexes that never go back, Leader Append-Only.

use super::*;

/// The voters of the configuration a log would campaign in, and whether it
/// may campaign with it.
type Campaign = (Vec<NodeId>, bool);
type CampaignRef<'a> = (&'a [NodeId], bool);

impl World {
    /// Commit safety after every step (see `Invariants::check_commit_safety`).
    pub(super) fn check_commit_safety(&mut self) {
        let Some((index, _)) = self.inv.last_committed() else {
            return;
        };
        let Some((_, committed_term)) = self.inv.last_committed() else {
            return;
        };
        // The configuration each view would campaign in (thesis §4.1), and
        // whether it may campaign at all (`RaftCore::may_campaign`): the
        // core's, and the one a restart would start from. Without
        // membership changes, always the bootstrap list.
        let configs: Vec<(Campaign, Campaign)> = if self.opts.faults.membership {
            self.nodes
                .iter()
                .map(|n| {
                    let me = n.id;
                    let voters_of = |m: &Option<Membership>| {
                        m.as_ref()
                            .map_or_else(|| n.bootstrap.voters().to_vec(), |m| m.voters().to_vec())
                    };
                    let r = n.disk.restart_membership();
                    let disk_voters = voters_of(&r.latest);
                    let disk_may = disk_voters.contains(&me)
                        || (r.from_log && voters_of(&r.before).contains(&me));
                    let core = n.core().map_or_else(
                        || (Vec::new(), false),
                        |c| {
                            let (m, latest) = c.membership();
                            let may = m.is_voter(me)
                                || (latest > c.commit_index()
                                    && c.membership_at(latest.saturating_sub(1)).is_voter(me));
                            (m.voters().to_vec(), may)
                        },
                    );
                    ((disk_voters, disk_may), core)
                })
                .collect()
        } else {
            Vec::new()
        };
        let all = &self.ids;
        let ignore_vote_right = self.has_bug(crate::Bug::IgnoreVoteRight);
        // A snapshot holds only committed entries (the state digests check
        // it), so the index it covers counts as held with its committed term.
        let logs: Vec<CandidateLogs<'_>> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(x, n)| {
                let ((disk_voters, disk_may), (core_voters, core_may)): (CampaignRef, CampaignRef) =
                    match configs.get(x) {
                        Some(((d, dm), (c, cm))) => ((d, *dm), (c, *cm)),
                        None => ((all, true), (all, true)),
                    };
                // What a restart would present: snapshot + log, reconciled.
                let (last_index, last_term, covered) = n.disk.restart_view();
                let durable_term = if index <= covered {
                    Some(committed_term)
                } else if index <= last_index {
                    n.disk.durable_term(index)
                } else {
                    None
                };
                let mut views = vec![(
                    LogView {
                        last_index,
                        last_term,
                        term_at_committed: durable_term,
                        committed_index: index,
                    },
                    disk_voters,
                    disk_may,
                )];
                if let Some(core) = n.core() {
                    let term = if index <= core.snapshot_index() {
                        Some(committed_term)
                    } else {
                        core.entry(index).map(|e| e.term)
                    };
                    views.push((
                        LogView {
                            last_index: core.last_log_index(),
                            last_term: core.last_log_term(),
                            term_at_committed: term,
                            committed_index: index,
                        },
                        core_voters,
                        core_may,
                    ));
                }
                // A node that may not vote now (its data dir is new and not
                // cleared yet, or was wiped) can neither be elected nor help
                // elect anyone; when it is cleared, the check of that step
                // counts it.
                let may_vote = !n.wiped
                    && match n.vote_right {
                        VoteRight::Allowed => true,
                        VoteRight::Pending { .. } => ignore_vote_right,
                        VoteRight::Suspended => false,
                    };
                (n.id, may_vote, views)
            })
            .collect();
        let result = self.inv.check_commit_safety(&logs);
        self.check(result);
    }

    /// The per-step checks of one node, after it handled an input.
    pub(super) fn check_node(&mut self, x: usize) {
        if self.violation.is_some() {
            return;
        }
        let node = &mut self.nodes[x];
        let id = node.id;
        let Some(core) = node.driver.as_ref().map(Driver::core) else {
            return;
        };
        let role = (core.state(), core.term());
        let commit = core.commit_index();
        let mut lines = Vec::new();
        let mut result = Ok(());
        let elected = role != node.role && role.0 == RaftState::Leader;
        if role != node.role {
            lines.push(format!(
                "n{id} {} term {} leader {} commit {} last {}/{}",
                role.0,
                role.1,
                fmt_vote(core.leader_id()),
                commit,
                core.last_log_index(),
                core.last_log_term()
            ));
            if role.0 == RaftState::Leader {
                self.stats.elections += 1;
                node.leader_last = None;
                result = self
                    .inv
                    .on_leader(id, role.1)
                    .and_then(|_| self.inv.on_elected(id, core));
                let (config, latest) = core.membership();
                // Thesis §4.1: a server campaigns, and so can win, only as a
                // voter of the configuration its log ends with, or (§4.2.2)
                // as a voter whose own removal is not committed yet.
                let may_lead = config.is_voter(id)
                    || (latest > core.commit_index()
                        && core.membership_at(latest.saturating_sub(1)).is_voter(id));
                if result.is_ok() && !may_lead {
                    result = Err((
                        ViolationKind::Membership,
                        format!(
                            "n{id} leads term {} but is not a voter of its configuration {:?} (index {})",
                            role.1,
                            core.membership().0.voters(),
                            core.membership().1
                        ),
                    ));
                }
            }
            node.role = role;
        }
        if result.is_ok() {
            if commit < node.last_commit {
                result = Err((
                    ViolationKind::CommitIndexDecreased,
                    format!(
                        "n{id} commit index went from {} to {commit} without a crash",
                        node.last_commit
                    ),
                ));
            } else if commit > node.last_commit {
                lines.push(format!("n{id} commit {} → {commit}", node.last_commit));
                result = self.inv.on_commit(id, core, node.last_commit, commit);
                node.last_commit = commit;
            }
        }
        if result.is_ok() && commit > core.last_log_index() {
            result = Err((
                ViolationKind::CommittedEntryRemoved,
                format!(
                    "n{id} has commit index {commit} but its log ends at {}",
                    core.last_log_index()
                ),
            ));
        }
        if result.is_ok() && core.is_leader() {
            let last = core.last_log_index();
            if let Some((t, before)) = node.leader_last {
                if t == role.1 && last < before {
                    result = Err((
                        ViolationKind::LeaderAppendOnly,
                        format!("leader n{id} of term {t} shrank its log from {before} to {last}"),
                    ));
                }
            }
        }
        // Jepsen-style targeted nemesis: the moments right after a node
        // votes or takes office are where persistence and commitment bugs
        // hide, so crash there now and then.
        let vote = core.voted_for();
        let voted = vote.is_some() && vote != node.voted_for && vote != Some(id);
        node.voted_for = vote;
        let inc = node.inc;
        for line in lines {
            self.trace(line);
        }
        self.check(result);
        self.follow_configuration(x);
        if self.faults_on
            && self.opts.faults.node_faults()
            && (voted || elected)
            && self.rng.chance(TARGETED_CRASH_CHANCE)
        {
            let at = self.now + self.rng.range(0, if voted { 3_000 } else { 50_000 });
            self.schedule(at, Event::Crash { node: x, inc });
        }
    }
}
