//! `--requirepass` (issue 17): AUTH, HELLO ... AUTH, NOAUTH and WRONGPASS,
//! compared reply for reply with a `redis-server --requirepass` (skipped
//! without redis-server), and redis-cli `-a`.

use super::*;

/// A one-node raftkv with a password, killed on drop.
struct Guarded {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_raftkv(password: &str) -> Guarded {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(2);
    let log = std::fs::File::create(dir.path().join("n1.stderr")).expect("log");
    let child = Command::new(BIN)
        .args(["server", "--id", "1"])
        .args(["--cluster", &format!("1=127.0.0.1:{}", ports[0])])
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .args(["--client-addr", &format!("127.0.0.1:{}", ports[1])])
        .args(["--requirepass", password])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start raftkv");
    let port = ports[1];
    // Up and leading: an authenticated write succeeds.
    wait_until(secs(15), "the node accepts an authenticated write", || {
        let mut c = RawConn::connect(port, secs(1)).ok()?;
        c.cmd(&["AUTH", password]).ok()?;
        (c.cmd(&["SET", "up", "1"]).ok()? == Resp::Simple("OK".into())).then_some(())
    });
    Guarded {
        child,
        port,
        _dir: dir,
    }
}

const STEPS: &[&[&str]] = &[
    &["GET", "a"],
    &["SET", "a", "1"],
    &["PING"],
    &["HELLO", "3"],
    &["HELLO", "3", "AUTH", "default", "wrong"],
    &["AUTH", "wrong"],
    &["AUTH", "a", "b", "c"],
    &["AUTH"],
    &["AUTH", "bob", "s3cret"],
    &["NOSUCH", "x"],
    &["PING"],
    &["AUTH", "s3cret"],
    &["PING"],
    &["AUTH", "default", "s3cret"],
    // A wrong AUTH after a good one: refused, still authenticated.
    &["AUTH", "wrong"],
    &["SET", "a", "1"],
    &["GET", "a"],
];

#[test]
fn requirepass_auth_and_errors_match_redis_server() {
    let ours = start_raftkv("s3cret");
    let mut a = RawConn::connect(ours.port, secs(5)).expect("connect");
    let theirs = have("redis-server").then(|| RedisServer::start(&["--requirepass", "s3cret"]));
    let mut b = theirs
        .as_ref()
        .map(|t| RawConn::connect(t.port, secs(5)).expect("connect to redis-server"));
    let mut got = Vec::new();
    for step in STEPS {
        let reply = a.cmd(step).expect("ours");
        if let Some(b) = b.as_mut() {
            assert_eq!(reply, b.cmd(step).expect("theirs"), "{step:?}");
        }
        got.push(reply);
    }
    // Whether or not redis-server was there: the refusals and the grant.
    assert_eq!(
        got[0],
        Resp::Error("NOAUTH Authentication required.".into())
    );
    assert!(matches!(&got[5], Resp::Error(e) if e.starts_with("WRONGPASS")));
    assert_eq!(got[11], Resp::Simple("OK".into()));
    assert_eq!(got[16], Resp::Bulk(b"1".to_vec()));

    // HELLO ... AUTH authenticates and switches protocol at once.
    let mut c = RawConn::connect(ours.port, secs(5)).expect("connect");
    let hello = c
        .cmd(&["HELLO", "2", "AUTH", "default", "s3cret"])
        .expect("HELLO");
    assert!(matches!(hello, Resp::Array(_)), "{hello:?}");
    assert_eq!(
        c.cmd(&["GET", "a"]).expect("GET"),
        Resp::Bulk(b"1".to_vec())
    );

    // redis-cli -a works (when installed).
    if have("redis-cli") {
        let out = run_bounded(
            Command::new("redis-cli")
                .args([
                    "-p",
                    &ours.port.to_string(),
                    "-a",
                    "s3cret",
                    "--no-auth-warning",
                ])
                .args(["GET", "a"]),
            secs(10),
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
        let out = run_bounded(
            Command::new("redis-cli").args(["-p", &ours.port.to_string(), "GET", "a"]),
            secs(10),
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("NOAUTH"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
