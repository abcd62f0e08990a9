//! The TCP peer transport over real loopback sockets: round trips,
//! pipelining, handshake refusals, bad input, failures and reconnection.
//!
//! Every wait is bounded by `tokio::time::timeout`, so a regression fails a
//! test instead of hanging it. The tests run on the current-thread runtime so
//! a thread-local tracing subscriber sees the transport's log lines.

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use raft::{
    AppendEntriesArgs, AppendEntriesReply, IncomingRpc, NodeId, PeerVerdict, RequestVoteArgs,
    RequestVoteReply, Rpc, TransportError, TransportExt,
};
use raftkv::identity::NodeIdentity;
use raftkv::peer::{
    decode_frame, encode_frame, frame_codec, serve, ForwardError, Frame, IncomingForward,
    PeerConfig, RequestBody, TcpTransport, MAX_FRAME_LEN, PROTOCOL_VERSION,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

const CLUSTER: &str = "cluster-test";
/// The longest any single wait in these tests may take.
const BOUND: Duration = Duration::from_millis(1500);

fn config(id: NodeId, cluster: &str, peers: &[(NodeId, &str)]) -> PeerConfig {
    PeerConfig {
        id,
        cluster_id: cluster.to_string(),
        peers: peers.iter().map(|&(i, a)| (i, a.to_string())).collect(),
        request_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_millis(500),
        identity: Arc::new(NodeIdentity::ephemeral(id, 1000 + id)),
    }
}

async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

/// An address nothing listens on (bound, then released).
async fn dead_addr() -> String {
    let (listener, addr) = bind().await;
    drop(listener);
    addr
}

struct Server {
    handle: JoinHandle<()>,
    rpcs: mpsc::Receiver<IncomingRpc>,
    forwards: mpsc::Receiver<IncomingForward>,
}

fn start(listener: TcpListener, config: PeerConfig) -> Server {
    let (rpc_tx, rpcs) = mpsc::channel(1024);
    let (fwd_tx, forwards) = mpsc::channel(1024);
    let handle = serve(listener, config, rpc_tx, fwd_tx);
    Server {
        handle,
        rpcs,
        forwards,
    }
}

/// What an obliging node answers: votes granted, appends accepted.
fn answer(rpc: &Rpc) -> Rpc {
    match rpc {
        Rpc::RequestVote(a) => Rpc::RequestVoteReply(RequestVoteReply {
            term: a.term,
            vote_granted: true,
            pre_vote: a.pre_vote,
        }),
        Rpc::AppendEntries(a) => Rpc::AppendEntriesReply(AppendEntriesReply {
            term: a.term,
            success: true,
            match_index: a.prev_log_index + a.entries.len() as u64,
            rejected_prev_index: 0,
            conflict_index: 0,
            conflict_term: None,
            read_round: a.read_round,
            voter: true,
        }),
        other => panic!("not a request: {other:?}"),
    }
}

/// Answers every raft request at once.
fn spawn_responder(mut rpcs: mpsc::Receiver<IncomingRpc>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(incoming) = rpcs.recv().await {
            let _ = incoming.reply.send(answer(&incoming.rpc));
        }
    })
}

fn vote(term: u64, candidate: NodeId) -> RequestVoteArgs {
    RequestVoteArgs {
        term,
        candidate_id: candidate,
        last_log_index: 7,
        last_log_term: 3,
        pre_vote: false,
        leadership_transfer: false,
    }
}

fn append(leader: NodeId, prev_log_index: u64) -> AppendEntriesArgs {
    AppendEntriesArgs {
        term: 4,
        leader_id: leader,
        prev_log_index,
        prev_log_term: 3,
        entries: vec![raft::LogEntry::new(
            4,
            prev_log_index + 1,
            b"set k v".to_vec(),
        )],
        leader_commit: 2,
        read_round: prev_log_index,
    }
}

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(BOUND, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no result within {BOUND:?}"),
    }
}

