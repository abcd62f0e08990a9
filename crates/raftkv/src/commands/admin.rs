//! Commands about the server and the cluster: INFO, RAFT.INFO, RAFT.SNAPSHOT,
//! COMMAND, CONFIG GET (answered by this node), and the cluster
//! administration of thesis chapter 4 and §3.10: RAFT.NODE ADD|PROMOTE|REMOVE
//! and RAFT.TRANSFER (run by the leader; a follower forwards them).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{arity, syntax_error, upper, Action, DataLimits, LocalCommand};
use crate::resp::Reply;

/// A change of the cluster, run by the leader (`server::admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminCommand {
    /// `RAFT.NODE ADD id host:port [LEARNER]`: without LEARNER, a voter,
    /// caught up as a learner first (§4.2.1).
    Add {
        id: u64,
        address: String,
        learner: bool,
    },
    /// `RAFT.NODE PROMOTE id`: a learner becomes a voter once caught up.
    Promote { id: u64 },
    /// `RAFT.NODE REMOVE id` (§4.2.2).
    Remove { id: u64 },
    /// `RAFT.TRANSFER [id]` (§3.10); no id: the most up-to-date voter.
    Transfer { target: Option<u64> },
}

fn node_id(arg: &[u8]) -> Result<u64, Action> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&id| id > 0)
        .ok_or_else(|| {
            Action::Reply(Reply::error(format!(
                "ERR invalid node id '{}': a positive integer",
                String::from_utf8_lossy(arg)
            )))
        })
}

fn peer_address(arg: &[u8]) -> Result<String, Action> {
    let bad = || {
        Action::Reply(Reply::error(format!(
            "ERR invalid address '{}': host:port of the node's peer listener",
            String::from_utf8_lossy(arg)
        )))
    };
    let text = std::str::from_utf8(arg).map_err(|_| bad())?;
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(text.to_string())
        }
        _ => Err(bad()),
    }
}

fn raft_node(args: &[Bytes]) -> Result<Action, Action> {
    let name = "RAFT.NODE";
    arity(name, args.len() >= 3)?;
    let sub = upper(&args[1]);
    let command = match sub.as_str() {
        "ADD" => {
            arity(name, (4..=5).contains(&args.len()))?;
            let learner = match args.get(4) {
                None => false,
                Some(a) if upper(a) == "LEARNER" => true,
                Some(_) => return Err(syntax_error()),
            };
            AdminCommand::Add {
                id: node_id(&args[2])?,
                address: peer_address(&args[3])?,
                learner,
            }
        }
        "PROMOTE" => {
            arity(name, args.len() == 3)?;
            AdminCommand::Promote {
                id: node_id(&args[2])?,
            }
        }
        "REMOVE" => {
            arity(name, args.len() == 3)?;
            AdminCommand::Remove {
                id: node_id(&args[2])?,
            }
        }
        _ => {
            return Err(Action::Reply(Reply::error(format!(
                "ERR unknown subcommand '{}'. Try RAFT.NODE ADD|PROMOTE|REMOVE.",
                String::from_utf8_lossy(&args[1])
            ))))
        }
    };
    Ok(Action::Admin(command))
}

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
        "RAFT.NODE" => raft_node(args)?,
        "RAFT.TRANSFER" => {
            arity(name, argc <= 2)?;
            let target = args.get(1).map(|a| node_id(a)).transpose()?;
            Action::Admin(AdminCommand::Transfer { target })
        }
        "COMMAND" => Action::Reply(super::table::command(args)),
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
