//! Thesis §9.6 (pre-vote), §6.2 (check-quorum) and §4.2.3 (ignoring
//! disruptive RequestVotes while a leader is known).

mod common;

use common::{config, Cluster};
use raft::{HardState, Message, RaftCore, RaftState, RecoveredState, RequestVoteArgs, Rpc};

#[test]
fn a_pre_candidate_does_not_raise_its_term() {
    let mut c = RaftCore::new(
        1,
        &[1, 2, 3],
        config(true, true),
        RecoveredState::default(),
        1,
    )
    .expect("core");
    while c.state() == RaftState::Follower {
        c.tick();
    }
    assert_eq!(c.state(), RaftState::PreCandidate);
    assert_eq!(c.term(), 0, "pre-vote asks before changing anything");
    let rd = c.ready();
    assert_eq!(rd.hard_state, None, "nothing to persist for a pre-vote");
    assert!(rd
        .persisted_messages
        .iter()
        .all(|m| matches!(&m.rpc, Rpc::RequestVote(a) if a.pre_vote && a.term == 1)));
}

#[test]
fn a_pre_vote_is_refused_while_the_voter_hears_from_a_leader() {
    let mut cl = Cluster::new(3, config(true, true));
    cl.elect(1);
    let term = cl.core(2).term();
    cl.core_mut(2).step(Message {
        from: 3,
        to: 2,
        rpc: Rpc::RequestVote(RequestVoteArgs {
            term: term + 1,
            candidate_id: 3,
            last_log_index: 100,
            last_log_term: term,
            pre_vote: true,
            leadership_transfer: false,
        }),
    });
    let rd = cl.core_mut(2).ready();
    match rd.persisted_messages.last().map(|m| &m.rpc) {
        Some(Rpc::RequestVoteReply(r)) => assert!(!r.vote_granted),
        other => panic!("expected a reply, got {other:?}"),
    }
    assert_eq!(
        cl.core(2).term(),
        term,
        "a pre-vote never changes the voter's term"
    );
}

#[test]
fn a_node_partitioned_for_ten_election_timeouts_does_not_raise_the_cluster_term_on_rejoin() {
    let mut cl = Cluster::new(3, config(true, true));
    cl.elect(1);
    let term = cl.core(1).term();
    cl.partition(&[&[1, 2], &[3]]);
    cl.tick_all(cl.config.election_ticks_max() * 10);
    assert_eq!(
        cl.core(3).term(),
        term,
        "pre-votes fail: the isolated node's term stays"
    );
    cl.heal();
    cl.tick_all(cl.config.election_ticks_max() * 2);
    assert_eq!(cl.leaders(), vec![1], "the leader was not disturbed");
    for id in 1..=3 {
        assert_eq!(cl.core(id).term(), term, "node {id}");
    }
}

#[test]
fn without_pre_vote_the_same_partition_does_disturb_the_cluster() {
    // The contrast that shows what pre-vote buys (and that the test above
    // can fail): the isolated node's term runs away and deposes the leader.
    let mut cl = Cluster::new(3, config(false, false));
    cl.elect(1);
    let term = cl.core(1).term();
    cl.partition(&[&[1, 2], &[3]]);
    cl.tick_all(cl.config.election_ticks_max() * 10);
    assert!(cl.core(3).term() > term + 5);
    cl.heal();
    cl.tick_all(cl.config.election_ticks_max() * 2);
    assert!(
        cl.core(1).term() > term,
        "the rejoining node forced a new term"
    );
}

#[test]
fn check_quorum_makes_an_isolated_leader_step_down_within_one_election_timeout() {
    let mut cl = Cluster::new(3, config(true, true));
    cl.elect(1);
    cl.tick_all(3);
    cl.partition(&[&[1], &[2, 3]]);
    let min = cl.config.election_ticks_min();
    for _ in 0..min + 1 {
        cl.tick(1);
    }
    assert_eq!(cl.core(1).state(), RaftState::Follower);
}

#[test]
fn without_check_quorum_an_isolated_leader_stays_leader() {
    let mut cl = Cluster::new(3, config(true, false));
    cl.elect(1);
    cl.partition(&[&[1], &[2, 3]]);
    for _ in 0..cl.config.election_ticks_max() * 5 {
        cl.tick(1);
    }
    assert_eq!(cl.core(1).state(), RaftState::Leader);
}

#[test]
fn a_leader_in_contact_with_a_majority_keeps_leading() {
    let mut cl = Cluster::new(5, config(true, true));
    cl.elect(1);
    cl.partition(&[&[1, 2, 3], &[4, 5]]);
    cl.tick_all(cl.config.election_ticks_max() * 5);
    assert_eq!(cl.core(1).state(), RaftState::Leader);
}

#[test]
fn with_check_quorum_a_request_vote_is_ignored_while_a_leader_is_known() {
    let mut cl = Cluster::new(3, config(false, true));
    cl.elect(1);
    let term = cl.core(2).term();
    cl.core_mut(2).step(Message {
        from: 3,
        to: 2,
        rpc: Rpc::RequestVote(RequestVoteArgs {
            term: term + 1,
            candidate_id: 3,
            last_log_index: 100,
            last_log_term: term,
            pre_vote: false,
            leadership_transfer: false,
        }),
    });
    assert_eq!(cl.core(2).term(), term, "§4.2.3: the term is not updated");
    assert_eq!(
        cl.core(2).leader_id(),
        Some(1),
        "it still follows the leader"
    );
    let rd = cl.core_mut(2).ready();
    assert_eq!(rd.hard_state, None::<HardState>, "no vote was recorded");
    match rd.persisted_messages.last().map(|m| &m.rpc) {
        Some(Rpc::RequestVoteReply(r)) => assert!(!r.vote_granted),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
