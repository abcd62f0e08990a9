//! Jepsen-style chaos against real `raftkv server` processes.
//!
//! Concurrent clients (threads, each with its own connection, spread over all
//! nodes) run GET, SET, SET .. IFEQ and INCR on a few keys and record every
//! operation with its call and return time. Meanwhile a nemesis, driven by a
//! seeded RNG, kills nodes with `kill -9` and restarts them on their data
//! dirs, pauses them (SIGSTOP / SIGCONT, the leader too) and partitions them
//! through an in-test proxy in front of every peer port
//! (`process::proxy`). At the end everything is healed, and every key is
//! read through the leader and then through every other node. The history is
//! checked key by key with the simulator's linearizability checker
//! (`raftkv_sim::linearizability`); the final reads are part of it, so an
//! acknowledged write that was lost shows up as a final read that no
//! linearization explains.
//!
//! Outcomes follow the contract: `-CLUSTERDOWN` means certainly not applied
//! (dropped from the history); `-TIMEOUT`, a connection error or no reply
//! means a write's outcome is unknown (it may take effect at any time after
//! its call); a read that got no value is simply dropped.
//!
//! Every run prints its seed. Environment:
//! - `RAFTKV_CHAOS_SEED=N` replays a seed: the same fault schedule and client
//!   choices (not the same interleaving: these are real processes);
//! - `RAFTKV_CHAOS_SECS=N` sets the seconds of faults per configuration
//!   (default 8). Runs longer than 30 s are checked in epochs of 30 s: the
//!   cluster is healed and quiesced, the keys read, and the next epoch
//!   starts from the values read.

#[path = "../process/mod.rs"]
mod process;

mod clients;
mod configurations;
mod nemesis;
mod one_run;
mod self_check;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raftkv::kv::{KvOutput, NOT_AN_INTEGER, OVERFLOW};
use raftkv::peer::{encode_frame, Frame};
use raftkv_sim::client::{choose_op, Client};
use raftkv_sim::linearizability::check_history;
use raftkv_sim::rng::SimRng;
use raftkv_sim::trace::fmt_time;
use raftkv_sim::{describe_lin_violation, HistoryOp, KvOp, Outcome};

use process::proxy::{dialer_of, read_frame, Cut, Network};
use process::{encode_cmd, try_wait_until, wait_until, Cluster, Opts, RawConn, Resp, POLL};

/// Few keys, so that operations collide.
const KEYS: usize = 4;
const CLIENTS_PER_NODE: usize = 2;
/// The servers' `--request-timeout-ms`.
const REQUEST_TIMEOUT_MS: u64 = 2000;
/// A client gives up on a reply after this long: longer than the server's
/// request timeout, so a node that runs answers `-TIMEOUT` first and only a
/// dead or paused one leaves the client without a reply.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(REQUEST_TIMEOUT_MS + 1000);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Seconds of faults per configuration in `cargo test`.
const DEFAULT_FAULT_SECS: u64 = 8;
/// Long runs are checked in pieces of this length (the checker's memory
/// grows with the square of one key's history).
const EPOCH: Duration = Duration::from_secs(30);
/// Client load before the first fault, so there is data to lose.
const WARM_UP: Duration = Duration::from_millis(500);
/// Every epoch pauses the leader this long while the others take writes.
const LEADER_PAUSE: Duration = Duration::from_secs(5);
/// A fault shorter than this is not worth starting at the end of a window.
const MIN_FAULT: Duration = Duration::from_millis(300);
/// Client load on the healed cluster before the final reads.
const AFTER_HEAL: Duration = Duration::from_secs(1);
/// Between epochs: after this, no write of the last epoch can still take
/// effect (a server gives up on a request after its request timeout; a
/// request read from a resumed node's socket buffer is among them).
const QUIESCE: Duration = Duration::from_millis(2 * REQUEST_TIMEOUT_MS + 1000);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Search steps per key. Far beyond what these histories need; a key that
/// runs out is reported as inconclusive (as in the simulator, not a failure).
const LIN_BUDGET: u64 = 50_000_000;
/// Bounds a client's history (and memory) whatever the run length.
const MAX_OPS_PER_CLIENT: usize = 500_000;

// ---------------------------------------------------------------------------
// Shared by the modules: a recorded operation, the configuration, report ids.

/// A history as the clients record it, the way `check` takes it.
fn op(client: usize, kv: KvOp, call: u64, outcome: Outcome, ret: u64) -> HistoryOp {
    HistoryOp {
        id: 0,
        client,
        node: 1,
        op: kv,
        invoke_seq: call,
        invoke_us: call,
        outcome,
        complete_seq: ret,
        complete_us: ret,
        proposed_at: None,
    }
}

#[derive(Debug, Clone, Copy)]
struct Config {
    nodes: usize,
    lease_reads: bool,
}

impl Config {
    fn name(self) -> String {
        let reads = if self.lease_reads {
            "lease reads"
        } else {
            "read-index"
        };
        format!("{} nodes, {reads}", self.nodes)
    }

    fn clients(self) -> usize {
        self.nodes * CLIENTS_PER_NODE
    }
}

/// Client ids beyond the real clients, for the report.
const PROBE: usize = 1000;
const FINAL: usize = 1001;
const CARRIED: usize = 1002;
const LEGEND: &str = "(c1000: the nemesis' reads from a node as it resumes or heals; \
     c1001: the final reads; c1002: a key's value carried over from the previous epoch)";

fn key_name(k: usize) -> Vec<u8> {
    format!("k{k}").into_bytes()
}

fn us_since(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}
