//! A harness for black-box tests that run real `raftkv server` processes on
//! 127.0.0.1: free ports, temp data dirs, captured stderr, bounded waits, a
//! tiny RESP client for raw byte-level checks, and a `Drop` that always kills
//! and reaps every child (printing their logs when the test failed).

#![allow(dead_code)]

pub mod proxy;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_raftkv");

/// How often bounded waits poll.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `f` every 20 ms until it returns `Some`, or panics after `timeout`
/// naming `what` was awaited.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    match try_wait_until(timeout, &mut f) {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Like [`wait_until`] but returns `None` on timeout.
pub fn try_wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// `n` distinct ports that were free a moment ago: all bound at once (so they
/// differ), then released.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// Sends a signal with the `kill` command (no libc here).
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run kill");
    // The process may already be gone; that is not the harness' business.
    let _ = status;
}

/// Waits for `child` to exit, at most `timeout`; `None` if it is still running.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    try_wait_until(timeout, || child.try_wait().ok().flatten())
}

/// Runs a command to completion with a bound; kills it on timeout and panics.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Drain both pipes in threads so a chatty child cannot block on them.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = match wait_child(&mut child, timeout) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
    };
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// The last `max_lines` lines of a file (for failure reports).
pub fn tail(path: &Path, max_lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read: {e}>"));
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join("\n")
}

// ---------------------------------------------------------------------------
// A minimal RESP client for byte-level checks.

/// One RESP reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Resp>),
    Map(Vec<(Resp, Resp)>),
    /// Any other RESP3 scalar, as text.
    Other(String),
}

impl Resp {
    pub fn text(&self) -> String {
        match self {
            Resp::Simple(s) | Resp::Error(s) | Resp::Other(s) => s.clone(),
            Resp::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            Resp::Int(n) => n.to_string(),
            other => format!("{other:?}"),
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Resp::Error(_))
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode_cmd(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("line without CRLF: {:?}", String::from_utf8_lossy(&line)),
        ));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads exactly one reply (RESP2, plus the RESP3 types a server may send).
pub fn read_reply(r: &mut impl BufRead) -> io::Result<Resp> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    let int = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| bad(format!("bad integer in {line:?}")))
    };
    Ok(match kind {
        "+" => Resp::Simple(rest.to_string()),
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Int(int(rest)?),
        "_" => Resp::Nil,
        "$" | "=" => {
            let n = int(rest)?;
            if n < 0 {
                return Ok(Resp::Nil);
            }
            let mut data = vec![0u8; n as usize + 2];
            r.read_exact(&mut data)?;
            if !data.ends_with(b"\r\n") {
                return Err(bad("bulk string without CRLF".into()));
            }
            data.truncate(n as usize);
            if kind == "=" {
                // Verbatim: "txt:" prefix.
                data.drain(..data.len().min(4));
            }
            Resp::Bulk(data)
        }
        "*" | "~" | ">" => {
            let n = int(rest)?;
            if n < 0 {
                return Ok(Resp::Nil);
            }
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                items.push(read_reply(r)?);
            }
            Resp::Array(items)
        }
        "%" | "|" => {
            let n = int(rest)?;
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let k = read_reply(r)?;
                let v = read_reply(r)?;
                items.push((k, v));
            }
            if kind == "|" {
                // An attribute precedes the real reply.
                return read_reply(r);
            }
            Resp::Map(items)
        }
        "#" | "," | "(" => Resp::Other(rest.to_string()),
        _ => return Err(bad(format!("unexpected reply line {line:?}"))),
    })
}

/// A raw RESP connection with read/write timeouts.
pub struct RawConn {
    pub reader: BufReader<TcpStream>,
    pub stream: TcpStream,
}

