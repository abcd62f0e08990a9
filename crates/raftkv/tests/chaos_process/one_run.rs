//! One run: a configuration's seed and epochs; clients and the nemesis against
//! a cluster, then the healed cluster's final reads, and the check of the
//! history.

use super::clients::{client_main, execute, ClientSpec, StopOnDrop};
use super::nemesis::Nemesis;
use super::*;

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

pub(crate) fn run(cfg: Config, test: &str) {
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
pub(crate) fn check(
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
