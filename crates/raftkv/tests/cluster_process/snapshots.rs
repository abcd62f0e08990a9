//! Snapshots (paper §7): a follower whose data dir is wiped rejoins by
//! snapshot, converges and never votes again; `RAFT.SNAPSHOT` on RESP and `POST
//! /snapshot` on HTTP compact the log.

use super::http::http_request;
use super::*;

#[test]
fn a_wiped_follower_rejoins_by_snapshot_converges_and_never_votes_again() {
    let opts = Opts {
        extra: vec!["--snapshot-entries".into(), "200".into()],
        ..Opts::default()
    };
    let mut c = Cluster::start_with(3, opts);
    let leader = c.wait_for_leader(secs(5));
    // A brand-new cluster: every node's new data dir was vouched for by
    // the two others (raft::incarnation), so all may vote.
    for i in 0..3 {
        let vote = c.info(i).map(|info| info.fields.get("vote").cloned());
        assert_eq!(vote.flatten().as_deref(), Some("allowed"), "node {}", i + 1);
    }
    let mut con = c.redis(leader);
    for i in 0..600 {
        let _: String = q(&mut con, &["SET", &format!("w{i}"), &format!("v{i}")]);
    }
    let info = c.info(leader).expect("leader answers");
    assert!(
        info.num("snapshot_last_index") > 0,
        "the leader compacted its log (snapshot every 200 entries)"
    );
    let victim = c.followers(leader)[0];
    c.kill9(victim);
    std::fs::remove_dir_all(&c.nodes[victim].data_dir).expect("wipe the data dir");
    // More writes while it is gone, then it comes back empty.
    for i in 600..700 {
        let _: String = q(&mut con, &["SET", &format!("w{i}"), &format!("v{i}")]);
    }
    c.spawn(victim);
    let want = c.info(leader).expect("leader").num("commit_index");
    wait_until(secs(20), "the wiped follower caught up", || {
        c.info(victim)
            .filter(|i| i.num("last_applied") >= want)
            .map(|_| ())
    });
    let st = c.info(victim).expect("victim answers");
    assert!(
        st.num("snapshot_last_index") > 0,
        "it caught up by installing a snapshot"
    );
    // Issue 13: it forgot its votes, so it must never vote again under
    // its old id: its peers knew its old incarnation.
    assert_eq!(
        st.fields.get("vote").map(String::as_str),
        Some("suspended"),
        "the wiped node's vote is suspended: {st:?}"
    );
    let log = std::fs::read_to_string(&c.nodes[victim].log).unwrap_or_default();
    assert!(
        log.contains("knew another incarnation of this node"),
        "it says why in its log:\n{}",
        c.logs()
    );
    // Every node holds the same data.
    let keys: Vec<String> = (0..700).map(|i| format!("w{i}")).collect();
    for i in 0..3 {
        let mut con = c.redis(i);
        let got = mget_all(&mut con, &keys);
        for (j, v) in got.iter().enumerate() {
            assert_eq!(
                v.as_deref(),
                Some(format!("v{j}").as_str()),
                "w{j} via node {}",
                i + 1
            );
        }
    }
}

#[test]
fn raft_snapshot_on_resp_and_post_snapshot_on_http_compact_the_log() {
    let c = Cluster::start();
    let leader = c.wait_for_leader(secs(5));
    let mut con = c.redis(leader);
    for i in 0..50 {
        let _: String = q(&mut con, &["SET", &format!("s{i}"), "v"]);
    }
    let ok: String = q(&mut con, &["RAFT.SNAPSHOT"]);
    assert_eq!(ok, "OK");
    let first = c.info(leader).expect("info").num("snapshot_last_index");
    assert!(first >= 50, "the snapshot covers the writes ({first})");
    let _: String = q(&mut con, &["SET", "after", "v"]);
    let follower = c.followers(leader)[0];
    let (status, _, body) = http_request(c.nodes[follower].http_port, "POST", "/snapshot");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("snapshot_last_index"), "{body}");
    assert!(c.info(follower).expect("info").num("snapshot_last_index") > 0);
}
