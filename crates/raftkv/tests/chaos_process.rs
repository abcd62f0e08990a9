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

mod process;

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
// The four configurations. They run in parallel as the test harness sees
// fit (two at a time on two cores).

#[test]
fn chaos_3_nodes_read_index_histories_are_linearizable() {
    run(
        Config {
            nodes: 3,
            lease_reads: false,
        },
        "chaos_3_nodes_read_index_histories_are_linearizable",
    );
}

#[test]
fn chaos_5_nodes_read_index_histories_are_linearizable() {
    run(
        Config {
            nodes: 5,
            lease_reads: false,
        },
        "chaos_5_nodes_read_index_histories_are_linearizable",
    );
}

#[test]
fn chaos_3_nodes_lease_reads_histories_are_linearizable() {
    run(
        Config {
            nodes: 3,
            lease_reads: true,
        },
        "chaos_3_nodes_lease_reads_histories_are_linearizable",
    );
}

#[test]
fn chaos_5_nodes_lease_reads_histories_are_linearizable() {
    run(
        Config {
            nodes: 5,
            lease_reads: true,
        },
        "chaos_5_nodes_lease_reads_histories_are_linearizable",
    );
}

// ---------------------------------------------------------------------------
// The harness checks itself: the history → checker → report path, and the
// proxy, without any server.

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

#[test]
fn a_flipped_read_or_a_lost_write_in_a_recorded_history_is_reported() {
    let k = || b"k1".to_vec();
    let get = |v: &str| Outcome::Ok(KvOutput::Value(v.as_bytes().to_vec()));
    let set = |v: &str| KvOp::Set {
        key: k(),
        value: v.as_bytes().to_vec(),
    };
    let history = || {
        vec![
            op(0, set("10"), 0, Outcome::Ok(KvOutput::Ok), 100),
            op(1, KvOp::Get { key: k() }, 50, get("10"), 150),
            op(
                0,
                KvOp::Incr { key: k() },
                200,
                Outcome::Ok(KvOutput::Integer(11)),
                300,
            ),
            // A timed-out write that, as the later reads show, did apply.
            op(1, set("20"), 400, Outcome::Unknown("TIMEOUT".into()), 3400),
            op(
                2,
                set("30"),
                450,
                Outcome::Failed("CLUSTERDOWN".into()),
                460,
            ),
            op(0, KvOp::Get { key: k() }, 3500, get("20"), 3600),
            op(FINAL, KvOp::Get { key: k() }, 4000, get("20"), 4100),
        ]
    };
    let mut h = history();
    check("unit", 42, 0, &mut h, &[]).expect("the unmodified history is linearizable");

    // A read that returns a value nobody wrote at that point.
    let mut flipped = history();
    flipped[5].outcome = get("99");
    let report = check("unit", 42, 0, &mut flipped, &["1.000ms pause n1".into()])
        .expect_err("a flipped read must be reported");
    for needle in ["seed 42", "key k1", "✗", "GET k1 → ok 99", "pause n1"] {
        assert!(report.contains(needle), "{needle:?} missing in:\n{report}");
    }

    // An acknowledged write that the final read does not see.
    let mut lost = history();
    lost[3].outcome = Outcome::Ok(KvOutput::Ok);
    lost[5].outcome = get("11");
    lost[6].outcome = get("11");
    let report = check("unit", 7, 0, &mut lost, &[])
        .expect_err("a lost acknowledged write must be reported");
    assert!(report.contains("key k1"), "{report}");
}

