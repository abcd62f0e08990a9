//! §5.4 Safety: the election restriction (§5.4.1) and committing entries from
//! previous terms (§5.4.2), with the paper's Figure 8 as a deterministic script.

mod common;

use common::{config, Cluster};
use raft::{
    BugSwitches, HardState, LogEntry, Message, RaftConfig, RaftCore, RaftState, RecoveredState,
    RequestVoteArgs, Rpc,
};

fn voter(log_terms: &[u64], term: u64) -> RaftCore {
    let entries = log_terms
        .iter()
        .enumerate()
        .map(|(i, &t)| LogEntry::new(t, i as u64 + 1, vec![]))
        .collect();
    let recovered = RecoveredState {
        hard_state: HardState {
            term,
            voted_for: None,
        },
        entries,
    };
    RaftCore::new(1, &[1, 2, 3], config(false, false), recovered, 1).expect("core")
}

fn ask(c: &mut RaftCore, term: u64, last_index: u64, last_term: u64) -> bool {
    c.step(Message {
        from: 2,
        to: 1,
        rpc: Rpc::RequestVote(RequestVoteArgs {
            term,
            candidate_id: 2,
            last_log_index: last_index,
            last_log_term: last_term,
            pre_vote: false,
            leadership_transfer: false,
        }),
    });
    let rd = c.ready();
    match rd.persisted_messages.last().map(|m| &m.rpc) {
        Some(Rpc::RequestVoteReply(r)) => r.vote_granted,
        other => panic!("expected a vote reply, got {other:?}"),
    }
}

#[test]
fn a_vote_is_refused_to_a_candidate_whose_last_term_is_older() {
    let mut c = voter(&[1, 2], 3);
    assert!(
        !ask(&mut c, 4, 10, 1),
        "a longer log of an older term is less up to date"
    );
}

#[test]
fn a_vote_is_refused_to_a_candidate_with_the_same_last_term_but_a_shorter_log() {
    let mut c = voter(&[1, 2, 2], 3);
    assert!(!ask(&mut c, 4, 2, 2));
}

#[test]
fn a_vote_is_granted_to_a_candidate_at_least_as_up_to_date() {
    let mut c = voter(&[1, 2, 2], 3);
    assert!(ask(&mut c, 4, 3, 2), "same last term, same length");
    let mut c = voter(&[1, 2, 2], 3);
    assert!(
        ask(&mut c, 4, 1, 3),
        "a later last term wins even when shorter"
    );
}

#[test]
fn the_election_restriction_keeps_committed_entries_in_every_later_leader() {
    // Leader Completeness, checked over many elections with failures.
    for seed in 0..20 {
        let mut cl = Cluster::with_seed(5, config(true, true), seed);
        cl.tick_all(100);
        for round in 0..6u64 {
            let leader = cl.leaders()[0];
            cl.propose(leader, format!("r{round}").as_bytes());
            cl.deliver();
            let committed = cl.core(leader).commit_index();
            // Crash the leader and one more node; a new leader must still
            // hold every committed entry.
            let other = cl.ids.iter().copied().find(|&i| i != leader).unwrap_or(1);
            cl.crash(leader);
            cl.crash(other);
            cl.tick_all(200);
            let new_leader = cl.leaders();
            assert_eq!(new_leader.len(), 1, "seed {seed} round {round}");
            let nl = new_leader[0];
            assert!(
                cl.core(nl).last_log_index() >= committed,
                "seed {seed}: leader lacks committed entries"
            );
            cl.restart(leader);
            cl.restart(other);
            cl.tick_all(100);
        }
        assert!(
            cl.safety_violations.is_empty(),
            "{:?}",
            cl.safety_violations
        );
    }
}

