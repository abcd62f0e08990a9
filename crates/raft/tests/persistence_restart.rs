//! Figure 2 "Persistent state on all servers": term, vote and log survive a
//! restart; everything else is volatile and starts over.

mod common;

use common::{config, grants_vote, request_vote, Cluster};
use raft::{BugSwitches, RaftState, Rpc};

fn granted(cl: &mut Cluster, id: u64) -> bool {
    let rd = cl.core_mut(id).ready();
    cl.disks
        .get_mut(&id)
        .map(|d| raft::Storage::persist(d, rd.hard_state.as_ref(), &rd.entries));
    cl.core_mut(id).advance(&rd);
    grants_vote(&rd)
}

#[test]
fn restart_restores_term_vote_and_log() {
    let mut cl = Cluster::new(3, config(true, true));
    cl.elect(1);
    for i in 0..5u8 {
        cl.propose(1, &[i]);
    }
    cl.deliver();
    let (term, vote, log) = (cl.core(2).term(), cl.core(2).voted_for(), cl.log_terms(2));
    cl.crash(2);
    cl.restart(2);
    assert_eq!(cl.core(2).term(), term);
    assert_eq!(cl.core(2).voted_for(), vote);
    assert_eq!(cl.log_terms(2), log);
    assert_eq!(cl.core(2).entry(3).map(|e| e.data.clone()), Some(vec![1]));
}

#[test]
fn volatile_state_resets_on_restart() {
    let mut cl = Cluster::new(3, config(true, true));
    cl.elect(1);
    cl.propose(1, b"x");
    cl.deliver();
    assert!(cl.core(1).commit_index() > 0);
    cl.crash(1);
    cl.restart(1);
    let c = cl.core(1);
    assert_eq!(
        c.state(),
        RaftState::Follower,
        "a former leader restarts as follower"
    );
    assert_eq!(c.leader_id(), None);
    assert_eq!(c.commit_index(), 0);
    assert_eq!(c.applied_index(), 0);
    assert!(cl.applied[&1].is_empty());
}

#[test]
fn a_restarted_node_relearns_the_commit_index_and_reapplies_everything() {
    let mut cl = Cluster::new(3, config(true, true));
    cl.elect(1);
    for i in 0..5u8 {
        cl.propose(1, &[i]);
    }
    cl.deliver();
    let before = cl.applied_data(3);
    cl.crash(3);
    cl.restart(3);
    cl.tick_all(cl.config.heartbeat_ticks() * 2);
    assert_eq!(cl.applied_data(3), before);
    assert!(cl.safety_violations.is_empty());
}

#[test]
fn a_former_leader_must_win_a_new_election_after_restart() {
    let mut cl = Cluster::new(3, config(true, true));
    cl.elect(1);
    let term = cl.core(1).term();
    cl.crash(1);
    cl.tick_all(cl.config.election_ticks_max() * 3);
    cl.restart(1);
    cl.tick_all(cl.config.election_ticks_max() * 3);
    let leaders = cl.leaders();
    assert_eq!(leaders.len(), 1);
    assert!(cl.core(leaders[0]).term() > term);
    assert_eq!(cl.core(1).state() == RaftState::Leader, leaders[0] == 1);
}

#[test]
fn crash_after_granting_a_vote_then_restart_in_the_same_term_gives_no_second_vote() {
    let mut cl = Cluster::new(3, config(false, false));
    cl.core_mut(1).step(request_vote(2, 1, 5, 10, 10));
    assert!(granted(&mut cl, 1));
    cl.crash(1);
    cl.restart(1);
    cl.core_mut(1).step(request_vote(3, 1, 5, 10, 10));
    assert!(
        !granted(&mut cl, 1),
        "the vote for node 2 in term 5 was durable"
    );
}

#[test]
fn forgetting_to_persist_the_vote_allows_a_second_vote_in_the_same_term() {
    // The same scenario with the vote not persisted: proof the test bites.
    let mut cl = Cluster::new(3, config(false, false));
    let bugs = BugSwitches {
        forget_to_persist_vote: true,
        ..BugSwitches::default()
    };
    cl.core_mut(1).set_bug_switches(bugs);
    cl.core_mut(1).step(request_vote(2, 1, 5, 10, 10));
    assert!(granted(&mut cl, 1));
    cl.crash(1);
    cl.restart(1);
    cl.core_mut(1).step(request_vote(3, 1, 5, 10, 10));
    assert!(granted(&mut cl, 1), "a double vote in term 5");
}

#[test]
fn replies_are_held_back_until_the_state_they_depend_on_is_persisted() {
    let mut cl = Cluster::new(3, config(false, false));
    cl.elect(1);
    cl.core_mut(1).propose(b"x".to_vec()).expect("leader");
    let rd = cl.core_mut(1).ready();
    let m = rd
        .messages
        .iter()
        .find(|m| m.to == 2)
        .cloned()
        .expect("append to 2");
    cl.core_mut(2).step(m);
    let rd2 = cl.core_mut(2).ready();
    assert!(!rd2.entries.is_empty());
    assert!(
        rd2.messages.is_empty(),
        "nothing may be sent before the entries are durable"
    );
    assert!(rd2
        .persisted_messages
        .iter()
        .any(|m| matches!(&m.rpc, Rpc::AppendEntriesReply(r) if r.success)));
}