#[test]
fn the_proxy_names_the_dialer_from_its_hello_and_cuts_and_heals_a_pair() {
    let hello = |from: u64, to: u64| {
        let body = encode_frame(&Frame::Hello {
            version: 1,
            cluster_id: "c".into(),
            from,
            to,
            incarnation: 7,
        })
        .expect("encode");
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        framed
    };
    let h = hello(2, 1);
    assert_eq!(read_frame(&mut h.as_slice()).expect("frame"), h);
    assert_eq!(dialer_of(&h[4..], 0, 2).expect("dialer"), 1);
    assert!(
        dialer_of(&h[4..], 1, 2).is_err(),
        "a hello on the wrong front port"
    );
    assert!(
        dialer_of(&hello(3, 1)[4..], 0, 2).is_err(),
        "an unknown node"
    );

    // Two "nodes": listeners that stand for their real peer ports.
    let upstream: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let ports: Vec<u16> = upstream
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    let net = Network::start(&ports).expect("proxy");
    let short = Duration::from_millis(300);
    let dial = || {
        let s = TcpStream::connect(("127.0.0.1", net.front_port(0))).expect("dial the front port");
        s.set_read_timeout(Some(short)).expect("timeout");
        s
    };
    let accept = || {
        let (s, _) = upstream[0].accept().expect("accept");
        s.set_read_timeout(Some(short)).expect("timeout");
        s
    };
    // What arrived within `short`: None if nothing, empty if closed.
    let read_some = |s: &mut TcpStream| {
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(_) => Some(Vec::new()), // reset
        }
    };

    // Node 2 dials node 1: the hello and what follows arrive unchanged.
    let mut dialer = dial();
    dialer.write_all(&h).expect("send hello");
    dialer.write_all(b"frames").expect("send");
    let mut node1 = accept();
    let mut got = Vec::new();
    while got.len() < h.len() + 6 {
        got.extend(read_some(&mut node1).expect("bytes through the proxy"));
    }
    assert_eq!(got, [h.clone(), b"frames".to_vec()].concat());
    node1.write_all(b"reply").expect("reply");
    assert_eq!(read_some(&mut dialer).as_deref(), Some(&b"reply"[..]));

    // A blackhole holds the bytes, both ways, and delivers them on heal.
    net.cut(0, 1, Cut::Blackhole);
    dialer.write_all(b"held").expect("send");
    node1.write_all(b"back").expect("send");
    assert_eq!(
        read_some(&mut node1),
        None,
        "a blackholed request got through"
    );
    assert_eq!(
        read_some(&mut dialer),
        None,
        "a blackholed reply got through"
    );
    net.heal_all();
    assert_eq!(read_some(&mut node1).as_deref(), Some(&b"held"[..]));
    assert_eq!(read_some(&mut dialer).as_deref(), Some(&b"back"[..]));

    // A reset closes the connection, and the next one right after its hello.
    net.cut(1, 0, Cut::Reset);
    assert_eq!(
        read_some(&mut dialer),
        Some(Vec::new()),
        "not closed by the reset"
    );
    let mut again = dial();
    again.write_all(&h).expect("send hello");
    assert_eq!(
        read_some(&mut again),
        Some(Vec::new()),
        "a new connection was let through"
    );
    assert_eq!(net.cuts(), vec![((0, 1), Cut::Reset)]);
    let stats = net.stats();
    assert!(stats.resets >= 2 && stats.held >= 2, "{stats:?}");
}

// ---------------------------------------------------------------------------
// One run.

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

fn seed_for(cfg: Config) -> u64 {
    if let Ok(s) = std::env::var("RAFTKV_CHAOS_SEED") {
        return s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("RAFTKV_CHAOS_SEED={s:?} is not a u64"));
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // The four tests start within the same microsecond or so: keep them apart.
    let salt = ((cfg.nodes as u64) << 1) | u64::from(cfg.lease_reads);
    SimRng::new(nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64() % 1_000_000_000
}

fn fault_secs() -> u64 {
    match std::env::var("RAFTKV_CHAOS_SECS") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("RAFTKV_CHAOS_SECS={s:?} is not a number of seconds")),
        Err(_) => DEFAULT_FAULT_SECS,
    }
}

