//! `raftkv up` (item 12) starts a cluster, says how to add a node while it
//! runs (and the recipe works), and stops it and every server on SIGTERM.

use super::*;

/// A process the test started itself, killed and reaped however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills `raftkv up` and the servers it started, whatever happens.
struct UpGuard {
    child: std::process::Child,
    kids: Vec<u32>,
    log: std::path::PathBuf,
    stdout: Arc<Mutex<String>>,
}

impl Drop for UpGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in &self.kids {
            if alive(*pid) {
                signal(*pid, "KILL");
            }
        }
        if thread::panicking() {
            eprintln!(
                "----- raftkv up stdout -----\n{}\n----- stderr -----\n{}",
                self.stdout.lock().map(|s| s.clone()).unwrap_or_default(),
                tail(&self.log, 50)
            );
        }
    }
}

/// Children of `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..."; comm may hold spaces.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// A process that exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A base port P with P..P+2, P+100..P+102 and P+200..P+202 free.
fn free_base_port() -> u16 {
    let seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for _ in 0..200 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Below Linux' ephemeral range, so outgoing connections do not take them.
        let p = 20_000 + ((x >> 33) % 10_000) as u16;
        let all: Option<Vec<std::net::TcpListener>> = [0u16, 100, 200]
            .iter()
            .flat_map(|o| (0..3).map(move |i| p + o + i))
            .map(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
            .collect();
        if all.is_some() {
            return p;
        }
    }
    panic!("no free base port found");
}

#[test]
fn raftkv_up_starts_a_cluster_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = free_base_port();
    let log = tmp.path().join("up.stderr");
    let child = Command::new(BIN)
        .args(["up", "--nodes", "3", "--dir"])
        .arg(tmp.path().join("cluster"))
        .args(["--base-port", &base.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn raftkv up");
    let mut g = UpGuard {
        child,
        kids: Vec::new(),
        log,
        stdout: Arc::new(Mutex::new(String::new())),
    };
    // Keep draining stdout (the live view redraws every second).
    let out = g.child.stdout.take().expect("stdout");
    let sink = g.stdout.clone();
    thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut line = String::new();
        while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
            if let Ok(mut s) = sink.lock() {
                s.push_str(&line);
            }
            line.clear();
        }
    });
    wait_until(
        secs(10),
        "'redis-cli -p' in the output of raftkv up",
        || {
            g.stdout
                .lock()
                .ok()
                .filter(|s| s.contains("redis-cli -p"))
                .map(|_| ())
        },
    );
    let up_pid = g.child.id();
    g.kids = wait_until(secs(5), "raftkv up to start 3 servers", || {
        let kids = children_of(up_pid);
        (kids.len() == 3).then_some(kids)
    });
    let ports: Vec<u16> = (0..3).map(|i| base + i).collect();
    assert!(g
        .stdout
        .lock()
        .expect("lock")
        .contains(&format!("redis-cli -p {base}")));
    wait_until(secs(10), "a leader in the `up` cluster", || {
        stable_leader_among(&ports)
    });
    let mut con = redis_conn(base).expect("connect to node 1");
    let _: String = q(&mut con, &["SET", "up_key", "up_value"]);
    let mut con2 = redis_conn(base + 2).expect("connect to node 3");
    let v: Option<String> = q(&mut con2, &["GET", "up_key"]);
    assert_eq!(v.as_deref(), Some("up_value"));
    drop((con, con2));

    // The banner says how to add a node while it runs; the recipe works,
    // and the added node joins the live view.
    let banner = g.stdout.lock().expect("lock").clone();
    let recipe: String = banner
        .lines()
        .skip_while(|l| !l.starts_with("Add node 4:"))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let server = recipe
        .trim_start_matches("Add node 4:")
        .replace(['\\', '&'], " ");
    let args: Vec<&str> = server.split_whitespace().collect();
    assert!(args.len() > 2, "no add-node recipe in:\n{banner}");
    let _node4 = KillOnDrop(
        Command::new(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node 4 as the banner says"),
    );
    let add = banner
        .lines()
        .find(|l| l.contains("RAFT.NODE ADD 4"))
        .expect("an ADD line");
    let peer = add.split_whitespace().last().expect("peer address");
    let added = wait_until(secs(10), "node 4 is added", || {
        let mut raw = RawConn::connect(base, secs(5)).ok()?;
        raw.set_timeout(secs(30));
        match raw.cmd(&["RAFT.NODE", "ADD", "4", peer]).ok()? {
            Resp::Simple(ok) => Some(ok),
            _ => None,
        }
    });
    assert_eq!(added, "OK");
    wait_until(secs(10), "node 4 in the live view", || {
        let out = g.stdout.lock().ok()?;
        out.lines()
            .rev()
            .take(8)
            .any(|l| l.contains("node 4 [:") && l.contains("voter"))
            .then_some(())
    });

    let t = Instant::now();
    signal(up_pid, "TERM");
    let status = wait_child(&mut g.child, secs(8))
        .unwrap_or_else(|| panic!("raftkv up did not exit within 8 s of SIGTERM"));
    eprintln!("raftkv up stopped in {:?}", t.elapsed());
    assert!(status.success(), "raftkv up exited with {status}");
    let kids = g.kids.clone();
    wait_until(secs(2), "the servers started by `up` to be gone", || {
        kids.iter().all(|&p| !alive(p)).then_some(())
    });
    for p in ports {
        assert!(
            raft_info(p).is_none(),
            "port {p} still answers after raftkv up stopped"
        );
    }
}
