//! `--timeout` (Redis' `timeout`, issue 17): a client idle longer is
//! disconnected; a client that keeps talking is not.

use super::*;

#[test]
fn an_idle_client_is_disconnected_and_a_busy_one_is_not() {
    let c = Cluster::start_with(
        3,
        Opts {
            extra: vec!["--timeout".into(), "1".into()],
            ..Opts::default()
        },
    );
    let leader = c.wait_for_leader(secs(5));
    let port = c.nodes[leader].client_port;
    let mut idle = RawConn::connect(port, secs(5)).expect("connect");
    let mut busy = RawConn::connect(port, secs(5)).expect("connect");
    assert_eq!(
        idle.cmd(&["PING"]).expect("PING"),
        Resp::Simple("PONG".into())
    );
    // The busy client keeps talking for 2.4 s, past the idle one's timeout;
    // it must be answered every time.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2400) {
        assert_eq!(
            busy.cmd(&["PING"]).expect("busy PING"),
            Resp::Simple("PONG".into())
        );
    }
    // By now the idle one (silent for 2.4 s) has been closed; the bound is
    // generous, the timeout is 1 s.
    assert!(
        idle.closed_within(secs(5)),
        "the idle client was not disconnected"
    );
    assert_eq!(
        busy.cmd(&["PING"]).expect("busy PING"),
        Resp::Simple("PONG".into())
    );
}
