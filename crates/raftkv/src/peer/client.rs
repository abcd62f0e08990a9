//! The dialing side: `TcpTransport`, one task and one pipelined
//! connection per peer, with reconnects, pings and request ids.

use super::*;
use raft::Membership;
use std::sync::RwLock;

/// Life of one request, shared by its caller and the peer's task, so a
/// timed-out forward can tell "never written" (safe to retry elsewhere)
/// from "written, fate unknown". Exactly one side wins the transition out
/// of `QUEUED`.
pub(super) const QUEUED: u8 = 0;
pub(super) const SENT: u8 = 1;
pub(super) const ABANDONED: u8 = 2;

/// A request on its way to the peer's task. Dropping it without a reply
/// fails the caller (who then looks at `state` to say why).
pub(super) struct Outgoing {
    pub(super) id: u64,
    pub(super) frame: Bytes,
    pub(super) state: Arc<AtomicU8>,
    pub(super) reply: oneshot::Sender<ResponseBody>,
}

/// Why a call got no response body (mapped to the caller's error type).
pub(super) enum CallError {
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
pub(super) struct PeerLink {
    pub(super) me: NodeId,
    pub(super) identity: Arc<NodeIdentity>,
    pub(super) peer: NodeId,
    pub(super) addr: String,
    pub(super) cluster_id: String,
    pub(super) request_timeout: Duration,
    pub(super) connect_timeout: Duration,
}

pub(super) struct PeerSlot {
    /// Where the peer's task dials.
    pub(super) addr: String,
    pub(super) queue: mpsc::Sender<Outgoing>,
    pub(super) next_id: AtomicU64,
    pub(super) started: AtomicBool,
    /// The task's half, until the task is spawned (at `new` when a runtime
    /// is running, else on first use).
    pub(super) unstarted: Mutex<Option<(mpsc::Receiver<Outgoing>, PeerLink)>>,
}

impl PeerSlot {
    /// Spawns the peer's task if that has not happened yet. False when
    /// there is no tokio runtime to spawn it on.
    pub(super) fn ensure_started(&self) -> bool {
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

pub(super) struct ClientInner {
    pub(super) me: NodeId,
    pub(super) request_timeout: Duration,
    /// One slot per peer, replaced as the configuration changes (thesis
    /// §4.1: a new member's address arrives in the entry that adds it).
    /// Read on every request, written only on a configuration change.
    pub(super) peers: RwLock<HashMap<NodeId, Arc<PeerSlot>>>,
    /// What a new peer's link is made of.
    pub(super) config: PeerConfig,
}

/// Raft's [`Transport`] (and client-request forwarding) over TCP. Cheap to
/// clone; the background tasks stop once every clone is dropped.
#[derive(Clone)]
pub struct TcpTransport {
    inner: Arc<ClientInner>,
}

impl fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut peers: Vec<NodeId> = read(&self.inner.peers).keys().copied().collect();
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
            peers.insert(peer, Arc::new(PeerSlot::new(&config, peer, addr.clone())));
        }
        TcpTransport {
            inner: Arc::new(ClientInner {
                me: config.id,
                request_timeout: config.request_timeout,
                peers: RwLock::new(peers),
                config,
            }),
        }
    }

    /// Follows a new configuration: members with a new address get a new
    /// link (the old one's task ends with its queue); members whose address
    /// the configuration does not say (one from before addresses were
    /// kept) keep theirs. Members that left keep theirs too: the leader
    /// still sends a removed server the entry that removes it
    /// (`RaftCore::replication_targets`), and an idle link costs nothing.
    pub fn set_members(&self, membership: &Membership) {
        let me = self.inner.me;
        let mut peers = write(&self.inner.peers);
        for (&id, addr) in membership.addresses() {
            if id == me || !membership.contains(id) {
                continue;
            }
            if peers.get(&id).is_some_and(|slot| slot.addr == *addr) {
                continue;
            }
            tracing::info!(peer = id, "peer {id} is at {addr}");
            peers.insert(
                id,
                Arc::new(PeerSlot::new(&self.inner.config, id, addr.clone())),
            );
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

    pub(super) async fn call_raft(&self, to: NodeId, rpc: Rpc) -> Result<Rpc, TransportError> {
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

    pub(super) async fn call(
        &self,
        to: NodeId,
        body: RequestBody,
        timeout: Duration,
    ) -> Result<ResponseBody, CallError> {
        let slot = read(&self.inner.peers)
            .get(&to)
            .cloned()
            .ok_or(CallError::UnknownPeer)?;
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

    fn members_changed(&self, membership: &Membership) {
        self.set_members(membership);
    }
}

impl PeerSlot {
    /// A slot for `peer` at `addr`; its task starts at once inside a tokio
    /// runtime, else on first use.
    fn new(config: &PeerConfig, peer: NodeId, addr: String) -> PeerSlot {
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
        let slot = PeerSlot {
            addr,
            queue,
            next_id: AtomicU64::new(1),
            started: AtomicBool::new(false),
            unstarted: Mutex::new(Some((rx, link))),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            slot.ensure_started();
        }
        slot
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// Exponential backoff between dials: 50 ms doubling to 2 s.
pub(super) struct Backoff {
    pub(super) next: Duration,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Backoff {
            next: BACKOFF_INITIAL,
        }
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }

    pub(super) fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }
}

#[derive(Debug)]
pub(super) enum DialError {
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
pub(super) async fn peer_task(link: PeerLink, mut queue: mpsc::Receiver<Outgoing>) {
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
pub(super) async fn fail_requests_for(
    queue: &mut mpsc::Receiver<Outgoing>,
    delay: Duration,
) -> bool {
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

pub(super) async fn dial(link: &PeerLink) -> Result<(FrameReader, FrameWriter), DialError> {
    let greeted = tokio::time::timeout(link.connect_timeout, dial_and_greet(link)).await;
    let (reader, writer, incarnation, verdict) = match greeted {
        Ok(result) => result?,
        Err(_) => return Err(DialError::TimedOut(link.connect_timeout)),
    };
    // raft::incarnation: the acceptor's incarnation is in our book, and its
    // verdict on ours in our vote right, before this connection carries a
    // vote or anything else. Outside the dial's timeout: each may fsync,
    // and a store cut off by a timeout would have to be redone by a later
    // handshake (a busy disk is no reason to drop a good connection).
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

/// Connects and exchanges the hello: the connection, the acceptor's
/// incarnation and its verdict on ours.
pub(super) async fn dial_and_greet(
    link: &PeerLink,
) -> Result<(FrameReader, FrameWriter, u64, PeerVerdict), DialError> {
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
            }) => Ok((reader, writer, incarnation, verdict)),
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

pub(super) enum ConnectionEnd {
    /// Every transport handle is gone.
    Shutdown,
    Broken(String),
}

/// The requests written on one connection and not yet answered.
#[derive(Default)]
pub(super) struct InFlight {
    pub(super) waiters: Mutex<HashMap<u64, oneshot::Sender<ResponseBody>>>,
    /// Set by the reader on every frame; the writer's tick checks it after a ping.
    pub(super) heard: AtomicBool,
}

/// Runs one established connection: a writer and a reader, concurrently,
/// until either stops.
pub(super) async fn run_connection(
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
pub(super) async fn read_responses(mut reader: FrameReader, in_flight: &InFlight) -> String {
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
pub(super) async fn write_requests(
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
pub(super) async fn write_request(
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
