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

// ---------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------

/// One frame on a peer connection (postcard-encoded inside a length prefix).
///
/// Public so tests and tools can speak the protocol. `Hello` must stay the
/// first variant with `version` as its first field, and `HelloRefused` the
/// third, in every protocol version: that way any two versions can still
/// read each other's version number and refusal, and log something useful.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Dialer → acceptor, first frame on a connection.
    Hello {
        version: u32,
        cluster_id: String,
        from: NodeId,
        to: NodeId,
        /// The dialer's data-dir incarnation.
        incarnation: u64,
    },
    /// Acceptor → dialer: requests may follow. The acceptor's incarnation,
    /// and what its book says of the dialer's (both already durable).
    HelloOk {
        incarnation: u64,
        verdict: PeerVerdict,
    },
    /// Acceptor → dialer, then the acceptor closes the connection.
    HelloRefused {
        reason: String,
    },
    /// Dialer → acceptor. `id` is unique per dialer and peer.
    Request {
        id: u64,
        body: RequestBody,
    },
    /// Acceptor → dialer, answering the request with the same `id`.
    Response {
        id: u64,
        body: ResponseBody,
    },
    /// Dialer → acceptor liveness check; answered by the transport itself.
    Ping,
    Pong,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// `Rpc::RequestVote` or `Rpc::AppendEntries`.
    Raft(Rpc),
    /// A client request forwarded to this node; opaque to the transport.
    /// (`serde_bytes`: copied as one byte string, not byte by byte, which
    /// matters for a forward of many large values; same bytes on the wire.)
    Forward(#[serde(with = "serde_bytes")] Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// The reply to a `RequestBody::Raft`.
    Raft(Rpc),
    /// The reply to a `RequestBody::Forward` (`serde_bytes` as there).
    Forward(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The receiver will never answer: it dropped the request after it was
    /// handed over (`delivered`), or nobody was there to take it. Lets the
    /// caller fail now instead of waiting out its timeout.
    NoReply { delivered: bool },
}

impl Frame {
    /// The variant's name, for logs (never the contents: they can be large).
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "Hello",
            Frame::HelloOk { .. } => "HelloOk",
            Frame::HelloRefused { .. } => "HelloRefused",
            Frame::Request { .. } => "Request",
            Frame::Response { .. } => "Response",
            Frame::Ping => "Ping",
            Frame::Pong => "Pong",
        }
    }
}

/// The length-delimited codec both sides use: 4-byte big-endian length,
/// frames of at most [`MAX_FRAME_LEN`] bytes.
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec()
}

/// A frame's payload (without the length prefix).
pub fn encode_frame(frame: &Frame) -> Result<Bytes, postcard::Error> {
    postcard::to_allocvec(frame).map(Bytes::from)
}

/// Inverse of [`encode_frame`]. Trailing bytes are tolerated (a later version
/// might append fields); the handshake is what guarantees compatibility.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// The version in a hello that does not decode as ours: postcard writes the
/// variant index (0 for `Hello`) then the first field, both as varints.
fn peek_hello_version(bytes: &[u8]) -> Option<u32> {
    match postcard::take_from_bytes::<(u32, u32)>(bytes) {
        Ok(((0, version), _)) => Some(version),
        _ => None,
    }
}

type FrameReader = FramedRead<OwnedReadHalf, LengthDelimitedCodec>;
type FrameWriter = FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>;

