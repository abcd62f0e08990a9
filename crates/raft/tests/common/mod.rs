//! A deterministic test network of `RaftCore`s: no tokio, no clock.
//!
//! Messages go into one FIFO queue; `deliver()` hands them out in order,
//! dropping those that cross a partition. Each node's "disk" is a
//! `MemoryStorage` that receives exactly what the core's `Ready` says to
//! persist, so `crash` + `restart` rebuilds a core from what was durable.
//!
//! This is a bench for the bare core, not a driver: the per-section tests
//! check the core's own contract (what goes into `messages` and what into
//! `persisted_messages`, a crash between `ready` and `advance`), which a
//! driver would hide. Applying, answering clients and the disk's order are
//! `raft::Driver`'s job, tested through it in `transcripts.rs`, the node
//! and server tests, and the simulator.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use raft::{
    LogEntry, LogIndex, MemoryStorage, Message, NodeId, RaftConfig, RaftCore, RaftState, ReadState,
    Ready, RequestVoteArgs, Rpc, Storage, StorageError, Term,
};

pub fn config(pre_vote: bool, check_quorum: bool) -> RaftConfig {
    RaftConfig {
        pre_vote,
        check_quorum,
        ..RaftConfig::default()
    }
}

/// A RequestVote from candidate `from` to `to` for `term`, whose log ends
/// at (`last_log_index`, `last_log_term`).
pub fn request_vote(
    from: NodeId,
    to: NodeId,
    term: Term,
    last_log_index: LogIndex,
    last_log_term: Term,
) -> Message {
    Message {
        from,
        to,
        rpc: Rpc::RequestVote(RequestVoteArgs {
            term,
            candidate_id: from,
            last_log_index,
            last_log_term,
            pre_vote: false,
            leadership_transfer: false,
        }),
    }
}

/// Whether `rd` answers the vote request just stepped with a grant.
pub fn grants_vote(rd: &Ready) -> bool {
    match rd.persisted_messages.last().map(|m| &m.rpc) {
        Some(Rpc::RequestVoteReply(r)) => r.vote_granted,
        other => panic!("expected a vote reply, got {other:?}"),
    }
}

/// The answer, in `core`'s next Ready, to the vote request it just stepped.
pub fn vote_granted(core: &mut RaftCore) -> bool {
    grants_vote(&core.ready())
}

/// Unwraps a `Corruption` error into (path, offset, Display text).
pub fn corruption<T>(result: Result<T, StorageError>) -> (PathBuf, u64, String) {
    match result {
        Err(err @ StorageError::Corruption { .. }) => {
            let text = err.to_string();
            let StorageError::Corruption { path, offset, .. } = err else {
                unreachable!("matched as Corruption just above")
            };
            (path, offset, text)
        }
        Err(other) => panic!("expected corruption, got {other:?}"),
        Ok(_) => panic!("expected corruption, got success"),
    }
}

/// Decides whether a message is lost.
pub type DropRule = Box<dyn Fn(&Message) -> bool>;

pub struct Cluster {
    pub ids: Vec<NodeId>,
    pub config: RaftConfig,
    pub cores: BTreeMap<NodeId, RaftCore>,
    pub disks: BTreeMap<NodeId, MemoryStorage>,
    /// Committed entries each node handed out for applying, in order.
    pub applied: BTreeMap<NodeId, Vec<LogEntry>>,
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    pub queue: VecDeque<Message>,
    /// Nodes that are down: they neither send nor receive.
    pub down: BTreeSet<NodeId>,
    /// Partition group of each node (default 0 for all).
    pub group: BTreeMap<NodeId, u32>,
    /// Messages delivered so far (for assertions).
    pub delivered: Vec<Message>,
    /// When set, messages for which it returns true are dropped.
    pub drop_if: Option<DropRule>,
    /// State Machine Safety, checked as entries are applied: the term of the
    /// entry each index was first applied with, on any node, ever.
    pub applied_terms: BTreeMap<LogIndex, Term>,
    /// Every time a node applied a different entry at an index.
    pub safety_violations: Vec<String>,
    /// `(leader, follower)` for each snapshot transfer a leader asked for.
    pub snapshot_requests: Vec<(NodeId, NodeId)>,
    /// The voters the cluster was bootstrapped with; nodes added later start
    /// knowing no one (`add_node`).
    bootstrap: Vec<NodeId>,
    seed: u64,
}

