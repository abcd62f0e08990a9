//! Reads and writes through every node (item 1): written via one node, read via
//! another at once (linearizable reads), INCR round-robin over all nodes gives
//! one gap-free sequence, binary keys and values; and with `--lease-reads`,
//! GETs are served from the leader's lease (thesis §6.4.1) and survive a leader
//! crash.

use super::*;

#[test]
fn reads_and_writes_work_through_the_leader_and_through_followers() {
    let c = Cluster::start();
    let leader = c.wait_for_leader(secs(5));
    let mut cons: Vec<redis::Connection> = (0..3).map(|i| c.redis(i)).collect();
    assert!(c.followers(leader).len() == 2);

    // Written via node a, read via node b at once: linearizable reads.
    for a in 0..3 {
        for b in 0..3 {
            let key = format!("k_{a}_{b}");
            let val = format!("v_{a}_{b}");
            let ok: String = q(&mut cons[a], &["SET", &key, &val]);
            assert_eq!(ok, "OK");
            let got: Option<String> = q(&mut cons[b], &["GET", &key]);
            assert_eq!(
                got.as_deref(),
                Some(val.as_str()),
                "SET via node {} then GET via node {}",
                a + 1,
                b + 1
            );
        }
    }
    // Overwrite via one node, read the new value via the others.
    for a in 0..3 {
        let val = format!("over_{a}");
        let _: String = q(&mut cons[a], &["SET", "shared", &val]);
        for con in cons.iter_mut() {
            let got: Option<String> = q(con, &["GET", "shared"]);
            assert_eq!(got.as_deref(), Some(val.as_str()));
        }
    }

    // EXISTS / DEL across nodes.
    let n: i64 = q(&mut cons[1], &["EXISTS", "k_0_0", "k_1_1", "nope", "k_0_0"]);
    assert_eq!(n, 3, "EXISTS counts each existing argument");
    let n: i64 = q(&mut cons[2], &["DEL", "k_0_0", "k_0_1", "nope"]);
    assert_eq!(n, 2);
    for con in cons.iter_mut() {
        let n: i64 = q(con, &["EXISTS", "k_0_0", "k_0_1"]);
        assert_eq!(n, 0, "deleted keys are gone on every node");
        let got: Option<String> = q(con, &["GET", "k_0_0"]);
        assert_eq!(got, None);
    }
    let n: i64 = q(&mut cons[0], &["DEL", "k_0_0"]);
    assert_eq!(n, 0, "DEL of a missing key");

    // INCR round-robin over all nodes: one sequence, no gaps, no repeats.
    for i in 1..=30i64 {
        let n: i64 = q(&mut cons[(i as usize) % 3], &["INCR", "counter"]);
        assert_eq!(n, i, "INCR number {i}");
    }
    let n: i64 = q(&mut cons[leader], &["INCRBY", "counter", "10"]);
    assert_eq!(n, 40);
    let n: i64 = q(&mut cons[(leader + 1) % 3], &["INCRBY", "counter", "-45"]);
    assert_eq!(n, -5);
    let e = q_err(&mut cons[(leader + 2) % 3], &["INCR", "k_1_1"]);
    assert!(
        e.to_string().contains("not an integer"),
        "INCR of a non-integer: {e}"
    );
    let got: Option<String> = q(&mut cons[0], &["GET", "k_1_1"]);
    assert_eq!(
        got.as_deref(),
        Some("v_1_1"),
        "a failed INCR changes nothing"
    );

    // MSET via a follower, MGET via each node.
    let f = c.followers(leader)[0];
    let ok: String = q(&mut cons[f], &["MSET", "m1", "a", "m2", "b", "m3", "c"]);
    assert_eq!(ok, "OK");
    for con in cons.iter_mut() {
        let got: Vec<Option<String>> = q(con, &["MGET", "m1", "missing", "m3", "m2"]);
        assert_eq!(
            got,
            vec![Some("a".into()), None, Some("c".into()), Some("b".into())]
        );
    }

    // Binary-safe keys and values (CR, LF, NUL, non-UTF-8), and empty ones,
    // through a follower's forwarding.
    let bin_key: &[u8] = b"bin\r\n\0key\xff";
    let bin_val: Vec<u8> = (0..=255u8).chain(*b"\r\n$3\r\n*1\r\n").collect();
    let ok: String = redis::cmd("SET")
        .arg(bin_key)
        .arg(&bin_val)
        .query(&mut cons[f])
        .expect("binary SET");
    assert_eq!(ok, "OK");
    let ok: String = q(&mut cons[f], &["SET", "", ""]);
    assert_eq!(ok, "OK");
    for con in cons.iter_mut() {
        let got: Vec<u8> = redis::cmd("GET").arg(bin_key).query(con).expect("GET");
        assert_eq!(got, bin_val, "binary value round trip");
        let got: Option<String> = q(con, &["GET", ""]);
        assert_eq!(got.as_deref(), Some(""), "empty key and value");
    }

    // INCRBY overflow is an error and changes nothing.
    let _: String = q(&mut cons[f], &["SET", "big", "9223372036854775806"]);
    let n: i64 = q(&mut cons[f], &["INCR", "big"]);
    assert_eq!(n, i64::MAX);
    let e = q_err(&mut cons[f], &["INCR", "big"]);
    assert!(
        e.to_string().contains("overflow"),
        "INCR past i64::MAX: {e}"
    );
    let got: Option<String> = q(&mut cons[leader], &["GET", "big"]);
    assert_eq!(got.as_deref(), Some("9223372036854775807"));

    // DBSIZE agrees everywhere: 9 k_* - 2 deleted + shared + counter + 3 m*
    // + binary + empty + big.
    for con in cons.iter_mut() {
        let n: i64 = q(con, &["DBSIZE"]);
        assert_eq!(n, 9 - 2 + 1 + 1 + 3 + 3);
    }
}

#[test]
fn with_lease_reads_gets_are_served_from_the_lease_and_survive_a_leader_crash() {
    let mut c = Cluster::start_with(
        3,
        Opts {
            extra: vec!["--lease-reads".into()],
            ..Opts::default()
        },
    );
    let leader = c.wait_for_leader(secs(5));
    let info = c.info(leader).expect("RAFT.INFO from the leader");
    assert_eq!(
        info.fields.get("read_mode").map(String::as_str),
        Some("lease")
    );
    let mut con = c.redis(leader);
    for i in 0..20 {
        let _: String = q(&mut con, &["SET", &format!("l{i}"), &i.to_string()]);
        let got: Option<String> = q(&mut con, &["GET", &format!("l{i}")]);
        assert_eq!(got, Some(i.to_string()));
    }
    let served = c.info(leader).expect("RAFT.INFO").num("lease_reads_served");
    assert!(served > 0, "GETs were answered from the lease");

    // kill -9 the leader: the survivors elect a new one (after the old
    // lease ran out), and reads through it see every acknowledged write.
    c.kill9(leader);
    let new_leader = c.wait_for_leader(secs(10));
    assert_ne!(new_leader, leader);
    let mut con = c.redis(new_leader);
    let _: String = q(&mut con, &["SET", "after", "crash"]);
    for i in 0..20 {
        let got: Option<String> = q(&mut con, &["GET", &format!("l{i}")]);
        assert_eq!(got, Some(i.to_string()));
    }
    c.spawn(leader);
    let follower_read = wait_until(secs(10), "the restarted node forwards a GET", || {
        let mut con = redis_conn(c.nodes[leader].client_port).ok()?;
        let got: Option<String> = redis::cmd("GET").arg("after").query(&mut con).ok()?;
        got
    });
    assert_eq!(follower_read, "crash");
}
