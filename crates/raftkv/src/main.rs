//! The `raftkv` binary: `raftkv server` runs one node, `raftkv up` a local
//! cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use raftkv::config::{FileSettings, LogFormat, ServerConfig};

/// mimalloc instead of glibc's malloc: a server allocates and frees small
/// buffers for every request (RESP arguments, log entries, messages, map
/// nodes), and under load glibc's allocator took about a fifth of the
/// leader's CPU. Measured before and after in docs/benchmarks.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "raftkv",
    version,
    about = "A replicated key-value store on Raft that speaks the Redis protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of a cluster.
    Server(Box<ServerArgs>),
    /// Start a local cluster on 127.0.0.1 and show it live, until Ctrl-C.
    Up(raftkv::up::UpArgs),
    /// Deterministic simulation: many seeded runs of the Raft cores with
    /// faults, checking the paper's invariants and linearizability.
    Sim(raftkv_sim::cli::SimArgs),
    /// Closed-loop load generator (RESP for raftkv and redis, etcd's JSON
    /// gateway for etcd): ops/s and a latency histogram, one JSON line.
    Bench(raftkv::bench::BenchArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// This node's id (a positive integer).
    #[arg(long)]
    id: Option<u64>,
    /// Initial members: id=host:port,... (used only on first boot).
    #[arg(long)]
    cluster: Option<String>,
    /// Join a running cluster (first boot, empty data dir): client
    /// addresses host:port,... of existing members. The node waits until
    /// an operator adds it (RAFT.NODE ADD) and never votes before.
    #[arg(long)]
    join: Option<String>,
    /// Directory for all durable state; created if missing.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// RESP (Redis protocol) listener.
    #[arg(long)]
    client_addr: Option<String>,
    /// Where peer traffic is accepted (default: this node's --cluster entry).
    #[arg(long)]
    peer_listen: Option<String>,
    /// Optional HTTP listener: /status, /metrics, /healthz.
    #[arg(long)]
    http_addr: Option<String>,
    /// The same settings as TOML; flags override the file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Leader heartbeat interval in milliseconds (default 50).
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// Election timeout range in milliseconds, MIN-MAX (default 300-600).
    #[arg(long)]
    election_timeout_ms: Option<String>,
    /// How long a client request may take before it fails (default 5000).
    #[arg(long)]
    request_timeout_ms: Option<u64>,
    /// Maximum simultaneous client connections (default 10000).
    #[arg(long)]
    max_clients: Option<usize>,
    /// Maximum key size in bytes (default 65536).
    #[arg(long)]
    max_key_bytes: Option<usize>,
    /// Maximum value size in bytes (default 1048576).
    #[arg(long)]
    max_value_bytes: Option<usize>,
    /// Maximum size of one request, all arguments together, in bytes
    /// (default 16777216; at most 66060288, so that one request always fits
    /// one replication frame). A larger request gets `-ERR request too
    /// large`.
    #[arg(long)]
    max_request_bytes: Option<usize>,
    /// Take a snapshot and compact the log every N applied entries
    /// (default 100000; 0: only on RAFT.SNAPSHOT).
    #[arg(long)]
    snapshot_entries: Option<u64>,
    /// Snapshot files to keep (default 2).
    #[arg(long)]
    snapshots_keep: Option<usize>,
    /// Serve GET from a leader lease instead of a heartbeat round per batch
    /// of reads (thesis §6.4.1): lower read latency, but linearizable only
    /// while clocks drift less than 10 % and no process pauses longer than
    /// about a minimum election timeout. Give it to every node.
    #[arg(long)]
    lease_reads: bool,
    /// Log lines as `text` (default) or `json` (one object per line).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Close a client connection idle this many seconds (Redis' `timeout`;
    /// default 0: never).
    #[arg(long)]
    timeout: Option<u64>,
    /// Clients must `AUTH` with this password first (Redis' requirepass).
    #[arg(long)]
    requirepass: Option<String>,
}

impl ServerArgs {
    fn settings(self) -> Result<FileSettings, raftkv::config::ConfigError> {
        let flags = FileSettings {
            id: self.id,
            cluster: self.cluster,
            join: self.join,
            data_dir: self.data_dir,
            client_addr: self.client_addr,
            peer_listen: self.peer_listen,
            http_addr: self.http_addr,
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_ms: self.election_timeout_ms,
            request_timeout_ms: self.request_timeout_ms,
            max_clients: self.max_clients,
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            max_request_bytes: self.max_request_bytes,
            snapshot_entries: self.snapshot_entries,
            snapshots_keep: self.snapshots_keep,
            lease_reads: self.lease_reads.then_some(true),
            log_format: self.log_format,
            timeout: self.timeout,
            requirepass: self.requirepass,
        };
        match &self.config {
            Some(path) => Ok(flags.or(FileSettings::load(path)?)),
            None => Ok(flags),
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: a log written to a file or a
    // pipe (every node under `raftkv up`, systemd, a log shipper) gets plain
    // text. NO_COLOR (no-color.org) turns them off at a terminal too.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The simulator is single-threaded, needs no runtime, and keeps its own
    // trace: the core's log lines would only drown it.
    let cli = match cli.command {
        Command::Sim(args) => return raftkv_sim::cli::run(args),
        other => Cli { command: other },
    };
    // The server's settings first: they say how to log.
    let (command, server_settings) = match cli.command {
        Command::Server(args) => match args.settings() {
            Ok(s) => (None, Some(s)),
            Err(e) => {
                eprintln!("raftkv: {e}");
                return ExitCode::FAILURE;
            }
        },
        other => (Some(other), None),
    };
    init_logging(
        server_settings
            .as_ref()
            .and_then(|s| s.log_format)
            .unwrap_or_default(),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftkv: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match (command, server_settings) {
        (_, Some(settings)) => runtime.block_on(async {
            let config = ServerConfig::from_settings(settings)?;
            raftkv::server::run(config, shutdown_signal()).await
        }),
        (Some(Command::Up(args)), _) => runtime.block_on(raftkv::up::run(args, shutdown_signal())),
        (Some(Command::Bench(args)), _) => runtime.block_on(async {
            raftkv::bench::run(args).await.map_err(|e| {
                raftkv::server::RunError::Config(raftkv::config::ConfigError::Invalid(e))
            })
        }),
        _ => Ok(()),
    };
    // Do not wait for lingering connection tasks.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftkv: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
