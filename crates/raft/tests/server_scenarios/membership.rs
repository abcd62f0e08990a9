//! Cluster administration through `RaftHandle` (thesis chapter 4 and §3.10):
//! a joining server is added as a learner, caught up and promoted; the
//! leader removes itself and hands over; leadership moves on request, faster
//! than an election timeout.

use super::*;
use raft::{AdminError, ConfChange};

#[tokio::test(start_paused = true)]
async fn a_joining_server_is_caught_up_as_a_learner_then_promoted() {
    let mut c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(leader.id);
    for i in 0..20 {
        h.submit(cmd(&format!("w{i}"))).await.expect("committed");
    }
    c.join_node(4);
    assert!(
        c.status(4).membership.voters().is_empty(),
        "it waits to be added"
    );

    let membership = h.add_voter(4, "node-4".into()).await.expect("added");
    assert_eq!(membership.voters(), &[1, 2, 3, 4]);
    assert!(membership.learners().is_empty());
    assert_eq!(
        membership.addresses().get(&4).map(String::as_str),
        Some("node-4")
    );
    // §4.2.1: it was promoted only once it had the log, so it has it all.
    let expected: Vec<Vec<u8>> = (0..20).map(|i| cmd(&format!("w{i}"))).collect();
    c.wait_until("node 4 applies the log", PROMPT, |c| {
        c.applied(4) == expected
    })
    .await;
    c.wait_until("node 4 knows it votes", PROMPT, |c| {
        c.status(4).membership.is_voter(4)
    })
    .await;
    // Four voters: writes go on, and node 4 counts.
    h.submit(cmd("after"))
        .await
        .expect("committed with four voters");
}

#[tokio::test(start_paused = true)]
async fn a_second_change_is_refused_while_one_is_in_progress() {
    let mut c = Cluster::start(3, RaftConfig::default());
    let leader = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(leader.id);
    h.submit(cmd("a")).await.expect("committed");
    c.join_node(4);
    c.join_node(5);
    // Nodes 2 and 3 stop answering: the first change cannot commit.
    let followers = c.others(leader.id);
    for &f in &followers {
        c.net.isolate(f);
    }
    let first = tokio::spawn({
        let h = h.clone();
        async move {
            h.change_membership(ConfChange::AddLearner {
                id: 4,
                address: "node-4".into(),
            })
            .await
        }
    });
    c.wait_until("the first change is in force on the leader", PROMPT, |c| {
        c.status(leader.id).membership.is_learner(4)
    })
    .await;
    let second = h
        .change_membership(ConfChange::AddLearner {
            id: 5,
            address: "node-5".into(),
        })
        .await;
    assert!(
        matches!(second, Err(AdminError::ChangeInProgress { .. })),
        "{second:?}"
    );
    c.net.heal();
    let done = timeout(ELECTION_BOUND, first).await.expect("in time");
    assert!(done.expect("task").expect("committed").is_learner(4));
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_removes_itself_steps_down_and_the_rest_go_on() {
    let c = Cluster::start(3, RaftConfig::default());
    let old = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(old.id);
    h.submit(cmd("a")).await.expect("committed");
    let membership = h
        .change_membership(ConfChange::Remove { id: old.id })
        .await
        .expect("removal committed");
    assert!(!membership.contains(old.id));
    // §4.2.2: it led until the removal committed, then stepped down; the
    // two that remain elect a leader between them and commit.
    let rest = c.others(old.id);
    let new = c.wait_for_leader(&rest, ELECTION_BOUND).await;
    assert_ne!(new.id, old.id);
    assert_ne!(c.status(old.id).state, RaftState::Leader);
    let h = c.handle(new.id);
    h.submit(cmd("b")).await.expect("committed by the two");
    assert_eq!(h.read(Vec::new()).await, Ok(items(&["a", "b"])));
    // The removed server never campaigns again: the term stays put.
    let term = c.status(new.id).term;
    sleep(c.config.election_timeout_max * 5).await;
    assert_eq!(c.status(new.id).term, term, "no disruption (§4.2.3)");
    assert_eq!(c.status(new.id).state, RaftState::Leader);
}

#[tokio::test(start_paused = true)]
async fn a_transfer_hands_leadership_over_within_an_election_timeout() {
    let c = Cluster::start(3, RaftConfig::default());
    let old = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(old.id);
    h.submit(cmd("a")).await.expect("committed");
    let target = c.others(old.id)[0];
    let started = Instant::now();
    let leader = h.transfer_leadership(Some(target)).await.expect("moved");
    let took = started.elapsed();
    assert_eq!(leader, target);
    // §3.10: the target campaigns at once on TimeoutNow, not after its timer.
    assert!(took < c.config.election_timeout_min, "took {took:?}");
    let new = c.wait_for_leader(&[1, 2, 3], PROMPT).await;
    assert_eq!(new.id, target);
    assert_eq!(
        c.handle(target).submit(cmd("b")).await,
        Ok(ListOutput::Len(2))
    );
    // With no id, the most up-to-date other voter is picked.
    let picked = c
        .handle(target)
        .transfer_leadership(None)
        .await
        .expect("moved again");
    assert_ne!(picked, target);
    assert_eq!(c.wait_for_leader(&[1, 2, 3], PROMPT).await.id, picked);
}

#[tokio::test(start_paused = true)]
async fn a_transfer_to_an_unreachable_voter_fails_and_the_leader_leads_on() {
    let c = Cluster::start(3, RaftConfig::default());
    let old = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(old.id);
    h.submit(cmd("a")).await.expect("committed");
    let target = c.others(old.id)[0];
    c.net.isolate(target);
    h.submit(cmd("b"))
        .await
        .expect("the other follower is enough");
    let result = h.transfer_leadership(Some(target)).await;
    assert_eq!(result, Err(AdminError::TransferFailed { target }));
    // The core gave up after an election timeout and accepts writes again.
    assert_eq!(c.status(old.id).state, RaftState::Leader);
    assert_eq!(h.submit(cmd("c")).await, Ok(ListOutput::Len(3)));
}
