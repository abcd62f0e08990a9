//! Catching up: a partitioned node rejoins and catches up without disrupting the
//! cluster (paper §5.3; pre-vote, thesis §9.6).

use super::*;

#[tokio::test(start_paused = true)]
async fn a_partitioned_node_rejoins_and_catches_up() {
    let c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(leader.id);
    assert_eq!(h.submit(cmd("before")).await, Ok(ListOutput::Len(1)));
    let lagger = c.others(leader.id)[0];
    c.wait_applied(&[lagger], c.status(leader.id).last_applied, PROMPT)
        .await;

    c.net.isolate(lagger);
    let mut expected = vec![cmd("before")];
    for i in 1..=5 {
        let x = format!("while-away-{i}");
        assert_eq!(h.submit(cmd(&x)).await, Ok(ListOutput::Len(i + 1)));
        expected.push(cmd(&x));
    }
    // Long enough for the lagger to campaign (in vain) a few times.
    sleep(c.config.election_timeout_max * 3).await;
    let behind = c.status(lagger);
    assert_eq!(c.applied(lagger), cmds(&["before"]), "it missed the writes");
    assert!(behind.last_log_index < c.status(leader.id).last_log_index);

    c.net.heal();
    c.wait_until("the lagger catches up", PROMPT, |c| {
        let (s, l) = (c.status(lagger), c.status(leader.id));
        s.last_log_index == l.last_log_index
            && s.commit_index == l.commit_index
            && s.last_applied == l.last_applied
    })
    .await;
    assert_eq!(c.applied(lagger), expected);
    // Pre-vote: the returning node did not disrupt the cluster.
    let s = c.status(leader.id);
    assert_eq!((s.state, s.term), (RaftState::Leader, leader.term), "{s:?}");
    let s = c.status(lagger);
    assert_eq!(
        (s.term, s.leader_id),
        (leader.term, Some(leader.id)),
        "{s:?}"
    );
}
