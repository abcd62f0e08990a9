//! HTTP (item 11): `/healthz`, `/status` and `/metrics` answer, unknown pages
//! are 404.

use super::*;

/// A plain HTTP/1.1 GET: (status code, headers, body).
fn http_get(port: u16, path: &str) -> (u16, String, String) {
    http_request(port, "GET", path)
}

pub(crate) fn http_request(port: u16, method: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect http");
    s.set_read_timeout(Some(secs(5))).expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read http response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("header/body separator");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name).then(|| v.parse().ok()).flatten()
    })
}

#[test]
fn the_http_endpoints_answer() {
    let c = Cluster::start();
    let leader = c.wait_for_leader(secs(5));
    let follower = c.followers(leader)[0];
    let mut con = c.redis(follower);
    for i in 0..10 {
        let _: String = q(&mut con, &["SET", &format!("h{i}"), "v"]);
    }
    let _: Option<String> = q(&mut con, &["GET", "h1"]);
    // Progress counters are published at most once per Raft tick.
    let commit = wait_until(secs(2), "commit_index >= 11 (no-op + 10 SETs)", || {
        c.info(leader)
            .map(|i| i.num("commit_index"))
            .filter(|&ci| ci >= 11)
    });

    for i in 0..3 {
        let port = c.nodes[i].http_port;
        let (code, _, body) = http_get(port, "/healthz");
        assert_eq!(code, 200, "/healthz of node {}", i + 1);
        assert_eq!(body.trim(), "ok");

        // A follower learns the commit index with the next heartbeat.
        let (code, head, body) = wait_until(secs(3), "/status to show the commit index", || {
            let (code, head, body) = http_get(port, "/status");
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (v["commit_index"].as_u64()? >= commit).then_some((code, head, body))
        });
        assert_eq!(code, 200);
        assert!(
            head.to_ascii_lowercase().contains("application/json"),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"));
        let role = v["role"].as_str().expect("role");
        let want_role = if i == leader { "leader" } else { "follower" };
        assert_eq!(role, want_role, "/status of node {}: {body}", i + 1);
        let term = v["term"].as_u64().expect("term");
        assert!(term >= 1);
        let ci = v["commit_index"].as_u64().expect("commit_index");
        assert!(ci >= 11, "commit_index {ci} after 10 writes (+ no-op)");

        let (code, head, body) = http_get(port, "/metrics");
        assert_eq!(code, 200);
        assert!(head.to_ascii_lowercase().contains("text/plain"), "{head}");
        assert!(body.contains("raftkv_requests"), "/metrics: {body}");
        assert!(body.contains("raftkv_raft_term"), "/metrics: {body}");
        let m_term = metric(&body, "raftkv_raft_term").expect("raftkv_raft_term sample");
        assert_eq!(m_term as u64, term, "metrics term = status term");
        if i == follower {
            assert!(
                body.lines()
                    .any(|l| l.starts_with("raftkv_requests") && l.contains("set")),
                "SETs via node {} are counted: {body}",
                i + 1
            );
        }

        let (code, _, _) = http_get(port, "/no-such-page");
        assert_eq!(code, 404);
    }
}