impl RawConn {
    pub fn connect(port: u16, timeout: Duration) -> io::Result<RawConn> {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            reader: BufReader::new(stream.try_clone()?),
            stream,
        })
    }

    pub fn set_timeout(&self, timeout: Duration) {
        let _ = self.stream.set_read_timeout(Some(timeout));
        let _ = self.stream.set_write_timeout(Some(timeout));
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn read(&mut self) -> io::Result<Resp> {
        read_reply(&mut self.reader)
    }

    pub fn cmd(&mut self, args: &[&str]) -> io::Result<Resp> {
        let mut buf = Vec::new();
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        encode_cmd(&args, &mut buf);
        self.send_raw(&buf)?;
        self.read()
    }

    /// True when the server closes the connection within `timeout` (EOF or
    /// reset), false when it stays open.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.set_timeout(timeout);
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    }
}

/// `field:value` lines of `RAFT.INFO` / `INFO raft`.
#[derive(Debug, Clone)]
pub struct RaftInfo {
    pub fields: HashMap<String, String>,
}

impl RaftInfo {
    pub fn parse(text: &str) -> RaftInfo {
        let fields = text
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RaftInfo { fields }
    }

    pub fn num(&self, k: &str) -> u64 {
        self.fields
            .get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("RAFT.INFO field {k} missing or not a number: {self:?}"))
    }

    pub fn role(&self) -> &str {
        self.fields.get("role").map(String::as_str).unwrap_or("?")
    }
}

/// `RAFT.INFO` from the node listening on `port`, or `None` if it does not
/// answer within a short bound.
pub fn raft_info(port: u16) -> Option<RaftInfo> {
    let mut c = RawConn::connect(port, Duration::from_millis(1000)).ok()?;
    match c.cmd(&["RAFT.INFO"]).ok()? {
        Resp::Bulk(b) => Some(RaftInfo::parse(&String::from_utf8_lossy(&b))),
        _ => None,
    }
}

/// Of the nodes serving clients on `ports`: the position of the one that
/// leads, if all of them answer `RAFT.INFO` and agree on it and its term.
pub fn stable_leader_among(ports: &[u16]) -> Option<usize> {
    let infos: Vec<RaftInfo> = ports.iter().map(|&p| raft_info(p)).collect::<Option<_>>()?;
    let leaders: Vec<usize> = (0..infos.len())
        .filter(|&k| infos[k].role() == "leader")
        .collect();
    let [l] = leaders.as_slice() else {
        return None;
    };
    let (id, term) = (infos[*l].num("node_id"), infos[*l].num("term"));
    infos
        .iter()
        .all(|x| x.num("leader_id") == id && x.num("term") == term)
        .then_some(*l)
}

// ---------------------------------------------------------------------------
// The cluster.

/// Timing and limits given to every node.
#[derive(Debug, Clone)]
pub struct Opts {
    pub heartbeat_ms: u64,
    pub election_timeout_ms: &'static str,
    pub request_timeout_ms: u64,
    pub extra: Vec<String>,
    /// Route all peer traffic through a [`proxy::Network`] (see
    /// [`Cluster::net`]), so the test can partition nodes.
    pub peer_proxy: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            heartbeat_ms: 50,
            election_timeout_ms: "300-600",
            request_timeout_ms: 3000,
            extra: Vec::new(),
            peer_proxy: false,
        }
    }
}

pub struct Node {
    pub id: u64,
    pub client_port: u16,
    /// Where the node accepts peer connections.
    pub peer_port: u16,
    /// The port other nodes dial, as named in `--cluster`: `peer_port`
    /// itself, or the node's front port on the proxy.
    pub cluster_port: u16,
    pub http_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// `--join` addresses, for a node that joins the running cluster
    /// ([`Cluster::join_node`]) instead of being in `--cluster`.
    pub join: Option<String>,
}

impl Node {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub opts: Opts,
    cluster_arg: String,
    /// The peer proxy, when `Opts::peer_proxy` is set. Dropped after the
    /// children are killed (`Drop` kills them first).
    pub net: Option<proxy::Network>,
    // Last field: removed after the children are gone.
    pub tmp: tempfile::TempDir,
}

enum StartFailure {
    /// A port was taken between choosing and binding it: try other ports.
    Bind(String),
    Other(String),
}

impl Cluster {
    /// A 3-node cluster with a leader every node agrees on.
    pub fn start() -> Cluster {
        Cluster::start_with(3, Opts::default())
    }

