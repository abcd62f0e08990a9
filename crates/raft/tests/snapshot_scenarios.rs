//! §7 Log compaction end to end: servers on the in-memory network with real
//! file storage (WAL + snapshot files in temp dirs), a small snapshot
//! threshold, and followers that fall behind the leader's compaction.
//!
//! Time is tokio's paused clock; file IO is real.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use raft::{
    FileStorage, InMemoryNetwork, ListOutput, ListStateMachine, NodeId, RaftConfig, RaftHandle,
    RaftServer, RaftState, ServerError, ServerExtras, ServerParts, SnapshotStore,
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
                voters: self.voters.clone(),
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
    let follower = c
        .voters
        .iter()
        .copied()
        .find(|&id| id != leader)
        .expect("follower");
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
    // The follower's state machine equals the leader's: check through a
    // read after it becomes leader itself.
    c.stop_node(leader).await;
    c.wait_until("the follower leads", |c| {
        c.handle(follower).status().state == RaftState::Leader
            || c.nodes
                .values()
                .any(|n| n.handle.status().state == RaftState::Leader)
    })
    .await;
    let new_leader = c.leader().await;
    assert_eq!(c.items(new_leader).await, want);
}

#[tokio::test(start_paused = true)]
async fn a_node_restarts_from_its_snapshot_plus_the_log_tail() {
    let mut c = Cluster::start(3, config(30));
    let leader = c.leader().await;
    c.write(leader, 80, "x").await;
    let follower = c
        .voters
        .iter()
        .copied()
        .find(|&id| id != leader)
        .expect("follower");
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
    let follower = c
        .voters
        .iter()
        .copied()
        .find(|&id| id != leader)
        .expect("follower");
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