fn run(cfg: Config, test: &str) {
    let seed = seed_for(cfg);
    let total = Duration::from_secs(fault_secs());
    eprintln!(
        "chaos ({}): seed {seed}, {total:?} of faults; replay with \
         RAFTKV_CHAOS_SEED={seed} cargo test -p raftkv --test chaos_process {test}",
        cfg.name()
    );
    let mut extra = Vec::new();
    if cfg.lease_reads {
        extra.push("--lease-reads".to_string());
    }
    let mut cluster = Cluster::start_with(
        cfg.nodes,
        Opts {
            request_timeout_ms: REQUEST_TIMEOUT_MS,
            extra,
            peer_proxy: true,
            ..Opts::default()
        },
    );
    let started = Instant::now();
    let mut nemesis = Nemesis::new(&mut cluster, cfg, seed);
    let mut carried: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut left = total;
    let mut epoch = 0;
    while !left.is_zero() {
        let len = left.min(EPOCH);
        left -= len;
        let last = left.is_zero();
        let mut history = run_epoch(&mut nemesis, epoch, len, &carried, last);
        let check_started = Instant::now();
        let result = check(&cfg.name(), seed, epoch, &mut history, &nemesis.log);
        let summary = summarize(&history);
        eprintln!(
            "chaos ({}), seed {seed}, epoch {epoch}: {summary}; {:?}; checked in {:?}",
            cfg.name(),
            nemesis.c.net().stats(),
            check_started.elapsed()
        );
        if let Err(report) = result {
            panic!("{report}");
        }
        carried = final_values(&history);
        epoch += 1;
    }
    eprintln!(
        "chaos ({}), seed {seed}: passed in {:?}",
        cfg.name(),
        started.elapsed()
    );
}

