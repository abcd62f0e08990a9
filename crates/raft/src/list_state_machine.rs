//! The tiniest useful [`StateMachine`]: an append-only list of commands.
//! Tests use it to see exactly which commands were applied, in which order.

use crate::server::StateMachine;
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
}

/// What [`ListStateMachine`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListOutput {
    Len(usize),
    Items(Vec<Vec<u8>>),
}
