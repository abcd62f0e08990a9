//! raftkv: a replicated key-value store on the `raft` crate, speaking RESP.
pub mod bench;
pub mod commands;
pub mod config;
pub mod forward;
pub mod identity;
/// The key-value state machine, in its own crate (`crates/store`) so the
/// simulator runs exactly the store the server ships.
pub use raftkv_store as kv;
pub mod limits;
pub mod metrics;
pub mod peer;
pub mod resp;
pub mod server;
pub mod up;
