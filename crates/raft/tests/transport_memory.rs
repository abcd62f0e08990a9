//! The in-memory transport (the journal's Day 3) and its fault injection:
//! requests reach the peer's inbox and its reply comes back; unknown nodes,
//! partitions, one-way cuts, delays and random loss behave as documented.
//!
//! Time is virtual everywhere (`start_paused`), so timeouts and delays cost
//! no real time and elapsed durations can be asserted exactly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raft::{
    AppendEntriesArgs, AppendEntriesReply, InMemoryNetwork, IncomingRpc, LogEntry, NodeId,
    RequestVoteArgs, RequestVoteReply, Rpc, Transport, TransportError, TransportExt,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long an unanswered request waits before it fails.
const TIMEOUT: Duration = Duration::from_millis(100);

fn vote_args(candidate: NodeId) -> RequestVoteArgs {
    RequestVoteArgs {
        term: 7,
        candidate_id: candidate,
        last_log_index: 3,
        last_log_term: 2,
        pre_vote: false,
        leadership_transfer: false,
    }
}

fn vote_reply() -> RequestVoteReply {
    RequestVoteReply {
        term: 7,
        vote_granted: true,
        pre_vote: false,
    }
}

fn append_args(leader: NodeId) -> AppendEntriesArgs {
    AppendEntriesArgs {
        term: 4,
        leader_id: leader,
        prev_log_index: 1,
        prev_log_term: 1,
        entries: vec![LogEntry::new(4, 2, b"x=1".to_vec())],
        leader_commit: 1,
        read_round: 9,
    }
}

fn append_reply() -> AppendEntriesReply {
    AppendEntriesReply {
        term: 4,
        success: true,
        match_index: 2,
        rejected_prev_index: 0,
        conflict_index: 0,
        conflict_term: None,
        read_round: 9,
        voter: true,
    }
}

/// What a test peer saw: each request, with the virtual instant it arrived.
type Seen = Arc<std::sync::Mutex<Vec<(NodeId, Rpc, Instant)>>>;

/// A hand-written peer: answers every request with a canned reply of the
/// right kind and records what it received.
fn answer_everything(mut inbox: mpsc::Receiver<IncomingRpc>) -> (Seen, JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        while let Some(req) = inbox.recv().await {
            let reply = match &req.rpc {
                Rpc::RequestVote(_) => Rpc::RequestVoteReply(vote_reply()),
                Rpc::AppendEntries(_) => Rpc::AppendEntriesReply(append_reply()),
                other => panic!("a peer only ever receives requests, got {other:?}"),
            };
            log.lock()
                .expect("seen lock")
                .push((req.from, req.rpc, Instant::now()));
            let _ = req.reply.send(reply);
        }
    });
    (seen, task)
}

fn seen_count(seen: &Seen) -> usize {
    seen.lock().expect("seen lock").len()
}

#[tokio::test(start_paused = true)]
async fn request_vote_reaches_the_peer_and_returns_its_reply() {
    let net = InMemoryNetwork::new(1, TIMEOUT);
    let (t1, _inbox1) = net.register(1);
    let (_t2, mut inbox2) = net.register(2);

    // Node 2 answers by hand, checking what arrived.
    let peer = tokio::spawn(async move {
        let req = inbox2.recv().await.expect("node 2 receives the request");
        assert_eq!(req.from, 1, "the request names its sender");
        assert_eq!(
            req.rpc,
            Rpc::RequestVote(vote_args(1)),
            "args arrive intact"
        );
        let reply = RequestVoteReply {
            term: 8,
            vote_granted: false,
            pre_vote: false,
        };
        req.reply
            .send(Rpc::RequestVoteReply(reply))
            .expect("the caller is still waiting");
    });

    let reply = t1
        .request_vote(2, vote_args(1))
        .await
        .expect("the peer answered");
    assert_eq!(
        reply,
        RequestVoteReply {
            term: 8,
            vote_granted: false,
            pre_vote: false,
        },
        "the caller gets exactly the peer's reply"
    );
    peer.await.expect("the peer task saw the request");
}

