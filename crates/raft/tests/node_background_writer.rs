//! The background log writer (`DiskMode::Background`): the
//! node hands writes to a thread and goes on; replies that depend on a write
//! leave only when the test passes its completion back with `write_done`.

use std::time::Duration;

use raft::{
    AppendEntriesArgs, DiskMode, FileStorage, InMemoryNetwork, IncomingRpc, ListStateMachine,
    LogEntry, RaftConfig, RaftCore, RaftNode, RecoveredState, Rpc, Storage,
};
use tokio::sync::oneshot;

fn append(prev: u64, entries: &[(u64, u64)]) -> Rpc {
    Rpc::AppendEntries(AppendEntriesArgs {
        term: 1,
        leader_id: 2,
        prev_log_index: prev,
        prev_log_term: if prev == 0 { 0 } else { 1 },
        entries: entries
            .iter()
            .map(|&(i, t)| LogEntry::new(t, i, vec![i as u8]))
            .collect(),
        leader_commit: 0,
        read_round: 0,
    })
}

#[tokio::test]
async fn a_reply_waits_for_its_background_write_and_the_data_is_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = FileStorage::open(dir.path()).expect("wal");
    let core = RaftCore::new(
        1,
        &[1, 2, 3],
        RaftConfig::default(),
        RecoveredState::default(),
        1,
    )
    .expect("core");
    let net = InMemoryNetwork::new(1, Duration::from_millis(100));
    let (transport, _incoming) = net.register(1);
    let (mut node, inbox) = RaftNode::new(
        core,
        ListStateMachine::default(),
        Box::new(storage),
        transport,
        DiskMode::Background,
    )
    .expect("writer thread");
    let mut done = inbox.write_done;

    let mut replies = Vec::new();
    for (prev, entries) in [(0, vec![(1, 1), (2, 1)]), (2, vec![(3, 1)])] {
        let (tx, rx) = oneshot::channel();
        node.receive(IncomingRpc {
            from: 2,
            rpc: append(prev, &entries),
            reply: tx,
        });
        node.process_ready().expect("handed to the writer");
        replies.push(rx);
    }
    for rx in replies.iter_mut() {
        assert!(
            rx.try_recv().is_err(),
            "no reply before its write is reported durable"
        );
    }
    assert_eq!(node.core().persisted_index(), 0);

    // Completions arrive in order; each releases the replies it covers
    // (sent by the next `process_ready`, as every input's effects are).
    let mut released = 0;
    while released < 2 {
        let d = tokio::time::timeout(Duration::from_secs(10), done.recv())
            .await
            .expect("the writer answers")
            .expect("writer alive");
        node.write_done(d).expect("write succeeded");
        node.process_ready().expect("nothing more to write");
        released = replies.iter_mut().filter(|rx| !rx.is_empty()).count();
    }
    let matches: Vec<u64> = replies
        .iter_mut()
        .map(|rx| match rx.try_recv() {
            Ok(Rpc::AppendEntriesReply(r)) if r.success => r.match_index,
            other => panic!("expected a success, got {other:?}"),
        })
        .collect();
    assert_eq!(matches, vec![2, 3]);
    assert_eq!(node.core().persisted_index(), 3);
    drop(node);

    // What the replies promised is on disk.
    let mut reopened = FileStorage::open(dir.path()).expect("reopen");
    let log = reopened.recover().expect("recover").entries;
    assert_eq!(
        log.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}
