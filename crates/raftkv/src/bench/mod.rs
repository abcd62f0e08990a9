//! `raftkv bench`: a closed-loop load generator for raftkv, redis-server and
//! etcd.
//!
//! Each client is one task with its own connection and one request in flight:
//! it sends a request, waits for the reply, records the latency and sends the
//! next. Clients are spread round-robin over the given addresses. The run has
//! a warm-up (samples discarded), then a measured window; a progress line goes
//! to stderr every second, a human summary to stderr at the end, and exactly
//! one JSON line to stdout.
//!
//! Targets: `resp` (raftkv) and `redis` speak RESP over TCP; `etcd` speaks
//! JSON over HTTP/1.1 to etcd's gRPC gateway (`/v3/kv/put`, `/v3/kv/range`),
//! which keeps this tool free of gRPC dependencies.
//!
//! Every client owns a [`Window`] (a latency histogram and counters) behind an
//! uncontended mutex; the reporter drains all windows once a second. The
//! boundaries of the measured window are drain times, so an operation counts
//! if and only if it completed inside the window.

mod cpu;
mod etcd_client;
mod resp_client;
mod stats;

use cpu::*;
use stats::*;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::{Barrier, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;

use etcd_client::EtcdConn;
use resp_client::{Reply, RespConn};

/// Which protocol the servers speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// raftkv (RESP over TCP).
    Resp,
    /// redis-server (the same protocol as `resp`).
    Redis,
    /// etcd v3 through its JSON gateway over HTTP/1.1.
    Etcd,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Resp => "resp",
            Target::Redis => "redis",
            Target::Etcd => "etcd",
        }
    }
}

/// What each client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// SET (etcd: put) of a random key.
    Set,
    /// GET (etcd: linearizable range) of a random key.
    Get,
    /// GET or SET of a random key; --read-percent sets the share of GETs.
    Mixed,
    /// INCR of a random counter key `ctr:NNNNNNNN` (not for etcd).
    Incr,
    /// Write every key once (keys split over the clients), then stop: the
    /// preload for `get`. No warm-up; bounded by --duration if given.
    Fill,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Set => "set",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
            Workload::Incr => "incr",
            Workload::Fill => "fill",
        }
    }
}

/// `raftkv bench`: closed-loop load against raftkv, redis-server or etcd.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Protocol of the servers.
    #[arg(long, value_enum, default_value_t = Target::Resp)]
    pub target: Target,
    /// Server addresses, host:port[,host:port...]; clients are spread over
    /// them round-robin.
    #[arg(long, default_value = "127.0.0.1:7379")]
    pub addr: String,
    /// Concurrent clients, each with its own connection and one request in
    /// flight.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Length of the measured window, e.g. 10s, 500ms, 1m [default: 10s;
    /// for fill: a bound, default 10m].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Load before the measured window whose samples are discarded.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Key space: keys are `key:NNNNNNNN` with N uniform in [0, keys).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// What the clients send.
    #[arg(long, value_enum, default_value_t = Workload::Set)]
    pub workload: Workload,
    /// For --workload mixed: the share of GETs in percent.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub read_percent: u8,
    /// A request without a reply after this long counts as an error, and the
    /// client reconnects.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Seed of the per-client key generators.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Server process ids, comma-separated: their CPU time (user + system)
    /// over the measured window goes into the result.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Print only the JSON line: no progress lines or summary on stderr.
    #[arg(long)]
    pub json: bool,
}

