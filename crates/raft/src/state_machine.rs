//! The application side of Raft: what the committed log drives (Figure 2,
//! "apply log[lastApplied] to state machine"), and how its state goes into a
//! snapshot (§7). Implemented by `raftkv`'s `KvStore` and, for the examples
//! and tests, [`ListStateMachine`](crate::ListStateMachine).

use crate::types::LogIndex;

/// The application the log drives (Figure 2: "apply log[lastApplied] to
/// state machine"). `apply` must be deterministic: every server applies the
/// same commands in the same order and must reach the same state.
///
/// `snapshot` and `restore` have default bodies (no snapshot support), so a
/// state machine that does not need log compaction implements only two
/// methods.
pub trait StateMachine: Send + 'static {
    /// What applying a command (or running a query) returns to the client.
    type Output: Send + 'static;

    /// Applies the committed command at `index`.
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Self::Output;

    /// Answers a read-only query against the current state.
    fn query(&self, query: &[u8]) -> Self::Output;

    /// A point-in-time image of the state for a snapshot (§7), or `None` if
    /// this state machine does not support snapshots. It is taken between
    /// two applies and must be cheap (a clone of an immutable structure):
    /// it is written out on another thread while applying goes on.
    fn snapshot(&self) -> Option<Box<dyn SnapshotWriter>> {
        None
    }

    /// Replaces the whole state with an image written by
    /// [`SnapshotWriter::write_to`].
    fn restore(&mut self, _image: &mut dyn std::io::Read) -> std::io::Result<()> {
        Err(std::io::Error::other(
            "this state machine does not support snapshots",
        ))
    }
}

/// A state machine image on its way to disk.
pub trait SnapshotWriter: Send + 'static {
    /// Streams the image to `out` (never the whole image in one buffer).
    fn write_to(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<()>;
}
