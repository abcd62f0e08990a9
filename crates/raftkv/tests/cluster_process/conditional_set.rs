//! SET ... IFEQ (item 2): the conditional set's semantics, through the leader
//! and through a follower.

use super::*;

#[test]
fn conditional_set_semantics() {
    let c = Cluster::start();
    let leader = c.wait_for_leader(secs(5));
    let follower = c.followers(leader)[0];
    for (via, other) in [(leader, follower), (follower, leader)] {
        let mut con = c.redis(via);
        let mut check = c.redis(other);
        let key = format!("cond_{via}");
        // Missing key: nil, and the key stays missing.
        let r: Option<String> = q(&mut con, &["SET", &key, "v1", "IFEQ", "anything"]);
        assert_eq!(r, None, "IFEQ on a missing key is nil");
        let n: i64 = q(&mut check, &["EXISTS", &key]);
        assert_eq!(n, 0, "a failed IFEQ does not create the key");

        let _: String = q(&mut con, &["SET", &key, "v1"]);
        // Not equal: nil, value unchanged.
        let r: Option<String> = q(&mut con, &["SET", &key, "v2", "IFEQ", "wrong"]);
        assert_eq!(r, None, "IFEQ with a different value is nil");
        let v: Option<String> = q(&mut check, &["GET", &key]);
        assert_eq!(
            v.as_deref(),
            Some("v1"),
            "value unchanged after a failed IFEQ"
        );

        // Equal: OK, value replaced.
        let r: Option<String> = q(&mut con, &["SET", &key, "v2", "IFEQ", "v1"]);
        assert_eq!(r.as_deref(), Some("OK"));
        let v: Option<String> = q(&mut check, &["GET", &key]);
        assert_eq!(v.as_deref(), Some("v2"));

        // The old expected value no longer matches; lowercase option works.
        let r: Option<String> = q(&mut con, &["SET", &key, "v3", "ifeq", "v1"]);
        assert_eq!(r, None);
        let r: Option<String> = q(&mut con, &["set", &key, "v3", "ifeq", "v2"]);
        assert_eq!(r.as_deref(), Some("OK"));
        let v: Option<String> = q(&mut check, &["GET", &key]);
        assert_eq!(v.as_deref(), Some("v3"));

        // Comparison is exact (no prefix or case folding).
        let r: Option<String> = q(&mut con, &["SET", &key, "v4", "IFEQ", "V3"]);
        assert_eq!(r, None);
        let r: Option<String> = q(&mut con, &["SET", &key, "v4", "IFEQ", "v"]);
        assert_eq!(r, None);
        let v: Option<String> = q(&mut check, &["GET", &key]);
        assert_eq!(v.as_deref(), Some("v3"));
    }
}
