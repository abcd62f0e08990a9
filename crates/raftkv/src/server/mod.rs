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

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
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

use crate::commands::{classify_sized, Action, DataLimits, LocalCommand};
use crate::config::{ClusterMeta, ServerConfig};
use crate::forward::{self, Batch, ForwardReply, Outcome};
use crate::identity::NodeIdentity;
use crate::kv::{encode_query, encode_stamped, KvOutput, KvStore};
use crate::limits::{self, request_size};
use crate::metrics::Metrics;
use crate::peer::{self, ForwardError, IncomingForward, PeerConfig, TcpTransport};
use crate::resp::{self, encode, CommandParser, Protocol, Reply};

mod admin;
mod connection;
mod execute;
mod http;

pub use self::admin::{fetch_cluster_id, raft_info_at, MemberState};

use self::connection::accept_clients;
use self::execute::{coalesce_forwards, serve_forwards, ForwardJob};

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
    /// Redis' `timeout`: an idle client is disconnected after this.
    pub idle_timeout: Option<Duration>,
    /// Redis' `requirepass`.
    pub requirepass: Option<bytes::Bytes>,
    pub metrics: Arc<Metrics>,
    max_clients_total: usize,
    next_conn_id: AtomicU64,
    /// To the task that combines forwarded batches (`coalesce_forwards`).
    forwarder: mpsc::UnboundedSender<ForwardJob>,
    /// The cluster this node belongs to (`cluster.json`).
    pub cluster_id: String,
    /// This node's [`MemberState`] in the configuration in force, kept by
    /// `admin::follow_configuration`.
    member_state: AtomicU8,
}