/// Clients run while the nemesis works for `len`; then everything is
/// healed, the clients stop, and every key is read through every node.
fn run_epoch(
    nem: &mut Nemesis,
    epoch: usize,
    len: Duration,
    carried: &BTreeMap<Vec<u8>, Vec<u8>>,
    last: bool,
) -> Vec<HistoryOp> {
    let start = nem.now_us();
    // What the previous epoch left: a write before anything of this one.
    let mut history: Vec<HistoryOp> = carried
        .iter()
        .map(|(key, value)| {
            let set = KvOp::Set {
                key: key.clone(),
                value: value.clone(),
            };
            op(CARRIED, set, start, Outcome::Ok(KvOutput::Ok), start)
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_panic = StopOnDrop(Arc::clone(&stop));
    let ports: Arc<Vec<u16>> = Arc::new(nem.c.nodes.iter().map(|n| n.client_port).collect());
    let clients: Vec<JoinHandle<Vec<HistoryOp>>> = (0..nem.cfg.clients())
        .map(|id| {
            let spec = ClientSpec {
                id,
                ports: Arc::clone(&ports),
                home: id % ports.len(),
                seed: nem.seed
                    ^ (((epoch as u64) << 32) | id as u64).wrapping_mul(0xA24B_AED4_963E_E407),
                t0: nem.t0,
                stop: Arc::clone(&stop),
            };
            thread::Builder::new()
                .name(format!("chaos-client-{id}"))
                .spawn(move || client_main(spec))
                .expect("spawn a client thread")
        })
        .collect();

    nem.run_faults(len);
    nem.heal_all();
    // The duration of a phase, not a wait for a condition: load on the
    // healed cluster.
    thread::sleep(AFTER_HEAL);
    stop.store(true, Ordering::SeqCst);
    wait_until(
        CLIENT_TIMEOUT + CONNECT_TIMEOUT * 2 + Duration::from_secs(2),
        "the clients to finish their last operation",
        || clients.iter().all(|h| h.is_finished()).then_some(()),
    );
    for h in clients {
        history.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
    }
    history.append(&mut nem.probes);
    if !last {
        // See QUIESCE: the next epoch's checker assumes nothing of this one
        // is still in flight. A time bound, so a sleep.
        thread::sleep(QUIESCE);
    }
    let leader = nem.c.wait_for_leader(SETTLE_TIMEOUT);
    let mut order = vec![leader];
    order.extend(nem.c.followers(leader));
    for node in order {
        history.extend(final_reads(nem, node));
    }
    history
}

/// GETs every key through `node`, each until it gets an answer (bounded).
fn final_reads(nem: &Nemesis, node: usize) -> Vec<HistoryOp> {
    let port = nem.c.nodes[node].client_port;
    let mut ops = Vec::new();
    for k in 0..KEYS {
        let key = key_name(k);
        let answered = try_wait_until(SETTLE_TIMEOUT, || {
            let mut conn = RawConn::connect(port, CONNECT_TIMEOUT).ok()?;
            conn.set_timeout(CLIENT_TIMEOUT);
            let get = KvOp::Get { key: key.clone() };
            let call = nem.now_us();
            let (outcome, _) = execute(&mut conn, &get);
            let ok = matches!(outcome, Outcome::Ok(_));
            let mut h = op(FINAL, get, call, outcome, nem.now_us());
            h.node = node as u64 + 1;
            ops.push(h);
            ok.then_some(())
        });
        if answered.is_none() {
            panic!(
                "after healing, the final GET {} through node {} got no answer within {SETTLE_TIMEOUT:?}; last: {}",
                String::from_utf8_lossy(&key),
                node + 1,
                ops.last().map_or("none".into(), HistoryOp::describe)
            );
        }
    }
    ops
}

/// The values the final reads saw (the first answer per key: the leader's;
/// the check has shown that all agree), for the next epoch to start from.
fn final_values(history: &[HistoryOp]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut first: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for h in history.iter().filter(|h| h.client == FINAL) {
        let value = match &h.outcome {
            Outcome::Ok(KvOutput::Value(v)) => Some(v.clone()),
            Outcome::Ok(KvOutput::Nil) => None,
            _ => continue,
        };
        first.entry(h.op.key().to_vec()).or_insert(value);
    }
    first
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
}

/// Checks a history (ids are reassigned to positions, which the report
/// needs); on a violation, a report with everything needed to understand
/// and replay it.
fn check(
    config: &str,
    seed: u64,
    epoch: usize,
    history: &mut [HistoryOp],
    faults: &[String],
) -> Result<(), String> {
    for (i, h) in history.iter_mut().enumerate() {
        h.id = i;
    }
    let ops: Vec<_> = history.iter().filter_map(HistoryOp::to_lin_op).collect();
    let verdict = check_history(&ops, LIN_BUDGET);
    for key in &verdict.inconclusive {
        eprintln!(
            "chaos ({config}), seed {seed}, epoch {epoch}: key {} is INCONCLUSIVE (the checker's budget of {LIN_BUDGET} steps ran out)",
            String::from_utf8_lossy(key)
        );
    }
    let Some((key, result)) = verdict.violations.first() else {
        return Ok(());
    };
    let mut report = format!(
        "chaos ({config}), seed {seed}, epoch {epoch}: the history of key {} is not linearizable\n{}{LEGEND}\n",
        String::from_utf8_lossy(key),
        describe_lin_violation(history, key, result)
    );
    if verdict.violations.len() > 1 {
        let others: Vec<String> = verdict.violations[1..]
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        report.push_str(&format!("also not linearizable: {}\n", others.join(", ")));
    }
    report.push_str("faults (time since the clients started):\n");
    for f in faults {
        report.push_str(&format!("  {f}\n"));
    }
    Err(report)
}

/// Counts, to see that the run did something.
fn summarize(history: &[HistoryOp]) -> String {
    let (mut reads, mut writes, mut unknown, mut failed) = (0, 0, 0, 0);
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for h in history.iter().filter(|h| h.client < PROBE) {
        match &h.outcome {
            Outcome::Ok(_) if h.op.is_read() => reads += 1,
            Outcome::Ok(_) => writes += 1,
            Outcome::Unknown(why) | Outcome::Failed(why) => {
                if matches!(h.outcome, Outcome::Unknown(_)) {
                    unknown += 1;
                } else {
                    failed += 1;
                }
                let kind = why.split_whitespace().next().unwrap_or("?").to_string();
                *errors.entry(kind).or_default() += 1;
            }
            Outcome::Pending => {}
        }
    }
    let probes = history
        .iter()
        .filter(|h| h.client == PROBE && matches!(h.outcome, Outcome::Ok(_)))
        .count();
    format!(
        "{} ops: {reads} reads and {writes} writes answered, {unknown} unknown, {failed} failed {errors:?}; {probes} probe reads answered",
        history.len()
    )
}

// ---------------------------------------------------------------------------
// Clients.

/// Sets the flag when dropped, so the client threads stop also when the
/// test panics half-way (they would otherwise retry dead ports forever).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct ClientSpec {
    id: usize,
    ports: Arc<Vec<u16>>,
    home: usize,
    seed: u64,
    t0: Instant,
    stop: Arc<AtomicBool>,
}

fn key_name(k: usize) -> Vec<u8> {
    format!("k{k}").into_bytes()
}

fn us_since(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// A connection to the first node, from `start` on, that accepts one.
fn connect_from(ports: &[u16], start: usize) -> Option<(RawConn, usize)> {
    (0..ports.len()).find_map(|k| {
        let i = (start + k) % ports.len();
        let conn = RawConn::connect(ports[i], CONNECT_TIMEOUT).ok()?;
        conn.set_timeout(CLIENT_TIMEOUT);
        Some((conn, i))
    })
}

/// One operation at a time, until told to stop.
fn client_main(spec: ClientSpec) -> Vec<HistoryOp> {
    let mut rng = SimRng::new(spec.seed);
    let mut me = Client::default();
    // Values are unique across clients (choose_op counts up from here), so
    // a read names the one write it saw.
    let mut unique = (spec.id as u64 + 1) * 1_000_000_000;
    let mut node = spec.home;
    let mut conn: Option<RawConn> = None;
    let mut history = Vec::new();
    while !spec.stop.load(Ordering::SeqCst) && history.len() < MAX_OPS_PER_CLIENT {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect_from(&spec.ports, node) {
                Some((c, i)) => {
                    node = i;
                    conn.insert(c)
                }
                None => {
                    // Every node refused: all restarting at once. Pace the
                    // retries; the loop is bounded by `stop`.
                    thread::sleep(POLL);
                    continue;
                }
            },
        };
        let kv = choose_op(&mut rng, &me, KEYS, &mut unique);
        let call = us_since(spec.t0);
        let (outcome, replied) = execute(c, &kv);
        let ret = us_since(spec.t0);
        let mut h = op(spec.id, kv.clone(), call, outcome.clone(), ret);
        h.node = node as u64 + 1;
        history.push(h);
        match (&kv, &outcome) {
            (KvOp::Get { key }, Outcome::Ok(KvOutput::Value(v))) => {
                me.last_seen.insert(key.clone(), v.clone());
            }
            (
                KvOp::Set { key, value } | KvOp::SetIfEq { key, value, .. },
                Outcome::Ok(KvOutput::Ok),
            ) => {
                me.last_seen.insert(key.clone(), value.clone());
            }
            (KvOp::Incr { key }, Outcome::Ok(KvOutput::Integer(n))) => {
                me.last_seen.insert(key.clone(), n.to_string().into_bytes());
            }
            _ => {}
        }
        if !replied || matches!(outcome, Outcome::Unknown(_)) {
            // A late reply on this connection would be taken for the next
            // request's: start afresh, on the next node (so clients drift
            // away from a dead or paused one).
            conn = None;
            node = (node + 1) % spec.ports.len();
        }
    }
    history
}

fn command_of(kv: &KvOp) -> Vec<Vec<u8>> {
    let s = |x: &str| x.as_bytes().to_vec();
    match kv.clone() {
        KvOp::Get { key } => vec![s("GET"), key],
        KvOp::Set { key, value } => vec![s("SET"), key, value],
        KvOp::SetIfEq {
            key,
            value,
            expected,
        } => vec![s("SET"), key, value, s("IFEQ"), expected],
        KvOp::Incr { key } => vec![s("INCR"), key],
    }
}

fn send(conn: &mut RawConn, ops: &[&KvOp]) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for kv in ops {
        let args = command_of(kv);
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        encode_cmd(&args, &mut buf);
    }
    conn.send_raw(&buf)
}

