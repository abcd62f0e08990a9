//! §5.2 "Each server will vote for at most one candidate in a given term",
//! for a server whose disk was wiped: it forgot its vote, so it must not
//! vote again (see `raft::incarnation`). Issue 13: before the vote right,
//! such a server restarted at term 0 and granted a second vote in a term
//! where it had already voted.

mod common;

use common::{config, request_vote, vote_granted};
use raft::{
    IncarnationBook, PeerVerdict, RaftCore, RaftState, RecoveredState, RequestVoteArgs, Rpc,
    VoteRight,
};

fn fresh_core(id: u64) -> RaftCore {
    RaftCore::new(
        id,
        &[1, 2, 3],
        config(true, true),
        RecoveredState::default(),
        id,
    )
    .expect("valid core")
}

#[test]
fn a_wiped_server_that_voted_would_vote_again_in_the_same_term_without_the_vote_right() {
    // Server 3 votes for 1 in term 5, then loses its disk and restarts.
    let mut s3 = fresh_core(3);
    s3.step(request_vote(1, 3, 5, 0, 0));
    assert!(vote_granted(&mut s3));
    let mut wiped = fresh_core(3);
    // The hazard, as it was: candidate 2 of the same term gets a vote too,
    // so 1 and 2 can both win term 5.
    wiped.step(request_vote(2, 3, 5, 0, 0));
    assert!(vote_granted(&mut wiped), "a forgetful server votes twice");

    // With the vote right held back until the peers vouch for it, the same
    // request is refused.
    let mut wiped = fresh_core(3);
    wiped.set_may_vote(false);
    wiped.step(request_vote(2, 3, 5, 0, 0));
    assert!(!vote_granted(&mut wiped));
    assert_eq!(wiped.term(), 5, "it still learns the term");
}

#[test]
fn a_server_that_may_not_vote_grants_no_pre_vote_and_never_campaigns() {
    let mut s = fresh_core(3);
    s.set_may_vote(false);
    let cfg = config(true, true);
    for _ in 0..10 * cfg.election_ticks_max() {
        s.tick();
        assert_eq!(s.state(), RaftState::Follower);
    }
    assert!(
        s.ready().persisted_messages.is_empty(),
        "no RequestVote sent"
    );
    s.step(raft::Message {
        from: 2,
        to: 3,
        rpc: Rpc::RequestVote(RequestVoteArgs {
            term: 1,
            candidate_id: 2,
            last_log_index: 0,
            last_log_term: 0,
            pre_vote: true,
            leadership_transfer: false,
        }),
    });
    assert!(!vote_granted(&mut s));
    // Once the other voters vouched for it, it campaigns like anyone.
    s.set_may_vote(true);
    for _ in 0..cfg.election_ticks_max() {
        s.tick();
    }
    assert_ne!(s.state(), RaftState::Follower);
}

#[test]
fn the_peers_books_suspend_a_reincarnated_server_and_clear_a_new_one() {
    // A brand-new cluster: every book is empty, every server is cleared by
    // the two others and may vote.
    let voters = [1, 2, 3];
    let mut books = [IncarnationBook::default(), IncarnationBook::default()];
    let mut right = VoteRight::for_new_data_dir(3, &voters);
    for (peer, book) in [1, 2].into_iter().zip(books.iter_mut()) {
        let (verdict, _) = book.check(3, 0xaaaa);
        assert_eq!(verdict, PeerVerdict::New);
        right.on_verdict(3, &voters, peer, verdict);
    }
    assert!(right.may_vote());
    // Server 3's disk is wiped: a new incarnation, a new pending right; the
    // first peer it reaches says it knew another one.
    let mut right = VoteRight::for_new_data_dir(3, &voters);
    let (verdict, changed) = books[0].check(3, 0xbbbb);
    assert_eq!(verdict, PeerVerdict::Reincarnated);
    assert!(changed, "the book must be persisted before it answers");
    right.on_verdict(3, &voters, 1, verdict);
    assert_eq!(right, VoteRight::Suspended);
}

#[test]
fn a_server_that_may_not_vote_is_replicated_to_but_counts_toward_no_majority() {
    // It forgot its term with its vote, so it may acknowledge entries of a
    // leader that was deposed in a term it once knew (the simulator found
    // exactly that: a deposed leader committed an entry with the wiped
    // node's acknowledgement, over one the new leader had committed).
    let mut c = common::Cluster::new(3, config(true, true));
    c.elect(1);
    c.core_mut(3).set_may_vote(false);
    c.partition(&[&[1, 3], &[2]]);
    let (index, _) = c.propose(1, b"x");
    c.deliver();
    assert!(c.core(3).last_log_index() >= index, "node 3 has the entry");
    assert!(
        c.core(1).commit_index() < index,
        "the leader and a non-voter are not a majority"
    );
    c.heal();
    c.tick_all(2 * c.core(1).config().election_ticks_max());
    assert!(
        c.core(1).commit_index() >= index,
        "node 2's acknowledgement commits it"
    );
}
