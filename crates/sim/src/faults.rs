//! Which faults a run injects, and the bugs it can switch on.
//!
//! `snapshot` is a fault in the nemesis's sense: it does not break anything
//! itself, but it makes nodes take snapshots at random points, compact their
//! logs and catch followers up with InstallSnapshot (§7), and it adds the
//! crash points inside snapshotting and installation to the crashes.

use std::fmt;
use std::str::FromStr;

use raft::BugSwitches;

/// The fault mix of a run. Parsed from a comma-separated list of names
/// (`--faults crash,power,loss`) or groups (`partitions`, `crashes`,
/// `network`, `snapshots`, `all`, `none`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FaultMix {
    /// `partition`: the cluster splits in two groups that cannot talk.
    pub partition: bool,
    /// `asym`: one node can send but not receive, or receive but not send.
    pub asymmetric: bool,
    /// `bridge`: one node can talk to exactly one peer (with five nodes,
    /// sometimes Jepsen's bridge: two halves joined by one node).
    pub bridge: bool,
    /// `crash`: a process crash; written data survives (page cache).
    pub crash: bool,
    /// `power`: a power loss; only fsynced data and a prefix of the rest survive.
    pub power_loss: bool,
    /// `loss`: messages are dropped at random.
    pub loss: bool,
    /// `dup`: messages are delivered twice.
    pub duplicate: bool,
    /// `reorder`: wide random delays, no per-link FIFO.
    pub reorder: bool,
    /// `delay`: now and then a message arrives several elections late.
    pub long_delay: bool,
    /// `drift`: each node's clock runs a few percent fast or slow.
    pub drift: bool,
    /// `snapshot`: nodes take snapshots (at random moments and every N
    /// applied entries) and compact their logs; leaders send InstallSnapshot
    /// to followers that fell behind the compaction; with `crash` or
    /// `power`, nodes also crash inside snapshotting and installing.
    pub snapshot: bool,
    /// `snapshot-churn`: with `snapshot`, snapshots every 3-15 applied
    /// entries instead of 10-60, sent in chunks of 4-16 bytes instead of
    /// 8-64. Not part of `all`.
    pub snapshot_churn: bool,
    /// `pause`: one node stops for 0.2-1 s, a leader more often than not:
    /// a process stopped by SIGSTOP, a GC or a VM pause. It handles
    /// nothing meanwhile (messages and clients wait in its sockets) while
    /// the clock goes on; when it resumes, its driver first runs the ticks
    /// that came due, as `RaftServer` does (`raft::clock`), then the queued
    /// input. Lease reads must survive it (thesis §6.4.1).
    pub pause: bool,
    /// `clock-stop`: one node's clock stops for 0.2-1 s while it goes on
    /// handling messages and clients, and the ticks of the stop are lost.
    /// That is a clock running slower than the lease's drift bound
    /// (`lease_clock_drift_percent`), outside what lease reads assume, so
    /// it breaks them; ReadIndex does not care. Not part of `all`: it
    /// shows the assumption, it is not a fault leases must survive.
    pub clock_stop: bool,
    /// `wipe`: a node crashes and loses its whole data dir (a dead disk,
    /// an operator's `rm -rf`), then restarts empty with the same id. It
    /// forgot its votes, so its peers' incarnation books must keep it from
    /// voting again (`raft::incarnation`); at most `n - quorum` nodes are
    /// wiped in a run, since each one leaves the voters for good.
    pub wipe: bool,
    /// `membership`: the leader changes the configuration (thesis chapter
    /// 4, one server at a time): it removes a voter or a learner (itself
    /// too), adds a server that is not a member as a learner (with its old
    /// data dir, or a wiped one, as an operator re-adds a replaced
    /// machine), promotes a learner, or hands leadership to another voter
    /// (§3.10), while every other fault goes on. Removed servers keep
    /// running, as a forgotten process would.
    pub membership: bool,
}

const NAMES: [&str; 16] = [
    "partition",
    "asym",
    "bridge",
    "crash",
    "power",
    "loss",
    "dup",
    "reorder",
    "delay",
    "drift",
    "snapshot",
    "snapshot-churn",
    "pause",
    "clock-stop",
    "wipe",
    "membership",
];

