//! §5.1 Raft basics: terms act as a logical clock; servers start as followers;
//! any higher term seen in a request or a reply makes a server follow it.

mod common;

use common::{config, request_vote, Cluster};
use raft::{
    AppendEntriesArgs, AppendEntriesReply, HardState, MemoryStorage, Message, RaftConfig, RaftCore,
    RaftState, RecoveredState, RequestVoteReply, Rpc, Storage,
};

fn core(id: u64, term: u64) -> RaftCore {
    let recovered = RecoveredState {
        hard_state: HardState {
            term,
            voted_for: None,
        },
        entries: vec![],
    };
    RaftCore::new(id, &[1, 2, 3], config(false, false), recovered, id).expect("valid core")
}

#[test]
fn a_server_starts_as_a_follower() {
    let c = core(1, 0);
    assert_eq!(c.state(), RaftState::Follower);
    assert_eq!(c.leader_id(), None);
}

#[test]
fn a_request_with_a_higher_term_updates_the_term_and_makes_a_leader_step_down() {
    let mut cl = Cluster::new(3, config(false, false));
    cl.elect(1);
    let term = cl.core(1).term();
    cl.core_mut(1).step(Message {
        from: 2,
        to: 1,
        rpc: Rpc::AppendEntries(AppendEntriesArgs {
            term: term + 5,
            leader_id: 2,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 0,
            read_round: 0,
        }),
    });
    assert_eq!(cl.core(1).state(), RaftState::Follower);
    assert_eq!(cl.core(1).term(), term + 5);
    assert_eq!(cl.core(1).leader_id(), Some(2));
    assert_eq!(
        cl.core(1).voted_for(),
        None,
        "a new term starts with no vote"
    );
}

#[test]
fn a_reply_with_a_higher_term_makes_a_candidate_step_down() {
    let mut c = core(1, 0);
    for _ in 0..100 {
        c.tick();
    }
    assert_eq!(c.state(), RaftState::Candidate);
    let term = c.term();
    c.step(Message {
        from: 2,
        to: 1,
        rpc: Rpc::RequestVoteReply(RequestVoteReply {
            term: term + 1,
            vote_granted: false,
            pre_vote: false,
        }),
    });
    assert_eq!(c.state(), RaftState::Follower);
    assert_eq!(c.term(), term + 1);
}

#[test]
fn an_append_entries_reply_with_a_higher_term_makes_a_leader_step_down() {
    let mut cl = Cluster::new(3, config(false, false));
    cl.elect(1);
    let term = cl.core(1).term();
    cl.core_mut(1).step(Message {
        from: 3,
        to: 1,
        rpc: Rpc::AppendEntriesReply(AppendEntriesReply {
            term: term + 1,
            success: false,
            match_index: 0,
            rejected_prev_index: 0,
            conflict_index: 0,
            conflict_term: None,
            read_round: 0,
            voter: true,
        }),
    });
    assert_eq!(cl.core(1).state(), RaftState::Follower);
    assert_eq!(cl.core(1).term(), term + 1);
}

#[test]
fn a_request_with_a_stale_term_is_rejected_with_the_current_term() {
    let mut c = core(1, 5);
    c.step(request_vote(2, 1, 3, 0, 0));
    let rd = c.ready();
    assert_eq!(c.term(), 5);
    assert_eq!(rd.persisted_messages.len(), 1);
    match &rd.persisted_messages[0].rpc {
        Rpc::RequestVoteReply(r) => {
            assert!(!r.vote_granted);
            assert_eq!(r.term, 5, "the reply teaches the stale candidate our term");
        }
        other => panic!("expected a vote reply, got {other:?}"),
    }
}

#[test]
fn a_stale_append_entries_is_rejected_so_the_old_leader_learns_the_term() {
    let mut c = core(1, 5);
    c.step(Message {
        from: 2,
        to: 1,
        rpc: Rpc::AppendEntries(AppendEntriesArgs {
            term: 4,
            leader_id: 2,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![raft::LogEntry::new(4, 1, b"x".to_vec())],
            leader_commit: 1,
            read_round: 0,
        }),
    });
    let rd = c.ready();
    assert!(
        rd.entries.is_empty(),
        "nothing from a stale leader is appended"
    );
    assert_eq!(c.last_log_index(), 0);
    match &rd.persisted_messages[0].rpc {
        Rpc::AppendEntriesReply(r) => {
            assert!(!r.success);
            assert_eq!(r.term, 5);
        }
        other => panic!("expected an append reply, got {other:?}"),
    }
}

#[test]
fn the_term_never_decreases_and_is_persisted_before_any_reply() {
    let mut c = core(1, 2);
    c.step(request_vote(2, 1, 7, 0, 0));
    let rd = c.ready();
    assert_eq!(
        rd.hard_state.map(|h| h.term),
        Some(7),
        "the new term is in the same Ready as the reply"
    );
    assert!(rd.messages.is_empty(), "the reply waits for persistence");
    assert_eq!(rd.persisted_messages.len(), 1);
    let mut storage = MemoryStorage::new();
    storage
        .persist(rd.hard_state.as_ref(), &rd.entries)
        .expect("persist");
    c.advance(&rd);
    c.step(request_vote(3, 1, 3, 0, 0));
    assert_eq!(c.term(), 7);
}

#[test]
fn config_validation_rejects_nonsense_without_panicking() {
    use std::time::Duration;
    let ok = RaftConfig::default();
    assert!(ok.validate().is_ok());
    let bad = [
        RaftConfig {
            heartbeat_interval: Duration::from_millis(300),
            ..ok.clone()
        },
        RaftConfig {
            election_timeout_max: Duration::from_millis(300),
            ..ok.clone()
        },
        RaftConfig {
            tick_interval: Duration::ZERO,
            ..ok.clone()
        },
        RaftConfig {
            max_entries_per_append: 0,
            ..ok.clone()
        },
        RaftConfig {
            heartbeat_interval: Duration::from_millis(1),
            ..ok.clone()
        },
    ];
    for cfg in bad {
        assert!(cfg.validate().is_err(), "{cfg:?} must be refused");
        assert!(
            RaftCore::new(1, &[1], cfg, RecoveredState::default(), 1).is_err(),
            "a core refuses an invalid config"
        );
    }
}

#[test]
fn a_core_refuses_an_id_outside_the_voters_and_id_zero() {
    assert!(RaftCore::new(
        4,
        &[1, 2, 3],
        RaftConfig::default(),
        RecoveredState::default(),
        1
    )
    .is_err());
    assert!(RaftCore::new(
        0,
        &[0, 1],
        RaftConfig::default(),
        RecoveredState::default(),
        1
    )
    .is_err());
}