/// Retries `request_vote` until it succeeds (the connection is up).
async fn wait_until_connected(transport: &TcpTransport, to: NodeId) {
    within("connecting", async {
        loop {
            if transport.request_vote(to, vote(1, 0)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// A raw peer connection speaking the frame format by hand.
async fn raw_connect(addr: &str) -> Framed<TcpStream, LengthDelimitedCodec> {
    Framed::new(TcpStream::connect(addr).await.unwrap(), frame_codec())
}

async fn raw_send(conn: &mut Framed<TcpStream, LengthDelimitedCodec>, frame: &Frame) {
    conn.send(encode_frame(frame).unwrap()).await.unwrap();
}

async fn raw_recv(conn: &mut Framed<TcpStream, LengthDelimitedCodec>) -> Frame {
    let bytes = within("reading a frame", conn.next()).await;
    decode_frame(&bytes.expect("connection closed").expect("read failed")).unwrap()
}

/// Asserts that the acceptor closes `conn` (EOF, or a reset).
async fn assert_closed(conn: &mut Framed<TcpStream, LengthDelimitedCodec>) {
    let next = within("waiting for the close", conn.next()).await;
    assert!(
        !matches!(next, Some(Ok(_))),
        "expected the connection to be closed, got a frame"
    );
}

/// A raw connection that completed the handshake as node `from`.
async fn raw_peer(addr: &str, from: NodeId, to: NodeId) -> Framed<TcpStream, LengthDelimitedCodec> {
    let mut conn = raw_connect(addr).await;
    raw_send(
        &mut conn,
        &Frame::Hello {
            version: PROTOCOL_VERSION,
            cluster_id: CLUSTER.into(),
            from,
            to,
            incarnation: 1000 + from,
        },
    )
    .await;
    assert!(
        matches!(
            raw_recv(&mut conn).await,
            Frame::HelloOk {
                incarnation,
                verdict: PeerVerdict::New | PeerVerdict::Known,
            } if incarnation == 1000 + to
        ),
        "the acceptor answers with its incarnation and its verdict on ours"
    );
    conn
}

/// Log lines written while the guard lives (on this thread).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until some line contains every one of `parts`.
    async fn wait_for_line(&self, parts: &[&str]) -> String {
        let found = tokio::time::timeout(BOUND, async {
            loop {
                if let Some(line) = self
                    .text()
                    .lines()
                    .find(|l| parts.iter().all(|p| l.contains(p)))
                {
                    return line.to_string();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        match found {
            Ok(line) => line,
            Err(_) => panic!("no log line with {parts:?}; logs:\n{}", self.text()),
        }
    }
}

#[tokio::test]
async fn request_vote_and_append_entries_round_trip_between_two_nodes() {
    let (l1, a1) = bind().await;
    let (l2, a2) = bind().await;
    let c1 = config(1, CLUSTER, &[(2, &a2)]);
    let c2 = config(2, CLUSTER, &[(1, &a1)]);
    let mut s1 = start(l1, c1.clone());
    let mut s2 = start(l2, c2.clone());
    let t1 = TcpTransport::new(c1);
    let t2 = TcpTransport::new(c2);

    // 1 → 2: RequestVote, answered by hand to see what arrived.
    let call = tokio::spawn({
        let t1 = t1.clone();
        async move { t1.request_vote(2, vote(5, 1)).await }
    });
    let incoming = within("vote arriving", s2.rpcs.recv()).await.unwrap();
    assert_eq!(incoming.from, 1);
    assert_eq!(incoming.rpc, Rpc::RequestVote(vote(5, 1)));
    let reply = RequestVoteReply {
        term: 5,
        vote_granted: true,
        pre_vote: false,
    };
    incoming
        .reply
        .send(Rpc::RequestVoteReply(reply.clone()))
        .unwrap();
    assert_eq!(within("vote reply", call).await.unwrap(), Ok(reply));

    // 2 → 1: AppendEntries, over node 2's own connection.
    let call = tokio::spawn({
        let t2 = t2.clone();
        async move { t2.append_entries(1, append(2, 9)).await }
    });
    let incoming = within("append arriving", s1.rpcs.recv()).await.unwrap();
    assert_eq!(incoming.from, 2);
    assert_eq!(incoming.rpc, Rpc::AppendEntries(append(2, 9)));
    let expected = answer(&incoming.rpc);
    incoming.reply.send(expected.clone()).unwrap();
    let got = within("append reply", call).await.unwrap().unwrap();
    assert_eq!(Rpc::AppendEntriesReply(got), expected);

    // And the other two directions, through responders.
    spawn_responder(s1.rpcs);
    spawn_responder(s2.rpcs);
    let r = within("append 1→2", t1.append_entries(2, append(1, 3)))
        .await
        .unwrap();
    assert_eq!((r.success, r.match_index), (true, 4));
    let r = within("vote 2→1", t2.request_vote(1, vote(6, 2)))
        .await
        .unwrap();
    assert!(r.vote_granted);
}

#[tokio::test]
async fn many_requests_in_flight_on_one_connection_are_matched_by_id() {
    const N: u64 = 500;
    let (l1, a1) = bind().await;
    let mut s1 = start(l1, config(1, CLUSTER, &[(2, "127.0.0.1:1")]));
    let t2 = TcpTransport::new(config(2, CLUSTER, &[(1, &a1)]));

    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for prev in 0..N {
        let t2 = t2.clone();
        calls.spawn(async move { (prev, t2.append_entries(1, append(2, prev * 10)).await) });
    }
    // Every request arrives before any is answered: the dialer pipelines.
    let mut held = Vec::new();
    for _ in 0..N {
        held.push(within("requests arriving", s1.rpcs.recv()).await.unwrap());
    }
    // Answer newest first, so replies come back in reverse order.
    while let Some(incoming) = held.pop() {
        let reply = answer(&incoming.rpc);
        incoming.reply.send(reply).unwrap();
    }
    let mut answered = 0;
    while let Some(done) = within("replies", calls.join_next()).await {
        let (prev, result) = done.unwrap();
        let reply = result.unwrap_or_else(|e| panic!("request {prev} failed: {e}"));
        assert_eq!(
            reply.match_index,
            prev * 10 + 1,
            "reply matched to the wrong request"
        );
        assert_eq!(reply.read_round, prev * 10);
        answered += 1;
    }
    assert_eq!(answered, N);
    eprintln!("{N} pipelined requests answered in {:?}", started.elapsed());
}

#[tokio::test]
async fn a_peer_from_another_cluster_is_refused() {
    let (logs, _guard) = Logs::capture();
    let (l1, a1) = bind().await;
    let mut s1 = start(l1, config(1, "alpha", &[(2, "127.0.0.1:1")]));
    let t2 = TcpTransport::new(config(2, "beta", &[(1, &a1)]));

    let result = within("refused vote", t2.request_vote(1, vote(1, 2))).await;
    assert_eq!(result, Err(TransportError::ConnectionFailed(1)));
    let result = within("refused forward", t2.forward(1, b"x".to_vec(), BOUND)).await;
    assert_eq!(result, Err(ForwardError::NotSent(1)));

    let acceptor = logs
        .wait_for_line(&[
            "ERROR",
            "refusing peer connection from 127.0.0.1:",
            "cluster id mismatch (theirs beta, ours alpha)",
        ])
        .await;
    let dialer = logs
        .wait_for_line(&[
            "ERROR",
            &format!("peer 1 at {a1} refused our connection"),
            "cluster id mismatch",
        ])
        .await;
    eprintln!("acceptor: {acceptor}\ndialer:   {dialer}");
    assert!(
        s1.rpcs.try_recv().is_err(),
        "a refused peer's request reached the node"
    );
    assert!(s1.forwards.try_recv().is_err());
}

#[tokio::test]
async fn a_peer_with_another_protocol_version_is_refused() {
    let (logs, _guard) = Logs::capture();
    let (l1, a1) = bind().await;
    let mut s1 = start(l1, config(1, CLUSTER, &[(2, "127.0.0.1:1")]));
    let theirs = PROTOCOL_VERSION + 1;

    let mut conn = raw_connect(&a1).await;
    raw_send(
        &mut conn,
        &Frame::Hello {
            version: theirs,
            cluster_id: CLUSTER.into(),
            from: 2,
            to: 1,
            incarnation: 1002,
        },
    )
    .await;
    let expected = format!("protocol version mismatch (theirs {theirs}, ours {PROTOCOL_VERSION})");
    match raw_recv(&mut conn).await {
        Frame::HelloRefused { reason } => assert_eq!(reason, expected),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_closed(&mut conn).await;
    logs.wait_for_line(&[
        "ERROR",
        "refusing peer connection from 127.0.0.1:",
        &expected,
    ])
    .await;

    // A future version whose hello no longer decodes as ours is still
    // recognised by its leading version number: variant 0, then the version.
    let mut conn = raw_connect(&a1).await;
    conn.send(bytes::Bytes::from_static(&[
        0, 9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]))
    .await
    .unwrap();
    match raw_recv(&mut conn).await {
        Frame::HelloRefused { reason } => {
            assert!(
                reason.contains("protocol version mismatch (theirs 9"),
                "{reason}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_closed(&mut conn).await;
    assert!(s1.rpcs.try_recv().is_err());
}

#[tokio::test]
async fn an_oversized_frame_closes_the_connection_without_harming_others() {
    let (logs, _guard) = Logs::capture();
    let (l1, a1) = bind().await;
    let s1 = start(
        l1,
        config(1, CLUSTER, &[(2, "127.0.0.1:1"), (3, "127.0.0.1:1")]),
    );
    spawn_responder(s1.rpcs);
    let t2 = TcpTransport::new(config(2, CLUSTER, &[(1, &a1)]));
    wait_until_connected(&t2, 1).await;

    // Node "3" announces a frame one byte over the limit.
    let mut conn = raw_peer(&a1, 3, 1).await;
    let header = u32::try_from(MAX_FRAME_LEN + 1).unwrap().to_be_bytes();
    conn.get_mut().write_all(&header).await.unwrap();
    conn.get_mut().write_all(&[0u8; 1024]).await.unwrap();
    assert_closed(&mut conn).await;
    logs.wait_for_line(&[
        "WARN",
        "closing peer connection from node 3",
        "frame size too big",
    ])
    .await;

    // Node 2's connection never noticed.
    let r = within("append after", t2.append_entries(1, append(2, 1)))
        .await
        .unwrap();
    assert!(r.success);
    assert!(
        !logs.text().contains("connection to peer 1"),
        "node 2's connection was disturbed"
    );
}

#[tokio::test]
async fn garbage_bytes_close_only_that_connection() {
    let (logs, _guard) = Logs::capture();
    let (l1, a1) = bind().await;
    let s1 = start(
        l1,
        config(1, CLUSTER, &[(2, "127.0.0.1:1"), (3, "127.0.0.1:1")]),
    );
    spawn_responder(s1.rpcs);
    let t2 = TcpTransport::new(config(2, CLUSTER, &[(1, &a1)]));
    wait_until_connected(&t2, 1).await;

    // Something that is not a raftkv peer at all (its "length" is huge).
    let mut http = raw_connect(&a1).await;
    http.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // It may get a refusal first (or the close may reset the connection
    // before that is read).
    let next = within("waiting for the refusal or close", http.next()).await;
    if let Some(Ok(bytes)) = next {
        let refusal = decode_frame(&bytes).unwrap();
        assert!(matches!(refusal, Frame::HelloRefused { .. }), "{refusal:?}");
        assert_closed(&mut http).await;
    }
    logs.wait_for_line(&[
        "ERROR",
        "refusing peer connection from 127.0.0.1:",
        "malformed hello",
    ])
    .await;

    // A handshaken peer that sends an undecodable frame...
    let mut junk = raw_peer(&a1, 3, 1).await;
    junk.send(bytes::Bytes::from_static(&[0xff; 16]))
        .await
        .unwrap();
    assert_closed(&mut junk).await;
    logs.wait_for_line(&[
        "WARN",
        "closing peer connection from node 3",
        "undecodable frame",
    ])
    .await;

    // ... or a frame a dialer must not send.
    let mut wrong = raw_peer(&a1, 3, 1).await;
    raw_send(
        &mut wrong,
        &Frame::HelloOk {
            incarnation: 1,
            verdict: PeerVerdict::New,
        },
    )
    .await;
    assert_closed(&mut wrong).await;

    // ... or a raft reply dressed as a request.
    let mut reply = raw_peer(&a1, 3, 1).await;
    let not_a_request = Rpc::RequestVoteReply(RequestVoteReply {
        term: 1,
        vote_granted: true,
        pre_vote: false,
    });
    raw_send(
        &mut reply,
        &Frame::Request {
            id: 1,
            body: RequestBody::Raft(not_a_request),
        },
    )
    .await;
    assert_closed(&mut reply).await;

    // Node 2's connection carried on throughout.
    let r = within("vote after", t2.request_vote(1, vote(2, 2)))
        .await
        .unwrap();
    assert!(r.vote_granted);
    assert!(
        !logs.text().contains("connection to peer 1"),
        "node 2's connection was disturbed"
    );
}

#[tokio::test]
async fn requests_to_a_down_peer_fail_fast_with_connection_failed() {
    let dead = dead_addr().await;
    let t2 = TcpTransport::new(config(2, CLUSTER, &[(1, &dead)]));
    // Well under the 1 s request timeout: nobody waits it out.
    let fast = Duration::from_millis(250);

    for i in 0..10 {
        let started = Instant::now();
        let result = within("vote to a down peer", t2.request_vote(1, vote(i, 2))).await;
        assert_eq!(result, Err(TransportError::ConnectionFailed(1)));
        assert!(started.elapsed() < fast, "took {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A burst fails just as fast, and does not pile up anywhere.
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..200 {
        let t2 = t2.clone();
        calls.spawn(async move { t2.append_entries(1, append(2, i)).await });
    }
    while let Some(done) = within("burst", calls.join_next()).await {
        assert_eq!(done.unwrap(), Err(TransportError::ConnectionFailed(1)));
    }
    assert!(
        started.elapsed() < fast,
        "burst took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_transport_reconnects_after_the_peer_restarts() {
    let (l1, a1) = bind().await;
    let c1 = config(1, CLUSTER, &[(2, "127.0.0.1:1")]);
    let s1 = start(l1, c1.clone());
    let responder = spawn_responder(s1.rpcs);
    let t2 = TcpTransport::new(config(2, CLUSTER, &[(1, &a1)]));
    wait_until_connected(&t2, 1).await;

    // "Crash" node 1: its listener and every connection it accepted go away.
    s1.handle.abort();
    let _ = s1.handle.await;
    responder.abort();
    let down = within("vote while down", t2.request_vote(1, vote(3, 2))).await;
    assert!(down.is_err(), "a request succeeded while the peer was down");

    // Restart it on the same address.
    let l1 = TcpListener::bind(&a1).await.unwrap();
    let s1 = start(l1, c1);
    spawn_responder(s1.rpcs);
    let restarted = Instant::now();
    within("reconnecting", async {
        loop {
            if let Ok(r) = t2.append_entries(1, append(2, 5)).await {
                assert!(r.success);
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    eprintln!("reconnected {:?} after the restart", restarted.elapsed());
}

#[tokio::test]
async fn forward_round_trip_and_not_sent_vs_unknown_errors() {
    let (l1, a1) = bind().await;
    let dead = dead_addr().await;
    let mut s1 = start(l1, config(1, CLUSTER, &[(2, "127.0.0.1:1")]));
    // Node 1's KV layer: echoes, sits on "hang" forever, drops "drop".
    tokio::spawn(async move {
        let mut hanging = Vec::new();
        while let Some(f) = s1.forwards.recv().await {
            assert_eq!(f.from, 2);
            match f.payload.as_slice() {
                b"hang" => hanging.push(f.reply),
                b"drop" => drop(f.reply),
                other => {
                    let _ = f.reply.send([b"ok:".as_slice(), other].concat());
                }
            }
        }
    });
    let t2 = TcpTransport::new(config(2, CLUSTER, &[(1, &a1), (3, &dead)]));
    let timeout = Duration::from_millis(300);

    let reply = within("forward", t2.forward(1, b"SET k v".to_vec(), timeout)).await;
    assert_eq!(reply, Ok(b"ok:SET k v".to_vec()));
    let big = vec![7u8; 1 << 20];
    let reply = within("big forward", t2.forward(1, big.clone(), BOUND))
        .await
        .unwrap();
    assert_eq!(&reply[3..], &big[..]);

    // Down peer: it never left this node.
    let started = Instant::now();
    let result = within(
        "forward to a down peer",
        t2.forward(3, b"SET k v".to_vec(), timeout),
    )
    .await;
    assert_eq!(result, Err(ForwardError::NotSent(3)));
    assert!(
        started.elapsed() < timeout,
        "NotSent should not wait out the timeout"
    );

    // Accepted, never answered: it may have been processed.
    let started = Instant::now();
    let result = within("hanging forward", t2.forward(1, b"hang".to_vec(), timeout)).await;
    assert_eq!(result, Err(ForwardError::Unknown(1)));
    assert!(started.elapsed() >= timeout);

    // Accepted, then dropped by the handler: known at once, still "unknown".
    let started = Instant::now();
    let result = within("dropped forward", t2.forward(1, b"drop".to_vec(), timeout)).await;
    assert_eq!(result, Err(ForwardError::Unknown(1)));
    assert!(started.elapsed() < timeout);

    // The connection is still fine afterwards.
    let reply = within("forward after", t2.forward(1, b"GET k".to_vec(), timeout)).await;
    assert_eq!(reply, Ok(b"ok:GET k".to_vec()));
}

#[tokio::test]
async fn a_raft_request_the_node_drops_fails_fast_with_connection_failed() {
    let (l1, a1) = bind().await;
    let mut s1 = start(l1, config(1, CLUSTER, &[(2, "127.0.0.1:1")]));
    // The node refuses to answer (as it does for a misaddressed request).
    tokio::spawn(async move { while s1.rpcs.recv().await.is_some() {} });
    let t2 = TcpTransport::new(config(2, CLUSTER, &[(1, &a1)]));
    let started = Instant::now();
    let result = within("dropped vote", t2.request_vote(1, vote(1, 2))).await;
    assert_eq!(result, Err(TransportError::ConnectionFailed(1)));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unknown_peer_id_is_node_not_found() {
    let (l1, a1) = bind().await;
    let s1 = start(l1, config(1, CLUSTER, &[(2, "127.0.0.1:1")]));
    spawn_responder(s1.rpcs);
    let t2 = TcpTransport::new(config(2, CLUSTER, &[(1, &a1)]));

    assert_eq!(
        t2.request_vote(99, vote(1, 2)).await,
        Err(TransportError::NodeNotFound(99))
    );
    assert_eq!(
        t2.append_entries(99, append(2, 0)).await,
        Err(TransportError::NodeNotFound(99))
    );
    // Its own id is not a peer either.
    assert_eq!(
        t2.request_vote(2, vote(1, 2)).await,
        Err(TransportError::NodeNotFound(2))
    );
    assert_eq!(
        t2.forward(99, b"x".to_vec(), BOUND).await,
        Err(ForwardError::NotSent(99))
    );
    // Known peers are unaffected.
    wait_until_connected(&t2, 1).await;
}

#[tokio::test]
async fn a_peer_that_reconnects_replaces_its_old_connection() {
    let (logs, _guard) = Logs::capture();
    let (l1, a1) = bind().await;
    let s1 = start(l1, config(1, CLUSTER, &[(2, "127.0.0.1:1")]));
    spawn_responder(s1.rpcs);
    // A half-open leftover of node 2 (say, before it crashed)...
    let mut old = raw_peer(&a1, 2, 1).await;
    // ... is closed when node 2 connects again.
    let t2 = TcpTransport::new(config(2, CLUSTER, &[(1, &a1)]));
    wait_until_connected(&t2, 1).await;
    assert_closed(&mut old).await;
    logs.wait_for_line(&["node 2 reconnected"]).await;
}

#[test]
fn the_wire_format_keeps_its_version_readable() {
    // Hello is variant 0 and its version comes first, in every version.
    let hello = encode_frame(&Frame::Hello {
        version: 300,
        cluster_id: "c".into(),
        from: 1,
        to: 2,
        incarnation: 7,
    })
    .unwrap();
    assert_eq!(&hello[..3], &[0, 0xac, 0x02]);
    let refused = encode_frame(&Frame::HelloRefused { reason: "r".into() }).unwrap();
    assert_eq!(refused[0], 2);
}
