//! Snapshots and log compaction (paper §7): seeds pass with crashes while
//! snapshots are taken and installed, and scripted scenarios (a follower down
//! while the leader compacts, an AppendEntries into the compacted range,
//! crashes around the snapshot's rename and mid-install) restart consistently.

use super::*;

#[test]
fn the_snapshot_faults_parse_and_print() {
    let mix: FaultMix = "snapshots".parse().unwrap();
    assert_eq!(mix, FaultMix::snapshots());
    assert_eq!(mix.to_string(), "snapshots");
    assert!(mix.snapshot && mix.snapshot_churn && mix.crash && mix.power_loss && mix.partition);
    assert!(FaultMix::all().snapshot && !FaultMix::all().snapshot_churn);
    let one: FaultMix = "snapshot,crash".parse().unwrap();
    assert!(one.snapshot && one.crash && !one.snapshot_churn);
    assert_eq!(one.to_string().parse::<FaultMix>().unwrap(), one);
}

#[test]
fn seeds_pass_with_snapshots_and_crashes_during_snapshotting_and_installation() {
    let started = Instant::now();
    let mut total = SimStats::default();
    for seed in 0..40 {
        let outcome = run(&options(seed, 3, 10_000, FaultMix::snapshots()));
        assert!(
            outcome.passed(),
            "fault mix snapshots:\n{}",
            outcome.report()
        );
        let s = &outcome.stats;
        total.snapshots_taken += s.snapshots_taken;
        total.snapshots_lost += s.snapshots_lost;
        total.compactions += s.compactions;
        total.snapshot_transfers += s.snapshot_transfers;
        total.snapshot_chunks += s.snapshot_chunks;
        total.snapshots_installed += s.snapshots_installed;
        total.snapshot_crashes += s.snapshot_crashes;
        total.appends_below_snapshot += s.appends_below_snapshot;
    }
    println!(
        "40 seeds passed in {:.2} s: {} snapshots taken ({} lost), {} compactions, {} transfers of {} chunks, {} installed, {} crashes at snapshot crash points, {} AppendEntries below a snapshot",
        started.elapsed().as_secs_f64(),
        total.snapshots_taken,
        total.snapshots_lost,
        total.compactions,
        total.snapshot_transfers,
        total.snapshot_chunks,
        total.snapshots_installed,
        total.snapshot_crashes,
        total.appends_below_snapshot
    );
    // The run must actually exercise what it claims to.
    assert!(total.compactions > 100, "{total:?}");
    assert!(total.snapshots_installed > 20, "{total:?}");
    assert!(
        total.snapshot_chunks > total.snapshot_transfers,
        "{total:?}"
    );
    assert!(total.snapshot_crashes > 20, "{total:?}");
    assert!(total.snapshots_lost > 0, "{total:?}");
}

/// A scripted cluster: snapshots on (no random crash points: no node faults
/// in the mix), snapshots only when the script or `every` says.
fn scenario(seed: u64, every: u64) -> Scenario {
    let mut s = Scenario::new(SimOptions {
        snapshot_every: Some(every),
        snapshot_chunk: Some(16),
        ..options(seed, 3, 0, "snapshot".parse().unwrap())
    });
    assert!(
        s.run_until(10_000, |s| s
            .leader()
            .is_some_and(|l| s.node(l).applied >= 5)),
        "no leader:\n{}",
        s.report()
    );
    s
}

fn no_violation(s: &Scenario) {
    assert!(s.violation().is_none(), "{}", s.report());
}

fn some_follower(s: &Scenario) -> u64 {
    let leader = s.leader().expect("a leader");
    (1..=3).find(|&id| id != leader).unwrap()
}

