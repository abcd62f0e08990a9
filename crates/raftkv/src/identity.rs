//! This node's identity on the peer port: its data dir's incarnation, its
//! book of the peers' incarnations, and its right to vote
//! (`raft::incarnation` explains why). The peer handshake calls
//! [`NodeIdentity::judge`] for the incarnation the other side presents and
//! [`NodeIdentity::on_verdict`] for what the other side says of ours; both
//! persist a change (`cluster.json` in the data dir) before the connection
//! carries anything else. The Raft loop follows [`NodeIdentity::may_vote`].

use std::path::PathBuf;
use std::sync::Arc;

use raft::{NodeId, PeerVerdict, VoteRight};
use tokio::sync::{watch, Mutex};

use crate::config::ClusterMeta;

pub struct NodeIdentity {
    pub id: NodeId,
    pub incarnation: u64,
    /// The voters of the configuration in force (the bootstrap ones at
    /// first), whom a new data dir waits to be cleared by.
    voters: std::sync::Mutex<Vec<NodeId>>,
    meta: Mutex<ClusterMeta>,
    /// Where `meta` is stored; `None` for tests that need no disk.
    dir: Option<PathBuf>,
    right: watch::Sender<VoteRight>,
    /// Serializes the blocking stores themselves: a handshake cancelled
    /// while its store runs does not stop the blocking job, and the next
    /// store must not write the same temp file at the same time.
    store_lock: Arc<std::sync::Mutex<()>>,
    /// Tests: how long a store takes (on the paused clock).
    #[cfg(test)]
    store_delay: Option<std::time::Duration>,
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
            voters: std::sync::Mutex::new(meta.members.keys().copied().collect()),
            meta: Mutex::new(meta),
            dir,
            right,
            store_lock: Arc::default(),
            #[cfg(test)]
            store_delay: None,
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
        // Decide on a copy and keep it only once it is stored: a store that
        // fails, or a handshake cancelled while it runs, leaves the book as
        // it was, so the next hello of that peer stores it again.
        let mut next = meta.clone();
        let (verdict, changed) = next.peers.check(peer, incarnation);
        if changed {
            self.store(&next).await?;
            *meta = next;
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
    /// durable before this returns; until then (an error, or a handshake
    /// cancelled midway) nothing changed, and the next verdict counts.
    pub async fn on_verdict(&self, peer: NodeId, verdict: PeerVerdict) -> std::io::Result<()> {
        let mut meta = self.meta.lock().await;
        let mut next = meta.clone();
        let voters = self.voters();
        if !next.vote.on_verdict(self.id, &voters, peer, verdict) {
            return Ok(());
        }
        self.store(&next).await?;
        *meta = next;
        self.announce(peer, &meta);
        Ok(())
    }

    fn voters(&self) -> Vec<NodeId> {
        self.voters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The configuration in force changed (thesis §4.1): a new data dir
    /// now waits for these voters, and may vote at once if they all
    /// cleared it already (a joining server once it is promoted).
    pub async fn set_voters(&self, voters: &[NodeId]) -> std::io::Result<()> {
        let mut meta = self.meta.lock().await;
        *self.voters.lock().unwrap_or_else(|p| p.into_inner()) = voters.to_vec();
        let mut next = meta.clone();
        if !next.vote.settle(self.id, voters) {
            return Ok(());
        }
        self.store(&next).await?;
        *meta = next;
        self.announce(self.id, &meta);
        Ok(())
    }

    /// Logs and publishes a vote right that just changed (and is stored).
    fn announce(&self, peer: NodeId, meta: &ClusterMeta) {
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
    }

    async fn store(&self, meta: &ClusterMeta) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(delay) = self.store_delay {
            tokio::time::sleep(delay).await;
        }
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let meta = meta.clone();
        let lock = Arc::clone(&self.store_lock);
        // A small file with an fsync: off the async threads.
        tokio::task::spawn_blocking(move || {
            let _one_at_a_time = lock.lock().unwrap_or_else(|p| p.into_inner());
            meta.store(&dir)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pending(me: NodeId, voters: &[NodeId], store_delay: Duration) -> NodeIdentity {
        let members = voters.iter().map(|&v| (v, format!("n{v}"))).collect();
        let meta = ClusterMeta::new(me, members);
        let mut identity = NodeIdentity::build(meta, None);
        identity.store_delay = Some(store_delay);
        identity
    }

    /// A handshake's timeout can cut a verdict off while it is being stored
    /// (seen in CI: the dial timeout covered the stores). The redial's
    /// verdict must still count.
    #[tokio::test(start_paused = true)]
    async fn a_verdict_cut_off_while_it_is_stored_is_not_lost() {
        let identity = pending(1, &[1, 2], Duration::from_secs(1));
        assert!(!identity.vote_right().may_vote());
        let cut = tokio::time::timeout(
            Duration::from_millis(500),
            identity.on_verdict(2, PeerVerdict::New),
        )
        .await;
        assert!(cut.is_err(), "the store outlasts the timeout");
        identity
            .on_verdict(2, PeerVerdict::Known)
            .await
            .expect("stored");
        assert!(identity.vote_right().may_vote());
    }

    /// Likewise for the book: a peer's incarnation judged during a cut-off
    /// handshake is stored by the next one.
    #[tokio::test(start_paused = true)]
    async fn a_peer_judged_during_a_cut_off_handshake_is_stored_by_the_next() {
        let identity = pending(1, &[1, 2], Duration::from_secs(1));
        let cut = tokio::time::timeout(Duration::from_millis(500), identity.judge(2, 77)).await;
        assert!(cut.is_err());
        assert_eq!(
            identity.judge(2, 77).await.expect("stored"),
            PeerVerdict::New
        );
        assert_eq!(
            identity.judge(2, 77).await.expect("known"),
            PeerVerdict::Known
        );
    }
}
