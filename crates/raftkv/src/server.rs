//! `raftkv server`: one node of the replicated store.
//!
//! ```text
//!  redis clients ──RESP──▶ connection task ──┬─ leader:   RaftHandle (propose / ReadIndex)
//!                                            └─ follower: forward batch ──TCP──▶ leader
//!  peers ──frames──▶ peer::serve ──▶ RaftServer task (RaftNode + RaftCore + KvStore)
//! ```
//!
//! Each connection reads every complete command in its buffer, groups
//! consecutive writes (or reads) into one batch, runs the batch, and writes
//! the replies in request order. Within a batch, writes are proposed in
//! order; a read waits for the writes before it on the same connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use raft::{
    ClientError, FileStorage, RaftHandle, RaftServer, RaftState, ServerExtras, ServerParts,
    SnapshotStore, Status,
};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::commands::{classify, Action, DataLimits, LocalCommand};
use crate::config::{ClusterMeta, ServerConfig};
use crate::forward::{self, ForwardReply, ForwardRequest, Outcome};
use crate::identity::NodeIdentity;
use crate::kv::{encode_command, encode_query, KvCommand, KvOutput, KvQuery, KvStore};
use crate::limits::{self, request_size};
use crate::metrics::Metrics;
use crate::peer::{self, ForwardError, IncomingForward, PeerConfig, TcpTransport};
use crate::resp::{self, encode, CommandParser, Protocol, Reply};

/// Why the server could not start or had to stop.
#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Storage(#[from] raft::StorageError),
    #[error("raft: {0}")]
    Raft(#[from] raft::ServerError),
}

/// Commands a connection runs as one unit.
#[derive(Debug, Clone)]
enum Batch {
    Writes(Vec<KvCommand>),
    Reads(Vec<KvQuery>),
}

impl Batch {
    fn len(&self) -> usize {
        match self {
            Batch::Writes(w) => w.len(),
            Batch::Reads(r) => r.len(),
        }
    }

    /// Appends `other`'s commands if it is of the same kind; hands it back
    /// otherwise.
    fn append(&mut self, other: Batch) -> Result<(), Batch> {
        match (self, other) {
            (Batch::Writes(w), Batch::Writes(more)) => w.extend(more),
            (Batch::Reads(r), Batch::Reads(more)) => r.extend(more),
            (_, other) => return Err(other),
        }
        Ok(())
    }

    /// The commands from `at` on (the batch keeps those before).
    fn split_off(&mut self, at: usize) -> Batch {
        match self {
            Batch::Writes(w) => Batch::Writes(w.split_off(at.min(w.len()))),
            Batch::Reads(r) => Batch::Reads(r.split_off(at.min(r.len()))),
        }
    }
}

/// The batch a connection is building: consecutive commands of one kind,
/// with at most `limits::MAX_REQUEST_BYTES` of requests in all, so that the
/// batch, forwarded, fits one peer frame (a pipeline of large values is run
/// as a few batches, in order).
#[derive(Default)]
struct Pending {
    batch: Option<Batch>,
    /// The request size of the commands in `batch`.
    bytes: usize,
}

impl Pending {
    /// Adds one command of request size `size`. Returns the batch to run
    /// first when the command is of the other kind or would make it too
    /// large (the command then starts the next batch).
    fn add(&mut self, item: Batch, size: usize) -> Option<(Batch, usize)> {
        let fits = self.bytes.saturating_add(size) <= limits::MAX_REQUEST_BYTES;
        let item = match self.batch.as_mut().filter(|_| fits) {
            Some(batch) => match batch.append(item) {
                Ok(()) => {
                    self.bytes += size;
                    return None;
                }
                Err(item) => item,
            },
            None => item,
        };
        let full = self.take();
        self.batch = Some(item);
        self.bytes = size;
        full
    }

    fn take(&mut self) -> Option<(Batch, usize)> {
        let bytes = std::mem::take(&mut self.bytes);
        self.batch.take().map(|b| (b, bytes))
    }
}

/// A batch a follower's connection wants forwarded to the leader, and where
/// its outcomes go (`None`: nothing was proposed, so it may be retried).
struct ForwardJob {
    leader: u64,
    batch: Batch,
    /// The batch's request size (`limits::request_size` of its commands),
    /// which bounds its encoded size.
    bytes: usize,
    deadline: Instant,
    reply: oneshot::Sender<Option<Vec<Outcome>>>,
}

/// Forwarded batches in flight from this node at once. While they are, the
/// batches of other connections queue and then travel together in one
/// request (batching by design, as for AppendEntries).
const FORWARD_WINDOW: usize = 4;
/// Batches of several connections are combined into one forward up to this
/// many commands or bytes. (One connection's batch may be larger, up to
/// `limits::MAX_REQUEST_BYTES`; it then travels alone.)
const FORWARD_MAX_COMMANDS: usize = 256;
const FORWARD_MAX_BYTES: usize = 1 << 20;
/// Jobs whose deadlines differ by more than this travel separately: one
/// request times out at its earliest deadline, and a job retried after a
/// leader change must not cut short the time of fresh ones.
const FORWARD_DEADLINE_SPREAD: Duration = Duration::from_millis(50);

