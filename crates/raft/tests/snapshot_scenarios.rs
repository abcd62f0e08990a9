//! §7 Log compaction end to end: servers on the in-memory network with real
//! file storage (WAL + snapshot files in temp dirs), a small snapshot
//! threshold, and followers that fall behind the leader's compaction.
//!
//! Time is tokio's paused clock; file IO is real.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use raft::{
    FileStorage, InMemoryNetwork, ListOutput, ListStateMachine, Membership, NodeId, RaftConfig,
    RaftHandle, RaftServer, RaftState, ServerError, ServerExtras, ServerParts, SnapshotStore,
};
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

type Handle = RaftHandle<ListOutput>;

struct Node {
    handle: Handle,
    task: JoinHandle<Result<(), ServerError>>,
}

struct Cluster {
    net: InMemoryNetwork,
    dir: tempfile::TempDir,
    config: RaftConfig,
    voters: Vec<NodeId>,
    nodes: BTreeMap<NodeId, Node>,
}

impl Cluster {
    fn start(n: u64, config: RaftConfig) -> Cluster {
        let mut c = Cluster {
            net: InMemoryNetwork::new(5, Duration::from_millis(100)),
            dir: tempfile::tempdir().expect("tempdir"),
            config,
            voters: (1..=n).collect(),
            nodes: BTreeMap::new(),
        };
        for id in 1..=n {
            c.start_node(id);
        }
        c
    }

    fn node_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    fn start_node(&mut self, id: NodeId) {
        let (transport, incoming) = self.net.register(id);
        let dir = self.node_dir(id);
        let storage = FileStorage::open(dir.join("wal")).expect("wal opens");
        let snapshots = SnapshotStore::open(dir.join("snapshots")).expect("snapshot dir opens");
        let (handle, task) = RaftServer::spawn_with(
            ServerParts {
                id,
                membership: Membership::new(&self.voters, &[]),
                config: self.config.clone(),
                storage: Box::new(storage),
                transport,
                incoming,
                state_machine: ListStateMachine::default(),
                seed: id,
            },
            ServerExtras {
                observer: None,
                snapshots: Some(snapshots),
                background_writes: false,
                vote_withheld: false,
            },
        )
        .expect("server starts");
        self.nodes.insert(id, Node { handle, task });
    }

    async fn stop_node(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            node.handle.shutdown().await;
            let _ = node.task.await;
        }
        self.net.unregister(id);
    }

    /// Some voter other than `leader`.
    fn follower_of(&self, leader: NodeId) -> NodeId {
        self.voters
            .iter()
            .copied()
            .find(|&id| id != leader)
            .expect("a cluster of several voters")
    }

    fn handle(&self, id: NodeId) -> &Handle {
        &self.nodes[&id].handle
    }

    async fn wait_until(&self, what: &str, mut f: impl FnMut(&Cluster) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            sleep(Duration::from_millis(10)).await;
        }
    }

    async fn leader(&self) -> NodeId {
        let mut found = 0;
        self.wait_until("a leader is elected", |c| {
            found = c
                .nodes
                .iter()
                .find(|(_, n)| n.handle.status().state == RaftState::Leader)
                .map_or(0, |(id, _)| *id);
            found != 0
        })
        .await;
        found
    }

    async fn write(&self, leader: NodeId, count: usize, tag: &str) {
        for i in 0..count {
            self.handle(leader)
                .submit(format!("{tag}{i}").into_bytes())
                .await
                .expect("write commits");
        }
    }

    async fn items(&self, id: NodeId) -> Vec<Vec<u8>> {
        match self.handle(id).read(Vec::new()).await {
            Ok(ListOutput::Items(items)) => items,
            other => panic!("read on node {id}: {other:?}"),
        }
    }
}

