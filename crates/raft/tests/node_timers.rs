//! Timers of the async driver (the journal's Day 5): election timeouts and
//! heartbeats, observed through real `RaftServer`s on the in-memory network.
//!
//! Time is virtual (`start_paused`): the server's ticker and the test's
//! sleeps advance the same paused clock, so instants can be checked to the
//! tick without a single real sleep.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::{
    InMemoryNetwork, InMemoryTransport, IncomingRpc, ListOutput, ListStateMachine, Membership,
    MemoryStorage, NodeId, RaftConfig, RaftHandle, RaftServer, RaftState, Rpc, ServerError,
    ServerParts, Status, Transport, TransportError,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};

const NET_TIMEOUT: Duration = Duration::from_millis(100);

type Task = JoinHandle<Result<(), ServerError>>;

/// Starts one server on `net` with the given transport and inbox.
fn spawn_server<T: Transport>(
    id: NodeId,
    voters: &[NodeId],
    config: RaftConfig,
    transport: T,
    incoming: mpsc::Receiver<IncomingRpc>,
) -> (RaftHandle<ListOutput>, Task) {
    RaftServer::spawn(ServerParts {
        id,
        membership: Membership::new(voters, &[]),
        config,
        storage: Box::new(MemoryStorage::new()),
        transport,
        incoming,
        state_machine: ListStateMachine::default(),
        seed: id,
    })
    .expect("server starts")
}

/// An N-node cluster on the in-memory network, every node started at once.
fn start_cluster(
    n: u64,
    config: &RaftConfig,
) -> (InMemoryNetwork, BTreeMap<NodeId, RaftHandle<ListOutput>>) {
    let net = InMemoryNetwork::new(7, NET_TIMEOUT);
    let voters: Vec<NodeId> = (1..=n).collect();
    let mut handles = BTreeMap::new();
    for &id in &voters {
        let (transport, incoming) = net.register(id);
        let (handle, _task) = spawn_server(id, &voters, config.clone(), transport, incoming);
        handles.insert(id, handle);
    }
    (net, handles)
}

