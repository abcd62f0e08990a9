//! Black-box tests against real `raftkv server` processes on 127.0.0.1,
//! written against the outside contract (CONTRACT.md): RESP clients (the
//! `redis` crate, raw sockets, redis-cli, redis-benchmark, redis-py), signals,
//! crashes, restarts, HTTP, bad flags and `raftkv up`.
//!
//! Every test starts its own cluster (see `process::Cluster`), every wait is
//! bounded, and every child process is killed and reaped even when a test
//! fails; a failing test prints the nodes' stderr.

#[path = "../process/mod.rs"]
mod process;

mod auth;
mod bad_flags;
mod bad_input;
mod conditional_set;
mod full_restart;
mod http;
mod idle_clients;
mod leader_kill;
mod logs;
mod membership;
mod no_quorum;
mod pipelining;
mod raftkv_up;
mod reads_and_writes;
mod redis_py;
mod redis_reference;
mod redis_tools;
mod shared_data_dir;
mod sigterm;
mod snapshots;
mod stored_membership;
mod wal_on_disk;

use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use process::{
    encode_cmd, free_ports, raft_info, redis_conn, run_bounded, signal, stable_leader_among, tail,
    wait_child, wait_until, Cluster, Opts, RawConn, Resp, BIN,
};

const SEC: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------------------
// Small helpers.

fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

fn q_err(con: &mut redis::Connection, args: &[&str]) -> redis::RedisError {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    match c.query::<redis::Value>(con) {
        Ok(v) => panic!("{args:?}: expected an error reply, got {v:?}"),
        Err(e) => e,
    }
}

/// The outcome of one write as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Acked,
    /// `-CLUSTERDOWN`: certainly not applied, never will be.
    NotApplied,
    /// `-TIMEOUT` or a broken connection after sending: may or may not apply.
    Unknown,
    /// Could not even connect: nothing was sent.
    NotSent,
}

/// Runs `cmd` on a lazily (re)connected connection; classifies failures.
/// Error replies other than CLUSTERDOWN/TIMEOUT are contract violations and
/// come back as `Err(text)`.
fn attempt<T: redis::FromRedisValue>(
    slot: &mut Option<redis::Connection>,
    port: u16,
    cmd: &redis::Cmd,
) -> Result<Result<T, Fate>, String> {
    if slot.is_none() {
        match redis_conn(port) {
            Ok(c) => *slot = Some(c),
            Err(_) => return Ok(Err(Fate::NotSent)),
        }
    }
    let con = slot.as_mut().expect("connected");
    match cmd.query::<T>(con) {
        Ok(v) => Ok(Ok(v)),
        Err(e) => match e.code() {
            Some("CLUSTERDOWN") => Ok(Err(Fate::NotApplied)),
            Some("TIMEOUT") => Ok(Err(Fate::Unknown)),
            Some(_) => Err(format!("unexpected error reply: {e}")),
            None => {
                // I/O error or a client-side timeout: the reply stream may be
                // out of step, so start over with a fresh connection.
                *slot = None;
                Ok(Err(Fate::Unknown))
            }
        },
    }
}

/// `MGET` of `keys` via `con`, in chunks.
fn mget_all(con: &mut redis::Connection, keys: &[String]) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(200) {
        let mut c = redis::cmd("MGET");
        for k in chunk {
            c.arg(k);
        }
        let vals: Vec<Option<String>> = c.query(con).expect("MGET");
        assert_eq!(vals.len(), chunk.len(), "MGET reply length");
        out.extend(vals);
    }
    out
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A throwaway `redis-server` (no persistence), killed on drop: the
/// reference the differential tests compare with.
struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    /// Starts one with `extra` settings (e.g. `--requirepass x`); waits
    /// until it answers.
    fn start(extra: &[&str]) -> RedisServer {
        let port = free_ports(1)[0];
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--bind", "127.0.0.1"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        // Any reply will do (with a password, PING gets -NOAUTH).
        wait_until(secs(10), "redis-server answers", || {
            RawConn::connect(port, secs(1))
                .ok()
                .and_then(|mut c| c.cmd(&["PING"]).ok())
        });
        RedisServer { child, port }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
