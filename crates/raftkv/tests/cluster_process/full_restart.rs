//! Full restart (item 5): a cluster stopped and started again keeps all its
//! data (the persistent state of Figure 2 in the Raft paper).

use super::*;

#[test]
fn full_cluster_restart_keeps_all_data() {
    let mut c = Cluster::start();
    c.wait_for_leader(secs(5));
    let mut cons: Vec<redis::Connection> = (0..3).map(|i| c.redis(i)).collect();
    let keys: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let _: String = q(&mut cons[i % 3], &["SET", k, &format!("val{i}")]);
    }
    let _: i64 = q(&mut cons[0], &["INCRBY", "restart_ctr", "7"]);
    drop(cons);

    for i in 0..3 {
        let status = c
            .sigterm(i, secs(5))
            .unwrap_or_else(|| panic!("node {} did not stop within 5 s", i + 1));
        assert!(status.success(), "node {} exited with {status}", i + 1);
    }
    for i in 0..3 {
        c.spawn(i);
    }
    c.wait_for_leader(secs(10));
    for i in 0..3 {
        let mut con = c.redis(i);
        let got = mget_all(&mut con, &keys);
        for (j, v) in got.iter().enumerate() {
            assert_eq!(
                v.as_deref(),
                Some(format!("val{j}").as_str()),
                "key r{j} after a full restart, via node {}",
                i + 1
            );
        }
        let n: i64 = q(&mut con, &["DBSIZE"]);
        assert_eq!(n, 101);
        let ctr: i64 = q(&mut con, &["INCR", "restart_ctr"]);
        assert_eq!(ctr, 8 + i as i64, "the counter survived and INCR works");
    }
}