    pub fn start_with(n: usize, opts: Opts) -> Cluster {
        let mut last = String::new();
        for _attempt in 0..4 {
            let ports = free_ports(3 * n);
            let tmp = tempfile::Builder::new()
                .prefix("raftkv-proc-")
                .tempdir()
                .expect("tempdir");
            let net = opts.peer_proxy.then(|| {
                let peer_ports: Vec<u16> = (0..n).map(|i| ports[3 * i + 1]).collect();
                proxy::Network::start(&peer_ports).expect("start the peer proxy")
            });
            let nodes: Vec<Node> = (0..n)
                .map(|i| Node {
                    id: i as u64 + 1,
                    client_port: ports[3 * i],
                    peer_port: ports[3 * i + 1],
                    cluster_port: net
                        .as_ref()
                        .map_or(ports[3 * i + 1], |net| net.front_port(i)),
                    http_port: ports[3 * i + 2],
                    data_dir: tmp.path().join(format!("n{}", i + 1)),
                    log: tmp.path().join(format!("n{}.stderr", i + 1)),
                    child: None,
                    join: None,
                })
                .collect();
            let cluster_arg = nodes
                .iter()
                .map(|n| format!("{}=127.0.0.1:{}", n.id, n.cluster_port))
                .collect::<Vec<_>>()
                .join(",");
            let mut c = Cluster {
                nodes,
                opts: opts.clone(),
                cluster_arg,
                net,
                tmp,
            };
            for i in 0..n {
                c.spawn(i);
            }
            match c.wait_ready(Duration::from_secs(15)) {
                Ok(()) => return c,
                Err(StartFailure::Bind(msg)) => {
                    eprintln!("cluster start: a port was taken ({msg}); retrying with new ports");
                    last = msg;
                    // Drop kills and reaps this attempt.
                }
                Err(StartFailure::Other(msg)) => {
                    panic!("cluster did not start: {msg}\n{}", c.logs());
                }
            }
        }
        panic!("cluster did not start after 4 attempts; last bind failure: {last}");
    }

    /// Starts (or restarts) node `i` on its data dir and ports. Its stderr is
    /// appended to its log file, so earlier runs stay visible.
    pub fn spawn(&mut self, i: usize) {
        let cluster = self.cluster_arg.clone();
        self.spawn_with_cluster(i, Some(&cluster));
    }

