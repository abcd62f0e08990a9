//! Thesis chapter 4, cluster membership changes, at the level of the core:
//! configurations as log entries in force when appended (§4.1), one change
//! at a time, learners that catch up before they vote (§4.2.1), removing the
//! leader (§4.2.2), removed servers that cannot disrupt (§4.2.3), and the
//! configuration surviving restarts and compaction.

mod common;

use common::{config, Cluster};
use raft::{ConfChange, MembershipError, RaftState, Rpc};

fn add_learner(id: u64) -> ConfChange {
    ConfChange::AddLearner {
        id,
        address: format!("127.0.0.1:{}", 7000 + id),
    }
}

/// Proposes `change` on `leader` and runs the cluster until it is quiet.
fn change(c: &mut Cluster, leader: u64, change: ConfChange) -> u64 {
    let (index, _) = match c.core_mut(leader).propose_conf_change(&change) {
        Ok(taken) => taken,
        Err(e) => panic!("the leader refused {change:?}: {e}"),
    };
    c.deliver();
    index
}

/// A 3-node cluster led by node 1, with node 4 added as a learner and
/// caught up.
fn three_and_a_learner() -> Cluster {
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    c.add_node(4);
    change(&mut c, 1, add_learner(4));
    c
}

// ----- §4.1: a configuration is an entry, in force once appended ------------

#[test]
fn a_configuration_is_in_force_as_soon_as_it_is_appended_not_when_it_commits() {
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    c.add_node(4);
    let (index, _) = c
        .core_mut(1)
        .propose_conf_change(&add_learner(4))
        .expect("the leader takes the change");
    // Nothing delivered yet: not committed, but the leader already uses it.
    assert!(c.core(1).commit_index() < index);
    assert_eq!(c.core(1).learners(), &[4]);
    assert_eq!(c.core(2).learners(), &[] as &[u64]);
    // Followers use it once they append it, before they learn it committed.
    c.drop_if = Some(Box::new(|m| matches!(m.rpc, Rpc::AppendEntriesReply(_))));
    c.deliver();
    assert!(c.core(2).commit_index() < index);
    assert_eq!(c.core(2).learners(), &[4]);
    assert_eq!(c.core(2).membership().1, index);
}

#[test]
fn a_configuration_entry_cut_from_the_log_takes_its_configuration_with_it() {
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    // Node 1 appends a change that reaches no one, and loses leadership.
    c.add_node(4);
    c.partition(&[&[1], &[2, 3], &[4]]);
    c.core_mut(1)
        .propose_conf_change(&add_learner(4))
        .expect("the leader takes the change");
    c.deliver();
    assert_eq!(c.core(1).learners(), &[4]);
    c.elect(2);
    c.propose(2, b"x");
    c.deliver();
    c.heal();
    c.tick_all(30);
    // Node 2's log overwrote the entry on node 1: the configuration before
    // it is back in force there.
    assert_eq!(c.core(1).state(), RaftState::Follower);
    assert_eq!(c.core(1).learners(), &[] as &[u64]);
    assert_eq!(c.core(1).voters(), &[1, 2, 3]);
}

#[test]
fn only_one_change_at_a_time() {
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    c.add_node(4);
    c.add_node(5);
    let (index, _) = c
        .core_mut(1)
        .propose_conf_change(&add_learner(4))
        .expect("the first change");
    assert_eq!(
        c.core_mut(1).propose_conf_change(&add_learner(5)),
        Err(MembershipError::ChangeInProgress { index })
    );
    c.deliver();
    // Committed: the next one may go.
    assert!(c.core(1).commit_index() >= index);
    change(&mut c, 1, add_learner(5));
    assert_eq!(c.core(1).learners(), &[4, 5]);
}

#[test]
fn a_new_leader_changes_nothing_before_it_commits_an_entry_of_its_term() {
    // The thesis errata for single-server changes: a leader that has not
    // committed in its term may not know whether an earlier change is
    // committed, so it may not start another.
    let mut c = Cluster::new(3, config(false, false));
    c.drop_if = Some(Box::new(|m| matches!(m.rpc, Rpc::AppendEntriesReply(_))));
    c.campaign(1);
    assert_eq!(c.core(1).state(), RaftState::Leader);
    assert_eq!(
        c.core_mut(1).propose_conf_change(&add_learner(4)),
        Err(MembershipError::LeaderNotReady)
    );
    c.drop_if = None;
    // Entries unacknowledged for an election timeout are sent again.
    c.tick_all(30);
    c.add_node(4);
    change(&mut c, 1, add_learner(4));
}

