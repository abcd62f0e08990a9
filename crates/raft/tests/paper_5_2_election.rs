//! §5.2 Leader election: randomized timeouts, one vote per term, majority wins,
//! a candidate yields to a leader of its term, split votes retry.

mod common;

use common::{config, request_vote, vote_granted, Cluster};
use raft::{
    AppendEntriesArgs, EntryKind, HardState, Message, RaftCore, RaftState, RecoveredState,
    RequestVoteReply, Rpc,
};

fn core_with(id: u64, hs: HardState) -> RaftCore {
    let recovered = RecoveredState {
        hard_state: hs,
        entries: vec![],
    };
    RaftCore::new(id, &[1, 2, 3], config(false, false), recovered, id).expect("valid core")
}

#[test]
fn election_timeouts_are_randomized_within_the_configured_range() {
    let cfg = config(false, false);
    let (min, max) = (cfg.election_ticks_min(), cfg.election_ticks_max());
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let mut c = RaftCore::new(1, &[1, 2, 3], cfg.clone(), RecoveredState::default(), seed)
            .expect("valid core");
        let mut ticks = 0;
        while c.state() == RaftState::Follower {
            c.tick();
            ticks += 1;
            assert!(
                ticks <= max,
                "seed {seed}: no election within the maximum timeout"
            );
        }
        assert!(
            ticks >= min,
            "seed {seed}: election after {ticks} ticks, below {min}"
        );
        seen.insert(ticks);
    }
    assert!(
        seen.len() > 10,
        "timeouts should spread over the range: {seen:?}"
    );
}

#[test]
fn a_candidate_increments_its_term_votes_for_itself_and_asks_everyone() {
    let mut c = core_with(
        1,
        HardState {
            term: 4,
            voted_for: None,
        },
    );
    while c.state() == RaftState::Follower {
        c.tick();
    }
    assert_eq!(c.state(), RaftState::Candidate);
    let rd = c.ready();
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 5,
            voted_for: Some(1)
        })
    );
    let mut asked: Vec<u64> = rd
        .persisted_messages
        .iter()
        .filter(|m| matches!(&m.rpc, Rpc::RequestVote(a) if a.term == 5 && !a.pre_vote))
        .map(|m| m.to)
        .collect();
    asked.sort();
    assert_eq!(asked, vec![2, 3]);
    assert!(
        rd.messages.is_empty(),
        "vote requests wait until the self-vote is durable"
    );
}

#[test]
fn a_server_votes_for_at_most_one_candidate_per_term() {
    let mut c = core_with(1, HardState::default());
    c.step(request_vote(2, 1, 1, 0, 0));
    assert!(
        vote_granted(&mut c),
        "first candidate of the term gets the vote"
    );
    c.step(request_vote(3, 1, 1, 0, 0));
    assert!(
        !vote_granted(&mut c),
        "a second candidate in the same term is refused"
    );
    c.step(request_vote(2, 1, 1, 0, 0));
    assert!(
        vote_granted(&mut c),
        "the same candidate asking again is granted again"
    );
    assert_eq!(c.voted_for(), Some(2));
}

#[test]
fn a_vote_is_granted_again_in_a_later_term() {
    let mut c = core_with(
        1,
        HardState {
            term: 1,
            voted_for: Some(2),
        },
    );
    c.step(request_vote(3, 1, 2, 0, 0));
    assert!(vote_granted(&mut c));
    assert_eq!(c.voted_for(), Some(3));
    assert_eq!(c.term(), 2);
}

#[test]
fn a_candidate_with_a_majority_becomes_leader_and_appends_a_noop() {
    let mut c = core_with(1, HardState::default());
    while c.state() == RaftState::Follower {
        c.tick();
    }
    let term = c.term();
    c.ready();
    c.step(Message {
        from: 2,
        to: 1,
        rpc: Rpc::RequestVoteReply(RequestVoteReply {
            term,
            vote_granted: true,
            pre_vote: false,
        }),
    });
    assert_eq!(c.state(), RaftState::Leader);
    let noop = c
        .entry(c.last_log_index())
        .expect("the leader's first entry");
    assert_eq!(noop.kind, EntryKind::Noop);
    assert_eq!(noop.term, term);
    let rd = c.ready();
    assert!(
        rd.messages
            .iter()
            .filter(|m| matches!(m.rpc, Rpc::AppendEntries(_)))
            .count()
            >= 2,
        "the new leader announces itself to every follower at once"
    );
}

