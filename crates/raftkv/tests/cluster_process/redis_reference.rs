//! redis-server is the reference (issue 16): the same requests go to a real
//! `redis-server` and to a raftkv cluster (through a follower, so that
//! forwarding is in the path), and the replies must be the same, errors
//! included. Skipped when `redis-server` is not installed (`.ci/run`
//! installs it). This is the deterministic half of the differential test;
//! the command table (`COMMAND ...`) is compared here entry by entry.

use super::*;

/// `COMMAND INFO` with the tips (index 7) and the subcommands (index 9)
/// left out: tips are Redis Cluster's routing hints (`request_policy:...`),
/// which a single raftkv cluster does not give, and raftkv's container
/// commands (CLIENT, CONFIG, COMMAND) have only a few of Redis'
/// subcommands, which the table does not list yet.
fn without_tips(r: Resp) -> Resp {
    match r {
        Resp::Array(entries) => Resp::Array(
            entries
                .into_iter()
                .map(|e| match e {
                    Resp::Array(mut fields) if fields.len() == 10 => {
                        fields[7] = Resp::Array(Vec::new());
                        fields[9] = Resp::Array(Vec::new());
                        Resp::Array(fields)
                    }
                    other => other,
                })
                .collect(),
        ),
        other => other,
    }
}

/// `COMMAND DOCS name`: summary, since, group and complexity (raftkv lists
/// only the key among the arguments).
fn doc_fields(r: Resp) -> Vec<(String, String)> {
    let Resp::Array(top) = r else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for pair in top.chunks(2) {
        let [name, Resp::Array(fields)] = pair else {
            continue;
        };
        for kv in fields.chunks(2) {
            if let [k, v] = kv {
                if ["summary", "since", "group", "complexity"].contains(&k.text().as_str()) {
                    out.push((format!("{}.{}", name.text(), k.text()), v.text()));
                }
            }
        }
    }
    out
}