/// Parses `10s`, `250ms`, `1.5m`, `2` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {text:?} (try 10s, 500ms, 1m)"))?;
    if !value.is_finite() || value < 0.0 || value * scale > 86_400.0 {
        return Err(format!("bad duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

// ---------------------------------------------------------------------------
// Keys and values.
// ---------------------------------------------------------------------------

/// xorshift64*: small, fast, and good enough to pick keys.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64, client: usize) -> XorShift {
        let mut s = seed ^ (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        if s == 0 {
            s = 0x2545_F491_4F6C_DD1D;
        }
        let mut r = XorShift(s);
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, n)`.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

fn format_key(out: &mut Vec<u8>, prefix: &str, n: u64) {
    out.clear();
    let mut s = String::with_capacity(16);
    let _ = write!(s, "{prefix}:{n:08}");
    out.extend_from_slice(s.as_bytes());
}

fn make_value(size: usize, rng: &mut XorShift) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..size)
        .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
        .collect()
}

// ---------------------------------------------------------------------------
// Connections.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Set,
    Get,
    Incr,
}

/// How one request ended (transport failures are `Err` instead).
enum Outcome {
    Done,
    /// A read of a key that does not exist.
    Miss,
    /// The server answered with an error.
    Failed(String),
}

enum Conn {
    Resp(RespConn),
    Etcd(EtcdConn),
}

impl Conn {
    async fn connect(target: Target, addr: &str) -> std::io::Result<Conn> {
        Ok(match target {
            Target::Resp | Target::Redis => Conn::Resp(RespConn::connect(addr).await?),
            Target::Etcd => Conn::Etcd(EtcdConn::connect(addr).await?),
        })
    }

    /// False if the server asked to close the connection.
    fn reusable(&self) -> bool {
        match self {
            Conn::Resp(_) => true,
            Conn::Etcd(c) => !c.closed,
        }
    }

    async fn ping(&mut self) -> std::io::Result<Outcome> {
        match self {
            Conn::Resp(c) => Ok(match c.call(&[b"PING"]).await? {
                Reply::Error(e) => Outcome::Failed(e),
                _ => Outcome::Done,
            }),
            Conn::Etcd(c) => Ok(http_outcome(c.status().await?, false)),
        }
    }

    async fn run(&mut self, op: Op, key: &[u8], value: &[u8]) -> std::io::Result<Outcome> {
        match self {
            Conn::Resp(c) => {
                let reply = match op {
                    Op::Set => c.call(&[b"SET", key, value]).await?,
                    Op::Get => c.call(&[b"GET", key]).await?,
                    Op::Incr => c.call(&[b"INCR", key]).await?,
                };
                Ok(match (op, reply) {
                    (_, Reply::Error(e)) => Outcome::Failed(e),
                    (Op::Get, r) if r.is_nil() => Outcome::Miss,
                    (Op::Get, Reply::Bulk(Some(_))) => Outcome::Done,
                    (Op::Set, Reply::Simple(_)) => Outcome::Done,
                    (Op::Incr, Reply::Integer(_)) => Outcome::Done,
                    (_, r) => Outcome::Failed(format!("unexpected reply {r:?}")),
                })
            }
            Conn::Etcd(c) => match op {
                Op::Set => Ok(http_outcome(c.put(key, value).await?, false)),
                Op::Get => Ok(http_outcome(c.range(key).await?, true)),
                Op::Incr => Ok(Outcome::Failed("etcd has no INCR".into())),
            },
        }
    }
}

fn http_outcome(r: etcd_client::Response, is_range: bool) -> Outcome {
    if r.status != 200 {
        let body: String = String::from_utf8_lossy(&r.body).chars().take(100).collect();
        return Outcome::Failed(format!("HTTP {}: {body}", r.status));
    }
    if is_range && !etcd_client::range_found(&r.body) {
        return Outcome::Miss;
    }
    Outcome::Done
}

// ---------------------------------------------------------------------------
// Clients.
// ---------------------------------------------------------------------------

struct ClientConfig {
    target: Target,
    workload: Workload,
    keys: u64,
    clients: usize,
    value_size: usize,
    read_percent: u8,
    timeout: Duration,
    seed: u64,
}

async fn client(
    idx: usize,
    addr: String,
    cfg: Arc<ClientConfig>,
    shared: Arc<Shared>,
    start: Arc<Barrier>,
) {
    let mut rng = XorShift::new(cfg.seed, idx);
    let value = make_value(cfg.value_size, &mut rng);
    let mut key = Vec::with_capacity(16);
    let connect = || {
        let addr = addr.clone();
        let target = cfg.target;
        let timeout = cfg.timeout;
        async move {
            match tokio::time::timeout(timeout, Conn::connect(target, &addr)).await {
                Ok(Ok(c)) => Ok(c),
                Ok(Err(e)) => Err(format!("connect {addr}: {e}")),
                Err(_) => Err(format!("connect {addr}: timed out")),
            }
        }
    };
    // Connect before the clock starts.
    let mut conn = match connect().await {
        Ok(c) => Some(c),
        Err(e) => {
            shared.error(idx, &e);
            None
        }
    };
    start.wait().await;

    // For fill: this client's keys are idx, idx + clients, ...
    let mut next_fill = idx as u64;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let op = match cfg.workload {
            Workload::Set => Op::Set,
            Workload::Get => Op::Get,
            Workload::Incr => Op::Incr,
            Workload::Mixed => {
                if rng.below(100) < u64::from(cfg.read_percent) {
                    Op::Get
                } else {
                    Op::Set
                }
            }
            Workload::Fill => Op::Set,
        };
        if cfg.workload == Workload::Fill {
            if next_fill >= cfg.keys {
                break;
            }
            format_key(&mut key, "key", next_fill);
            next_fill += cfg.clients as u64;
        } else {
            let prefix = if op == Op::Incr { "ctr" } else { "key" };
            format_key(&mut key, prefix, rng.below(cfg.keys));
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect().await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    shared.error(idx, &e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let began = Instant::now();
        let result = tokio::time::timeout(cfg.timeout, c.run(op, &key, &value)).await;
        let micros = began.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
        match result {
            Ok(Ok(Outcome::Done)) => shared.record(idx, micros, false),
            Ok(Ok(Outcome::Miss)) => shared.record(idx, micros, true),
            Ok(Ok(Outcome::Failed(e))) => shared.error(idx, &e),
            Ok(Err(e)) => {
                shared.error(idx, &e.to_string());
                conn = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => {
                shared.error(idx, "request timed out");
                conn = None;
            }
        }
        if conn.as_ref().is_some_and(|c| !c.reusable()) {
            conn = None;
        }
    }
    if shared.finished.fetch_add(1, Ordering::AcqRel) + 1 == cfg.clients {
        shared.all_finished.notify_one();
    }
}

// ---------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------

fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Drains the windows once a second until `until` (or, with `fill`, until
/// every client is done), printing a progress line each time, and adds what
/// it drained into `total`.
async fn observe(
    shared: &Shared,
    began: Instant,
    until: Instant,
    label: &str,
    quiet: bool,
    wait_for_clients: bool,
    total: &mut Window,
) {
    let mut interval = Window::new();
    let mut last = Instant::now();
    loop {
        let next = (last + Duration::from_secs(1)).min(until);
        let mut done = false;
        if wait_for_clients {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = shared.all_finished.notified() => done = true,
            }
        } else {
            tokio::time::sleep_until(next).await;
        }
        shared.drain(&mut interval);
        let now = Instant::now();
        if !quiet && now.duration_since(last) >= Duration::from_millis(200) {
            let secs = now.duration_since(last).as_secs_f64();
            eprintln!(
                "[{label}{}s] {:.0} ops/s, p50 {} ms, p99 {} ms, errors {}",
                now.duration_since(began).as_secs_f64().round(),
                interval.ops as f64 / secs,
                fmt_ms(interval.quantile_ms(0.50)),
                fmt_ms(interval.quantile_ms(0.99)),
                interval.errors,
            );
        }
        total.absorb(&mut interval);
        last = now;
        if done || now >= until {
            return;
        }
    }
}

/// The JSON line printed at the end (fields in this order).
#[derive(serde::Serialize)]
struct BenchResult {
    target: &'static str,
    workload: &'static str,
    clients: usize,
    /// Length of the measured window.
    duration_s: f64,
    /// Successful operations in the measured window (errors not included).
    ops: u64,
    ops_per_sec: f64,
    /// Error replies, transport failures and timeouts.
    errors: u64,
    /// Reads of a key that does not exist (counted in `ops` too).
    misses: u64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    value_size: usize,
    /// CPU time (user + system) of the --server-pids over the window.
    server_cpu_s: Option<f64>,
    server_cpu_s_per_1k_ops: Option<f64>,
    /// CPU time of this load generator over the window.
    client_cpu_s: Option<f64>,
    /// Busy CPU time of the whole machine over the window: what exceeds
    /// servers + load generator is other work disturbing the measurement.
    machine_cpu_s: Option<f64>,
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `raftkv bench`. Prints one JSON line on stdout on success.
pub async fn run(args: BenchArgs) -> Result<(), String> {
    let addrs: Vec<String> = args
        .addr
        .split(',')
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    if addrs.is_empty() {
        return Err("--addr: no address given".into());
    }
    if args.clients == 0 || args.clients > 100_000 {
        return Err("--clients must be between 1 and 100000".into());
    }
    if args.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    if args.target == Target::Etcd && matches!(args.workload, Workload::Incr) {
        return Err("--workload incr is not supported with --target etcd".into());
    }
    let fill = args.workload == Workload::Fill;
    let duration = match (args.duration, fill) {
        (Some(d), _) => d,
        (None, false) => Duration::from_secs(10),
        (None, true) => Duration::from_secs(600),
    };
    if duration.is_zero() {
        return Err("--duration must be more than 0".into());
    }
    let quiet = args.json;

    // Fail fast if a server is not there at all.
    for addr in &addrs {
        let check = async {
            let mut c = Conn::connect(args.target, addr)
                .await
                .map_err(|e| e.to_string())?;
            match c.ping().await.map_err(|e| e.to_string())? {
                Outcome::Failed(e) => Err(e),
                _ => Ok(()),
            }
        };
        match tokio::time::timeout(args.timeout, check).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("{addr}: {e}")),
            Err(_) => return Err(format!("{addr}: no answer in {:?}", args.timeout)),
        }
    }

    let cfg = Arc::new(ClientConfig {
        target: args.target,
        workload: args.workload,
        keys: args.keys,
        clients: args.clients,
        value_size: args.value_size,
        read_percent: args.read_percent,
        timeout: args.timeout,
        seed: args.seed,
    });
    let shared = Arc::new(Shared {
        windows: (0..args.clients)
            .map(|_| Mutex::new(Window::new()))
            .collect(),
        error_texts: Mutex::new(BTreeMap::new()),
        stop: AtomicBool::new(false),
        finished: AtomicUsize::new(0),
        all_finished: Notify::new(),
    });
    if !quiet {
        eprintln!(
            "raftkv bench: {} {}, {} clients over {} address(es), {}-byte values, {} keys",
            args.target.name(),
            args.workload.name(),
            args.clients,
            addrs.len(),
            args.value_size,
            args.keys
        );
    }
    let barrier = Arc::new(Barrier::new(args.clients + 1));
    let mut tasks = JoinSet::new();
    for idx in 0..args.clients {
        tasks.spawn(client(
            idx,
            addrs[idx % addrs.len()].clone(),
            cfg.clone(),
            shared.clone(),
            barrier.clone(),
        ));
    }
    barrier.wait().await;

    let ticks = clock_ticks_per_sec();
    let began = Instant::now();
    let mut total = Window::new();
    if !fill && !args.warmup.is_zero() {
        observe(
            &shared,
            began,
            began + args.warmup,
            "warmup ",
            quiet,
            false,
            &mut total,
        )
        .await;
    }
    // The measured window starts at this drain.
    shared.drain(&mut total);
    total.clear();
    lock(&shared.error_texts).clear();
    let t0 = Instant::now();
    let cpu0 = cpu_sample(&args.server_pids);
    observe(&shared, t0, t0 + duration, "", quiet, fill, &mut total).await;
    shared.drain(&mut total);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_sample(&args.server_pids);
    shared.stop.store(true, Ordering::Relaxed);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}

    let ops_per_sec = total.ops as f64 / elapsed;
    let seconds = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / ticks),
        _ => None,
    };
    let server_cpu_s = seconds(cpu0.servers, cpu1.servers);
    let client_cpu_s = seconds(cpu0.own, cpu1.own);
    let machine_cpu_s = seconds(cpu0.machine, cpu1.machine);
    // CPU seconds per 1,000 operations, to 4 decimals.
    let per_1k = |cpu: Option<f64>| match cpu {
        Some(c) if total.ops > 0 => Some((c / total.ops as f64 * 1e7).round() / 1e4),
        _ => None,
    };
    if fill && total.ops + total.errors < args.keys && !quiet {
        eprintln!(
            "warning: fill stopped after {} of {} keys (--duration)",
            total.ops + total.errors,
            args.keys
        );
    }

    if !quiet {
        eprintln!(
            "{}: {} ops in {:.2} s = {:.1} ops/s, errors {}, misses {}",
            args.workload.name(),
            total.ops,
            elapsed,
            ops_per_sec,
            total.errors,
            total.misses
        );
        eprintln!(
            "latency ms: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            fmt_ms(total.quantile_ms(0.50)),
            fmt_ms(total.quantile_ms(0.90)),
            fmt_ms(total.quantile_ms(0.99)),
            fmt_ms(total.quantile_ms(0.999)),
            fmt_ms(total.max_ms()),
        );
        if let Some(s) = server_cpu_s {
            eprintln!(
                "server CPU {s:.2} s ({:.3} s per 1k ops); bench CPU {:.2} s",
                per_1k(Some(s)).unwrap_or(0.0),
                client_cpu_s.unwrap_or(0.0)
            );
        }
        if let Some(m) = machine_cpu_s {
            eprintln!(
                "machine CPU {m:.2} s of {:.2} s available ({} cores)",
                elapsed * available_cores() as f64,
                available_cores()
            );
        }
        for (text, n) in lock(&shared.error_texts).iter() {
            eprintln!("error x{n}: {text}");
        }
    }

    let result = BenchResult {
        target: args.target.name(),
        workload: args.workload.name(),
        clients: args.clients,
        duration_s: round3(elapsed),
        ops: total.ops,
        ops_per_sec: (ops_per_sec * 10.0).round() / 10.0,
        errors: total.errors,
        misses: total.misses,
        p50_ms: round3(total.quantile_ms(0.50)),
        p90_ms: round3(total.quantile_ms(0.90)),
        p99_ms: round3(total.quantile_ms(0.99)),
        p999_ms: round3(total.quantile_ms(0.999)),
        max_ms: round3(total.max_ms()),
        value_size: args.value_size,
        server_cpu_s: server_cpu_s.map(round3),
        server_cpu_s_per_1k_ops: per_1k(server_cpu_s),
        client_cpu_s: client_cpu_s.map(round3),
        machine_cpu_s: machine_cpu_s.map(round3),
    };
    let json = serde_json::to_string(&result).map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn keys_are_uniform_and_formatted() {
        let mut rng = XorShift::new(1, 0);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[rng.below(10) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        let mut key = Vec::new();
        format_key(&mut key, "key", 42);
        assert_eq!(key, b"key:00000042");
        assert_ne!(XorShift::new(1, 0).next(), XorShift::new(1, 1).next());
    }

    #[test]
    fn windows_merge() {
        let mut a = Window::new();
        let mut b = Window::new();
        b.hist.record(1000).unwrap();
        b.ops = 1;
        b.errors = 2;
        a.absorb(&mut b);
        assert_eq!((a.ops, a.errors, b.ops, b.errors), (1, 2, 0, 0));
        assert!(b.hist.is_empty());
        assert!((a.quantile_ms(0.5) - 1.0).abs() < 0.01);
    }

    #[test]
    fn reads_cpu_times() {
        assert!(cpu_ticks("self").is_some());
        assert!(machine_busy_ticks().is_some());
        let s = cpu_sample(&[std::process::id()]);
        assert!(s.servers.is_some() && s.own.is_some());
        assert!(cpu_sample(&[]).servers.is_none());
    }
}
