//! `raftkv server` settings: flags, the optional TOML file, and validation
//! with one clear line per mistake.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raft::{IncarnationBook, NodeId, RaftConfig, VoteRight};

use crate::limits;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A mistake in the settings. Printed as one line, then the process exits
/// non-zero.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// Settings as they may appear in the TOML file (all optional there, since
/// flags can supply them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub id: Option<NodeId>,
    pub cluster: Option<String>,
    /// Client addresses of existing members, for a node that joins.
    pub join: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub client_addr: Option<String>,
    pub peer_listen: Option<String>,
    pub http_addr: Option<String>,
    pub heartbeat_ms: Option<u64>,
    pub election_timeout_ms: Option<String>,
    pub request_timeout_ms: Option<u64>,
    pub max_clients: Option<usize>,
    pub max_key_bytes: Option<usize>,
    pub max_value_bytes: Option<usize>,
    pub max_request_bytes: Option<usize>,
    pub snapshot_entries: Option<u64>,
    pub snapshots_keep: Option<usize>,
    pub lease_reads: Option<bool>,
    /// `text` (default) or `json`: one JSON object per log line, for log
    /// shippers.
    pub log_format: Option<LogFormat>,
    /// Redis' `timeout`: close a client idle this many seconds (0: never).
    pub timeout: Option<u64>,
    /// Redis' `requirepass`: clients must `AUTH` with it first.
    pub requirepass: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FileSettings {
    pub fn load(path: &Path) -> Result<FileSettings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
    }

    /// `self` (from flags) wins over `file`.
    pub fn or(self, file: FileSettings) -> FileSettings {
        FileSettings {
            id: self.id.or(file.id),
            cluster: self.cluster.or(file.cluster),
            join: self.join.or(file.join),
            data_dir: self.data_dir.or(file.data_dir),
            client_addr: self.client_addr.or(file.client_addr),
            peer_listen: self.peer_listen.or(file.peer_listen),
            http_addr: self.http_addr.or(file.http_addr),
            heartbeat_ms: self.heartbeat_ms.or(file.heartbeat_ms),
            election_timeout_ms: self.election_timeout_ms.or(file.election_timeout_ms),
            request_timeout_ms: self.request_timeout_ms.or(file.request_timeout_ms),
            max_clients: self.max_clients.or(file.max_clients),
            max_key_bytes: self.max_key_bytes.or(file.max_key_bytes),
            max_value_bytes: self.max_value_bytes.or(file.max_value_bytes),
            max_request_bytes: self.max_request_bytes.or(file.max_request_bytes),
            snapshot_entries: self.snapshot_entries.or(file.snapshot_entries),
            snapshots_keep: self.snapshots_keep.or(file.snapshots_keep),
            lease_reads: self.lease_reads.or(file.lease_reads),
            log_format: self.log_format.or(file.log_format),
            timeout: self.timeout.or(file.timeout),
            requirepass: self.requirepass.or(file.requirepass),
        }
    }
}

/// Complete, validated settings of one node.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub id: NodeId,
    /// Initial voting members and their peer addresses (bootstrap only).
    pub cluster: BTreeMap<NodeId, String>,
    /// `--join`: client addresses of existing members (first boot of a
    /// node that joins a running cluster).
    pub join: Vec<String>,
    pub data_dir: PathBuf,
    pub client_addr: String,
    /// `None`: this node's own entry in the membership.
    pub peer_listen: Option<String>,
    pub http_addr: Option<String>,
    pub raft: RaftConfig,
    pub request_timeout: Duration,
    pub max_clients: usize,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// The most one request may take, all its arguments together
    /// (`limits::request_size`); always below what one peer frame carries.
    pub max_request_bytes: usize,
    /// Close a client connection idle this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// The password of the default user (`AUTH`); `None`: none needed.
    pub requirepass: Option<String>,
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_cluster(s: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| {
            invalid(format!(
                "--cluster: '{part}' is not of the form id=host:port"
            ))
        })?;
        let id: NodeId = id
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| invalid(format!("--cluster: '{id}' is not a positive node id")))?;
        let addr = addr.trim();
        check_addr("--cluster", addr)?;
        if out.insert(id, addr.to_string()).is_some() {
            return Err(invalid(format!("--cluster: node id {id} appears twice")));
        }
    }
    if out.is_empty() {
        return Err(invalid("--cluster: no members given"));
    }
    Ok(out)
}

