//! Requests too large to replicate, and large ones that must still work, on
//! real `raftkv server` processes (issue 13: a 90 MB `MSET` of 1 MB values
//! was accepted, could not fit one peer frame, and cost the leader its term;
//! the client got `-CLUSTERDOWN`, retried, and forced election after
//! election).
//!
//! What is proved: a request over `--max-request-bytes` gets `-ERR request
//! too large` on the leader and through a follower, nothing is applied, the
//! connection goes on, and no election follows; one just under the limit
//! replicates everywhere; a pipeline of values and a pipeline of reads
//! larger than one peer frame (64 MiB) work through a follower, because its
//! batches and the leader's replies are cut to fit.

mod process;

use std::io;
use std::time::Duration;

use process::{encode_cmd, Cluster, Opts, RawConn, Resp};

const MB: usize = 1_000_000;

/// `MSET prefix0 value prefix1 value ...` with `pairs` pairs, as RESP.
fn mset_request(prefix: &str, pairs: usize, value: &[u8]) -> Vec<u8> {
    let keys: Vec<String> = (0..pairs).map(|i| format!("{prefix}{i}")).collect();
    let mut args: Vec<&[u8]> = vec![b"MSET"];
    for k in &keys {
        args.push(k.as_bytes());
        args.push(value);
    }
    let mut out = Vec::new();
    encode_cmd(&args, &mut out);
    out
}

/// A reply, briefly: values here are megabytes, never print them whole.
fn brief(r: &io::Result<Resp>) -> String {
    match r {
        Ok(Resp::Bulk(v)) => format!("a bulk string of {} bytes", v.len()),
        Ok(Resp::Array(items)) => format!("an array of {} items", items.len()),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("no reply: {e}"),
    }
}

fn expect_bulk(raw: &mut RawConn, what: &str, expected: &[u8]) {
    let reply = raw.read();
    match &reply {
        Ok(Resp::Bulk(v)) if v == expected => {}
        _ => panic!(
            "{what}: {}, not the {} bytes written",
            brief(&reply),
            expected.len()
        ),
    }
}

/// Every node in `term`, following the same leader.
fn assert_no_election(c: &Cluster, term: u64, leader: usize) {
    for node in 0..c.nodes.len() {
        let info = c.info(node).expect("INFO");
        assert_eq!(info.num("term"), term, "node {}: term changed", node + 1);
        let leader_id = info.num("leader_id");
        assert_eq!(leader_id, c.nodes[leader].id, "node {}: leader", node + 1);
    }
}

/// Timing for these tests. Hundreds of megabytes go to one shared disk
/// within seconds (three WALs, their spare segments, snapshots), and a
/// follower answers a heartbeat only after its earlier writes are durable
/// (Figure 2: respond after persisting), so an fsync stalled past the
/// 300 ms minimum election timeout of the defaults costs the leader its
/// check-quorum round: a question of disk latency against election timeout,
/// which these tests are not about (they were green 5 of 5 with the
/// defaults alone, and failed once in a clean-clone CI run). What they prove
/// is that no request makes a frame replication cannot carry; with
/// 1-2 s timeouts an election here can only mean that.
fn opts(extra: Vec<String>) -> Opts {
    Opts {
        heartbeat_ms: 100,
        election_timeout_ms: "1000-2000",
        extra,
        ..Opts::default()
    }
}

