//! (Every node writes through the log writer; here it writes inline, so
//! each write is done, and its completion queued, when it is submitted.)
//!
//! The driver's IO order (Figure 2: "Respond to RPCs only after updating
//! stable storage"), checked on a real `RaftNode`.
//!
//! `RaftNode::process_ready` must send `messages`, persist the hard state and
//! entries, call `advance`, and only then send `persisted_messages`: the
//! replies to the requests it received. These tests put a spy `Storage`
//! around `MemoryStorage`. Inside `persist`, the spy looks at the reply
//! channel of the request the test delivered with `RaftNode::receive` and
//! records whether the reply had already been sent. A driver that replied
//! before (or without) writing fails here:
//!
//! * a reply sent before `persist` is found by the spy's `try_recv`, and the
//!   test sees `AlreadySent` instead of `NotYetSent`;
//! * a driver that never called `persist` leaves no record at all;
//! * a driver that replied although `persist` failed leaves a reply in the
//!   channel, where the fail-stop tests expect none.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::{
    AppendEntriesArgs, AppendEntriesReply, DiskMode, HardState, InMemoryNetwork, InMemoryTransport,
    IncomingRpc, ListStateMachine, LogEntry, LogIndex, MemoryStorage, NodeId, PeerEvent,
    RaftConfig, RaftCore, RaftNode, RecoveredState, RequestVoteArgs, RequestVoteReply, Rpc,
    Storage, StorageError, WriteDone,
};
use tokio::sync::mpsc;
use tokio::sync::oneshot::{self, error::TryRecvError};

const ME: NodeId = 1;
const PEER: NodeId = 2;
const VOTERS: [NodeId; 3] = [1, 2, 3];

/// Where the reply to the test's request was when `persist` was called.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReplyAtPersist {
    /// Not sent yet: the order the protocol demands.
    NotYetSent,
    /// Already in the channel: the node answered before its write.
    AlreadySent(Rpc),
    /// The node dropped the reply sender before writing.
    Dropped,
    /// The test had no request outstanding.
    NoRequest,
}

/// One call of `Storage::persist`, as the spy saw it.
#[derive(Debug, Clone)]
struct Write {
    hard_state: Option<HardState>,
    entries: Vec<LogEntry>,
    reply: ReplyAtPersist,
}

/// State shared between the test and the spy inside the node.
#[derive(Debug, Default)]
struct Probe {
    /// The receiving end of the reply to the request under test.
    reply: Option<oneshot::Receiver<Rpc>>,
    /// Every `persist` call, in order, including failed ones.
    writes: Vec<Write>,
}

type SharedProbe = Arc<Mutex<Probe>>;

/// A `MemoryStorage` that reports each write to the probe before doing it.
/// (Only the methods these tests reach are forwarded: they never compact the
/// log or install a snapshot.)
struct SpyStorage {
    inner: MemoryStorage,
    probe: SharedProbe,
}

impl Storage for SpyStorage {
    fn recover(&mut self) -> Result<RecoveredState, StorageError> {
        self.inner.recover()
    }

    fn persist(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[LogEntry],
    ) -> Result<(), StorageError> {
        let mut probe = self.probe.lock().unwrap();
        let reply = match probe.reply.as_mut() {
            None => ReplyAtPersist::NoRequest,
            Some(rx) => match rx.try_recv() {
                Err(TryRecvError::Empty) => ReplyAtPersist::NotYetSent,
                Ok(rpc) => ReplyAtPersist::AlreadySent(rpc),
                Err(TryRecvError::Closed) => ReplyAtPersist::Dropped,
            },
        };
        probe.writes.push(Write {
            hard_state: hard_state.copied(),
            entries: entries.to_vec(),
            reply,
        });
        self.inner.persist(hard_state, entries)
    }

    fn first_index(&self) -> LogIndex {
        self.inner.first_index()
    }