/// What every connection task shares.
pub struct Shared {
    pub node_id: u64,
    /// Incarnation and vote right (`INFO raft` shows the right).
    pub identity: Arc<NodeIdentity>,
    pub handle: RaftHandle<KvOutput>,
    pub transport: TcpTransport,
    pub request_timeout: Duration,
    pub data_limits: DataLimits,
    pub resp_limits: resp::Limits,
    pub clients: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    max_clients_total: usize,
    next_conn_id: AtomicU64,
    /// To the task that combines forwarded batches (`coalesce_forwards`).
    forwarder: mpsc::UnboundedSender<ForwardJob>,
}

/// Starts a node and runs it until `shutdown` resolves (graceful stop) or the
/// Raft task fails (fail-stop).
pub async fn run(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let meta = ClusterMeta::load_or_init(&config)?;
    // One process per data dir: a second one would write the same WAL.
    let _lock = lock_data_dir(&config.data_dir)?;
    let peer_listen = config.peer_listen_for(&meta)?;
    let storage = FileStorage::open(config.data_dir.join("wal"))?;
    let bind = |what: &'static str, addr: &str| {
        let addr = addr.to_string();
        async move {
            TcpListener::bind(&addr)
                .await
                .map_err(|source| RunError::Bind { what, addr, source })
        }
    };
    let peer_listener = bind("peer listener", &peer_listen).await?;
    let client_listener = bind("client listener", &config.client_addr).await?;
    let http_listener = match &config.http_addr {
        Some(a) => Some(bind("http listener", a).await?),
        None => None,
    };

    let identity = Arc::new(NodeIdentity::new(meta.clone(), config.data_dir.clone()));
    let vote_withheld = !meta.vote.may_vote();
    let peer_config = PeerConfig {
        identity: identity.clone(),
        id: config.id,
        cluster_id: meta.cluster_id.clone(),
        peers: meta
            .members
            .iter()
            .filter(|(id, _)| **id != config.id)
            .map(|(id, a)| (*id, a.clone()))
            .collect(),
        request_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_millis(500),
    };
    let transport = TcpTransport::new(peer_config.clone());
    let (rpc_tx, rpc_rx) = mpsc::channel(4096);
    let (fwd_tx, fwd_rx) = mpsc::channel(1024);
    let peer_task = peer::serve(peer_listener, peer_config, rpc_tx, fwd_tx);

    let seed = config.id
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let snapshots = SnapshotStore::open(config.data_dir.join("snapshots"))?;
    let metrics = Arc::new(Metrics::new());
    let (handle, raft_task) = RaftServer::spawn_with(
        ServerParts {
            id: config.id,
            voters: meta.members.keys().copied().collect(),
            config: config.raft.clone(),
            storage: Box::new(storage),
            transport: transport.clone(),
            incoming: rpc_rx,
            state_machine: KvStore::new(),
            seed,
        },
        ServerExtras {
            observer: Some(metrics.clone()),
            snapshots: Some(snapshots),
            // Thesis §10.2.1: the leader's own fsync runs on a thread of its
            // own while the loop goes on replicating, applying and answering.
            // With the small AppendEntries window (MAX_INFLIGHT_APPENDS)
            // batches stay large: 3 nodes, 64 writers, 34,813 SET/s inline
            // vs 36,741 with the background writer (CPU per write -8 %).
            background_writes: true,
            vote_withheld,
        },
    )?;
    match &meta.vote {
        raft::VoteRight::Allowed => {}
        raft::VoteRight::Pending { .. } => tracing::info!(
            id = config.id,
            "new data dir: this node votes once every other voter has vouched that it \
             never knew another incarnation of it (a brand-new cluster elects its first \
             leader once every node has started)"
        ),
        raft::VoteRight::Suspended => tracing::warn!(
            id = config.id,
            "this data dir replaced a wiped one: the node never votes or campaigns; \
             remove it and add it back to give it a vote"
        ),
    }
    // The handshakes settle the vote right; the Raft loop follows it.
    let vote_task = {
        let mut right = identity.watch_vote_right();
        let handle = handle.clone();
        tokio::spawn(async move {
            // The handshakes started before this task: begin with the right
            // as it is now, then follow every change.
            loop {
                let may_vote = right.borrow_and_update().may_vote();
                handle.set_may_vote(may_vote).await;
                if right.changed().await.is_err() {
                    break;
                }
            }
        })
    };
    tracing::info!(
        id = config.id,
        cluster = %meta.cluster_id,
        client = %config.client_addr,
        peer = %peer_listen,
        "raftkv node started"
    );

    let (forward_jobs, forward_jobs_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        node_id: config.id,
        handle: handle.clone(),
        transport,
        request_timeout: config.request_timeout,
        data_limits: DataLimits {
            max_key_bytes: config.max_key_bytes,
            max_value_bytes: config.max_value_bytes,
            max_request_bytes: config.max_request_bytes,
        },
        // A bulk string longer than a whole request can never be accepted:
        // refused as it is declared, as Redis does past proto-max-bulk-len.
        resp_limits: resp::Limits {
            max_bulk_len: config.max_request_bytes,
            ..resp::Limits::default()
        },
        clients: Arc::new(Semaphore::new(config.max_clients)),
        metrics,
        max_clients_total: config.max_clients,
        next_conn_id: AtomicU64::new(1),
        forwarder: forward_jobs,
        identity,
    });
    let forward_task = tokio::spawn(serve_forwards(shared.clone(), fwd_rx));
    let coalesce_task = tokio::spawn(coalesce_forwards(Arc::downgrade(&shared), forward_jobs_rx));
    let accept_task = tokio::spawn(accept_clients(client_listener, shared.clone()));
    let http_task = http_listener.map(|l| tokio::spawn(crate::http::serve(l, shared.clone())));

    let mut raft_task = raft_task;
    let result = tokio::select! {
        _ = shutdown => {
            tracing::info!(id = config.id, "shutting down");
            accept_task.abort();
            handle.shutdown().await;
            match tokio::time::timeout(Duration::from_secs(4), &mut raft_task).await {
                Ok(Ok(Err(e))) => Err(RunError::Raft(e)),
                _ => Ok(()),
            }
        }
        ended = &mut raft_task => {
            match ended {
                Ok(Err(e)) => {
                    tracing::error!(id = config.id, error = %e, "raft stopped: node exiting");
                    Err(RunError::Raft(e))
                }
                _ => Ok(()),
            }
        }
    };
    accept_task.abort();
    vote_task.abort();
    forward_task.abort();
    coalesce_task.abort();
    peer_task.abort();
    if let Some(t) = http_task {
        t.abort();
    }
    result
}