/// Sends `kv` and waits for its reply; the outcome, and whether a reply came.
fn execute(conn: &mut RawConn, kv: &KvOp) -> (Outcome, bool) {
    match send(conn, &[kv]).and_then(|()| conn.read()) {
        Ok(reply) => (outcome_of(kv, reply), true),
        Err(e) => (no_reply(kv, &e), false),
    }
}

fn no_reply(kv: &KvOp, e: &std::io::Error) -> Outcome {
    let why = format!("no reply ({e})");
    if kv.is_read() {
        Outcome::Failed(why)
    } else {
        Outcome::Unknown(why)
    }
}

/// What a reply means, per the contract.
fn outcome_of(kv: &KvOp, reply: Resp) -> Outcome {
    match (kv, reply) {
        // Certainly not applied.
        (_, Resp::Error(e)) if e.starts_with("CLUSTERDOWN") => Outcome::Failed(e),
        // A read that failed had no effect.
        (KvOp::Get { .. }, Resp::Error(e)) => Outcome::Failed(e),
        // INCR of a non-integer: applied, and it changed nothing.
        (KvOp::Incr { .. }, Resp::Error(e)) if e == NOT_AN_INTEGER || e == OVERFLOW => {
            Outcome::Ok(KvOutput::Error(e))
        }
        // `-TIMEOUT`, and to be safe any other error: the write may apply.
        (_, Resp::Error(e)) => Outcome::Unknown(e),
        (KvOp::Get { .. }, Resp::Bulk(v)) => Outcome::Ok(KvOutput::Value(v)),
        (KvOp::Get { .. } | KvOp::SetIfEq { .. }, Resp::Nil) => Outcome::Ok(KvOutput::Nil),
        (KvOp::Set { .. } | KvOp::SetIfEq { .. }, Resp::Simple(s)) if s == "OK" => {
            Outcome::Ok(KvOutput::Ok)
        }
        (KvOp::Incr { .. }, Resp::Int(n)) => Outcome::Ok(KvOutput::Integer(n)),
        // A reply of the wrong shape breaks the contract; recorded as an
        // answer no register gives, so the checker reports it with context.
        (_, other) => Outcome::Ok(KvOutput::Value(
            format!("<unexpected reply {other:?}>").into_bytes(),
        )),
    }
}

