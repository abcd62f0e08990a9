//! redis-cli and redis-benchmark (item 9) work unmodified (skipped if not
//! installed).

use super::*;

#[test]
fn redis_cli_and_redis_benchmark_work_unmodified() {
    if !have("redis-cli") || !have("redis-benchmark") {
        eprintln!("SKIPPED: redis-cli / redis-benchmark are not installed");
        return;
    }
    // 1-2 s election timeouts: this test is about the protocol, not about
    // failover. With the 300 ms defaults, a debug build sharing two cores
    // with other work once lost its leader mid-benchmark in CI (a follower
    // answers heartbeats only after its pending fsync, Figure 2), and
    // redis-benchmark stops at the first error.
    let c = Cluster::start_with(
        3,
        Opts {
            heartbeat_ms: 100,
            election_timeout_ms: "1000-2000",
            ..Opts::default()
        },
    );
    let leader = c.wait_for_leader(secs(5));
    let follower = c.followers(leader)[0];
    let port = c.nodes[follower].client_port.to_string();
    let cli = |args: &[&str]| -> String {
        let out = run_bounded(
            Command::new("redis-cli").args(["-p", &port]).args(args),
            secs(10),
        );
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    };
    assert_eq!(cli(&["SET", "x", "1"]), "OK");
    assert_eq!(cli(&["GET", "x"]), "1");
    assert_eq!(cli(&["INCR", "x"]), "2");
    assert_eq!(cli(&["-3", "GET", "x"]), "2", "redis-cli in RESP3 mode");
    assert_eq!(cli(&["PING"]), "PONG");
    let info = cli(&["INFO", "raft"]);
    assert!(
        info.contains("role:follower") && info.contains("# Raft"),
        "INFO raft via redis-cli: {info}"
    );
    let info = cli(&["RAFT.INFO"]);
    assert!(
        info.contains(&format!("leader_id:{}", leader + 1)),
        "{info}"
    );

    let t = Instant::now();
    let out = run_bounded(
        Command::new("redis-benchmark").args([
            "-p", &port, "-t", "set,get", "-n", "20000", "-c", "20", "-q",
        ]),
        secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "redis-benchmark ({:?}):\n{}",
        t.elapsed(),
        stdout.replace('\r', "\n")
    );
    assert!(out.status.success(), "redis-benchmark failed: {stderr}");
    for line in stdout.lines().chain(stderr.lines()) {
        let l = line.to_ascii_lowercase();
        assert!(
            !l.contains("err") && !l.contains("warning"),
            "redis-benchmark reported: {line}"
        );
    }
    assert!(
        stdout.contains("SET:") && stdout.contains("GET:"),
        "{stdout}"
    );
    // The benchmark's writes really happened.
    let mut con = c.redis(leader);
    let v: Option<String> = q(&mut con, &["GET", "key:__rand_int__"]);
    assert!(v.is_some(), "redis-benchmark's SET key exists");
}
