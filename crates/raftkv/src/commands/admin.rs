//! Commands about the server and the cluster: INFO, RAFT.INFO, RAFT.SNAPSHOT,
//! COMMAND, CONFIG GET. Answered by this node.

use bytes::Bytes;

use super::{arity, syntax_error, upper, Action, DataLimits, LocalCommand};

/// Classifies `args` if its command (`name`, upper-cased) is one of this
/// family's (`Ok(None)` if not); `Err` holds the reply to a malformed one.
pub(super) fn classify(
    name: &str,
    args: &[Bytes],
    _limits: &DataLimits,
) -> Result<Option<Action>, Action> {
    let argc = args.len();
    let action = match name {
        "INFO" => Action::Local(LocalCommand::Info(args.get(1).map(|s| upper(s)))),
        "RAFT.INFO" => Action::Local(LocalCommand::RaftInfo),
        "RAFT.SNAPSHOT" => Action::Local(LocalCommand::RaftSnapshot),
        "COMMAND" => Action::Local(LocalCommand::CommandDocs),
        "CONFIG" => {
            arity(name, argc >= 2)?;
            match upper(&args[1]).as_str() {
                "GET" => {
                    arity(name, argc >= 3)?;
                    Action::Local(LocalCommand::ConfigGet(args[2..].to_vec()))
                }
                _ => return Err(syntax_error()),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(action))
}