// ---------------------------------------------------------------------------
// The nemesis.

struct Nemesis<'a> {
    c: &'a mut Cluster,
    cfg: Config,
    seed: u64,
    rng: SimRng,
    t0: Instant,
    paused: Vec<bool>,
    /// Every fault, with its time, for the report.
    log: Vec<String>,
    /// Reads sent to a node just before it resumes or is healed.
    probes: Vec<HistoryOp>,
}

/// Whom a fault hits.
#[derive(Clone, Copy)]
enum Target {
    Leader,
    /// The leader with this probability, otherwise a random node.
    LeaderOr(f64),
}

impl<'a> Nemesis<'a> {
    fn new(c: &'a mut Cluster, cfg: Config, seed: u64) -> Self {
        let n = c.nodes.len();
        Nemesis {
            c,
            cfg,
            seed,
            rng: SimRng::new(seed),
            t0: Instant::now(),
            paused: vec![false; n],
            log: Vec::new(),
            probes: Vec::new(),
        }
    }

    fn now_us(&self) -> u64 {
        us_since(self.t0)
    }

    fn n(&self) -> usize {
        self.c.nodes.len()
    }

    fn note(&mut self, what: String) {
        let line = format!("{} {what}", fmt_time(self.now_us()));
        eprintln!("chaos ({}): {line}", self.cfg.name());
        self.log.push(line);
    }