/// Polls every 10 ms of virtual time until one node leads and every other
/// node follows it in the same term; panics after `bound`.
async fn wait_for_stable_leader(
    handles: &BTreeMap<NodeId, RaftHandle<ListOutput>>,
    bound: Duration,
) -> Status {
    let deadline = Instant::now() + bound;
    loop {
        let statuses: Vec<Status> = handles.values().map(RaftHandle::status).collect();
        if let Some(leader) = statuses.iter().find(|s| s.state == RaftState::Leader) {
            let agreed = statuses
                .iter()
                .all(|s| s.term == leader.term && s.leader_id == Some(leader.id));
            if agreed {
                return leader.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no stable leader within {bound:?}: {statuses:#?}"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_follower_starts_an_election_after_the_election_timeout() {
    // Without pre-vote, a timeout raises the term at once, so it is visible.
    // Only node 1 runs: its peers are never started, so nothing resets its
    // timer and no one can answer its vote requests.
    let config = RaftConfig {
        pre_vote: false,
        ..RaftConfig::default()
    };
    let net = InMemoryNetwork::new(1, NET_TIMEOUT);
    let (transport, incoming) = net.register(1);
    let start = Instant::now();
    let (handle, _task) = spawn_server(1, &[1, 2, 3], config.clone(), transport, incoming);

    // Before the minimum election timeout: a quiet follower in term 0.
    let quiet_until = start + config.election_timeout_min - Duration::from_millis(5);
    while Instant::now() < quiet_until {
        let s = handle.status();
        assert_eq!(
            (s.state, s.term),
            (RaftState::Follower, 0),
            "no election before {:?} (now {:?})",
            config.election_timeout_min,
            Instant::now() - start
        );
        sleep(Duration::from_millis(5)).await;
    }

    // Past the maximum (plus a tick for the ticker's phase), it has timed out
    // exactly once: a candidate in term 1, still waiting for votes.
    sleep_until(
        start + config.election_timeout_max + config.tick_interval + Duration::from_millis(5),
    )
    .await;
    let s = handle.status();
    assert_eq!(s.state, RaftState::Candidate, "campaigning: {s:?}");
    assert_eq!(s.term, 1, "one election, one new term: {s:?}");
    assert_eq!(s.leader_id, None);

    // Unanswered, it keeps timing out and retrying in higher terms.
    sleep(config.election_timeout_max * 2).await;
    let s = handle.status();
    assert_eq!(s.state, RaftState::Candidate);
    assert!(s.term >= 2, "a failed election is retried: {s:?}");
}

#[tokio::test(start_paused = true)]
async fn a_lone_voter_elects_itself_after_the_election_timeout() {
    let config = RaftConfig::default();
    let net = InMemoryNetwork::new(1, NET_TIMEOUT);
    let (transport, incoming) = net.register(1);
    let start = Instant::now();
    let (handle, _task) = spawn_server(1, &[1], config.clone(), transport, incoming);

    sleep(config.election_timeout_min - Duration::from_millis(5)).await;
    assert_eq!(handle.status().state, RaftState::Follower, "too early");

    sleep_until(start + config.election_timeout_max + config.tick_interval).await;
    let s = handle.status();
    assert_eq!(s.state, RaftState::Leader, "{s:?}");
    assert_eq!(s.term, 1, "pre-vote does not spend a term: {s:?}");
}

#[tokio::test(start_paused = true)]
async fn a_follower_does_not_start_an_election_while_receiving_heartbeats() {
    let config = RaftConfig::default();
    let (_net, handles) = start_cluster(3, &config);
    let leader = wait_for_stable_leader(&handles, Duration::from_secs(10)).await;

    // Ten maximum election timeouts: every follower would have campaigned
    // several times over without the leader's heartbeats.
    let until = Instant::now() + config.election_timeout_max * 10;
    let mut polls = 0;
    while Instant::now() < until {
        for (&id, h) in &handles {
            let s = h.status();
            assert_eq!(s.term, leader.term, "node {id} changed term: {s:?}");
            assert_eq!(s.leader_id, Some(leader.id), "node {id}: {s:?}");
            let expected = if id == leader.id {
                RaftState::Leader
            } else {
                RaftState::Follower
            };
            assert_eq!(s.state, expected, "node {id}: {s:?}");
        }
        polls += 1;
        sleep(Duration::from_millis(10)).await;
    }
    assert!(
        polls >= 600,
        "the whole interval was observed ({polls} polls)"
    );
}

/// A transport that counts the AppendEntries each node sends, per target.
#[derive(Clone)]
struct CountingTransport {
    inner: InMemoryTransport,
    me: NodeId,
    /// (from, to) → AppendEntries sent.
    appends: Arc<Mutex<BTreeMap<(NodeId, NodeId), usize>>>,
}

impl Transport for CountingTransport {
    async fn send(&self, to: NodeId, request: Rpc) -> Result<Rpc, TransportError> {
        if let Rpc::AppendEntries(_) = request {
            *self
                .appends
                .lock()
                .expect("counter lock")
                .entry((self.me, to))
                .or_default() += 1;
        }
        self.inner.send(to, request).await
    }
}

#[tokio::test(start_paused = true)]
async fn the_leader_sends_heartbeats_at_the_heartbeat_interval() {
    let config = RaftConfig::default();
    let net = InMemoryNetwork::new(3, NET_TIMEOUT);
    let appends: Arc<Mutex<BTreeMap<(NodeId, NodeId), usize>>> = Arc::default();
    let voters = [1, 2, 3];
    let mut handles = BTreeMap::new();
    for id in voters {
        let (inner, incoming) = net.register(id);
        let transport = CountingTransport {
            inner,
            me: id,
            appends: Arc::clone(&appends),
        };
        let (handle, _task) = spawn_server(id, &voters, config.clone(), transport, incoming);
        handles.insert(id, handle);
    }
    let leader = wait_for_stable_leader(&handles, Duration::from_secs(10)).await;
    // Let the election's own traffic (no-op, commit notice) settle.
    sleep(config.heartbeat_interval * 2).await;

    let before = appends.lock().expect("counter lock").clone();
    let window = Duration::from_secs(1);
    sleep(window).await;
    let after = appends.lock().expect("counter lock").clone();

    let expected = (window.as_millis() / config.heartbeat_interval.as_millis()) as usize;
    for follower in voters.into_iter().filter(|&f| f != leader.id) {
        let key = (leader.id, follower);
        let sent = after.get(&key).copied().unwrap_or(0) - before.get(&key).copied().unwrap_or(0);
        assert!(
            sent.abs_diff(expected) <= 2,
            "leader {} sent {sent} AppendEntries to {follower} in {window:?}; expected about {expected}",
            leader.id
        );
        // Followers never send AppendEntries.
        let back = (follower, leader.id);
        assert_eq!(
            after.get(&back).copied().unwrap_or(0),
            before.get(&back).copied().unwrap_or(0),
            "follower {follower} sent AppendEntries"
        );
    }
    let s = handles[&leader.id].status();
    assert_eq!((s.state, s.term), (RaftState::Leader, leader.term));
}