#[test]
fn a_follower_down_while_the_leader_compacts_catches_up_by_snapshot() {
    let mut s = scenario(1, 10);
    let follower = some_follower(&s);
    s.crash(follower, true);
    let behind = s.node(follower).disk_last;
    // The others go on, and compact past everything the follower holds.
    assert!(
        s.run_until(30_000, |s| s
            .leader()
            .is_some_and(|l| s.node(l).snapshot_index > behind + 20)),
        "{}",
        s.report()
    );
    no_violation(&s);
    s.restart(follower);
    let caught_up = s.run_until(10_000, |s| {
        let f = s.node(follower);
        f.installs > 0
            && s.leader()
                .is_some_and(|l| f.applied >= s.node(l).snapshot_index)
    });
    assert!(caught_up, "{}", s.report());
    let f = s.node(follower);
    assert!(f.snapshot_index > behind, "{f:?}");
    assert!(f.disk_log_start > behind, "the disk log was reset: {f:?}");
    let outcome = s.finish();
    assert!(outcome.passed(), "{}", outcome.report());
}

#[test]
fn an_append_entries_reaching_into_the_compacted_range_is_handled() {
    use raft::{
        AppendEntriesArgs, HardState, LogEntry, Message, RaftConfig, RaftCore, RecoveredState, Rpc,
    };
    // A follower that installed a snapshot ending at 10 (term 2), with
    // entries 11 and 12 after it.
    let recovered = RecoveredState {
        hard_state: HardState {
            term: 3,
            voted_for: None,
        },
        entries: vec![
            LogEntry::new(3, 11, b"a".to_vec()),
            LogEntry::new(3, 12, b"b".to_vec()),
        ],
    };
    let mut f = RaftCore::with_snapshot(
        2,
        &[1, 2, 3],
        RaftConfig::default(),
        recovered,
        Some((10, 2)),
        7,
    )
    .unwrap();
    let append = |f: &mut RaftCore, prev: (u64, u64), entries: Vec<LogEntry>| {
        let args = AppendEntriesArgs {
            term: 3,
            leader_id: 1,
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries,
            leader_commit: 12,
            read_round: 0,
        };
        f.step(Message {
            from: 1,
            to: 2,
            rpc: Rpc::AppendEntries(args),
        });
        let rd = f.ready();
        f.advance(&rd);
        let replies: Vec<_> = rd
            .persisted_messages
            .iter()
            .filter_map(|m| match &m.rpc {
                Rpc::AppendEntriesReply(r) => Some((r.success, r.match_index)),
                _ => None,
            })
            .collect();
        (replies, rd.entries)
    };
    let e = |term, index| LogEntry::new(term, index, vec![index as u8]);
    // A late AppendEntries entirely inside the snapshot: success, nothing
    // written, no entry changed.
    let (replies, written) = append(&mut f, (5, 1), vec![e(1, 6), e(2, 7), e(2, 8)]);
    assert_eq!(replies, vec![(true, 8)]);
    assert!(written.is_empty());
    // A heartbeat checking below the snapshot: success at its prev.
    let (replies, _) = append(&mut f, (4, 1), vec![]);
    assert_eq!(replies, vec![(true, 4)]);
    // One that straddles the snapshot: the covered part is skipped, the
    // rest checked at the snapshot's last entry (term 2) and appended.
    let (replies, written) = append(
        &mut f,
        (8, 2),
        vec![
            e(2, 9),
            e(2, 10),
            LogEntry::new(3, 11, b"a".to_vec()),
            LogEntry::new(3, 12, b"b".to_vec()),
            e(3, 13),
        ],
    );
    assert_eq!(replies, vec![(true, 13)]);
    assert_eq!(
        written.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![13]
    );
    assert_eq!((f.snapshot_index(), f.last_log_index()), (10, 13));
    assert_eq!(f.entry(11).map(|e| e.data.clone()), Some(b"a".to_vec()));

    // In the simulation: seeds where late, duplicated and reordered
    // AppendEntries reach below a follower's snapshot pass every check.
    let mut below = 0;
    for seed in 0..10 {
        let outcome = run(&options(seed, 3, 10_000, FaultMix::all()));
        assert!(outcome.passed(), "{}", outcome.report());
        below += outcome.stats.appends_below_snapshot;
    }
    assert!(below > 0, "no AppendEntries reached into a compacted range");
}