    fn last_index(&self) -> LogIndex {
        self.inner.last_index()
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<LogEntry>, StorageError> {
        self.inner.entries(lo, hi)
    }
}

/// A node under test, with what must stay alive next to it.
struct Harness {
    node: RaftNode<InMemoryTransport, ListStateMachine>,
    probe: SharedProbe,
    write_done: mpsc::UnboundedReceiver<WriteDone>,
    _peer_events: mpsc::UnboundedReceiver<PeerEvent>,
    _net: InMemoryNetwork,
}

/// Node 1 of {1, 2, 3}, a follower that starts from `hard_state` and an empty
/// log. With `failing_disk`, every write fails.
fn harness(hard_state: HardState, failing_disk: bool) -> Harness {
    let mut inner = MemoryStorage::with_state(hard_state, Vec::new());
    let recovered = inner.recover().expect("memory storage recovers");
    inner.set_fail_writes(failing_disk);
    let probe = SharedProbe::default();
    let storage = SpyStorage {
        inner,
        probe: Arc::clone(&probe),
    };
    let core =
        RaftCore::new(ME, &VOTERS, RaftConfig::default(), recovered, 42).expect("valid core");
    // The transport only carries outgoing requests; a follower sends none here.
    let net = InMemoryNetwork::new(7, Duration::from_millis(100));
    let (transport, _inbox) = net.register(ME);
    let (node, inbox) = RaftNode::new(
        core,
        ListStateMachine::default(),
        Box::new(storage),
        transport,
        DiskMode::Inline,
    )
    .expect("an inline writer starts no thread");
    Harness {
        node,
        probe,
        write_done: inbox.write_done,
        _peer_events: inbox.peer_events,
        _net: net,
    }
}

impl Harness {
    /// What the server loop does: run the node, then hand each write
    /// completion back to it and run it again, until nothing is left.
    fn run(&mut self) -> Result<(), StorageError> {
        self.node.process_ready()?;
        while let Ok(done) = self.write_done.try_recv() {
            self.node.write_done(done)?;
            self.node.process_ready()?;
        }
        Ok(())
    }

    /// Delivers `rpc` from node 2 as a transport would, keeping the reply's
    /// receiving end where the spy can see it.
    fn deliver(&mut self, rpc: Rpc) {
        let (tx, rx) = oneshot::channel();
        self.probe.lock().unwrap().reply = Some(rx);
        self.node.receive(IncomingRpc {
            from: PEER,
            rpc,
            reply: tx,
        });
    }

    fn writes(&self) -> Vec<Write> {
        self.probe.lock().unwrap().writes.clone()
    }

    /// What the requester finds in its reply channel now.
    fn reply_now(&self) -> Result<Rpc, TryRecvError> {
        reply_now(&self.probe)
    }