/// Starts a node and runs it until `shutdown` resolves (graceful stop) or the
/// Raft task fails (fail-stop).
pub async fn run(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let meta = match ClusterMeta::load(&config)? {
        Some(meta) => meta,
        // Thesis §4.1: a new server joins with an empty configuration and
        // learns the cluster's from the leader once it is added.
        None if !config.join.is_empty() => {
            let cluster_id = fetch_cluster_id(&config.join, Duration::from_secs(30))
                .await
                .map_err(|e| RunError::Config(crate::config::ConfigError::Invalid(e)))?;
            tracing::info!(
                id = config.id,
                cluster = %cluster_id,
                "joining cluster {cluster_id}: waiting to be added (RAFT.NODE ADD {} <peer address>)",
                config.id
            );
            ClusterMeta::join(&config, cluster_id)?
        }
        None => ClusterMeta::bootstrap(&config)?,
    };
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
            membership: bootstrap_membership(&meta),
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
        idle_timeout: config.idle_timeout,
        requirepass: config
            .requirepass
            .as_ref()
            .map(|p| bytes::Bytes::copy_from_slice(p.as_bytes())),
        metrics,
        max_clients_total: config.max_clients,
        next_conn_id: AtomicU64::new(1),
        forwarder: forward_jobs,
        identity,
        cluster_id: meta.cluster_id.clone(),
        member_state: AtomicU8::new(MemberState::of(&handle.membership(), config.id).code()),
    });
    let membership_task = tokio::spawn(admin::follow_configuration(shared.clone()));
    let forward_task = tokio::spawn(serve_forwards(shared.clone(), fwd_rx));
    let coalesce_task = tokio::spawn(coalesce_forwards(Arc::downgrade(&shared), forward_jobs_rx));
    let accept_task = tokio::spawn(accept_clients(client_listener, shared.clone()));
    let http_task = http_listener.map(|l| tokio::spawn(http::serve(l, shared.clone())));

    let mut raft_task = raft_task;
    let result = tokio::select! {
        _ = shutdown => {
            tracing::info!(id = config.id, "shutting down");
            accept_task.abort();
            hand_over_leadership(&handle, config.id).await;
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
    membership_task.abort();
    forward_task.abort();
    coalesce_task.abort();
    peer_task.abort();
    if let Some(t) = http_task {
        t.abort();
    }
    result
}

/// Thesis §3.10: a leader that stops gracefully first hands leadership to
/// the most up-to-date voter, so that clients wait for one round of
/// messages instead of an election timeout. Bounded by 1 s (a hand-over
/// takes a round trip and an fsync or two; 427 ms was the slowest seen,
/// under heavy test load), so that with the Raft task's own 4 s the whole
/// stop stays within the 5 s the contract allows.
async fn hand_over_leadership(handle: &RaftHandle<KvOutput>, id: u64) {
    let status = handle.status();
    if status.state != RaftState::Leader || status.membership.voters().len() < 2 {
        return;
    }
    let started = Instant::now();
    match tokio::time::timeout(Duration::from_secs(1), handle.transfer_leadership(None)).await {
        Ok(Ok(to)) => tracing::info!(
            id,
            to,
            took_ms = started.elapsed().as_millis() as u64,
            "handed leadership over before stopping"
        ),
        Ok(Err(e)) => tracing::warn!(id, "could not hand leadership over before stopping: {e}"),
        Err(_) => tracing::warn!(
            id,
            "leadership handover did not finish in time; stopping anyway"
        ),
    }
}

/// The configuration a new cluster starts from: `--cluster`'s voters with
/// their peer addresses (none for a node that joins). The log and
/// snapshots override it once they hold one (thesis §4.1).
fn bootstrap_membership(meta: &ClusterMeta) -> raft::Membership {
    let voters: Vec<raft::NodeId> = meta.members.keys().copied().collect();
    let mut membership = raft::Membership::new(&voters, &[]);
    for (id, address) in &meta.members {
        membership.set_address(*id, address.clone());
    }
    membership
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
pub fn raft_section(shared: &Shared, s: &Status, vote: &str) -> String {
    let list = |ids: &[raft::NodeId]| {
        ids.iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "# Raft\r\nnode_id:{}\r\ncluster_id:{}\r\nrole:{}\r\nterm:{}\r\nleader_id:{}\r\ncommit_index:{}\r\nlast_applied:{}\r\nlast_log_index:{}\r\nlast_log_term:{}\r\nsnapshot_last_index:{}\r\nsnapshot_in_progress:{}\r\nsnapshot_bytes_sent:{}\r\nread_mode:{}\r\nlease_reads_served:{}\r\nvote:{}\r\nvoters:{}\r\nlearners:{}\r\nmembership:{}\r\n",
        s.id,
        shared.cluster_id,
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
        list(s.membership.voters()),
        list(s.membership.learners()),
        MemberState::of(&s.membership, s.id).name(),
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
            format!(
                "{server}\r\n{clients}\r\n{}",
                raft_section(shared, s, vote.name())
            )
        }
        Some("RAFT") => raft_section(shared, s, vote.name()),
        Some("SERVER") => server,
        Some("CLIENTS") => clients,
        Some(_) => String::new(),
    }
}

impl Shared {
    /// Why this node refuses data commands, if it is not a member of the
    /// configuration in force (removed, or joined and not added yet): its
    /// view of who leads is no longer kept up to date.
    fn not_a_member(&self) -> Option<&'static str> {
        match MemberState::from_code(self.member_state.load(Ordering::Relaxed)) {
            MemberState::Voter | MemberState::Learner => None,
            MemberState::Removed => Some(
                "CLUSTERDOWN this node was removed from the cluster; nothing was done, send commands to a member",
            ),
            MemberState::Joining => Some(
                "CLUSTERDOWN this node has not been added to the cluster yet (RAFT.NODE ADD); nothing was done",
            ),
        }
    }

    fn clients_connected(&self) -> usize {
        // Permits are taken per connection; the semaphore knows how many.
        self.max_clients()
            .saturating_sub(self.clients.available_permits())
    }

    fn max_clients(&self) -> usize {
        self.max_clients_total
    }
}
