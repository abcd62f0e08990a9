//! §7 Log compaction at the level of the core: a log that starts after a
//! snapshot, followers skipping what their snapshot covers, the leader
//! switching to InstallSnapshot, and the §7 install rules.

mod common;

use common::{config, Cluster};
use raft::{
    AppendEntriesArgs, HardState, InstallSnapshotArgs, LogEntry, Message, RaftCore, RaftState,
    RecoveredState, Rpc, SnapshotChunkVerdict,
};

/// A follower (id 1 of 1..=3) whose log starts after a snapshot ending at
/// (`snap`, term 1) and holds entries `snap+1..=last` of term 1.
fn follower_after_snapshot(snap: u64, last: u64) -> RaftCore {
    let entries = (snap + 1..=last)
        .map(|i| LogEntry::new(1, i, vec![i as u8]))
        .collect();
    let recovered = RecoveredState {
        hard_state: HardState {
            term: 1,
            voted_for: None,
        },
        entries,
    };
    RaftCore::with_snapshot(
        1,
        &[1, 2, 3],
        config(false, false),
        recovered,
        Some((snap, 1)),
        1,
    )
    .expect("core")
}

fn append(prev: u64, first: u64, last: u64, commit: u64) -> Message {
    Message {
        from: 2,
        to: 1,
        rpc: Rpc::AppendEntries(AppendEntriesArgs {
            term: 1,
            leader_id: 2,
            prev_log_index: prev,
            prev_log_term: if prev == 0 { 0 } else { 1 },
            entries: (first..=last)
                .map(|i| LogEntry::new(1, i, vec![i as u8]))
                .collect(),
            leader_commit: commit,
            read_round: 0,
        }),
    }
}

fn append_reply(c: &mut RaftCore) -> (bool, u64) {
    let rd = c.ready();
    match rd.persisted_messages.last().map(|m| &m.rpc) {
        Some(Rpc::AppendEntriesReply(r)) => (r.success, r.match_index),
        other => panic!("expected an append reply, got {other:?}"),
    }
}

#[test]
fn a_core_built_after_a_snapshot_starts_committed_and_applied_at_its_index() {
    let c = follower_after_snapshot(10, 12);
    assert_eq!(c.snapshot_index(), 10);
    assert_eq!(
        c.commit_index(),
        10,
        "the snapshot holds only committed entries"
    );
    assert_eq!(
        c.applied_index(),
        10,
        "the state machine was restored from it"
    );
    assert_eq!(c.last_log_index(), 12);
    assert_eq!(
        c.term_at(10),
        Some(1),
        "the snapshot's last term is kept for the consistency check"
    );
    assert_eq!(c.entry(5), None, "compacted entries are gone");
}

#[test]
fn an_append_entries_reaching_into_the_compacted_range_skips_what_the_snapshot_covers() {
    let mut c = follower_after_snapshot(10, 10);
    // prev 5 lies inside the snapshot; entries 6..=12 overlap it.
    c.step(append(5, 6, 12, 12));
    let (ok, matched) = append_reply(&mut c);
    assert!(
        ok,
        "entries up to the snapshot are committed, so they match"
    );
    assert_eq!(matched, 12);
    assert_eq!(c.last_log_index(), 12);
    assert_eq!(c.entry(11).map(|e| e.data.clone()), Some(vec![11]));
    assert_eq!(c.commit_index(), 12);
}

#[test]
fn an_append_entries_wholly_inside_the_snapshot_is_acknowledged_without_change() {
    let mut c = follower_after_snapshot(10, 12);
    c.step(append(3, 4, 6, 6));
    let (ok, matched) = append_reply(&mut c);
    assert!(ok);
    assert_eq!(matched, 6, "it confirms exactly what the message covered");
    assert_eq!(
        c.last_log_index(),
        12,
        "nothing after the snapshot was touched"
    );
}

#[test]
fn a_leader_whose_follower_needs_compacted_entries_sends_a_snapshot_then_resumes() {
    let mut cl = Cluster::new(3, config(false, false));
    cl.elect(1);
    cl.partition(&[&[1, 2], &[3]]);
    for i in 0..20u8 {
        cl.propose(1, &[i]);
    }
    cl.deliver();
    let applied = cl.core(1).applied_index();
    assert!(
        cl.core_mut(1).compact(applied),
        "applied and durable entries may go"
    );
    assert_eq!(cl.core(1).snapshot_index(), applied);
    cl.heal();
    // The next heartbeat rounds find node 3 behind the compacted prefix.
    cl.tick_all(cl.config.heartbeat_ticks() * 3);
    assert_eq!(
        cl.snapshot_requests,
        vec![(1, 3)],
        "one request for a snapshot transfer to node 3, not one per heartbeat"
    );
    assert_eq!(
        cl.core(3).term(),
        cl.core(1).term(),
        "heartbeats kept flowing meanwhile"
    );
    // The driver streamed it; node 3 installed it.
    let term = cl.core(1).term_at(applied).expect("snapshot term");
    assert_eq!(
        cl.core_mut(3).restore_snapshot(applied, term, three()),
        Some(false),
        "a log that lacks the snapshot's last entry is discarded"
    );
    raft::Storage::reset(cl.disks.get_mut(&3).expect("disk"), applied, term).expect("reset");
    cl.core_mut(1).snapshot_sent(3, applied, true);
    cl.propose(1, b"after");
    cl.deliver();
    assert_eq!(
        cl.core(3).last_log_index(),
        cl.core(1).last_log_index(),
        "replication resumed after the snapshot"
    );
    assert_eq!(cl.core(3).commit_index(), cl.core(1).commit_index());
}