#[test]
fn a_candidate_rejected_by_a_majority_returns_to_follower() {
    let mut c = core_with(1, HardState::default());
    while c.state() == RaftState::Follower {
        c.tick();
    }
    let term = c.term();
    for from in [2, 3] {
        c.step(Message {
            from,
            to: 1,
            rpc: Rpc::RequestVoteReply(RequestVoteReply {
                term,
                vote_granted: false,
                pre_vote: false,
            }),
        });
    }
    assert_eq!(c.state(), RaftState::Follower);
    assert_eq!(c.term(), term);
}

#[test]
fn a_candidate_that_hears_from_a_leader_of_its_term_becomes_follower() {
    let mut c = core_with(1, HardState::default());
    while c.state() == RaftState::Follower {
        c.tick();
    }
    let term = c.term();
    c.step(Message {
        from: 2,
        to: 1,
        rpc: Rpc::AppendEntries(AppendEntriesArgs {
            term,
            leader_id: 2,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 0,
            read_round: 0,
        }),
    });
    assert_eq!(c.state(), RaftState::Follower);
    assert_eq!(c.leader_id(), Some(2));
    assert_eq!(c.term(), term);
}

#[test]
fn a_split_vote_is_resolved_by_a_later_election() {
    let mut cl = Cluster::new(3, config(false, false));
    cl.crash(3);
    // Both remaining nodes become candidates in term 1 before any message flows.
    while cl.core(1).state() == RaftState::Follower {
        cl.core_mut(1).tick();
    }
    while cl.core(2).state() == RaftState::Follower {
        cl.core_mut(2).tick();
    }
    assert_eq!(cl.core(1).term(), 1);
    assert_eq!(cl.core(2).term(), 1);
    cl.deliver();
    assert!(
        cl.leaders().is_empty(),
        "each voted for itself: nobody wins term 1"
    );
    cl.tick_all(200);
    let leaders = cl.leaders();
    assert_eq!(leaders.len(), 1);
    assert!(cl.core(leaders[0]).term() > 1);
}

#[test]
fn granting_a_vote_resets_the_election_timer() {
    let cfg = config(false, false);
    let min = cfg.election_ticks_min();
    let mut c = core_with(1, HardState::default());
    for _ in 0..min - 1 {
        c.tick();
    }
    c.step(request_vote(2, 1, 1, 0, 0));
    assert!(vote_granted(&mut c));
    for _ in 0..min - 1 {
        c.tick();
    }
    assert_eq!(
        c.state(),
        RaftState::Follower,
        "the timer restarted when the vote was granted"
    );
}

#[test]
fn a_follower_receiving_heartbeats_never_campaigns() {
    let mut cl = Cluster::new(3, config(false, false));
    cl.elect(1);
    let term = cl.core(1).term();
    cl.tick_all(cl.config.election_ticks_max() * 10);
    assert_eq!(cl.leaders(), vec![1]);
    assert_eq!(cl.core(2).term(), term);
    assert_eq!(cl.core(3).term(), term);
}

#[test]
fn followers_and_candidates_reject_proposals_with_a_leader_hint() {
    // The journal's Day 1 bug: a follower appended client commands.
    let mut cl = Cluster::new(3, config(false, false));
    cl.elect(1);
    let before = cl.core(2).last_log_index();
    assert_eq!(
        cl.core_mut(2).propose(b"x".to_vec()),
        Err(raft::ProposeError::NotLeader {
            leader_hint: Some(1)
        })
    );
    assert_eq!(cl.core(2).last_log_index(), before, "nothing was appended");
    let mut c = core_with(1, HardState::default());
    while c.state() == RaftState::Follower {
        c.tick();
    }
    assert_eq!(c.state(), RaftState::Candidate);
    assert!(c.propose(b"x".to_vec()).is_err(), "a candidate refuses too");
    assert_eq!(c.last_log_index(), 0);
}