fn framed(stream: TcpStream) -> (FrameReader, FrameWriter) {
    let (r, w) = stream.into_split();
    (
        FramedRead::new(r, frame_codec()),
        FramedWrite::new(w, frame_codec()),
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single map operation and cannot
    // leave the map inconsistent, so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `s` made safe and short for a log line: it may come off the network.
fn for_log(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(LOG_STRING_MAX)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().nth(LOG_STRING_MAX).is_some() {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

/// Life of one request, shared by its caller and the peer's task, so a
/// timed-out forward can tell "never written" (safe to retry elsewhere)
/// from "written, fate unknown". Exactly one side wins the transition out
/// of `QUEUED`.
const QUEUED: u8 = 0;
const SENT: u8 = 1;
const ABANDONED: u8 = 2;

/// A request on its way to the peer's task. Dropping it without a reply
/// fails the caller (who then looks at `state` to say why).
struct Outgoing {
    id: u64,
    frame: Bytes,
    state: Arc<AtomicU8>,
    reply: oneshot::Sender<ResponseBody>,
}

/// Why a call got no response body (mapped to the caller's error type).
enum CallError {
    UnknownPeer,
    /// Never written to a connection.
    NotSent,
    /// Written, then the connection broke.
    Lost,
    TimedOut {
        sent: bool,
    },
}

/// What a peer's task needs to know.
struct PeerLink {
    me: NodeId,
    identity: Arc<NodeIdentity>,
    peer: NodeId,
    addr: String,
    cluster_id: String,
    request_timeout: Duration,
    connect_timeout: Duration,
}

struct PeerSlot {
    queue: mpsc::Sender<Outgoing>,
    next_id: AtomicU64,
    started: AtomicBool,
    /// The task's half, until the task is spawned (at `new` when a runtime
    /// is running, else on first use).
    unstarted: Mutex<Option<(mpsc::Receiver<Outgoing>, PeerLink)>>,
}

impl PeerSlot {
    /// Spawns the peer's task if that has not happened yet. False when
    /// there is no tokio runtime to spawn it on.
    fn ensure_started(&self) -> bool {
        if self.started.load(Ordering::Acquire) {
            return true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("TcpTransport used outside a tokio runtime; cannot connect to peers");
            return false;
        };
        let mut unstarted = lock(&self.unstarted);
        if let Some((queue, link)) = unstarted.take() {
            runtime.spawn(peer_task(link, queue));
        }
        self.started.store(true, Ordering::Release);
        true
    }
}

struct ClientInner {
    me: NodeId,
    request_timeout: Duration,
    peers: HashMap<NodeId, PeerSlot>,
}

/// Raft's [`Transport`] (and client-request forwarding) over TCP. Cheap to
/// clone; the background tasks stop once every clone is dropped.
#[derive(Clone)]
pub struct TcpTransport {
    inner: Arc<ClientInner>,
}

impl fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut peers: Vec<NodeId> = self.inner.peers.keys().copied().collect();
        peers.sort_unstable();
        f.debug_struct("TcpTransport")
            .field("me", &self.inner.me)
            .field("peers", &peers)
            .finish()
    }
}

impl TcpTransport {
    /// A transport to `config.peers`. Connections are made in the
    /// background: right away when called inside a tokio runtime, else on
    /// first use.
    pub fn new(config: PeerConfig) -> TcpTransport {
        let mut peers = HashMap::new();
        for (&peer, addr) in &config.peers {
            if peer == config.id {
                continue; // never dial ourselves
            }
            let (queue, rx) = mpsc::channel(PEER_QUEUE_CAPACITY);
            let link = PeerLink {
                me: config.id,
                identity: config.identity.clone(),
                peer,
                addr: addr.clone(),
                cluster_id: config.cluster_id.clone(),
                request_timeout: config.request_timeout,
                connect_timeout: config.connect_timeout,
            };
            peers.insert(
                peer,
                PeerSlot {
                    queue,
                    next_id: AtomicU64::new(1),
                    started: AtomicBool::new(false),
                    unstarted: Mutex::new(Some((rx, link))),
                },
            );
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            for slot in peers.values() {
                slot.ensure_started();
            }
        }
        TcpTransport {
            inner: Arc::new(ClientInner {
                me: config.id,
                request_timeout: config.request_timeout,
                peers,
            }),
        }
    }

    /// Sends a client request to node `to` and waits up to `timeout` for its
    /// reply. [`ForwardError::NotSent`] guarantees the peer never saw it.
    pub async fn forward(
        &self,
        to: NodeId,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, ForwardError> {
        match self.call(to, RequestBody::Forward(payload), timeout).await {
            Ok(ResponseBody::Forward(reply)) => Ok(reply),
            Ok(ResponseBody::NoReply { delivered: false }) => Err(ForwardError::NotSent(to)),
            Ok(ResponseBody::NoReply { delivered: true }) => Err(ForwardError::Unknown(to)),
            Ok(ResponseBody::Raft(rpc)) => {
                tracing::warn!(
                    peer = to,
                    "node {to} answered a forward with a {}",
                    rpc.kind()
                );
                Err(ForwardError::Unknown(to))
            }
            Err(CallError::UnknownPeer | CallError::NotSent) => Err(ForwardError::NotSent(to)),
            Err(CallError::TimedOut { sent: false }) => Err(ForwardError::NotSent(to)),
            Err(CallError::Lost | CallError::TimedOut { sent: true }) => {
                Err(ForwardError::Unknown(to))
            }
        }
    }

    async fn call_raft(&self, to: NodeId, rpc: Rpc) -> Result<Rpc, TransportError> {
        let timeout = self.inner.request_timeout;
        match self.call(to, RequestBody::Raft(rpc), timeout).await {
            Ok(ResponseBody::Raft(reply)) => Ok(reply),
            // The node dropped the request (e.g. it was not addressed to it),
            // as the in-memory transport reports a dropped reply sender.
            Ok(ResponseBody::NoReply { .. }) => Err(TransportError::ConnectionFailed(to)),
            Ok(ResponseBody::Forward(_)) => {
                tracing::warn!(
                    peer = to,
                    "node {to} answered a raft request with a forward reply"
                );
                Err(TransportError::ConnectionFailed(to))
            }
            Err(CallError::UnknownPeer) => Err(TransportError::NodeNotFound(to)),
            Err(CallError::NotSent | CallError::Lost) => Err(TransportError::ConnectionFailed(to)),
            Err(CallError::TimedOut { .. }) => Err(TransportError::Timeout(to)),
        }
    }

    async fn call(
        &self,
        to: NodeId,
        body: RequestBody,
        timeout: Duration,
    ) -> Result<ResponseBody, CallError> {
        let slot = self.inner.peers.get(&to).ok_or(CallError::UnknownPeer)?;
        if !slot.ensure_started() {
            return Err(CallError::NotSent);
        }
        // Ids come from a per-peer counter rather than per connection, so a
        // late reply from an old connection can never match a new request.
        let id = slot.next_id.fetch_add(1, Ordering::Relaxed);
        // Encode here, on the caller's task: the peer's task then only copies
        // bytes, and concurrent callers encode in parallel.
        let frame = match encode_frame(&Frame::Request { id, body }) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::error!(peer = to, "cannot encode a request for node {to}: {e}");
                return Err(CallError::NotSent);
            }
        };
        if frame.len() > MAX_FRAME_LEN {
            tracing::error!(
                peer = to,
                "request for node {to} is {} bytes, over the {MAX_FRAME_LEN}-byte frame limit; not sent",
                frame.len()
            );
            return Err(CallError::NotSent);
        }
        let state = Arc::new(AtomicU8::new(QUEUED));
        let (reply, response) = oneshot::channel();
        let outgoing = Outgoing {
            id,
            frame,
            state: Arc::clone(&state),
            reply,
        };
        if let Err(e) = slot.queue.try_send(outgoing) {
            if let TrySendError::Full(_) = e {
                tracing::debug!(
                    peer = to,
                    "request queue for node {to} is full; failing the request"
                );
            }
            return Err(CallError::NotSent);
        }
        // Whoever moves `state` out of QUEUED first decides whether the
        // request goes out: the peer's task (→ SENT) or this caller giving up
        // (→ ABANDONED, and the task will skip it).
        let abandon = || {
            state
                .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        };
        match tokio::time::timeout(timeout, response).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(_dropped)) if abandon() => Err(CallError::NotSent),
            Ok(Err(_dropped)) => Err(CallError::Lost),
            Err(_elapsed) => Err(CallError::TimedOut { sent: !abandon() }),
        }
    }
}

