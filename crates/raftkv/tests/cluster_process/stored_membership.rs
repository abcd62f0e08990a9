//! The stored membership (item 15): "--cluster is used only to bootstrap an
//! empty data dir; after that the membership stored on disk wins."

use super::*;

/// Stops a follower, restarts it with `cluster` as its `--cluster` flag (or
/// none), and checks it rejoins: it runs, catches up, and serves reads.
fn restart_follower_with_cluster_flag(cluster: impl Fn(&Cluster) -> Option<String>) {
    let mut c = Cluster::start();
    let leader = c.wait_for_leader(secs(5));
    let f = c.followers(leader)[0];
    let mut con = c.redis(leader);
    let _: String = q(&mut con, &["SET", "before", "1"]);
    let status = c.sigterm(f, secs(5)).expect("follower stops");
    assert!(status.success());
    let _: String = q(&mut con, &["SET", "while_down", "2"]);

    let flag = cluster(&c);
    c.spawn_with_cluster(f, flag.as_deref());
    let target = c.info(leader).expect("info").num("commit_index");
    let ok = process::try_wait_until(secs(10), || {
        if let Some(Ok(Some(status))) = c.nodes[f].child.as_mut().map(|ch| ch.try_wait()) {
            return Some(Err(format!(
                "node {} exited ({status}): {}",
                f + 1,
                tail(&c.nodes[f].log, 1)
            )));
        }
        c.info(f)
            .filter(|i| i.num("last_applied") >= target && i.role() == "follower")
            .map(|_| Ok(()))
    });
    match ok {
        Some(Ok(())) => {}
        Some(Err(e)) => panic!("restart with --cluster {flag:?}: {e}"),
        None => panic!("restart with --cluster {flag:?}: the node did not rejoin within 10 s"),
    }
    let mut fcon = c.redis(f);
    let v: Option<String> = q(&mut fcon, &["GET", "while_down"]);
    assert_eq!(v.as_deref(), Some("2"));
}

#[test]
fn a_node_restarts_on_its_data_dir_without_the_cluster_flag() {
    restart_follower_with_cluster_flag(|_| None);
}

#[test]
fn on_restart_the_stored_membership_wins_over_a_different_cluster_flag() {
    restart_follower_with_cluster_flag(|_| {
        let p = free_ports(3);
        Some(format!(
            "1=127.0.0.1:{},2=127.0.0.1:{},3=127.0.0.1:{}",
            p[0], p[1], p[2]
        ))
    });
}
