//! The network transport between raftkv server processes: Raft's
//! [`Transport`] over TCP, plus forwarded client requests.
//!
//! # One connection, seen from both ends
//!
//! ```text
//!  node 1 (dialer)                                         node 2 (acceptor)
//!  ───────────────                                         ─────────────────
//!  request_vote / append_entries / forward                 serve(): accept loop
//!    │ encode Frame::Request{id, ..}, register a oneshot      │ one task per connection
//!    ▼                                                        ▼
//!  per-peer queue (bounded mpsc)                            handshake: check version,
//!    │                                                       cluster id, `to`, `from`
//!    ▼                                                        │
//!  per-peer task ── dial + Hello ───────── TCP ─────────▶ HelloOk / HelloRefused{reason}
//!    │ writer: pending[id] = oneshot,                         │
//!    │   write frames back to back ── Request{1} Request{2} ─▶ reader ─▶ IncomingRpc ─▶ rpcs
//!    │   (never waits for a reply)    Request{3} ...          │          IncomingForward ─▶ forwards
//!    │                                                        │   replies complete in any order
//!    │ reader: pending.remove(id) ◀── Response{2} Response{1} ◀─ writer ◀ (bounded mpsc)
//!    │   → wakes that caller          Response{3} ...
//!    ▼
//!  connection lost → every pending caller fails, redial with backoff
//! ```
//!
//! Every frame is a big-endian `u32` length followed by a postcard-encoded
//! [`Frame`] (tokio-util's [`LengthDelimitedCodec`], at most
//! [`MAX_FRAME_LEN`] bytes). Requests carry an id; the reply carries the same
//! id, so many requests are in flight on one connection at once and replies
//! may come back in any order (pipelining: a leader does not wait for one
//! AppendEntries reply before sending the next).
//!
//! # Why postcard
//!
//! The messages are already serde types (`raft::Rpc`), both ends are the same
//! program, and the format is versioned by the handshake, so a
//! self-describing format would only spend bytes and CPU on the commit path.
//! postcard is compact (varints, no field names), works straight from serde
//! derives and is actively maintained with a stable 1.x wire format.
//!
//! # Why one connection per direction per peer
//!
//! Node 1 dials node 2 for *its* requests, and node 2 dials node 1 for its
//! own. Each connection thus has fixed roles: the dialer only sends requests
//! (and pings), the acceptor only answers. There is no tie-breaking when both
//! sides dial at once, no request ids shared by two issuers, and a connection
//! can be torn down and redialled by the side that needs it without
//! coordinating with the other. The cost, one extra socket per pair, is
//! negligible for a cluster of a handful of nodes.
//!
//! # Failure behaviour
//!
//! * While a peer is unreachable (between redials) requests fail at once with
//!   [`TransportError::ConnectionFailed`] / [`ForwardError::NotSent`]: Raft
//!   retries on its own schedule, and nothing queues up without bound. During
//!   a dial (bounded by `connect_timeout`) requests wait in the queue, so the
//!   first request after start-up is not failed needlessly.
//! * When a connection breaks, everything written on it and not yet answered
//!   fails with `ConnectionFailed` / [`ForwardError::Unknown`] (it may have
//!   been processed).
//! * A connection with requests outstanding is pinged once per
//!   `request_timeout`; the acceptor answers pings itself (not the node), so a
//!   missing pong means the peer host or network is gone, not that the node is
//!   slow, and the connection is redialled (a half-open TCP connection would
//!   otherwise just swallow requests).
//! * Peers that fail the handshake are refused with a clear `error!` line on
//!   both sides; undecodable or oversized frames close only that connection.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use raft::{IncomingRpc, NodeId, PeerVerdict, Rpc, Transport, TransportError};
use serde::{Deserialize, Serialize};

use crate::identity::NodeIdentity;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

mod client;
mod server;
mod wire;

pub use client::TcpTransport;
pub use server::serve;
use wire::*;
pub use wire::{decode_frame, encode_frame, frame_codec, Frame, RequestBody, ResponseBody};

/// Bumped whenever [`Frame`] changes incompatibly; peers must agree exactly.
/// 2: the hello and its answer carry the data dirs' incarnations and the
/// verdict on them (`raft::incarnation`).
pub const PROTOCOL_VERSION: u32 = 2;

/// The largest frame either side accepts (or sends). A bigger frame closes
/// the connection: it is either a bug or not a raftkv peer at all.
pub const MAX_FRAME_LEN: usize = 64 << 20;

/// Requests waiting for a peer's task to write them. Full means the peer is
/// far behind; the request fails rather than the queue growing.
const PEER_QUEUE_CAPACITY: usize = 4096;
/// Replies waiting to be written on one accepted connection.
const WRITER_QUEUE_CAPACITY: usize = 4096;
/// Requests read from one connection whose replies are still outstanding.
/// At the limit the acceptor stops reading, which pushes back through TCP.
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 4096;
/// Frames written before one flush: a burst becomes one syscall, and a lone
/// request is flushed at once (latency matters on the commit path).
const WRITE_BATCH: usize = 256;
const BACKOFF_INITIAL: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A connection that stayed up this long has proved the peer works: the
/// backoff resets and a loss is redialled at once. Shorter-lived connections
/// keep backing off, so a peer that accepts and then drops us is not hammered.
const STABLE_CONNECTION: Duration = Duration::from_secs(1);
/// Bounds on the ping / stale-waiter sweep period (derived from `request_timeout`).
const MIN_TICK: Duration = Duration::from_millis(50);
const MAX_TICK: Duration = Duration::from_secs(5);
/// After `accept` fails (e.g. out of file descriptors), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// A refused peer redials every couple of seconds; say so once a minute.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Remote-controlled strings (cluster ids, reasons) are cut to this many
/// characters in logs.
const LOG_STRING_MAX: usize = 128;

/// How this node talks to its peers.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub id: NodeId,
    /// Identity of the cluster (a hash of the initial membership); a peer
    /// presenting another one is refused.
    pub cluster_id: String,
    /// id -> "host:port" of every OTHER node.
    pub peers: HashMap<NodeId, String>,
    /// Per RPC (e.g. 1 s for raft RPCs); also the ping period.
    pub request_timeout: Duration,
    /// Bounds a dial plus its handshake, and how long an acceptor waits for a hello.
    pub connect_timeout: Duration,
    /// This node's incarnation, its book of the peers' incarnations and its
    /// vote right, which every handshake consults and updates.
    pub identity: Arc<NodeIdentity>,
}

/// A forwarded client request that arrived for this node.
#[derive(Debug)]
pub struct IncomingForward {
    pub from: NodeId,
    pub payload: Vec<u8>,
    pub reply: oneshot::Sender<Vec<u8>>,
}

/// Why a forward failed; the KV layer needs to know whether the request could
/// have reached the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error("could not reach node {0}; the request was not sent")]
    NotSent(NodeId),
    #[error("no reply from node {0}; the request may have been processed")]
    Unknown(NodeId),
}
