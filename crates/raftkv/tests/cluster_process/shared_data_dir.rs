//! Two processes on one data dir (item 16): a second server on a data dir in
//! use is refused.

use super::*;

#[test]
fn a_second_server_on_a_data_dir_in_use_is_refused() {
    let c = Cluster::start();
    let leader = c.wait_for_leader(secs(5));
    let f = c.followers(leader)[0];
    let n = &c.nodes[f];
    let p = free_ports(2);
    let cluster = c
        .nodes
        .iter()
        .map(|n| format!("{}=127.0.0.1:{}", n.id, n.peer_port))
        .collect::<Vec<_>>()
        .join(",");
    let mut second = Command::new(BIN)
        .arg("server")
        .args(["--id", &n.id.to_string(), "--cluster", &cluster])
        .arg("--data-dir")
        .arg(&n.data_dir)
        .args(["--client-addr", &format!("127.0.0.1:{}", p[0])])
        .args(["--peer-listen", &format!("127.0.0.1:{}", p[1])])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_child(&mut second, secs(5));
    if status.is_none() {
        let _ = second.kill();
        let _ = second.wait();
        panic!(
            "a second server on {} (in use by node {}) is still running after 5 s",
            n.data_dir.display(),
            n.id
        );
    }
    let mut err = String::new();
    if let Some(mut s) = second.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    assert!(
        err.lines().any(|l| l.starts_with("raftkv:")),
        "one clear line expected: {err}"
    );
}
