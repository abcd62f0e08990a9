//! Cluster scenarios through the client API (the journal's Days 6 and 7):
//! `RaftServer`s on the in-memory network, driven by `RaftHandle`s.
//!
//! Time is virtual in every test (`start_paused`): tokio advances the paused
//! clock whenever every task is idle, so "wait until X, at most T" loops cost
//! no real time. Each node's state machine is a `ListStateMachine` whose
//! applied commands the test can also see directly (see
//! [`harness::ObservedList`]), and each node's disk is a `MemoryStorage`
//! shared with the test (see [`harness::SharedStorage`]), so a node can be
//! stopped and started again on what it had persisted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{cmd, Cluster};
use raft::{ClientError, ListOutput, NodeId, RaftConfig, RaftState, ServerError, Term};
use tokio::time::{sleep, timeout, Instant};

/// Bound on a first election or a failover: a few election timeouts.
const ELECTION_BOUND: Duration = Duration::from_secs(3);
/// Bound on anything that should follow promptly (replication, catch-up).
const PROMPT: Duration = Duration::from_secs(2);

mod harness {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::Duration;

    use raft::{
        InMemoryNetwork, InMemoryTransport, ListOutput, ListStateMachine, LogEntry, LogIndex,
        MemoryStorage, NodeId, RaftConfig, RaftHandle, RaftServer, RaftState, RecoveredState,
        ServerError, ServerParts, StateMachine, Status, Storage, StorageError,
    };
    use tokio::task::JoinHandle;
    use tokio::time::{sleep, Instant};

    pub type Handle = RaftHandle<ListOutput>;
    pub type Task = JoinHandle<Result<(), ServerError>>;
    /// `(index, command)` in the order a node applied them.
    pub type Applied = Arc<Mutex<Vec<(LogIndex, Vec<u8>)>>>;

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().expect("test lock poisoned")
    }

    pub fn cmd(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    /// A node's "disk": the server writes through it, the test keeps a handle
    /// to it across restarts (and can make it fail).
    #[derive(Clone, Default)]
    pub struct SharedStorage(pub Arc<Mutex<MemoryStorage>>);

    impl Storage for SharedStorage {
        fn recover(&mut self) -> Result<RecoveredState, StorageError> {
            lock(&self.0).recover()
        }
        fn persist(
            &mut self,
            hard_state: Option<&raft::HardState>,
            entries: &[LogEntry],
        ) -> Result<(), StorageError> {
            lock(&self.0).persist(hard_state, entries)
        }
        fn first_index(&self) -> LogIndex {
            lock(&self.0).first_index()
        }
        fn last_index(&self) -> LogIndex {
            lock(&self.0).last_index()
        }
        fn entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<LogEntry>, StorageError> {
            lock(&self.0).entries(lo, hi)
        }
        fn compact(&mut self, index: LogIndex) -> Result<(), StorageError> {
            lock(&self.0).compact(index)
        }
        fn reset(&mut self, index: LogIndex, term: raft::Term) -> Result<(), StorageError> {
            lock(&self.0).reset(index, term)
        }
    }

    /// A `ListStateMachine` that also records what it applied where the test
    /// can see it, so followers' state machines can be checked too.
    pub struct ObservedList {
        inner: ListStateMachine,
        seen: Applied,
    }

    impl StateMachine for ObservedList {
        type Output = ListOutput;
        fn apply(&mut self, index: LogIndex, command: &[u8]) -> ListOutput {
            lock(&self.seen).push((index, command.to_vec()));
            self.inner.apply(index, command)
        }
        fn query(&self, query: &[u8]) -> ListOutput {
            self.inner.query(query)
        }
    }

    pub struct Node {
        pub handle: Handle,
        /// `None` once the test stopped (or took) it.
        pub task: Option<Task>,
        pub disk: SharedStorage,
        /// What this incarnation's state machine applied.
        pub applied: Applied,
    }

    pub struct Cluster {
        pub net: InMemoryNetwork,
        pub voters: Vec<NodeId>,
        pub config: RaftConfig,
        pub nodes: BTreeMap<NodeId, Node>,
    }

    impl Cluster {
        /// Starts nodes `1..=n` at once, each on a fresh disk.
        pub fn start(n: u64, config: RaftConfig) -> Cluster {
            let mut c = Cluster {
                net: InMemoryNetwork::new(11, Duration::from_millis(100)),
                voters: (1..=n).collect(),
                config,
                nodes: BTreeMap::new(),
            };
            for id in c.voters.clone() {
                c.start_node(id, SharedStorage::default());
            }
            c
        }

        /// (Re)starts node `id` on `disk`, with a fresh state machine.
        pub fn start_node(&mut self, id: NodeId, disk: SharedStorage) {
            let config = self.config.clone();
            self.start_node_with(id, disk, config);
        }

        /// (Re)starts node `id` on `disk` with its own configuration.
        pub fn start_node_with(&mut self, id: NodeId, disk: SharedStorage, config: RaftConfig) {
            let (transport, incoming): (InMemoryTransport, _) = self.net.register(id);
            let applied = Applied::default();
            let (handle, task) = RaftServer::spawn(ServerParts {
                id,
                voters: self.voters.clone(),
                config,
                storage: Box::new(disk.clone()),
                transport,
                incoming,
                state_machine: ObservedList {
                    inner: ListStateMachine::default(),
                    seen: Arc::clone(&applied),
                },
                seed: id,
            })
            .expect("server starts");
            self.nodes.insert(
                id,
                Node {
                    handle,
                    task: Some(task),
                    disk,
                    applied,
                },
            );
        }

        /// Stops node `id` cleanly and takes it off the network; returns how
        /// its task ended.
        pub async fn stop_node(&mut self, id: NodeId) -> Result<(), ServerError> {
            let node = self.nodes.get_mut(&id).expect("known node");
            node.handle.shutdown().await;
            let task = node.task.take().expect("node is running");
            let result = task.await.expect("server task does not panic");
            self.net.unregister(id);
            result
        }

        pub fn handle(&self, id: NodeId) -> Handle {
            self.nodes[&id].handle.clone()
        }

        pub fn status(&self, id: NodeId) -> Status {
            self.nodes[&id].handle.status()
        }

        pub fn disk(&self, id: NodeId) -> SharedStorage {
            self.nodes[&id].disk.clone()
        }

        /// The commands node `id`'s current incarnation applied, in order.
        pub fn applied(&self, id: NodeId) -> Vec<Vec<u8>> {
            lock(&self.nodes[&id].applied)
                .iter()
                .map(|(_, c)| c.clone())
                .collect()
        }

        pub fn applied_with_index(&self, id: NodeId) -> Vec<(LogIndex, Vec<u8>)> {
            lock(&self.nodes[&id].applied).clone()
        }

        pub fn describe(&self) -> String {
            self.nodes
                .keys()
                .map(|&id| format!("  {:?}\n", self.status(id)))
                .collect()
        }

        /// Polls `cond` every 10 ms of virtual time; panics after `bound`.
        pub async fn wait_until(
            &self,
            what: &str,
            bound: Duration,
            mut cond: impl FnMut(&Cluster) -> bool,
        ) {
            let deadline = Instant::now() + bound;
            loop {
                if cond(self) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "not within {bound:?}: {what}\n{}",
                    self.describe()
                );
                sleep(Duration::from_millis(10)).await;
            }
        }

        /// If one of `among` leads and all the others follow it in its term.
        pub fn agreed_leader(&self, among: &[NodeId]) -> Option<Status> {
            let statuses: Vec<Status> = among.iter().map(|&id| self.status(id)).collect();
            let leader = statuses.iter().find(|s| s.state == RaftState::Leader)?;
            statuses
                .iter()
                .all(|s| s.term == leader.term && s.leader_id == Some(leader.id))
                .then(|| leader.clone())
        }

        /// Waits until `among` agree on a leader (see [`Cluster::agreed_leader`]).
        pub async fn wait_for_leader(&self, among: &[NodeId], bound: Duration) -> Status {
            let what = format!("nodes {among:?} agree on a leader");
            self.wait_until(&what, bound, |c| c.agreed_leader(among).is_some())
                .await;
            self.agreed_leader(among).expect("just agreed")
        }

        /// Waits until every node in `ids` has applied up to `index`.
        pub async fn wait_applied(&self, ids: &[NodeId], index: LogIndex, bound: Duration) {
            let what = format!("nodes {ids:?} apply up to index {index}");
            self.wait_until(&what, bound, |c| {
                ids.iter().all(|&id| c.status(id).last_applied >= index)
            })
            .await;
        }

        pub fn others(&self, id: NodeId) -> Vec<NodeId> {
            self.voters.iter().copied().filter(|&v| v != id).collect()
        }
    }
}