/// The snapshot crash points of a node taking a snapshot: what its disk
/// holds after the crash, and that it restarts consistently from it.
#[test]
fn a_crash_after_the_snapshot_rename_before_log_compaction_restarts_consistently() {
    let points = [
        (CrashPoint::SnapshotWritten, false),
        (CrashPoint::SnapshotSynced, true),
        (CrashPoint::SnapshotRenamed, false),
        (CrashPoint::SnapshotDurable, false),
        (CrashPoint::SnapshotDurable, true),
        (CrashPoint::SnapshotCompacted, true),
    ];
    for (seed, (point, power)) in points.into_iter().enumerate() {
        // No automatic snapshots: only the one asked for.
        let mut s = scenario(10 + seed as u64, 1_000_000);
        for crash_the_leader in [false, true] {
            let id = if crash_the_leader {
                s.leader().expect("a leader")
            } else {
                some_follower(&s)
            };
            let before = s.node(id).disk_snapshots.clone();
            s.arm_crash(id, point, power);
            assert!(s.snapshot_now(id), "{}", s.report());
            let index = s.node(id).applied;
            assert!(
                s.run_until(1_000, |s| !s.node(id).up),
                "{point}: no crash\n{}",
                s.report()
            );
            no_violation(&s);
            let down = s.node(id);
            let has_new = down.disk_snapshots.iter().any(|&(i, _)| i == index);
            match point {
                // Before the rename the snapshot is lost; the previous one stays.
                CrashPoint::SnapshotWritten | CrashPoint::SnapshotSynced => {
                    assert!(!has_new, "{point}: {down:?}");
                    assert_eq!(down.disk_snapshots, before, "{point}");
                }
                // A process crash keeps a rename.
                CrashPoint::SnapshotRenamed => assert!(has_new, "{point}: {down:?}"),
                // Durable, not compacted: the log still holds what it covers.
                CrashPoint::SnapshotDurable => {
                    assert!(has_new, "{point}: {down:?}");
                    assert!(down.disk_log_start < index, "{point}: {down:?}");
                    assert!(down.disk_last >= index, "{point}: {down:?}");
                }
                _ => {
                    assert!(has_new, "{point}: {down:?}");
                    assert_eq!(down.disk_log_start, index, "{point}: {down:?}");
                }
            }
            s.restart(id);
            let up = s.node(id);
            assert!(up.up, "{point}: {}", s.report());
            let expected_base = if has_new {
                index
            } else {
                before.last().map_or(0, |&(i, _)| i)
            };
            assert_eq!(up.snapshot_index, expected_base, "{point}: {up:?}");
            assert_eq!(
                up.applied, expected_base,
                "{point}: restored from the snapshot"
            );
            s.run_for(1_000);
            no_violation(&s);
        }
        let outcome = s.finish();
        assert!(outcome.passed(), "{point}:\n{}", outcome.report());
    }
}

