//! Thesis §6.4 ReadIndex: a leader serves a read only after (1) an entry of
//! its own term has committed, (2) a majority confirmed it still leads, and
//! (3) the state machine has applied up to the recorded commit index.

mod common;

use common::{config, Cluster};
use raft::{BugSwitches, NotLeader, RaftState, ReadState};

fn reads(cl: &Cluster, id: u64) -> Vec<ReadState> {
    cl.read_states.get(&id).cloned().unwrap_or_default()
}

#[test]
fn a_read_on_a_follower_is_refused_with_a_leader_hint() {
    let mut cl = Cluster::new(3, config(true, true));
    cl.elect(1);
    assert_eq!(
        cl.core_mut(2).read_index(7),
        Err(NotLeader::NotLeader {
            leader_hint: Some(1)
        })
    );
}

#[test]
fn a_read_waits_for_a_heartbeat_round_confirmed_by_a_majority() {
    let mut cl = Cluster::new(3, config(true, true));
    cl.elect(1);
    cl.propose(1, b"w");
    cl.deliver();
    let commit = cl.core(1).commit_index();
    cl.core_mut(1).read_index(42).expect("leader");
    cl.process(1);
    assert!(reads(&cl, 1).is_empty(), "not before a majority answered");
    cl.deliver();
    assert_eq!(
        reads(&cl, 1),
        vec![ReadState {
            id: 42,
            result: Ok(commit)
        }]
    );
}

#[test]
fn a_partitioned_leader_never_confirms_a_read() {
    let mut cl = Cluster::new(3, config(true, false));
    cl.elect(1);
    cl.partition(&[&[1], &[2, 3]]);
    cl.core_mut(1).read_index(1).expect("still thinks it leads");
    cl.deliver();
    for _ in 0..cl.config.election_ticks_max() * 3 {
        cl.tick(1);
    }
    assert!(
        reads(&cl, 1).iter().all(|r| r.result.is_err()),
        "{:?}",
        reads(&cl, 1)
    );
    assert!(
        reads(&cl, 1).is_empty(),
        "with no majority the read stays pending"
    );
}

#[test]
fn without_the_quorum_check_a_partitioned_leader_serves_a_stale_read() {
    // The injected bug that the simulator must catch: it answers at once.
    let mut cl = Cluster::new(3, config(true, false));
    cl.elect(1);
    cl.core_mut(1).set_bug_switches(BugSwitches {
        read_without_quorum_check: true,
        ..BugSwitches::default()
    });
    cl.partition(&[&[1], &[2, 3]]);
    cl.core_mut(1).read_index(1).expect("thinks it leads");
    cl.process(1);
    assert_eq!(reads(&cl, 1).len(), 1, "served without asking anyone");
}

#[test]
fn a_new_leader_serves_no_read_before_its_noop_commits() {
    let mut cl = Cluster::new(3, config(false, false));
    cl.elect(1);
    cl.propose(1, b"w");
    cl.deliver();
    // The leader dies; node 2 wins the next election, but nobody hears its
    // no-op yet, so it cannot know whether its commit index is current.
    cl.crash(1);
    // Heartbeats flow (so a leadership round could complete); entries do not.
    cl.drop_if = Some(Box::new(|m| {
        m.from == 2 && matches!(&m.rpc, raft::Rpc::AppendEntries(a) if !a.entries.is_empty())
    }));
    for _ in 0..10 {
        cl.campaign(2);
        if cl.core(2).is_leader() {
            break;
        }
    }
    assert_eq!(cl.core(2).state(), RaftState::Leader);
    cl.core_mut(2).read_index(9).expect("leader");
    cl.tick_all(cl.config.heartbeat_ticks() * 3);
    assert!(reads(&cl, 2).is_empty(), "no read before the no-op commits");
    cl.drop_if = None;
    cl.tick_all(cl.config.heartbeat_ticks() * 2);
    let rs = reads(&cl, 2);
    assert_eq!(rs.len(), 1);
    let index = rs[0].result.expect("served");
    assert_eq!(
        cl.core(2).entry(index).map(|e| e.term),
        Some(cl.core(2).term()),
        "the read index covers the no-op"
    );
}

#[test]
fn pending_reads_fail_when_the_leader_steps_down() {
    let mut cl = Cluster::new(3, config(true, true));
    cl.elect(1);
    cl.partition(&[&[1], &[2, 3]]);
    cl.core_mut(1).read_index(5).expect("leader");
    cl.process(1);
    for _ in 0..cl.config.election_ticks_max() * 2 {
        cl.tick(1);
    }
    assert_ne!(cl.core(1).state(), RaftState::Leader);
    let rs = reads(&cl, 1);
    assert_eq!(rs.len(), 1);
    assert!(rs[0].result.is_err());
}

#[test]
fn concurrent_reads_share_one_heartbeat_round() {
    let mut cl = Cluster::new(3, config(true, true));
    cl.elect(1);
    cl.delivered.clear();
    for id in 0..10 {
        cl.core_mut(1).read_index(id).expect("leader");
    }
    cl.deliver();
    assert_eq!(reads(&cl, 1).len(), 10);
    let heartbeats = cl
        .delivered
        .iter()
        .filter(|m| m.from == 1 && matches!(m.rpc, raft::Rpc::AppendEntries(_)))
        .count();
    assert_eq!(
        heartbeats, 2,
        "one round to the two followers for ten reads"
    );
}

#[test]
fn a_reply_to_an_older_heartbeat_round_does_not_release_a_newer_read() {
    let mut cl = Cluster::new(3, config(true, true));
    cl.elect(1);
    cl.core_mut(1).read_index(1).expect("leader");
    cl.process(1);
    let round_1: Vec<_> = cl.queue.drain(..).collect();
    cl.core_mut(1).read_index(2).expect("leader");
    cl.process(1);
    // Only the first round's heartbeats reach the followers and come back.
    for m in round_1 {
        let to = m.to;
        cl.core_mut(to).step(m);
        cl.process(to);
    }
    let replies: Vec<_> = cl.queue.drain(..).collect();
    for m in replies {
        cl.core_mut(1).step(m);
    }
    cl.process(1);
    let ids: Vec<u64> = reads(&cl, 1).iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        vec![1],
        "read 2 began after round 1: round 1 cannot vouch for it"
    );
    cl.deliver();
    let ids: Vec<u64> = reads(&cl, 1).iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![1, 2], "the next round releases it");
}

#[test]
fn reads_arriving_during_a_round_wait_together_for_the_next_one() {
    // At most one ReadIndex round is in flight: under load a round per
    // round trip, shared by every read that arrived meanwhile.
    let mut cl = Cluster::new(3, config(true, true));
    cl.elect(1);
    cl.core_mut(1).read_index(1).expect("leader");
    cl.process(1);
    let round_1: Vec<_> = cl.queue.drain(..).collect();
    assert_eq!(round_1.len(), 2, "one heartbeat per follower");
    for id in 2..12 {
        cl.core_mut(1).read_index(id).expect("leader");
        cl.process(1);
    }
    assert!(
        cl.queue.is_empty(),
        "no second round while the first is in flight: {:?}",
        cl.queue
    );
    cl.queue.extend(round_1);
    cl.delivered.clear();
    cl.deliver();
    let rounds = cl
        .delivered
        .iter()
        .filter(|m| m.from == 1 && matches!(m.rpc, raft::Rpc::AppendEntries(_)))
        .count();
    assert_eq!(
        rounds, 4,
        "round 1 and one more round for the ten reads, each to two followers"
    );
    assert_eq!(reads(&cl, 1).len(), 11);
}
