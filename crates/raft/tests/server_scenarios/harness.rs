//! The bench: a `Cluster` of `RaftServer`s on an `InMemoryNetwork`, each with a
//! `SharedStorage` disk the test keeps across restarts and an `ObservedList` state
//! machine whose applied commands the test can see, and the `wait_*` helpers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raft::{
    InMemoryNetwork, InMemoryTransport, ListOutput, ListStateMachine, LogEntry, LogIndex,
    Membership, MemoryStorage, NodeId, RaftConfig, RaftHandle, RaftServer, RaftState,
    RecoveredState, ServerError, ServerParts, StateMachine, Status, Storage, StorageError,
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
        let membership = Membership::new(&self.voters, &[]);
        self.spawn_node(id, disk, config, membership);
    }

    /// Starts node `id` on a fresh disk as a server that joins: it knows
    /// no configuration and waits to be added (thesis §4.1).
    pub fn join_node(&mut self, id: NodeId) {
        let config = self.config.clone();
        self.spawn_node(id, SharedStorage::default(), config, Membership::default());
    }

    fn spawn_node(
        &mut self,
        id: NodeId,
        disk: SharedStorage,
        config: RaftConfig,
        membership: Membership,
    ) {
        let (transport, incoming): (InMemoryTransport, _) = self.net.register(id);
        let applied = Applied::default();
        let (handle, task) = RaftServer::spawn(ServerParts {
            id,
            membership,
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
