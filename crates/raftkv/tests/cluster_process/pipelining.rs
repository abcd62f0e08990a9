//! Pipelining through a follower (item 6): pipelines of mixed commands keep
//! their replies in order, with a steady leader and while the leader is
//! SIGKILLed mid-flight.

use super::*;

/// What a pipeline round learned.
#[derive(Debug, Default)]
struct PipelineStats {
    errors: usize,
    last_incr: i64,
    /// INCRs answered with an integer / with -TIMEOUT.
    incr_ok: i64,
    incr_unknown: i64,
}

/// Sends one pipeline of `groups` × [SET a, SET b, GET a, GET b, INCR ctr,
/// PING] in one write and checks every reply against its request, in order.
/// `tolerate_errors`: CLUSTERDOWN/TIMEOUT replies are allowed.
fn run_pipeline(
    conn: &mut RawConn,
    tag: &str,
    round: usize,
    groups: usize,
    last_incr: i64,
    tolerate_errors: bool,
) -> Result<PipelineStats, String> {
    let ctr = format!("{tag}:ctr");
    let key = |j: usize, ab: &str| format!("{tag}:{round}:{ab}{j}");
    let mut buf = Vec::new();
    for j in 0..groups {
        let (ka, kb) = (key(j, "a"), key(j, "b"));
        let (va, vb) = (j.to_string(), format!("b{j}"));
        encode_cmd(&[b"SET", ka.as_bytes(), va.as_bytes()], &mut buf);
        encode_cmd(&[b"SET", kb.as_bytes(), vb.as_bytes()], &mut buf);
        encode_cmd(&[b"GET", ka.as_bytes()], &mut buf);
        encode_cmd(&[b"GET", kb.as_bytes()], &mut buf);
        encode_cmd(&[b"INCR", ctr.as_bytes()], &mut buf);
        encode_cmd(&[b"PING"], &mut buf);
    }
    conn.send_raw(&buf)
        .map_err(|e| format!("round {round}: send: {e}"))?;
    let mut stats = PipelineStats {
        last_incr,
        ..PipelineStats::default()
    };
    let mut read = |what: &str| {
        conn.read()
            .map_err(|e| format!("round {round}: reading the reply to {what}: {e}"))
    };
    // An error reply is fine only if errors are tolerated and it is one of
    // the two contract kinds.
    let allowed = |e: &str, stats: &mut PipelineStats| -> Result<(), String> {
        stats.errors += 1;
        if tolerate_errors && (e.starts_with("CLUSTERDOWN") || e.starts_with("TIMEOUT")) {
            Ok(())
        } else {
            Err(format!("round {round}: unexpected error reply -{e}"))
        }
    };
    for j in 0..groups {
        // SET a, SET b: +OK or an allowed error; remember which.
        let mut set_fate = [Fate::Acked; 2];
        for (n, ab) in ["a", "b"].iter().enumerate() {
            match read(&format!("SET {}", key(j, ab)))? {
                Resp::Simple(s) if s == "OK" => {}
                Resp::Error(e) => {
                    allowed(&e, &mut stats)?;
                    set_fate[n] = if e.starts_with("CLUSTERDOWN") {
                        Fate::NotApplied
                    } else {
                        Fate::Unknown
                    };
                }
                other => {
                    return Err(format!(
                        "round {round} group {j}: SET {ab} got {other:?} (replies out of order?)"
                    ))
                }
            }
        }
        // GET a, GET b: the value just set (or nil if the SET surely failed).
        for (n, (ab, want)) in [("a", j.to_string()), ("b", format!("b{j}"))]
            .iter()
            .enumerate()
        {
            match read(&format!("GET {}", key(j, ab)))? {
                Resp::Bulk(v) if v == want.as_bytes() => {
                    if set_fate[n] == Fate::NotApplied {
                        return Err(format!(
                            "round {round} group {j}: GET {ab} sees a value whose SET got CLUSTERDOWN"
                        ));
                    }
                }
                Resp::Nil if set_fate[n] != Fate::Acked => {}
                Resp::Error(e) => allowed(&e, &mut stats)?,
                other => {
                    return Err(format!(
                        "round {round} group {j}: GET {ab} after SET ({:?}) got {other:?}",
                        set_fate[n]
                    ))
                }
            }
        }
        match read("INCR")? {
            Resp::Int(n) if n > stats.last_incr => {
                stats.last_incr = n;
                stats.incr_ok += 1;
            }
            Resp::Error(e) => {
                allowed(&e, &mut stats)?;
                if e.starts_with("TIMEOUT") {
                    stats.incr_unknown += 1;
                }
            }
            other => {
                return Err(format!(
                    "round {round} group {j}: INCR got {other:?}, previous {}",
                    stats.last_incr
                ))
            }
        }
        match read("PING")? {
            Resp::Simple(s) if s == "PONG" => {}
            other => return Err(format!("round {round} group {j}: PING got {other:?}")),
        }
    }
    Ok(stats)
}

