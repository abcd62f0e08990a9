//! §5.3 Log replication: the consistency check, conflict truncation, idempotent
//! appends, fast backup (thesis §5.3), commit on a majority, catch-up.

mod common;

use common::{config, Cluster};
use raft::{
    AppendEntriesArgs, AppendEntriesReply, HardState, LogEntry, Message, RaftCore, Ready,
    RecoveredState, Rpc,
};

/// A follower (id 1, voters 1..=3) at `term` with a log of these terms.
fn follower(term: u64, log_terms: &[u64]) -> RaftCore {
    let entries = log_terms
        .iter()
        .enumerate()
        .map(|(i, &t)| LogEntry::new(t, i as u64 + 1, vec![i as u8]))
        .collect();
    let recovered = RecoveredState {
        hard_state: HardState {
            term,
            voted_for: None,
        },
        entries,
    };
    RaftCore::new(1, &[1, 2, 3], config(false, false), recovered, 1).expect("valid core")
}

fn append(term: u64, prev: (u64, u64), entries: &[(u64, u64)], commit: u64) -> Message {
    Message {
        from: 2,
        to: 1,
        rpc: Rpc::AppendEntries(AppendEntriesArgs {
            term,
            leader_id: 2,
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries: entries
                .iter()
                .map(|&(i, t)| LogEntry::new(t, i, format!("{i}@{t}").into_bytes()))
                .collect(),
            leader_commit: commit,
            read_round: 0,
        }),
    }
}

fn reply(rd: &Ready) -> AppendEntriesReply {
    match rd.persisted_messages.last().map(|m| &m.rpc) {
        Some(Rpc::AppendEntriesReply(r)) => r.clone(),
        other => panic!("expected an append reply, got {other:?}"),
    }
}

fn terms(c: &RaftCore) -> Vec<u64> {
    (1..=c.last_log_index())
        .map(|i| c.entry(i).map(|e| e.term).unwrap_or(0))
        .collect()
}

#[test]
fn a_follower_appends_entries_after_a_matching_prev_entry() {
    let mut c = follower(2, &[1, 1]);
    c.step(append(2, (2, 1), &[(3, 2), (4, 2)], 0));
    let rd = c.ready();
    let r = reply(&rd);
    assert!(r.success);
    assert_eq!(r.match_index, 4);
    assert_eq!(terms(&c), vec![1, 1, 2, 2]);
    assert_eq!(rd.entries.len(), 2, "only the new entries are persisted");
}

#[test]
fn a_follower_missing_the_prev_entry_rejects_with_its_log_length() {
    let mut c = follower(2, &[1, 1]);
    c.step(append(2, (5, 2), &[(6, 2)], 0));
    let r = reply(&c.ready());
    assert!(!r.success);
    assert_eq!(r.conflict_term, None);
    assert_eq!(r.conflict_index, 3, "one past the follower's last entry");
    assert_eq!(r.rejected_prev_index, 5);
    assert_eq!(c.last_log_index(), 2);
}

#[test]
fn a_term_mismatch_at_prev_is_rejected_with_the_first_index_of_that_term() {
    let mut c = follower(4, &[1, 2, 2, 2]);
    c.step(append(4, (4, 3), &[(5, 4)], 0));
    let r = reply(&c.ready());
    assert!(!r.success);
    assert_eq!(r.conflict_term, Some(2));
    assert_eq!(r.conflict_index, 2, "the whole term-2 run can be skipped");
    assert_eq!(
        terms(&c),
        vec![1, 2, 2, 2],
        "a rejected append changes nothing"
    );
}

#[test]
fn conflicting_entries_are_truncated_from_the_first_conflict_only() {
    let mut c = follower(3, &[1, 1, 2, 2]);
    c.step(append(3, (1, 1), &[(2, 1), (3, 3)], 0));
    let rd = c.ready();
    assert!(reply(&rd).success);
    assert_eq!(terms(&c), vec![1, 1, 3]);
    let persisted: Vec<u64> = rd.entries.iter().map(|e| e.index).collect();
    assert_eq!(persisted, vec![3], "the matching entry 2 is not rewritten");
}