impl Transport for TcpTransport {
    async fn send(&self, to: NodeId, request: Rpc) -> Result<Rpc, TransportError> {
        self.call_raft(to, request).await
    }
}

/// Exponential backoff between dials: 50 ms doubling to 2 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: BACKOFF_INITIAL,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }
}

#[derive(Debug)]
enum DialError {
    Io(io::Error),
    TimedOut(Duration),
    Refused(String),
    Protocol(String),
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialError::Io(e) => write!(f, "{e}"),
            DialError::TimedOut(d) => write!(f, "no connection and handshake within {d:?}"),
            DialError::Refused(reason) => write!(f, "refused by the peer: {}", for_log(reason)),
            DialError::Protocol(what) => f.write_str(what),
        }
    }
}

/// Owns the connection to one peer for the transport's whole life: dial,
/// serve requests until the connection breaks, back off, dial again.
async fn peer_task(link: PeerLink, mut queue: mpsc::Receiver<Outgoing>) {
    let mut backoff = Backoff::new();
    // The last failure logged, so a peer that stays down is reported once
    // (and again when the reason changes), not on every retry.
    let mut last_failure: Option<String> = None;
    loop {
        match dial(&link).await {
            Ok(conn) => {
                tracing::info!(
                    peer = link.peer,
                    "connected to peer {} at {}",
                    link.peer,
                    link.addr
                );
                last_failure = None;
                let up_since = Instant::now();
                match run_connection(&link, conn, &mut queue).await {
                    ConnectionEnd::Shutdown => return,
                    ConnectionEnd::Broken(reason) => {
                        tracing::warn!(
                            peer = link.peer,
                            "connection to peer {} at {} lost: {reason}; reconnecting",
                            link.peer,
                            link.addr
                        );
                        if up_since.elapsed() >= STABLE_CONNECTION {
                            backoff.reset();
                            continue; // most losses are a peer restart: try again now
                        }
                    }
                }
            }
            Err(e) => {
                let text = e.to_string();
                if last_failure.as_deref() == Some(text.as_str()) {
                    tracing::debug!(
                        peer = link.peer,
                        "still cannot connect to peer {}: {text}",
                        link.peer
                    );
                } else if let DialError::Refused(reason) = &e {
                    tracing::error!(
                        peer = link.peer,
                        "peer {} at {} refused our connection: {}; will keep retrying",
                        link.peer,
                        link.addr,
                        for_log(reason)
                    );
                } else {
                    tracing::warn!(
                        peer = link.peer,
                        "cannot connect to peer {} at {}: {text}; will keep retrying",
                        link.peer,
                        link.addr
                    );
                }
                last_failure = Some(text);
            }
        }
        if !fail_requests_for(&mut queue, backoff.next_delay()).await {
            return;
        }
    }
}

