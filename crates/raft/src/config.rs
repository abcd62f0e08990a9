//! Tunables of the protocol, with a `validate()` that rejects nonsense.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::types::LogEntry;

/// How a Raft node behaves in time and how much it sends at once.
///
/// The core counts *ticks*; the driver turns wall-clock (or virtual) time into
/// ticks at `tick_interval`. Durations below are rounded to whole ticks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftConfig {
    /// Length of one tick of the logical clock.
    pub tick_interval: Duration,
    /// How often a leader sends AppendEntries when it has nothing else to say
    /// (§5.2: heartbeats maintain authority).
    pub heartbeat_interval: Duration,
    /// Election timeouts are drawn at random from `[min, max)` (§5.2: "randomized
    /// election timeouts to ensure that split votes are rare").
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Upper bound on entries in one AppendEntries.
    pub max_entries_per_append: usize,
    /// Upper bound on payload bytes in one AppendEntries (at least one entry is
    /// always sent, however large).
    pub max_bytes_per_append: usize,
    /// The largest command one entry may carry (`LogEntry::data`): a larger
    /// proposal is refused before it touches the log
    /// ([`ProposeError::TooLarge`](crate::ProposeError::TooLarge)). With
    /// `max_bytes_per_append` it bounds every AppendEntries
    /// ([`RaftConfig::max_append_bytes`]), so a transport with a frame limit
    /// knows every entry in the log can be sent.
    pub max_entry_bytes: usize,
    /// Thesis §9.6: pre-vote before raising the term.
    pub pre_vote: bool,
    /// Thesis §6.2: a leader steps down when it has not heard from a majority
    /// within an election timeout.
    pub check_quorum: bool,
    /// Maximum AppendEntries in flight to one follower (pipelining).
    pub max_inflight_appends: usize,
    /// §7 snapshot policy: snapshot once this many entries were applied
    /// since the last snapshot (0: never automatically).
    pub snapshot_after_entries: u64,
    /// ... or once the entries applied since then hold this many bytes.
    pub snapshot_after_bytes: u64,
    /// Snapshot files kept on disk (the newest ones). The log is compacted
    /// up to the newest, so an older one is a fallback only while the log
    /// still reaches back to it (see `snapshot.rs`).
    pub snapshots_to_keep: usize,
    /// Size of one InstallSnapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// Thesis §6.4.1: serve linearizable reads from a leader lease instead
    /// of a heartbeat round per read batch, while the lease lasts. Faster
    /// (no round trip), but safe only if clocks run at nearly the same rate
    /// and no process pauses longer than the margin allows: it trades a
    /// timing assumption for latency. Needs `check_quorum`, and every node of
    /// the cluster must run with it (followers' vote abstention is the other
    /// half of the lease). Off by default.
    pub lease_reads: bool,
    /// How much faster or slower (in percent) one node's clock may run than
    /// another's. The lease is shortened by this margin on both sides.
    pub lease_clock_drift_percent: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            tick_interval: Duration::from_millis(10),
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            max_entries_per_append: 1024,
            max_bytes_per_append: 1 << 20,
            max_entry_bytes: 32 << 20,
            pre_vote: true,
            check_quorum: true,
            max_inflight_appends: 64,
            snapshot_after_entries: 100_000,
            snapshot_after_bytes: 64 << 20,
            snapshots_to_keep: 2,
            snapshot_chunk_bytes: 1 << 20,
            lease_reads: false,
            lease_clock_drift_percent: 10,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("tick interval must be positive")]
    ZeroTick,
    #[error("heartbeat interval ({heartbeat:?}) must be at least one tick ({tick:?})")]
    HeartbeatBelowTick { heartbeat: Duration, tick: Duration },
    #[error("heartbeat interval ({heartbeat:?}) must be below the minimum election timeout ({election_min:?})")]
    HeartbeatNotBelowElection {
        heartbeat: Duration,
        election_min: Duration,
    },
    #[error(
        "election timeout range {min:?}-{max:?} is empty: the maximum must exceed the minimum"
    )]
    EmptyElectionRange { min: Duration, max: Duration },
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    #[error("lease reads need check_quorum: followers refuse votes only with it")]
    LeaseWithoutCheckQuorum,
    #[error("lease clock drift of {0}% is out of range (0-50)")]
    LeaseDriftOutOfRange(u64),
    #[error("the read lease ({lease} ticks after the drift margin) must outlast a heartbeat interval ({heartbeat} ticks); raise the election timeout or lower the drift")]
    LeaseTooShort { lease: u64, heartbeat: u64 },
}

