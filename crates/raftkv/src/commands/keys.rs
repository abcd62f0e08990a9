//! Commands on keys whatever their value: EXISTS, DEL, DBSIZE.

use bytes::Bytes;

use crate::kv::{KvCommand, KvQuery};

use super::{arity, Action, DataLimits};

/// Classifies `args` if its command (`name`, upper-cased) is one of this
/// family's (`Ok(None)` if not); `Err` holds the reply to a malformed one.
pub(super) fn classify(
    name: &str,
    args: &[Bytes],
    limits: &DataLimits,
) -> Result<Option<Action>, Action> {
    let argc = args.len();
    let action = match name {
        "EXISTS" => {
            arity(name, argc >= 2)?;
            Action::Read(KvQuery::Exists {
                keys: limits.keys(&args[1..])?,
            })
        }
        "DBSIZE" => {
            arity(name, argc == 1)?;
            Action::Read(KvQuery::DbSize)
        }
        "DEL" => {
            arity(name, argc >= 2)?;
            Action::Write(KvCommand::Del {
                keys: limits.keys(&args[1..])?,
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(action))
}