/// Waits `delay`, failing at once every request that arrives meanwhile (the
/// peer is known to be unreachable). False if the transport was dropped.
async fn fail_requests_for(queue: &mut mpsc::Receiver<Outgoing>, delay: Duration) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            next = queue.recv() => match next {
                // Dropped while QUEUED: the caller reports "not sent".
                Some(outgoing) => drop(outgoing),
                None => return false,
            },
        }
    }
}

async fn dial(link: &PeerLink) -> Result<(FrameReader, FrameWriter), DialError> {
    match tokio::time::timeout(link.connect_timeout, dial_and_greet(link)).await {
        Ok(result) => result,
        Err(_) => Err(DialError::TimedOut(link.connect_timeout)),
    }
}

async fn dial_and_greet(link: &PeerLink) -> Result<(FrameReader, FrameWriter), DialError> {
    let stream = TcpStream::connect(link.addr.as_str())
        .await
        .map_err(DialError::Io)?;
    // Small frames on the commit path must not wait for Nagle.
    stream.set_nodelay(true).map_err(DialError::Io)?;
    let (mut reader, mut writer) = framed(stream);
    let hello = encode_frame(&Frame::Hello {
        version: PROTOCOL_VERSION,
        cluster_id: link.cluster_id.clone(),
        from: link.me,
        to: link.peer,
        incarnation: link.identity.incarnation,
    })
    .map_err(|e| DialError::Protocol(format!("cannot encode the hello: {e}")))?;
    writer.send(hello).await.map_err(DialError::Io)?;
    match reader.next().await {
        None => Err(DialError::Protocol(
            "the peer closed the connection during the handshake".into(),
        )),
        Some(Err(e)) => Err(DialError::Io(e)),
        Some(Ok(bytes)) => match decode_frame(&bytes) {
            Ok(Frame::HelloOk {
                incarnation,
                verdict,
            }) => {
                // raft::incarnation: the acceptor's incarnation is in our
                // book, and its verdict on ours in our vote right, before
                // this connection carries a vote or anything else.
                let identity = &link.identity;
                identity
                    .judge(link.peer, incarnation)
                    .await
                    .map_err(DialError::Io)?;
                identity
                    .on_verdict(link.peer, verdict)
                    .await
                    .map_err(DialError::Io)?;
                Ok((reader, writer))
            }
            Ok(Frame::HelloRefused { reason }) => Err(DialError::Refused(reason)),
            Ok(other) => Err(DialError::Protocol(format!(
                "unexpected {} frame during the handshake",
                other.kind()
            ))),
            Err(e) => Err(DialError::Protocol(format!(
                "undecodable handshake reply ({e}); is it a raftkv peer of protocol version {PROTOCOL_VERSION}?"
            ))),
        },
    }
}

