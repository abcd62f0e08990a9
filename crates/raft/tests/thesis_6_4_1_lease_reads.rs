//! Thesis §6.4.1, lease reads (opt-in, `RaftConfig::lease_reads`): a leader
//! whose heartbeat round was acknowledged by a majority knows that no other
//! leader can be elected for a while, because each of those servers refuses
//! to vote for a minimum election timeout after hearing from it (§4.2.3). It
//! serves reads in that window without a round of its own. The window is
//! counted from the *start* of the acknowledged round, shortened by a clock
//! drift margin, and a restarted server abstains from voting for a minimum
//! election timeout because it cannot remember whom it acknowledged.

mod common;

use common::{request_vote, vote_granted, Cluster};
use raft::{
    BugSwitches, ConfigError, HardState, Message, NodeId, RaftConfig, RaftCore, RaftState,
    ReadState, RecoveredState, Rpc,
};

fn lease_config() -> RaftConfig {
    RaftConfig {
        lease_reads: true,
        ..RaftConfig::default()
    }
}

fn reads(cl: &Cluster, id: NodeId) -> Vec<ReadState> {
    cl.read_states.get(&id).cloned().unwrap_or_default()
}

/// Ticks everyone (servers with leases do not vote during their first
/// election timeout, so `Cluster::elect` on fresh cores would fail) until one
/// leader has committed its no-op; returns it.
fn settle(cl: &mut Cluster) -> NodeId {
    for _ in 0..cl.config.election_ticks_max() * 10 {
        cl.tick_all(1);
        if let [leader] = cl.leaders()[..] {
            let c = cl.core(leader);
            if c.term_at(c.commit_index()) == Some(c.term()) {
                return leader;
            }
        }
    }
    panic!("no leader emerged");
}

fn others(cl: &Cluster, leader: NodeId) -> Vec<NodeId> {
    cl.ids.iter().copied().filter(|&i| i != leader).collect()
}

#[test]
fn a_leader_within_its_lease_answers_a_read_without_a_heartbeat_round() {
    let mut cl = Cluster::new(3, lease_config());
    let leader = settle(&mut cl);
    let commit = cl.core(leader).commit_index();
    let sent_before = cl.delivered.len();
    cl.core_mut(leader).read_index(7).expect("leader");
    cl.process(leader);
    assert_eq!(
        reads(&cl, leader),
        vec![ReadState {
            id: 7,
            result: Ok(commit)
        }],
        "answered in the same Ready"
    );
    cl.deliver();
    assert_eq!(cl.delivered.len(), sent_before, "no message was needed");
}

#[test]
fn without_lease_reads_the_same_read_waits_for_a_round() {
    let mut cl = Cluster::new(3, RaftConfig::default());
    let leader = settle(&mut cl);
    cl.core_mut(leader).read_index(7).expect("leader");
    cl.process(leader);
    assert!(reads(&cl, leader).is_empty());
    cl.deliver();
    assert_eq!(reads(&cl, leader).len(), 1);
}

#[test]
fn the_lease_is_renewed_by_heartbeats() {
    let mut cl = Cluster::new(3, lease_config());
    let leader = settle(&mut cl);
    // Long past the first round's lease, heartbeats have renewed it.
    cl.tick_all(cl.config.election_ticks_max() * 5);
    assert_eq!(cl.leaders(), vec![leader]);
    cl.core_mut(leader).read_index(1).expect("leader");
    cl.process(leader);
    assert_eq!(reads(&cl, leader).len(), 1, "served from the lease");
}

