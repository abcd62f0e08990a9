//! Prometheus metrics (the `prometheus-client` crate): what clients asked
//! for, how long it took, and what Raft did underneath (through
//! [`raft::Observer`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use raft::{NodeId, RaftState, Rpc, Status, Term};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    pub command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabel {
    pub rpc: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub requests: Family<CommandLabel, Counter>,
    pub errors: Family<CommandLabel, Counter>,
    pub request_seconds: Histogram,
    proposals_per_batch: Histogram,
    fsync_seconds: Histogram,
    messages_sent: Family<RpcLabel, Counter>,
    append_entries_rejected: Counter,
    elections: Counter,
    leader_changes: Counter,
    term: Gauge,
    commit_index: Gauge,
    last_applied: Gauge,
    last_log_index: Gauge,
    is_leader: Gauge,
    last_leader: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("raftkv")),
            requests: Family::default(),
            errors: Family::default(),
            request_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            proposals_per_batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            fsync_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            messages_sent: Family::default(),
            append_entries_rejected: Counter::default(),
            elections: Counter::default(),
            leader_changes: Counter::default(),
            term: Gauge::default(),
            commit_index: Gauge::default(),
            last_applied: Gauge::default(),
            last_log_index: Gauge::default(),
            is_leader: Gauge::default(),
            last_leader: AtomicU64::new(0),
        };
        {
            let mut r = lock(&m.registry);
            r.register(
                "requests",
                "Client commands received, by command",
                m.requests.clone(),
            );
            r.register(
                "errors",
                "Client commands answered with an error, by command",
                m.errors.clone(),
            );
            r.register(
                "request_seconds",
                "Time from reading a batch of commands to answering it",
                m.request_seconds.clone(),
            );
            r.register(
                "proposals_per_batch",
                "Client proposals taken in one Raft round (one fsync)",
                m.proposals_per_batch.clone(),
            );
            r.register(
                "fsync_seconds",
                "Time to make one batch of log entries durable",
                m.fsync_seconds.clone(),
            );
            r.register(
                "raft_messages_sent",
                "Raft messages sent to peers, by kind",
                m.messages_sent.clone(),
            );
            r.register(
                "raft_append_entries_rejected",
                "AppendEntries replies that refused entries",
                m.append_entries_rejected.clone(),
            );
            r.register(
                "raft_elections",
                "Elections this node started (as candidate)",
                m.elections.clone(),
            );
            r.register(
                "raft_leader_changes",
                "Times this node saw a new leader",
                m.leader_changes.clone(),
            );
            r.register("raft_term", "Current term", m.term.clone());
            r.register(
                "raft_commit_index",
                "Highest log index known committed",
                m.commit_index.clone(),
            );
            r.register(
                "raft_last_applied",
                "Highest log index applied to the store",
                m.last_applied.clone(),
            );
            r.register(
                "raft_last_log_index",
                "Last index in this node's log",
                m.last_log_index.clone(),
            );
            r.register(
                "raft_is_leader",
                "1 when this node leads",
                m.is_leader.clone(),
            );
        }
        m
    }

    /// The Prometheus text exposition, with gauges refreshed from `status`.
    pub fn render(&self, status: &Status) -> String {
        self.term.set(status.term as i64);
        self.commit_index.set(status.commit_index as i64);
        self.last_applied.set(status.last_applied as i64);
        self.last_log_index.set(status.last_log_index as i64);
        self.is_leader
            .set(i64::from(status.state == RaftState::Leader));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &lock(&self.registry)) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }

    pub fn observe_request(&self, command: &str, elapsed: Duration, error: bool) {
        let label = CommandLabel {
            command: command.to_string(),
        };
        self.requests.get_or_create(&label).inc();
        if error {
            self.errors.get_or_create(&label).inc();
        }
        self.request_seconds.observe(elapsed.as_secs_f64());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The registry is only read and appended to; a poisoned lock still holds
    // consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl raft::Observer for Metrics {
    fn persisted(&self, _entries: usize, elapsed: Duration) {
        self.fsync_seconds.observe(elapsed.as_secs_f64());
    }

    fn message_sent(&self, _to: NodeId, rpc: &Rpc) {
        self.messages_sent
            .get_or_create(&RpcLabel {
                rpc: rpc.kind().to_string(),
            })
            .inc();
    }

    fn message_received(&self, _from: NodeId, rpc: &Rpc) {
        if let Rpc::AppendEntriesReply(r) = rpc {
            if !r.success {
                self.append_entries_rejected.inc();
            }
        }
    }

    fn state_changed(&self, state: RaftState, _term: Term, leader: Option<NodeId>) {
        if state == RaftState::Candidate {
            self.elections.inc();
        }
        let leader = leader.unwrap_or(0);
        if leader != 0 && self.last_leader.swap(leader, Ordering::Relaxed) != leader {
            self.leader_changes.inc();
        }
    }

    fn proposals_batched(&self, count: usize) {
        self.proposals_per_batch.observe(count as f64);
    }
}
