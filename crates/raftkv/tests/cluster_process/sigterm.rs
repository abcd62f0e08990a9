//! SIGTERM (item 4): a node exits with status zero within five seconds.

use super::*;

#[test]
fn sigterm_exits_zero_within_five_seconds() {
    let mut c = Cluster::start_with(
        3,
        Opts {
            request_timeout_ms: 10_000,
            ..Opts::default()
        },
    );
    let leader = c.wait_for_leader(secs(5));
    let mut con = c.redis(leader);
    for i in 0..20 {
        let _: String = q(&mut con, &["SET", &format!("t{i}"), "x"]);
    }
    drop(con);

    // A follower, then the leader: each exits 0 within 5 s.
    let follower = c.followers(leader)[0];
    for (i, what) in [(follower, "follower"), (leader, "leader")] {
        let t = Instant::now();
        let status = c.sigterm(i, secs(5));
        let status = status.unwrap_or_else(|| panic!("{what} did not exit within 5 s of SIGTERM"));
        assert!(
            status.success(),
            "{what} exited with {status} after SIGTERM"
        );
        eprintln!("{what} stopped in {:?}", t.elapsed());
    }

    // The last node has no quorum: a write sent to it is in flight (the
    // request timeout is 10 s) when SIGTERM arrives.
    let last = c.running()[0];
    let port = c.nodes[last].client_port;
    let mut raw = RawConn::connect(port, secs(10)).expect("connect");
    let mut buf = Vec::new();
    encode_cmd(&[b"SET", b"inflight", b"1"], &mut buf);
    raw.send_raw(&buf).expect("send");
    thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let pid = c.nodes[last].pid().expect("running");
    signal(pid, "TERM");
    let child = c.nodes[last].child.as_mut().expect("running");
    let status = wait_child(child, secs(5));
    let status = status.unwrap_or_else(|| panic!("the last node did not exit within 5 s"));
    c.nodes[last].child = None;
    assert!(status.success(), "last node exited with {status}");
    eprintln!("last node (in-flight write) stopped in {:?}", t.elapsed());
    // The in-flight client got an error reply or a closed connection, not
    // silence, and surely not +OK (no quorum).
    raw.set_timeout(secs(2));
    match raw.read() {
        Ok(Resp::Error(e)) => eprintln!("in-flight write answered: -{e}"),
        Ok(other) => panic!("in-flight write without quorum answered {other:?}"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the in-flight client was left hanging after the node exited: {e}"
        ),
    }
}