fn items(cmds: &[&str]) -> ListOutput {
    ListOutput::Items(cmds.iter().map(|c| cmd(c)).collect())
}

fn cmds(cmds: &[&str]) -> Vec<Vec<u8>> {
    cmds.iter().map(|c| cmd(c)).collect()
}

fn not_leader(hint: Option<NodeId>) -> ClientError {
    ClientError::NotLeader { leader_hint: hint }
}

// ----- The happy path ----------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_single_node_cluster_elects_itself_and_applies_commands() {
    let c = Cluster::start(1, RaftConfig::default());
    let leader = c.wait_for_leader(&[1], ELECTION_BOUND).await;
    assert_eq!(leader.id, 1);
    assert_eq!(leader.term, 1, "pre-vote does not spend a term: {leader:?}");

    let h = c.handle(1);
    assert_eq!(h.submit(cmd("a")).await, Ok(ListOutput::Len(1)));
    assert_eq!(h.submit(cmd("b")).await, Ok(ListOutput::Len(2)));
    assert_eq!(h.read(Vec::new()).await, Ok(items(&["a", "b"])));

    let s = c.status(1);
    // The leader's no-op at index 1, then the two commands.
    assert_eq!(
        (s.commit_index, s.last_applied, s.last_log_index),
        (3, 3, 3)
    );
    assert_eq!(c.applied_with_index(1), vec![(2, cmd("a")), (3, cmd("b"))]);
}

#[tokio::test(start_paused = true)]
async fn submit_on_the_leader_resolves_after_commit_and_apply_with_the_output() {
    let c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(leader.id);

    assert_eq!(
        h.submit(cmd("x=1")).await,
        Ok(ListOutput::Len(1)),
        "the output is what the state machine returned"
    );
    // When the submit resolved, the leader had already committed and
    // applied the entry.
    let applied = c.applied_with_index(leader.id);
    assert_eq!(applied.len(), 1, "applied exactly once on the leader");
    let (index, ref data) = applied[0];
    assert_eq!(data, &cmd("x=1"));
    let s = c.status(leader.id);
    assert!(s.commit_index >= index, "committed: {s:?}");
    assert!(s.last_applied >= index, "applied: {s:?}");

    // Every node applies it, at the same index.
    c.wait_applied(&[1, 2, 3], index, PROMPT).await;
    for id in [1, 2, 3] {
        assert_eq!(
            c.applied_with_index(id),
            vec![(index, cmd("x=1"))],
            "node {id}"
        );
    }
    assert_eq!(h.read(Vec::new()).await, Ok(items(&["x=1"])));
}

