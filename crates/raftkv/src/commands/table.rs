//! The command table: one entry per command this server knows, with its
//! arity, flags, key positions and documentation, as Redis 7 describes its
//! own (`COMMAND INFO`, `COMMAND DOCS`). The dispatcher checks every
//! request's arity against it before a family's `classify` sees it, and
//! `COMMAND`, `COMMAND COUNT`, `COMMAND LIST`, `COMMAND INFO` and
//! `COMMAND DOCS` are answered from it, so clients that read the table
//! (redis-cli's hints, cluster-aware clients finding keys) see exactly what
//! the server does. The Redis commands' entries were copied from
//! `redis-server` 7.0 (`redis-cli --json COMMAND INFO name`), so that they
//! read the same; the `raft.*` ones are ours.
//!
//! A command added to a family must be added here too (the test
//! `every_command_in_the_table_reaches_its_family` checks the two agree).

use bytes::Bytes;

use crate::resp::Reply;

/// One command, as `COMMAND INFO` and `COMMAND DOCS` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lower case, as Redis lists it.
    pub name: &'static str,
    /// Redis' convention: `n > 0` exactly `n` arguments (the name
    /// included), `n < 0` at least `-n`.
    pub arity: i32,
    pub flags: &'static [&'static str],
    /// First key, last key (negative: from the end), step; `(0, 0, 0)` for
    /// none.
    pub keys: (i32, i32, i32),
    /// Redis 7's key specifications (all of the "index, then range" kind
    /// here): where each group of keys is and how it is used.
    pub key_specs: &'static [KeySpec],
    pub acl: &'static [&'static str],
    pub group: &'static str,
    pub summary: &'static str,
    pub since: &'static str,
    pub complexity: &'static str,
}

/// One key specification: the keys start at argument `index`, and go to
/// `lastkey` (relative to `index`; negative: from the end) every `keystep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub index: i32,
    pub lastkey: i32,
    pub keystep: i32,
    /// `RO`, `RW`, `OW`, `RM`, `access`, `update`, `insert`, `delete`, ...
    pub flags: &'static [&'static str],
    pub notes: Option<&'static str>,
}