impl FaultMix {
    pub fn none() -> Self {
        Self::default()
    }

    /// Every fault a correct cluster must survive, snapshots included (at
    /// their usual pace: not `snapshot-churn`); not `clock-stop`, which is
    /// outside the lease's clock assumption.
    pub fn all() -> Self {
        let mut m = Self::default();
        for name in NAMES {
            m.set(name);
        }
        m.snapshot_churn = false;
        m.clock_stop = false;
        m
    }

    /// Snapshots under stress: crashes, power losses and partitions while
    /// nodes snapshot often and followers install snapshots sent in small
    /// chunks (`snapshot,snapshot-churn,crash,power,partition`).
    pub fn snapshots() -> Self {
        FaultMix {
            partition: true,
            crash: true,
            power_loss: true,
            snapshot: true,
            snapshot_churn: true,
            ..Self::default()
        }
    }

    /// Partitions of every shape.
    pub fn partitions() -> Self {
        FaultMix {
            partition: true,
            asymmetric: true,
            bridge: true,
            ..Self::default()
        }
    }

    /// Crashes and power losses.
    pub fn crashes() -> Self {
        FaultMix {
            crash: true,
            power_loss: true,
            ..Self::default()
        }
    }

    /// Loss, duplication, reordering and long delays.
    pub fn network() -> Self {
        FaultMix {
            loss: true,
            duplicate: true,
            reorder: true,
            long_delay: true,
            ..Self::default()
        }
    }

    /// The union of two mixes.
    pub fn with(self, other: FaultMix) -> Self {
        let mut m = self;
        for name in NAMES {
            if other.get(name) {
                m.set(name);
            }
        }
        m
    }

    fn field(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "partition" => &mut self.partition,
            "asym" => &mut self.asymmetric,
            "bridge" => &mut self.bridge,
            "crash" => &mut self.crash,
            "power" => &mut self.power_loss,
            "loss" => &mut self.loss,
            "dup" => &mut self.duplicate,
            "reorder" => &mut self.reorder,
            "delay" => &mut self.long_delay,
            "drift" => &mut self.drift,
            "snapshot" => &mut self.snapshot,
            "snapshot-churn" => &mut self.snapshot_churn,
            "pause" => &mut self.pause,
            "clock-stop" => &mut self.clock_stop,
            "wipe" => &mut self.wipe,
            "membership" => &mut self.membership,
            _ => return None,
        })
    }

    fn set(&mut self, name: &str) {
        if let Some(f) = self.field(name) {
            *f = true;
        }
    }

    fn get(self, name: &str) -> bool {
        let mut m = self;
        m.field(name).is_some_and(|f| *f)
    }

    pub fn network_faults(self) -> bool {
        self.partition || self.asymmetric || self.bridge
    }

    pub fn node_faults(self) -> bool {
        self.crash || self.power_loss
    }

    /// Whether nodes take snapshots and compact their logs.
    pub fn snapshots_on(self) -> bool {
        self.snapshot
    }
}

impl fmt::Display for FaultMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::none() {
            return f.write_str("none");
        }
        if *self == Self::all() {
            return f.write_str("all");
        }
        if *self == Self::snapshots() {
            return f.write_str("snapshots");
        }
        let on: Vec<&str> = NAMES.iter().copied().filter(|n| self.get(n)).collect();
        f.write_str(&on.join(","))
    }
}

impl FromStr for FaultMix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut m = FaultMix::none();
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            m = match word {
                "none" => m,
                "all" => m.with(FaultMix::all()),
                "partitions" => m.with(FaultMix::partitions()),
                "crashes" => m.with(FaultMix::crashes()),
                "network" => m.with(FaultMix::network()),
                "snapshots" => m.with(FaultMix::snapshots()),
                name => {
                    if m.field(name).is_none() {
                        return Err(format!(
                            "unknown fault {name:?}; expected none, all, partitions, crashes, network, snapshots or one of {}",
                            NAMES.join(", ")
                        ));
                    }
                    m.set(name);
                    m
                }
            };
        }
        Ok(m)
    }
}

