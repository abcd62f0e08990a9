//! How servers reach each other (the journal's Day 3), as a trait so the
//! consensus code does not care whether bytes cross a channel or a socket.

use std::future::Future;

use thiserror::Error;
use tokio::sync::oneshot;

use crate::message::{
    AppendEntriesArgs, AppendEntriesReply, InstallSnapshotArgs, InstallSnapshotReply,
    RequestVoteArgs, RequestVoteReply, Rpc,
};
use crate::types::NodeId;

/// Why an RPC did not get an answer. Raft treats all of these the same way
/// (the request may or may not have arrived) and simply retries later.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransportError {
    #[error("connection to node {0} failed")]
    ConnectionFailed(NodeId),
    #[error("request to node {0} timed out")]
    Timeout(NodeId),
    #[error("node {0} is not known to the transport")]
    NodeNotFound(NodeId),
}

/// The client side of the peer RPCs. `&self` methods, so one transport can
/// carry many requests at once (a slow peer never delays the others).
///
/// The methods return `impl Future + Send` (rather than `async fn`) so the
/// driver can `tokio::spawn` them.
pub trait Transport: Send + Sync + 'static {
    fn request_vote(
        &self,
        to: NodeId,
        args: RequestVoteArgs,
    ) -> impl Future<Output = Result<RequestVoteReply, TransportError>> + Send;

    fn append_entries(
        &self,
        to: NodeId,
        args: AppendEntriesArgs,
    ) -> impl Future<Output = Result<AppendEntriesReply, TransportError>> + Send;

    /// One chunk of a snapshot (§7). Transports that cannot carry snapshots
    /// keep this default, and followers that fall behind the leader's log
    /// compaction then cannot catch up.
    fn install_snapshot(
        &self,
        to: NodeId,
        _args: InstallSnapshotArgs,
    ) -> impl Future<Output = Result<InstallSnapshotReply, TransportError>> + Send {
        async move { Err(TransportError::ConnectionFailed(to)) }
    }
}

/// A request that arrived for this node, with the way back to the caller.
/// Transports hand these to the node through an `mpsc` channel.
#[derive(Debug)]
pub struct IncomingRpc {
    pub from: NodeId,
    /// A request: `Rpc::RequestVote`, `Rpc::AppendEntries` or `Rpc::InstallSnapshot`.
    pub rpc: Rpc,
    /// Where the node sends the reply once it is allowed to (after persisting).
    pub reply: oneshot::Sender<Rpc>,
}
