//! `raftkv up`: a local cluster in one command. Starts N `raftkv server`
//! processes on 127.0.0.1, prints how to connect, and shows one live line
//! per node (role, term, commit index, last applied) until Ctrl-C.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::server::RunError;

#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Where the nodes keep their data and logs (default: a new temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Node i serves clients on BASE+i-1, peers on BASE+100+i-1, HTTP on BASE+200+i-1.
    #[arg(long, default_value_t = 7379)]
    pub base_port: u16,
    /// Start every node with --lease-reads (thesis §6.4.1; see
    /// `raftkv server --help`).
    #[arg(long)]
    pub lease_reads: bool,
}

fn up_error(msg: String) -> RunError {
    RunError::Config(crate::config::ConfigError::Invalid(msg))
}

pub async fn run(
    args: UpArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    if args.nodes == 0 || args.nodes > 9 {
        return Err(up_error("--nodes must be between 1 and 9".into()));
    }
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("raftkv-up-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| up_error(format!("--dir: cannot create {}: {e}", dir.display())))?;
    let exe =
        std::env::current_exe().map_err(|e| up_error(format!("cannot find own binary: {e}")))?;
    let port = |offset: u16, i: u64| {
        args.base_port
            .saturating_add(offset)
            .saturating_add(i as u16 - 1)
    };
    let cluster: Vec<String> = (1..=args.nodes)
        .map(|i| format!("{i}=127.0.0.1:{}", port(100, i)))
        .collect();
    let cluster = cluster.join(",");

    let mut children: Vec<(u64, Child)> = Vec::new();
    for i in 1..=args.nodes {
        let log_path = dir.join(format!("node{i}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| up_error(format!("cannot create {}: {e}", log_path.display())))?;
        // The same command line, saved so an operator can restart the node
        // by hand after killing it (`sh DIR/nodeN.cmd`).
        let lease = if args.lease_reads {
            " --lease-reads"
        } else {
            ""
        };
        let cmdline = format!(
            "{} server --id {i} --cluster {cluster} --data-dir {} --client-addr 127.0.0.1:{} --http-addr 127.0.0.1:{}{lease}\n",
            exe.display(),
            dir.join(format!("node{i}")).display(),
            port(0, i),
            port(200, i)
        );
        let _ = std::fs::write(dir.join(format!("node{i}.cmd")), cmdline);
        let child = Command::new(&exe)
            .arg("server")
            .args(["--id", &i.to_string()])
            .args(["--cluster", &cluster])
            .arg("--data-dir")
            .arg(dir.join(format!("node{i}")))
            .args(["--client-addr", &format!("127.0.0.1:{}", port(0, i))])
            .args(["--http-addr", &format!("127.0.0.1:{}", port(200, i))])
            .args(args.lease_reads.then_some("--lease-reads"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| up_error(format!("cannot start node {i}: {e}")))?;
        children.push((i, child));
    }

    println!(
        "raftkv: {} nodes on 127.0.0.1, data and logs in {}",
        args.nodes,
        dir.display()
    );
    for i in 1..=args.nodes {
        println!(
            "  node {i}: redis-cli -p {}   (status: http://127.0.0.1:{}/status)",
            port(0, i),
            port(200, i)
        );
    }
    println!("Any node accepts any command. Press Ctrl-C to stop.");
    // Thesis chapter 4 from the command line: how to grow and shrink this
    // cluster while it runs. A node added this way, on the ports the
    // pattern gives it, shows up in the view below.
    let next = args.nodes + 1;
    if next <= 9 {
        println!(
            "Add node {next}:    {} server --id {next} --join 127.0.0.1:{} --data-dir {} \\\n                 --client-addr 127.0.0.1:{} --peer-listen 127.0.0.1:{} --http-addr 127.0.0.1:{} &\n              redis-cli -p {} RAFT.NODE ADD {next} 127.0.0.1:{}",
            exe.display(),
            port(0, 1),
            dir.join(format!("node{next}")).display(),
            port(0, next),
            port(100, next),
            port(200, next),
            port(0, 1),
            port(100, next),
        );
    }
    println!(
        "Remove node N:  redis-cli -p {} RAFT.NODE REMOVE N     Move leadership: redis-cli -p {} RAFT.TRANSFER [N]\n",
        port(0, 1),
        port(0, 1)
    );

    let mut nodes: Vec<(u64, u16)> = (1..=args.nodes).map(|i| (i, port(0, i))).collect();
    tokio::pin!(shutdown);
    let mut first = true;
    let mut drawn = 0;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(Duration::from_millis(if first { 300 } else { 1000 })) => {}
        }
        // Members added while it runs (on the pattern's ports) join the view.
        for id in members_seen(&nodes).await {
            if id <= 9 && !nodes.iter().any(|(n, _)| *n == id) {
                nodes.push((id, port(0, id)));
            }
        }
        let mut lines = Vec::new();
        for (i, _) in nodes.iter().filter(|(n, _)| *n > args.nodes) {
            lines.push(node_line(*i, port(0, *i)).await);
        }
        let mut started = Vec::new();
        for (i, child) in children.iter_mut() {
            let line = match child.try_wait() {
                Ok(Some(status)) => format!(
                    "node {i}: exited ({status}); see {}",
                    dir.join(format!("node{i}.log")).display()
                ),
                _ => match nodes.iter().find(|(n, _)| n == i) {
                    Some((_, p)) => node_line(*i, *p).await,
                    None => String::new(),
                },
            };
            started.push(line);
        }
        started.append(&mut lines);
        let lines = started;
        let mut out = std::io::stdout().lock();
        if !first {
            // Redraw in place: move the cursor up over the previous block.
            let _ = write!(out, "\x1b[{}A", drawn);
        }
        drawn = lines.len();
        for l in &lines {
            let _ = writeln!(out, "\x1b[2K{l}");
        }
        let _ = out.flush();
        first = false;
    }
    println!("\nstopping {} nodes...", children.len());
    for (_, child) in children.iter_mut() {
        if let Some(pid) = child.id() {
            // Graceful: SIGTERM, as an operator would.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for (i, child) in children.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(6), child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("node {i} did not stop in time; killing it");
                let _ = child.kill().await;
            }
        }
    }
    println!("stopped. Data kept in {}", dir.display());
    Ok(())
}

/// The voters and learners the first node that answers knows of.
async fn members_seen(nodes: &[(u64, u16)]) -> Vec<u64> {
    for (_, port) in nodes {
        if let Some(info) = raft_info(*port).await {
            let list = |k: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}:")))
                    .unwrap_or("")
                    .trim()
                    .split(',')
                    .filter_map(|id| id.parse::<u64>().ok())
                    .collect::<Vec<_>>()
            };
            let mut ids = list("voters");
            ids.extend(list("learners"));
            return ids;
        }
    }
    Vec::new()
}

/// One live line for a node, from its `RAFT.INFO`.
async fn node_line(id: u64, port: u16) -> String {
    match raft_info(port).await {
        Some(info) => {
            let f = |k: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}:")))
                    .unwrap_or("?")
                    .trim()
                    .to_string()
            };
            format!(
                "node {id} [:{port}]  {:<9} term {:<4} leader {:<2} commit {:<8} applied {:<8} {}",
                f("role"),
                f("term"),
                f("leader_id"),
                f("commit_index"),
                f("last_applied"),
                f("membership")
            )
        }
        None => format!("node {id} [:{port}]  (not answering yet)"),
    }
}

async fn raft_info(port: u16) -> Option<String> {
    let address = format!("127.0.0.1:{port}");
    tokio::time::timeout(
        Duration::from_millis(500),
        crate::server::raft_info_at(&address),
    )
    .await
    .ok()?
    .ok()
}
