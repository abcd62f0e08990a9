//! Bad input (item 7): malformed RESP gets an error reply (or the connection
//! closed), and the node keeps serving.

use super::*;

fn assert_node_serves(port: u16, tag: &str) {
    let mut con = redis_conn(port).unwrap_or_else(|e| panic!("after {tag}: connect: {e}"));
    let pong: String = q(&mut con, &["PING"]);
    assert_eq!(pong, "PONG", "after {tag}");
    let key = format!("serves_{}", tag.replace(' ', "_"));
    let _: String = q(&mut con, &["SET", &key, "yes"]);
    let v: Option<String> = q(&mut con, &["GET", &key]);
    assert_eq!(v.as_deref(), Some("yes"), "after {tag}");
}

fn expect_error_then_close(port: u16, bytes: &[u8], tag: &str) {
    let mut raw = RawConn::connect(port, secs(2)).expect("connect");
    raw.send_raw(bytes).expect("send");
    let t = Instant::now();
    match raw.read() {
        Ok(Resp::Error(e)) => assert!(
            e.starts_with("ERR Protocol error"),
            "{tag}: expected -ERR Protocol error, got -{e}"
        ),
        other => panic!("{tag}: expected a protocol error at once, got {other:?}"),
    }
    assert!(
        t.elapsed() < secs(2),
        "{tag}: protocol error took {:?}",
        t.elapsed()
    );
    assert!(
        raw.closed_within(secs(2)),
        "{tag}: the connection must be closed after a protocol error"
    );
}

fn expect_error_reply(raw: &mut RawConn, bytes: &[u8], needle: &str, tag: &str) {
    raw.send_raw(bytes).expect("send");
    match raw.read() {
        Ok(Resp::Error(e)) => assert!(e.contains(needle), "{tag}: -{e} lacks {needle:?}"),
        other => panic!("{tag}: expected an error containing {needle:?}, got {other:?}"),
    }
    // The connection stays usable after a command error.
    assert_eq!(
        raw.cmd(&["PING"]).expect("PING"),
        Resp::Simple("PONG".into()),
        "{tag}: same connection after the error"
    );
}

#[test]
fn bad_input_gets_errors_and_the_node_keeps_serving() {
    let c = Cluster::start();
    let leader = c.wait_for_leader(secs(5));
    let follower = c.followers(leader)[0];
    for node in [follower, leader] {
        let port = c.nodes[node].client_port;
        // A client that stays connected through all of it.
        let mut bystander = c.redis(node);

        for (bytes, tag) in [
            (&b"*zz\r\n"[..], "bad multibulk length"),
            (&b"*1\r\n+hello\r\n"[..], "not a bulk string"),
            (&b"*2\r\n$3\r\nGET\r\n$x\r\n"[..], "bad bulk length"),
            (&b"*1\r\n$99999999999\r\n"[..], "huge bulk length"),
            (&b"*99999999999\r\n"[..], "huge multibulk length"),
        ] {
            expect_error_then_close(port, bytes, tag);
            assert_node_serves(port, tag);
        }

        let mut raw = RawConn::connect(port, secs(5)).expect("connect");
        let mut buf = Vec::new();
        encode_cmd(&[b"GET"], &mut buf);
        expect_error_reply(&mut raw, &buf, "ERR wrong number of arguments", "GET arity");
        buf.clear();
        encode_cmd(&[b"SET", b"k"], &mut buf);
        expect_error_reply(&mut raw, &buf, "ERR wrong number of arguments", "SET arity");
        buf.clear();
        encode_cmd(&[b"NOSUCHCMD", b"x"], &mut buf);
        expect_error_reply(&mut raw, &buf, "ERR unknown command", "unknown command");
        buf.clear();
        encode_cmd(&[b"SET", b"k", b"v", b"IFEQ"], &mut buf);
        expect_error_reply(&mut raw, &buf, "ERR syntax error", "syntax");
        buf.clear();
        encode_cmd(&[b"SET", b"text", b"abc"], &mut buf);
        encode_cmd(&[b"INCR", b"text"], &mut buf);
        raw.send_raw(&buf).expect("send");
        assert_eq!(raw.read().expect("SET"), Resp::Simple("OK".into()));
        match raw.read().expect("INCR") {
            Resp::Error(e) => assert!(e.starts_with("ERR value is not an integer"), "-{e}"),
            other => panic!("INCR of text: {other:?}"),
        }
        assert_node_serves(port, "command errors");

        // A 2 MiB value with the default 1 MiB limit; a 70 KiB key.
        let big = vec![b'x'; 2 << 20];
        buf.clear();
        encode_cmd(&[b"SET", b"big", &big], &mut buf);
        expect_error_reply(&mut raw, &buf, "too large", "oversized value");
        let long_key = vec![b'k'; 70 << 10];
        buf.clear();
        encode_cmd(&[b"SET", &long_key, b"v"], &mut buf);
        expect_error_reply(&mut raw, &buf, "too large", "oversized key");
        assert_eq!(raw.cmd(&["EXISTS", "big"]).expect("EXISTS"), Resp::Int(0));
        assert_node_serves(port, "oversized data");

        // Inline commands work, as in Redis.
        raw.send_raw(b"PING\r\n").expect("send");
        assert_eq!(raw.read().expect("inline"), Resp::Simple("PONG".into()));

        // A client that hangs up in the middle of a command.
        let mut half = RawConn::connect(port, secs(2)).expect("connect");
        half.send_raw(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$10\r\nabc")
            .expect("send");
        drop(half);
        assert_node_serves(port, "half a command");
        assert_eq!(raw.cmd(&["EXISTS", "half"]).expect("EXISTS"), Resp::Int(0));

        let pong: String = q(&mut bystander, &["PING"]);
        assert_eq!(pong, "PONG", "a connected bystander is unaffected");
    }
    // Every node is still up and the cluster still has its leader.
    assert_eq!(c.wait_for_leader(secs(5)), leader);
}
