//! The guide in `docs/`, chapter by chapter, as doc-tested modules.
//!
//! Each module below is empty: its documentation *is* a chapter, included
//! with `include_str!`. rustdoc treats every code block in it as a doctest,
//! so `cargo test --doc -p raft` (and `cargo test --workspace`, which CI
//! runs) compiles and runs each plain ```` ```rust ```` block of the guide.
//! Blocks marked ```` ```rust,ignore ```` are quotations of the source and
//! are skipped here (`docs/check_excerpts.py` checks that they still match
//! the code); ```` ```text ```` and ```` ```sh ```` blocks are not Rust and
//! are never compiled.
//!
//! The module exists only when rustdoc collects doctests (`cfg(doctest)`),
//! so it adds nothing to the library or to its API documentation. A new
//! chapter in `docs/SUMMARY.md` needs a module here too:
//! `tests/examples_run.rs` checks that none is missing.

#[doc = include_str!("../../../docs/README.md")]
pub mod ch00_introduction {}

#[doc = include_str!("../../../docs/01-roles-and-terms.md")]
pub mod ch01_roles_and_terms {}

#[doc = include_str!("../../../docs/02-elections.md")]
pub mod ch02_elections {}

#[doc = include_str!("../../../docs/03-log-replication.md")]
pub mod ch03_log_replication {}

#[doc = include_str!("../../../docs/04-the-layers.md")]
pub mod ch04_the_layers {}

#[doc = include_str!("../../../docs/05-transport.md")]
pub mod ch05_transport {}

#[doc = include_str!("../../../docs/06-persistence.md")]
pub mod ch06_persistence {}

#[doc = include_str!("../../../docs/07-rust-for-this-codebase.md")]
pub mod ch07_rust_for_this_codebase {}

#[doc = include_str!("../../../docs/08-kv-state-machine.md")]
pub mod ch08_kv_state_machine {}

#[doc = include_str!("../../../docs/09-resp-server-and-forwarding.md")]
pub mod ch09_resp_server_and_forwarding {}

#[doc = include_str!("../../../docs/10-linearizable-reads.md")]
pub mod ch10_linearizable_reads {}

#[doc = include_str!("../../../docs/11-snapshots.md")]
pub mod ch11_snapshots {}

#[doc = include_str!("../../../docs/12-simulation.md")]
pub mod ch12_simulation {}

#[doc = include_str!("../../../docs/13-learning-with-an-ai-assistant.md")]
pub mod ch13_learning_with_an_ai_assistant {}

#[doc = include_str!("../../../docs/14-changing-the-cluster.md")]
pub mod ch14_changing_the_cluster {}

#[doc = include_str!("../../../docs/benchmarks.md")]
pub mod benchmarks {}

#[doc = include_str!("../../../docs/journey.md")]
pub mod journey {}