#[test]
fn a_cut_off_leader_stops_serving_from_its_lease_when_it_expires() {
    let mut cl = Cluster::new(3, lease_config());
    let leader = settle(&mut cl);
    let rest = others(&cl, leader);
    cl.partition(&[&[leader], &rest]);
    // The last round a majority acknowledged started at most a heartbeat
    // ago; after `lease_ticks` more ticks it has certainly expired, and that
    // is still before check-quorum makes the leader step down.
    let lease = cl.config.lease_ticks();
    assert!(lease + 1 < cl.config.election_ticks_min());
    for _ in 0..lease {
        cl.tick(leader);
    }
    assert!(cl.core(leader).is_leader());
    cl.core_mut(leader)
        .read_index(1)
        .expect("still thinks it leads");
    cl.process(leader);
    assert!(
        reads(&cl, leader).is_empty(),
        "an expired lease must fall back to a heartbeat round: {:?}",
        reads(&cl, leader)
    );
}

#[test]
fn the_lease_counts_from_the_start_of_the_round_not_from_the_acknowledgement() {
    let mut cl = Cluster::new(3, lease_config());
    let leader = settle(&mut cl);
    let rest = others(&cl, leader);
    // Heartbeats go out but are held in the network; the followers answer
    // only much later. Their answers prove they abstain from voting from
    // when they *received* the round, which says nothing about the time
    // between the round's start and then.
    cl.partition(&[&[leader], &rest]);
    cl.drop_queue();
    let hb = cl.config.heartbeat_ticks();
    let mut held: Vec<Message> = Vec::new();
    for _ in 0..hb {
        cl.tick(leader);
        held.append(&mut std::mem::take(&mut cl.queue).into());
    }
    assert!(
        held.iter().any(|m| matches!(m.rpc, Rpc::AppendEntries(_))),
        "a heartbeat round started"
    );
    // Time passes; the round's lease runs out while its messages travel.
    for _ in 0..cl.config.lease_ticks() {
        cl.tick(leader);
    }
    cl.drop_queue();
    cl.heal();
    for m in held
        .into_iter()
        .filter(|m| matches!(m.rpc, Rpc::AppendEntries(_)))
    {
        let to = m.to;
        cl.core_mut(to).step(m);
        cl.process(to);
    }
    // Deliver only the answers to the held round.
    let answers: Vec<Message> = std::mem::take(&mut cl.queue).into();
    for m in answers.into_iter().filter(|m| m.to == leader) {
        cl.core_mut(leader).step(m);
    }
    cl.core_mut(leader).read_index(9).expect("leader");
    cl.process(leader);
    assert!(
        reads(&cl, leader).is_empty(),
        "a late acknowledgement of an old round gives no lease: {:?}",
        reads(&cl, leader)
    );
}

#[test]
fn a_lease_read_still_waits_for_the_noop_of_the_term() {
    let mut cl = Cluster::new(3, lease_config());
    let leader = settle(&mut cl);
    // The leader dies; a new one is elected but nobody hears its entries.
    cl.crash(leader);
    let rest = others(&cl, leader);
    cl.drop_if = Some(Box::new(
        |m| matches!(&m.rpc, Rpc::AppendEntries(a) if !a.entries.is_empty()),
    ));
    let mut new_leader = None;
    for _ in 0..cl.config.election_ticks_max() * 10 {
        cl.tick_all(1);
        if let Some(&l) = cl.leaders().first() {
            new_leader = Some(l);
            break;
        }
    }
    let new_leader = new_leader.expect("a new leader among the survivors");
    assert!(rest.contains(&new_leader));
    cl.tick_all(cl.config.heartbeat_ticks() * 2);
    cl.core_mut(new_leader).read_index(3).expect("leader");
    cl.process(new_leader);
    assert!(
        reads(&cl, new_leader).is_empty(),
        "§6.4 step 1: no read before an entry of the leader's term commits"
    );
    cl.drop_if = None;
    cl.tick_all(cl.config.heartbeat_ticks() * 2);
    assert_eq!(reads(&cl, new_leader).len(), 1);
}

