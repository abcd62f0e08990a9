//! Cluster scenarios through the client API (the journal's Days 6 and 7):
//! `RaftServer`s on the in-memory network, driven by `RaftHandle`s.
//!
//! Time is virtual in every test (`start_paused`): tokio advances the paused
//! clock whenever every task is idle, so "wait until X, at most T" loops cost
//! no real time. Each node's state machine is a `ListStateMachine` whose
//! applied commands the test can also see directly (see
//! [`harness::ObservedList`]), and each node's disk is a `MemoryStorage`
//! shared with the test (see [`harness::SharedStorage`]), so a node can be
//! stopped and started again on what it had persisted.

mod catching_up;
mod happy_path;
mod harness;
mod leader_failures;
mod membership;
mod reads;
mod restarts;
mod who_serves;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{cmd, Cluster};
use raft::{ClientError, ListOutput, NodeId, RaftConfig, RaftState, ServerError, Term};
use tokio::time::{sleep, timeout, Instant};

/// Bound on a first election or a failover: a few election timeouts.
const ELECTION_BOUND: Duration = Duration::from_secs(3);
/// Bound on anything that should follow promptly (replication, catch-up).
const PROMPT: Duration = Duration::from_secs(2);

fn items(cmds: &[&str]) -> ListOutput {
    ListOutput::Items(cmds.iter().map(|c| cmd(c)).collect())
}

fn cmds(cmds: &[&str]) -> Vec<Vec<u8>> {
    cmds.iter().map(|c| cmd(c)).collect()
}

fn not_leader(hint: Option<NodeId>) -> ClientError {
    ClientError::NotLeader { leader_hint: hint }
}
