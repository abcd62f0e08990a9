//! From RESP arguments to what the server must do with them.
//!
//! Every command a client sends is classified as one of: a write (a
//! [`KvCommand`], one log entry), a read (a [`KvQuery`], served by ReadIndex),
//! or something this node answers by itself (PING, HELLO, INFO, …).
//!
//! One table describes every command ([`table`]: arity, flags, key
//! positions, documentation); the dispatcher checks a request against it
//! first, and `COMMAND` answers from it. Then one module per command family,
//! each with a `classify` that knows its own commands' options and errors:
//! [`strings`], [`keys`], [`connection`] and [`admin`]. A new family
//! (hashes, lists, sets, sorted sets, transactions) is a new module here,
//! listed in `classify_inner`, with its commands in the table and in the
//! store (`raftkv_store`).

mod admin;

pub use self::admin::AdminCommand;
mod connection;
mod keys;
mod strings;
pub mod table;

use bytes::Bytes;

use crate::kv::{KvCommand, KvQuery};
use crate::limits::{self as size_limits, request_size};
use crate::resp::Reply;

/// Size limits on what clients may store.
#[derive(Debug, Clone, Copy)]
pub struct DataLimits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// The most one request may take (`limits::request_size`), checked
    /// before anything else, for every command.
    pub max_request_bytes: usize,
}