    /// Faults for `len`, one at a time with quiet gaps; returns with
    /// everything healed.
    fn run_faults(&mut self, len: Duration) {
        let end = Instant::now() + len;
        let left = || end.saturating_duration_since(Instant::now());
        thread::sleep(WARM_UP.min(left()));
        // Every epoch: the leader paused for a while the others take
        // writes, then read from as it resumes. A leader that trusts a
        // lease across a pause serves a stale value here.
        if left() >= MIN_FAULT {
            self.pause(Target::Leader, LEADER_PAUSE.min(left()));
        }
        loop {
            let quiet = Duration::from_millis(self.rng.range(200, 1000));
            thread::sleep(quiet.min(left()));
            if left() < MIN_FAULT {
                break;
            }
            let cap = left();
            let ms = |lo: u64, hi: u64, rng: &mut SimRng| Duration::from_millis(rng.range(lo, hi));
            match self.rng.below(100) {
                0..=29 => {
                    let down = ms(300, 2000, &mut self.rng).min(cap);
                    self.kill(Target::LeaderOr(0.5), down);
                }
                30..=59 => {
                    let d = ms(1000, 5000, &mut self.rng).min(cap);
                    self.pause(Target::LeaderOr(0.6), d);
                }
                _ => {
                    let d = ms(1000, 3000, &mut self.rng).min(cap);
                    self.partition(d);
                }
            }
        }
    }

    /// The node that leads with the highest term among the running,
    /// unpaused ones, if one says so within a bound.
    fn leader(&self) -> Option<usize> {
        try_wait_until(Duration::from_secs(3), || {
            (0..self.n())
                .filter(|&i| self.c.nodes[i].child.is_some() && !self.paused[i])
                .filter_map(|i| {
                    let info = self.c.info(i)?;
                    (info.role() == "leader").then(|| (info.num("term"), i))
                })
                .max()
                .map(|(_, i)| i)
        })
    }

    /// A node to hit, and whether it is the leader. Draws the same random
    /// numbers whatever the cluster does, so a seed replays its schedule.
    fn pick(&mut self, target: Target) -> (usize, bool) {
        let p = match target {
            Target::Leader => 1.0,
            Target::LeaderOr(p) => p,
        };
        let want_leader = self.rng.chance(p);
        let fallback = self.rng.below(self.n() as u64) as usize;
        match want_leader.then(|| self.leader()).flatten() {
            Some(l) => (l, true),
            None => (fallback, false),
        }
    }