/// A bug the core can be told to have (see [`raft::BugSwitches`]), or,
/// for the last six, the simulator's own driver: each breaks one
/// rule, so a test can prove the simulator notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bug {
    /// Figure 8: commit entries of earlier terms by counting replicas.
    CommitPreviousTermByCounting,
    /// Persist the term but not the vote.
    ForgetToPersistVote,
    /// Truncate the log on any AppendEntries, even a stale one.
    TruncateOnStaleAppend,
    /// Serve ReadIndex reads without a heartbeat round.
    ReadWithoutQuorumCheck,
    /// Take office without appending a no-op.
    SkipNoopOnElection,
    /// Driver: compact the log as soon as the snapshot's temp file is
    /// written, before it is durable (§7: only a durable snapshot may
    /// replace the log).
    CompactBeforeSnapshotDurable,
    /// Driver: install a received snapshot without restoring the state
    /// machine from its image.
    InstallWithoutRestore,
    /// Driver: at restart, keep a log that the newest snapshot superseded
    /// or that ends before it (`reconcile`).
    KeepSupersededLog,
    /// Driver: after a pause, run one tick instead of all that came due
    /// (tokio's `MissedTickBehavior::Delay` without `raft::clock`), so a
    /// resumed leader believes in a lease that ran out during the pause.
    SkipMissedTicks,
    /// Driver: ignore the vote right (`raft::incarnation`), so a node
    /// whose data dir was wiped votes at once, in terms where it may have
    /// voted before its wipe.
    IgnoreVoteRight,
    /// Driver: forget a server's incarnation once its removal commits, so
    /// that it could come back under its id with a new data dir. Two
    /// removed servers wiped and restarted with the old `--cluster` list
    /// then clear each other (nobody remembers them), and with empty logs
    /// elect a leader of the old configuration: a second cluster. Found by
    /// the simulator in raftkv's first membership code (issue 15).
    ForgetRemovedIncarnations,
}

impl Bug {
    pub const ALL: [Bug; 11] = [
        Bug::CommitPreviousTermByCounting,
        Bug::ForgetToPersistVote,
        Bug::TruncateOnStaleAppend,
        Bug::ReadWithoutQuorumCheck,
        Bug::SkipNoopOnElection,
        Bug::CompactBeforeSnapshotDurable,
        Bug::InstallWithoutRestore,
        Bug::KeepSupersededLog,
        Bug::SkipMissedTicks,
        Bug::IgnoreVoteRight,
        Bug::ForgetRemovedIncarnations,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::CommitPreviousTermByCounting => "commit-previous-term-by-counting",
            Bug::ForgetToPersistVote => "forget-to-persist-vote",
            Bug::TruncateOnStaleAppend => "truncate-on-stale-append",
            Bug::ReadWithoutQuorumCheck => "read-without-quorum-check",
            Bug::SkipNoopOnElection => "skip-noop-on-election",
            Bug::CompactBeforeSnapshotDurable => "compact-before-snapshot-durable",
            Bug::InstallWithoutRestore => "install-without-restore",
            Bug::KeepSupersededLog => "keep-superseded-log",
            Bug::SkipMissedTicks => "skip-missed-ticks",
            Bug::IgnoreVoteRight => "ignore-vote-right",
            Bug::ForgetRemovedIncarnations => "forget-removed-incarnations",
        }
    }

    pub fn switches(self) -> BugSwitches {
        let mut b = BugSwitches::default();
        match self {
            Bug::CommitPreviousTermByCounting => b.commit_previous_term_by_counting = true,
            Bug::ForgetToPersistVote => b.forget_to_persist_vote = true,
            Bug::TruncateOnStaleAppend => b.truncate_on_stale_append = true,
            Bug::ReadWithoutQuorumCheck => b.read_without_quorum_check = true,
            Bug::SkipNoopOnElection => b.skip_noop_on_election = true,
            // The simulator's driver has these (`World::has_bug`).
            Bug::CompactBeforeSnapshotDurable
            | Bug::InstallWithoutRestore
            | Bug::KeepSupersededLog
            | Bug::SkipMissedTicks
            | Bug::IgnoreVoteRight
            | Bug::ForgetRemovedIncarnations => {}
        }
        b
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Bug {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Bug::ALL
            .iter()
            .copied()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
                format!("unknown bug {s:?}; expected one of {}", names.join(", "))
            })
    }
}