/// Plays Figure 8 of the Raft paper on five servers. Returns the cluster.
fn figure_8(bugs_on_s1: BugSwitches) -> Cluster {
    let cfg = RaftConfig {
        // One entry per AppendEntries, so S1 can replicate its old entry
        // without its new one (the situation of Figure 8 (c)).
        max_entries_per_append: 1,
        ..config(false, false)
    };
    let mut cl = Cluster::new(5, cfg);
    cl.core_mut(1).set_bug_switches(bugs_on_s1);
    // Term 1: everyone agrees on index 1.
    cl.elect(2);
    assert_eq!(cl.log_terms(5), vec![1]);

    // (a) S1 leads term 2; its entry at index 2 reaches S2 only.
    cl.drop_if = Some(Box::new(|m| {
        m.from == 1 && m.to != 2 && matches!(m.rpc, Rpc::AppendEntries(_))
    }));
    cl.elect(1);
    assert_eq!(cl.core(1).term(), 2);
    assert_eq!(cl.log_terms(1), vec![1, 2]);
    assert_eq!(cl.log_terms(2), vec![1, 2]);

    // (b) S1 crashes; S5 is elected in term 3 by S3, S4, S5 and appends an
    // entry at index 2 that nobody else receives.
    cl.crash(1);
    cl.drop_if = Some(Box::new(|m| {
        m.from == 5 && matches!(m.rpc, Rpc::AppendEntries(_))
    }));
    cl.campaign(5);
    assert_eq!(cl.core(5).state(), RaftState::Leader);
    assert_eq!(cl.core(5).term(), 3);
    assert_eq!(cl.log_terms(5), vec![1, 3]);

    // (c) S5 crashes; S1 restarts, leads term 4, and replicates its term-2
    // entry to S3 — but not yet its own term-4 entry. Index 2 is now on a
    // majority (S1, S2, S3).
    cl.crash(5);
    cl.restart(1);
    cl.core_mut(1).set_bug_switches(bugs_on_s1);
    // S1's first probe (prev index 2, carrying its term-4 no-op) reaches S2,
    // which already has index 2 and so acknowledges it, and S3, which lacks
    // index 2 and rejects it, so S1 backs up and sends S3 index 2. Every
    // later message carrying the term-4 entry is lost: the no-op stays on
    // S1 and S2 only, a minority.
    let probed = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    cl.drop_if = Some(Box::new(move |m| {
        m.from == 1
            && match &m.rpc {
                Rpc::AppendEntries(a) => {
                    let has_new = a.entries.iter().any(|e| e.term == 4);
                    if m.to <= 3 && has_new && !probed.borrow().contains(&m.to) {
                        probed.borrow_mut().push(m.to);
                        return false;
                    }
                    m.to > 3 || has_new
                }
                _ => false,
            }
    }));
    for _ in 0..5 {
        cl.campaign(1);
        if cl.core(1).is_leader() {
            break;
        }
    }
    assert_eq!(cl.core(1).term(), 4);
    cl.tick_all(cl.config.heartbeat_ticks() * 2);
    for s in [1, 2, 3] {
        assert_eq!(
            cl.core(s).entry(2).map(|e| e.term),
            Some(2),
            "S{s} stores index 2 of term 2"
        );
    }
    cl.drop_queue();

    // (d) S1 crashes; S5 restarts and is elected by S3 and S4 (its last
    // term, 3, beats S3's 2 and S4's 1; S2 holds S1's term-4 entry and
    // refuses), then overwrites index 2 everywhere with its term-3 entry.
    cl.crash(1);
    cl.restart(5);
    cl.drop_if = None;
    for _ in 0..5 {
        cl.campaign(5);
        if cl.core(5).is_leader() {
            break;
        }
    }
    assert!(cl.core(5).is_leader());
    cl.tick_all(cl.config.heartbeat_ticks() * 2);
    for s in [2, 3, 4, 5] {
        assert_eq!(
            cl.core(s).entry(2).map(|e| e.term),
            Some(3),
            "S{s} holds S5's entry"
        );
    }
    cl.restart(1);
    cl.tick_all(cl.config.heartbeat_ticks() * 4);
    cl
}

#[test]
fn figure_8_an_old_term_entry_on_a_majority_is_not_committed_by_counting() {
    let cl = figure_8(BugSwitches::default());
    assert!(
        cl.safety_violations.is_empty(),
        "{:?}",
        cl.safety_violations
    );
    assert_eq!(
        cl.log_terms(1)[1],
        3,
        "S1's uncommitted term-2 entry was safely replaced"
    );
    assert_eq!(cl.applied_terms.get(&2), Some(&3));
}

#[test]
fn figure_8_with_counting_of_old_terms_applies_an_entry_that_is_later_overwritten() {
    // Proof that the scenario bites: break the §5.4.2 rule on S1 and the
    // harness sees two different entries applied at index 2.
    let cl = figure_8(BugSwitches {
        commit_previous_term_by_counting: true,
        ..BugSwitches::default()
    });
    assert!(
        !cl.safety_violations.is_empty(),
        "committing a term-2 entry by counting must lead to a State Machine Safety violation"
    );
}

#[test]
fn figure_8_e_once_an_entry_of_the_current_term_commits_older_ones_commit_with_it() {
    let cfg = config(false, false);
    let mut cl = Cluster::new(5, cfg);
    cl.elect(2);
    cl.drop_if = Some(Box::new(|m| {
        m.from == 1 && m.to != 2 && matches!(m.rpc, Rpc::AppendEntries(_))
    }));
    cl.elect(1);
    cl.crash(1);
    cl.drop_if = None;
    cl.restart(1);
    for _ in 0..5 {
        cl.campaign(1);
        if cl.core(1).is_leader() {
            break;
        }
    }
    cl.deliver();
    // The no-op of S1's new term is on a majority: index 2 (term 2) commits too.
    assert!(cl.core(1).commit_index() >= 3);
    assert_eq!(cl.applied_terms.get(&2), Some(&2));
    assert!(cl.safety_violations.is_empty());
}