#[tokio::test(start_paused = true)]
async fn multiple_commands_are_applied_in_submission_order() {
    let c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(leader.id);

    // One after the other: the outputs count up, the list keeps the order.
    let mut expected = Vec::new();
    for i in 1..=10 {
        let c = format!("seq-{i}");
        assert_eq!(h.submit(cmd(&c)).await, Ok(ListOutput::Len(i)));
        expected.push(cmd(&c));
    }
    assert_eq!(h.read(Vec::new()).await, Ok(ListOutput::Items(expected)));

    // Concurrently: whatever order the log chose, each client's output is
    // its command's position in the list.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=10 {
        let h = h.clone();
        tasks.spawn(async move {
            let c = cmd(&format!("par-{i}"));
            (c.clone(), h.submit(c).await)
        });
    }
    let mut outputs = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        let (c, out) = r.expect("client task");
        match out {
            Ok(ListOutput::Len(n)) => assert!(outputs.insert(n, c).is_none(), "output {n} twice"),
            other => panic!("submit failed: {other:?}"),
        }
    }
    assert_eq!(
        outputs.keys().copied().collect::<Vec<_>>(),
        (11..=20).collect::<Vec<_>>()
    );
    let on_leader = c.applied(leader.id);
    for (n, c) in &outputs {
        assert_eq!(
            &on_leader[n - 1],
            c,
            "output {n} is that command's position"
        );
    }

    // Every node applies the same commands at the same indexes.
    let last = c.status(leader.id).last_applied;
    c.wait_applied(&[1, 2, 3], last, PROMPT).await;
    let reference = c.applied_with_index(leader.id);
    assert_eq!(reference.len(), 20);
    assert!(
        reference.windows(2).all(|w| w[0].0 < w[1].0),
        "applied in index order: {reference:?}"
    );
    for id in [1, 2, 3] {
        assert_eq!(c.applied_with_index(id), reference, "node {id}");
    }
}

// ----- Who may serve clients ---------------------------------------------

#[tokio::test(start_paused = true)]
async fn submit_on_a_follower_fails_with_not_leader_and_a_leader_hint() {
    let c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let before: Vec<_> = [1, 2, 3].map(|id| c.status(id).last_log_index).to_vec();

    for follower in c.others(leader.id) {
        assert_eq!(
            c.handle(follower).submit(cmd("nope")).await,
            Err(not_leader(Some(leader.id))),
            "follower {follower} redirects to the leader"
        );
    }
    // Nothing was proposed anywhere.
    sleep(Duration::from_millis(500)).await;
    let after: Vec<_> = [1, 2, 3].map(|id| c.status(id).last_log_index).to_vec();
    assert_eq!(before, after);
    for id in [1, 2, 3] {
        assert!(c.applied(id).is_empty(), "node {id} applied something");
    }
}

#[tokio::test(start_paused = true)]
async fn read_on_a_follower_fails_with_not_leader() {
    let c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    assert_eq!(
        c.handle(leader.id).submit(cmd("a")).await,
        Ok(ListOutput::Len(1))
    );
    for follower in c.others(leader.id) {
        assert_eq!(
            c.handle(follower).read(Vec::new()).await,
            Err(not_leader(Some(leader.id))),
            "follower {follower}"
        );
    }
    assert_eq!(
        c.handle(leader.id).read(Vec::new()).await,
        Ok(items(&["a"]))
    );
}

#[tokio::test(start_paused = true)]
async fn a_candidate_rejects_commands() {
    // With pre-vote (the default), an isolated node campaigns as a
    // PreCandidate and stays one; without it, it becomes a Candidate. Both
    // refuse commands and reads, and know no leader to point to.
    for (pre_vote, role) in [
        (true, RaftState::PreCandidate),
        (false, RaftState::Candidate),
    ] {
        let config = RaftConfig {
            pre_vote,
            ..RaftConfig::default()
        };
        let c = Cluster::start(3, config);
        let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
        let node = c.others(leader.id)[0];
        c.wait_applied(&[node], leader.last_log_index, PROMPT).await;
        c.net.isolate(node);
        c.wait_until(
            &format!("node {node} becomes a {role}"),
            ELECTION_BOUND,
            |c| c.status(node).state == role,
        )
        .await;

        let h = c.handle(node);
        assert_eq!(h.submit(cmd("x")).await, Err(not_leader(None)), "{role}");
        assert_eq!(h.read(Vec::new()).await, Err(not_leader(None)), "{role}");
        let s = c.status(node);
        assert_eq!(s.state, role, "still campaigning: {s:?}");
        assert_eq!(s.last_log_index, leader.last_log_index, "nothing appended");
        if pre_vote {
            assert_eq!(s.term, leader.term, "a pre-candidate keeps its term");
        } else {
            assert!(s.term > leader.term, "a candidate raised its term");
        }
    }
}

// ----- Failures of the leader --------------------------------------------

#[tokio::test(start_paused = true)]
async fn leader_failover_elects_a_new_leader_and_keeps_committed_commands() {
    let mut c = Cluster::start(3, RaftConfig::default());
    let old = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(old.id);
    for (i, x) in ["a", "b", "c"].into_iter().enumerate() {
        assert_eq!(h.submit(cmd(x)).await, Ok(ListOutput::Len(i + 1)));
    }

    c.stop_node(old.id).await.expect("clean shutdown");
    let stopped_at = Instant::now();
    let rest = c.others(old.id);
    let new = c.wait_for_leader(&rest, ELECTION_BOUND).await;
    let took = stopped_at.elapsed();
    assert!(
        took <= c.config.election_timeout_max * 3,
        "failover took {took:?}"
    );
    assert_ne!(new.id, old.id);
    assert!(new.term > old.term, "a new term: {new:?} after {old:?}");

    let h = c.handle(new.id);
    assert_eq!(h.read(Vec::new()).await, Ok(items(&["a", "b", "c"])));
    assert_eq!(h.submit(cmd("d")).await, Ok(ListOutput::Len(4)));
    let last = c.status(new.id).last_applied;
    c.wait_applied(&rest, last, PROMPT).await;
    for id in rest {
        assert_eq!(c.applied(id), cmds(&["a", "b", "c", "d"]), "node {id}");
    }
    // The stopped leader's handle reports that it is gone.
    assert_eq!(
        c.handle(old.id).submit(cmd("e")).await,
        Err(ClientError::Stopped)
    );
}

