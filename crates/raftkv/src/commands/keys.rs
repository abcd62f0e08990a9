//! Commands on keys whatever their value: EXISTS, DEL, UNLINK, TOUCH, TYPE,
//! RENAME, RENAMENX, KEYS, RANDOMKEY, DBSIZE, FLUSHDB, FLUSHALL.

use bytes::Bytes;

use crate::kv::{KvCommand, KvQuery};

use super::{syntax_error, upper, Action, DataLimits};

/// Classifies `args` if its command (`name`, upper-cased) is one of this
/// family's (`Ok(None)` if not); `Err` holds the reply to a malformed one.
pub(super) fn classify(
    name: &str,
    args: &[Bytes],
    limits: &DataLimits,
) -> Result<Option<Action>, Action> {
    let argc = args.len();
    let action = match name {
        // TOUCH counts the keys that exist, as EXISTS does (there is no
        // access time to update here).
        "EXISTS" | "TOUCH" => Action::Read(KvQuery::Exists {
            keys: limits.keys(&args[1..])?,
        }),
        "DBSIZE" => Action::Read(KvQuery::DbSize),
        // UNLINK frees memory in the background in Redis; here DEL is as
        // cheap (the map's nodes are shared with snapshots).
        "DEL" | "UNLINK" => Action::Write(KvCommand::Del {
            keys: limits.keys(&args[1..])?,
        }),
        "TYPE" => {
            limits.check_key(&args[1])?;
            Action::Read(KvQuery::Type {
                key: args[1].to_vec(),
            })
        }
        "RENAME" | "RENAMENX" => {
            limits.check_key(&args[1])?;
            limits.check_key(&args[2])?;
            Action::Write(KvCommand::Rename {
                key: args[1].to_vec(),
                new_key: args[2].to_vec(),
                nx: name == "RENAMENX",
            })
        }
        "KEYS" => Action::Read(KvQuery::Keys {
            pattern: args[1].to_vec(),
        }),
        "RANDOMKEY" => Action::Read(KvQuery::RandomKey {
            seed: random_seed(),
        }),
        "FLUSHDB" | "FLUSHALL" => {
            match args.get(1).map(|a| upper(a)).as_deref() {
                None | Some("ASYNC") | Some("SYNC") if argc <= 2 => {}
                _ => return Err(syntax_error()),
            }
            Action::Write(KvCommand::FlushAll)
        }
        _ => return Ok(None),
    };
    Ok(Some(action))
}

/// A seed for RANDOMKEY: from the clock, which is plenty for "some key".
fn random_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