enum ConnectionEnd {
    /// Every transport handle is gone.
    Shutdown,
    Broken(String),
}

/// The requests written on one connection and not yet answered.
#[derive(Default)]
struct InFlight {
    waiters: Mutex<HashMap<u64, oneshot::Sender<ResponseBody>>>,
    /// Set by the reader on every frame; the writer's tick checks it after a ping.
    heard: AtomicBool,
}

/// Runs one established connection: a writer and a reader, concurrently,
/// until either stops.
async fn run_connection(
    link: &PeerLink,
    (reader, writer): (FrameReader, FrameWriter),
    queue: &mut mpsc::Receiver<Outgoing>,
) -> ConnectionEnd {
    let in_flight = InFlight::default();
    let end = tokio::select! {
        reason = read_responses(reader, &in_flight) => ConnectionEnd::Broken(reason),
        end = write_requests(link, writer, queue, &in_flight) => end,
    };
    // What was written and not answered is lost with the connection:
    // dropping the waiters fails their callers (with "may have arrived").
    lock(&in_flight.waiters).clear();
    end
}

/// Matches responses to waiting callers. Returns why the connection ended.
async fn read_responses(mut reader: FrameReader, in_flight: &InFlight) -> String {
    loop {
        let bytes = match reader.next().await {
            None => return "closed by the peer".into(),
            Some(Err(e)) => return format!("read failed: {e}"),
            Some(Ok(bytes)) => bytes,
        };
        in_flight.heard.store(true, Ordering::Relaxed);
        match decode_frame(&bytes) {
            Ok(Frame::Response { id, body }) => {
                let waiter = lock(&in_flight.waiters).remove(&id);
                // No waiter: its caller timed out and was swept. Fine.
                if let Some(waiter) = waiter {
                    let _ = waiter.send(body);
                }
            }
            Ok(Frame::Pong) => {}
            Ok(other) => return format!("protocol error: unexpected {} frame", other.kind()),
            Err(e) => return format!("protocol error: undecodable frame ({e})"),
        }
    }
}

/// Writes queued requests as they come (never waiting for replies), and
/// once per tick sweeps abandoned waiters and pings if requests are pending.
async fn write_requests(
    link: &PeerLink,
    mut writer: FrameWriter,
    queue: &mut mpsc::Receiver<Outgoing>,
    in_flight: &InFlight,
) -> ConnectionEnd {
    let period = link.request_timeout.clamp(MIN_TICK, MAX_TICK);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ping = match encode_frame(&Frame::Ping) {
        Ok(ping) => ping,
        Err(e) => return ConnectionEnd::Broken(format!("cannot encode a ping: {e}")),
    };
    let mut ping_outstanding = false;
    loop {
        tokio::select! {
            next = queue.recv() => {
                let Some(first) = next else { return ConnectionEnd::Shutdown };
                let mut batch = Some(first);
                let mut written = 0;
                while let Some(outgoing) = batch.take() {
                    if let Err(e) = write_request(&mut writer, in_flight, outgoing).await {
                        return ConnectionEnd::Broken(format!("write failed: {e}"));
                    }
                    written += 1;
                    if written < WRITE_BATCH {
                        batch = queue.try_recv().ok();
                    }
                }
                if let Err(e) = SinkExt::<Bytes>::flush(&mut writer).await {
                    return ConnectionEnd::Broken(format!("write failed: {e}"));
                }
            }
            _ = tick.tick() => {
                let heard = in_flight.heard.swap(false, Ordering::Relaxed);
                if ping_outstanding && !heard {
                    return ConnectionEnd::Broken(format!(
                        "no answer to a ping within {period:?}"
                    ));
                }
                let busy = {
                    let mut waiters = lock(&in_flight.waiters);
                    // Callers that timed out: forget them (late replies are ignored).
                    waiters.retain(|_, waiter| !waiter.is_closed());
                    !waiters.is_empty()
                };
                ping_outstanding = busy;
                if busy {
                    if let Err(e) = writer.send(ping.clone()).await {
                        return ConnectionEnd::Broken(format!("write failed: {e}"));
                    }
                }
            }
        }
    }
}