fn config(snapshot_after_entries: u64) -> RaftConfig {
    RaftConfig {
        snapshot_after_entries,
        // Small chunks, so a transfer takes several round trips.
        snapshot_chunk_bytes: 512,
        ..RaftConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn an_admin_snapshot_is_durable_and_compacts_the_log() {
    let c = Cluster::start(3, config(0));
    let leader = c.leader().await;
    c.write(leader, 50, "w").await;
    let index = c.handle(leader).snapshot().await.expect("snapshot");
    assert!(
        index >= 50,
        "the snapshot covers what was applied ({index})"
    );
    let status = c.handle(leader).status();
    assert_eq!(
        status.snapshot_last_index, index,
        "the log now starts after it"
    );
    let files = std::fs::read_dir(c.node_dir(leader).join("snapshots"))
        .expect("snapshot dir")
        .count();
    assert_eq!(files, 1, "one snapshot file on disk");
}

#[tokio::test(start_paused = true)]
async fn a_follower_down_while_the_leader_compacts_catches_up_by_snapshot() {
    let mut c = Cluster::start(3, config(20));
    let leader = c.leader().await;
    c.write(leader, 5, "before").await;
    let follower = c.follower_of(leader);
    c.stop_node(follower).await;
    // Far past the threshold: the leader snapshots and compacts its log, so
    // the follower's next entries no longer exist as entries.
    c.write(leader, 100, "during").await;
    c.wait_until("the leader compacted", |c| {
        c.handle(leader).status().snapshot_last_index > 5
    })
    .await;
    c.start_node(follower);
    let want = c.items(leader).await;
    c.wait_until("the follower caught up", |c| {
        c.handle(follower).status().last_applied >= c.handle(leader).status().commit_index
    })
    .await;
    let st = c.handle(follower).status();
    assert!(
        st.snapshot_last_index > 5,
        "it installed a snapshot: {st:?}"
    );
    assert!(c.handle(leader).status().snapshot_bytes_sent > 0);
    // With the old leader gone, whichever of the two others leads next
    // (it may or may not be the follower that installed the snapshot) must
    // serve everything that was committed.
    c.stop_node(leader).await;
    let new_leader = c.leader().await;
    assert_eq!(c.items(new_leader).await, want);
}

#[tokio::test(start_paused = true)]
async fn a_node_restarts_from_its_snapshot_plus_the_log_tail() {
    let mut c = Cluster::start(3, config(30));
    let leader = c.leader().await;
    c.write(leader, 80, "x").await;
    let follower = c.follower_of(leader);
    c.wait_until("the follower snapshotted", |c| {
        c.handle(follower).status().snapshot_last_index > 0
    })
    .await;
    let want = c.items(leader).await;
    c.stop_node(follower).await;
    c.start_node(follower);
    let st = c.handle(follower).status();
    assert!(
        st.snapshot_last_index > 0,
        "restarted from its snapshot: {st:?}"
    );
    assert!(st.last_applied >= st.snapshot_last_index);
    c.wait_until("it caught up", |c| {
        c.handle(follower).status().last_applied >= c.handle(leader).status().commit_index
    })
    .await;
    c.stop_node(leader).await;
    let new_leader = c.leader().await;
    assert_eq!(c.items(new_leader).await, want);
}

#[tokio::test(start_paused = true)]
async fn a_wiped_follower_rejoins_by_snapshot() {
    let mut c = Cluster::start(3, config(25));
    let leader = c.leader().await;
    c.write(leader, 60, "a").await;
    c.wait_until("the leader snapshotted", |c| {
        c.handle(leader).status().snapshot_last_index > 0
    })
    .await;
    let follower = c.follower_of(leader);
    c.stop_node(follower).await;
    std::fs::remove_dir_all(c.node_dir(follower)).expect("wipe");
    c.start_node(follower);
    c.write(leader, 10, "b").await;
    c.wait_until("the wiped follower caught up", |c| {
        c.handle(follower).status().last_applied >= c.handle(leader).status().commit_index
    })
    .await;
    assert!(c.handle(follower).status().snapshot_last_index > 0);
}

// ----- Restart: the log behind, ahead of, or disconnected from the snapshot -----

/// A snapshot file at (`index`, term 1) whose image holds `items` commands.
fn write_snapshot(store: &SnapshotStore, index: u64, items: u64) {
    use raft::{SnapshotMeta, StateMachine};
    let mut sm = ListStateMachine::default();
    for i in 1..=items {
        sm.apply(i, format!("s{i}").as_bytes());
    }
    let mut image = sm.snapshot().expect("supported");
    let meta = SnapshotMeta {
        last_index: index,
        last_term: 1,
        membership: Membership::new(&[1], &[]),
    };
    store
        .write(&meta, &mut |out| image.write_to(out))
        .expect("snapshot written");
}

/// A one-node server on `storage` and the snapshots in `dir`.
fn single(
    storage: raft::MemoryStorage,
    dir: &std::path::Path,
) -> Result<(Handle, JoinHandle<Result<(), ServerError>>), ServerError> {
    let net = InMemoryNetwork::new(1, Duration::from_millis(100));
    let (transport, incoming) = net.register(1);
    RaftServer::spawn_with(
        ServerParts {
            id: 1,
            membership: Membership::new(&[1], &[]),
            config: config(0),
            storage: Box::new(storage),
            transport,
            incoming,
            state_machine: ListStateMachine::default(),
            seed: 1,
        },
        ServerExtras {
            observer: None,
            snapshots: Some(SnapshotStore::open(dir).expect("store")),
            background_writes: false,
            vote_withheld: false,
        },
    )
}

fn log(first: u64, last: u64) -> raft::MemoryStorage {
    let entries = (first..=last)
        .map(|i| raft::LogEntry::new(1, i, format!("s{i}").into_bytes()))
        .collect();
    raft::MemoryStorage::with_state(
        raft::HardState {
            term: 1,
            voted_for: Some(1),
        },
        entries,
    )
}

#[tokio::test(start_paused = true)]
async fn a_restart_with_the_log_ahead_of_the_snapshot_replays_the_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_snapshot(&SnapshotStore::open(dir.path()).expect("store"), 100, 100);
    let (handle, _task) = single(log(1, 150), dir.path()).expect("starts");
    let st = handle.status();
    assert_eq!(st.snapshot_last_index, 100);
    assert_eq!(
        st.last_applied, 100,
        "restored from the snapshot, not replayed from 1"
    );
    assert_eq!(
        st.last_log_index, 150,
        "the tail after the snapshot is kept"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.status().last_applied < 150 {
        assert!(Instant::now() < deadline, "the tail was never applied");
        sleep(Duration::from_millis(10)).await;
    }
    match handle.read(Vec::new()).await {
        Ok(ListOutput::Items(items)) => assert_eq!(items.len(), 150),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_restart_with_the_log_behind_the_snapshot_starts_after_the_snapshot() {
    // A crash after a received snapshot was installed but before the log
    // was reset: the snapshot is ahead of the whole log.
    let dir = tempfile::tempdir().expect("tempdir");
    write_snapshot(&SnapshotStore::open(dir.path()).expect("store"), 100, 100);
    let (handle, _task) = single(log(1, 50), dir.path()).expect("starts");
    let st = handle.status();
    assert_eq!((st.snapshot_last_index, st.last_applied), (100, 100));
    assert_eq!(
        st.last_log_index, 100,
        "the old log was discarded: it ends at the snapshot"
    );
    // And it keeps working: a new command goes after the snapshot.
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.status().state != RaftState::Leader {
        assert!(Instant::now() < deadline, "no leader");
        sleep(Duration::from_millis(10)).await;
    }
    handle.submit(b"new".to_vec()).await.expect("commits");
    assert!(handle.status().last_applied > 100);
}

#[tokio::test(start_paused = true)]
async fn a_log_that_starts_after_the_snapshot_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_snapshot(&SnapshotStore::open(dir.path()).expect("store"), 100, 100);
    let mut storage = log(1, 150);
    raft::Storage::compact(&mut storage, 119).expect("compact");
    let err = single(storage, dir.path()).err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("starts at index 120") && text.contains("snapshot ends at 100"),
        "{text}"
    );
}