#[tokio::test(start_paused = true)]
async fn an_isolated_leader_cannot_commit_and_the_majority_elects_a_new_one() {
    let c = Cluster::start(3, RaftConfig::default());
    let old = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let old_h = c.handle(old.id);
    assert_eq!(old_h.submit(cmd("a")).await, Ok(ListOutput::Len(1)));
    let committed = c.status(old.id).commit_index;

    c.net.isolate(old.id);
    let lost = tokio::spawn({
        let h = old_h.clone();
        async move { h.submit(cmd("lost")).await }
    });

    let majority = c.others(old.id);
    let new = c.wait_for_leader(&majority, ELECTION_BOUND).await;
    assert!(new.term > old.term);
    let s = c.status(old.id);
    assert_eq!(s.last_log_index, committed + 1, "the entry is in its log");
    assert_eq!(s.commit_index, committed, "but it cannot commit it: {s:?}");
    assert!(
        !lost.is_finished(),
        "the isolated leader acknowledged a write"
    );

    // Check-quorum: the isolated leader notices it lost the majority.
    c.wait_until("the isolated leader steps down", ELECTION_BOUND, |c| {
        c.status(old.id).state != RaftState::Leader
    })
    .await;

    let new_h = c.handle(new.id);
    assert_eq!(new_h.submit(cmd("b")).await, Ok(ListOutput::Len(2)));
    assert!(!lost.is_finished());

    c.net.heal();
    let outcome = timeout(PROMPT, lost)
        .await
        .expect("the pending submit resolves after the heal")
        .expect("client task");
    assert_eq!(outcome, Err(ClientError::LeadershipLost));

    c.wait_until("the old leader follows the new one", PROMPT, |c| {
        let s = c.status(old.id);
        s.state == RaftState::Follower && s.leader_id == Some(new.id)
    })
    .await;
    let last = c.status(new.id).last_applied;
    c.wait_applied(&[1, 2, 3], last, PROMPT).await;
    assert_eq!(new_h.read(Vec::new()).await, Ok(items(&["a", "b"])));
    for id in [1, 2, 3] {
        assert_eq!(c.applied(id), cmds(&["a", "b"]), "node {id}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_stale_leader_steps_down_when_it_sees_a_higher_term() {
    // Without check-quorum, an isolated leader does not notice anything by
    // itself: only a message with a higher term makes it step down.
    let config = RaftConfig {
        check_quorum: false,
        ..RaftConfig::default()
    };
    let c = Cluster::start(3, config);
    let old = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    c.net.isolate(old.id);
    let majority = c.others(old.id);
    let new = c.wait_for_leader(&majority, ELECTION_BOUND).await;
    assert!(new.term > old.term);
    assert_eq!(
        c.handle(new.id).submit(cmd("a")).await,
        Ok(ListOutput::Len(1))
    );

    // Still a leader of the old term: stale, but it does not know it.
    sleep(c.config.election_timeout_max * 2).await;
    let s = c.status(old.id);
    assert_eq!((s.state, s.term), (RaftState::Leader, old.term), "{s:?}");

    c.net.heal();
    c.wait_until("the stale leader steps down", PROMPT, |c| {
        let s = c.status(old.id);
        s.state == RaftState::Follower && s.term == new.term && s.leader_id == Some(new.id)
    })
    .await;
    // The current leader was not disturbed, and the old one catches up.
    let s = c.status(new.id);
    assert_eq!((s.state, s.term), (RaftState::Leader, new.term), "{s:?}");
    c.wait_applied(&[old.id], s.last_applied, PROMPT).await;
    assert_eq!(c.applied(old.id), cmds(&["a"]));
}

#[tokio::test(start_paused = true)]
async fn a_command_fails_when_the_leader_loses_leadership_mid_replication() {
    // Five nodes. The leader L appends a command and gets it to one follower
    // A, but no further: L's links to the other three are cut and A can
    // only listen. The entry sits on 2 of 5 logs, uncommitted, when B, C and
    // D elect a new leader, whose higher term reaches L.
    let c = Cluster::start(5, RaftConfig::default());
    let l = c.wait_for_leader(&[1, 2, 3, 4, 5], ELECTION_BOUND).await;
    let lh = c.handle(l.id);
    assert_eq!(lh.submit(cmd("a")).await, Ok(ListOutput::Len(1)));
    let last = c.status(l.id).last_applied;
    c.wait_applied(&[1, 2, 3, 4, 5], last, PROMPT).await;
    let others = c.others(l.id);
    let (a, bcd) = (others[0], others[1..].to_vec());
    for &n in &bcd {
        c.net.cut_link(l.id, n);
        c.net.cut_link(a, n);
    }
    c.net.cut_link(a, l.id);

    let pending = tokio::spawn({
        let lh = lh.clone();
        async move { lh.submit(cmd("x")).await }
    });
    let x_index = l.last_log_index + 2; // after the no-op and "a"
    c.wait_until("the entry reaches A only", PROMPT, |c| {
        c.status(a).last_log_index == x_index && c.status(l.id).last_log_index == x_index
    })
    .await;
    assert!(c.status(l.id).commit_index < x_index, "not committed");

    let new = c.wait_for_leader(&bcd, ELECTION_BOUND).await;
    assert!(new.term > l.term);
    c.wait_until("L sees the higher term and steps down", PROMPT, |c| {
        let s = c.status(l.id);
        s.state == RaftState::Follower && s.term == new.term
    })
    .await;
    assert!(!pending.is_finished(), "no outcome yet: L cannot hear back");
    let nh = c.handle(new.id);
    assert_eq!(nh.submit(cmd("y")).await, Ok(ListOutput::Len(2)));

    c.net.heal();
    let outcome = timeout(PROMPT, pending)
        .await
        .expect("the submit resolves once L learns the new log")
        .expect("client task");
    assert_eq!(outcome, Err(ClientError::LeadershipLost));

    assert_eq!(nh.read(Vec::new()).await, Ok(items(&["a", "y"])));
    let last = c.status(new.id).last_applied;
    c.wait_applied(&[1, 2, 3, 4, 5], last, PROMPT).await;
    for id in 1..=5 {
        assert_eq!(
            c.applied(id),
            cmds(&["a", "y"]),
            "node {id} never applies x"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn split_brain_is_prevented() {
    // Check-quorum off so that cut-off leaders linger: two nodes then think
    // they lead at once (in different terms), which is allowed; two leaders
    // in the same term never are (Election Safety, Figure 3).
    let config = RaftConfig {
        check_quorum: false,
        ..RaftConfig::default()
    };
    let c = Cluster::start(5, config);
    let ids = [1, 2, 3, 4, 5];

    // Every leadership any node ever announces, as seen through its status
    // watch, plus what polling sees.
    let leaders_by_term: Arc<Mutex<BTreeMap<Term, BTreeSet<NodeId>>>> = Arc::default();
    for id in ids {
        let mut rx = c.handle(id).watch_status();
        let seen = Arc::clone(&leaders_by_term);
        tokio::spawn(async move {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.state == RaftState::Leader {
                        seen.lock()
                            .expect("lock")
                            .entry(s.term)
                            .or_default()
                            .insert(s.id);
                    }
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    let mut max_simultaneous = 0;
    let mut poll = |c: &Cluster| {
        let mut now: BTreeMap<Term, Vec<NodeId>> = BTreeMap::new();
        for id in ids {
            let s = c.status(id);
            if s.state == RaftState::Leader {
                now.entry(s.term).or_default().push(id);
            }
        }
        for (term, leaders) in &now {
            assert!(
                leaders.len() <= 1,
                "split brain: leaders {leaders:?} in term {term}\n{}",
                c.describe()
            );
        }
        max_simultaneous = max_simultaneous.max(now.len());
    };

    let mut submitted = 0;
    for round in 0..4 {
        let leader = c.wait_for_leader(&ids, ELECTION_BOUND).await;
        // Cut the leader off with one follower (a minority of two), then,
        // every other round, move another node over to it.
        let buddy = c.others(leader.id)[round % 4];
        let minority = [leader.id, buddy];
        let majority: Vec<NodeId> = ids
            .iter()
            .copied()
            .filter(|id| !minority.contains(id))
            .collect();
        c.net.partition(&[&minority[..], &majority[..]]);
        // Writes on both sides: only the majority's can commit.
        for side in [leader.id, majority[0]] {
            let h = c.handle(side);
            submitted += 1;
            let data = cmd(&format!("r{round}-{submitted}"));
            tokio::spawn(async move {
                let _ = h.submit(data).await;
            });
        }
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            poll(&c);
            sleep(Duration::from_millis(10)).await;
        }
        if round % 2 == 1 {
            c.net
                .partition(&[&[leader.id][..], &majority[..2], &[buddy, majority[2]][..]]);
            let until = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < until {
                poll(&c);
                sleep(Duration::from_millis(10)).await;
            }
        }
        c.net.heal();
        let until = Instant::now() + Duration::from_millis(1000);
        while Instant::now() < until {
            poll(&c);
            sleep(Duration::from_millis(10)).await;
        }
    }

    let seen = leaders_by_term.lock().expect("lock").clone();
    for (term, leaders) in &seen {
        assert_eq!(leaders.len(), 1, "term {term} had leaders {leaders:?}");
    }
    assert!(
        seen.len() >= 4,
        "the scenario changed leaders several times: {seen:?}"
    );
    assert!(
        max_simultaneous >= 2,
        "a stale leader coexisted with a new one (the scenario bites)"
    );
}

// ----- Catching up ------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_partitioned_node_rejoins_and_catches_up() {
    let c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(leader.id);
    assert_eq!(h.submit(cmd("before")).await, Ok(ListOutput::Len(1)));
    let lagger = c.others(leader.id)[0];
    c.wait_applied(&[lagger], c.status(leader.id).last_applied, PROMPT)
        .await;

    c.net.isolate(lagger);
    let mut expected = vec![cmd("before")];
    for i in 1..=5 {
        let x = format!("while-away-{i}");
        assert_eq!(h.submit(cmd(&x)).await, Ok(ListOutput::Len(i + 1)));
        expected.push(cmd(&x));
    }
    // Long enough for the lagger to campaign (in vain) a few times.
    sleep(c.config.election_timeout_max * 3).await;
    let behind = c.status(lagger);
    assert_eq!(c.applied(lagger), cmds(&["before"]), "it missed the writes");
    assert!(behind.last_log_index < c.status(leader.id).last_log_index);

    c.net.heal();
    c.wait_until("the lagger catches up", PROMPT, |c| {
        let (s, l) = (c.status(lagger), c.status(leader.id));
        s.last_log_index == l.last_log_index
            && s.commit_index == l.commit_index
            && s.last_applied == l.last_applied
    })
    .await;
    assert_eq!(c.applied(lagger), expected);
    // Pre-vote: the returning node did not disrupt the cluster.
    let s = c.status(leader.id);
    assert_eq!((s.state, s.term), (RaftState::Leader, leader.term), "{s:?}");
    let s = c.status(lagger);
    assert_eq!(
        (s.term, s.leader_id),
        (leader.term, Some(leader.id)),
        "{s:?}"
    );
}

// ----- Reads ------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn linearizable_read_on_the_leader_sees_every_acknowledged_write() {
    let c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(leader.id);

    // Write, read, write, read...
    let mut acked: Vec<Vec<u8>> = Vec::new();
    for i in 0..10 {
        let x = cmd(&format!("w{i}"));
        assert!(h.submit(x.clone()).await.is_ok());
        acked.push(x);
        assert_eq!(
            h.read(Vec::new()).await,
            Ok(ListOutput::Items(acked.clone()))
        );
    }

    // Writers and readers at once: a read started after a write was
    // acknowledged includes it.
    let acked_count = Arc::new(AtomicUsize::new(acked.len()));
    let writer = tokio::spawn({
        let (h, acked_count) = (h.clone(), Arc::clone(&acked_count));
        async move {
            for i in 10..40 {
                let x = cmd(&format!("w{i}"));
                assert!(h.submit(x).await.is_ok());
                acked_count.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let mut reads = 0;
    while !writer.is_finished() {
        let floor = acked_count.load(Ordering::SeqCst);
        match h.read(Vec::new()).await {
            Ok(ListOutput::Items(seen)) => {
                assert!(seen.len() >= floor, "read saw {} < {floor}", seen.len());
                for (i, x) in seen.iter().enumerate() {
                    assert_eq!(x, &cmd(&format!("w{i}")));
                }
            }
            other => panic!("read failed: {other:?}"),
        }
        reads += 1;
    }
    writer.await.expect("writer");
    assert!(reads > 1, "reads overlapped the writes");
    let all: Vec<Vec<u8>> = (0..40).map(|i| cmd(&format!("w{i}"))).collect();

    // The leader is cut off. A read there can no longer be confirmed by a
    // majority, so it must not answer (it fails once the leader steps down).
    c.net.isolate(leader.id);
    let stale_read = tokio::spawn({
        let h = h.clone();
        async move { h.read(Vec::new()).await }
    });
    let majority = c.others(leader.id);
    let new = c.wait_for_leader(&majority, ELECTION_BOUND).await;
    // At once, before the new leader's no-op may have committed: the read
    // still sees every acknowledged write.
    let nh = c.handle(new.id);
    assert_eq!(
        nh.read(Vec::new()).await,
        Ok(ListOutput::Items(all.clone()))
    );
    assert_eq!(nh.submit(cmd("w40")).await, Ok(ListOutput::Len(41)));

    let stale = timeout(PROMPT, stale_read)
        .await
        .expect("the cut-off leader's read resolves")
        .expect("reader task");
    assert!(
        matches!(stale, Err(ClientError::NotLeader { .. })),
        "a leader that cannot reach a majority must not serve reads: {stale:?}"
    );
}

// ----- Restarts and disks ------------------------------------------------

#[tokio::test(start_paused = true)]
async fn restart_restores_state_and_the_node_rejoins() {
    let mut c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(leader.id);
    for x in ["a", "b"] {
        assert!(h.submit(cmd(x)).await.is_ok());
    }
    let node = c.others(leader.id)[0];
    c.wait_applied(&[node], c.status(leader.id).last_applied, PROMPT)
        .await;
    let before = c.status(node);
    let disk = c.disk(node);
    let hard_state = disk.0.lock().expect("disk").hard_state();
    assert_eq!(hard_state.term, before.term, "the term was persisted");

    c.stop_node(node).await.expect("clean shutdown");
    for x in ["c", "d"] {
        assert!(h.submit(cmd(x)).await.is_ok(), "two of three still commit");
    }

    c.start_node(node, disk);
    // Straight from its disk: term and log are back, volatile state is not.
    let s = c.status(node);
    assert_eq!(s.state, RaftState::Follower);
    assert_eq!(s.term, before.term, "term restored");
    assert_eq!(
        (s.last_log_index, s.last_log_term),
        (before.last_log_index, before.last_log_term),
        "log restored"
    );
    assert_eq!((s.commit_index, s.last_applied), (0, 0));

    let l = c.status(leader.id);
    c.wait_until("the restarted node catches up", PROMPT, |c| {
        let s = c.status(node);
        s.last_log_index == l.last_log_index && s.last_applied == l.last_applied
    })
    .await;
    // Its fresh state machine re-applied everything, old and new.
    assert_eq!(c.applied(node), cmds(&["a", "b", "c", "d"]));
    let s = c.status(node);
    assert!(s.term >= before.term);
    assert_eq!(s.leader_id, Some(leader.id), "it rejoined the same leader");
    let progress = c.status(leader.id).replication;
    assert!(
        progress
            .iter()
            .any(|&(p, m, _)| p == node && m == l.last_log_index),
        "the leader sees it fully replicated: {progress:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn full_cluster_restart_keeps_all_committed_commands() {
    let mut c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(leader.id);
    let written = ["a", "b", "c", "d", "e"];
    for x in written {
        assert!(h.submit(cmd(x)).await.is_ok());
    }
    // Shut down without waiting for followers to apply: what was
    // acknowledged is on a majority of disks, which is what must survive.
    for id in [1, 2, 3] {
        c.stop_node(id).await.expect("clean shutdown");
    }
    for id in [1, 2, 3] {
        let disk = c.disk(id);
        c.start_node(id, disk);
    }

    let new = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    assert!(new.term > leader.term, "a new election after the restart");
    let nh = c.handle(new.id);
    assert_eq!(nh.read(Vec::new()).await, Ok(items(&written)));
    assert_eq!(nh.submit(cmd("f")).await, Ok(ListOutput::Len(6)));
    let last = c.status(new.id).last_applied;
    c.wait_applied(&[1, 2, 3], last, PROMPT).await;
    for id in [1, 2, 3] {
        assert_eq!(
            c.applied(id),
            cmds(&["a", "b", "c", "d", "e", "f"]),
            "node {id}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn storage_failure_stops_the_node() {
    let mut c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(leader.id);
    assert_eq!(h.submit(cmd("a")).await, Ok(ListOutput::Len(1)));

    c.disk(leader.id)
        .0
        .lock()
        .expect("disk")
        .set_fail_writes(true);
    assert_eq!(
        timeout(PROMPT, h.submit(cmd("b")))
            .await
            .expect("the submit resolves"),
        Err(ClientError::Stopped),
        "the outcome of a write on a dead node is unknown"
    );
    let task = c
        .nodes
        .get_mut(&leader.id)
        .and_then(|n| n.task.take())
        .expect("task");
    let ended = timeout(PROMPT, task)
        .await
        .expect("the server task ends")
        .expect("no panic");
    assert!(
        matches!(ended, Err(ServerError::Storage(_))),
        "fail-stop on a storage error: {ended:?}"
    );
    assert_eq!(h.submit(cmd("c")).await, Err(ClientError::Stopped));
    assert_eq!(h.read(Vec::new()).await, Err(ClientError::Stopped));

    let rest = c.others(leader.id);
    let new = c.wait_for_leader(&rest, ELECTION_BOUND).await;
    assert!(new.term > leader.term);
    let nh = c.handle(new.id);
    match nh.submit(cmd("d")).await {
        // "b" may or may not have survived on the followers.
        Ok(ListOutput::Len(n)) => assert!(n == 2 || n == 3, "{n}"),
        other => panic!("the survivors accept writes: {other:?}"),
    }
    match nh.read(Vec::new()).await {
        Ok(ListOutput::Items(seen)) => {
            assert_eq!(seen.first(), Some(&cmd("a")));
            assert_eq!(seen.last(), Some(&cmd("d")));
        }
        other => panic!("read failed: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_fails_pending_requests_with_stopped() {
    let mut c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(leader.id);
    // Cut off, the leader can neither commit nor confirm a read.
    c.net.isolate(leader.id);
    let submit = tokio::spawn({
        let h = h.clone();
        async move { h.submit(cmd("x")).await }
    });
    sleep(Duration::from_millis(100)).await;
    assert!(!submit.is_finished());

    c.stop_node(leader.id).await.expect("clean shutdown");
    let outcome = timeout(PROMPT, submit)
        .await
        .expect("resolves on shutdown")
        .expect("client task");
    assert_eq!(outcome, Err(ClientError::Stopped));
    assert_eq!(h.submit(cmd("y")).await, Err(ClientError::Stopped));
}

#[tokio::test(start_paused = true)]
async fn every_pending_submit_on_a_deposed_leader_resolves() {
    // The isolated leader accepts three writes (indexes k+1..k+3). The
    // majority's new leader appends only its no-op (k+1), and nobody writes
    // anything else. After the heal the old leader's log is cut back to
    // k+1: all three entries are gone for good, so all three clients must
    // hear LeadershipLost, not just the one whose index was refilled.
    let c = Cluster::start(3, RaftConfig::default());
    let old = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let old_h = c.handle(old.id);
    assert_eq!(old_h.submit(cmd("a")).await, Ok(ListOutput::Len(1)));

    c.net.isolate(old.id);
    let pending: Vec<_> = (1..=3)
        .map(|i| {
            let h = old_h.clone();
            tokio::spawn(async move { h.submit(cmd(&format!("lost-{i}"))).await })
        })
        .collect();
    let new = c.wait_for_leader(&c.others(old.id), ELECTION_BOUND).await;
    c.net.heal();
    c.wait_until("the old leader adopts the new log", PROMPT, |c| {
        let s = c.status(old.id);
        s.leader_id == Some(new.id) && s.last_applied == c.status(new.id).last_applied
    })
    .await;

    for (i, p) in pending.into_iter().enumerate() {
        let outcome = timeout(PROMPT, p)
            .await
            .unwrap_or_else(|_| panic!("pending submit {} never resolves", i + 1))
            .expect("client task");
        assert_eq!(
            outcome,
            Err(ClientError::LeadershipLost),
            "submit {}",
            i + 1
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_stale_submit_is_answered_leadership_lost_when_its_index_is_reused() {
    // L, isolated in term T, accepts x, y, z at k+1..k+3. N leads term T+1
    // with just its no-op at k+1; after the heal L's log is cut back to k+1.
    // Then N stops and L leads again (M is restarted with slow timers so it
    // cannot win first): L's no-op takes k+2 and a new write takes k+3,
    // z's index. z's entry was overwritten: its client must hear
    // LeadershipLost (once, this waiter was silently replaced and dropped).
    let mut c = Cluster::start(3, RaftConfig::default());
    let l = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let lh = c.handle(l.id);
    assert_eq!(lh.submit(cmd("a")).await, Ok(ListOutput::Len(1)));
    c.wait_applied(&[1, 2, 3], c.status(l.id).last_applied, PROMPT)
        .await;

    c.net.isolate(l.id);
    let pending: Vec<_> = ["x", "y", "z"]
        .into_iter()
        .map(|x| {
            let h = lh.clone();
            tokio::spawn(async move { h.submit(cmd(x)).await })
        })
        .collect();
    let others = c.others(l.id);
    let n = c.wait_for_leader(&others, ELECTION_BOUND).await;
    let m = others.into_iter().find(|&o| o != n.id).expect("third node");
    c.net.heal();
    c.wait_until("L adopts N's log", PROMPT, |c| {
        let s = c.status(l.id);
        s.leader_id == Some(n.id) && s.last_applied == c.status(n.id).last_applied
    })
    .await;

    c.stop_node(n.id).await.expect("clean shutdown");
    c.stop_node(m).await.expect("clean shutdown");
    let slow = RaftConfig {
        election_timeout_min: Duration::from_secs(5),
        election_timeout_max: Duration::from_secs(10),
        ..RaftConfig::default()
    };
    let m_disk = c.disk(m);
    c.start_node_with(m, m_disk, slow);
    let again = c.wait_for_leader(&[l.id, m], ELECTION_BOUND).await;
    assert_eq!(again.id, l.id, "L leads again");
    assert!(lh.submit(cmd("w")).await.is_ok());

    let mut outcomes = Vec::new();
    for p in pending {
        let outcome = timeout(PROMPT, p)
            .await
            .expect("every stale submit resolves")
            .expect("client task");
        outcomes.push(outcome);
    }
    assert!(
        c.status(l.id).state == RaftState::Leader,
        "L is still running"
    );
    assert_eq!(outcomes, vec![Err(ClientError::LeadershipLost); 3]);
}

#[tokio::test(start_paused = true)]
async fn commands_commit_despite_message_loss_delay_and_partitions() {
    // Every link drops 10% of messages and delays the rest, and a nemesis
    // keeps cutting the leader off. A client retries each command until it
    // is acknowledged, with a fresh payload per attempt. What the API
    // promises, checked at the end: acknowledged attempts are applied
    // exactly once and in order, attempts that failed with NotLeader or
    // LeadershipLost never are, and every node applies the same sequence.
    let c = Cluster::start(3, RaftConfig::default());
    let ids = [1, 2, 3];
    let lossy = {
        let net = c.net.clone();
        move || {
            for from in ids {
                for to in ids.into_iter().filter(|&t| t != from) {
                    net.set_link_loss(from, to, 0.1);
                    net.set_link_delay(from, to, Duration::from_millis(5 * (from + to)));
                }
            }
        }
    };
    lossy();
    let nemesis = tokio::spawn({
        let net = c.net.clone();
        let lossy = lossy.clone();
        let handles: Vec<_> = ids.iter().map(|&id| c.handle(id)).collect();
        async move {
            for other in ids.into_iter().cycle() {
                sleep(Duration::from_millis(900)).await;
                // Cut off the leader if there is one, else someone.
                let victim = handles
                    .iter()
                    .map(|h| h.status())
                    .find(|s| s.state == RaftState::Leader)
                    .map_or(other, |s| s.id);
                net.isolate(victim);
                sleep(Duration::from_millis(700)).await;
                net.heal();
                lossy();
            }
        }
    });

    let mut acked = Vec::new();
    let mut failed = Vec::new();
    let mut unknown = 0;
    let mut target: NodeId = 1;
    let started = Instant::now();
    for i in 0..100 {
        let mut attempt = 0;
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no progress\n{}",
                c.describe()
            );
            attempt += 1;
            let data = cmd(&format!("c{i}-a{attempt}"));
            match timeout(
                Duration::from_secs(3),
                c.handle(target).submit(data.clone()),
            )
            .await
            {
                Ok(Ok(_)) => {
                    acked.push(data);
                    break;
                }
                Ok(Err(ClientError::NotLeader { leader_hint })) => {
                    failed.push(data);
                    target = leader_hint.unwrap_or(target % 3 + 1);
                    sleep(Duration::from_millis(50)).await;
                }
                Ok(Err(ClientError::LeadershipLost)) => failed.push(data),
                Ok(Err(ClientError::Stopped)) => panic!("no node stops here"),
                Ok(Err(ClientError::TooLarge { .. })) => panic!("the commands are a few bytes"),
                // Outcome unknown: neither acknowledged nor known to be lost.
                Ok(Err(ClientError::Unknown)) | Err(_) => {
                    unknown += 1;
                    target = target % 3 + 1;
                }
            }
        }
    }
    nemesis.abort();
    let _ = nemesis.await;
    assert!(
        failed.len() + unknown > 0,
        "the faults never got in the way (the test would prove nothing)"
    );
    assert!(
        c.status(1).term >= 4,
        "the leader changed several times\n{}",
        c.describe()
    );

    c.net.heal();
    let leader = c.wait_for_leader(&ids, ELECTION_BOUND).await;
    let last = c.status(leader.id).last_applied;
    c.wait_applied(&ids, last, PROMPT).await;
    let applied = c.applied(leader.id);
    for id in ids {
        assert_eq!(c.applied(id), applied, "node {id} diverged");
    }
    for a in &acked {
        let n = applied.iter().filter(|x| *x == a).count();
        let a = String::from_utf8_lossy(a);
        assert_eq!(n, 1, "acknowledged {a:?} applied {n} times");
    }
    for f in &failed {
        let f = String::from_utf8_lossy(f);
        assert!(
            !applied.iter().any(|x| String::from_utf8_lossy(x) == f),
            "{f:?} was reported as failed but applied"
        );
    }
    let positions: Vec<usize> = acked
        .iter()
        .map(|a| applied.iter().position(|x| x == a).expect("applied"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
}

#[tokio::test(start_paused = true)]
async fn a_follower_with_a_failing_disk_stops_and_the_cluster_continues() {
    let mut c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let follower = c.others(leader.id)[0];
    c.disk(follower)
        .0
        .lock()
        .expect("disk")
        .set_fail_writes(true);

    let h = c.handle(leader.id);
    assert_eq!(h.submit(cmd("a")).await, Ok(ListOutput::Len(1)));
    let task = c
        .nodes
        .get_mut(&follower)
        .and_then(|n| n.task.take())
        .expect("task");
    let ended = timeout(PROMPT, task)
        .await
        .expect("the follower's task ends")
        .expect("no panic");
    assert!(matches!(ended, Err(ServerError::Storage(_))), "{ended:?}");
    assert!(
        c.disk(follower).0.lock().expect("disk").log().len()
            < c.status(leader.id).last_log_index as usize,
        "nothing more was written to the broken disk"
    );

    // Two of three still commit, and the leader keeps its office.
    assert_eq!(h.submit(cmd("b")).await, Ok(ListOutput::Len(2)));
    sleep(c.config.election_timeout_max * 2).await;
    let s = c.status(leader.id);
    assert_eq!((s.state, s.term), (RaftState::Leader, leader.term));
    assert_eq!(h.read(Vec::new()).await, Ok(items(&["a", "b"])));
}
