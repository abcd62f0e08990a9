//! redis-py (item 10) works with its default settings (skipped without python3
//! and redis-py).

use super::*;

#[test]
fn redis_py_with_default_settings_works() {
    let has_redis_py = Command::new("python3")
        .args(["-c", "import redis"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !has_redis_py {
        eprintln!("SKIPPED: python3 with redis-py is not available (pip install redis)");
        return;
    }
    let c = Cluster::start();
    let leader = c.wait_for_leader(secs(5));
    let follower = c.followers(leader)[0];
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/redis_py_client.py");
    let out = run_bounded(
        Command::new("python3").arg(script).args([
            c.nodes[follower].client_port.to_string(),
            c.nodes[leader].client_port.to_string(),
        ]),
        secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "redis_py_client.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!("{stdout}");
}