/// A `host:port` with a numeric port.
fn check_addr(flag: &str, addr: &str) -> Result<(), ConfigError> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(invalid(format!(
            "{flag}: '{addr}' is not a valid host:port address"
        ))),
    }
}

/// Parses `MIN-MAX` milliseconds.
fn parse_range(s: &str) -> Result<(u64, u64), ConfigError> {
    let bad = || {
        invalid(format!(
            "--election-timeout-ms: '{s}' is not of the form MIN-MAX (e.g. 300-600)"
        ))
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a = a.trim().parse().map_err(|_| bad())?;
    let b = b.trim().parse().map_err(|_| bad())?;
    Ok((a, b))
}

/// AppendEntries in flight to one follower. With the log written on a
/// background thread, the leader's loop no longer waits for its own fsync;
/// a small window is then what makes proposals pile up into large batches
/// while earlier ones are acknowledged (batching by design): fewer, larger
/// messages and fsyncs. Measured on loopback, 3 nodes, 64 writers: window 64
/// 26,514 SET/s, window 1-4 36,700-37,900 SET/s at about 40 % less CPU per
/// write (docs/benchmarks.md). Four keeps a steady stream to a follower
/// whose round trip is a few fsyncs long.
pub const MAX_INFLIGHT_APPENDS: usize = 4;

impl ServerConfig {
    /// Validates merged settings. `cluster` may be absent when the data dir
    /// already holds the membership; the caller passes what it found there.
    pub fn from_settings(s: FileSettings) -> Result<ServerConfig, ConfigError> {
        let id = s.id.ok_or_else(|| invalid("--id is required"))?;
        if id == 0 {
            return Err(invalid("--id must be a positive integer"));
        }
        let cluster = match &s.cluster {
            Some(c) => parse_cluster(c)?,
            None => BTreeMap::new(),
        };
        let join: Vec<String> = match &s.join {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(|a| check_addr("--join", a).map(|_| a.to_string()))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        if s.join.is_some() && join.is_empty() {
            return Err(invalid(
                "--join: give the client address of at least one member",
            ));
        }
        if !join.is_empty() && !cluster.is_empty() {
            return Err(invalid(
                "--cluster starts a new cluster and --join joins a running one: give one of them",
            ));
        }
        let data_dir = s
            .data_dir
            .ok_or_else(|| invalid("--data-dir is required"))?;
        let client_addr = s
            .client_addr
            .unwrap_or_else(|| "127.0.0.1:6379".to_string());
        check_addr("--client-addr", &client_addr)?;
        // Without --peer-listen, the node listens where the membership says
        // it lives: --cluster on first boot, the data dir afterwards (see
        // `peer_listen_for`).
        let peer_listen = s.peer_listen;
        if let Some(a) = &peer_listen {
            check_addr("--peer-listen", a)?;
        }
        if let Some(h) = &s.http_addr {
            check_addr("--http-addr", h)?;
        }
        let heartbeat = s.heartbeat_ms.unwrap_or(50);
        let (emin, emax) = match &s.election_timeout_ms {
            Some(r) => parse_range(r)?,
            None => (300, 600),
        };
        let raft = RaftConfig {
            tick_interval: Duration::from_millis(10.min(heartbeat).max(1)),
            heartbeat_interval: Duration::from_millis(heartbeat),
            election_timeout_min: Duration::from_millis(emin),
            election_timeout_max: Duration::from_millis(emax),
            snapshot_after_entries: s.snapshot_entries.unwrap_or(100_000),
            snapshots_to_keep: s.snapshots_keep.unwrap_or(2),
            lease_reads: s.lease_reads.unwrap_or(false),
            max_inflight_appends: MAX_INFLIGHT_APPENDS,
            // The largest request any node may accept, not this node's
            // limit: a leader sends entries that earlier leaders accepted
            // (see `limits`).
            max_entry_bytes: limits::MAX_REQUEST_BYTES,
            ..RaftConfig::default()
        };
        raft.validate()
            .map_err(|e| invalid(format!("timing: {e}")))?;
        let request_timeout_ms = s.request_timeout_ms.unwrap_or(5000);
        if request_timeout_ms == 0 {
            return Err(invalid("--request-timeout-ms must be positive"));
        }
        let max_request_bytes = s
            .max_request_bytes
            .unwrap_or(limits::DEFAULT_MAX_REQUEST_BYTES);
        if !(limits::MIN_REQUEST_BYTES..=limits::MAX_REQUEST_BYTES).contains(&max_request_bytes) {
            return Err(invalid(format!(
                "--max-request-bytes {max_request_bytes} is out of range: between {} and {} \
                 (one request must fit one {}-byte peer frame)",
                limits::MIN_REQUEST_BYTES,
                limits::MAX_REQUEST_BYTES,
                limits::MAX_FRAME_LEN
            )));
        }
        Ok(ServerConfig {
            id,
            cluster,
            join,
            data_dir,
            client_addr,
            peer_listen,
            http_addr: s.http_addr,
            raft,
            request_timeout: Duration::from_millis(request_timeout_ms),
            max_clients: s.max_clients.unwrap_or(10_000).max(1),
            max_key_bytes: s.max_key_bytes.unwrap_or(64 << 10),
            max_value_bytes: s.max_value_bytes.unwrap_or(1 << 20),
            max_request_bytes,
            idle_timeout: s.timeout.filter(|&secs| secs > 0).map(Duration::from_secs),
            requirepass: s.requirepass.filter(|p| !p.is_empty()),
        })
    }
}

impl ServerConfig {
    /// Where to accept peer traffic: `--peer-listen`, else this node's entry
    /// in the stored (or bootstrap) membership.
    pub fn peer_listen_for(&self, meta: &ClusterMeta) -> Result<String, ConfigError> {
        match &self.peer_listen {
            Some(a) => Ok(a.clone()),
            None => meta.members.get(&self.id).cloned().ok_or_else(|| {
                invalid(format!(
                    "--peer-listen not given and node {} is not a member of the cluster",
                    self.id
                ))
            }),
        }
    }
}

/// What the data dir remembers about the cluster: written once on first boot,
/// authoritative afterwards ("the membership stored on disk wins").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub members: BTreeMap<NodeId, String>,
    /// This data dir's incarnation, random at creation (`raft::incarnation`).
    /// 0 in data dirs created before incarnations existed.
    #[serde(default)]
    pub incarnation: u64,
    /// Whether this node may vote; a data dir from before incarnations has
    /// history, so it may.
    #[serde(default = "allowed")]
    pub vote: VoteRight,
    /// The incarnation last seen of each peer.
    #[serde(default)]
    pub peers: IncarnationBook,
}

fn allowed() -> VoteRight {
    VoteRight::Allowed
}

/// A random incarnation for a new data dir. Not a secret, only unlikely to
/// repeat: std's per-process random hash keys, the clock and the pid.
fn new_incarnation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

const META_FILE: &str = "cluster.json";

impl ClusterMeta {
    /// A stable identity for a cluster: a hash of its initial membership.
    pub fn new(node_id: NodeId, members: BTreeMap<NodeId, String>) -> ClusterMeta {
        let text: String = members.iter().map(|(id, a)| format!("{id}={a};")).collect();
        let cluster_id = format!("{:08x}", crc32c::crc32c(text.as_bytes()));
        let voters: Vec<NodeId> = members.keys().copied().collect();
        ClusterMeta {
            cluster_id,
            node_id,
            members,
            incarnation: new_incarnation(),
            // A new data dir: it may vote once every other voter has said
            // it never knew another incarnation of this node.
            vote: VoteRight::for_new_data_dir(node_id, &voters),
            peers: IncarnationBook::default(),
        }
    }

    /// Loads the stored membership, or bootstraps it from `--cluster` on an
    /// empty data dir. Writes atomically (temp file, fsync, rename, fsync dir).
    pub fn load_or_init(config: &ServerConfig) -> Result<ClusterMeta, ConfigError> {
        match Self::load(config)? {
            Some(meta) => Ok(meta),
            None => Self::bootstrap(config),
        }
    }

    /// What the data dir holds, if it was ever started (creates the dir).
    /// `--cluster` and `--join` are ignored then: the data dir wins.
    pub fn load(config: &ServerConfig) -> Result<Option<ClusterMeta>, ConfigError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| invalid(format!("--data-dir: cannot create {}: {e}", dir.display())))?;
        let path = dir.join(META_FILE);
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
            let meta: ClusterMeta = serde_json::from_str(&text)
                .map_err(|e| invalid(format!("corrupt {}: {e}", path.display())))?;
            if meta.node_id != config.id {
                return Err(invalid(format!(
                    "--id {} does not match the data dir {}, which belongs to node {}",
                    config.id,
                    dir.display(),
                    meta.node_id
                )));
            }
            return Ok(Some(meta));
        }
        Ok(None)
    }

    /// A node that joins the running cluster `cluster_id` (`--join`) with
    /// an empty data dir: no members known, and no vote until it is a
    /// voter whom every other voter has cleared (`raft::incarnation`).
    pub fn join(config: &ServerConfig, cluster_id: String) -> Result<ClusterMeta, ConfigError> {
        let meta = ClusterMeta {
            cluster_id,
            node_id: config.id,
            members: BTreeMap::new(),
            incarnation: new_incarnation(),
            vote: VoteRight::for_joining_server(),
            peers: IncarnationBook::default(),
        };
        let dir = &config.data_dir;
        meta.store(dir).map_err(|e| {
            invalid(format!(
                "--data-dir: cannot write {}: {e}",
                dir.join(META_FILE).display()
            ))
        })?;
        Ok(meta)
    }

    /// A new cluster from `--cluster`, on an empty data dir.
    pub fn bootstrap(config: &ServerConfig) -> Result<ClusterMeta, ConfigError> {
        let dir = &config.data_dir;
        let path = dir.join(META_FILE);
        if config.cluster.is_empty() {
            return Err(invalid(format!(
                "{} holds no cluster yet: --cluster (a new cluster) or --join (a running one) is required on first boot",
                dir.display()
            )));
        }
        if !config.cluster.contains_key(&config.id) {
            return Err(invalid(format!(
                "--id {} is not in --cluster ({})",
                config.id,
                config
                    .cluster
                    .keys()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        }
        let meta = ClusterMeta::new(config.id, config.cluster.clone());
        meta.store(dir)
            .map_err(|e| invalid(format!("--data-dir: cannot write {}: {e}", path.display())))?;
        Ok(meta)
    }

    /// Writes this meta to `dir` crash-safely.
    pub fn store(&self, dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        write_atomically(dir, META_FILE, text.as_bytes())
    }
}

/// temp file + fsync + rename + fsync of the directory.
pub fn write_atomically(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_format_reads_from_toml_and_refuses_unknown_formats() {
        let s: FileSettings = toml::from_str("log_format = \"json\"").expect("parse");
        assert_eq!(s.log_format, Some(LogFormat::Json));
        assert!(toml::from_str::<FileSettings>("log_format = \"xml\"").is_err());
    }

    use super::*;

    #[test]
    fn cluster_lists_parse_and_bad_ones_get_one_clear_line() {
        let c = parse_cluster("1=127.0.0.1:7001, 2=localhost:7002").expect("valid");
        assert_eq!(c.len(), 2);
        for (bad, needle) in [
            ("1=127.0.0.1", "not a valid host:port"),
            ("x=127.0.0.1:1", "not a positive node id"),
            ("0=127.0.0.1:1", "not a positive node id"),
            ("1=a:1,1=b:2", "appears twice"),
            ("1", "id=host:port"),
        ] {
            let e = parse_cluster(bad).expect_err(bad).to_string();
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn settings_validate_timing_and_defaults() {
        let s = FileSettings {
            id: Some(1),
            cluster: Some("1=127.0.0.1:7001".into()),
            data_dir: Some("/tmp/x".into()),
            ..FileSettings::default()
        };
        let c = ServerConfig::from_settings(s.clone()).expect("valid");
        assert_eq!(c.peer_listen, None);
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        let bad = FileSettings {
            heartbeat_ms: Some(400),
            ..s.clone()
        };
        assert!(ServerConfig::from_settings(bad).is_err());
        let bad = FileSettings {
            election_timeout_ms: Some("600-300".into()),
            ..s.clone()
        };
        assert!(ServerConfig::from_settings(bad).is_err());
        // An id outside --cluster is refused once the data dir is consulted.
        let other = FileSettings { id: Some(2), ..s };
        let c = ServerConfig::from_settings(other).expect("checked later");
        let dir = tempfile::tempdir().expect("tempdir");
        let c = ServerConfig {
            data_dir: dir.path().to_path_buf(),
            ..c
        };
        let e = ClusterMeta::load_or_init(&c)
            .expect_err("not a member")
            .to_string();
        assert!(e.contains("not in --cluster"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let flags = FileSettings {
            id: Some(2),
            ..FileSettings::default()
        };
        let file = FileSettings {
            id: Some(1),
            data_dir: Some("/d".into()),
            ..FileSettings::default()
        };
        let merged = flags.or(file);
        assert_eq!(merged.id, Some(2));
        assert_eq!(merged.data_dir, Some(PathBuf::from("/d")));
    }
}