#[test]
fn a_duplicated_append_entries_is_idempotent() {
    let mut c = follower(2, &[1]);
    let m = append(2, (1, 1), &[(2, 2), (3, 2)], 0);
    c.step(m.clone());
    c.ready();
    c.step(m);
    let rd = c.ready();
    assert!(reply(&rd).success);
    assert_eq!(terms(&c), vec![1, 2, 2], "no entry is appended twice");
    assert!(rd.entries.is_empty(), "nothing new to persist");
}

#[test]
fn a_stale_shorter_append_never_truncates_matching_entries() {
    let mut c = follower(2, &[1]);
    c.step(append(2, (1, 1), &[(2, 2), (3, 2), (4, 2)], 0));
    c.ready();
    // An older message of the same leader arrives late: entries 2..=2 only.
    c.step(append(2, (1, 1), &[(2, 2)], 0));
    let rd = c.ready();
    let r = reply(&rd);
    assert!(r.success);
    assert_eq!(
        r.match_index, 2,
        "it confirms only what the message covered"
    );
    assert_eq!(terms(&c), vec![1, 2, 2, 2], "entries 3 and 4 survive");
}

#[test]
fn reordered_appends_converge_to_the_same_log() {
    let msgs = [
        append(2, (0, 0), &[(1, 2)], 0),
        append(2, (1, 2), &[(2, 2), (3, 2)], 0),
        append(2, (3, 2), &[(4, 2)], 0),
        append(2, (0, 0), &[(1, 2), (2, 2)], 0),
    ];
    // Every order in which the four can arrive, repeated twice (duplicates).
    let orders = [
        [0, 1, 2, 3],
        [3, 1, 0, 2],
        [1, 0, 3, 2],
        [2, 3, 1, 0],
        [0, 3, 2, 1],
    ];
    for order in orders {
        let mut c = follower(2, &[]);
        for _ in 0..2 {
            for &i in &order {
                c.step(msgs[i].clone());
                c.ready();
            }
        }
        assert_eq!(terms(&c), vec![2, 2, 2, 2], "order {order:?}");
    }
}

#[test]
fn a_follower_commits_up_to_the_leader_commit_but_not_past_its_last_new_entry() {
    let mut c = follower(2, &[1, 1, 1, 1, 1]);
    // The follower holds 5 entries, but this message only proves 1..=2 match.
    c.step(append(2, (1, 1), &[(2, 1)], 5));
    let rd = c.ready();
    assert_eq!(
        c.commit_index(),
        2,
        "min(leaderCommit, index of last new entry)"
    );
    assert_eq!(rd.committed_entries.len(), 2);
    // A later heartbeat with a lower commit never lowers it.
    c.step(append(2, (1, 1), &[], 1));
    c.ready();
    assert_eq!(c.commit_index(), 2);
}

/// A rejection from follower 2 with the given fast-backup hint.
fn rejection(
    term: u64,
    rejected_prev: u64,
    conflict_index: u64,
    conflict_term: Option<u64>,
) -> Message {
    Message {
        from: 2,
        to: 1,
        rpc: Rpc::AppendEntriesReply(AppendEntriesReply {
            term,
            success: false,
            match_index: 0,
            rejected_prev_index: rejected_prev,
            conflict_index,
            conflict_term,
            read_round: 0,
            voter: true,
        }),
    }
}

/// A leader (node 1, term 5) whose log has these terms, with node 2's
/// next index at the end of the log.
fn leader_with_log(log_terms: &[u64]) -> RaftCore {
    let entries = log_terms
        .iter()
        .enumerate()
        .map(|(i, &t)| LogEntry::new(t, i as u64 + 1, vec![]))
        .collect();
    let recovered = RecoveredState {
        hard_state: HardState {
            term: 4,
            voted_for: None,
        },
        entries,
    };
    let mut c = RaftCore::new(1, &[1, 2, 3], config(false, false), recovered, 1).expect("core");
    while c.state() != raft::RaftState::Candidate {
        c.tick();
    }
    c.ready();
    c.step(Message {
        from: 3,
        to: 1,
        rpc: Rpc::RequestVoteReply(raft::RequestVoteReply {
            term: 5,
            vote_granted: true,
            pre_vote: false,
        }),
    });
    assert!(c.is_leader());
    c.ready();
    c
}