/// Registers the waiter, then buffers the frame (registering first: the
/// response can come back as soon as the bytes leave).
async fn write_request(
    writer: &mut FrameWriter,
    in_flight: &InFlight,
    outgoing: Outgoing,
) -> io::Result<()> {
    let Outgoing {
        id,
        frame,
        state,
        reply,
    } = outgoing;
    if reply.is_closed()
        || state
            .compare_exchange(QUEUED, SENT, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return Ok(()); // the caller gave up before it was sent
    }
    lock(&in_flight.waiters).insert(id, reply);
    writer.feed(frame).await
}

// ---------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------

struct Acceptor {
    config: PeerConfig,
    rpcs: mpsc::Sender<IncomingRpc>,
    forwards: mpsc::Sender<IncomingForward>,
    /// The live connection of each peer (by accept sequence number). A peer
    /// has one dialer, so a newer connection means the older one is dead
    /// (half-open after a crash, say): dropping its sender closes it.
    live: Mutex<HashMap<NodeId, (u64, oneshot::Sender<()>)>>,
    /// When each (address, reason) refusal was last logged at error level.
    refusals_logged: Mutex<HashMap<(IpAddr, String), Instant>>,
}

impl Acceptor {
    fn log_refusal(&self, addr: SocketAddr, reason: &str) {
        let now = Instant::now();
        let fresh = {
            let mut logged = lock(&self.refusals_logged);
            if logged.len() > 1024 {
                logged.clear(); // bounded, whatever connects
            }
            match logged.get(&(addr.ip(), reason.to_owned())) {
                Some(at) if now.duration_since(*at) < REFUSAL_LOG_INTERVAL => false,
                _ => {
                    logged.insert((addr.ip(), reason.to_owned()), now);
                    true
                }
            }
        };
        if fresh {
            tracing::error!("refusing peer connection from {addr}: {reason}");
        } else {
            tracing::debug!("refusing peer connection from {addr}: {reason}");
        }
    }

    /// Why a hello is not acceptable, or the peer's id and incarnation.
    fn check_hello(&self, bytes: &[u8]) -> Result<(NodeId, u64), String> {
        let ours = &self.config;
        match decode_frame(bytes) {
            Ok(Frame::Hello {
                version,
                cluster_id,
                from,
                to,
                incarnation,
            }) => {
                if version != PROTOCOL_VERSION {
                    Err(format!(
                        "protocol version mismatch (theirs {version}, ours {PROTOCOL_VERSION})"
                    ))
                } else if cluster_id != ours.cluster_id {
                    Err(format!(
                        "cluster id mismatch (theirs {}, ours {})",
                        for_log(&cluster_id),
                        for_log(&ours.cluster_id)
                    ))
                } else if to != ours.id {
                    Err(format!(
                        "the hello is for node {to} but this is node {}; check the peer addresses",
                        ours.id
                    ))
                } else if from == ours.id || !ours.peers.contains_key(&from) {
                    let mut known: Vec<NodeId> = ours.peers.keys().copied().collect();
                    known.sort_unstable();
                    Err(format!("node {from} is not one of our peers {known:?}"))
                } else {
                    Ok((from, incarnation))
                }
            }
            Ok(other) => Err(format!("expected a hello, got a {} frame", other.kind())),
            Err(e) => match peek_hello_version(bytes) {
                Some(version) if version != PROTOCOL_VERSION => Err(format!(
                    "protocol version mismatch (theirs {version}, ours {PROTOCOL_VERSION})"
                )),
                _ => Err(format!(
                    "malformed hello ({e}); not a raftkv peer, or an incompatible version"
                )),
            },
        }
    }
}

/// Accepts peer connections on `listener`; delivers raft requests to `rpcs`
/// and forwards to `forwards`. Runs until the returned handle is aborted (or
/// the runtime stops); aborting it also closes every connection it accepted.
/// Must be called within a tokio runtime.
pub fn serve(
    listener: TcpListener,
    config: PeerConfig,
    rpcs: mpsc::Sender<IncomingRpc>,
    forwards: mpsc::Sender<IncomingForward>,
) -> JoinHandle<()> {
    let acceptor = Arc::new(Acceptor {
        config,
        rpcs,
        forwards,
        live: Mutex::new(HashMap::new()),
        refusals_logged: Mutex::new(HashMap::new()),
    });
    tokio::spawn(accept_loop(listener, acceptor))
}

