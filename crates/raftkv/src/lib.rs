//! raftkv: a replicated key-value store on the `raft` crate, speaking RESP.
pub mod bench;
pub mod commands;
pub mod config;
pub mod forward;
pub mod http;
pub mod identity;
pub mod kv;
pub mod limits;
pub mod metrics;
pub mod peer;
pub mod resp;
pub mod server;
pub mod sim;
pub mod up;
