//! An in-memory transport over tokio channels (the journal's Day 3), with
//! fault injection for tests: partitions, per-link loss and delay.
//!
//! Each node registers with a shared [`InMemoryNetwork`] and gets a
//! [`InMemoryTransport`] (to call others) and an `mpsc::Receiver` of
//! [`IncomingRpc`] (to be called). A request is a message on the receiver's
//! channel carrying a `oneshot::Sender` for the reply: no locks are held
//! while a request is in flight. The fault table is behind a `std` mutex,
//! held only for a lookup.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::message::Rpc;
use crate::transport::{IncomingRpc, Transport, TransportError};
use crate::types::NodeId;

/// Capacity of each node's incoming queue.
const INBOX_CAPACITY: usize = 4096;

#[derive(Default)]
struct Faults {
    /// Node → partition group. Nodes in different groups cannot talk.
    group: HashMap<NodeId, u32>,
    /// Directed links that drop everything.
    cut: HashSet<(NodeId, NodeId)>,
    /// Directed links that drop each message with this probability.
    loss: HashMap<(NodeId, NodeId), f64>,
    /// Directed links that delay each message by this much.
    delay: HashMap<(NodeId, NodeId), Duration>,
    rng: Option<fastrand::Rng>,
}

struct Inner {
    nodes: Mutex<HashMap<NodeId, mpsc::Sender<IncomingRpc>>>,
    faults: Mutex<Faults>,
}

/// The shared "network" of an in-memory cluster.
#[derive(Clone)]
pub struct InMemoryNetwork {
    inner: Arc<Inner>,
    timeout: Duration,
}

impl InMemoryNetwork {
    /// A network whose random message loss is driven by `seed`, and whose
    /// requests time out after `timeout` when unanswered.
    pub fn new(seed: u64, timeout: Duration) -> Self {
        InMemoryNetwork {
            inner: Arc::new(Inner {
                nodes: Mutex::new(HashMap::new()),
                faults: Mutex::new(Faults {
                    rng: Some(fastrand::Rng::with_seed(seed)),
                    ..Faults::default()
                }),
            }),
            timeout,
        }
    }

    /// Adds (or re-adds, after a restart) node `id`.
    pub fn register(&self, id: NodeId) -> (InMemoryTransport, mpsc::Receiver<IncomingRpc>) {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        lock(&self.inner.nodes).insert(id, tx);
        (
            InMemoryTransport {
                me: id,
                net: self.clone(),
            },
            rx,
        )
    }

    /// Removes node `id`: requests to it fail with `NodeNotFound`.
    pub fn unregister(&self, id: NodeId) {
        lock(&self.inner.nodes).remove(&id);
    }

    /// Splits the nodes into groups that can only talk within themselves.
    /// Nodes not named form one more group together.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let mut f = lock(&self.inner.faults);
        f.group.clear();
        for (g, members) in groups.iter().enumerate() {
            for &m in members.iter() {
                f.group.insert(m, g as u32 + 1);
            }
        }
    }

    /// Cuts `id` off from everyone.
    pub fn isolate(&self, id: NodeId) {
        let mut f = lock(&self.inner.faults);
        let next = f.group.values().max().copied().unwrap_or(0) + 1;
        f.group.insert(id, next);
    }

    /// Removes every partition, cut, loss and delay.
    pub fn heal(&self) {
        let mut f = lock(&self.inner.faults);
        f.group.clear();
        f.cut.clear();
        f.loss.clear();
        f.delay.clear();
    }

    /// Drops every message from `from` to `to` (one direction only).
    pub fn cut_link(&self, from: NodeId, to: NodeId) {
        lock(&self.inner.faults).cut.insert((from, to));
    }

    /// Drops each message from `from` to `to` with probability `p`.
    pub fn set_link_loss(&self, from: NodeId, to: NodeId, p: f64) {
        lock(&self.inner.faults).loss.insert((from, to), p);
    }

    /// Delays each message from `from` to `to` by `d`.
    pub fn set_link_delay(&self, from: NodeId, to: NodeId, d: Duration) {
        lock(&self.inner.faults).delay.insert((from, to), d);
    }

    /// Decides the fate of one message: `None` if it is lost, else its delay.
    fn route(&self, from: NodeId, to: NodeId) -> Option<Duration> {
        let mut f = lock(&self.inner.faults);
        let group = |n: NodeId| f.group.get(&n).copied().unwrap_or(0);
        if group(from) != group(to) || f.cut.contains(&(from, to)) {
            return None;
        }
        if let Some(&p) = f.loss.get(&(from, to)) {
            let roll = f.rng.as_mut().map_or(1.0, |r| r.f64());
            if roll < p {
                return None;
            }
        }
        Some(f.delay.get(&(from, to)).copied().unwrap_or(Duration::ZERO))
    }

    async fn call(&self, from: NodeId, to: NodeId, rpc: Rpc) -> Result<Rpc, TransportError> {
        let sender = lock(&self.inner.nodes)
            .get(&to)
            .cloned()
            .ok_or(TransportError::NodeNotFound(to))?;
        let exchange = async {
            // The request's trip.
            let delay = self.route(from, to).ok_or(TransportError::Timeout(to))?;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let (reply_tx, reply_rx) = oneshot::channel();
            sender
                .send(IncomingRpc {
                    from,
                    rpc,
                    reply: reply_tx,
                })
                .await
                .map_err(|_| TransportError::ConnectionFailed(to))?;
            let reply = reply_rx
                .await
                .map_err(|_| TransportError::ConnectionFailed(to))?;
            // The reply's trip.
            let delay = self.route(to, from).ok_or(TransportError::Timeout(to))?;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(reply)
        };
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            // A lost message looks like silence to the caller: wait out the
            // rest of the timeout.
            Ok(Err(TransportError::Timeout(_))) => {
                tokio::time::sleep_until(started + self.timeout).await;
                Err(TransportError::Timeout(to))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TransportError::Timeout(to)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the maps inconsistent
    // (every critical section is a single map operation), so recover it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One node's handle on an [`InMemoryNetwork`].
#[derive(Clone)]
pub struct InMemoryTransport {
    me: NodeId,
    net: InMemoryNetwork,
}

impl Transport for InMemoryTransport {
    async fn send(&self, to: NodeId, request: Rpc) -> Result<Rpc, TransportError> {
        self.net.call(self.me, to, request).await
    }
}

/// The journal's helper: a network with `ids` registered, returning each
/// node's transport and inbox in the same order.
pub fn create_cluster(
    ids: &[NodeId],
    seed: u64,
    timeout: Duration,
) -> (
    InMemoryNetwork,
    Vec<(InMemoryTransport, mpsc::Receiver<IncomingRpc>)>,
) {
    let net = InMemoryNetwork::new(seed, timeout);
    let nodes = ids.iter().map(|&id| net.register(id)).collect();
    (net, nodes)
}
