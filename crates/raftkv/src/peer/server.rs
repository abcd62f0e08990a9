//! The accepting side: the handshake, then requests read, handed to the
//! node, and answered in any order.

use super::*;

pub(super) struct Acceptor {
    pub(super) config: PeerConfig,
    pub(super) rpcs: mpsc::Sender<IncomingRpc>,
    pub(super) forwards: mpsc::Sender<IncomingForward>,
    /// The live connection of each peer (by accept sequence number). A peer
    /// has one dialer, so a newer connection means the older one is dead
    /// (half-open after a crash, say): dropping its sender closes it.
    pub(super) live: Mutex<HashMap<NodeId, (u64, oneshot::Sender<()>)>>,
    /// When each (address, reason) refusal was last logged at error level.
    pub(super) refusals_logged: Mutex<HashMap<(IpAddr, String), Instant>>,
}

impl Acceptor {
    pub(super) fn log_refusal(&self, addr: SocketAddr, reason: &str) {
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
    pub(super) fn check_hello(&self, bytes: &[u8]) -> Result<(NodeId, u64), String> {
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
                } else if from == ours.id || from == 0 {
                    // Any other node of this cluster may dial: a leader may
                    // be a member this node has not heard of yet (thesis
                    // §4.1: it learns the configuration from that leader).
                    Err(format!("node {from} cannot be a peer of node {}", ours.id))
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

pub(super) async fn accept_loop(listener: TcpListener, acceptor: Arc<Acceptor>) {
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

pub(super) async fn serve_connection(
    acceptor: Arc<Acceptor>,
    stream: TcpStream,
    addr: SocketAddr,
    seq: u64,
) {
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
pub(super) async fn accept_handshake(
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

pub(super) type ReplyFuture = Pin<Box<dyn Future<Output = (u64, ResponseBody)> + Send>>;

/// Serves one accepted connection: reads requests and hands them over while
/// earlier ones are still being answered; replies go out as they complete.
pub(super) async fn serve_requests(
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
pub(super) fn queue_response(out: &mpsc::Sender<Bytes>, from: NodeId, id: u64, body: ResponseBody) {
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
pub(super) async fn write_frames(
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