impl Cluster {
    pub fn new(n: u64, config: RaftConfig) -> Self {
        Self::with_seed(n, config, 1)
    }

    pub fn with_seed(n: u64, config: RaftConfig, seed: u64) -> Self {
        let ids: Vec<NodeId> = (1..=n).collect();
        let mut c = Cluster {
            ids: ids.clone(),
            config,
            cores: BTreeMap::new(),
            disks: BTreeMap::new(),
            applied: BTreeMap::new(),
            read_states: BTreeMap::new(),
            queue: VecDeque::new(),
            down: BTreeSet::new(),
            group: BTreeMap::new(),
            delivered: Vec::new(),
            drop_if: None,
            applied_terms: BTreeMap::new(),
            safety_violations: Vec::new(),
            snapshot_requests: Vec::new(),
            bootstrap: ids.clone(),
            seed,
        };
        for id in ids {
            c.disks.insert(id, MemoryStorage::new());
            c.start(id);
        }
        c
    }

    /// Builds node `id`'s core from its disk.
    fn start(&mut self, id: NodeId) {
        let disk = self.disks.get_mut(&id).expect("known node");
        let recovered = disk.recover().expect("memory storage recovers");
        let seed = self.seed.wrapping_mul(1000).wrapping_add(id);
        let membership = if self.bootstrap.contains(&id) {
            raft::Membership::new(&self.bootstrap, &[])
        } else {
            // A node that joins later knows no configuration until its
            // leader sends one (thesis §4.2.1).
            raft::Membership::default()
        };
        let core = RaftCore::start(id, membership, self.config.clone(), recovered, None, seed)
            .expect("valid core");
        self.cores.insert(id, core);
        self.applied.insert(id, Vec::new());
    }

    /// A new, empty server `id` that knows no one, as `raftkv server --join`
    /// starts one: it waits to be added (the cluster's leader must propose
    /// it as a learner).
    pub fn add_node(&mut self, id: NodeId) {
        assert!(!self.ids.contains(&id), "node {id} exists");
        self.ids.push(id);
        self.disks.insert(id, MemoryStorage::new());
        self.start(id);
    }

    pub fn core(&self, id: NodeId) -> &RaftCore {
        &self.cores[&id]
    }

    pub fn core_mut(&mut self, id: NodeId) -> &mut RaftCore {
        self.cores.get_mut(&id).expect("known node")
    }

    /// Runs node `id`'s Ready: persist, then queue its messages.
    pub fn process(&mut self, id: NodeId) {
        if self.down.contains(&id) {
            return;
        }
        loop {
            let core = self.cores.get_mut(&id).expect("known node");
            if !core.has_ready() {
                break;
            }
            let rd = core.ready();
            let disk = self.disks.get_mut(&id).expect("known node");
            disk.persist(rd.hard_state.as_ref(), &rd.entries)
                .expect("memory storage persists");
            core.advance(&rd);
            self.queue.extend(rd.messages.iter().cloned());
            self.queue.extend(rd.persisted_messages.iter().cloned());
            for e in &rd.committed_entries {
                let first = *self.applied_terms.entry(e.index).or_insert(e.term);
                if first != e.term {
                    self.safety_violations.push(format!(
                        "node {id} applied index {} with term {}, but term {first} was applied there before",
                        e.index, e.term
                    ));
                }
            }
            self.applied
                .get_mut(&id)
                .expect("known node")
                .extend(rd.committed_entries);
            self.read_states
                .entry(id)
                .or_default()
                .extend(rd.read_states);
            self.snapshot_requests
                .extend(rd.snapshots_to_send.iter().map(|&to| (id, to)));
        }
    }

