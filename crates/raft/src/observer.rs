//! Hooks for metrics: the driver reports what it does, an application (the
//! raftkv server's Prometheus endpoint) counts it. Every method has an empty
//! default, so an observer implements only what it needs.

use std::time::Duration;

use crate::message::Rpc;
use crate::types::{NodeId, RaftState, Term};

pub trait Observer: Send + Sync + 'static {
    /// A batch of hard state and `entries` entries was made durable.
    fn persisted(&self, _entries: usize, _elapsed: Duration) {}
    /// A message left for a peer.
    fn message_sent(&self, _to: NodeId, _rpc: &Rpc) {}
    /// A message arrived from a peer.
    fn message_received(&self, _from: NodeId, _rpc: &Rpc) {}
    /// Role, term or leader changed.
    fn state_changed(&self, _state: RaftState, _term: Term, _leader: Option<NodeId>) {}
    /// This many client proposals were taken in one round (one fsync).
    fn proposals_batched(&self, _count: usize) {}
}

/// Observes nothing.
pub struct NoopObserver;

impl Observer for NoopObserver {}
