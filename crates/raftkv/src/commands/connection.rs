//! Commands about the connection itself: PING, ECHO, HELLO, QUIT, SELECT,
//! CLIENT, and the transaction's MULTI, EXEC, DISCARD (the connection
//! queues; EXEC is one log entry). Answered by this node otherwise.

use bytes::Bytes;

use crate::kv::parse_i64;
use crate::resp::Reply;

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
        "PING" => {
            arity(name, argc <= 2)?;
            Action::Local(LocalCommand::Ping(args.get(1).cloned()))
        }
        "ECHO" => {
            arity(name, argc == 2)?;
            Action::Local(LocalCommand::Echo(args[1].clone()))
        }
        "HELLO" => {
            let proto = match args.get(1) {
                None => None,
                Some(v) => match parse_i64(v) {
                    Some(2) => Some(2),
                    Some(3) => Some(3),
                    Some(_) => {
                        return Err(Action::Reply(Reply::Error(
                            "NOPROTO unsupported protocol version".into(),
                        )))
                    }
                    None => {
                        return Err(Action::Reply(Reply::error(
                            "ERR Protocol version is not an integer or out of range",
                        )))
                    }
                },
            };
            // `AUTH user pass` authenticates; SETNAME is accepted and ignored.
            let mut auth = None;
            let mut i = 2;
            while i < argc {
                match upper(&args[i]).as_str() {
                    "AUTH" if i + 2 < argc => {
                        auth = Some((args[i + 1].clone(), args[i + 2].clone()));
                        i += 3;
                    }
                    "SETNAME" if i + 1 < argc => i += 2,
                    _ => return Err(syntax_error()),
                }
            }
            Action::Local(LocalCommand::Hello(proto, auth))
        }
        "QUIT" => Action::Local(LocalCommand::Quit),
        "AUTH" => match argc {
            2 => Action::Local(LocalCommand::Auth(None, args[1].clone())),
            3 => Action::Local(LocalCommand::Auth(Some(args[1].clone()), args[2].clone())),
            _ => return Err(syntax_error()),
        },
        "MULTI" => Action::Local(LocalCommand::Multi),
        "EXEC" => Action::Local(LocalCommand::Exec),
        "DISCARD" => Action::Local(LocalCommand::Discard),
        // Optimistic locking needs a version per key, checked when EXEC is
        // applied; until then WATCH says so rather than pretend.
        "WATCH" => {
            return Err(Action::Reply(Reply::error(
                "ERR WATCH is not supported yet (MULTI/EXEC without WATCH is)",
            )))
        }
        "UNWATCH" => Action::Local(LocalCommand::Ok),
        "SELECT" => {
            arity(name, argc == 2)?;
            if parse_i64(&args[1]) == Some(0) {
                Action::Local(LocalCommand::Ok)
            } else {
                return Err(Action::Reply(Reply::error("ERR DB index is out of range")));
            }
        }
        "CLIENT" => {
            arity(name, argc >= 2)?;
            match upper(&args[1]).as_str() {
                // Connection metadata that clients send on their own.
                "SETINFO" | "SETNAME" => Action::Local(LocalCommand::Ok),
                "GETNAME" => Action::Reply(Reply::Nil),
                "ID" => Action::Reply(Reply::Integer(1)),
                _ => return Err(syntax_error()),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(action))
}