async fn accept_loop(listener: TcpListener, acceptor: Arc<Acceptor>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(
            node = acceptor.config.id,
            "accepting peer connections on {addr}"
        );
    }
    // The connections live in a JoinSet owned by this task, so aborting the
    // task (dropping the set) closes them too.
    let mut connections = JoinSet::new();
    let mut seq: u64 = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    seq += 1;
                    connections.spawn(serve_connection(Arc::clone(&acceptor), stream, addr, seq));
                }
                Err(e) => {
                    tracing::warn!("accepting a peer connection failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!("a peer connection task panicked: {e}");
                    }
                }
            }
        }
    }
}

async fn serve_connection(acceptor: Arc<Acceptor>, stream: TcpStream, addr: SocketAddr, seq: u64) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY on the connection from {addr}: {e}");
    }
    let (mut reader, mut writer) = framed(stream);
    let Some(from) = accept_handshake(&acceptor, addr, &mut reader, &mut writer).await else {
        return;
    };
    let (superseded_tx, superseded) = oneshot::channel();
    if lock(&acceptor.live)
        .insert(from, (seq, superseded_tx))
        .is_some()
    {
        tracing::info!(
            peer = from,
            "node {from} reconnected from {addr}; closing its previous connection"
        );
    }
    tracing::debug!(
        peer = from,
        "accepted peer connection from node {from} at {addr}"
    );
    serve_requests(&acceptor, from, addr, reader, writer, superseded).await;
    let mut live = lock(&acceptor.live);
    if live.get(&from).is_some_and(|(s, _)| *s == seq) {
        live.remove(&from);
    }
}

/// Reads and judges the hello; answers HelloOk or HelloRefused. The peer's
/// id if it may go on.
async fn accept_handshake(
    acceptor: &Acceptor,
    addr: SocketAddr,
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
) -> Option<NodeId> {
    let wait = acceptor.config.connect_timeout;
    let verdict = match tokio::time::timeout(wait, reader.next()).await {
        Err(_) => {
            tracing::warn!("closing peer connection from {addr}: no hello within {wait:?}");
            return None;
        }
        Ok(None) => {
            tracing::debug!("peer connection from {addr} closed before its hello");
            return None;
        }
        Ok(Some(Err(e))) => Err(format!(
            "malformed hello ({e}); not a raftkv peer, or an incompatible version"
        )),
        Ok(Some(Ok(bytes))) => acceptor.check_hello(&bytes),
    };
    match verdict {
        Ok((from, incarnation)) => {
            // raft::incarnation: the dialer's incarnation is in our book
            // (durably) before any of its requests is read.
            let verdict = match acceptor.config.identity.judge(from, incarnation).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(
                        peer = from,
                        "cannot store node {from}'s incarnation: {e}; closing its connection"
                    );
                    return None;
                }
            };
            let ok = match encode_frame(&Frame::HelloOk {
                incarnation: acceptor.config.identity.incarnation,
                verdict,
            }) {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::error!("cannot encode HelloOk: {e}");
                    return None;
                }
            };
            match tokio::time::timeout(wait, writer.send(ok)).await {
                Ok(Ok(())) => Some(from),
                _ => {
                    tracing::debug!("peer connection from {addr} failed during the handshake");
                    None
                }
            }
        }
        Err(reason) => {
            acceptor.log_refusal(addr, &reason);
            // Best effort: tell the dialer why, so it can log it too.
            if let Ok(refusal) = encode_frame(&Frame::HelloRefused { reason }) {
                let _ = tokio::time::timeout(wait, async {
                    writer.send(refusal).await?;
                    SinkExt::<Bytes>::close(writer).await
                })
                .await;
            }
            None
        }
    }
}

type ReplyFuture = Pin<Box<dyn Future<Output = (u64, ResponseBody)> + Send>>;