#[test]
fn changes_are_refused_by_followers_and_when_they_make_no_sense() {
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    assert_eq!(
        c.core_mut(2).propose_conf_change(&add_learner(4)),
        Err(MembershipError::NotLeader {
            leader_hint: Some(1)
        })
    );
    assert!(matches!(
        c.core_mut(1).propose_conf_change(&add_learner(2)),
        Err(MembershipError::Invalid(_))
    ));
    assert!(matches!(
        c.core_mut(1)
            .propose_conf_change(&ConfChange::Promote { id: 9 }),
        Err(MembershipError::Invalid(_))
    ));
}

// ----- §4.2.1: learners catch up first, and count for nothing -----------------

#[test]
fn a_learner_receives_the_log_but_counts_toward_no_majority() {
    let mut c = three_and_a_learner();
    c.propose(1, b"a");
    c.deliver();
    assert_eq!(
        c.applied_data(4),
        vec![b"a".to_vec()],
        "the learner has the log"
    );
    // With both other voters down, the learner's acknowledgement is not
    // enough for a majority of {1, 2, 3}.
    c.crash(2);
    c.crash(3);
    let (index, _) = c.propose(1, b"b");
    c.deliver();
    assert!(c.core(1).commit_index() < index, "no commit without voters");
    assert_eq!(c.core(4).last_log_index(), index, "the learner has it");
}

#[test]
fn a_learner_never_campaigns() {
    let mut c = three_and_a_learner();
    c.crash(1);
    let term = c.core(4).term();
    for _ in 0..200 {
        c.tick(4);
    }
    assert_eq!(c.core(4).state(), RaftState::Follower);
    assert_eq!(c.core(4).term(), term);
}

#[test]
fn a_promoted_learner_votes_and_counts_in_the_majority() {
    let mut c = three_and_a_learner();
    change(&mut c, 1, ConfChange::Promote { id: 4 });
    assert_eq!(c.core(1).voters(), &[1, 2, 3, 4]);
    assert_eq!(c.core(4).voters(), &[1, 2, 3, 4]);
    // Four voters: a majority is three. 1, 3 and 4 commit without 2 ...
    c.crash(2);
    let (index, _) = c.propose(1, b"with 4");
    c.deliver();
    assert!(c.core(1).commit_index() >= index);
    // ... but 1 and 4 alone cannot.
    c.crash(3);
    let (index, _) = c.propose(1, b"without 3");
    c.deliver();
    assert!(c.core(1).commit_index() < index);
}

/// A joining server's new data dir may not vote at first (its replies say
/// so: `crate::incarnation`), and may once every voter has cleared it; from
/// then on its acknowledgements count, under the same leader.
#[test]
fn a_promoted_server_that_gains_its_vote_right_counts_from_then_on() {
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    c.add_node(4);
    c.core_mut(4).set_may_vote(false);
    change(&mut c, 1, add_learner(4));
    change(&mut c, 1, ConfChange::Promote { id: 4 });
    c.core_mut(4).set_may_vote(true);
    let (index, _) = c.propose(1, b"heard from 4");
    c.deliver();
    assert!(c.core(1).commit_index() >= index);
    // Four voters, a majority of three: without node 3, node 4 must count.
    c.crash(3);
    let (index, _) = c.propose(1, b"needs 4");
    c.deliver();
    assert!(
        c.core(1).commit_index() >= index,
        "node 4's acknowledgement counts"
    );
}

#[test]
fn a_node_that_joins_knows_no_one_and_never_campaigns_until_added() {
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    c.add_node(4);
    assert_eq!(c.core(4).voters(), &[] as &[u64]);
    for _ in 0..200 {
        c.tick(4);
    }
    assert_eq!(c.core(4).term(), 0, "it never started an election");
    change(&mut c, 1, add_learner(4));
    assert_eq!(c.core(4).voters(), &[1, 2, 3]);
    assert_eq!(c.core(4).learners(), &[4]);
}

// ----- §4.2.2: removing servers, the leader included -------------------------

#[test]
fn a_removed_follower_is_no_longer_replicated_to_or_counted() {
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    change(&mut c, 1, ConfChange::Remove { id: 3 });
    assert_eq!(c.core(1).voters(), &[1, 2]);
    // Two voters: both are needed, and node 3 is not asked.
    let before = c.delivered.len();
    let (index, _) = c.propose(1, b"x");
    c.deliver();
    assert!(c.core(1).commit_index() >= index);
    assert!(
        c.delivered[before..].iter().all(|m| m.to != 3),
        "nothing goes to a removed server"
    );
    c.crash(2);
    let (index, _) = c.propose(1, b"y");
    c.deliver();
    assert!(c.core(1).commit_index() < index);
}