fn next_index_of_2(c: &RaftCore) -> u64 {
    c.replication_progress()
        .into_iter()
        .find(|(id, _, _)| *id == 2)
        .map(|(_, _, next)| next)
        .expect("progress for node 2")
}

#[test]
fn on_a_conflict_in_a_term_the_leader_has_it_skips_to_the_end_of_that_term() {
    // Leader log: 1 1 2 2 2 4 4 (+ no-op of term 5 at index 8).
    let mut c = leader_with_log(&[1, 1, 2, 2, 2, 4, 4]);
    // Follower says: my entry at 7 has term 2, and my term 2 starts at index 3.
    c.step(rejection(5, 7, 3, Some(2)));
    assert_eq!(
        next_index_of_2(&c),
        6,
        "one past the leader's last term-2 entry"
    );
}

#[test]
fn on_a_conflict_in_a_term_the_leader_lacks_it_skips_the_whole_term() {
    let mut c = leader_with_log(&[1, 1, 2, 2, 2, 4, 4]);
    // The follower's entry at 7 has term 3, a term the leader never saw,
    // starting at index 4 in the follower's log.
    c.step(rejection(5, 7, 4, Some(3)));
    assert_eq!(next_index_of_2(&c), 4);
}

#[test]
fn when_the_follower_log_is_too_short_the_leader_jumps_to_its_end() {
    let mut c = leader_with_log(&[1, 1, 2, 2, 2, 4, 4]);
    c.step(rejection(5, 7, 3, None));
    assert_eq!(next_index_of_2(&c), 3);
}

#[test]
fn a_stale_rejection_does_not_move_next_index_below_the_match_index() {
    let mut cl = Cluster::new(3, config(false, false));
    cl.elect(1);
    for i in 0..5 {
        cl.propose(1, &[i]);
    }
    cl.deliver();
    let (_, matched, next) = cl.core(1).replication_progress()[0];
    let term = cl.core(1).term();
    // A rejection of an old probe at index 1 arrives very late.
    cl.core_mut(1).step(rejection(term, 1, 1, None));
    let (_, matched2, next2) = cl.core(1).replication_progress()[0];
    assert_eq!((matched2, next2), (matched, next));
}

#[test]
fn a_follower_with_a_long_divergent_tail_converges_with_few_round_trips() {
    let mut cl = Cluster::new(3, config(false, false));
    cl.elect(1);
    cl.elect(3);
    // Node 3 leads term 2 alone and appends 30 entries no one else sees.
    cl.partition(&[&[1, 2], &[3]]);
    for i in 0..30 {
        cl.propose(3, format!("lost{i}").as_bytes());
    }
    cl.deliver();
    cl.elect(1);
    for i in 0..20 {
        cl.propose(1, format!("kept{i}").as_bytes());
    }
    cl.deliver();
    cl.elect(2);
    cl.delivered.clear();
    cl.heal();
    cl.tick_all(cl.config.heartbeat_ticks() * 2);
    let rejections = cl
        .delivered
        .iter()
        .filter(|m| m.from == 3 && matches!(&m.rpc, Rpc::AppendEntriesReply(r) if !r.success))
        .count();
    assert!(
        rejections <= 3,
        "fast backup: {rejections} rejections, not one per entry"
    );
    assert_eq!(cl.log_terms(3), cl.log_terms(2), "the follower converged");
    assert_eq!(cl.applied_data(3), cl.applied_data(2));
    assert!(!cl.applied_data(3).iter().any(|d| d.starts_with(b"lost")));
}