    fn role(is_leader: bool) -> &'static str {
        if is_leader {
            " (the leader)"
        } else {
            ""
        }
    }

    fn kill(&mut self, target: Target, down: Duration) {
        let (i, leader) = self.pick(target);
        self.c.kill9(i);
        self.note(format!(
            "kill -9 n{}{} for {down:?}",
            i + 1,
            Self::role(leader)
        ));
        thread::sleep(down); // the fault's duration
        self.c.spawn(i);
        self.note(format!("restart n{}", i + 1));
    }

    fn pause(&mut self, target: Target, d: Duration) {
        let (i, leader) = self.pick(target);
        // Opened first: a paused process cannot accept (the kernel would,
        // but the server would not read the request before it resumes).
        let probe = self.open_probe(i);
        self.c.pause(i);
        self.paused[i] = true;
        self.note(format!(
            "SIGSTOP n{}{} for {d:?}",
            i + 1,
            Self::role(leader)
        ));
        thread::sleep(d); // the fault's duration
                          // Invoked now, after every write the others acknowledged meanwhile;
                          // waiting in the socket when the node resumes.
        let sent = probe.map(|conn| self.send_probe(conn, i));
        self.c.resume(i);
        self.paused[i] = false;
        self.note(format!("SIGCONT n{}", i + 1));
        if let Some(sent) = sent {
            self.finish_probe(sent);
        }
    }

    fn partition(&mut self, d: Duration) {
        let how = if self.rng.chance(0.5) {
            Cut::Blackhole
        } else {
            Cut::Reset
        };
        let n = self.n();
        // The minority side: one node (often the leader) or, with five, two.
        let size = if n >= 5 && self.rng.chance(0.3) { 2 } else { 1 };
        let (first, leader) = self.pick(Target::LeaderOr(0.5));
        let mut side = vec![first];
        while side.len() < size {
            let other = self.rng.below(n as u64) as usize;
            if !side.contains(&other) {
                side.push(other);
            }
        }
        self.c.net().split(&side, n, how);
        let names: Vec<String> = side.iter().map(|i| format!("n{}", i + 1)).collect();
        self.note(format!(
            "partition {{{}}}{} from the rest ({how:?}) for {d:?}",
            names.join(","),
            Self::role(leader)
        ));
        thread::sleep(d); // the fault's duration
                          // Read from the cut-off side before the heal: it must not answer
                          // with a value the majority has overwritten.
        let sent = self
            .open_probe(first)
            .map(|conn| self.send_probe(conn, first));
        self.c.net().heal_all();
        self.note("heal the partition".into());
        if let Some(sent) = sent {
            self.finish_probe(sent);
        }
    }

    /// Undoes whatever is still in effect.
    fn heal_all(&mut self) {
        self.c.net().heal_all();
        for i in 0..self.n() {
            if self.paused[i] {
                self.c.resume(i);
                self.paused[i] = false;
            }
            if self.c.nodes[i].child.is_none() {
                self.c.spawn(i);
            }
        }
        self.note("all healed".into());
    }

    fn open_probe(&self, i: usize) -> Option<RawConn> {
        let mut conn = RawConn::connect(self.c.nodes[i].client_port, CONNECT_TIMEOUT).ok()?;
        // Make sure the server has taken the connection before it stops.
        match conn.cmd(&["PING"]) {
            Ok(Resp::Simple(p)) if p == "PONG" => {}
            _ => return None,
        }
        conn.set_timeout(CLIENT_TIMEOUT);
        Some(conn)
    }

    /// Pipelines a GET of every key; the history entries are completed by
    /// `finish_probe`.
    fn send_probe(&mut self, mut conn: RawConn, i: usize) -> (RawConn, Vec<usize>) {
        let gets: Vec<KvOp> = (0..KEYS).map(|k| KvOp::Get { key: key_name(k) }).collect();
        let call = self.now_us();
        let sent = send(&mut conn, &gets.iter().collect::<Vec<_>>()).is_ok();
        let mut slots = Vec::new();
        for kv in gets {
            let mut h = op(PROBE, kv, call, Outcome::Pending, call);
            h.node = i as u64 + 1;
            if !sent {
                h.outcome = Outcome::Failed("not sent".into());
            }
            slots.push(self.probes.len());
            self.probes.push(h);
        }
        (conn, if sent { slots } else { Vec::new() })
    }

    fn finish_probe(&mut self, (mut conn, slots): (RawConn, Vec<usize>)) {
        let mut broken = false;
        for slot in slots {
            let kv = self.probes[slot].op.clone();
            let outcome = if broken {
                Outcome::Failed("an earlier reply was lost".into())
            } else {
                match conn.read() {
                    Ok(reply) => outcome_of(&kv, reply),
                    Err(e) => {
                        broken = true;
                        no_reply(&kv, &e)
                    }
                }
            };
            let h = &mut self.probes[slot];
            h.outcome = outcome;
            h.complete_seq = us_since(self.t0);
            h.complete_us = h.complete_seq;
        }
    }
}