#[test]
fn pipelined_mixed_commands_through_a_follower_keep_replies_in_order() {
    let mut c = Cluster::start_with(
        3,
        Opts {
            request_timeout_ms: 3000,
            ..Opts::default()
        },
    );
    let leader = c.wait_for_leader(secs(5));
    let followers = c.followers(leader);

    // Steady leader: every reply is a success, in order.
    let mut conn = c.raw(followers[0]);
    conn.set_timeout(secs(15));
    let mut last = 0;
    for round in 0..3 {
        let stats = run_pipeline(&mut conn, "steady", round, 34, last, false)
            .unwrap_or_else(|e| panic!("steady leader: {e}"));
        assert_eq!(stats.errors, 0);
        last = stats.last_incr;
    }
    assert_eq!(last, 3 * 34, "every INCR applied exactly once");

    // The leader is SIGKILLed while pipelines are in flight on both followers.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds_done = Arc::new(AtomicUsize::new(0));
    let clean_after = Arc::new(Mutex::new(None::<Instant>));
    let mut threads = Vec::new();
    for (t, &f) in followers.iter().enumerate() {
        let mut conn = c.raw(f);
        conn.set_timeout(secs(20));
        let (stop, rounds_done) = (stop.clone(), rounds_done.clone());
        let clean_after = clean_after.clone();
        threads.push(thread::spawn(move || -> Result<[i64; 4], String> {
            let tag = format!("fo{t}");
            let (mut last, mut errors, mut clean_rounds) = (0, 0, 0);
            let (mut incr_ok, mut incr_unknown) = (0, 0);
            for round in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return Ok([errors, clean_rounds, incr_ok, incr_unknown]);
                }
                let started = Instant::now();
                let s = run_pipeline(&mut conn, &tag, round, 34, last, true)?;
                last = s.last_incr;
                errors += s.errors as i64;
                incr_ok += s.incr_ok;
                incr_unknown += s.incr_unknown;
                let after = *clean_after.lock().expect("lock");
                if s.errors == 0 && after.is_some_and(|a| started > a) {
                    clean_rounds += 1;
                }
                rounds_done.fetch_add(1, Ordering::Relaxed);
            }
            unreachable!()
        }));
    }
    // Let the pipelines get going, then kill the leader mid-flight.
    wait_until(secs(10), "a first round of pipelines", || {
        (rounds_done.load(Ordering::Relaxed) >= 2).then_some(())
    });
    thread::sleep(Duration::from_millis(50));
    c.kill9(leader);
    let new_leader = c.wait_for_leader(secs(5));
    assert_ne!(new_leader, leader);
    *clean_after.lock().expect("lock") = Some(Instant::now());
    let base = rounds_done.load(Ordering::Relaxed);
    wait_until(secs(15), "pipelines to run on after the failover", || {
        (rounds_done.load(Ordering::Relaxed) >= base + 4).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let mut clean = 0;
    let mut con = c.redis(new_leader);
    for (t, handle) in threads.into_iter().enumerate() {
        match handle.join().expect("pipeline thread") {
            Ok([errors, clean_rounds, incr_ok, incr_unknown]) => {
                eprintln!(
                    "pipeline thread {t}: {errors} error replies, {clean_rounds} clean rounds \
                     after failover, INCR {incr_ok} ok / {incr_unknown} unknown"
                );
                clean += clean_rounds;
                // Each INCR is at most one log entry: acked ones all count,
                // TIMEOUT ones may, CLUSTERDOWN ones must not.
                let ctr: Option<String> = q(&mut con, &["GET", &format!("fo{t}:ctr")]);
                let ctr: i64 = ctr.expect("counter").parse().expect("a number");
                assert!(
                    incr_ok <= ctr && ctr <= incr_ok + incr_unknown,
                    "fo{t}:ctr = {ctr}, but {incr_ok} INCRs were acked and {incr_unknown} unknown"
                );
            }
            Err(e) => panic!("pipeline across a leader change: {e}"),
        }
    }
    assert!(
        clean > 0,
        "no error-free pipeline after the new leader was elected"
    );
}
