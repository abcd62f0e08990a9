//! The happy path: a cluster elects a leader, and a submit resolves after its
//! command is committed and applied, with the output, in submission order on every
//! node (paper §5.3).

use super::*;

#[tokio::test(start_paused = true)]
async fn a_single_node_cluster_elects_itself_and_applies_commands() {
    let c = Cluster::start(1, RaftConfig::default());
    let leader = c.wait_for_leader(&[1], ELECTION_BOUND).await;
    assert_eq!(leader.id, 1);
    assert_eq!(leader.term, 1, "pre-vote does not spend a term: {leader:?}");

    let h = c.handle(1);
    assert_eq!(h.submit(cmd("a")).await, Ok(ListOutput::Len(1)));
    assert_eq!(h.submit(cmd("b")).await, Ok(ListOutput::Len(2)));
    assert_eq!(h.read(Vec::new()).await, Ok(items(&["a", "b"])));

    let s = c.status(1);
    // The leader's no-op at index 1, then the two commands.
    assert_eq!(
        (s.commit_index, s.last_applied, s.last_log_index),
        (3, 3, 3)
    );
    assert_eq!(c.applied_with_index(1), vec![(2, cmd("a")), (3, cmd("b"))]);
}

#[tokio::test(start_paused = true)]
async fn submit_on_the_leader_resolves_after_commit_and_apply_with_the_output() {
    let c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(leader.id);

    assert_eq!(
        h.submit(cmd("x=1")).await,
        Ok(ListOutput::Len(1)),
        "the output is what the state machine returned"
    );
    // When the submit resolved, the leader had already committed and
    // applied the entry.
    let applied = c.applied_with_index(leader.id);
    assert_eq!(applied.len(), 1, "applied exactly once on the leader");
    let (index, ref data) = applied[0];
    assert_eq!(data, &cmd("x=1"));
    let s = c.status(leader.id);
    assert!(s.commit_index >= index, "committed: {s:?}");
    assert!(s.last_applied >= index, "applied: {s:?}");

    // Every node applies it, at the same index.
    c.wait_applied(&[1, 2, 3], index, PROMPT).await;
    for id in [1, 2, 3] {
        assert_eq!(
            c.applied_with_index(id),
            vec![(index, cmd("x=1"))],
            "node {id}"
        );
    }
    assert_eq!(h.read(Vec::new()).await, Ok(items(&["x=1"])));
}

#[tokio::test(start_paused = true)]
async fn multiple_commands_are_applied_in_submission_order() {
    let c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(leader.id);

    // One after the other: the outputs count up, the list keeps the order.
    let mut expected = Vec::new();
    for i in 1..=10 {
        let c = format!("seq-{i}");
        assert_eq!(h.submit(cmd(&c)).await, Ok(ListOutput::Len(i)));
        expected.push(cmd(&c));
    }
    assert_eq!(h.read(Vec::new()).await, Ok(ListOutput::Items(expected)));

    // Concurrently: whatever order the log chose, each client's output is
    // its command's position in the list.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=10 {
        let h = h.clone();
        tasks.spawn(async move {
            let c = cmd(&format!("par-{i}"));
            (c.clone(), h.submit(c).await)
        });
    }
    let mut outputs = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        let (c, out) = r.expect("client task");
        match out {
            Ok(ListOutput::Len(n)) => assert!(outputs.insert(n, c).is_none(), "output {n} twice"),
            other => panic!("submit failed: {other:?}"),
        }
    }
    assert_eq!(
        outputs.keys().copied().collect::<Vec<_>>(),
        (11..=20).collect::<Vec<_>>()
    );
    let on_leader = c.applied(leader.id);
    for (n, c) in &outputs {
        assert_eq!(
            &on_leader[n - 1],
            c,
            "output {n} is that command's position"
        );
    }

    // Every node applies the same commands at the same indexes.
    let last = c.status(leader.id).last_applied;
    c.wait_applied(&[1, 2, 3], last, PROMPT).await;
    let reference = c.applied_with_index(leader.id);
    assert_eq!(reference.len(), 20);
    assert!(
        reference.windows(2).all(|w| w[0].0 < w[1].0),
        "applied in index order: {reference:?}"
    );
    for id in [1, 2, 3] {
        assert_eq!(c.applied_with_index(id), reference, "node {id}");
    }
}