#[test]
fn installing_a_snapshot_keeps_a_matching_suffix_and_discards_a_conflicting_log() {
    // §7: "If existing log entry has same index and term as snapshot's last
    // included entry, retain log entries following it and reply".
    let mut c = follower_after_snapshot(0, 8);
    assert_eq!(c.restore_snapshot(5, 1, three()), Some(true));
    assert_eq!(
        (c.snapshot_index(), c.last_log_index()),
        (5, 8),
        "6..=8 kept"
    );
    // "Discard the entire log" when it does not contain the last entry.
    let mut c = follower_after_snapshot(0, 8);
    assert_eq!(
        c.restore_snapshot(5, 2, three()),
        Some(false),
        "term 2 at 5 is not what the log holds"
    );
    assert_eq!((c.snapshot_index(), c.last_log_index()), (5, 5));
    assert_eq!(c.commit_index(), 5);
    // A snapshot older than what is already committed changes nothing.
    assert_eq!(c.restore_snapshot(3, 1, three()), None);
}

fn chunk(term: u64, last_included: u64) -> InstallSnapshotArgs {
    InstallSnapshotArgs {
        term,
        leader_id: 2,
        last_included_index: last_included,
        last_included_term: term,
        offset: 0,
        data: vec![1, 2, 3],
        total_size: 1000,
        done: false,
    }
}

#[test]
fn a_chunk_from_a_stale_leader_is_refused_and_a_current_one_resets_the_election_timer() {
    let mut c = follower_after_snapshot(0, 2);
    assert_eq!(
        c.handle_snapshot_chunk(2, &chunk(0, 50)),
        SnapshotChunkVerdict::Refuse { term: 1 }
    );
    // A long transfer: chunk after chunk, for many election timeouts.
    assert_eq!(
        c.handle_snapshot_chunk(2, &chunk(1, 50)),
        SnapshotChunkVerdict::Accept { term: 1 }
    );
    let min = c.config().election_ticks_min();
    for _ in 0..10 {
        for _ in 0..min - 1 {
            c.tick();
        }
        assert_eq!(
            c.handle_snapshot_chunk(2, &chunk(1, 50)),
            SnapshotChunkVerdict::Accept { term: 1 }
        );
    }
    assert_eq!(
        c.state(),
        RaftState::Follower,
        "no election during the install"
    );
    assert_eq!(c.leader_id(), Some(2));
    // Everything the snapshot covers is already committed here: nothing to do.
    assert_eq!(
        c.handle_snapshot_chunk(2, &chunk(1, 0)),
        SnapshotChunkVerdict::Covered { term: 1 }
    );
}

#[test]
fn a_chunk_with_a_higher_term_makes_a_candidate_follow_the_leader() {
    let mut c = follower_after_snapshot(0, 0);
    while c.state() == RaftState::Follower {
        c.tick();
    }
    let term = c.term();
    let verdict = c.handle_snapshot_chunk(2, &chunk(term + 1, 30));
    assert_eq!(verdict, SnapshotChunkVerdict::Accept { term: term + 1 });
    assert_eq!(c.state(), RaftState::Follower);
    assert_eq!(c.term(), term + 1);
    let rd = c.ready();
    assert_eq!(
        rd.hard_state.map(|h| h.term),
        Some(term + 1),
        "the new term must be durable before the reply"
    );
}

#[test]
fn compaction_never_drops_entries_that_are_not_applied_or_durable() {
    let mut cl = Cluster::new(3, config(false, false));
    cl.elect(1);
    cl.propose(1, b"a");
    cl.deliver();
    let applied = cl.core(1).applied_index();
    assert!(!cl.core_mut(1).compact(applied + 1), "not applied yet");
    assert!(cl.core_mut(1).compact(applied));
    assert!(!cl.core_mut(1).compact(applied), "already compacted");
}

/// The configuration these tests' snapshots hold: voters 1, 2 and 3.
fn three() -> raft::Membership {
    raft::Membership::new(&[1, 2, 3], &[])
}