#[test]
fn replies_and_errors_match_redis_server() {
    if !have("redis-server") {
        eprintln!("SKIPPED: redis-server is not installed");
        return;
    }
    let redis = RedisServer::start(&[]);
    let c = Cluster::start();
    let leader = c.wait_for_leader(secs(5));
    let follower = c.followers(leader)[0];
    let mut ours = c.raw(follower);
    let mut theirs = RawConn::connect(redis.port, secs(5)).expect("connect to redis-server");

    // The command table, entry by entry.
    let table = ours.cmd(&["COMMAND", "LIST"]).expect("COMMAND LIST");
    let Resp::Array(names) = table else {
        panic!("COMMAND LIST: {table:?}")
    };
    let mut compared = 0;
    for name in names.iter().map(Resp::text) {
        // Ours alone: the Raft commands, and DELIFEQ (Valkey 9's, not in
        // Redis 7).
        if name.starts_with("raft.") || name == "delifeq" {
            continue;
        }
        let a = without_tips(ours.cmd(&["COMMAND", "INFO", &name]).expect("ours"));
        let b = without_tips(theirs.cmd(&["COMMAND", "INFO", &name]).expect("theirs"));
        assert_eq!(a, b, "COMMAND INFO {name}");
        let a = doc_fields(ours.cmd(&["COMMAND", "DOCS", &name]).expect("ours"));
        let b = doc_fields(theirs.cmd(&["COMMAND", "DOCS", &name]).expect("theirs"));
        assert_eq!(a, b, "COMMAND DOCS {name}");
        compared += 1;
    }
    assert!(compared >= 20, "compared {compared} commands");

    // Requests whose replies must be identical, byte for byte once parsed.
    let requests: &[&[&str]] = &[
        &["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"],
        &["COMMAND", "GETKEYS", "GET", "a", "b"],
        &["COMMAND", "GETKEYS", "PING", "x"],
        &["COMMAND", "GETKEYS", "NOSUCH", "a"],
        &["COMMAND", "GETKEYS"],
        &["COMMAND", "COUNT", "x"],
        &["COMMAND", "FOO"],
        &["COMMAND", "INFO", "get", "nosuch"],
        &["GET"],
        &["GET", "a", "b"],
        &["DBSIZE", "x"],
        &["SET", "k"],
        &["MSET", "a"],
        &["MSET", "a", "1", "b"],
        &["INCRBY", "k", "x"],
        &["FLY", "me", "to", "the", "moon"],
        &["SET", "ref:k", "v"],
        &["GET", "ref:k"],
        &["INCR", "ref:k"],
        &["SET", "ref:n", "41"],
        &["INCR", "ref:n"],
        &["DECRBY", "ref:n", "2"],
        &["INCRBY", "ref:n", "9223372036854775807"],
        &["MSET", "ref:a", "1", "ref:b", "2"],
        &["MGET", "ref:a", "ref:b", "ref:missing"],
        &["EXISTS", "ref:a", "ref:a", "ref:missing"],
        &["DEL", "ref:a", "ref:missing"],
        &["SET", "ref:s", "v", "NX"],
        &["SET", "ref:s", "v2", "NX", "GET"],
        &["SET", "ref:s", "v3", "XX", "GET"],
        &["SET", "ref:missing", "v", "XX"],
        &["SET", "ref:s", "v", "NX", "XX"],
        &["SET", "ref:s", "v", "BOGUS"],
        &["GETSET", "ref:s", "v4"],
        &["SETNX", "ref:s", "x"],
        &["SETNX", "ref:new", "x"],
        &["GETDEL", "ref:new"],
        &["GETDEL", "ref:new"],
        &["MSETNX", "ref:m1", "1", "ref:m2", "2"],
        &["MSETNX", "ref:m3", "3", "ref:m1", "9"],
        &["MGET", "ref:m1", "ref:m2", "ref:m3"],
        &["MSETNX", "ref:m1"],
        &["APPEND", "ref:ap", "Hello"],
        &["APPEND", "ref:ap", " World"],
        &["STRLEN", "ref:ap"],
        &["STRLEN", "ref:missing"],
        &["GETRANGE", "ref:ap", "0", "3"],
        &["GETRANGE", "ref:ap", "-3", "-1"],
        &["GETRANGE", "ref:ap", "10", "100"],
        &["GETRANGE", "ref:ap", "5", "3"],
        &["GETRANGE", "ref:ap", "-1", "-5"],
        &["GETRANGE", "ref:ap", "x", "1"],
        &["GETRANGE", "ref:missing", "0", "-1"],
        &["SETRANGE", "ref:ap", "6", "Redis"],
        &["GET", "ref:ap"],
        &["SETRANGE", "ref:pad", "3", "x"],
        &["GET", "ref:pad"],
        &["SETRANGE", "ref:none", "5", ""],
        &["EXISTS", "ref:none"],
        &["SETRANGE", "ref:ap", "-1", "x"],
        &["SETRANGE", "ref:ap", "x", "x"],
        &["ECHO", "hello"],
        &["PING", "a", "b"],
        &["SELECT", "0"],
        &["HELLO", "4"],
    ];
    for req in requests {
        let a = ours.cmd(req).expect("ours");
        let b = theirs.cmd(req).expect("theirs");
        assert_eq!(a, b, "{req:?}");
    }

    // The keyspace: glob patterns (KEYS answers in no order: sorted here),
    // TYPE, RENAME, RENAMENX, TOUCH, UNLINK, FLUSHDB.
    let sorted = |r: Resp| match r {
        Resp::Array(mut items) => {
            items.sort_by_key(Resp::text);
            Resp::Array(items)
        }
        other => other,
    };
    for key in [
        "ref:g:hello",
        "ref:g:hallo",
        "ref:g:hxllo",
        "ref:g:hllo",
        "ref:g:heeeello",
        "ref:g:[x]",
        "ref:g:a\\b",
        "ref:g:",
        "ref:g:-",
    ] {
        for conn in [&mut ours, &mut theirs] {
            assert_eq!(
                conn.cmd(&["SET", key, "1"]).expect("SET"),
                Resp::Simple("OK".into())
            );
        }
    }
    let keyspace: &[&[&str]] = &[
        &["KEYS", "ref:g:h?llo"],
        &["KEYS", "ref:g:h*llo"],
        &["KEYS", "ref:g:h[ae]llo"],
        &["KEYS", "ref:g:h[^e]llo"],
        &["KEYS", "ref:g:h[a-b]llo"],
        &["KEYS", "ref:g:h[b-a]llo"],
        &["KEYS", "ref:g:\\[x\\]"],
        &["KEYS", "ref:g:[\\[]x]"],
        &["KEYS", "ref:g:a\\\\b"],
        &["KEYS", "ref:g:["],
        &["KEYS", "ref:g:h[a-"],
        &["KEYS", "ref:g:[-]"],
        &["KEYS", "ref:g:*"],
        &["KEYS", "ref:g:**o"],
        &["KEYS", "ref:g:*o*"],
        &["KEYS", "ref:g:?"],
        &["KEYS", "ref:g:"],
        &["KEYS", "nomatch*"],
        &["KEYS", "*"],
        &["TYPE", "ref:g:hello"],
        &["TYPE", "ref:missing"],
        &["RENAME", "ref:missing", "x"],
        &["RENAME", "ref:g:hello", "ref:g:hello"],
        &["RENAME", "ref:g:hello", "ref:g:renamed"],
        &["GET", "ref:g:renamed"],
        &["EXISTS", "ref:g:hello"],
        &["RENAMENX", "ref:g:renamed", "ref:g:hallo"],
        &["RENAMENX", "ref:g:renamed", "ref:g:renamed"],
        &["RENAMENX", "ref:g:renamed", "ref:g:fresh"],
        &["RENAMENX", "ref:missing", "x"],
        &["TOUCH", "ref:g:fresh", "ref:g:fresh", "ref:missing"],
        &["UNLINK", "ref:g:fresh", "ref:missing"],
        &["FLUSHDB", "BOGUS"],
        &["FLUSHALL", "ASYNC", "SYNC"],
        &["FLUSHDB", "ASYNC"],
        &["DBSIZE"],
        &["KEYS", "*"],
        &["RANDOMKEY"],
    ];
    for req in keyspace {
        let a = sorted(ours.cmd(req).expect("ours"));
        let b = sorted(theirs.cmd(req).expect("theirs"));
        assert_eq!(a, b, "{req:?}");
    }
    // RANDOMKEY names a key that exists.
    assert_eq!(
        ours.cmd(&["SET", "ref:only", "1"]).expect("SET"),
        Resp::Simple("OK".into())
    );
    assert_eq!(
        ours.cmd(&["RANDOMKEY"]).expect("RANDOMKEY"),
        Resp::Bulk(b"ref:only".to_vec())
    );
    // Transactions: MULTI / EXEC / DISCARD, queueing errors, runtime errors
    // inside EXEC, reads inside the transaction, PING.
    let tx: &[&[&str]] = &[
        &["MULTI"],
        &["MULTI"],
        &["SET", "ref:tx", "1"],
        &["GET", "ref:tx"],
        &["FOO"],
        &["EXEC"],
        &["EXEC"],
        &["DISCARD"],
        &["MULTI"],
        &["DISCARD"],
        &["MULTI"],
        &["EXEC"],
        &["MULTI"],
        &["SET", "ref:tx", "x"],
        &["INCR", "ref:tx"],
        &["GET", "ref:tx"],
        &["PING"],
        &["MSET", "ref:tx1", "a", "ref:tx2", "b"],
        &["MGET", "ref:tx1", "ref:tx2"],
        &["DEL", "ref:tx1"],
        &["EXEC"],
        &["MULTI"],
        &["GET"],
        &["EXEC"],
        &["MULTI"],
        &["WATCH", "ref:tx"],
        &["SET", "ref:tx", "y"],
        &["EXEC"],
        &["GET", "ref:tx"],
    ];
    for req in tx {
        let a = ours.cmd(req).expect("ours");
        let b = theirs.cmd(req).expect("theirs");
        assert_eq!(a, b, "{req:?}");
    }
    // DELIFEQ (ours, not in Redis 7): the safe unlock of a SET NX lock,
    // through the follower.
    assert_eq!(
        ours.cmd(&["SET", "ref:lock", "t1", "NX"]).expect("lock"),
        Resp::Simple("OK".into())
    );
    assert_eq!(
        ours.cmd(&["SET", "ref:lock", "t2", "NX"]).expect("lock"),
        Resp::Nil
    );
    assert_eq!(
        ours.cmd(&["DELIFEQ", "ref:lock", "t2"]).expect("unlock"),
        Resp::Int(0)
    );
    assert_eq!(
        ours.cmd(&["DELIFEQ", "ref:lock", "t1"]).expect("unlock"),
        Resp::Int(1)
    );
    assert_eq!(
        ours.cmd(&["EXISTS", "ref:lock"]).expect("exists"),
        Resp::Int(0)
    );
    // The one deliberate difference: raftkv has one database, as Redis
    // Cluster does, so SELECT of another is refused.
    assert_eq!(
        ours.cmd(&["SELECT", "1"]).expect("ours"),
        Resp::Error("ERR DB index is out of range".into())
    );
}