/// The leader goes on replicating to a server it removes until the removal
/// commits, so the removed server holds the entry that removes it: it knows
/// it is no longer a member, and never campaigns (instead of timing out in
/// silence and relying on §4.2.3 to be ignored).
#[test]
fn a_removed_follower_receives_its_removal_and_never_campaigns() {
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    change(&mut c, 1, ConfChange::Remove { id: 3 });
    assert_eq!(c.core(3).voters(), &[1, 2], "node 3 appended its removal");
    let term = c.core(3).term();
    for _ in 0..200 {
        c.tick(3);
    }
    assert_eq!(c.core(3).term(), term, "a removed server never campaigns");
    assert_ne!(c.core(3).state(), RaftState::Candidate);
}

#[test]
fn a_removed_follower_cut_off_during_its_removal_learns_of_it_when_it_returns() {
    let mut c = Cluster::new(3, config(true, true));
    c.elect(1);
    c.partition(&[&[1, 2], &[3]]);
    change(&mut c, 1, ConfChange::Remove { id: 3 });
    assert_eq!(
        c.core(3).voters(),
        &[1, 2, 3],
        "cut off: it has not heard yet"
    );
    c.heal();
    for _ in 0..30 {
        c.tick(1);
        c.deliver();
    }
    assert_eq!(
        c.core(3).voters(),
        &[1, 2],
        "the leader kept at it until it knew"
    );
    // Once it holds its removal, it is left alone.
    let before = c.delivered.len();
    for _ in 0..30 {
        c.tick(1);
        c.deliver();
    }
    assert!(c.delivered[before..].iter().all(|m| m.to != 3));
}

#[test]
fn a_leader_removing_itself_leads_until_the_change_commits_then_steps_down() {
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    let (index, _) = c
        .core_mut(1)
        .propose_conf_change(&ConfChange::Remove { id: 1 })
        .expect("the leader takes its own removal");
    // Still leading, but not counting itself: with node 3 down, node 2 alone
    // is not a majority of {2, 3}, so the removal cannot commit.
    c.crash(3);
    c.deliver();
    assert_eq!(c.core(1).state(), RaftState::Leader);
    assert!(c.core(1).commit_index() < index);
    // Once node 3 is back the removal commits, and node 1 steps down.
    c.restart(3);
    // (What was in flight to node 3 is sent again after an election
    // timeout without an acknowledgement.)
    c.tick_all(30);
    assert!(c.core(2).commit_index() >= index);
    assert_ne!(c.core(1).state(), RaftState::Leader);
    // The others elect a leader among themselves; node 1 never campaigns.
    c.tick_all(100);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1);
    assert!(leaders[0] == 2 || leaders[0] == 3, "leaders: {leaders:?}");
    assert!(c.core(1).term() <= c.core(leaders[0]).term());
    assert_eq!(c.core(1).state(), RaftState::Follower);
}

#[test]
fn a_leader_that_lost_leadership_before_its_removal_reached_anyone_campaigns_to_finish_it() {
    // Node 1 leads {1, 2} (node 3 was removed) and appends its own
    // removal, which makes {2}; then it stops leading before node 2 has
    // the entry. Node 2, still in {1, 2}, needs node 1's vote, which node
    // 1's longer log refuses; node 1 is no voter of {2}. Without the
    // §4.2.2 exception neither ever leads again (seed 61 of the simulator).
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    change(&mut c, 1, ConfChange::Remove { id: 3 });
    c.crash(3);
    let (index, _) = c
        .core_mut(1)
        .propose_conf_change(&ConfChange::Remove { id: 1 })
        .expect("the leader takes its own removal");
    // Persisted on node 1; its AppendEntries are lost.
    c.process(1);
    c.drop_queue();
    c.crash(1);
    c.restart(1);
    assert_eq!(c.core(1).voters(), &[2]);
    assert!(c.core(2).voters().contains(&1), "node 2 lacks the removal");
    c.tick_all(200);
    // Node 1 campaigned (counting node 2's vote only), committed its
    // removal as leader, and stepped down; node 2 now leads {2} alone.
    assert!(c.core(2).commit_index() >= index);
    assert_eq!(c.core(2).voters(), &[2]);
    assert_eq!(c.leaders(), vec![2]);
    assert_eq!(c.core(1).state(), RaftState::Follower);
}

