//! Thesis §3.10, leadership transfer, at the level of the core: the leader
//! stops taking proposals, catches the target up, sends `TimeoutNow`, and the
//! target wins at once; a transfer that cannot finish is abandoned after an
//! election timeout; and a leader gives up its read lease once the target
//! may be elected.

mod common;

use common::{config, Cluster};
use raft::{ProposeError, RaftConfig, RaftState, Rpc, TransferError};

#[test]
fn an_up_to_date_target_leads_without_waiting_for_an_election_timeout() {
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    c.propose(1, b"a");
    c.deliver();
    let term = c.core(1).term();
    c.core_mut(1).transfer_leadership(2).expect("1 leads");
    // No ticks: only messages.
    c.deliver();
    assert_eq!(c.leaders(), vec![2]);
    assert_eq!(c.core(2).term(), term + 1);
    assert_eq!(c.core(1).state(), RaftState::Follower);
    assert_eq!(c.core(1).leader_id(), Some(2));
}

#[test]
fn a_lagging_target_is_caught_up_first() {
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    c.partition(&[&[1, 3], &[2]]);
    for i in 0..5u8 {
        c.propose(1, &[i]);
    }
    c.deliver();
    let last = c.core(1).last_log_index();
    assert!(c.core(2).last_log_index() < last);
    c.heal();
    c.core_mut(1).transfer_leadership(2).expect("1 leads");
    c.deliver();
    assert_eq!(c.leaders(), vec![2]);
    assert!(
        c.core(2).last_log_index() > last,
        "all of 1's log, then its no-op"
    );
    let timeout_now = c
        .delivered
        .iter()
        .filter(|m| matches!(m.rpc, Rpc::TimeoutNow(_)))
        .count();
    assert_eq!(timeout_now, 1, "TimeoutNow once, after catching up");
}

#[test]
fn proposals_are_refused_while_leadership_is_being_handed_over() {
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    c.crash(2);
    c.core_mut(1).transfer_leadership(2).expect("1 leads");
    assert_eq!(
        c.core_mut(1).propose(b"x".to_vec()),
        Err(ProposeError::Transferring { target: 2 })
    );
    assert_eq!(c.core(1).transfer_target(), Some(2));
}

#[test]
fn a_transfer_that_cannot_finish_is_abandoned_after_an_election_timeout() {
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    c.crash(2);
    c.core_mut(1).transfer_leadership(2).expect("1 leads");
    c.tick_all(c.config.election_ticks_max());
    assert_eq!(c.leaders(), vec![1], "1 still leads");
    assert_eq!(c.core(1).transfer_target(), None);
    let (index, _) = c.propose(1, b"after");
    c.deliver();
    assert!(c.core(1).commit_index() >= index);
}

#[test]
fn voters_that_hear_from_the_leader_still_vote_for_the_target() {
    // With check-quorum and pre-vote every voter is in its lease (§4.2.3):
    // it ignores candidates. The target's RequestVote says the leader asked
    // for it, so they vote.
    let mut c = Cluster::new(3, config(true, true));
    c.elect(1);
    c.tick_all(2);
    c.core_mut(1).transfer_leadership(3).expect("1 leads");
    c.deliver();
    assert_eq!(c.leaders(), vec![3]);
}

#[test]
fn only_a_voter_can_be_the_target_and_only_a_leader_can_transfer() {
    let mut c = Cluster::new(3, config(false, false));
    c.elect(1);
    assert_eq!(
        c.core_mut(1).transfer_leadership(9),
        Err(TransferError::NotAVoter(9))
    );
    assert_eq!(
        c.core_mut(2).transfer_leadership(3),
        Err(TransferError::NotLeader {
            leader_hint: Some(1)
        })
    );
    assert_eq!(c.core_mut(1).transfer_leadership(1), Ok(()));
    assert_eq!(c.core(1).transfer_target(), None);
}

#[test]
fn a_leader_serves_no_lease_read_once_timeout_now_is_out() {
    // Thesis §6.4.1's lease rests on voters abstaining; after TimeoutNow
    // they vote for the target at once, so the lease is over.
    let mut c = Cluster::new(
        3,
        RaftConfig {
            lease_reads: true,
            check_quorum: true,
            ..RaftConfig::default()
        },
    );
    // (With leases a fresh server abstains for an election timeout first.)
    let mut leaders = Vec::new();
    for _ in 0..c.config.election_ticks_max() * 10 {
        c.tick_all(1);
        leaders = c.leaders();
        if leaders.len() == 1 {
            let k = c.core(leaders[0]);
            if k.term_at(k.commit_index()) == Some(k.term()) {
                break;
            }
        }
    }
    assert_eq!(leaders.len(), 1, "one leader: {leaders:?}");
    let (l, target) = (leaders[0], if leaders[0] == 1 { 2 } else { 1 });
    c.core_mut(l).read_index(1).expect("l leads");
    c.process(l);
    let served = c.core(l).lease_reads_served();
    assert_eq!(served, 1, "a lease read before the transfer");
    // TimeoutNow goes out but is lost, so `l` still leads for now; the
    // target could be elected at any moment all the same.
    c.drop_if = Some(Box::new(|m| matches!(m.rpc, Rpc::TimeoutNow(_))));
    c.core_mut(l).transfer_leadership(target).expect("l leads");
    c.deliver();
    assert_eq!(c.core(l).state(), RaftState::Leader);
    assert_eq!(c.core(l).transfer_target(), Some(target));
    c.core_mut(l).read_index(2).expect("l leads");
    c.process(l);
    assert_eq!(
        c.core(l).lease_reads_served(),
        served,
        "no read from the lease after TimeoutNow"
    );
}