#[test]
fn a_request_over_max_request_bytes_gets_too_large_and_the_leader_keeps_its_term() {
    const LIMIT: usize = 4 << 20;
    let c = Cluster::start_with(
        3,
        opts(vec![
            "--max-request-bytes".into(),
            LIMIT.to_string(),
            "--max-value-bytes".into(),
            LIMIT.to_string(),
        ]),
    );
    let leader = c.wait_for_leader(Duration::from_secs(10));
    let follower = c.followers(leader)[0];
    let term = c.info(leader).expect("INFO").num("term");

    // The reported request: 90 values of 1 MB, each under the value limit,
    // 90 MB in all. To the leader, and through a follower.
    let over = mset_request("over:", 90, &vec![b'x'; MB]);
    for node in [leader, follower] {
        let mut raw = c.raw(node);
        raw.send_raw(&over).expect("send the oversize MSET");
        match raw.read() {
            Ok(Resp::Error(e)) => assert!(e.starts_with("ERR request too large"), "-{e}"),
            other => panic!(
                "node {}: expected -ERR request too large, got {other:?}",
                node + 1
            ),
        }
        // Answered, not hung up on: the connection goes on, and nothing of
        // the request was applied.
        assert_eq!(
            raw.cmd(&["PING"]).expect("PING"),
            Resp::Simple("PONG".into())
        );
        assert_eq!(
            raw.cmd(&["EXISTS", "over:0", "over:89"]).expect("EXISTS"),
            Resp::Int(0)
        );
    }

    // Just under the limit: accepted, through the leader and a follower,
    // and readable on every node.
    let value = vec![b'u'; (LIMIT - 1024) / 3];
    for (node, prefix) in [(leader, "via_leader:"), (follower, "via_follower:")] {
        let under = mset_request(prefix, 3, &value);
        assert!(under.len() <= LIMIT && under.len() > LIMIT - 2048);
        let mut raw = c.raw(node);
        raw.send_raw(&under).expect("send");
        let reply = raw.read();
        assert!(
            matches!(&reply, Ok(Resp::Simple(ok)) if ok == "OK"),
            "MSET under the limit at node {}: {}",
            node + 1,
            brief(&reply)
        );
    }
    for node in 0..3 {
        let mut raw = c.raw(node);
        for key in ["via_leader:2", "via_follower:0"] {
            let mut get = Vec::new();
            encode_cmd(&[b"GET", key.as_bytes()], &mut get);
            raw.send_raw(&get).expect("GET");
            expect_bulk(&mut raw, &format!("node {}: GET {key}", node + 1), &value);
        }
    }
    assert_no_election(&c, term, leader);
}

#[test]
fn pipelines_larger_than_one_peer_frame_work_through_a_follower() {
    let c = Cluster::start_with(3, opts(Vec::new()));
    let leader = c.wait_for_leader(Duration::from_secs(10));
    let follower = c.followers(leader)[0];
    let term = c.info(leader).expect("INFO").num("term");
    // 80 values of 1 MB (the default value limit is 1 MiB), 80 MB in one
    // pipeline: more than one forward could carry, so the follower sends
    // them as a few batches, in order.
    const N: usize = 80;
    let value = |i: usize| vec![b'a' + (i % 26) as u8; MB];
    let mut pipeline = Vec::new();
    for i in 0..N {
        encode_cmd(
            &[b"SET", format!("big:{i}").as_bytes(), &value(i)],
            &mut pipeline,
        );
    }
    let mut raw = c.raw(follower);
    raw.set_timeout(Duration::from_secs(60));
    raw.send_raw(&pipeline).expect("send the pipeline");
    for i in 0..N {
        assert_eq!(
            raw.read().expect("SET reply"),
            Resp::Simple("OK".into()),
            "SET big:{i}"
        );
    }
    // Read back through the follower, also as one pipeline: 80 MB of
    // replies, more than one forward reply can carry, so the leader
    // answers the first reads and the follower asks again for the rest.
    let mut gets = Vec::new();
    for i in 0..N {
        encode_cmd(&[b"GET", format!("big:{i}").as_bytes()], &mut gets);
    }
    raw.send_raw(&gets).expect("send the GETs");
    for i in 0..N {
        expect_bulk(&mut raw, &format!("GET big:{i}"), &value(i));
    }
    // And with one MGET of them all: one read whose reply alone is larger
    // than a frame cannot be relayed, and says so; the leader serves it.
    let keys: Vec<String> = (0..N).map(|i| format!("big:{i}")).collect();
    let mut mget: Vec<&str> = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    let reply = raw.cmd(&mget);
    match &reply {
        Ok(Resp::Error(e)) => assert!(e.starts_with("ERR reply too large"), "-{e}"),
        _ => panic!("MGET through a follower: {}", brief(&reply)),
    }
    let mut at_leader = c.raw(leader);
    at_leader.set_timeout(Duration::from_secs(60));
    let reply = at_leader.cmd(&mget);
    match &reply {
        Ok(Resp::Array(values)) if values.len() == N => {}
        _ => panic!("MGET at the leader: {}", brief(&reply)),
    }
    assert_no_election(&c, term, leader);
}
