//! The tiniest useful [`StateMachine`]: an append-only list of commands.
//! Tests use it to see exactly which commands were applied, in which order.

use std::io::{Read, Write};

use crate::state_machine::{SnapshotWriter, StateMachine};
use crate::types::LogIndex;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListStateMachine {
    /// `(index, command)` for every applied command, in order.
    pub applied: Vec<(LogIndex, Vec<u8>)>,
}

impl StateMachine for ListStateMachine {
    /// For a command: the list's length after it. For a query: the length.
    type Output = ListOutput;

    fn apply(&mut self, index: LogIndex, command: &[u8]) -> ListOutput {
        self.applied.push((index, command.to_vec()));
        ListOutput::Len(self.applied.len())
    }

    fn query(&self, _query: &[u8]) -> ListOutput {
        ListOutput::Items(self.applied.iter().map(|(_, c)| c.clone()).collect())
    }

    /// The image is a plain copy (fine for a test state machine; the KV
    /// store shares structure instead).
    fn snapshot(&self) -> Option<Box<dyn SnapshotWriter>> {
        Some(Box::new(ListImage(self.applied.clone())))
    }

    fn restore(&mut self, image: &mut dyn Read) -> std::io::Result<()> {
        let mut n8 = [0u8; 8];
        image.read_exact(&mut n8)?;
        let count = u64::from_le_bytes(n8);
        let mut applied = Vec::new();
        for _ in 0..count {
            image.read_exact(&mut n8)?;
            let index = u64::from_le_bytes(n8);
            let mut n4 = [0u8; 4];
            image.read_exact(&mut n4)?;
            let len = u32::from_le_bytes(n4) as usize;
            if len > 1 << 30 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "implausible item",
                ));
            }
            let mut data = vec![0u8; len];
            image.read_exact(&mut data)?;
            applied.push((index, data));
        }
        self.applied = applied;
        Ok(())
    }
}

struct ListImage(Vec<(LogIndex, Vec<u8>)>);

impl SnapshotWriter for ListImage {
    fn write_to(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(&(self.0.len() as u64).to_le_bytes())?;
        for (index, data) in &self.0 {
            out.write_all(&index.to_le_bytes())?;
            out.write_all(&(data.len() as u32).to_le_bytes())?;
            out.write_all(data)?;
        }
        Ok(())
    }
}

/// What [`ListStateMachine`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListOutput {
    Len(usize),
    Items(Vec<Vec<u8>>),
}