    pub fn process_all(&mut self) {
        for id in self.ids.clone() {
            self.process(id);
        }
    }

    fn can_talk(&self, a: NodeId, b: NodeId) -> bool {
        !self.down.contains(&a)
            && !self.down.contains(&b)
            && self.group.get(&a).copied().unwrap_or(0) == self.group.get(&b).copied().unwrap_or(0)
    }

    /// Delivers queued messages (and the messages they cause) until quiet.
    pub fn deliver(&mut self) {
        self.process_all();
        let mut budget = 100_000;
        while let Some(m) = self.queue.pop_front() {
            budget -= 1;
            assert!(budget > 0, "message storm: the cluster never went quiet");
            if !self.can_talk(m.from, m.to) || self.drop_if.as_ref().is_some_and(|f| f(&m)) {
                continue;
            }
            let to = m.to;
            self.delivered.push(m.clone());
            self.core_mut(to).step(m);
            self.process(to);
        }
    }

    /// Drops every queued message.
    pub fn drop_queue(&mut self) {
        self.queue.clear();
    }

    pub fn tick(&mut self, id: NodeId) {
        if !self.down.contains(&id) {
            self.core_mut(id).tick();
            self.process(id);
        }
    }

    /// Ticks every live node `n` times, delivering after each round.
    pub fn tick_all(&mut self, n: u64) {
        for _ in 0..n {
            for id in self.ids.clone() {
                self.tick(id);
            }
            self.deliver();
        }
    }

    /// Ticks only `id` until its election timer fires and it starts a new
    /// campaign (a new term, or a pre-vote), then delivers.
    pub fn campaign(&mut self, id: NodeId) {
        let (state0, term0) = (self.core(id).state(), self.core(id).term());
        for _ in 0..10_000 {
            self.tick(id);
            let c = self.core(id);
            if c.term() > term0 || (c.state() != state0 && c.state() != RaftState::Follower) {
                break;
            }
        }
        self.deliver();
    }

    /// Makes `id` leader and lets its no-op commit.
    pub fn elect(&mut self, id: NodeId) {
        self.campaign(id);
        assert_eq!(
            self.core(id).state(),
            RaftState::Leader,
            "node {id} should lead"
        );
        self.deliver();
    }

    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> (LogIndex, Term) {
        let r = self
            .core_mut(id)
            .propose(data.to_vec())
            .expect("leader accepts proposals");
        self.process(id);
        r
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.cores
            .iter()
            .filter(|(id, c)| !self.down.contains(id) && c.state() == RaftState::Leader)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        self.group.clear();
        for (g, members) in groups.iter().enumerate() {
            for &m in members.iter() {
                self.group.insert(m, g as u32 + 1);
            }
        }
    }

    pub fn heal(&mut self) {
        self.group.clear();
    }

    /// Power off: volatile state and queued messages to/from it are lost.
    pub fn crash(&mut self, id: NodeId) {
        self.down.insert(id);
        self.queue.retain(|m| m.to != id && m.from != id);
    }

    /// Power on: a fresh core from what the disk holds.
    pub fn restart(&mut self, id: NodeId) {
        self.down.remove(&id);
        self.start(id);
    }

    /// The data of every applied normal entry on node `id`.
    pub fn applied_data(&self, id: NodeId) -> Vec<Vec<u8>> {
        self.applied[&id]
            .iter()
            .filter(|e| e.kind == raft::EntryKind::Normal)
            .map(|e| e.data.clone())
            .collect()
    }

    /// Log terms of node `id`, index 1 first.
    pub fn log_terms(&self, id: NodeId) -> Vec<Term> {
        let core = self.core(id);
        (1..=core.last_log_index())
            .map(|i| core.entry(i).map(|e| e.term).unwrap_or(0))
            .collect()
    }
}
