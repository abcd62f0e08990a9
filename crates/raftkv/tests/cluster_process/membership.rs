//! Cluster administration from outside (CONTRACT.md, "Cluster
//! administration"; thesis chapter 4 and §3.10): a node joins with `--join`
//! and is added with `RAFT.NODE ADD` through a follower, counts in the
//! majority, survives a restart as a member; dead and live nodes are
//! removed; leadership moves with `RAFT.TRANSFER` and on SIGTERM.

use super::*;

fn field(c: &Cluster, i: usize, name: &str) -> String {
    c.info(i)
        .and_then(|info| info.fields.get(name).cloned())
        .unwrap_or_default()
}

fn wait_field(c: &Cluster, i: usize, name: &str, value: &str) {
    let what = format!("node {} shows {name}:{value}", c.nodes[i].id);
    wait_until(secs(10), &what, || {
        (field(c, i, name) == value).then_some(())
    });
}

fn admin(c: &Cluster, i: usize, args: &[&str]) -> Result<String, String> {
    let mut raw = RawConn::connect(c.nodes[i].client_port, secs(5)).expect("connect");
    raw.set_timeout(secs(60));
    match raw.cmd(args).expect("a reply") {
        Resp::Simple(s) => Ok(s),
        Resp::Error(e) => Err(e),
        other => panic!("{args:?}: unexpected reply {other:?}"),
    }
}

#[test]
fn a_node_joins_is_added_through_a_follower_counts_in_the_majority_and_is_removed() {
    let mut c = Cluster::start();
    let leader = c.wait_for_leader(secs(10));
    let mut con = c.redis(leader);
    for i in 0..200 {
        let _: String = q(&mut con, &["SET", &format!("k{i}"), &format!("v{i}")]);
    }
    drop(con);

    // Node 4 starts empty and waits; it serves nothing yet.
    let new = c.join_node();
    wait_field(&c, new, "membership", "joining");
    assert_eq!(field(&c, new, "vote"), "pending");
    let mut con4 = c.redis(new);
    let refused = q_err(&mut con4, &["SET", "early", "x"]);
    assert_eq!(refused.code(), Some("CLUSTERDOWN"), "{refused}");

    // Added through a follower (which forwards it to the leader): caught
    // up as a learner, then promoted.
    let follower = c.followers(leader)[0];
    let peer = format!("127.0.0.1:{}", c.nodes[new].peer_port);
    assert_eq!(
        admin(&c, follower, &["RAFT.NODE", "ADD", "4", &peer]),
        Ok("OK".into())
    );
    for i in [leader, follower, new] {
        wait_field(&c, i, "voters", "1,2,3,4");
    }
    wait_field(&c, new, "membership", "voter");
    wait_field(&c, new, "vote", "allowed");
    let v: Option<String> = q(&mut con4, &["GET", "k199"]);
    assert_eq!(v.as_deref(), Some("v199"), "it has the whole log");

    // Four voters: a majority is three. With one of the first three dead,
    // writes commit only because node 4 counts.
    let victim = c
        .followers(leader)
        .into_iter()
        .find(|&i| i != new)
        .expect("a follower");
    c.kill9(victim);
    let _: String = q(&mut con4, &["SET", "after", "1"]);

    // The dead node is removed; node 4 itself is removed next, while it runs.
    let victim_id = c.nodes[victim].id.to_string();
    let leader = c.wait_for_leader(secs(10));
    assert_eq!(
        admin(&c, leader, &["RAFT.NODE", "REMOVE", &victim_id]),
        Ok("OK".into())
    );
    wait_field(&c, leader, "voters", &{
        let mut v: Vec<String> = [1u64, 2, 3, 4]
            .iter()
            .filter(|&&id| id.to_string() != victim_id)
            .map(|id| id.to_string())
            .collect();
        v.sort();
        v.join(",")
    });
    let leader = c.wait_for_leader(secs(10));
    assert_eq!(
        admin(&c, leader, &["RAFT.NODE", "REMOVE", "4"]),
        Ok("OK".into())
    );
    wait_field(&c, new, "membership", "removed");
    let refused = q_err(&mut con4, &["GET", "k1"]);
    assert_eq!(refused.code(), Some("CLUSTERDOWN"), "{refused}");
    assert!(tail(&c.nodes[new].log, 400).contains("not in the cluster's configuration"));
    // The two left go on (without the removed node, which follows no one).
    c.kill9(new);
    let leader = c.wait_for_leader(secs(10));
    let mut con = c.redis(leader);
    let _: String = q(&mut con, &["SET", "two", "left"]);
}

