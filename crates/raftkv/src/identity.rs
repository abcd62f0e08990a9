//! This node's identity on the peer port: its data dir's incarnation, its
//! book of the peers' incarnations, and its right to vote
//! (`raft::incarnation` explains why). The peer handshake calls
//! [`NodeIdentity::judge`] for the incarnation the other side presents and
//! [`NodeIdentity::on_verdict`] for what the other side says of ours; both
//! persist a change (`cluster.json` in the data dir) before the connection
//! carries anything else. The Raft loop follows [`NodeIdentity::may_vote`].

use std::path::PathBuf;

use raft::{NodeId, PeerVerdict, VoteRight};
use tokio::sync::{watch, Mutex};

use crate::config::ClusterMeta;

pub struct NodeIdentity {
    pub id: NodeId,
    pub incarnation: u64,
    voters: Vec<NodeId>,
    meta: Mutex<ClusterMeta>,
    /// Where `meta` is stored; `None` for tests that need no disk.
    dir: Option<PathBuf>,
    right: watch::Sender<VoteRight>,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("id", &self.id)
            .field("incarnation", &self.incarnation)
            .field("vote_right", &self.vote_right())
            .finish()
    }
}

impl NodeIdentity {
    /// The identity stored in data dir `dir`, as loaded into `meta`.
    pub fn new(meta: ClusterMeta, dir: PathBuf) -> Self {
        Self::build(meta, Some(dir))
    }

    /// An identity kept in memory only (tests of the transport): a node
    /// with history, allowed to vote.
    pub fn ephemeral(id: NodeId, incarnation: u64) -> Self {
        let meta = ClusterMeta {
            cluster_id: String::new(),
            node_id: id,
            members: Default::default(),
            incarnation,
            vote: VoteRight::Allowed,
            peers: Default::default(),
        };
        Self::build(meta, None)
    }

    fn build(meta: ClusterMeta, dir: Option<PathBuf>) -> Self {
        let (right, _) = watch::channel(meta.vote.clone());
        NodeIdentity {
            id: meta.node_id,
            incarnation: meta.incarnation,
            voters: meta.members.keys().copied().collect(),
            meta: Mutex::new(meta),
            dir,
            right,
        }
    }

    /// Follows this node's vote right.
    pub fn watch_vote_right(&self) -> watch::Receiver<VoteRight> {
        self.right.subscribe()
    }

    /// The vote right now, for `INFO` (`allowed`, `pending`, `suspended`).
    pub fn vote_right(&self) -> VoteRight {
        self.right.borrow().clone()
    }

    /// Peer `peer` presents `incarnation`: what our book says of it. A new
    /// entry is durable before this returns; an error means it is not, and
    /// the connection must not be used.
    pub async fn judge(&self, peer: NodeId, incarnation: u64) -> std::io::Result<PeerVerdict> {
        let mut meta = self.meta.lock().await;
        let (verdict, changed) = meta.peers.check(peer, incarnation);
        if changed {
            self.store(&meta).await?;
            if verdict == PeerVerdict::Reincarnated {
                tracing::warn!(
                    peer,
                    "node {peer} comes back with a new data dir (incarnation {incarnation:016x}): \
                     it may have voted in a life it forgot, so it must not vote again \
                     until it is removed and added back"
                );
            }
        }
        Ok(verdict)
    }

    /// Peer `peer` judged our incarnation. A change of our vote right is
    /// durable before this returns.
    pub async fn on_verdict(&self, peer: NodeId, verdict: PeerVerdict) -> std::io::Result<()> {
        let mut meta = self.meta.lock().await;
        if !meta.vote.on_verdict(self.id, &self.voters, peer, verdict) {
            return Ok(());
        }
        self.store(&meta).await?;
        match meta.vote {
            VoteRight::Allowed => {
                tracing::info!("every other voter vouched for this data dir: this node may vote");
            }
            VoteRight::Suspended => tracing::error!(
                "node {peer} knew another incarnation of this node: its data dir was wiped or \
                 replaced, and it may have voted in terms it forgot (§5.2). This node will \
                 replicate and serve clients but never vote or campaign. To give it a vote \
                 again, remove it from the cluster and add it back as a new member"
            ),
            VoteRight::Pending { .. } => tracing::debug!("node {peer} vouched for this data dir"),
        }
        self.right.send_replace(meta.vote.clone());
        Ok(())
    }

    async fn store(&self, meta: &ClusterMeta) -> std::io::Result<()> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let meta = meta.clone();
        // A small file with an fsync: off the async threads.
        tokio::task::spawn_blocking(move || meta.store(&dir))
            .await
            .map_err(std::io::Error::other)?
    }
}
