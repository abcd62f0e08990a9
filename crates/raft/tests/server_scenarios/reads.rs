//! Reads: a linearizable read on the leader sees every acknowledged write, and a
//! cut-off leader does not answer (paper §8, thesis §6.4).

use super::*;

#[tokio::test(start_paused = true)]
async fn linearizable_read_on_the_leader_sees_every_acknowledged_write() {
    let c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(leader.id);

    // Write, read, write, read...
    let mut acked: Vec<Vec<u8>> = Vec::new();
    for i in 0..10 {
        let x = cmd(&format!("w{i}"));
        assert!(h.submit(x.clone()).await.is_ok());
        acked.push(x);
        assert_eq!(
            h.read(Vec::new()).await,
            Ok(ListOutput::Items(acked.clone()))
        );
    }

    // Writers and readers at once: a read started after a write was
    // acknowledged includes it.
    let acked_count = Arc::new(AtomicUsize::new(acked.len()));
    let writer = tokio::spawn({
        let (h, acked_count) = (h.clone(), Arc::clone(&acked_count));
        async move {
            for i in 10..40 {
                let x = cmd(&format!("w{i}"));
                assert!(h.submit(x).await.is_ok());
                acked_count.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let mut reads = 0;
    while !writer.is_finished() {
        let floor = acked_count.load(Ordering::SeqCst);
        match h.read(Vec::new()).await {
            Ok(ListOutput::Items(seen)) => {
                assert!(seen.len() >= floor, "read saw {} < {floor}", seen.len());
                for (i, x) in seen.iter().enumerate() {
                    assert_eq!(x, &cmd(&format!("w{i}")));
                }
            }
            other => panic!("read failed: {other:?}"),
        }
        reads += 1;
    }
    writer.await.expect("writer");
    assert!(reads > 1, "reads overlapped the writes");
    let all: Vec<Vec<u8>> = (0..40).map(|i| cmd(&format!("w{i}"))).collect();

    // The leader is cut off. A read there can no longer be confirmed by a
    // majority, so it must not answer (it fails once the leader steps down).
    c.net.isolate(leader.id);
    let stale_read = tokio::spawn({
        let h = h.clone();
        async move { h.read(Vec::new()).await }
    });
    let majority = c.others(leader.id);
    let new = c.wait_for_leader(&majority, ELECTION_BOUND).await;
    // At once, before the new leader's no-op may have committed: the read
    // still sees every acknowledged write.
    let nh = c.handle(new.id);
    assert_eq!(
        nh.read(Vec::new()).await,
        Ok(ListOutput::Items(all.clone()))
    );
    assert_eq!(nh.submit(cmd("w40")).await, Ok(ListOutput::Len(41)));

    let stale = timeout(PROMPT, stale_read)
        .await
        .expect("the cut-off leader's read resolves")
        .expect("reader task");
    assert!(
        matches!(stale, Err(ClientError::NotLeader { .. })),
        "a leader that cannot reach a majority must not serve reads: {stale:?}"
    );
}