#[tokio::test(start_paused = true)]
async fn append_entries_reaches_the_peer_and_returns_its_reply() {
    let net = InMemoryNetwork::new(1, TIMEOUT);
    let (t1, _inbox1) = net.register(1);
    let (_t2, mut inbox2) = net.register(2);

    let peer = tokio::spawn(async move {
        let req = inbox2.recv().await.expect("node 2 receives the request");
        assert_eq!(req.from, 1);
        assert_eq!(req.rpc, Rpc::AppendEntries(append_args(1)));
        let reply = AppendEntriesReply {
            term: 5,
            success: false,
            match_index: 0,
            rejected_prev_index: 1,
            conflict_index: 1,
            conflict_term: Some(3),
            read_round: 9,
            voter: true,
        };
        req.reply
            .send(Rpc::AppendEntriesReply(reply))
            .expect("the caller is still waiting");
    });

    let reply = t1
        .append_entries(2, append_args(1))
        .await
        .expect("the peer answered");
    assert_eq!(reply.term, 5);
    assert!(!reply.success);
    assert_eq!(reply.rejected_prev_index, 1);
    assert_eq!(reply.conflict_term, Some(3));
    peer.await.expect("the peer task saw the request");
}

#[tokio::test(start_paused = true)]
async fn a_request_to_an_unknown_node_fails_with_node_not_found() {
    let net = InMemoryNetwork::new(1, TIMEOUT);
    let (t1, _inbox1) = net.register(1);
    let (_t2, inbox2) = net.register(2);
    let (seen, _peer) = answer_everything(inbox2);

    let start = Instant::now();
    assert_eq!(
        t1.request_vote(99, vote_args(1)).await,
        Err(TransportError::NodeNotFound(99))
    );
    assert_eq!(
        t1.append_entries(99, append_args(1)).await,
        Err(TransportError::NodeNotFound(99))
    );
    assert_eq!(start.elapsed(), Duration::ZERO, "fails at once, no timeout");

    // A node that leaves becomes unknown too; one that comes back is reachable.
    assert!(t1.request_vote(2, vote_args(1)).await.is_ok());
    net.unregister(2);
    assert_eq!(
        t1.request_vote(2, vote_args(1)).await,
        Err(TransportError::NodeNotFound(2))
    );
    assert_eq!(
        seen_count(&seen),
        1,
        "nothing reached the unregistered node"
    );
    let (_t2, inbox2) = net.register(2);
    let (seen_again, _peer_again) = answer_everything(inbox2);
    assert!(t1.request_vote(2, vote_args(1)).await.is_ok());
    assert_eq!(seen_count(&seen_again), 1, "the re-registered node answers");
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_link_times_out() {
    let net = InMemoryNetwork::new(1, TIMEOUT);
    let (t1, _inbox1) = net.register(1);
    let (_t2, inbox2) = net.register(2);
    let (_t3, inbox3) = net.register(3);
    let (seen2, _p2) = answer_everything(inbox2);
    let (seen3, _p3) = answer_everything(inbox3);

    net.partition(&[&[1, 3], &[2]]);

    let start = Instant::now();
    assert_eq!(
        t1.request_vote(2, vote_args(1)).await,
        Err(TransportError::Timeout(2))
    );
    assert_eq!(
        start.elapsed(),
        TIMEOUT,
        "a lost request looks like silence: the caller waits out the timeout"
    );
    assert_eq!(
        t1.append_entries(2, append_args(1)).await,
        Err(TransportError::Timeout(2))
    );
    assert_eq!(seen_count(&seen2), 0, "nothing crossed the partition");

    // Within a group, traffic flows.
    assert!(t1.append_entries(3, append_args(1)).await.is_ok());
    assert_eq!(seen_count(&seen3), 1);

    // Isolating node 1 cuts it off from its former group too.
    net.isolate(1);
    assert_eq!(
        t1.append_entries(3, append_args(1)).await,
        Err(TransportError::Timeout(3))
    );
    assert_eq!(seen_count(&seen3), 1);

    net.heal();
    assert!(t1.request_vote(2, vote_args(1)).await.is_ok());
    assert!(t1.request_vote(3, vote_args(1)).await.is_ok());
    assert_eq!((seen_count(&seen2), seen_count(&seen3)), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn a_cut_link_drops_one_direction_only() {
    let net = InMemoryNetwork::new(1, TIMEOUT);
    let (t1, inbox1) = net.register(1);
    let (t2, inbox2) = net.register(2);
    let (t3, inbox3) = net.register(3);
    let (seen1, _p1) = answer_everything(inbox1);
    let (seen2, _p2) = answer_everything(inbox2);
    let (_seen3, _p3) = answer_everything(inbox3);

    net.cut_link(1, 2);

    // 1 → 2: the request is dropped on its way.
    assert_eq!(
        t1.request_vote(2, vote_args(1)).await,
        Err(TransportError::Timeout(2))
    );
    assert_eq!(seen_count(&seen2), 0, "the request from 1 never reached 2");

    // 2 → 1: the request arrives (that direction is intact), but 1's reply
    // travels 1 → 2 and is dropped, so the caller still times out.
    let start = Instant::now();
    assert_eq!(
        t2.request_vote(1, vote_args(2)).await,
        Err(TransportError::Timeout(1))
    );
    assert_eq!(start.elapsed(), TIMEOUT);
    let seen = seen1.lock().expect("seen lock").clone();
    assert_eq!(seen.len(), 1, "the request from 2 did reach 1");
    assert_eq!(seen[0].0, 2);

    // Other links are untouched.
    assert!(t1.request_vote(3, vote_args(1)).await.is_ok());
    assert!(t3.request_vote(2, vote_args(3)).await.is_ok());
    assert!(t3.request_vote(1, vote_args(3)).await.is_ok());

    net.heal();
    assert!(t1.request_vote(2, vote_args(1)).await.is_ok());
    assert!(t2.request_vote(1, vote_args(2)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn link_delay_delays_delivery() {
    let net = InMemoryNetwork::new(1, Duration::from_secs(1));
    let (t1, _inbox1) = net.register(1);
    let (t2, inbox2) = net.register(2);
    let (seen2, _p2) = answer_everything(inbox2);
    let (_t3, inbox3) = net.register(3);
    let (_seen3, _p3) = answer_everything(inbox3);

    net.set_link_delay(1, 2, Duration::from_millis(30));
    net.set_link_delay(2, 1, Duration::from_millis(20));

    let start = Instant::now();
    t1.append_entries(2, append_args(1))
        .await
        .expect("a delayed request still arrives");
    let round_trip = start.elapsed();
    let arrived = seen2.lock().expect("seen lock")[0].2;
    assert_eq!(
        arrived - start,
        Duration::from_millis(30),
        "the request waits the 1 → 2 delay"
    );
    assert_eq!(
        round_trip,
        Duration::from_millis(50),
        "the reply waits the 2 → 1 delay on top"
    );

    // Delay applies per directed link: 1 → 3 is instant.
    let start = Instant::now();
    t1.append_entries(3, append_args(1)).await.expect("reply");
    assert_eq!(start.elapsed(), Duration::ZERO);
    // In the other direction the roles swap: the request waits 20 ms on
    // 2 → 1 and the reply 30 ms on 1 → 2. (Give node 1 a peer that answers.)
    let (_t1b, inbox1) = net.register(1);
    let (_seen1, _p1) = answer_everything(inbox1);
    let start = Instant::now();
    t2.request_vote(1, vote_args(2)).await.expect("reply");
    assert_eq!(start.elapsed(), Duration::from_millis(50));

    // A delay beyond the timeout turns into a timeout.
    net.set_link_delay(1, 3, Duration::from_secs(2));
    let start = Instant::now();
    assert_eq!(
        t1.append_entries(3, append_args(1)).await,
        Err(TransportError::Timeout(3))
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1));

    net.heal();
    let start = Instant::now();
    t1.append_entries(2, append_args(1)).await.expect("reply");
    assert_eq!(start.elapsed(), Duration::ZERO, "heal removes delays");
}

#[tokio::test(start_paused = true)]
async fn link_loss_drops_about_the_configured_fraction() {
    const REQUESTS: usize = 1000;
    let net = InMemoryNetwork::new(42, TIMEOUT);
    let (t1, _inbox1) = net.register(1);
    let (_t2, inbox2) = net.register(2);
    let (seen2, _p2) = answer_everything(inbox2);

    net.set_link_loss(1, 2, 0.3);

    let lost = Arc::new(AtomicUsize::new(0));
    let t1 = Arc::new(t1);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..REQUESTS {
        let t1 = Arc::clone(&t1);
        let lost = Arc::clone(&lost);
        tasks.spawn(async move {
            match t1.append_entries(2, append_args(1)).await {
                Ok(_) => {}
                Err(TransportError::Timeout(2)) => {
                    lost.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => panic!("unexpected error {e:?}"),
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("request task");
    }
    let lost = lost.load(Ordering::Relaxed);
    assert!(
        (200..=400).contains(&lost),
        "with p = 0.3, {lost} of {REQUESTS} lost"
    );
    // Loss was set on 1 → 2 only: every lost message was a request, so the
    // peer saw exactly the ones that were not lost.
    assert_eq!(seen_count(&seen2), REQUESTS - lost);

    // p = 0 drops nothing; p = 1 drops everything.
    net.set_link_loss(1, 2, 0.0);
    for _ in 0..50 {
        assert!(t1.append_entries(2, append_args(1)).await.is_ok());
    }
    net.set_link_loss(1, 2, 1.0);
    for _ in 0..10 {
        assert_eq!(
            t1.append_entries(2, append_args(1)).await,
            Err(TransportError::Timeout(2))
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_request_fails_after_the_timeout_not_later() {
    // The request takes 30 ms to arrive, the peer answers, and the reply is
    // lost on the way back: to the caller this is silence, which must end
    // with Timeout after `timeout` (100 ms), as for any other lost message.
    let net = InMemoryNetwork::new(1, TIMEOUT);
    let (t1, _inbox1) = net.register(1);
    let (_t2, inbox2) = net.register(2);
    let (seen2, _p2) = answer_everything(inbox2);
    net.set_link_delay(1, 2, Duration::from_millis(30));
    net.cut_link(2, 1);

    let start = Instant::now();
    assert_eq!(
        t1.request_vote(2, vote_args(1)).await,
        Err(TransportError::Timeout(2))
    );
    assert_eq!(seen_count(&seen2), 1, "the request did arrive");
    assert_eq!(
        start.elapsed(),
        TIMEOUT,
        "the caller waited longer than the configured timeout"
    );
}

/// A misbehaving transport: it hands every request back as its "reply".
struct Echo;

impl Transport for Echo {
    async fn send(&self, _to: NodeId, request: Rpc) -> Result<Rpc, TransportError> {
        Ok(request)
    }
}

#[tokio::test(start_paused = true)]
async fn a_reply_of_the_wrong_kind_is_a_failed_call() {
    assert_eq!(
        Echo.request_vote(2, vote_args(1)).await,
        Err(TransportError::ConnectionFailed(2))
    );
    assert!(matches!(
        Echo.send(2, Rpc::RequestVote(vote_args(1))).await,
        Ok(Rpc::RequestVote(_))
    ));
}