#[test]
fn a_follower_in_a_leaders_lease_refuses_to_vote() {
    let mut cl = Cluster::new(3, lease_config());
    let leader = settle(&mut cl);
    let [a, b] = others(&cl, leader)[..] else {
        unreachable!("three nodes")
    };
    let term = cl.core(a).term();
    cl.core_mut(a).step(request_vote(b, a, term + 1, 100, term));
    assert!(!vote_granted(cl.core_mut(a)));
    assert_eq!(cl.core(a).term(), term);
}

fn fresh_core(config: RaftConfig) -> RaftCore {
    let recovered = RecoveredState {
        hard_state: HardState {
            term: 5,
            voted_for: None,
        },
        entries: Vec::new(),
    };
    RaftCore::new(1, &[1, 2, 3], config, recovered, 7).expect("valid core")
}

#[test]
fn a_restarted_server_does_not_vote_for_a_minimum_election_timeout() {
    // It may have acknowledged a leader's round just before it stopped, and
    // that leader may be serving reads from the lease.
    let config = lease_config();
    let min = config.election_ticks_min();
    let mut core = fresh_core(config);
    core.step(request_vote(2, 1, 6, 100, 5));
    assert!(!vote_granted(&mut core), "refused right after the restart");
    assert_eq!(core.term(), 5, "and the term is not raised");
    // Keep it from campaigning itself: a leader of term 5 is heard from
    // only at the start; then silence until the minimum timeout passes.
    for _ in 0..min - 1 {
        core.tick();
    }
    core.step(request_vote(2, 1, 6, 100, 5));
    assert!(!vote_granted(&mut core), "still refused before the timeout");
    core.tick();
    // (A higher term still, in case its own timer fired on this tick.)
    core.step(request_vote(2, 1, 7, 100, 6));
    assert!(
        vote_granted(&mut core),
        "granted once the timeout has passed"
    );
}

#[test]
fn without_lease_reads_a_restarted_server_votes_at_once() {
    let mut core = fresh_core(RaftConfig::default());
    core.step(request_vote(2, 1, 6, 100, 5));
    assert!(vote_granted(&mut core));
    assert_eq!(core.state(), RaftState::Follower);
}

#[test]
fn the_injected_lease_bug_serves_reads_after_the_real_lease_expired() {
    // What the simulator must catch with clock drift: the same cut-off
    // leader as above, but trusting a lease that outlives followers' vote
    // abstention.
    let mut cl = Cluster::new(3, lease_config());
    let leader = settle(&mut cl);
    cl.core_mut(leader).set_bug_switches(BugSwitches {
        lease_ignores_clock_drift: true,
        ..BugSwitches::default()
    });
    let rest = others(&cl, leader);
    cl.partition(&[&[leader], &rest]);
    for _ in 0..cl.config.lease_ticks() {
        cl.tick(leader);
    }
    cl.core_mut(leader)
        .read_index(1)
        .expect("still thinks it leads");
    cl.process(leader);
    assert_eq!(reads(&cl, leader).len(), 1, "served past the real lease");
}

#[test]
fn the_lease_is_shortened_by_the_clock_drift_margin() {
    let config = lease_config();
    // 300 ms minimum election timeout in 10 ms ticks: 30 ticks, of which 29
    // are certain; 10 % drift either way leaves 29 · 90 / 110 = 23.7.
    assert_eq!(config.election_ticks_min(), 30);
    assert_eq!(config.lease_ticks(), 23);
    let no_drift = RaftConfig {
        lease_clock_drift_percent: 0,
        ..config.clone()
    };
    assert_eq!(no_drift.lease_ticks(), 29);
}

#[test]
fn lease_reads_without_check_quorum_are_refused() {
    let config = RaftConfig {
        check_quorum: false,
        ..lease_config()
    };
    assert_eq!(config.validate(), Err(ConfigError::LeaseWithoutCheckQuorum));
    let short = RaftConfig {
        lease_clock_drift_percent: 50,
        heartbeat_interval: std::time::Duration::from_millis(150),
        ..lease_config()
    };
    assert!(matches!(
        short.validate(),
        Err(ConfigError::LeaseTooShort { .. })
    ));
}