/// Takes an exclusive lock on `DATA_DIR/LOCK` for the life of the process
/// (released by the OS when the process dies, also on `kill -9`).
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, RunError> {
    let path = dir.join("LOCK");
    let invalid = |m: String| RunError::Config(crate::config::ConfigError::Invalid(m));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| invalid(format!("--data-dir: cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(invalid(format!(
            "--data-dir {} is in use by another process",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(invalid(format!(
            "--data-dir: cannot lock {}: {e}",
            path.display()
        ))),
    }
}

async fn accept_clients(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_client(stream, shared.clone()));
            }
            Err(e) => {
                // E.g. out of file descriptors: wait a little, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One client connection. Any error just closes it.
async fn serve_client(mut stream: TcpStream, shared: Arc<Shared>) {
    let Ok(_permit) = shared.clients.clone().try_acquire_owned() else {
        let _ = stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        return;
    };
    let _ = stream.set_nodelay(true);
    let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let mut conn = Connection {
        shared,
        id: conn_id,
        protocol: Protocol::Resp2,
        out: BytesMut::with_capacity(16 << 10),
    };
    let mut buf = BytesMut::with_capacity(16 << 10);
    // Remembers how far into a half-arrived command it got, so a large
    // command is not re-scanned from its start on every read.
    let mut parser = CommandParser::new(conn.shared.resp_limits);
    loop {
        let mut commands = Vec::new();
        let mut fatal = None;
        while commands.len() < 1024 {
            match parser.parse(&mut buf) {
                Ok(Some(args)) => commands.push(args),
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        if commands.is_empty() && fatal.is_none() {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
        let quit = conn.run_commands(commands).await;
        if let Some(e) = &fatal {
            // Redis answers malformed input with one error, then hangs up.
            conn.reply(&Reply::error(format!("ERR {e}")));
        }
        if stream.write_all(&conn.out).await.is_err() {
            return;
        }
        conn.out.clear();
        if quit || fatal.is_some() {
            return;
        }
    }
}

struct Connection {
    shared: Arc<Shared>,
    id: u64,
    protocol: Protocol,
    out: BytesMut,
}

impl Connection {
    fn reply(&mut self, r: &Reply) {
        encode(r, self.protocol, &mut self.out);
    }

    /// Runs commands in order; returns true after QUIT.
    async fn run_commands(&mut self, commands: Vec<Vec<bytes::Bytes>>) -> bool {
        let mut batch = Pending::default();
        // The command name of each batched command, for metrics.
        let mut names: Vec<String> = Vec::new();
        for args in commands {
            let name = args
                .first()
                .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
                .unwrap_or_default();
            let size = request_size(&args);
            match classify(&args, &self.shared.data_limits) {
                Action::Write(c) => {
                    let item = Batch::Writes(vec![c]);
                    if let Some(full) = batch.add(item, size) {
                        self.flush(Some(full), &mut names).await;
                    }
                    names.push(name);
                }
                Action::Read(q) => {
                    let item = Batch::Reads(vec![q]);
                    if let Some(full) = batch.add(item, size) {
                        self.flush(Some(full), &mut names).await;
                    }
                    names.push(name);
                }
                Action::Local(LocalCommand::RaftSnapshot) => {
                    self.flush(batch.take(), &mut names).await;
                    let started = Instant::now();
                    // §7 on demand: answered once the snapshot is durable
                    // and the log compacted.
                    let reply = match self.shared.handle.snapshot().await {
                        Ok(_) => Reply::ok(),
                        Err(e) => Reply::error(format!("ERR snapshot failed: {e}")),
                    };
                    let failed = matches!(reply, Reply::Error(_));
                    self.shared
                        .metrics
                        .observe_request(&name, started.elapsed(), failed);
                    self.reply(&reply);
                }
                Action::Local(l) => {
                    self.flush(batch.take(), &mut names).await;
                    self.shared
                        .metrics
                        .observe_request(&name, Duration::ZERO, false);
                    if self.local(l) {
                        return true;
                    }
                }
                Action::Reply(r) => {
                    self.flush(batch.take(), &mut names).await;
                    let known =
                        !matches!(&r, Reply::Error(e) if e.starts_with("ERR unknown command"));
                    let name = if known { name.as_str() } else { "unknown" };
                    self.shared.metrics.observe_request(
                        name,
                        Duration::ZERO,
                        matches!(r, Reply::Error(_)),
                    );
                    self.reply(&r);
                }
                Action::Ignore => {}
            }
        }
        self.flush(batch.take(), &mut names).await;
        false
    }

    /// Runs `batch` (with the request size of its commands); `names` are its
    /// commands' names, or more: the names of commands after it stay.
    async fn flush(&mut self, batch: Option<(Batch, usize)>, names: &mut Vec<String>) {
        let Some((batch, bytes)) = batch else { return };
        let read = matches!(batch, Batch::Reads(_));
        let started = Instant::now();
        let n = batch.len();
        let outcomes = execute(&self.shared, batch, bytes).await;
        let elapsed = started.elapsed();
        for (outcome, name) in outcomes.into_iter().zip(names.drain(..n.min(names.len()))) {
            let r = outcome_reply(outcome, read);
            self.shared
                .metrics
                .observe_request(&name, elapsed, matches!(r, Reply::Error(_)));
            self.reply(&r);
        }
    }

    /// Answers a command this node handles itself; true means close.
    fn local(&mut self, cmd: LocalCommand) -> bool {
        let reply = match cmd {
            LocalCommand::Ping(None) => Reply::Simple("PONG".into()),
            LocalCommand::Ping(Some(m)) | LocalCommand::Echo(m) => Reply::Bulk(m),
            LocalCommand::Hello(proto) => {
                if let Some(p) = proto {
                    self.protocol = if p == 3 {
                        Protocol::Resp3
                    } else {
                        Protocol::Resp2
                    };
                }
                let proto = if self.protocol == Protocol::Resp3 {
                    3
                } else {
                    2
                };
                let s = |t: &str| Reply::Bulk(bytes::Bytes::copy_from_slice(t.as_bytes()));
                Reply::Map(vec![
                    (s("server"), s("redis")),
                    (s("version"), s("7.2.4")),
                    (s("proto"), Reply::Integer(proto)),
                    (s("id"), Reply::Integer(self.id as i64)),
                    (s("mode"), s("standalone")),
                    (s("role"), s("master")),
                    (s("modules"), Reply::Array(vec![])),
                ])
            }
            LocalCommand::Info(section) => {
                let text = info_text(
                    &self.shared,
                    &self.shared.handle.status(),
                    section.as_deref(),
                );
                Reply::Verbatim {
                    format: *b"txt",
                    text: text.into(),
                }
            }
            LocalCommand::RaftInfo => {
                let vote = self.shared.identity.vote_right();
                let text = raft_section(&self.shared.handle.status(), vote.name());
                Reply::Bulk(text.into())
            }
            // Handled in run_commands (it waits for the snapshot).
            LocalCommand::RaftSnapshot => Reply::error("ERR internal: RAFT.SNAPSHOT misrouted"),
            LocalCommand::Quit => {
                self.reply(&Reply::ok());
                return true;
            }
            LocalCommand::CommandDocs => Reply::Array(vec![]),
            LocalCommand::ConfigGet(params) => {
                let known = [("save", ""), ("appendonly", "yes")];
                let mut pairs = Vec::new();
                for p in params {
                    let p = String::from_utf8_lossy(&p).to_ascii_lowercase();
                    for (name, value) in known {
                        if p == name || p == "*" {
                            pairs.push((
                                Reply::Bulk(name.as_bytes().to_vec().into()),
                                Reply::Bulk(value.as_bytes().to_vec().into()),
                            ));
                        }
                    }
                }
                Reply::Map(pairs)
            }
            LocalCommand::Ok => Reply::ok(),
        };
        self.reply(&reply);
        false
    }
}

/// The role names of the contract (a pre-candidate is a kind of candidate).
pub fn role_name(state: RaftState) -> &'static str {
    match state {
        RaftState::Leader => "leader",
        RaftState::Follower => "follower",
        RaftState::Candidate | RaftState::PreCandidate => "candidate",
    }
}

/// The `# Raft` section of INFO, one `field:value` per line.
/// `vote`: this node's vote right (`allowed`, `pending`, `suspended`; see
/// `raft::incarnation`).
pub fn raft_section(s: &Status, vote: &str) -> String {
    format!(
        "# Raft\r\nnode_id:{}\r\nrole:{}\r\nterm:{}\r\nleader_id:{}\r\ncommit_index:{}\r\nlast_applied:{}\r\nlast_log_index:{}\r\nlast_log_term:{}\r\nsnapshot_last_index:{}\r\nsnapshot_in_progress:{}\r\nsnapshot_bytes_sent:{}\r\nread_mode:{}\r\nlease_reads_served:{}\r\nvote:{}\r\n",
        s.id,
        role_name(s.state),
        s.term,
        s.leader_id.unwrap_or(0),
        s.commit_index,
        s.last_applied,
        s.last_log_index,
        s.last_log_term,
        s.snapshot_last_index,
        u8::from(s.snapshot_in_progress),
        s.snapshot_bytes_sent,
        if s.lease_reads { "lease" } else { "read-index" },
        s.lease_reads_served,
        vote,
    )
}

fn info_text(shared: &Shared, s: &Status, section: Option<&str>) -> String {
    let vote = shared.identity.vote_right();
    let server = format!(
        "# Server\r\nredis_version:7.2.4\r\nraftkv_version:{}\r\nredis_mode:standalone\r\nprocess_id:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    let clients = format!(
        "# Clients\r\nconnected_clients:{}\r\n",
        shared.clients_connected()
    );
    match section {
        None | Some("ALL") | Some("EVERYTHING") | Some("DEFAULT") => {
            format!("{server}\r\n{clients}\r\n{}", raft_section(s, vote.name()))
        }
        Some("RAFT") => raft_section(s, vote.name()),
        Some("SERVER") => server,
        Some("CLIENTS") => clients,
        Some(_) => String::new(),
    }
}

impl Shared {
    fn clients_connected(&self) -> usize {
        // Permits are taken per connection; the semaphore knows how many.
        self.max_clients()
            .saturating_sub(self.clients.available_permits())
    }

    fn max_clients(&self) -> usize {
        self.max_clients_total
    }
}

fn outcome_reply(o: Outcome, read: bool) -> Reply {
    match o {
        Outcome::Done(out) => kv_reply(out),
        // A read that failed had no effect, whatever the reason.
        Outcome::NotApplied | Outcome::Unknown if read => Reply::Error(
            "TIMEOUT the read did not complete in time (no leader or no quorum); it had no effect"
                .into(),
        ),
        Outcome::NotApplied => Reply::Error("CLUSTERDOWN the command was not applied (no leader or leadership changed); it is safe to retry".into()),
        Outcome::Unknown => Reply::Error(
            "TIMEOUT the outcome is unknown: the command may still take effect".into(),
        ),
    }
}

pub fn kv_reply(out: KvOutput) -> Reply {
    match out {
        KvOutput::Ok => Reply::ok(),
        KvOutput::Nil => Reply::Nil,
        KvOutput::Integer(n) => Reply::Integer(n),
        KvOutput::Value(v) => Reply::Bulk(v.into()),
        KvOutput::Values(vs) => Reply::Array(
            vs.into_iter()
                .map(|v| v.map_or(Reply::Nil, |v| Reply::Bulk(v.into())))
                .collect(),
        ),
        KvOutput::Error(e) => Reply::Error(e),
    }
}

/// Runs a batch wherever the leader is, until done or the request timeout.
///
/// Retries only when nothing can have been proposed (the node asked was not
/// the leader, or the request never left this node), so one client command
/// is at most one log entry.
///
/// `bytes` is the batch's request size. A leader may answer forwarded reads
/// only in part, when their values together would not fit one frame; the
/// rest are then asked for again.
async fn execute(shared: &Shared, batch: Batch, bytes: usize) -> Vec<Outcome> {
    let deadline = Instant::now() + shared.request_timeout;
    let mut done = Vec::with_capacity(batch.len());
    let mut batch = batch;
    loop {
        let (state, leader_id) = shared.handle.role();
        let attempt = if state == RaftState::Leader {
            run_locally(shared, &batch, deadline).await
        } else if let Some(leader) = leader_id.filter(|&l| l != shared.node_id) {
            forward_coalesced(shared, leader, &batch, bytes, deadline).await
        } else {
            None
        };
        if let Some(outcomes) = attempt {
            let answered = outcomes.len();
            done.extend(outcomes);
            // Only reads are ever answered in part (see `forward_to`), and
            // at least one at a time.
            if answered >= batch.len() {
                return done;
            }
            batch = batch.split_off(answered);
            continue;
        }
        let now = Instant::now();
        if now >= deadline {
            done.extend(vec![Outcome::NotApplied; batch.len()]);
            return done;
        }
        // No leader known yet (an election is under way): look again soon.
        tokio::time::sleep((deadline - now).min(Duration::from_millis(20))).await;
    }
}

/// Proposes (or reads) on this node. `None` when this node turned out not to
/// lead for any of the commands (nothing was proposed).
async fn run_locally(shared: &Shared, batch: &Batch, deadline: Instant) -> Option<Vec<Outcome>> {
    // Enqueue in order (that is what keeps a connection's writes in order),
    // but never wait for queue space past the deadline: a command that
    // never got into the queue was certainly not proposed.
    let mut receivers = Vec::with_capacity(batch.len());
    match batch {
        Batch::Writes(cmds) => {
            for c in cmds {
                let rx = tokio::time::timeout_at(
                    deadline,
                    shared.handle.enqueue_submit(encode_command(c)),
                )
                .await;
                receivers.push(rx.ok().and_then(Result::ok));
            }
        }
        Batch::Reads(queries) => {
            for q in queries {
                let rx =
                    tokio::time::timeout_at(deadline, shared.handle.enqueue_read(encode_query(q)))
                        .await;
                receivers.push(rx.ok().and_then(Result::ok));
            }
        }
    }
    let mut outcomes = Vec::with_capacity(receivers.len());
    let mut proposed_any = false;
    for rx in receivers {
        let Some(rx) = rx else {
            outcomes.push(Outcome::NotApplied);
            continue;
        };
        let result = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ClientError::Stopped),
            Err(_) => {
                proposed_any = true;
                outcomes.push(Outcome::Unknown);
                continue;
            }
        };
        if !matches!(&result, Err(ClientError::NotLeader { .. })) {
            proposed_any = true;
        }
        let outcome = match result {
            Ok(out) => Outcome::Done(out),
            Err(ClientError::NotLeader { .. }) => Outcome::NotApplied,
            Err(ClientError::LeadershipLost) => Outcome::NotApplied,
            // Only a command over the largest request any node accepts
            // (`limits::MAX_REQUEST_BYTES`) gets here; every node refuses
            // those before proposing, so it is a node with other limits.
            Err(ClientError::TooLarge { size, limit }) => Outcome::Done(KvOutput::Error(format!(
                "ERR request too large ({size} bytes, limit {limit})"
            ))),
            Err(ClientError::Stopped) | Err(ClientError::Unknown) => Outcome::Unknown,
        };
        outcomes.push(outcome);
    }
    proposed_any.then_some(outcomes)
}

async fn forward_to(
    shared: &Shared,
    leader: u64,
    batch: Batch,
    deadline: Instant,
) -> Option<Vec<Outcome>> {
    let (len, reads) = (batch.len(), matches!(batch, Batch::Reads(_)));
    // What to answer when the fate of the request is unknown: writes may
    // have happened; reads have no effect, so they are simply retried.
    let unknown = || (!reads).then(|| vec![Outcome::Unknown; len]);
    let request = match batch {
        Batch::Writes(w) => ForwardRequest::Writes(w),
        Batch::Reads(r) => ForwardRequest::Reads(r),
    };
    let timeout = deadline.saturating_duration_since(Instant::now());
    match shared
        .transport
        .forward(leader, forward::encode(&request), timeout)
        .await
    {
        Ok(bytes) => match forward::decode::<ForwardReply>(&bytes) {
            Some(ForwardReply::Outcomes(o)) if o.len() == len => Some(o),
            // The leader answered the first reads only: their values filled
            // a frame. The rest are asked for again.
            Some(ForwardReply::Outcomes(o)) if reads && !o.is_empty() && o.len() < len => Some(o),
            Some(ForwardReply::NotLeader { .. }) => None,
            _ => {
                tracing::warn!(leader, "undecodable forward reply");
                unknown()
            }
        },
        Err(ForwardError::NotSent(_)) => None,
        Err(ForwardError::Unknown(_)) => unknown(),
    }
}

/// Forwards `batch` to `leader` together with whatever other connections
/// of this node are forwarding at the same moment (see
/// `coalesce_forwards`). Same result as [`forward_to`] would give it alone.
async fn forward_coalesced(
    shared: &Shared,
    leader: u64,
    batch: &Batch,
    bytes: usize,
    deadline: Instant,
) -> Option<Vec<Outcome>> {
    let (reply, outcomes) = oneshot::channel();
    let job = ForwardJob {
        leader,
        batch: batch.clone(),
        bytes,
        deadline,
        reply,
    };
    if shared.forwarder.send(job).is_err() {
        // The node is stopping; nothing was sent.
        return None;
    }
    // A dropped job was never sent either.
    outcomes.await.ok().flatten()
}

/// Combines the forwards of many connections into few requests: it takes
/// every job already queued (up to a size limit), groups them by leader and
/// by kind (writes, reads), and sends each group as one batch, with at most
/// [`FORWARD_WINDOW`] groups in flight. A group's outcomes are split back in
/// order; a group that was not sent, or whose leader refused it, is `None`
/// for each of its jobs, which then retry as they would alone. One request
/// times out with its earliest deadline, so no job waits past its own.
async fn coalesce_forwards(
    shared: std::sync::Weak<Shared>,
    mut jobs: mpsc::UnboundedReceiver<ForwardJob>,
) {
    let window = Arc::new(Semaphore::new(FORWARD_WINDOW));
    let mut next: Option<ForwardJob> = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        // Wait for room in the window first: jobs pile up meanwhile.
        let Ok(permit) = window.clone().acquire_owned().await else {
            return;
        };
        let (mut commands, mut bytes) = (first.batch.len(), first.bytes);
        let mut taken = vec![first];
        while commands < FORWARD_MAX_COMMANDS && bytes < FORWARD_MAX_BYTES {
            let Ok(job) = jobs.try_recv() else { break };
            commands += job.batch.len();
            bytes += job.bytes;
            if commands > FORWARD_MAX_COMMANDS || bytes > FORWARD_MAX_BYTES {
                // Goes first in the next round instead.
                next = Some(job);
                break;
            }
            taken.push(job);
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let permit = Arc::new(permit);
        for group in group_forward_jobs(taken) {
            let (shared, permit) = (shared.clone(), permit.clone());
            tokio::spawn(async move {
                send_forward_group(&shared, group).await;
                drop(permit);
            });
        }
    }
}

/// Splits jobs into groups with one leader, one kind and nearly the same
/// deadline, keeping their order.
fn group_forward_jobs(jobs: Vec<ForwardJob>) -> Vec<Vec<ForwardJob>> {
    // Every group is created holding a job, so `g[0]` below exists.
    let mut groups: Vec<Vec<ForwardJob>> = Vec::new();
    for job in jobs {
        let reads = matches!(job.batch, Batch::Reads(_));
        let same = |g: &Vec<ForwardJob>| {
            let spread = if g[0].deadline > job.deadline {
                g[0].deadline - job.deadline
            } else {
                job.deadline - g[0].deadline
            };
            g[0].leader == job.leader
                && matches!(g[0].batch, Batch::Reads(_)) == reads
                && spread <= FORWARD_DEADLINE_SPREAD
        };
        match groups.iter_mut().find(|g| same(g)) {
            Some(g) => g.push(job),
            None => groups.push(vec![job]),
        }
    }
    groups
}

/// Sends one group from `group_forward_jobs` as one request.
async fn send_forward_group(shared: &Shared, group: Vec<ForwardJob>) {
    let mut jobs = group.into_iter();
    let Some(first) = jobs.next() else {
        return;
    };
    let (leader, mut deadline) = (first.leader, first.deadline);
    let mut lens = vec![first.batch.len()];
    let mut replies = vec![first.reply];
    let mut combined = first.batch;
    for job in jobs {
        let len = job.batch.len();
        match combined.append(job.batch) {
            Ok(()) => {
                deadline = deadline.min(job.deadline);
                lens.push(len);
                replies.push(job.reply);
            }
            // Not of the group's kind (grouping prevents it): not sent, so
            // it retries on its own.
            Err(_) => {
                let _ = job.reply.send(None);
            }
        }
    }
    let outcomes = forward_to(shared, leader, combined, deadline).await;
    let mut outcomes = outcomes.map(Vec::into_iter);
    for (reply, len) in replies.into_iter().zip(lens) {
        // Reads answered in part: a job may get fewer outcomes than it has
        // commands (it asks again for the rest), or none (as if not sent).
        let mine = outcomes
            .as_mut()
            .map(|o| o.by_ref().take(len).collect::<Vec<_>>())
            .filter(|o| !o.is_empty());
        // The connection may have given up; nobody to tell then.
        let _ = reply.send(mine);
    }
}

/// The leader's side of forwarding.
async fn serve_forwards(shared: Arc<Shared>, mut forwards: mpsc::Receiver<IncomingForward>) {
    while let Some(fwd) = forwards.recv().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let reply = match forward::decode::<ForwardRequest>(&fwd.payload) {
                None => {
                    tracing::warn!(from = fwd.from, "undecodable forwarded request");
                    return;
                }
                Some(request) => {
                    let (state, _) = shared.handle.role();
                    let batch = match request {
                        ForwardRequest::Writes(w) => Batch::Writes(w),
                        ForwardRequest::Reads(r) => Batch::Reads(r),
                    };
                    let deadline = Instant::now() + shared.request_timeout;
                    let outcomes = if state == RaftState::Leader {
                        run_locally(&shared, &batch, deadline).await
                    } else {
                        None
                    };
                    match outcomes {
                        Some(o) if matches!(batch, Batch::Reads(_)) => {
                            ForwardReply::Outcomes(fit_read_outcomes(o, limits::MAX_REQUEST_BYTES))
                        }
                        // Write outcomes are small (OK, an integer, a short
                        // error): a batch's always fit one frame.
                        Some(o) => ForwardReply::Outcomes(o),
                        None => ForwardReply::NotLeader {
                            leader_hint: shared.handle.role().1,
                        },
                    }
                }
            };
            let _ = fwd.reply.send(forward::encode(&reply));
        });
    }
}