#[test]
fn a_lone_voter_replicates_to_its_learners_only_once_its_new_term_is_durable() {
    // A leader elected by its own vote alone asked nobody, so nothing made
    // its term durable first (thesis §10.2.1's early AppendEntries rest on
    // that). Sent early, a power loss could take it back to the old term;
    // it would win the same term again with another entry at the same
    // index, and the learner would hold two logs under one (index, term).
    // Found by the simulator (seed 5018705).
    let mut c = Cluster::new(1, config(false, false));
    c.elect(1);
    c.add_node(2);
    change(&mut c, 1, add_learner(2));
    c.crash(1);
    c.restart(1);
    let core = c.core_mut(1);
    let term = core.term();
    while core.state() != RaftState::Leader {
        core.tick();
    }
    assert_eq!(core.term(), term + 1);
    let rd = core.ready();
    assert_eq!(rd.hard_state.map(|h| h.term), Some(term + 1));
    assert!(
        rd.messages
            .iter()
            .all(|m| !matches!(m.rpc, Rpc::AppendEntries(_))),
        "nothing leaves before the new term is durable: {:?}",
        rd.messages
    );
    assert!(rd
        .persisted_messages
        .iter()
        .any(|m| m.to == 2 && matches!(m.rpc, Rpc::AppendEntries(_))));
}

// ----- §4.2.3: a removed server cannot disrupt the cluster --------------------

#[test]
fn a_removed_server_that_never_heard_of_its_removal_cannot_disrupt_the_cluster() {
    // Pre-vote and check-quorum (thesis §9.6, §4.2.3): servers that hear
    // from a leader ignore a candidate, however high its term.
    let mut c = Cluster::new(3, config(true, true));
    c.elect(1);
    c.partition(&[&[1, 2], &[3]]);
    change(&mut c, 1, ConfChange::Remove { id: 3 });
    assert_eq!(c.core(3).voters(), &[1, 2, 3], "node 3 never heard");
    let term = c.core(1).term();
    c.heal();
    for _ in 0..100 {
        c.tick(3);
        c.tick_all(1);
    }
    assert_eq!(c.leaders(), vec![1]);
    assert_eq!(c.core(1).term(), term, "the cluster's term never moved");
}

#[test]
fn a_removed_server_that_restarts_and_campaigns_is_ignored_even_without_pre_vote() {
    // Node 3 holds its removal, then restarts: its commit index starts
    // again from 0, so as far as it knows its removal is not committed and
    // it may campaign (§4.2.2). Nodes 1 and 2 know the removal committed:
    // they ignore its vote requests, term and all (§4.2.3), so the leader
    // is not deposed though pre-vote and check-quorum are off.
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    let index = change(&mut c, 1, ConfChange::Remove { id: 3 });
    c.tick_all(30);
    assert!(c.core(2).commit_index() >= index);
    assert_eq!(c.core(3).voters(), &[1, 2], "node 3 holds its removal");
    let term = c.core(1).term();
    c.crash(3);
    c.restart(3);
    for _ in 0..100 {
        c.tick(3);
        c.tick_all(1);
    }
    assert!(c.core(3).term() > term, "node 3 did campaign");
    assert_eq!(c.leaders(), vec![1]);
    assert_eq!(c.core(1).term(), term, "the cluster's term never moved");
}

// ----- Durability: restarts and compaction keep the configuration -------------

#[test]
fn a_restarted_node_recovers_its_configuration_from_the_log() {
    let mut c = three_and_a_learner();
    change(&mut c, 1, ConfChange::Promote { id: 4 });
    c.crash(2);
    c.restart(2);
    assert_eq!(c.core(2).voters(), &[1, 2, 3, 4]);
    c.crash(4);
    c.restart(4);
    assert_eq!(c.core(4).voters(), &[1, 2, 3, 4]);
}

#[test]
fn compaction_keeps_the_configuration_in_force() {
    let mut c = three_and_a_learner();
    let index = c.core(1).membership().1;
    c.propose(1, b"after");
    c.deliver();
    let applied = c.core(2).applied_index();
    assert!(applied > index);
    assert!(c.core_mut(2).compact(applied));
    assert_eq!(c.core(2).learners(), &[4]);
    assert_eq!(c.core(2).membership_at(applied).learners(), &[4]);
    // The configuration now stands as the base the compaction left.
    assert_eq!(c.core(2).membership().1, applied);
}