/// Serves one accepted connection: reads requests and hands them over while
/// earlier ones are still being answered; replies go out as they complete.
async fn serve_requests(
    acceptor: &Acceptor,
    from: NodeId,
    addr: SocketAddr,
    mut reader: FrameReader,
    writer: FrameWriter,
    mut superseded: oneshot::Receiver<()>,
) {
    let (out, out_rx) = mpsc::channel::<Bytes>(WRITER_QUEUE_CAPACITY);
    let write_all = write_frames(writer, out_rx);
    tokio::pin!(write_all);
    let mut replies: FuturesUnordered<ReplyFuture> = FuturesUnordered::new();
    loop {
        tokio::select! {
            _ = &mut superseded => return,
            result = &mut write_all => {
                if let Err(e) = result {
                    tracing::debug!(peer = from, "writing to node {from} at {addr} failed: {e}");
                }
                return;
            }
            Some((id, body)) = replies.next(), if !replies.is_empty() => {
                queue_response(&out, from, id, body);
            }
            next = reader.next(), if replies.len() < MAX_IN_FLIGHT_PER_CONNECTION => {
                let bytes = match next {
                    None => {
                        tracing::debug!(peer = from, "node {from} at {addr} closed its connection");
                        return;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(peer = from, "closing peer connection from node {from} at {addr}: bad frame: {e}");
                        return;
                    }
                    Some(Ok(bytes)) => bytes,
                };
                match decode_frame(&bytes) {
                    Ok(Frame::Request { id, body }) => {
                        match body {
                            RequestBody::Raft(rpc) if rpc.is_request() => {
                                let (reply, replied) = oneshot::channel();
                                let incoming = IncomingRpc { from, rpc, reply };
                                // Awaiting a full inbox stops reading: backpressure
                                // through TCP rather than an unbounded buffer.
                                if acceptor.rpcs.send(incoming).await.is_err() {
                                    queue_response(&out, from, id, ResponseBody::NoReply { delivered: false });
                                } else {
                                    replies.push(Box::pin(async move {
                                        let body = match replied.await {
                                            Ok(rpc) => ResponseBody::Raft(rpc),
                                            Err(_) => ResponseBody::NoReply { delivered: true },
                                        };
                                        (id, body)
                                    }));
                                }
                            }
                            RequestBody::Raft(rpc) => {
                                tracing::warn!(peer = from, "closing peer connection from node {from} at {addr}: a {} is not a request", rpc.kind());
                                return;
                            }
                            RequestBody::Forward(payload) => {
                                let (reply, replied) = oneshot::channel();
                                let incoming = IncomingForward { from, payload, reply };
                                if acceptor.forwards.send(incoming).await.is_err() {
                                    queue_response(&out, from, id, ResponseBody::NoReply { delivered: false });
                                } else {
                                    replies.push(Box::pin(async move {
                                        let body = match replied.await {
                                            Ok(reply) => ResponseBody::Forward(reply),
                                            Err(_) => ResponseBody::NoReply { delivered: true },
                                        };
                                        (id, body)
                                    }));
                                }
                            }
                        }
                    }
                    Ok(Frame::Ping) => {
                        if let Ok(pong) = encode_frame(&Frame::Pong) {
                            let _ = out.try_send(pong); // full: replies are flowing anyway
                        }
                    }
                    Ok(other) => {
                        tracing::warn!(peer = from, "closing peer connection from node {from} at {addr}: unexpected {} frame", other.kind());
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(peer = from, "closing peer connection from node {from} at {addr}: undecodable frame: {e}");
                        return;
                    }
                }
            }
        }
    }
}

/// Queues a response for the connection's writer. A full queue means the
/// dialer is not reading: the response is dropped and its caller times out.
fn queue_response(out: &mpsc::Sender<Bytes>, from: NodeId, id: u64, body: ResponseBody) {
    let mut frame = encode_frame(&Frame::Response { id, body });
    if frame.as_ref().is_ok_and(|f| f.len() > MAX_FRAME_LEN) {
        tracing::error!(
            peer = from,
            "reply to node {from} is over the {MAX_FRAME_LEN}-byte frame limit; sending NoReply"
        );
        frame = encode_frame(&Frame::Response {
            id,
            body: ResponseBody::NoReply { delivered: true },
        });
    }
    match frame {
        Ok(frame) => match out.try_send(frame) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    peer = from,
                    "dropping a reply to node {from}: its connection is not draining"
                );
            }
        },
        Err(e) => tracing::error!(peer = from, "cannot encode a reply to node {from}: {e}"),
    }
}

/// Writes queued frames, flushing once per burst.
async fn write_frames(
    mut writer: FrameWriter,
    mut frames: mpsc::Receiver<Bytes>,
) -> io::Result<()> {
    while let Some(first) = frames.recv().await {
        writer.feed(first).await?;
        for _ in 1..WRITE_BATCH {
            match frames.try_recv() {
                Ok(frame) => writer.feed(frame).await?,
                Err(_) => break,
            }
        }
        SinkExt::<Bytes>::flush(&mut writer).await?;
    }
    Ok(())
}
