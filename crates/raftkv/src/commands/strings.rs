//! String commands: GET, MGET, SET (and SET IFEQ), MSET, INCR, DECR,
//! INCRBY, DECRBY.

use bytes::Bytes;

use crate::kv::{parse_i64, KvCommand, KvQuery};
use crate::resp::Reply;

use super::{arity, syntax_error, upper, Action, DataLimits};

/// Classifies `args` if its command (`name`, upper-cased) is one of this
/// family's (`Ok(None)` if not); `Err` holds the reply to a malformed one.
pub(super) fn classify(
    name: &str,
    args: &[Bytes],
    limits: &DataLimits,
) -> Result<Option<Action>, Action> {
    let argc = args.len();
    let action = match name {
        "GET" => {
            arity(name, argc == 2)?;
            limits.check_key(&args[1])?;
            Action::Read(KvQuery::Get {
                key: args[1].to_vec(),
            })
        }
        "MGET" => {
            arity(name, argc >= 2)?;
            Action::Read(KvQuery::MGet {
                keys: limits.keys(&args[1..])?,
            })
        }
        "SET" => {
            arity(name, argc >= 3)?;
            limits.check_key(&args[1])?;
            limits.check_value(&args[2])?;
            let (key, value) = (args[1].to_vec(), args[2].to_vec());
            match argc {
                3 => Action::Write(KvCommand::Set { key, value }),
                5 if upper(&args[3]) == "IFEQ" => {
                    limits.check_value(&args[4])?;
                    Action::Write(KvCommand::SetIfEq {
                        key,
                        value,
                        expected: args[4].to_vec(),
                    })
                }
                _ => return Err(syntax_error()),
            }
        }
        "MSET" => {
            arity(name, argc >= 3 && argc % 2 == 1)?;
            let mut pairs = Vec::with_capacity(argc / 2);
            for kv in args[1..].chunks(2) {
                limits.check_key(&kv[0])?;
                limits.check_value(&kv[1])?;
                pairs.push((kv[0].to_vec(), kv[1].to_vec()));
            }
            Action::Write(KvCommand::MSet { pairs })
        }
        "INCR" | "DECR" => {
            arity(name, argc == 2)?;
            limits.check_key(&args[1])?;
            let by = if name == "INCR" { 1 } else { -1 };
            Action::Write(KvCommand::IncrBy {
                key: args[1].to_vec(),
                by,
            })
        }
        "INCRBY" | "DECRBY" => {
            arity(name, argc == 3)?;
            limits.check_key(&args[1])?;
            let Some(n) = parse_i64(&args[2]) else {
                return Err(Action::Reply(Reply::error(crate::kv::NOT_AN_INTEGER)));
            };
            let by = if name == "INCRBY" {
                n
            } else {
                n.checked_neg()
                    .ok_or_else(|| Action::Reply(Reply::error(crate::kv::OVERFLOW)))?
            };
            Action::Write(KvCommand::IncrBy {
                key: args[1].to_vec(),
                by,
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(action))
}
