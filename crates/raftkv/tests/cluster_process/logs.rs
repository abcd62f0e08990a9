//! Logs written to a file carry no ANSI escape codes (issue 17): every
//! node's stderr here is a file, as under `raftkv up`, systemd or a log
//! shipper.

use super::*;

#[test]
fn a_log_written_to_a_file_has_no_escape_codes() {
    let c = Cluster::start();
    let leader = c.wait_for_leader(secs(5));
    let mut con = c.redis(leader);
    let _: String = q(&mut con, &["SET", "logs", "plain"]);
    for n in &c.nodes {
        let text = std::fs::read(&n.log).expect("read the node's log");
        assert!(
            String::from_utf8_lossy(&text).contains("INFO"),
            "node {} logged nothing useful:\n{}",
            n.id,
            String::from_utf8_lossy(&text)
        );
        assert!(
            !text.contains(&0x1b),
            "node {}'s log has escape codes:\n{}",
            n.id,
            String::from_utf8_lossy(&text)
        );
    }
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let c = Cluster::start_with(
        3,
        Opts {
            extra: vec!["--log-format".into(), "json".into()],
            ..Opts::default()
        },
    );
    let leader = c.wait_for_leader(secs(5));
    let mut con = c.redis(leader);
    let _: String = q(&mut con, &["SET", "logs", "json"]);
    for n in &c.nodes {
        let text = std::fs::read_to_string(&n.log).expect("read the node's log");
        let mut lines = 0;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("node {}: not JSON ({e}): {line}", n.id));
            assert!(
                v.get("level").is_some() && v.get("fields").is_some(),
                "{line}"
            );
            lines += 1;
        }
        assert!(lines > 0, "node {} logged nothing", n.id);
    }
}
