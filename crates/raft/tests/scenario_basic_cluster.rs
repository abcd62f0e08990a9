//! End-to-end behaviour of a small cluster of cores on the test network.

mod common;

use common::{config, Cluster};
use raft::RaftState;

#[test]
fn all_nodes_starting_at_once_elect_exactly_one_leader() {
    for seed in 0..50 {
        let mut c = Cluster::with_seed(3, config(true, true), seed);
        c.tick_all(200);
        let leaders = c.leaders();
        assert_eq!(leaders.len(), 1, "seed {seed}: leaders {leaders:?}");
        let term = c.core(leaders[0]).term();
        for id in c.ids.clone() {
            assert_eq!(
                c.core(id).term(),
                term,
                "seed {seed}: all agree on the term"
            );
            assert_eq!(c.core(id).leader_id(), Some(leaders[0]));
        }
    }
}

#[test]
fn five_nodes_starting_at_once_elect_a_leader() {
    for seed in 0..20 {
        let mut c = Cluster::with_seed(5, config(true, true), seed);
        c.tick_all(200);
        assert_eq!(c.leaders().len(), 1, "seed {seed}");
    }
}

#[test]
fn a_proposal_is_replicated_committed_and_applied_everywhere() {
    let mut c = Cluster::new(3, config(true, true));
    c.elect(1);
    let (index, term) = c.propose(1, b"x=1");
    c.deliver();
    for id in 1..=3 {
        assert!(c.core(id).commit_index() >= index, "node {id} commits");
        assert_eq!(
            c.applied_data(id),
            vec![b"x=1".to_vec()],
            "node {id} applies"
        );
        assert_eq!(c.core(id).entry(index).map(|e| e.term), Some(term));
    }
}

#[test]
fn without_prevote_a_follower_times_out_and_becomes_candidate() {
    let mut c = Cluster::new(3, config(false, false));
    let max = c.config.election_ticks_max();
    for _ in 0..max {
        c.tick(1);
    }
    assert_eq!(c.core(1).state(), RaftState::Candidate);
    assert_eq!(c.core(1).term(), 1);
    assert_eq!(c.core(1).voted_for(), Some(1));
}