    /// Stops the node, as the server does on a storage error, and returns
    /// the probe so the test can still look at the reply channel.
    fn stop(self) -> SharedProbe {
        self.probe
    }
}

fn reply_now(probe: &SharedProbe) -> Result<Rpc, TryRecvError> {
    let mut probe = probe.lock().unwrap();
    let rx = probe.reply.as_mut().expect("a request was delivered");
    rx.try_recv()
}

fn vote_request(term: u64) -> Rpc {
    Rpc::RequestVote(RequestVoteArgs {
        term,
        candidate_id: PEER,
        last_log_index: 0,
        last_log_term: 0,
        pre_vote: false,
        leadership_transfer: false,
    })
}

fn append_with_entries(term: u64, leader_commit: LogIndex) -> Rpc {
    Rpc::AppendEntries(AppendEntriesArgs {
        term,
        leader_id: PEER,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![
            LogEntry::new(term, 1, b"a".to_vec()),
            LogEntry::new(term, 2, b"b".to_vec()),
        ],
        leader_commit,
        read_round: 0,
    })
}

#[tokio::test]
async fn a_vote_is_sent_only_after_the_vote_is_durable() {
    let mut h = harness(HardState::default(), false);
    h.deliver(vote_request(1));

    h.run().expect("the write succeeds");

    // Exactly one write, of the new term and the vote, and at that moment the
    // candidate had not yet heard anything.
    let writes = h.writes();
    assert_eq!(writes.len(), 1, "one persist call: {writes:?}");
    assert_eq!(
        writes[0].hard_state,
        Some(HardState {
            term: 1,
            voted_for: Some(PEER),
        })
    );
    assert!(writes[0].entries.is_empty());
    assert_eq!(
        writes[0].reply,
        ReplyAtPersist::NotYetSent,
        "the vote must not leave before it is on disk"
    );

    // Once the write is reported durable, the vote has arrived, and it grants exactly
    // what was persisted.
    assert_eq!(
        h.reply_now(),
        Ok(Rpc::RequestVoteReply(RequestVoteReply {
            term: 1,
            vote_granted: true,
            pre_vote: false,
        }))
    );
    assert!(h.node.driver().state_machine().applied.is_empty());
    assert_eq!(h.node.core().voted_for(), Some(PEER));
}

#[tokio::test]
async fn an_append_reply_is_sent_only_after_the_entries_are_durable() {
    // Already in term 1, so this Ready carries entries and no hard state: the
    // reply waits on the entries alone.
    let mut h = harness(
        HardState {
            term: 1,
            voted_for: None,
        },
        false,
    );
    h.deliver(append_with_entries(1, 0));

    h.run().expect("the write succeeds");

    let writes = h.writes();
    assert_eq!(writes.len(), 1, "one persist call: {writes:?}");
    assert_eq!(writes[0].hard_state, None);
    let indexes: Vec<LogIndex> = writes[0].entries.iter().map(|e| e.index).collect();
    assert_eq!(indexes, vec![1, 2]);
    assert_eq!(
        writes[0].reply,
        ReplyAtPersist::NotYetSent,
        "the success reply must not leave before the entries are on disk"
    );

    // The reply claims a match up to the last entry that was written.
    assert_eq!(
        h.reply_now(),
        Ok(Rpc::AppendEntriesReply(AppendEntriesReply {
            term: 1,
            success: true,
            match_index: 2,
            rejected_prev_index: 0,
            conflict_index: 0,
            conflict_term: None,
            read_round: 0,
            voter: true,
        }))
    );
    assert_eq!(h.node.core().persisted_index(), 2);
}

#[tokio::test]
async fn an_append_in_a_new_term_persists_term_and_entries_before_replying() {
    // A higher term and entries in one request: one write holds both, and the
    // entries the leader already committed are applied (they are durable on
    // a majority: applying does not wait for this node's own copy).
    let mut h = harness(HardState::default(), false);
    h.deliver(append_with_entries(3, 2));

    h.run().expect("the write succeeds");

    let writes = h.writes();
    assert_eq!(writes.len(), 1, "one persist call: {writes:?}");
    assert_eq!(
        writes[0].hard_state,
        Some(HardState {
            term: 3,
            voted_for: None,
        })
    );
    assert_eq!(writes[0].entries.len(), 2);
    assert_eq!(writes[0].reply, ReplyAtPersist::NotYetSent);

    match h.reply_now() {
        Ok(Rpc::AppendEntriesReply(r)) => {
            assert!(r.success, "{r:?}");
            assert_eq!((r.term, r.match_index), (3, 2));
        }
        other => panic!("expected an AppendEntries reply, got {other:?}"),
    }
    let applied: Vec<LogIndex> = h
        .node
        .driver()
        .state_machine()
        .applied
        .iter()
        .map(|(index, _)| *index)
        .collect();
    assert_eq!(applied, vec![1, 2]);
}

#[tokio::test]
async fn a_failed_write_of_a_vote_returns_an_error_and_sends_no_vote() {
    let mut h = harness(HardState::default(), true);
    h.deliver(vote_request(1));

    let result = h.run();

    assert!(matches!(result, Err(StorageError::Io { .. })), "{result:?}");
    let writes = h.writes();
    assert_eq!(writes.len(), 1, "the write was attempted: {writes:?}");
    assert_eq!(writes[0].reply, ReplyAtPersist::NotYetSent);
    // The vote that could not be made durable was never sent...
    assert_eq!(h.reply_now(), Err(TryRecvError::Empty));
    // ...and a node stopped on the error (fail-stop) never sends it: the
    // candidate sees the channel close, as if the node had crashed.
    let probe = h.stop();
    assert_eq!(reply_now(&probe), Err(TryRecvError::Closed));
}

#[tokio::test]
async fn a_failed_write_of_entries_returns_an_error_and_sends_no_reply() {
    let mut h = harness(
        HardState {
            term: 1,
            voted_for: None,
        },
        true,
    );
    h.deliver(append_with_entries(1, 2));

    let result = h.run();

    assert!(matches!(result, Err(StorageError::Io { .. })), "{result:?}");
    let writes = h.writes();
    assert_eq!(writes.len(), 1, "the write was attempted: {writes:?}");
    assert_eq!(writes[0].reply, ReplyAtPersist::NotYetSent);
    assert_eq!(h.reply_now(), Err(TryRecvError::Empty));
    // Nothing counts as durable.
    assert_eq!(h.node.core().persisted_index(), 0);
    let probe = h.stop();
    assert_eq!(reply_now(&probe), Err(TryRecvError::Closed));
}

/// The tests above can fail: the spy notices a reply that is already in the
/// channel when `persist` runs, which is what a driver that answered first
/// would leave behind.
#[test]
fn the_spy_notices_a_reply_sent_before_the_write() {
    let probe = SharedProbe::default();
    let mut storage = SpyStorage {
        inner: MemoryStorage::new(),
        probe: Arc::clone(&probe),
    };
    let (tx, rx) = oneshot::channel();
    probe.lock().unwrap().reply = Some(rx);
    let early = Rpc::RequestVoteReply(RequestVoteReply {
        term: 1,
        vote_granted: true,
        pre_vote: false,
    });
    tx.send(early.clone()).unwrap();

    let hs = HardState {
        term: 1,
        voted_for: Some(PEER),
    };
    storage.persist(Some(&hs), &[]).unwrap();

    let writes = probe.lock().unwrap().writes.clone();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].reply, ReplyAtPersist::AlreadySent(early));
}

