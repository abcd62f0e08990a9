//! # raft: a Raft consensus library
//!
//! Layers, each testable on its own:
//!
//! * [`RaftCore`]: the protocol as a pure, deterministic state machine
//!   (messages and ticks in, a [`Ready`] out). No IO, no clock.
//! * [`Driver`]: the one Ready loop, also pure: it turns each Ready into
//!   [`Effect`]s (send, numbered disk ops, apply, answer clients) and holds
//!   back what must wait for the disk. Production and the simulator both run it.
//! * [`RaftNode`]: the driver on tokio. It carries the effects out with a
//!   [`Storage`] and a [`Transport`].
//! * [`RaftServer`] / [`RaftHandle`]: the client API. `submit` resolves once a
//!   command is committed and applied to the [`StateMachine`].
//!
//! The guide in `docs/` walks through each layer with the paper at its side.

pub mod clock;
pub mod config;
pub mod core;
pub mod driver;
pub mod incarnation;
pub mod list_state_machine;
pub mod log;
pub mod log_writer;
pub mod message;
pub mod node;
pub mod observer;
pub mod server;
pub mod snapshot;
pub mod state_machine;
pub mod storage;
pub mod storage_file;
pub mod transport;
pub mod transport_memory;
pub mod types;

pub use crate::clock::TickClock;
pub use crate::config::{ConfigError, RaftConfig};
#[cfg(feature = "bug-switches")]
pub use crate::core::BugSwitches;
pub use crate::core::{
    ConfChange, ConfChangeError, CoreError, Event, Membership, MembershipError, NotLeader,
    ProposeError, RaftCore, ReadState, Ready, SnapshotChunkVerdict, TransferError,
};
pub use crate::driver::{ClientError, DiskOp, Driver, Effect, SnapshotRefusal};
pub use crate::incarnation::{IncarnationBook, PeerRecord, PeerVerdict, VoteRight};
pub use crate::list_state_machine::{ListOutput, ListStateMachine};
pub use crate::log_writer::WriteDone;
pub use crate::message::{
    AppendEntriesArgs, AppendEntriesReply, InstallSnapshotArgs, InstallSnapshotReply, Message,
    RequestVoteArgs, RequestVoteReply, Rpc, TimeoutNowArgs, TimeoutNowReply,
};
pub use crate::node::{
    DiskMode, NodeInbox, Output, PeerEvent, RaftNode, Reply, ReplySlot, SnapshotChunk,
};
pub use crate::observer::{NoopObserver, Observer};
pub use crate::server::{
    AdminError, RaftHandle, RaftServer, ServerError, ServerExtras, ServerParts, Status,
};
pub use crate::snapshot::{IncomingSnapshot, SnapshotMeta, SnapshotStore};
pub use crate::state_machine::{SnapshotWriter, StateMachine};
pub use crate::storage::{MemoryStorage, RecoveredState, Storage, StorageError};
pub use crate::storage_file::{FileStorage, FileStorageOptions};
pub use crate::transport::{IncomingRpc, Transport, TransportError, TransportExt};
pub use crate::transport_memory::{create_cluster, InMemoryNetwork, InMemoryTransport};
pub use crate::types::{EntryKind, HardState, LogEntry, LogIndex, NodeId, RaftState, Term};

#[cfg(doctest)]
pub mod guide;