impl Default for DataLimits {
    fn default() -> Self {
        DataLimits {
            max_key_bytes: 64 << 10,
            max_value_bytes: 1 << 20,
            max_request_bytes: size_limits::DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// What to do with one client command.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Write(KvCommand),
    Read(KvQuery),
    /// Answered by this node without consensus.
    Local(LocalCommand),
    /// Cluster administration, run by the leader.
    Admin(AdminCommand),
    /// A reply known at once (an error, usually).
    Reply(Reply),
    /// Nothing to do (an empty command).
    Ignore,
}

/// Commands this node answers itself (not forwarded, not replicated).
#[derive(Debug, Clone, PartialEq)]
pub enum LocalCommand {
    Ping(Option<Bytes>),
    Echo(Bytes),
    /// `HELLO [protover] [AUTH user pass] ...`: `None` keeps the current
    /// protocol.
    Hello(Option<u8>, Option<(Bytes, Bytes)>),
    /// `AUTH [user] password`.
    Auth(Option<Bytes>, Bytes),
    Info(Option<String>),
    RaftInfo,
    RaftSnapshot,
    Quit,
    ConfigGet(Vec<Bytes>),
    /// `MULTI`, `EXEC`, `DISCARD`: the connection queues commands and
    /// sends them as one log entry (`KvCommand::Exec`).
    Multi,
    Exec,
    Discard,
    Ok,
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

/// `Err(wrong number of arguments)` unless `ok`.
fn arity(name: &str, ok: bool) -> Result<(), Action> {
    if ok {
        Ok(())
    } else {
        Err(wrong_arity(name))
    }
}

fn wrong_arity(name: &str) -> Action {
    Action::Reply(Reply::error(format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    )))
}

fn syntax_error() -> Action {
    Action::Reply(Reply::error("ERR syntax error"))
}

/// Redis' wording for a command it does not know.
fn unknown_command(args: &[Bytes]) -> Action {
    let name = String::from_utf8_lossy(&args[0]);
    let rest: String = args[1..]
        .iter()
        .take(8)
        .map(|a| format!("'{}' ", String::from_utf8_lossy(a)))
        .collect();
    Action::Reply(Reply::error(format!(
        "ERR unknown command '{name}', with args beginning with: {rest}"
    )))
}

impl DataLimits {
    fn check_key(&self, key: &[u8]) -> Result<(), Action> {
        if key.len() > self.max_key_bytes {
            return Err(Action::Reply(Reply::error(format!(
                "ERR key too large ({} bytes, limit {})",
                key.len(),
                self.max_key_bytes
            ))));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Action> {
        if value.len() > self.max_value_bytes {
            return Err(Action::Reply(Reply::error(format!(
                "ERR value too large ({} bytes, limit {})",
                value.len(),
                self.max_value_bytes
            ))));
        }
        Ok(())
    }

    fn keys(&self, args: &[Bytes]) -> Result<Vec<Vec<u8>>, Action> {
        args.iter()
            .map(|k| self.check_key(k).map(|_| k.to_vec()))
            .collect()
    }
}

/// Classifies one command. `args[0]` is the command name.
pub fn classify(args: &[Bytes], limits: &DataLimits) -> Action {
    classify_sized(args, request_size(args), limits)
}

/// [`classify`] for a caller that already has the request's size
/// (`limits::request_size(args)`), as the connection does for batching.
pub fn classify_sized(args: &[Bytes], size: usize, limits: &DataLimits) -> Action {
    if args.is_empty() {
        return Action::Ignore;
    }
    // Before anything else: a request over the limit would make a log entry
    // or a forward larger than one peer frame can carry (see `limits`).
    if size > limits.max_request_bytes {
        return Action::Reply(Reply::error(format!(
            "ERR request too large ({size} bytes, limit {}; see --max-request-bytes)",
            limits.max_request_bytes
        )));
    }
    match classify_inner(args, limits) {
        Ok(a) => a,
        Err(a) => a,
    }
}

/// Hands the command to its family. Each family's `classify` answers
/// `Ok(None)` for a name that is not its own.
fn classify_inner(args: &[Bytes], limits: &DataLimits) -> Result<Action, Action> {
    let name = upper(&args[0]);
    // The table first: a command it does not list is unknown, and one with
    // the wrong number of arguments never reaches its family.
    let Some(spec) = table::lookup(&name) else {
        return Ok(unknown_command(args));
    };
    if !spec.arity_ok(args.len()) {
        return Err(wrong_arity(spec.name));
    }
    for family in [
        strings::classify,
        keys::classify,
        connection::classify,
        admin::classify,
    ] {
        if let Some(action) = family(&name, args, limits)? {
            return Ok(action);
        }
    }
    Ok(unknown_command(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ')
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    fn classify_str(s: &str) -> Action {
        classify(&args(s), &DataLimits::default())
    }

    fn error_text(a: Action) -> String {
        match a {
            Action::Reply(Reply::Error(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn writes_and_reads_are_classified_case_insensitively() {
        assert!(matches!(
            classify_str("set k v"),
            Action::Write(KvCommand::Set { .. })
        ));
        assert!(matches!(
            classify_str("GeT k"),
            Action::Read(KvQuery::Get { .. })
        ));
        assert!(matches!(
            classify_str("SET k v ifeq old"),
            Action::Write(KvCommand::SetIfEq { .. })
        ));
        assert!(matches!(
            classify_str("MSET a 1 b 2"),
            Action::Write(KvCommand::MSet { .. })
        ));
        assert!(matches!(
            classify_str("DBSIZE"),
            Action::Read(KvQuery::DbSize)
        ));
    }

    #[test]
    fn wrong_arity_uses_redis_wording() {
        assert_eq!(
            error_text(classify_str("GET")),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            error_text(classify_str("MSET a 1 b")),
            "ERR wrong number of arguments for 'mset' command"
        );
    }

    #[test]
    fn unknown_commands_and_bad_options_are_refused() {
        assert!(error_text(classify_str("FLY me")).starts_with("ERR unknown command 'FLY'"));
        assert_eq!(
            error_text(classify_str("SET k v NX XX")),
            "ERR syntax error"
        );
        assert_eq!(
            error_text(classify_str("SET k v NX BOGUS")),
            "ERR syntax error"
        );
        assert!(matches!(
            classify_str("SET k v nx get NX"),
            Action::Write(KvCommand::SetWith { get: true, .. })
        ));
        assert_eq!(
            error_text(classify_str("INCRBY k x")),
            crate::kv::NOT_AN_INTEGER
        );
        assert_eq!(
            error_text(classify_str("SELECT 1")),
            "ERR DB index is out of range"
        );
        assert!(error_text(classify_str("HELLO 4")).starts_with("NOPROTO"));
    }

    #[test]
    fn oversized_keys_and_values_are_refused() {
        let limits = DataLimits {
            max_key_bytes: 4,
            max_value_bytes: 8,
            ..DataLimits::default()
        };
        let e = error_text(classify(&args("SET longkey v"), &limits));
        assert!(e.contains("too large"), "{e}");
        let e = error_text(classify(&args("SET k 123456789"), &limits));
        assert!(e.starts_with("ERR value too large"), "{e}");
        assert!(matches!(
            classify(&args("SET k 12345678"), &limits),
            Action::Write(_)
        ));
    }

    #[test]
    fn a_request_over_the_size_limit_is_refused_whatever_the_command() {
        // Each value is under the value limit; the request as a whole is
        // not (issue 13: a 90 MB MSET of 1 MB values cost the leader its term).
        let limits = DataLimits {
            max_request_bytes: 150,
            ..DataLimits::default()
        };
        let v = "x".repeat(40);
        let mset = args(&format!("MSET a {v} b {v}"));
        assert_eq!(request_size(&mset), 4 + 1 + 40 + 1 + 40 + 5 * 16);
        let e = error_text(classify(&mset, &limits));
        assert!(
            e.starts_with("ERR request too large (166 bytes, limit 150"),
            "{e}"
        );
        // Reads and unknown commands are refused the same way: they would be
        // forwarded too.
        let mget = args(&format!("MGET {v} {v} {v}"));
        assert!(error_text(classify(&mget, &limits)).starts_with("ERR request too large"));
        let unknown = args(&format!("NOSUCH {v} {v} {v}"));
        assert!(error_text(classify(&unknown, &limits)).starts_with("ERR request too large"));
        // At the limit exactly, it is accepted.
        let limits = DataLimits {
            max_request_bytes: 166,
            ..limits
        };
        assert!(matches!(classify(&mset, &limits), Action::Write(_)));
    }

    #[test]
    fn every_command_encodes_within_its_request_size() {
        // The frame bounds in `limits` rest on this: a command's log entry,
        // or its place in a forward, is never larger than the request.
        // Lengths around the varint steps (127/128, 16383/16384) and the
        // largest integers.
        let sizes = [0usize, 1, 127, 128, 16_383, 16_384];
        let word = |n: usize| Bytes::from(vec![b'k'; n]);
        let mut requests: Vec<Vec<Bytes>> = Vec::new();
        for &n in &sizes {
            let (k, v) = (word(n.max(1)), word(n));
            requests.push(vec!["GET".into(), k.clone()]);
            requests.push(vec!["SET".into(), k.clone(), v.clone()]);
            requests.push(vec![
                "SET".into(),
                k.clone(),
                v.clone(),
                "IFEQ".into(),
                v.clone(),
            ]);
            requests.push(vec!["INCR".into(), k.clone()]);
            for (name, extra) in [
                ("APPEND", vec![v.clone()]),
                ("SETRANGE", vec!["4294967296".into(), v.clone()]),
                ("GETSET", vec![v.clone()]),
                ("SETNX", vec![v.clone()]),
                ("DELIFEQ", vec![v.clone()]),
                ("GETRANGE", vec!["-9223372036854775808".into(), "-1".into()]),
            ] {
                let mut req = vec![Bytes::from(name), k.clone()];
                req.extend(extra);
                if name == "SETRANGE" && n > 0 {
                    // Over the value limit for any non-empty value: refused.
                    continue;
                }
                requests.push(req);
            }
            for name in ["GETDEL", "STRLEN"] {
                requests.push(vec![name.into(), k.clone()]);
            }
            requests.push(vec![
                "SET".into(),
                k.clone(),
                v.clone(),
                "NX".into(),
                "GET".into(),
            ]);
            requests.push(vec![
                "INCRBY".into(),
                k.clone(),
                "-9223372036854775808".into(),
            ]);
            requests.push(vec![
                "DECRBY".into(),
                k.clone(),
                "9223372036854775807".into(),
            ]);
            let many: Vec<Bytes> = std::iter::once(Bytes::from("MSET"))
                .chain((0..200).flat_map(|_| [k.clone(), v.clone()]))
                .collect();
            requests.push(many);
            let many: Vec<Bytes> = std::iter::once(Bytes::from("MSETNX"))
                .chain((0..200).flat_map(|_| [k.clone(), v.clone()]))
                .collect();
            requests.push(many);
            for name in ["MGET", "EXISTS", "DEL"] {
                let keys = std::iter::once(Bytes::from(name)).chain((0..200).map(|_| k.clone()));
                requests.push(keys.collect());
            }
        }
        requests.push(vec!["DBSIZE".into()]);
        let mut writes = Vec::new();
        let mut total = 0;
        for req in &requests {
            let size = request_size(req);
            let encoded = match classify(req, &DataLimits::default()) {
                Action::Write(c) => {
                    total += size;
                    // As the leader proposes it: stamped (`KvCommand::At`),
                    // with the largest stamp there could be.
                    let len = crate::kv::encode_stamped(&c, u64::MAX).len();
                    writes.push(c);
                    len
                }
                Action::Read(q) => crate::kv::encode_query(&q).len(),
                other => panic!("{req:?}: {other:?}"),
            };
            assert!(encoded <= size, "{req:?}: {encoded} > {size}");
        }
        // A forward of many commands: the sum, plus a few bytes of its own.
        let forward = crate::forward::encode(&crate::forward::Batch::Writes(writes));
        assert!(forward.len() <= total + crate::limits::ARG_OVERHEAD);
    }

    #[test]
    fn connection_setup_commands_clients_send_are_accepted() {
        assert_eq!(
            classify_str("CLIENT SETINFO lib-name redis-py"),
            Action::Local(LocalCommand::Ok)
        );
        assert_eq!(classify_str("SELECT 0"), Action::Local(LocalCommand::Ok));
        assert_eq!(
            classify_str("HELLO 3"),
            Action::Local(LocalCommand::Hello(Some(3), None))
        );
        assert!(matches!(
            classify_str("CONFIG GET save"),
            Action::Local(LocalCommand::ConfigGet(_))
        ));
        assert!(matches!(
            classify_str("COMMAND DOCS"),
            Action::Reply(Reply::Map(_))
        ));
    }

    #[test]
    fn every_command_in_the_table_reaches_its_family() {
        // The table and the families must agree: a command the table lists
        // but no family knows would be "unknown" after passing the arity
        // check, and one a family knows but the table does not is unknown
        // to clients.
        for spec in table::COMMANDS {
            let n = spec.arity.unsigned_abs() as usize;
            let mut req = vec![Bytes::from(spec.name.to_ascii_uppercase())];
            req.extend((1..n).map(|_| Bytes::from_static(b"1")));
            if let Action::Reply(Reply::Error(e)) = classify(&req, &DataLimits::default()) {
                assert!(!e.contains("unknown command"), "{}: {e}", spec.name);
                assert!(!e.contains("wrong number"), "{}: {e}", spec.name);
            }
        }
        let names: std::collections::HashSet<&str> =
            table::COMMANDS.iter().map(|c| c.name).collect();
        assert_eq!(
            names.len(),
            table::COMMANDS.len(),
            "a name twice in the table"
        );
        for name in ["GET", "SET", "MSET", "DEL", "PING", "RAFT.NODE", "COMMAND"] {
            assert!(table::lookup(name).is_some(), "{name}");
        }
    }

    #[test]
    fn the_table_checks_arity_before_the_family() {
        assert_eq!(
            error_text(classify_str("DBSIZE extra")),
            "ERR wrong number of arguments for 'dbsize' command"
        );
        assert_eq!(
            error_text(classify_str("RAFT.NODE ADD")),
            "ERR wrong number of arguments for 'raft.node' command"
        );
    }

    #[test]
    fn command_count_info_and_docs_come_from_the_table() {
        assert_eq!(
            classify_str("COMMAND COUNT"),
            Action::Reply(Reply::Integer(table::COMMANDS.len() as i64))
        );
        let Action::Reply(Reply::Array(infos)) = classify_str("COMMAND INFO get nosuch") else {
            panic!("COMMAND INFO is an array")
        };
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[1], Reply::NilArray);
        // As redis-server 7.0 answers: name, arity, flags, first key, last
        // key, step, ACL categories, tips, key specs, subcommands.
        let Reply::Array(get) = &infos[0] else {
            panic!("an entry is an array")
        };
        assert_eq!(get.len(), 10);
        assert_eq!(get[0], Reply::Bulk(Bytes::from_static(b"get")));
        assert_eq!(get[1], Reply::Integer(2));
        assert_eq!(
            get[2],
            Reply::Set(vec![
                Reply::Simple("readonly".into()),
                Reply::Simple("fast".into())
            ])
        );
        assert_eq!(
            &get[3..6],
            &[Reply::Integer(1), Reply::Integer(1), Reply::Integer(1)]
        );
        assert!(error_text(classify_str("COMMAND COUNT x"))
            .starts_with("ERR wrong number of arguments for 'command|count'"));
        assert_eq!(
            error_text(classify_str("COMMAND FOO")),
            "ERR unknown subcommand 'FOO'. Try COMMAND HELP."
        );
        assert_eq!(
            classify_str("COMMAND GETKEYS MSET a 1 b 2"),
            Action::Reply(Reply::Array(vec![
                Reply::Bulk(Bytes::from_static(b"a")),
                Reply::Bulk(Bytes::from_static(b"b"))
            ]))
        );
        assert_eq!(
            error_text(classify_str("COMMAND GETKEYS get a b")),
            "ERR Invalid number of arguments specified for command"
        );
        assert_eq!(
            error_text(classify_str("COMMAND GETKEYS ping x")),
            "ERR The command has no key arguments"
        );
        let Action::Reply(Reply::Map(docs)) = classify_str("COMMAND DOCS get nosuch") else {
            panic!("COMMAND DOCS is a map")
        };
        assert_eq!(docs.len(), 1, "unknown names are left out");
    }
}