/// The first of `outcomes` (of forwarded reads) whose encoding fits
/// `budget` bytes, so the reply fits one frame; the follower asks again for
/// the rest. A first read whose reply alone is larger gets an error instead:
/// a follower cannot relay it, but the leader can serve it directly.
fn fit_read_outcomes(outcomes: Vec<Outcome>, budget: usize) -> Vec<Outcome> {
    let mut left = budget;
    let mut kept = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        let size = outcome.size_bound();
        if size > left {
            if kept.is_empty() {
                kept.push(Outcome::Done(KvOutput::Error(format!(
                    "ERR reply too large to relay from the leader ({size} bytes, limit {budget}); \
                     send it to the leader, or ask for less at once"
                ))));
            }
            break;
        }
        left -= size;
        kept.push(outcome);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(leader: u64, batch: Batch, deadline: Instant) -> ForwardJob {
        let (reply, _) = oneshot::channel();
        ForwardJob {
            leader,
            batch,
            bytes: 1,
            deadline,
            reply,
        }
    }

    fn write(key: &str) -> Batch {
        Batch::Writes(vec![KvCommand::IncrBy {
            key: key.as_bytes().to_vec(),
            by: 1,
        }])
    }

    fn read(key: &str) -> Batch {
        Batch::Reads(vec![KvQuery::Get {
            key: key.as_bytes().to_vec(),
        }])
    }

    fn keys(group: &[ForwardJob]) -> Vec<String> {
        group
            .iter()
            .map(|j| match &j.batch {
                Batch::Writes(w) => match &w[0] {
                    KvCommand::IncrBy { key, .. } => format!("w:{}", String::from_utf8_lossy(key)),
                    other => format!("{other:?}"),
                },
                Batch::Reads(r) => match &r[0] {
                    KvQuery::Get { key } => format!("r:{}", String::from_utf8_lossy(key)),
                    other => format!("{other:?}"),
                },
            })
            .collect()
    }

    #[test]
    fn forwarded_jobs_group_by_leader_kind_and_deadline_in_order() {
        let now = Instant::now();
        let later = now + Duration::from_millis(10);
        let much_later = now + Duration::from_secs(3);
        let jobs = vec![
            job(1, write("a"), now),
            job(1, read("b"), now),
            job(1, write("c"), later),
            job(2, write("d"), now),
            job(1, write("e"), much_later),
            job(1, read("f"), later),
        ];
        let groups: Vec<Vec<String>> = group_forward_jobs(jobs).iter().map(|g| keys(g)).collect();
        assert_eq!(
            groups,
            vec![
                // Writes to leader 1 within the deadline spread, in order:
                // a connection's commands never overtake each other.
                vec!["w:a".to_string(), "w:c".to_string()],
                vec!["r:b".to_string(), "r:f".to_string()],
                vec!["w:d".to_string()],
                // A retried job with a far deadline travels on its own.
                vec!["w:e".to_string()],
            ]
        );
    }

    #[test]
    fn a_batch_appends_its_own_kind_and_hands_back_the_other() {
        let mut b = write("a");
        assert!(b.append(write("b")).is_ok());
        assert_eq!(b.len(), 2);
        assert!(matches!(b.append(read("c")), Err(Batch::Reads(_))));
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn a_connection_batch_stays_within_one_frame_of_requests() {
        let mut pending = Pending::default();
        let big = limits::MAX_REQUEST_BYTES / 2;
        assert!(pending.add(write("a"), big).is_none());
        assert!(pending.add(write("b"), big).is_none(), "exactly full");
        // One more byte would not fit: the full batch runs first.
        let (full, bytes) = pending.add(write("c"), 1).expect("full");
        assert_eq!((full.len(), bytes), (2, 2 * big));
        // A read after writes also starts a new batch.
        let (writes, bytes) = pending.add(read("d"), 5).expect("kind changed");
        assert_eq!((writes.len(), bytes), (1, 1));
        let (reads, bytes) = pending.take().expect("the read");
        assert!(matches!(reads, Batch::Reads(_)));
        assert_eq!((reads.len(), bytes), (1, 5));
        assert!(pending.take().is_none());
    }

    #[test]
    fn forwarded_read_replies_are_cut_to_fit_a_frame() {
        let value = |n: usize| Outcome::Done(KvOutput::Value(vec![7; n]));
        let outcomes = vec![value(400), value(400), value(400), Outcome::NotApplied];
        // Two values fit 1000 bytes; the rest are asked for again.
        let kept = fit_read_outcomes(outcomes.clone(), 1000);
        assert_eq!(kept, outcomes[..2].to_vec());
        // Everything fits a larger budget.
        assert_eq!(fit_read_outcomes(outcomes.clone(), 1 << 20), outcomes);
        // A first reply larger than the budget becomes an error, so every
        // round answers at least one read.
        let kept = fit_read_outcomes(vec![value(2000), value(1)], 1000);
        assert!(
            matches!(&kept[..], [Outcome::Done(KvOutput::Error(e))] if e.starts_with("ERR reply too large"))
        );
        // The bound is honest: an encoded reply is never larger.
        for o in &outcomes {
            assert!(forward::encode(o).len() <= o.size_bound());
        }
    }
}
