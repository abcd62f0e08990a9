//! `RaftCore` on the replication hot path, without IO: what the protocol
//! itself costs per entry, before any disk or network.
//!
//! - `follower AppendEntries`: how long does a follower take to accept an
//!   AppendEntries of 1 or of 64 entries (100-byte payloads) and hand out
//!   the resulting `Ready`? Measured per message: `step`, `ready()`,
//!   `advance()` and dropping the `Ready`, as the inline driver does around
//!   its disk write. Each message extends the log where the previous one
//!   ended and commits the previous one (`leader_commit`), as in steady
//!   state, so the `Ready` holds the entries to persist, the reply and the
//!   previous message's entries to apply. Building the message (what the
//!   transport would have decoded) is outside the timing.
//! - `leader, 2 followers`: how long does a leader of a 3-node cluster take
//!   to turn 64 client commands (100 bytes each) into its `Ready` (the 64
//!   entries to persist and one AppendEntries per follower), and then to
//!   step the two followers' successful replies and hand out the 64
//!   committed entries? Each iteration runs that whole round; `propose x64
//!   + ready` times the first half, `2 replies + ready` the second, and
//!   `round` both. The payloads are allocated outside the timing.
//!
//! Throughput is in entries, so criterion's entries/s is the rate one core
//! could sustain on this path if nothing else (disk, network, apply) cost
//! anything. The log is compacted outside the timing every few thousand
//! entries, so it does not grow without bound.
//!
//! Run: `cargo bench -p raft --bench core_step`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft::{
    AppendEntriesArgs, AppendEntriesReply, HardState, LogEntry, LogIndex, Message, RaftConfig,
    RaftCore, RaftState, RecoveredState, RequestVoteReply, Rpc,
};

const PAYLOAD: usize = 100;
const TERM: u64 = 1;
/// Compact the log (outside the timing) once it holds this many entries.
const COMPACT_AFTER: u64 = 8192;

fn payload() -> Vec<u8> {
    vec![b'x'; PAYLOAD]
}

/// Forgets the applied prefix once the in-memory log is long.
fn maybe_compact(core: &mut RaftCore) {
    if core.last_log_index() - core.snapshot_index() > COMPACT_AFTER {
        assert!(
            core.compact(core.applied_index()),
            "applied entries compact"
        );
    }
}

// ----- Follower ---------------------------------------------------------------

/// Follower 1 of voters 1..=3 in term 1, which has heard from leader 2.
fn follower() -> RaftCore {
    let recovered = RecoveredState {
        hard_state: HardState {
            term: TERM,
            voted_for: Some(2),
        },
        entries: Vec::new(),
    };
    let mut core =
        RaftCore::new(1, &[1, 2, 3], RaftConfig::default(), recovered, 1).expect("valid core");
    core.step(append(0, 0, 0));
    let rd = core.ready();
    core.advance(&rd);
    assert_eq!(core.leader_id(), Some(2));
    core
}

/// AppendEntries from leader 2: `n` entries after `prev`, committing `prev`.
fn append(prev: LogIndex, n: u64, commit: LogIndex) -> Message {
    Message {
        from: 2,
        to: 1,
        rpc: Rpc::AppendEntries(AppendEntriesArgs {
            term: TERM,
            leader_id: 2,
            prev_log_index: prev,
            prev_log_term: if prev == 0 { 0 } else { TERM },
            entries: (1..=n)
                .map(|i| LogEntry::new(TERM, prev + i, payload()))
                .collect(),
            leader_commit: commit,
            read_round: 0,
        }),
    }
}

fn bench_follower(c: &mut Criterion) {
    let mut group = c.benchmark_group("follower AppendEntries");
    for n in [1u64, 64] {
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("step + ready", n), &n, |b, &n| {
            let mut core = follower();
            // Check once, untimed, that a step yields what the bench claims.
            let prev = core.last_log_index();
            core.step(append(prev, n, prev));
            let rd = core.ready();
            core.advance(&rd);
            assert_eq!(rd.entries.len() as u64, n);
            assert!(matches!(
                rd.persisted_messages.as_slice(),
                [Message { rpc: Rpc::AppendEntriesReply(r), .. }] if r.success
            ));
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let prev = core.last_log_index();
                    let msg = append(prev, n, prev);
                    let start = Instant::now();
                    core.step(msg);
                    let rd = core.ready();
                    core.advance(&rd);
                    drop(black_box(rd));
                    timed += start.elapsed();
                    assert_eq!(core.persisted_index(), prev + n);
                    maybe_compact(&mut core);
                }
                timed
            })
        });
    }
    group.finish();
}

