//! Failures of the leader: failover elects a new leader that keeps the committed
//! commands (paper §5.2, §5.4); an isolated leader cannot commit, a stale one steps
//! down on a higher term, a command fails when leadership is lost mid-replication,
//! and two leaders never share a term (Election Safety, Figure 3).

use super::*;

#[tokio::test(start_paused = true)]
async fn leader_failover_elects_a_new_leader_and_keeps_committed_commands() {
    let mut c = Cluster::start(3, RaftConfig::default());
    let old = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let h = c.handle(old.id);
    for (i, x) in ["a", "b", "c"].into_iter().enumerate() {
        assert_eq!(h.submit(cmd(x)).await, Ok(ListOutput::Len(i + 1)));
    }

    c.stop_node(old.id).await.expect("clean shutdown");
    let stopped_at = Instant::now();
    let rest = c.others(old.id);
    let new = c.wait_for_leader(&rest, ELECTION_BOUND).await;
    let took = stopped_at.elapsed();
    assert!(
        took <= c.config.election_timeout_max * 3,
        "failover took {took:?}"
    );
    assert_ne!(new.id, old.id);
    assert!(new.term > old.term, "a new term: {new:?} after {old:?}");

    let h = c.handle(new.id);
    assert_eq!(h.read(Vec::new()).await, Ok(items(&["a", "b", "c"])));
    assert_eq!(h.submit(cmd("d")).await, Ok(ListOutput::Len(4)));
    let last = c.status(new.id).last_applied;
    c.wait_applied(&rest, last, PROMPT).await;
    for id in rest {
        assert_eq!(c.applied(id), cmds(&["a", "b", "c", "d"]), "node {id}");
    }
    // The stopped leader's handle reports that it is gone.
    assert_eq!(
        c.handle(old.id).submit(cmd("e")).await,
        Err(ClientError::Stopped)
    );
}