#[test]
fn the_leader_commits_an_entry_once_a_majority_stores_it_including_itself_durably() {
    let mut cl = Cluster::new(3, config(false, false));
    cl.elect(1);
    let (index, _) = cl.core_mut(1).propose(b"v".to_vec()).expect("leader");
    // Take the leader's Ready but do not make its entry durable yet.
    let rd = cl.core_mut(1).ready();
    assert_eq!(rd.entries.last().map(|e| e.index), Some(index));
    // Follower 2 stores it and acknowledges.
    for m in rd.messages.iter().filter(|m| m.to == 2) {
        cl.core_mut(2).step(m.clone());
    }
    let rd2 = cl.core_mut(2).ready();
    cl.core_mut(2).advance(&rd2);
    for m in rd2.persisted_messages {
        cl.core_mut(1).step(m);
    }
    // Leader + follower 2 is a majority, but the leader's own copy is not
    // durable: counting it would risk losing a committed entry on a crash.
    assert!(cl.core(1).commit_index() < index);
    cl.core_mut(1).advance(&rd);
    assert_eq!(cl.core(1).commit_index(), index);
}

#[test]
fn the_leader_does_not_commit_without_a_majority() {
    let mut cl = Cluster::new(5, config(false, false));
    cl.elect(1);
    let before = cl.core(1).commit_index();
    cl.partition(&[&[1, 2], &[3, 4, 5]]);
    let (index, _) = cl.propose(1, b"lonely");
    cl.deliver();
    assert!(cl.core(1).commit_index() < index);
    assert_eq!(cl.core(1).commit_index(), before);
}

#[test]
fn a_lagging_follower_catches_up_after_a_partition_heals() {
    let mut cl = Cluster::new(3, config(true, true));
    cl.elect(1);
    cl.partition(&[&[1, 2], &[3]]);
    for i in 0..50 {
        cl.propose(1, format!("w{i}").as_bytes());
        cl.deliver();
    }
    cl.heal();
    // Nothing tells the leader the messages were lost (a real transport
    // would report it); it notices when they stay unacknowledged for an
    // election timeout and probes again.
    cl.tick_all(cl.config.election_ticks_max() * 2);
    assert_eq!(cl.applied_data(3).len(), 50);
    assert_eq!(cl.applied_data(3), cl.applied_data(1));
}

#[test]
fn a_malformed_append_entries_is_refused_without_panicking() {
    let mut c = follower(2, &[1, 1]);
    // Indexes that overflow, a gap, and an entry newer than the leader's term.
    for m in [
        append(2, (u64::MAX, 1), &[(0, 2)], 0),
        append(2, (2, 1), &[(3, 2), (5, 2)], 0),
        append(2, (2, 1), &[(3, 9)], 0),
    ] {
        c.step(m);
        let r = reply(&c.ready());
        assert!(!r.success);
        assert_eq!(terms(&c), vec![1, 1], "nothing was appended");
    }
}

#[test]
fn a_follower_that_lost_acknowledged_entries_is_probed_again_from_its_end() {
    // A follower whose data dir was wiped answers a heartbeat at its old
    // match index with "my log is empty": the leader must start over.
    let mut cl = Cluster::new(3, config(false, false));
    cl.elect(1);
    for i in 0..5 {
        cl.propose(1, &[i]);
    }
    cl.deliver();
    let (peer, matched, _) = cl.core(1).replication_progress()[0];
    assert!(matched >= 6);
    let term = cl.core(1).term();
    cl.core_mut(1).step(Message {
        from: peer,
        to: 1,
        rpc: rejection(term, matched, 1, None).rpc,
    });
    let (_, matched2, next2) = cl.core(1).replication_progress()[0];
    assert_eq!(
        (matched2, next2),
        (0, 1),
        "probing from the follower's (empty) log"
    );
}

#[test]
fn each_follower_is_told_a_new_commit_index_once() {
    // A reply that commits entries makes the leader tell the followers at
    // once (they apply sooner); the follower whose reply did it must not
    // get the same notice twice in one Ready.
    let mut cl = Cluster::new(3, config(true, true));
    cl.elect(1);
    cl.delivered.clear();
    let (index, _) = cl.propose(1, b"x");
    cl.deliver();
    assert_eq!(cl.core(1).commit_index(), index);
    for to in [2, 3] {
        let notices = cl
            .delivered
            .iter()
            .filter(|m| {
                m.from == 1
                    && m.to == to
                    && matches!(&m.rpc, Rpc::AppendEntries(a)
                        if a.entries.is_empty() && a.leader_commit == index)
            })
            .count();
        assert_eq!(notices, 1, "commit notices to node {to}");
        assert_eq!(cl.core(to).commit_index(), index);
    }
}