impl RaftConfig {
    /// Checks that the settings make sense together. Never panics.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tick_interval.is_zero() {
            return Err(ConfigError::ZeroTick);
        }
        if self.heartbeat_interval < self.tick_interval {
            return Err(ConfigError::HeartbeatBelowTick {
                heartbeat: self.heartbeat_interval,
                tick: self.tick_interval,
            });
        }
        if self.heartbeat_interval >= self.election_timeout_min {
            return Err(ConfigError::HeartbeatNotBelowElection {
                heartbeat: self.heartbeat_interval,
                election_min: self.election_timeout_min,
            });
        }
        if self.election_timeout_max <= self.election_timeout_min
            || self.ticks(self.election_timeout_max) <= self.ticks(self.election_timeout_min)
        {
            return Err(ConfigError::EmptyElectionRange {
                min: self.election_timeout_min,
                max: self.election_timeout_max,
            });
        }
        if self.max_entries_per_append == 0 {
            return Err(ConfigError::ZeroLimit("max_entries_per_append"));
        }
        if self.max_bytes_per_append == 0 {
            return Err(ConfigError::ZeroLimit("max_bytes_per_append"));
        }
        if self.max_entry_bytes == 0 {
            return Err(ConfigError::ZeroLimit("max_entry_bytes"));
        }
        if self.max_inflight_appends == 0 {
            return Err(ConfigError::ZeroLimit("max_inflight_appends"));
        }
        if self.snapshot_after_bytes == 0 {
            return Err(ConfigError::ZeroLimit("snapshot_after_bytes"));
        }
        if self.snapshots_to_keep == 0 {
            return Err(ConfigError::ZeroLimit("snapshots_to_keep"));
        }
        if self.snapshot_chunk_bytes == 0 {
            return Err(ConfigError::ZeroLimit("snapshot_chunk_bytes"));
        }
        if self.lease_reads {
            if !self.check_quorum {
                return Err(ConfigError::LeaseWithoutCheckQuorum);
            }
            if self.lease_clock_drift_percent > 50 {
                return Err(ConfigError::LeaseDriftOutOfRange(
                    self.lease_clock_drift_percent,
                ));
            }
            if self.lease_ticks() <= self.heartbeat_ticks() {
                return Err(ConfigError::LeaseTooShort {
                    lease: self.lease_ticks(),
                    heartbeat: self.heartbeat_ticks(),
                });
            }
        }
        Ok(())
    }

    /// The most entry bytes (the sum of [`LogEntry::size`]) one AppendEntries
    /// carries: `max(max_bytes_per_append, max_entry_bytes + SIZE_OVERHEAD)`.
    ///
    /// `RaftLog::slice` adds entries while their sum stays within
    /// `max_bytes_per_append`, except the first, which always goes (alone if
    /// need be), and `propose` refuses a command over `max_entry_bytes`. A
    /// transport whose frames hold this many entry bytes, plus the encoding
    /// of `max_entries_per_append` entries' headers and one message's other
    /// fields, carries every AppendEntries: replication never meets an entry
    /// it cannot send. (A node also sends entries that an earlier leader
    /// accepted under *its* limit: give every node the same one.)
    ///
    /// [`LogEntry::size`]: crate::LogEntry::size
    pub fn max_append_bytes(&self) -> usize {
        self.max_bytes_per_append
            .max(self.max_entry_bytes.saturating_add(LogEntry::SIZE_OVERHEAD))
    }

    /// `d` in whole ticks (at least 1).
    pub fn ticks(&self, d: Duration) -> u64 {
        let tick = self.tick_interval.as_nanos().max(1);
        ((d.as_nanos() / tick) as u64).max(1)
    }

    pub fn heartbeat_ticks(&self) -> u64 {
        self.ticks(self.heartbeat_interval)
    }

    pub fn election_ticks_min(&self) -> u64 {
        self.ticks(self.election_timeout_min)
    }

    pub fn election_ticks_max(&self) -> u64 {
        self.ticks(self.election_timeout_max)
    }

    /// The most ticks a driver runs in one catch-up after a pause (see
    /// [`crate::clock`]). After this many, every timer the core counts has
    /// run out: election timeouts (at most `election_ticks_max`),
    /// check-quorum and the lease (both shorter than the minimum election
    /// timeout). More ticks would change nothing but the time spent looping.
    pub fn max_catch_up_ticks(&self) -> u64 {
        2 * self.election_ticks_max() + 2
    }

    /// Thesis §6.4.1: how long, in the leader's ticks, a lease lasts after
    /// the start of a heartbeat round a majority acknowledged.
    ///
    /// A follower that hears from the leader refuses to vote for anyone else
    /// for a minimum election timeout of *its* clock, of which at least
    /// `election_ticks_min - 1` whole ticks remain (its next tick may come
    /// right after the message). If its clock runs fast by the drift `d`
    /// (its timeout ends early) and the leader's slow by `d` (the leader
    /// counts time late), that is `(min - 1) · (1 - d) / (1 + d)` of the
    /// leader's ticks, rounded down.
    pub fn lease_ticks(&self) -> u64 {
        let d = self.lease_clock_drift_percent.min(50);
        self.election_ticks_min().saturating_sub(1) * (100 - d) / (100 + d)
    }
}
