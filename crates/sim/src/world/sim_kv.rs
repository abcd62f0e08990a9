//! The state machine each simulated node's driver applies to: the real
//! `KvStore`, plus the digest of its state after every entry (what State
//! Machine Safety compares across nodes, `checker::Invariants::on_state`).
//!
//! The driver (`raft::Driver`) applies committed entries itself, as it does
//! in production; the world reads the digests it left here afterwards.

use std::cell::RefCell;
use std::collections::VecDeque;

use raft::{LogIndex, SnapshotWriter, StateMachine};

use crate::snapshot::{state_digest, DigestUpdate};
use raftkv_store::{KvOutput, KvStore};

pub(crate) struct SimKv {
    kv: KvStore,
    digest: u64,
    /// `(index, digest after applying it)` for each command applied since
    /// the world last looked.
    digests: RefCell<VecDeque<(LogIndex, u64)>>,
    /// `Bug::InstallWithoutRestore`: a snapshot install leaves the state as
    /// it was.
    skip_restore: bool,
}

impl SimKv {
    pub(crate) fn new(kv: KvStore, skip_restore: bool) -> Self {
        SimKv {
            digest: state_digest(&kv),
            kv,
            digests: RefCell::new(VecDeque::new()),
            skip_restore,
        }
    }

    pub(crate) fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// The digest of the current state.
    pub(crate) fn digest(&self) -> u64 {
        self.digest
    }

    /// The digest right after applying the command at `index`, if it was
    /// applied since the last call (older ones are dropped).
    pub(crate) fn digest_after(&self, index: LogIndex) -> Option<u64> {
        let mut digests = self.digests.borrow_mut();
        while let Some(&(i, d)) = digests.front() {
            if i > index {
                // A later command: `index` was not a command (a no-op).
                return None;
            }
            digests.pop_front();
            if i == index {
                return Some(d);
            }
        }
        None
    }
}

impl StateMachine for SimKv {
    type Output = KvOutput;

    fn apply(&mut self, index: LogIndex, command: &[u8]) -> KvOutput {
        let (update, partial) = DigestUpdate::before(&self.kv, self.digest, command);
        let out = StateMachine::apply(&mut self.kv, index, command);
        self.digest = update.after(&self.kv, partial);
        self.digests.get_mut().push_back((index, self.digest));
        out
    }

    fn query(&self, query: &[u8]) -> KvOutput {
        StateMachine::query(&self.kv, query)
    }

    fn snapshot(&self) -> Option<Box<dyn SnapshotWriter>> {
        StateMachine::snapshot(&self.kv)
    }

    fn restore(&mut self, image: &mut dyn std::io::Read) -> std::io::Result<()> {
        if self.skip_restore {
            std::io::copy(image, &mut std::io::sink())?;
            return Ok(());
        }
        let mut kv = KvStore::new();
        StateMachine::restore(&mut kv, image)?;
        self.digest = state_digest(&kv);
        self.kv = kv;
        self.digests.get_mut().clear();
        Ok(())
    }
}