/// §7 on a real node: the server writes a snapshot chunk on the blocking
/// pool and answers it later, after heartbeats from the same leader were
/// answered. Replies go back in request order per peer, so the chunk's
/// reply slot must not wait in that queue meanwhile: if it did, the
/// heartbeat's reply would go to the chunk's caller.
#[tokio::test]
async fn a_snapshot_chunk_answered_late_does_not_take_a_later_heartbeats_reply() {
    use raft::{InstallSnapshotArgs, InstallSnapshotReply, SnapshotChunkVerdict};
    let mut h = harness(
        HardState {
            term: 1,
            voted_for: None,
        },
        false,
    );
    let (chunk_tx, mut chunk_rx) = oneshot::channel();
    let chunk = h
        .node
        .receive_snapshot_chunk(IncomingRpc {
            from: PEER,
            rpc: Rpc::InstallSnapshot(InstallSnapshotArgs {
                term: 1,
                leader_id: PEER,
                last_included_index: 10,
                last_included_term: 1,
                offset: 0,
                data: vec![0; 16],
                total_size: 32,
                done: false,
            }),
            reply: chunk_tx,
        })
        .expect("a chunk from a voter is for this node");
    assert_eq!(chunk.verdict, SnapshotChunkVerdict::Accept { term: 1 });
    h.run().expect("nothing to write");

    // While the chunk is "on the disk", a heartbeat comes and is answered.
    h.deliver(Rpc::AppendEntries(AppendEntriesArgs {
        term: 1,
        leader_id: PEER,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: Vec::new(),
        leader_commit: 0,
        read_round: 0,
    }));
    h.run().expect("the write succeeds");
    assert!(
        matches!(h.reply_now(), Ok(Rpc::AppendEntriesReply(_))),
        "the heartbeat gets its own reply"
    );
    assert_eq!(
        chunk_rx.try_recv(),
        Err(TryRecvError::Empty),
        "the chunk is not answered yet"
    );

    let answer = InstallSnapshotReply {
        term: 1,
        success: true,
        next_offset: 16,
        installed: false,
    };
    h.node
        .reply_when_durable(chunk.reply, Rpc::InstallSnapshotReply(answer.clone()));
    h.run().expect("nothing to write");
    assert_eq!(chunk_rx.try_recv(), Ok(Rpc::InstallSnapshotReply(answer)));
}
