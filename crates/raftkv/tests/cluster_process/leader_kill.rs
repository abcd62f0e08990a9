//! kill -9 of the leader under a stream of writes (item 3): no acknowledged
//! write is lost (paper §5.4, Leader Completeness).

use super::*;

#[derive(Default)]
struct WriterLog {
    /// (i, fate) of `SET w{i} {i}`.
    sets: Vec<(u64, Fate)>,
    /// Fate and (if acked) the value of each `INCR ctr`.
    incrs: Vec<(Fate, Option<i64>)>,
    unexpected: Vec<String>,
}

fn spawn_writer(
    ports: Vec<u16>,
    start_node: usize,
    incr: bool,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> thread::JoinHandle<WriterLog> {
    thread::spawn(move || {
        let mut log = WriterLog::default();
        let mut conns: Vec<Option<redis::Connection>> = ports.iter().map(|_| None).collect();
        let mut i: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let node = (start_node + i as usize) % ports.len();
            let r = if incr {
                let mut cmd = redis::cmd("INCR");
                cmd.arg("ctr");
                attempt::<i64>(&mut conns[node], ports[node], &cmd).map(|r| {
                    let fate = r.err().unwrap_or(Fate::Acked);
                    log.incrs.push((fate, r.ok()));
                    fate
                })
            } else {
                let mut cmd = redis::cmd("SET");
                cmd.arg(format!("w{i}")).arg(i);
                attempt::<String>(&mut conns[node], ports[node], &cmd).map(|r| {
                    let fate = match r {
                        Ok(ok) if ok == "OK" => Fate::Acked,
                        Ok(other) => panic!("SET replied {other:?}"),
                        Err(f) => f,
                    };
                    log.sets.push((i, fate));
                    fate
                })
            };
            match r {
                Ok(Fate::Acked) => {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Fate::NotSent) => thread::sleep(Duration::from_millis(5)),
                Ok(_) => {}
                Err(e) => {
                    log.unexpected.push(e);
                    thread::sleep(Duration::from_millis(5));
                }
            }
            i += 1;
        }
        log
    })
}

#[test]
fn killing_the_leader_under_a_stream_of_writes_loses_no_acknowledged_write() {
    let mut c = Cluster::start_with(
        3,
        Opts {
            request_timeout_ms: 2000,
            ..Opts::default()
        },
    );
    let old_leader = c.wait_for_leader(secs(5));
    let ports: Vec<u16> = c.nodes.iter().map(|n| n.client_port).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let set_writer = spawn_writer(ports.clone(), 0, false, stop.clone(), acked.clone());
    let incr_writer = spawn_writer(ports.clone(), 1, true, stop.clone(), acked.clone());

    wait_until(secs(10), "200 acknowledged writes before the crash", || {
        (acked.load(Ordering::Relaxed) >= 200).then_some(())
    });
    let killed_at = Instant::now();
    c.kill9(old_leader);
    let new_leader = c.wait_for_leader(secs(5));
    let failover = killed_at.elapsed();
    assert_ne!(new_leader, old_leader);
    let before = acked.load(Ordering::Relaxed);
    wait_until(
        secs(10),
        "200 acknowledged writes after the failover",
        || (acked.load(Ordering::Relaxed) >= before + 200).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    let sets = set_writer.join().expect("SET writer thread");
    let incrs = incr_writer.join().expect("INCR writer thread");
    assert!(
        sets.unexpected.is_empty() && incrs.unexpected.is_empty(),
        "error replies other than CLUSTERDOWN/TIMEOUT: {:?} {:?}",
        sets.unexpected,
        incrs.unexpected
    );
    let count = |log: &[(u64, Fate)], f: Fate| log.iter().filter(|(_, x)| *x == f).count();
    eprintln!(
        "failover after {failover:?}; SET: {} acked, {} CLUSTERDOWN, {} unknown, {} not sent; INCR: {} acked",
        count(&sets.sets, Fate::Acked),
        count(&sets.sets, Fate::NotApplied),
        count(&sets.sets, Fate::Unknown),
        count(&sets.sets, Fate::NotSent),
        incrs.incrs.iter().filter(|(f, _)| *f == Fate::Acked).count(),
    );

    let acked_keys: Vec<(String, String)> = sets
        .sets
        .iter()
        .filter(|(_, f)| *f == Fate::Acked)
        .map(|(i, _)| (format!("w{i}"), i.to_string()))
        .collect();
    let refused_keys: Vec<String> = sets
        .sets
        .iter()
        .filter(|(_, f)| *f == Fate::NotApplied)
        .map(|(i, _)| format!("w{i}"))
        .collect();
    let keys: Vec<String> = acked_keys.iter().map(|(k, _)| k.clone()).collect();

    // INCR: a sequential client sees strictly increasing values; the final
    // counter counts every acked INCR, plus some of the unknown ones, and
    // none of the CLUSTERDOWN ones.
    let acked_incrs: Vec<i64> = incrs.incrs.iter().filter_map(|(_, v)| *v).collect();
    assert!(
        acked_incrs.windows(2).all(|w| w[0] < w[1]),
        "acknowledged INCR values must increase: {acked_incrs:?}"
    );
    let unknown_incrs = incrs
        .incrs
        .iter()
        .filter(|(f, _)| *f == Fate::Unknown)
        .count() as i64;

    let check_node = |c: &Cluster, i: usize, what: &str| {
        let mut con = c.redis(i);
        let got = mget_all(&mut con, &keys);
        for ((k, want), got) in acked_keys.iter().zip(&got) {
            assert_eq!(
                got.as_deref(),
                Some(want.as_str()),
                "acknowledged SET {k} missing or wrong via {what} node {}",
                i + 1
            );
        }
        let got = mget_all(&mut con, &refused_keys);
        for (k, got) in refused_keys.iter().zip(&got) {
            assert_eq!(
                *got,
                None,
                "{k} was answered CLUSTERDOWN (certainly not applied) but exists via {what} node {}",
                i + 1
            );
        }
        let ctr: Option<String> = q(&mut con, &["GET", "ctr"]);
        let ctr: i64 = ctr.expect("ctr exists").parse().expect("ctr is a number");
        let n = acked_incrs.len() as i64;
        assert!(
            n <= ctr && ctr <= n + unknown_incrs,
            "ctr={ctr} but {n} INCRs were acked and {unknown_incrs} unknown (via {what} node {})",
            i + 1
        );
        assert!(ctr >= *acked_incrs.last().unwrap_or(&0));
    };
    for i in c.running() {
        check_node(&c, i, "surviving");
    }

    // The killed node restarts on its data dir and catches up.
    let target = c
        .info(new_leader)
        .expect("leader answers")
        .num("commit_index");
    c.spawn(old_leader);
    let caught_up = Instant::now();
    wait_until(
        secs(10),
        "the restarted node to apply the leader's log",
        || {
            c.info(old_leader)
                .filter(|inf| inf.num("last_applied") >= target)
                .map(|_| ())
        },
    );
    eprintln!("restarted node caught up in {:?}", caught_up.elapsed());
    c.wait_for_leader(secs(5));
    check_node(&c, old_leader, "restarted");
}
