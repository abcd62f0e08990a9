//! Bad flags (item 8): `raftkv server` with a bad flag exits non-zero with one
//! clear line.

use super::*;

#[test]
fn bad_flags_exit_non_zero_with_one_clear_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ports = free_ports(4);
    let cluster = format!(
        "1=127.0.0.1:{},2=127.0.0.1:{},3=127.0.0.1:{}",
        ports[0], ports[1], ports[2]
    );
    let client = format!("127.0.0.1:{}", ports[3]);
    let data = tmp.path().join("d");
    let data = data.to_str().expect("utf-8 path");
    let a_file = tmp.path().join("a_file");
    std::fs::write(&a_file, b"not a dir").expect("write");
    let a_file = a_file.to_str().expect("utf-8 path");
    let under_file = format!("{a_file}/sub");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_addr = busy.local_addr().expect("addr").to_string();

    let base_at = |id: &str, dir: &str, client: &str| -> Vec<String> {
        [
            "server",
            "--id",
            id,
            "--cluster",
            &cluster,
            "--data-dir",
            dir,
            "--client-addr",
            client,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let base = |id: &str, dir: &str| base_at(id, dir, &client);
    let with = |mut v: Vec<String>, extra: &[&str]| {
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("unknown id", base("4", data), "4"),
        (
            "unknown id with --peer-listen",
            with(base("4", data), &["--peer-listen", "127.0.0.1:0"]),
            "not in --cluster",
        ),
        (
            "malformed client address",
            base_at("1", data, "localhost"),
            "host:port",
        ),
        (
            "client port out of range",
            base_at("1", data, "127.0.0.1:99999"),
            "host:port",
        ),
        (
            "malformed cluster",
            vec![
                "server".into(),
                "--id".into(),
                "1".into(),
                "--cluster".into(),
                "1=127.0.0.1".into(),
                "--data-dir".into(),
                data.into(),
            ],
            "--cluster",
        ),
        (
            "unwritable data dir",
            base("1", "/proc/forbidden/raftkv"),
            "/proc/forbidden",
        ),
        ("data dir is a file", base("1", a_file), "a_file"),
        ("data dir under a file", base("1", &under_file), "a_file"),
        (
            "missing --id",
            vec![
                "server".into(),
                "--cluster".into(),
                cluster.clone(),
                "--data-dir".into(),
                data.into(),
            ],
            "--id",
        ),
        (
            "missing --data-dir",
            vec![
                "server".into(),
                "--id".into(),
                "1".into(),
                "--cluster".into(),
                cluster.clone(),
            ],
            "--data-dir",
        ),
        (
            "bad election timeout",
            with(base("1", data), &["--election-timeout-ms", "600-300"]),
            "timeout",
        ),
        (
            "client port in use",
            base_at("1", data, &busy_addr),
            "cannot listen",
        ),
    ];
    let mut failures = Vec::new();
    for (what, args, needle) in &cases {
        let out = run_bounded(
            Command::new(BIN).args(args).env("RUST_BACKTRACE", "1"),
            secs(10),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ours: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("raftkv:"))
            .collect();
        let problem = if out.status.success() {
            Some("exited 0".to_string())
        } else if stderr.contains("panicked") || stderr.contains("backtrace") {
            Some("panicked".to_string())
        } else if ours.len() != 1 {
            Some(format!("{} lines start with 'raftkv:'", ours.len()))
        } else if !ours[0].contains(needle) {
            Some(format!("the line does not mention {needle:?}"))
        } else {
            None
        };
        match problem {
            Some(p) => failures.push(format!(
                "{what}: {p} (status {}); stderr:\n{stderr}",
                out.status
            )),
            None => eprintln!("{what}: {}", ours[0]),
        }
    }
    drop(busy);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