#[test]
fn a_joined_node_restarts_as_a_member_and_the_configuration_survives_restarts() {
    let mut c = Cluster::start();
    let leader = c.wait_for_leader(secs(10));
    let new = c.join_node();
    wait_field(&c, new, "membership", "joining");
    let peer = format!("127.0.0.1:{}", c.nodes[new].peer_port);
    assert_eq!(
        admin(&c, leader, &["RAFT.NODE", "ADD", "4", &peer, "LEARNER"]),
        Ok("OK".into())
    );
    wait_field(&c, new, "membership", "learner");
    assert_eq!(field(&c, leader, "learners"), "4");
    // A learner never votes: it stays "pending" however long it runs.
    assert_ne!(field(&c, new, "vote"), "allowed");
    assert_eq!(
        admin(&c, leader, &["RAFT.NODE", "PROMOTE", "4"]),
        Ok("OK".into())
    );
    wait_field(&c, new, "membership", "voter");
    // Every node restarts (`--cluster` is ignored on a data dir that has
    // one): the configuration comes back from the log.
    for i in 0..c.nodes.len() {
        c.kill9(i);
    }
    for i in 0..c.nodes.len() {
        c.spawn(i);
    }
    let leader = c.wait_for_leader(secs(15));
    for i in 0..4 {
        wait_field(&c, i, "voters", "1,2,3,4");
    }
    let mut con = c.redis(leader);
    let _: String = q(&mut con, &["SET", "x", "1"]);
}

#[test]
fn raft_transfer_moves_leadership_and_bad_requests_get_clear_errors() {
    let c = Cluster::start();
    let leader = c.wait_for_leader(secs(10));
    let target = c.followers(leader)[0];
    let target_id = c.nodes[target].id.to_string();
    // Sent to the target itself, which forwards it to the leader.
    assert_eq!(
        admin(&c, target, &["RAFT.TRANSFER", &target_id]),
        Ok("OK".into())
    );
    assert_eq!(c.wait_for_leader(secs(5)), target);
    // No id: the most up-to-date other voter.
    assert_eq!(admin(&c, target, &["RAFT.TRANSFER"]), Ok("OK".into()));
    assert_ne!(c.wait_for_leader(secs(5)), target);

    for (args, needle) in [
        (
            &["RAFT.NODE", "ADD", "1", "127.0.0.1:1"][..],
            "already a member",
        ),
        (&["RAFT.NODE", "REMOVE", "9"][..], "not a member"),
        (&["RAFT.NODE", "PROMOTE", "2"][..], "not a learner"),
        (&["RAFT.TRANSFER", "9"][..], "not a voter"),
        (
            &["RAFT.NODE", "ADD", "x", "127.0.0.1:1"][..],
            "invalid node id",
        ),
        (&["RAFT.NODE", "ADD", "5", "nowhere"][..], "invalid address"),
        (
            &["RAFT.NODE", "ADD", "5", "h:1", "VOTER"][..],
            "syntax error",
        ),
        (&["RAFT.NODE", "FOO", "1"][..], "unknown subcommand"),
        (&["RAFT.NODE"][..], "wrong number of arguments"),
    ] {
        let e = admin(&c, 0, args).expect_err("an error reply");
        assert!(e.contains(needle), "{args:?}: {e}");
    }
}

#[test]
fn sigterm_on_the_leader_hands_leadership_over_before_it_stops() {
    let mut c = Cluster::start();
    let leader = c.wait_for_leader(secs(10));
    let status = c.sigterm(leader, secs(5)).expect("exits within 5 s");
    assert!(status.success(), "{status}");
    let log = tail(&c.nodes[leader].log, 400);
    let line = log
        .lines()
        .find(|l| l.contains("handed leadership over before stopping"))
        .unwrap_or_else(|| panic!("no handover logged:\n{log}"));
    // The node it handed over to (`to=N`) is the one that leads now.
    let to: u64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("to="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no target in {line}"));
    let new = c.wait_for_leader(secs(5));
    assert_eq!(c.nodes[new].id, to, "{line}");
}
