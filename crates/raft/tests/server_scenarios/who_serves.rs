//! Who may serve clients: a follower or a candidate refuses commands and reads with
//! `NotLeader` and a leader hint where it knows one (paper §8).

use super::*;

#[tokio::test(start_paused = true)]
async fn submit_on_a_follower_fails_with_not_leader_and_a_leader_hint() {
    let c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let before: Vec<_> = [1, 2, 3].map(|id| c.status(id).last_log_index).to_vec();

    for follower in c.others(leader.id) {
        assert_eq!(
            c.handle(follower).submit(cmd("nope")).await,
            Err(not_leader(Some(leader.id))),
            "follower {follower} redirects to the leader"
        );
    }
    // Nothing was proposed anywhere.
    sleep(Duration::from_millis(500)).await;
    let after: Vec<_> = [1, 2, 3].map(|id| c.status(id).last_log_index).to_vec();
    assert_eq!(before, after);
    for id in [1, 2, 3] {
        assert!(c.applied(id).is_empty(), "node {id} applied something");
    }
}

#[tokio::test(start_paused = true)]
async fn read_on_a_follower_fails_with_not_leader() {
    let c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    assert_eq!(
        c.handle(leader.id).submit(cmd("a")).await,
        Ok(ListOutput::Len(1))
    );
    for follower in c.others(leader.id) {
        assert_eq!(
            c.handle(follower).read(Vec::new()).await,
            Err(not_leader(Some(leader.id))),
            "follower {follower}"
        );
    }
    assert_eq!(
        c.handle(leader.id).read(Vec::new()).await,
        Ok(items(&["a"]))
    );
}

#[tokio::test(start_paused = true)]
async fn a_candidate_rejects_commands() {
    // With pre-vote (the default), an isolated node campaigns as a
    // PreCandidate and stays one; without it, it becomes a Candidate. Both
    // refuse commands and reads, and know no leader to point to.
    for (pre_vote, role) in [
        (true, RaftState::PreCandidate),
        (false, RaftState::Candidate),
    ] {
        let config = RaftConfig {
            pre_vote,
            ..RaftConfig::default()
        };
        let c = Cluster::start(3, config);
        let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
        let node = c.others(leader.id)[0];
        c.wait_applied(&[node], leader.last_log_index, PROMPT).await;
        c.net.isolate(node);
        c.wait_until(
            &format!("node {node} becomes a {role}"),
            ELECTION_BOUND,
            |c| c.status(node).state == role,
        )
        .await;

        let h = c.handle(node);
        assert_eq!(h.submit(cmd("x")).await, Err(not_leader(None)), "{role}");
        assert_eq!(h.read(Vec::new()).await, Err(not_leader(None)), "{role}");
        let s = c.status(node);
        assert_eq!(s.state, role, "still campaigning: {s:?}");
        assert_eq!(s.last_log_index, leader.last_log_index, "nothing appended");
        if pre_vote {
            assert_eq!(s.term, leader.term, "a pre-candidate keeps its term");
        } else {
            assert!(s.term > leader.term, "a candidate raised its term");
        }
    }
}
