//! No quorum (item 13): commands fail within the request timeout with a
//! could-not-complete error, and the connection stays usable.

use super::*;

/// Sends one command on `conn`; asserts the reply is one of the two
/// "could not complete" errors and came within the request timeout (plus
/// slack), and that the connection still answers PING.
fn expect_cannot_complete(conn: &mut RawConn, args: &[&str], bound: Duration) -> Fate {
    let t = Instant::now();
    let reply = conn.cmd(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let took = t.elapsed();
    assert!(took <= bound, "{args:?} took {took:?} (bound {bound:?})");
    let fate = match &reply {
        Resp::Error(e) if e.starts_with("CLUSTERDOWN") => Fate::NotApplied,
        Resp::Error(e) if e.starts_with("TIMEOUT") => Fate::Unknown,
        other => panic!("{args:?} without a quorum answered {other:?}"),
    };
    eprintln!("{args:?} without a quorum: {} after {took:?}", reply.text());
    assert_eq!(
        conn.cmd(&["PING"]).expect("PING"),
        Resp::Simple("PONG".into()),
        "the connection stays usable after {args:?} failed"
    );
    fate
}

#[test]
fn without_a_quorum_commands_fail_within_the_request_timeout_and_the_connection_stays_usable() {
    let mut c = Cluster::start_with(
        3,
        Opts {
            request_timeout_ms: 1500,
            ..Opts::default()
        },
    );
    let leader = c.wait_for_leader(secs(5));
    let followers = c.followers(leader);
    let mut conns: Vec<RawConn> = (0..3).map(|i| c.raw(i)).collect();
    assert_eq!(
        conns[leader].cmd(&["SET", "before", "1"]).expect("SET"),
        Resp::Simple("OK".into())
    );
    c.kill9(followers[0]);
    c.kill9(followers[1]);

    let bound = Duration::from_millis(1500) + SEC;
    let set_fate = expect_cannot_complete(&mut conns[leader], &["SET", "nq", "1"], bound);
    let incr_fate = expect_cannot_complete(&mut conns[leader], &["INCR", "nq_ctr"], bound);
    expect_cannot_complete(&mut conns[leader], &["GET", "before"], bound);

    // Quorum back: the same connection works again, and what was refused
    // with CLUSTERDOWN did not happen.
    c.spawn(followers[0]);
    c.wait_for_leader(secs(10));
    let conn = &mut conns[leader];
    assert_eq!(
        conn.cmd(&["GET", "before"]).expect("GET"),
        Resp::Bulk(b"1".to_vec())
    );
    let nq = conn.cmd(&["GET", "nq"]).expect("GET");
    if set_fate == Fate::NotApplied {
        assert_eq!(nq, Resp::Nil, "a SET answered CLUSTERDOWN took effect");
    }
    match conn.cmd(&["INCR", "nq_ctr"]).expect("INCR") {
        Resp::Int(1) => {}
        Resp::Int(2) if incr_fate == Fate::Unknown => {}
        other => panic!("INCR after an INCR that failed with {incr_fate:?}: {other:?}"),
    }
}
