//! raftkv: a replicated key-value store on the `raft` crate, speaking RESP.