/// Every command, in no particular order (Redis' is a hash order too).
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "get",
        arity: 2,
        flags: &["readonly", "fast"],
        keys: (1, 1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["RO", "access"],
                notes: None,
            },
        ],
        acl: &["@read", "@string", "@fast"],
        group: "string",
        summary: "Get the value of a key",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "mget",
        arity: -2,
        flags: &["readonly", "fast"],
        keys: (1, -1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: -1,
                keystep: 1,
                flags: &["RO", "access"],
                notes: None,
            },
        ],
        acl: &["@read", "@string", "@fast"],
        group: "string",
        summary: "Get the values of all the given keys",
        since: "1.0.0",
        complexity: "O(N) where N is the number of keys to retrieve.",
    },
    CommandSpec {
        name: "set",
        arity: -3,
        flags: &["write", "denyoom"],
        keys: (1, 1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["RW", "access", "update", "variable_flags"],
                notes: Some("RW and ACCESS due to the optional `GET` argument"),
            },
        ],
        acl: &["@write", "@string", "@slow"],
        group: "string",
        summary: "Set the string value of a key",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "mset",
        arity: -3,
        flags: &["write", "denyoom"],
        keys: (1, -1, 2),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: -1,
                keystep: 2,
                flags: &["OW", "update"],
                notes: None,
            },
        ],
        acl: &["@write", "@string", "@slow"],
        group: "string",
        summary: "Set multiple keys to multiple values",
        since: "1.0.1",
        complexity: "O(N) where N is the number of keys to set.",
    },
    CommandSpec {
        name: "incr",
        arity: 2,
        flags: &["write", "denyoom", "fast"],
        keys: (1, 1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["RW", "access", "update"],
                notes: None,
            },
        ],
        acl: &["@write", "@string", "@fast"],
        group: "string",
        summary: "Increment the integer value of a key by one",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "decr",
        arity: 2,
        flags: &["write", "denyoom", "fast"],
        keys: (1, 1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["RW", "access", "update"],
                notes: None,
            },
        ],
        acl: &["@write", "@string", "@fast"],
        group: "string",
        summary: "Decrement the integer value of a key by one",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "incrby",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        keys: (1, 1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["RW", "access", "update"],
                notes: None,
            },
        ],
        acl: &["@write", "@string", "@fast"],
        group: "string",
        summary: "Increment the integer value of a key by the given amount",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "decrby",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        keys: (1, 1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["RW", "access", "update"],
                notes: None,
            },
        ],
        acl: &["@write", "@string", "@fast"],
        group: "string",
        summary: "Decrement the integer value of a key by the given number",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "exists",
        arity: -2,
        flags: &["readonly", "fast"],
        keys: (1, -1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: -1,
                keystep: 1,
                flags: &["RO"],
                notes: None,
            },
        ],
        acl: &["@keyspace", "@read", "@fast"],
        group: "generic",
        summary: "Determine if a key exists",
        since: "1.0.0",
        complexity: "O(N) where N is the number of keys to check.",
    },
    CommandSpec {
        name: "dbsize",
        arity: 1,
        flags: &["readonly", "fast"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@keyspace", "@read", "@fast"],
        group: "server",
        summary: "Return the number of keys in the selected database",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "del",
        arity: -2,
        flags: &["write"],
        keys: (1, -1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: -1,
                keystep: 1,
                flags: &["RM", "delete"],
                notes: None,
            },
        ],
        acl: &["@keyspace", "@write", "@slow"],
        group: "generic",
        summary: "Delete a key",
        since: "1.0.0",
        complexity: "O(N) where N is the number of keys that will be removed. When a key to remove holds a value other than a string, the individual complexity for this key is O(M) where M is the number of elements in the list, set, sorted set or hash. Removing a single key that holds a string value is O(1).",
    },
    CommandSpec {
        name: "ping",
        arity: -1,
        flags: &["fast"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@fast", "@connection"],
        group: "connection",
        summary: "Ping the server",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "echo",
        arity: 2,
        flags: &["loading", "stale", "fast"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@fast", "@connection"],
        group: "connection",
        summary: "Echo the given string",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "hello",
        arity: -1,
        flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@fast", "@connection"],
        group: "connection",
        summary: "Handshake with Redis",
        since: "6.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "quit",
        arity: -1,
        flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@fast", "@connection"],
        group: "connection",
        summary: "Close the connection",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "select",
        arity: 2,
        flags: &["loading", "stale", "fast"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@fast", "@connection"],
        group: "connection",
        summary: "Change the selected database for the current connection",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "client",
        arity: -2,
        flags: &[],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@slow"],
        group: "connection",
        summary: "A container for client connection commands",
        since: "2.4.0",
        complexity: "Depends on subcommand.",
    },
    CommandSpec {
        name: "info",
        arity: -1,
        flags: &["loading", "stale"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@slow", "@dangerous"],
        group: "server",
        summary: "Get information and statistics about the server",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "command",
        arity: -1,
        flags: &["loading", "stale"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@slow", "@connection"],
        group: "server",
        summary: "Get array of Redis command details",
        since: "2.8.13",
        complexity: "O(N) where N is the total number of Redis commands",
    },
    CommandSpec {
        name: "config",
        arity: -2,
        flags: &[],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@slow"],
        group: "server",
        summary: "A container for server configuration commands",
        since: "2.0.0",
        complexity: "Depends on subcommand.",
    },
    CommandSpec {
        name: "setnx",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        keys: (1, 1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["OW", "insert"],
                notes: None,
            },
        ],
        acl: &["@write", "@string", "@fast"],
        group: "string",
        summary: "Set the value of a key, only if the key does not exist",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "getset",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        keys: (1, 1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["RW", "access", "update"],
                notes: None,
            },
        ],
        acl: &["@write", "@string", "@fast"],
        group: "string",
        summary: "Set the string value of a key and return its old value",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "getdel",
        arity: 2,
        flags: &["write", "fast"],
        keys: (1, 1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["RW", "access", "delete"],
                notes: None,
            },
        ],
        acl: &["@write", "@string", "@fast"],
        group: "string",
        summary: "Get the value of a key and delete the key",
        since: "6.2.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "append",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        keys: (1, 1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["RW", "insert"],
                notes: None,
            },
        ],
        acl: &["@write", "@string", "@fast"],
        group: "string",
        summary: "Append a value to a key",
        since: "2.0.0",
        complexity: "O(1). The amortized time complexity is O(1) assuming the appended value is small and the already present value is of any size, since the dynamic string library used by Redis will double the free space available on every reallocation.",
    },
    CommandSpec {
        name: "setrange",
        arity: 4,
        flags: &["write", "denyoom"],
        keys: (1, 1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["RW", "update"],
                notes: None,
            },
        ],
        acl: &["@write", "@string", "@slow"],
        group: "string",
        summary: "Overwrite part of a string at key starting at the specified offset",
        since: "2.2.0",
        complexity: "O(1), not counting the time taken to copy the new string in place. Usually, this string is very small so the amortized complexity is O(1). Otherwise, complexity is O(M) with M being the length of the value argument.",
    },
    CommandSpec {
        name: "msetnx",
        arity: -3,
        flags: &["write", "denyoom"],
        keys: (1, -1, 2),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: -1,
                keystep: 2,
                flags: &["OW", "insert"],
                notes: None,
            },
        ],
        acl: &["@write", "@string", "@slow"],
        group: "string",
        summary: "Set multiple keys to multiple values, only if none of the keys exist",
        since: "1.0.1",
        complexity: "O(N) where N is the number of keys to set.",
    },
    CommandSpec {
        name: "getrange",
        arity: 4,
        flags: &["readonly"],
        keys: (1, 1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["RO", "access"],
                notes: None,
            },
        ],
        acl: &["@read", "@string", "@slow"],
        group: "string",
        summary: "Get a substring of the string stored at a key",
        since: "2.4.0",
        complexity: "O(N) where N is the length of the returned string. The complexity is ultimately determined by the returned length, but because creating a substring from an existing string is very cheap, it can be considered O(1) for small strings.",
    },
    CommandSpec {
        name: "strlen",
        arity: 2,
        flags: &["readonly", "fast"],
        keys: (1, 1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["RO"],
                notes: None,
            },
        ],
        acl: &["@read", "@string", "@fast"],
        group: "string",
        summary: "Get the length of the value stored in a key",
        since: "2.2.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "type",
        arity: 2,
        flags: &["readonly", "fast"],
        keys: (1, 1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["RO"],
                notes: None,
            },
        ],
        acl: &["@keyspace", "@read", "@fast"],
        group: "generic",
        summary: "Determine the type stored at key",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "rename",
        arity: 3,
        flags: &["write"],
        keys: (1, 2, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["RW", "access", "delete"],
                notes: None,
            },
            KeySpec {
                index: 2,
                lastkey: 0,
                keystep: 1,
                flags: &["OW", "update"],
                notes: None,
            },
        ],
        acl: &["@keyspace", "@write", "@slow"],
        group: "generic",
        summary: "Rename a key",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "renamenx",
        arity: 3,
        flags: &["write", "fast"],
        keys: (1, 2, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: 0,
                keystep: 1,
                flags: &["RW", "access", "delete"],
                notes: None,
            },
            KeySpec {
                index: 2,
                lastkey: 0,
                keystep: 1,
                flags: &["OW", "insert"],
                notes: None,
            },
        ],
        acl: &["@keyspace", "@write", "@fast"],
        group: "generic",
        summary: "Rename a key, only if the new key does not exist",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "unlink",
        arity: -2,
        flags: &["write", "fast"],
        keys: (1, -1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: -1,
                keystep: 1,
                flags: &["RM", "delete"],
                notes: None,
            },
        ],
        acl: &["@keyspace", "@write", "@fast"],
        group: "generic",
        summary: "Delete a key asynchronously in another thread. Otherwise it is just as DEL, but non blocking.",
        since: "4.0.0",
        complexity: "O(1) for each key removed regardless of its size. Then the command does O(N) work in a different thread in order to reclaim memory, where N is the number of allocations the deleted objects where composed of.",
    },
    CommandSpec {
        name: "touch",
        arity: -2,
        flags: &["readonly", "fast"],
        keys: (1, -1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: -1,
                keystep: 1,
                flags: &["RO"],
                notes: None,
            },
        ],
        acl: &["@keyspace", "@read", "@fast"],
        group: "generic",
        summary: "Alters the last access time of a key(s). Returns the number of existing keys specified.",
        since: "3.2.1",
        complexity: "O(N) where N is the number of keys that will be touched.",
    },
    CommandSpec {
        name: "flushdb",
        arity: -1,
        flags: &["write"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@keyspace", "@write", "@slow", "@dangerous"],
        group: "server",
        summary: "Remove all keys from the current database",
        since: "1.0.0",
        complexity: "O(N) where N is the number of keys in the selected database",
    },
    CommandSpec {
        name: "flushall",
        arity: -1,
        flags: &["write"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@keyspace", "@write", "@slow", "@dangerous"],
        group: "server",
        summary: "Remove all keys from all databases",
        since: "1.0.0",
        complexity: "O(N) where N is the total number of keys in all databases",
    },
    CommandSpec {
        name: "keys",
        arity: 2,
        flags: &["readonly"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@keyspace", "@read", "@slow", "@dangerous"],
        group: "generic",
        summary: "Find all keys matching the given pattern",
        since: "1.0.0",
        complexity: "O(N) with N being the number of keys in the database, under the assumption that the key names in the database and the given pattern have limited length.",
    },
    CommandSpec {
        name: "randomkey",
        arity: 1,
        flags: &["readonly"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@keyspace", "@read", "@slow"],
        group: "generic",
        summary: "Return a random key from the keyspace",
        since: "1.0.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "multi",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@fast", "@transaction"],
        group: "transactions",
        summary: "Mark the start of a transaction block",
        since: "1.2.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "exec",
        arity: 1,
        flags: &["noscript", "loading", "stale", "skip_slowlog"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@slow", "@transaction"],
        group: "transactions",
        summary: "Execute all commands issued after MULTI",
        since: "1.2.0",
        complexity: "Depends on commands in the transaction",
    },
    CommandSpec {
        name: "discard",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@fast", "@transaction"],
        group: "transactions",
        summary: "Discard all commands issued after MULTI",
        since: "2.0.0",
        complexity: "O(N), when N is the number of queued commands",
    },
    CommandSpec {
        name: "watch",
        arity: -2,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        keys: (1, -1, 1),
        key_specs: &[
            KeySpec {
                index: 1,
                lastkey: -1,
                keystep: 1,
                flags: &["RO"],
                notes: None,
            },
        ],
        acl: &["@fast", "@transaction"],
        group: "transactions",
        summary: "Watch the given keys to determine execution of the MULTI/EXEC block",
        since: "2.2.0",
        complexity: "O(1) for every key.",
    },
    CommandSpec {
        name: "unwatch",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@fast", "@transaction"],
        group: "transactions",
        summary: "Forget about all watched keys",
        since: "2.2.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "auth",
        arity: -2,
        flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@fast", "@connection"],
        group: "connection",
        summary: "Authenticate to the server",
        since: "1.0.0",
        complexity: "O(N) where N is the number of passwords defined for the user",
    },
    CommandSpec {
        name: "delifeq",
        arity: 3,
        flags: &["write", "fast"],
        keys: (1, 1, 1),
        key_specs: &[KeySpec {
            index: 1,
            lastkey: 0,
            keystep: 1,
            flags: &["RW", "access", "delete"],
            notes: None,
        }],
        acl: &["@write", "@string", "@fast"],
        group: "string",
        summary: "Delete a key only if its value equals the given one (the safe unlock of a SET NX lock)",
        since: "0.1.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "raft.info",
        arity: 1,
        flags: &["loading", "stale"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@slow"],
        group: "raft",
        summary: "This node's Raft state: role, term, leader, commit and applied index, membership",
        since: "0.1.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "raft.snapshot",
        arity: 1,
        flags: &["admin"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@admin", "@slow", "@dangerous"],
        group: "raft",
        summary: "Take a snapshot of this node's state machine now and compact its log",
        since: "0.1.0",
        complexity: "O(N) where N is the number of keys",
    },
    CommandSpec {
        name: "raft.node",
        arity: -3,
        flags: &["admin"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@admin", "@slow", "@dangerous"],
        group: "raft",
        summary: "Change the cluster's membership: ADD id addr [LEARNER], PROMOTE id, REMOVE id",
        since: "0.1.0",
        complexity: "O(1)",
    },
    CommandSpec {
        name: "raft.transfer",
        arity: -1,
        flags: &["admin"],
        keys: (0, 0, 0),
        key_specs: &[],
        acl: &["@admin", "@slow", "@dangerous"],
        group: "raft",
        summary: "Hand leadership to a voter (the most up to date one if no id is given)",
        since: "0.1.0",
        complexity: "O(1)",
    },
];

/// The entries by upper-case name: every request looks its command up here
/// first, so a hash lookup, not a scan of the table.
static BY_NAME: std::sync::LazyLock<std::collections::HashMap<String, &'static CommandSpec>> =
    std::sync::LazyLock::new(|| {
        COMMANDS
            .iter()
            .map(|c| (c.name.to_ascii_uppercase(), c))
            .collect()
    });

/// The entry of `name` (any case).
pub fn lookup(name: &str) -> Option<&'static CommandSpec> {
    match BY_NAME.get(name) {
        Some(c) => Some(c),
        None => BY_NAME.get(&name.to_ascii_uppercase()).copied(),
    }
}

impl KeySpec {
    fn info(&self) -> Reply {
        let mut spec = Vec::new();
        if let Some(notes) = self.notes {
            spec.push((bulk("notes"), bulk(notes)));
        }
        spec.extend([
            (bulk("flags"), set(self.flags)),
            (
                bulk("begin_search"),
                Reply::Map(vec![
                    (bulk("type"), bulk("index")),
                    (
                        bulk("spec"),
                        Reply::Map(vec![(bulk("index"), Reply::Integer(self.index.into()))]),
                    ),
                ]),
            ),
            (
                bulk("find_keys"),
                Reply::Map(vec![
                    (bulk("type"), bulk("range")),
                    (
                        bulk("spec"),
                        Reply::Map(vec![
                            (bulk("lastkey"), Reply::Integer(self.lastkey.into())),
                            (bulk("keystep"), Reply::Integer(self.keystep.into())),
                            (bulk("limit"), Reply::Integer(0)),
                        ]),
                    ),
                ]),
            ),
        ]);
        Reply::Map(spec)
    }
}

impl CommandSpec {
    /// Whether `argc` arguments (the name included) fit the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        let arity = i64::from(self.arity);
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }

    /// `COMMAND INFO`'s reply for this command: name, arity, flags, first
    /// key, last key, step, ACL categories, tips, key specifications,
    /// subcommands.
    pub fn info(&self) -> Reply {
        let (first, last, step) = self.keys;
        let key_specs = self.key_specs.iter().map(KeySpec::info).collect();
        Reply::Array(vec![
            bulk(self.name),
            Reply::Integer(self.arity.into()),
            set(self.flags),
            Reply::Integer(first.into()),
            Reply::Integer(last.into()),
            Reply::Integer(step.into()),
            set(self.acl),
            Reply::Array(Vec::new()),
            Reply::Array(key_specs),
            Reply::Array(Vec::new()),
        ])
    }

    /// `COMMAND DOCS`'s map for this command.
    pub fn docs(&self) -> Reply {
        let mut fields = vec![
            (bulk("summary"), bulk(self.summary)),
            (bulk("since"), bulk(self.since)),
            (bulk("group"), bulk(self.group)),
            (bulk("complexity"), bulk(self.complexity)),
        ];
        if self.keys.0 > 0 {
            fields.push((
                bulk("arguments"),
                Reply::Array(vec![Reply::Map(vec![
                    (bulk("name"), bulk("key")),
                    (bulk("type"), bulk("key")),
                    (bulk("key_spec_index"), Reply::Integer(0)),
                ])]),
            ));
        }
        Reply::Map(fields)
    }
}

/// `COMMAND GETKEYS command args...`: the keys, by the table's positions.
fn getkeys(full: &[Bytes]) -> Reply {
    let name = String::from_utf8_lossy(&full[0]);
    let Some(spec) = lookup(&name) else {
        return Reply::error("ERR Invalid command specified");
    };
    if !spec.arity_ok(full.len()) {
        return Reply::error("ERR Invalid number of arguments specified for command");
    }
    let keys = spec.key_positions(full.len());
    if keys.is_empty() {
        return Reply::error("ERR The command has no key arguments");
    }
    Reply::Array(
        keys.into_iter()
            .map(|i| Reply::Bulk(full[i].clone()))
            .collect(),
    )
}

impl CommandSpec {
    /// The positions of the keys in a request of `argc` arguments (the name
    /// at 0), from first key, last key and step.
    pub fn key_positions(&self, argc: usize) -> Vec<usize> {
        let (first, last, step) = self.keys;
        if first <= 0 || step <= 0 {
            return Vec::new();
        }
        let argc = argc as i64;
        let last = if last < 0 {
            argc + i64::from(last)
        } else {
            i64::from(last)
        };
        let last = last.min(argc - 1);
        (i64::from(first)..=last)
            .step_by(step as usize)
            .map(|i| i as usize)
            .collect()
    }
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn set(items: &[&str]) -> Reply {
    Reply::Set(
        items
            .iter()
            .map(|s| Reply::Simple((*s).to_string()))
            .collect(),
    )
}

/// `COMMAND [subcommand [args]]`. `args[0]` is `COMMAND`.
pub fn command(args: &[Bytes]) -> Reply {
    let Some(sub) = args.get(1) else {
        return Reply::Array(COMMANDS.iter().map(CommandSpec::info).collect());
    };
    let sub = String::from_utf8_lossy(sub).to_ascii_uppercase();
    let names = || {
        args[2..]
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
    };
    match sub.as_str() {
        "COUNT" if args.len() == 2 => Reply::Integer(COMMANDS.len() as i64),
        "LIST" if args.len() == 2 => Reply::Array(COMMANDS.iter().map(|c| bulk(c.name)).collect()),
        "INFO" if args.len() == 2 => Reply::Array(COMMANDS.iter().map(CommandSpec::info).collect()),
        "INFO" => Reply::Array(
            names()
                .map(|n| lookup(&n).map_or(Reply::NilArray, CommandSpec::info))
                .collect(),
        ),
        "DOCS" if args.len() == 2 => {
            Reply::Map(COMMANDS.iter().map(|c| (bulk(c.name), c.docs())).collect())
        }
        // Unknown names are left out, as Redis does.
        "DOCS" => Reply::Map(
            names()
                .filter_map(|n| lookup(&n))
                .map(|c| (bulk(c.name), c.docs()))
                .collect(),
        ),
        "GETKEYS" if args.len() >= 3 => getkeys(&args[2..]),
        "COUNT" | "LIST" | "GETKEYS" => Reply::error(format!(
            "ERR wrong number of arguments for 'command|{}' command",
            sub.to_ascii_lowercase()
        )),
        "HELP" => Reply::Array(
            [
                "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "(no subcommand)",
                "    Return details about all commands.",
                "COUNT",
                "    Return the total number of commands in this server.",
                "LIST",
                "    Return a list of all commands in this server.",
                "INFO [<command-name> ...]",
                "    Return details about multiple commands.",
                "    If no command names are given, documentation details for all",
                "    commands are returned.",
                "DOCS [<command-name> ...]",
                "    Return documentation details about multiple commands.",
                "    If no command names are given, documentation details for all",
                "    commands are returned.",
                "GETKEYS <full-command>",
                "    Return the keys from a full command.",
                "HELP",
                "    Prints this help.",
            ]
            .iter()
            .map(|l| Reply::Simple((*l).to_string()))
            .collect(),
        ),
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}