    /// Like [`Cluster::spawn`], with `--cluster` replaced (or left out).
    pub fn spawn_with_cluster(&mut self, i: usize, cluster: Option<&str>) {
        let o = &self.opts;
        let n = &mut self.nodes[i];
        assert!(n.child.is_none(), "node {} is already running", n.id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .expect("open log");
        let mut cmd = Command::new(BIN);
        cmd.arg("server").args(["--id", &n.id.to_string()]);
        if let Some(join) = &n.join {
            cmd.args(["--join", join])
                .args(["--peer-listen", &format!("127.0.0.1:{}", n.peer_port)]);
        } else if let Some(c) = cluster {
            cmd.args(["--cluster", c]);
        }
        cmd.arg("--data-dir")
            .arg(&n.data_dir)
            .args(["--client-addr", &format!("127.0.0.1:{}", n.client_port)]);
        if n.cluster_port != n.peer_port {
            // Behind the proxy: listen on the real port, be dialled on the
            // proxy's (the `--cluster` list, identical on every node).
            cmd.args(["--peer-listen", &format!("127.0.0.1:{}", n.peer_port)]);
        }
        cmd.args(["--http-addr", &format!("127.0.0.1:{}", n.http_port)])
            .args(["--heartbeat-ms", &o.heartbeat_ms.to_string()])
            .args(["--election-timeout-ms", o.election_timeout_ms])
            .args(["--request-timeout-ms", &o.request_timeout_ms.to_string()])
            .args(&o.extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        n.child = Some(cmd.spawn().expect("spawn raftkv server"));
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), StartFailure> {
        let deadline = Instant::now() + timeout;
        loop {
            for n in &mut self.nodes {
                if let Some(child) = n.child.as_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        let log = tail(&n.log, 20);
                        let msg = format!("node {} exited early ({status}):\n{log}", n.id);
                        return Err(if log.contains("cannot listen") {
                            StartFailure::Bind(msg)
                        } else {
                            StartFailure::Other(msg)
                        });
                    }
                }
            }
            if self.stable_leader().is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::Other(format!(
                    "no leader that all nodes agree on within {timeout:?}"
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Starts a new node (the next id) with an empty data dir and
    /// `--join` pointing at every current node's client port; returns its
    /// index. It waits to be added (`RAFT.NODE ADD`).
    pub fn join_node(&mut self) -> usize {
        let ports = free_ports(3);
        let i = self.nodes.len();
        let join = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",");
        self.nodes.push(Node {
            id: i as u64 + 1,
            client_port: ports[0],
            peer_port: ports[1],
            cluster_port: ports[1],
            http_port: ports[2],
            data_dir: self.tmp.path().join(format!("n{}", i + 1)),
            log: self.tmp.path().join(format!("n{}.stderr", i + 1)),
            child: None,
            join: Some(join),
        });
        self.spawn_with_cluster(i, None);
        i
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect()
    }

    pub fn info(&self, i: usize) -> Option<RaftInfo> {
        raft_info(self.nodes[i].client_port)
    }

    /// The index of the leader, if every running node answers and names it
    /// (same term), and it says it leads.
    pub fn stable_leader(&self) -> Option<usize> {
        let running = self.running();
        let ports: Vec<u16> = running.iter().map(|&i| self.nodes[i].client_port).collect();
        stable_leader_among(&ports).map(|k| running[k])
    }

    pub fn wait_for_leader(&self, timeout: Duration) -> usize {
        wait_until(
            timeout,
            "a leader that every running node agrees on",
            || self.stable_leader(),
        )
    }

    /// Indexes of running nodes other than `leader`.
    pub fn followers(&self, leader: usize) -> Vec<usize> {
        self.running()
            .into_iter()
            .filter(|&i| i != leader)
            .collect()
    }

    /// The peer proxy; panics unless the cluster was started with
    /// `Opts::peer_proxy`.
    pub fn net(&self) -> &proxy::Network {
        self.net
            .as_ref()
            .expect("the cluster was started without Opts::peer_proxy")
    }

    /// SIGSTOP node `i` (it keeps its sockets; nothing it owns runs).
    pub fn pause(&self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            signal(pid, "STOP");
        }
    }

    /// SIGCONT node `i`.
    pub fn resume(&self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            signal(pid, "CONT");
        }
    }

    /// SIGKILL node `i` and reap it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM node `i`; its exit status if it exits within `timeout`,
    /// otherwise it is SIGKILLed and `None` is returned.
    pub fn sigterm(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.nodes[i].child.take()?;
        signal(child.id(), "TERM");
        match wait_child(&mut child, timeout) {
            Some(s) => Some(s),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }

    /// A redis-crate connection to node `i`.
    pub fn redis(&self, i: usize) -> redis::Connection {
        redis_conn(self.nodes[i].client_port)
            .unwrap_or_else(|e| panic!("connect to node {}: {e}", self.nodes[i].id))
    }

    pub fn raw(&self, i: usize) -> RawConn {
        RawConn::connect(self.nodes[i].client_port, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect to node {}: {e}", self.nodes[i].id))
    }

    /// Every node's stderr (last lines), for failure reports.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            s.push_str(&format!(
                "----- node {} (client :{}, peer :{}, in --cluster :{}, http :{}) stderr -----\n{}\n",
                n.id,
                n.client_port,
                n.peer_port,
                n.cluster_port,
                n.http_port,
                tail(&n.log, 120)
            ));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// A redis-crate connection with bounded connect/read/write times.
pub fn redis_conn(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let con = client.get_connection_with_timeout(Duration::from_secs(2))?;
    con.set_read_timeout(Some(Duration::from_secs(10)))?;
    con.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(con)
}