/// A follower far behind gets a snapshot and crashes while installing it:
/// mid-transfer, after storing it, after resetting its log. It must restart
/// from what its disk holds and catch up.
#[test]
fn a_crash_mid_install_restarts_consistently() {
    let points = [
        CrashPoint::InstallMidTransfer,
        CrashPoint::InstallStored,
        CrashPoint::InstallLogReset,
    ];
    for (seed, point) in points.into_iter().enumerate() {
        let mut s = scenario(20 + seed as u64, 10);
        let follower = some_follower(&s);
        s.crash(follower, false);
        let behind = s.node(follower).disk_last;
        assert!(
            s.run_until(30_000, |s| s
                .leader()
                .is_some_and(|l| s.node(l).snapshot_index > behind + 10)),
            "{}",
            s.report()
        );
        let snapshots_before = s.node(follower).disk_snapshots.clone();
        s.arm_crash(follower, point, true);
        s.restart(follower);
        assert!(
            s.run_until(5_000, |s| !s.node(follower).up),
            "{point}: no crash\n{}",
            s.report()
        );
        no_violation(&s);
        let down = s.node(follower);
        let newest = down.disk_snapshots.last().map_or(0, |&(i, _)| i);
        match point {
            CrashPoint::InstallMidTransfer => {
                assert_eq!(down.disk_snapshots, snapshots_before, "{down:?}")
            }
            CrashPoint::InstallStored => {
                assert!(newest > behind, "{down:?}");
                assert!(
                    down.disk_last < newest,
                    "the log is not reset yet: {down:?}"
                );
            }
            _ => {
                assert!(newest > behind, "{down:?}");
                assert_eq!(down.disk_log_start, newest, "the log was reset: {down:?}");
            }
        }
        s.restart(follower);
        assert!(s.node(follower).up, "{}", s.report());
        if point != CrashPoint::InstallMidTransfer {
            // Restarted from the stored snapshot, the log fitted to it.
            let up = s.node(follower);
            assert_eq!(up.snapshot_index, newest, "{up:?}");
            assert_eq!(up.disk_log_start, newest, "{up:?}");
        }
        let caught_up = s.run_until(10_000, |s| {
            let f = s.node(follower);
            s.leader()
                .is_some_and(|l| f.applied >= s.node(l).snapshot_index && f.applied > behind)
        });
        assert!(caught_up, "{point}: {}", s.report());
        let outcome = s.finish();
        assert!(outcome.passed(), "{point}:\n{}", outcome.report());
    }
}

/// The snapshot a follower installs supersedes its log: the follower led an
/// older term alone and appended entries nobody else has, at the very
/// indexes the new leader's snapshot covers. A crash after storing the
/// snapshot, before the log reset, must discard that log on restart.
#[test]
fn a_crash_after_storing_a_snapshot_that_supersedes_the_log_restarts_consistently() {
    let mut s = Scenario::new(SimOptions {
        snapshot_every: Some(1_000_000),
        snapshot_chunk: Some(16),
        check_quorum: Some(false),
        pre_vote: Some(true),
        ..options(30, 3, 0, "snapshot".parse().unwrap())
    });
    assert!(
        s.run_until(10_000, |s| s
            .leader()
            .is_some_and(|l| s.node(l).applied >= 5)),
        "{}",
        s.report()
    );
    let old = s.leader().unwrap();
    // Cut off, the old leader keeps taking writes it can never commit.
    s.isolate(old);
    assert!(
        s.run_until(10_000, |s| s.leader().is_some_and(|l| l != old)),
        "{}",
        s.report()
    );
    let new = s.leader().unwrap();
    // The new leader's no-op: the first index of its term.
    let first_of_term = s.node(new).last_index;
    assert!(
        s.run_until(10_000, |s| {
            let applied = s.node(new).applied;
            applied >= first_of_term && applied <= s.node(old).last_index
        }),
        "the old leader's log is too short:\n{}",
        s.report()
    );
    // The new leader snapshots inside the old leader's private entries.
    assert!(s.snapshot_now(new), "{}", s.report());
    let index = s.node(new).applied;
    assert!(
        s.run_until(1_000, |s| s.node(new).snapshot_index == index),
        "{}",
        s.report()
    );
    s.arm_crash(old, CrashPoint::InstallStored, false);
    s.heal();
    assert!(
        s.run_until(10_000, |s| !s.node(old).up),
        "no crash while installing:\n{}",
        s.report()
    );
    no_violation(&s);
    let down = s.node(old);
    assert_eq!(
        down.disk_snapshots.last().map(|&(i, _)| i),
        Some(index),
        "{down:?}"
    );
    s.restart(old);
    let up = s.node(old);
    assert!(up.up, "{}", s.report());
    assert_eq!(
        (up.snapshot_index, up.disk_log_start),
        (index, index),
        "{up:?}"
    );
    let discarded = format!("n{old} log does not continue the snapshot at {index}/");
    assert!(
        s.trace_tail().iter().any(|l| l.contains(&discarded)),
        "no superseded log was discarded:\n{}",
        s.report()
    );
    s.run_for(2_000);
    no_violation(&s);
    let outcome = s.finish();
    assert!(outcome.passed(), "{}", outcome.report());
}
