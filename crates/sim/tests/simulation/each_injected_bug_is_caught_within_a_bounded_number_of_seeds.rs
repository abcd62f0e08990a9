//! One test per bug switch: the simulator must catch it within a bounded
//! number of seeds, with a fault mix (and, where a protocol feature would
//! mask the bug, a setting) that makes it reachable.

use super::*;

const BOUND: u64 = 200;

/// Runs seeds until one fails with one of `kinds`; panics if none does
/// within `BOUND` seeds, or if one fails with another kind.
fn caught(bug: Bug, kinds: &[ViolationKind], make: impl Fn(u64) -> SimOptions) -> SimOutcome {
    let started = Instant::now();
    for seed in 0..BOUND {
        let opts = SimOptions {
            bug: Some(bug),
            ..make(seed)
        };
        let outcome = run(&opts);
        if let Some(v) = &outcome.violation {
            assert!(
                kinds.contains(&v.kind),
                "{bug}: expected one of {kinds:?}:\n{}",
                outcome.report()
            );
            println!(
                "{bug}: caught at seed {seed} ({} seeds, {:.2} s): {v}\n  replay: {}",
                seed + 1,
                started.elapsed().as_secs_f64(),
                opts.replay_command()
            );
            return outcome;
        }
    }
    panic!("{bug}: not caught within {BOUND} seeds");
}

#[test]
fn commit_previous_term_by_counting() {
    // Figure 8 needs an old-term entry to reach a majority without the
    // new leader's no-op: one entry per AppendEntries, leaders that die
    // young (crashes), and logs that diverge (partitions, loss).
    caught(
        Bug::CommitPreviousTermByCounting,
        &[
            ViolationKind::UnsafeCommit,
            ViolationKind::LeaderCompleteness,
            ViolationKind::StateMachineSafety,
            ViolationKind::Durability,
        ],
        |seed| SimOptions {
            max_entries_per_append: Some(1),
            ..options(
                seed,
                3,
                20_000,
                "crash,power,partition,loss".parse().unwrap(),
            )
        },
    );
}

#[test]
fn forget_to_persist_vote() {
    caught(
        Bug::ForgetToPersistVote,
        &[
            ViolationKind::PersistBeforeReply,
            ViolationKind::ElectionSafety,
        ],
        |seed| options(seed, 3, 20_000, FaultMix::crashes()),
    );
}

#[test]
fn truncate_on_stale_append() {
    caught(
        Bug::TruncateOnStaleAppend,
        &[
            ViolationKind::CommittedEntryRemoved,
            ViolationKind::PersistBeforeReply,
            ViolationKind::UnsafeCommit,
            ViolationKind::LeaderCompleteness,
        ],
        |seed| options(seed, 3, 20_000, FaultMix::network()),
    );
}

#[test]
fn read_without_quorum_check() {
    // Check-quorum makes a deposed leader step down about when the
    // others elect a new one, which nearly closes the window for a stale
    // read; without it the window is the whole partition.
    caught(
        Bug::ReadWithoutQuorumCheck,
        &[ViolationKind::StaleRead, ViolationKind::Linearizability],
        |seed| SimOptions {
            check_quorum: Some(false),
            ..options(seed, 3, 20_000, FaultMix::partitions())
        },
    );
}

#[test]
fn compact_before_snapshot_durable() {
    // A crash between the compaction and the rename leaves a log that
    // starts after the newest snapshot: entries are gone for good.
    caught(
        Bug::CompactBeforeSnapshotDurable,
        &[ViolationKind::StorageContract],
        |seed| options(seed, 3, 10_000, FaultMix::snapshots()),
    );
}

#[test]
fn install_without_restore() {
    caught(
        Bug::InstallWithoutRestore,
        &[ViolationKind::StateMachineSafety],
        |seed| options(seed, 3, 10_000, FaultMix::snapshots()),
    );
}

#[test]
fn keep_superseded_log() {
    caught(
        Bug::KeepSupersededLog,
        &[
            ViolationKind::StorageContract,
            ViolationKind::LogMatching,
            ViolationKind::StateMachineSafety,
        ],
        |seed| options(seed, 3, 10_000, FaultMix::snapshots()),
    );
}

#[test]
fn skip_missed_ticks() {
    // The driver bug behind issue 13's stale lease reads: a resumed
    // leader counts acknowledgements queued during its pause before
    // the ticks it missed.
    caught(
        Bug::SkipMissedTicks,
        &[ViolationKind::StaleRead, ViolationKind::Linearizability],
        |seed| SimOptions {
            lease_reads: true,
            ..options(
                seed,
                3,
                20_000,
                "pause,partition".parse().expect("fault names"),
            )
        },
    );
}

#[test]
fn ignore_vote_right() {
    // A wiped node that votes at once gives some term two leaders.
    caught(
        Bug::IgnoreVoteRight,
        &[
            ViolationKind::ElectionSafety,
            ViolationKind::LeaderCompleteness,
            ViolationKind::UnsafeCommit,
            ViolationKind::Durability,
            ViolationKind::Linearizability,
            ViolationKind::StaleRead,
            ViolationKind::LogMatching,
            ViolationKind::StateMachineSafety,
        ],
        |seed| {
            options(
                seed,
                3,
                20_000,
                "wipe,crash,partition".parse().expect("fault names"),
            )
        },
    );
}

#[test]
fn forget_removed_incarnations() {
    // A removed server wiped and restarted with the old bootstrap list is
    // cleared by peers that forgot it: it votes again, and two such
    // servers can elect a leader of the old configuration.
    caught(
        Bug::ForgetRemovedIncarnations,
        &[
            ViolationKind::ElectionSafety,
            ViolationKind::LeaderCompleteness,
            ViolationKind::UnsafeCommit,
            ViolationKind::Durability,
            ViolationKind::Linearizability,
            ViolationKind::StaleRead,
            ViolationKind::LogMatching,
            ViolationKind::StateMachineSafety,
        ],
        |seed| {
            options(
                seed,
                3,
                20_000,
                "membership,wipe,crash,partition"
                    .parse()
                    .expect("fault names"),
            )
        },
    );
}

#[test]
fn skip_noop_on_election() {
    caught(
        Bug::SkipNoopOnElection,
        &[ViolationKind::Liveness],
        |seed| options(seed, 3, 5_000, FaultMix::crashes()),
    );
}