// ----- Leader -----------------------------------------------------------------

/// Node 1 of voters 1..=3 as the leader of a fresh cluster, its no-op
/// committed and both followers streaming (not probing).
fn leader() -> RaftCore {
    let mut core = RaftCore::new(
        1,
        &[1, 2, 3],
        RaftConfig::default(),
        RecoveredState::default(),
        1,
    )
    .expect("valid core");
    for _ in 0..10_000 {
        if core.state() != RaftState::Follower {
            break;
        }
        core.tick();
    }
    // Grant every (pre-)vote asked for until it leads.
    for _ in 0..4 {
        let rd = core.ready();
        core.advance(&rd);
        for m in rd.persisted_messages {
            if let Rpc::RequestVote(a) = m.rpc {
                core.step(Message {
                    from: m.to,
                    to: 1,
                    rpc: Rpc::RequestVoteReply(RequestVoteReply {
                        term: a.term,
                        vote_granted: true,
                        pre_vote: a.pre_vote,
                    }),
                });
            }
        }
    }
    assert!(core.is_leader(), "node 1 won its election");
    let rd = core.ready();
    core.advance(&rd);
    let last = core.last_log_index();
    step_replies(&mut core, last);
    let rd = core.ready();
    core.advance(&rd);
    assert_eq!(core.commit_index(), last, "the no-op committed");
    core
}

/// Successful AppendEntries replies from both followers up to `match_index`.
fn step_replies(core: &mut RaftCore, match_index: LogIndex) {
    for from in [2, 3] {
        core.step(Message {
            from,
            to: 1,
            rpc: Rpc::AppendEntriesReply(AppendEntriesReply {
                term: core.term(),
                success: true,
                match_index,
                rejected_prev_index: 0,
                conflict_index: 0,
                conflict_term: None,
                read_round: 0,
                voter: true,
            }),
        });
    }
}

const PROPOSALS: usize = 64;

/// The time of each half of one leader round.
struct Round {
    propose: Duration,
    commit: Duration,
}

/// Which part of a round a benchmark reports.
#[derive(Clone, Copy)]
enum Part {
    Propose,
    Commit,
    Whole,
}

impl Round {
    fn part(&self, part: Part) -> Duration {
        match part {
            Part::Propose => self.propose,
            Part::Commit => self.commit,
            Part::Whole => self.propose + self.commit,
        }
    }
}

/// Proposes 64 commands and runs the Ready (entries to persist and an
/// AppendEntries per follower), then steps both followers' replies and runs
/// the Ready that commits the 64 entries.
fn leader_round(core: &mut RaftCore) -> Round {
    let payloads: Vec<Vec<u8>> = (0..PROPOSALS).map(|_| payload()).collect();
    let start = Instant::now();
    for data in payloads {
        black_box(core.propose(data).expect("leader"));
    }
    let rd = core.ready();
    core.advance(&rd);
    let entries = rd.entries.len();
    let appends = rd.messages.len();
    drop(black_box(rd));
    let proposed = start.elapsed();
    assert_eq!((entries, appends), (PROPOSALS, 2));

    let last = core.last_log_index();
    let start = Instant::now();
    step_replies(core, last);
    let rd = core.ready();
    core.advance(&rd);
    let committed = rd.committed_entries.len();
    drop(black_box(rd));
    let commit = start.elapsed();
    assert_eq!(
        (committed as u64, core.commit_index()),
        (PROPOSALS as u64, last)
    );

    maybe_compact(core);
    Round {
        propose: proposed,
        commit,
    }
}

fn bench_leader(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("leader, 2 followers, {PROPOSALS} x {PAYLOAD} B"));
    group.throughput(Throughput::Elements(PROPOSALS as u64));
    let parts = [
        ("propose x64 + ready", Part::Propose),
        ("2 replies + ready", Part::Commit),
        ("round", Part::Whole),
    ];
    for (name, part) in parts {
        group.bench_function(name, |b| {
            let mut core = leader();
            b.iter_custom(|iters| (0..iters).map(|_| leader_round(&mut core).part(part)).sum())
        });
    }
    group.finish();
}

criterion_group! {
    name = core_step;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_follower, bench_leader
}
criterion_main!(core_step);