#[tokio::test(start_paused = true)]
async fn an_isolated_leader_cannot_commit_and_the_majority_elects_a_new_one() {
    let c = Cluster::start(3, RaftConfig::default());
    let old = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    let old_h = c.handle(old.id);
    assert_eq!(old_h.submit(cmd("a")).await, Ok(ListOutput::Len(1)));
    let committed = c.status(old.id).commit_index;

    c.net.isolate(old.id);
    let lost = tokio::spawn({
        let h = old_h.clone();
        async move { h.submit(cmd("lost")).await }
    });

    let majority = c.others(old.id);
    let new = c.wait_for_leader(&majority, ELECTION_BOUND).await;
    assert!(new.term > old.term);
    let s = c.status(old.id);
    assert_eq!(s.last_log_index, committed + 1, "the entry is in its log");
    assert_eq!(s.commit_index, committed, "but it cannot commit it: {s:?}");
    assert!(
        !lost.is_finished(),
        "the isolated leader acknowledged a write"
    );

    // Check-quorum: the isolated leader notices it lost the majority.
    c.wait_until("the isolated leader steps down", ELECTION_BOUND, |c| {
        c.status(old.id).state != RaftState::Leader
    })
    .await;

    let new_h = c.handle(new.id);
    assert_eq!(new_h.submit(cmd("b")).await, Ok(ListOutput::Len(2)));
    assert!(!lost.is_finished());

    c.net.heal();
    let outcome = timeout(PROMPT, lost)
        .await
        .expect("the pending submit resolves after the heal")
        .expect("client task");
    assert_eq!(outcome, Err(ClientError::LeadershipLost));

    c.wait_until("the old leader follows the new one", PROMPT, |c| {
        let s = c.status(old.id);
        s.state == RaftState::Follower && s.leader_id == Some(new.id)
    })
    .await;
    let last = c.status(new.id).last_applied;
    c.wait_applied(&[1, 2, 3], last, PROMPT).await;
    assert_eq!(new_h.read(Vec::new()).await, Ok(items(&["a", "b"])));
    for id in [1, 2, 3] {
        assert_eq!(c.applied(id), cmds(&["a", "b"]), "node {id}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_stale_leader_steps_down_when_it_sees_a_higher_term() {
    // Without check-quorum, an isolated leader does not notice anything by
    // itself: only a message with a higher term makes it step down.
    let config = RaftConfig {
        check_quorum: false,
        ..RaftConfig::default()
    };
    let c = Cluster::start(3, config);
    let old = c.wait_for_leader(&[1, 2, 3], ELECTION_BOUND).await;
    c.net.isolate(old.id);
    let majority = c.others(old.id);
    let new = c.wait_for_leader(&majority, ELECTION_BOUND).await;
    assert!(new.term > old.term);
    assert_eq!(
        c.handle(new.id).submit(cmd("a")).await,
        Ok(ListOutput::Len(1))
    );

    // Still a leader of the old term: stale, but it does not know it.
    sleep(c.config.election_timeout_max * 2).await;
    let s = c.status(old.id);
    assert_eq!((s.state, s.term), (RaftState::Leader, old.term), "{s:?}");

    c.net.heal();
    c.wait_until("the stale leader steps down", PROMPT, |c| {
        let s = c.status(old.id);
        s.state == RaftState::Follower && s.term == new.term && s.leader_id == Some(new.id)
    })
    .await;
    // The current leader was not disturbed, and the old one catches up.
    let s = c.status(new.id);
    assert_eq!((s.state, s.term), (RaftState::Leader, new.term), "{s:?}");
    c.wait_applied(&[old.id], s.last_applied, PROMPT).await;
    assert_eq!(c.applied(old.id), cmds(&["a"]));
}

#[tokio::test(start_paused = true)]
async fn a_command_fails_when_the_leader_loses_leadership_mid_replication() {
    // Five nodes. The leader L appends a command and gets it to one follower
    // A, but no further: L's links to the other three are cut and A can
    // only listen. The entry sits on 2 of 5 logs, uncommitted, when B, C and
    // D elect a new leader, whose higher term reaches L.
    let c = Cluster::start(5, RaftConfig::default());
    let l = c.wait_for_leader(&[1, 2, 3, 4, 5], ELECTION_BOUND).await;
    let lh = c.handle(l.id);
    assert_eq!(lh.submit(cmd("a")).await, Ok(ListOutput::Len(1)));
    let last = c.status(l.id).last_applied;
    c.wait_applied(&[1, 2, 3, 4, 5], last, PROMPT).await;
    let others = c.others(l.id);
    let (a, bcd) = (others[0], others[1..].to_vec());
    for &n in &bcd {
        c.net.cut_link(l.id, n);
        c.net.cut_link(a, n);
    }
    c.net.cut_link(a, l.id);

    let pending = tokio::spawn({
        let lh = lh.clone();
        async move { lh.submit(cmd("x")).await }
    });
    let x_index = l.last_log_index + 2; // after the no-op and "a"
    c.wait_until("the entry reaches A only", PROMPT, |c| {
        c.status(a).last_log_index == x_index && c.status(l.id).last_log_index == x_index
    })
    .await;
    assert!(c.status(l.id).commit_index < x_index, "not committed");

    let new = c.wait_for_leader(&bcd, ELECTION_BOUND).await;
    assert!(new.term > l.term);
    c.wait_until("L sees the higher term and steps down", PROMPT, |c| {
        let s = c.status(l.id);
        s.state == RaftState::Follower && s.term == new.term
    })
    .await;
    assert!(!pending.is_finished(), "no outcome yet: L cannot hear back");
    let nh = c.handle(new.id);
    assert_eq!(nh.submit(cmd("y")).await, Ok(ListOutput::Len(2)));

    c.net.heal();
    let outcome = timeout(PROMPT, pending)
        .await
        .expect("the submit resolves once L learns the new log")
        .expect("client task");
    assert_eq!(outcome, Err(ClientError::LeadershipLost));

    assert_eq!(nh.read(Vec::new()).await, Ok(items(&["a", "y"])));
    let last = c.status(new.id).last_applied;
    c.wait_applied(&[1, 2, 3, 4, 5], last, PROMPT).await;
    for id in 1..=5 {
        assert_eq!(
            c.applied(id),
            cmds(&["a", "y"]),
            "node {id} never applies x"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn split_brain_is_prevented() {
    // Check-quorum off so that cut-off leaders linger: two nodes then think
    // they lead at once (in different terms), which is allowed; two leaders
    // in the same term never are (Election Safety, Figure 3).
    let config = RaftConfig {
        check_quorum: false,
        ..RaftConfig::default()
    };
    let c = Cluster::start(5, config);
    let ids = [1, 2, 3, 4, 5];

    // Every leadership any node ever announces, as seen through its status
    // watch, plus what polling sees.
    let leaders_by_term: Arc<Mutex<BTreeMap<Term, BTreeSet<NodeId>>>> = Arc::default();
    for id in ids {
        let mut rx = c.handle(id).watch_status();
        let seen = Arc::clone(&leaders_by_term);
        tokio::spawn(async move {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.state == RaftState::Leader {
                        seen.lock()
                            .expect("lock")
                            .entry(s.term)
                            .or_default()
                            .insert(s.id);
                    }
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    let mut max_simultaneous = 0;
    let mut poll = |c: &Cluster| {
        let mut now: BTreeMap<Term, Vec<NodeId>> = BTreeMap::new();
        for id in ids {
            let s = c.status(id);
            if s.state == RaftState::Leader {
                now.entry(s.term).or_default().push(id);
            }
        }
        for (term, leaders) in &now {
            assert!(
                leaders.len() <= 1,
                "split brain: leaders {leaders:?} in term {term}\n{}",
                c.describe()
            );
        }
        max_simultaneous = max_simultaneous.max(now.len());
    };

    let mut submitted = 0;
    for round in 0..4 {
        let leader = c.wait_for_leader(&ids, ELECTION_BOUND).await;
        // Cut the leader off with one follower (a minority of two), then,
        // every other round, move another node over to it.
        let buddy = c.others(leader.id)[round % 4];
        let minority = [leader.id, buddy];
        let majority: Vec<NodeId> = ids
            .iter()
            .copied()
            .filter(|id| !minority.contains(id))
            .collect();
        c.net.partition(&[&minority[..], &majority[..]]);
        // Writes on both sides: only the majority's can commit.
        for side in [leader.id, majority[0]] {
            let h = c.handle(side);
            submitted += 1;
            let data = cmd(&format!("r{round}-{submitted}"));
            tokio::spawn(async move {
                let _ = h.submit(data).await;
            });
        }
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            poll(&c);
            sleep(Duration::from_millis(10)).await;
        }
        if round % 2 == 1 {
            c.net
                .partition(&[&[leader.id][..], &majority[..2], &[buddy, majority[2]][..]]);
            let until = Instant::now() + Duration::from_millis(1500);
            while Instant::now() < until {
                poll(&c);
                sleep(Duration::from_millis(10)).await;
            }
        }
        c.net.heal();
        let until = Instant::now() + Duration::from_millis(1000);
        while Instant::now() < until {
            poll(&c);
            sleep(Duration::from_millis(10)).await;
        }
    }

    let seen = leaders_by_term.lock().expect("lock").clone();
    for (term, leaders) in &seen {
        assert_eq!(leaders.len(), 1, "term {term} had leaders {leaders:?}");
    }
    assert!(
        seen.len() >= 4,
        "the scenario changed leaders several times: {seen:?}"
    );
    assert!(
        max_simultaneous >= 2,
        "a stale leader coexisted with a new one (the scenario bites)"
    );
}
