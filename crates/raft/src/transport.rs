//! How servers reach each other (the journal's Day 3), as a trait so the
//! consensus code does not care whether bytes cross a channel or a socket.

use std::future::Future;

use thiserror::Error;
use tokio::sync::oneshot;

use crate::core::Membership;
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

/// The client side of the peer RPCs, message-based: the transport carries a
/// request message to a node and brings back the reply message, without
/// looking inside. RequestVote, AppendEntries and InstallSnapshot all travel
/// the same way, and a new message kind needs no new method. (Replies come
/// back on the request's own call rather than as messages of their own, so
/// a follower never needs a connection to the leader, and a lost peer is
/// noticed as a failed call: the driver reports it unreachable.)
///
/// `&self`, so one transport carries many requests at once (a slow peer
/// never delays the others). It returns `impl Future + Send` (rather than
/// being an `async fn`) so the node can `tokio::spawn` the call.
///
/// The sender's identity is the transport's own (`InMemoryTransport`'s id,
/// or the node id a TCP connection proved in its handshake), never a field
/// the sender could fill in.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` (a request kind of [`Rpc`]) to node `to`; resolves
    /// with its reply, or why there is none.
    fn send(
        &self,
        to: NodeId,
        request: Rpc,
    ) -> impl Future<Output = Result<Rpc, TransportError>> + Send;

    /// The configuration in force changed (thesis §4.1: a new entry was
    /// appended, or a truncation or a snapshot brought back another). A
    /// transport that dials by address learns new members' addresses here
    /// and may forget removed ones; the default does nothing.
    fn members_changed(&self, membership: &Membership) {
        let _ = membership;
    }
}

/// Typed calls on any [`Transport`], for tests and tools: each wraps its
/// arguments in the request message and unwraps the reply, refusing a reply
/// of the wrong kind (as a failed call: the peer misbehaved).
pub trait TransportExt: Transport {
    fn request_vote(
        &self,
        to: NodeId,
        args: RequestVoteArgs,
    ) -> impl Future<Output = Result<RequestVoteReply, TransportError>> + Send {
        let call = self.send(to, Rpc::RequestVote(args));
        async move {
            match call.await? {
                Rpc::RequestVoteReply(reply) => Ok(reply),
                other => Err(wrong_reply(to, "RequestVote", &other)),
            }
        }
    }

    fn append_entries(
        &self,
        to: NodeId,
        args: AppendEntriesArgs,
    ) -> impl Future<Output = Result<AppendEntriesReply, TransportError>> + Send {
        let call = self.send(to, Rpc::AppendEntries(args));
        async move {
            match call.await? {
                Rpc::AppendEntriesReply(reply) => Ok(reply),
                other => Err(wrong_reply(to, "AppendEntries", &other)),
            }
        }
    }

    /// One chunk of a snapshot (§7).
    fn install_snapshot(
        &self,
        to: NodeId,
        args: InstallSnapshotArgs,
    ) -> impl Future<Output = Result<InstallSnapshotReply, TransportError>> + Send {
        let call = self.send(to, Rpc::InstallSnapshot(args));
        async move {
            match call.await? {
                Rpc::InstallSnapshotReply(reply) => Ok(reply),
                other => Err(wrong_reply(to, "InstallSnapshot", &other)),
            }
        }
    }
}

impl<T: Transport> TransportExt for T {}

fn wrong_reply(to: NodeId, request: &str, reply: &Rpc) -> TransportError {
    tracing::warn!(
        peer = to,
        "node {to} answered {request} with {}",
        reply.kind()
    );
    TransportError::ConnectionFailed(to)
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
