//! String commands: GET, MGET, SET (`NX`, `XX`, `GET`, and Valkey's
//! `IFEQ`), SETNX, GETSET, GETDEL, MSET, MSETNX, APPEND, SETRANGE,
//! GETRANGE, STRLEN, INCR, DECR, INCRBY, DECRBY, and DELIFEQ.

use bytes::Bytes;

use crate::kv::{parse_i64, KvCommand, KvQuery, SetCondition};
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
            limits.check_key(&args[1])?;
            Action::Read(KvQuery::Get {
                key: args[1].to_vec(),
            })
        }
        "MGET" => Action::Read(KvQuery::MGet {
            keys: limits.keys(&args[1..])?,
        }),
        "SET" => {
            limits.check_key(&args[1])?;
            limits.check_value(&args[2])?;
            set(args)?
        }
        "GETSET" => {
            limits.check_key(&args[1])?;
            limits.check_value(&args[2])?;
            Action::Write(KvCommand::SetWith {
                key: args[1].to_vec(),
                value: args[2].to_vec(),
                condition: None,
                get: true,
            })
        }
        "SETNX" => {
            limits.check_key(&args[1])?;
            limits.check_value(&args[2])?;
            Action::Write(KvCommand::SetNx {
                key: args[1].to_vec(),
                value: args[2].to_vec(),
            })
        }
        "GETDEL" => {
            limits.check_key(&args[1])?;
            Action::Write(KvCommand::GetDel {
                key: args[1].to_vec(),
            })
        }
        "DELIFEQ" => {
            limits.check_key(&args[1])?;
            Action::Write(KvCommand::DelIfEq {
                key: args[1].to_vec(),
                value: args[2].to_vec(),
            })
        }
        "APPEND" => {
            limits.check_key(&args[1])?;
            limits.check_value(&args[2])?;
            Action::Write(KvCommand::Append {
                key: args[1].to_vec(),
                value: args[2].to_vec(),
                // The limit when the leader took it, in the entry: every
                // replica refuses the same appends.
                max_len: limits.max_value_bytes as u64,
            })
        }
        "SETRANGE" => {
            limits.check_key(&args[1])?;
            let offset = match parse_i64(&args[2]) {
                Some(n) if n < 0 => {
                    return Err(Action::Reply(Reply::error("ERR offset is out of range")))
                }
                Some(n) => n as u64,
                None => return Err(Action::Reply(Reply::error(crate::kv::NOT_AN_INTEGER))),
            };
            let value = &args[3];
            // Redis checks the size only when something is written. Ours is
            // the value limit, not Redis' 512 MB.
            if !value.is_empty()
                && offset.saturating_add(value.len() as u64) > limits.max_value_bytes as u64
            {
                return Err(Action::Reply(Reply::error(crate::kv::STRING_TOO_LONG)));
            }
            Action::Write(KvCommand::SetRange {
                key: args[1].to_vec(),
                offset,
                value: value.to_vec(),
            })
        }
        "GETRANGE" => {
            limits.check_key(&args[1])?;
            let (Some(start), Some(end)) = (parse_i64(&args[2]), parse_i64(&args[3])) else {
                return Err(Action::Reply(Reply::error(crate::kv::NOT_AN_INTEGER)));
            };
            Action::Read(KvQuery::GetRange {
                key: args[1].to_vec(),
                start,
                end,
            })
        }
        "STRLEN" => {
            limits.check_key(&args[1])?;
            Action::Read(KvQuery::Strlen {
                key: args[1].to_vec(),
            })
        }
        "MSETNX" => {
            arity(name, argc % 2 == 1)?;
            Action::Write(KvCommand::MSetNx {
                pairs: pairs(&args[1..], limits)?,
            })
        }
        "MSET" => {
            arity(name, argc % 2 == 1)?;
            Action::Write(KvCommand::MSet {
                pairs: pairs(&args[1..], limits)?,
            })
        }
        "INCR" | "DECR" => {
            limits.check_key(&args[1])?;
            let by = if name == "INCR" { 1 } else { -1 };
            Action::Write(KvCommand::IncrBy {
                key: args[1].to_vec(),
                by,
            })
        }
        "INCRBY" | "DECRBY" => {
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

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Key-value pairs (`MSET`, `MSETNX`), each within the limits.
fn pairs(args: &[Bytes], limits: &DataLimits) -> Result<Pairs, Action> {
    let mut out = Vec::with_capacity(args.len() / 2);
    for kv in args.chunks(2) {
        limits.check_key(&kv[0])?;
        limits.check_value(&kv[1])?;
        out.push((kv[0].to_vec(), kv[1].to_vec()));
    }
    Ok(out)
}

/// `SET key value [NX|XX] [GET]`, or Valkey's `SET key value IFEQ expected`
/// (alone). An option may repeat; NX with XX is a syntax error, as in
/// Redis. The expiry options are not supported yet and say so.
fn set(args: &[Bytes]) -> Result<Action, Action> {
    let (key, value) = (args[1].to_vec(), args[2].to_vec());
    if args.len() == 5 && upper(&args[3]) == "IFEQ" {
        return Ok(Action::Write(KvCommand::SetIfEq {
            key,
            value,
            expected: args[4].to_vec(),
        }));
    }
    let mut condition = None;
    let mut get = false;
    for option in &args[3..] {
        match upper(option).as_str() {
            "NX" if condition != Some(SetCondition::Xx) => condition = Some(SetCondition::Nx),
            "XX" if condition != Some(SetCondition::Nx) => condition = Some(SetCondition::Xx),
            "GET" => get = true,
            "EX" | "PX" | "EXAT" | "PXAT" | "KEEPTTL" => {
                return Err(Action::Reply(Reply::error(
                    "ERR SET's expiry options (EX, PX, EXAT, PXAT, KEEPTTL) are not supported yet",
                )))
            }
            _ => return Err(syntax_error()),
        }
    }
    Ok(Action::Write(if condition.is_none() && !get {
        KvCommand::Set { key, value }
    } else {
        KvCommand::SetWith {
            key,
            value,
            condition,
            get,
        }
    }))
}
