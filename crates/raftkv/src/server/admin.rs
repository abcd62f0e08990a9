//! Cluster administration (thesis chapter 4 and §3.10) on the client port:
//! `RAFT.NODE ADD|PROMOTE|REMOVE`, `RAFT.TRANSFER`, and what a node does
//! as the configuration changes under it.
//!
//! ```text
//!  redis-cli RAFT.NODE ADD 4 host:7004 ──▶ any node ──(forward, if a follower)──▶ leader
//!                                                  RaftHandle::add_voter: learner, catch up, promote
//!  every node: status watch ──▶ follow_configuration: vote right, removed-node log line
//! ```
//!
//! A joining node (`--join`) starts here too: it asks a member for the
//! cluster's id, so that its peers accept it, and then waits to be added.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use raft::{AdminError, Membership, NodeId, RaftState};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Shared;
use crate::commands::AdminCommand;
use crate::forward;
use crate::peer::ForwardError;
use crate::resp::Reply;

/// Forwarded administration requests start with this, which no encoded
/// [`forward::Batch`] does (its first byte is a variant index, 0 or 1).
pub(super) const ADMIN_PREFIX: &[u8] = b"RAFTADM1";

/// How long an administrative request may take: adding a node waits for it
/// to catch up, which can take a snapshot transfer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(600);

/// What a leader answers a forwarded administration request.
#[derive(Debug, Serialize, Deserialize)]
enum AdminReply {
    Ok,
    Error(String),
    NotLeader { leader_hint: Option<NodeId> },
}

/// This node's place in the configuration in force, for `INFO` and for the
/// refusal a removed node gives clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Voter,
    Learner,
    /// Started with `--join` and not added yet.
    Joining,
    /// The configuration in force does not include it.
    Removed,
}

impl MemberState {
    pub fn of(membership: &Membership, id: NodeId) -> MemberState {
        if membership.is_voter(id) {
            MemberState::Voter
        } else if membership.is_learner(id) {
            MemberState::Learner
        } else if membership.members().is_empty() {
            MemberState::Joining
        } else {
            MemberState::Removed
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MemberState::Voter => "voter",
            MemberState::Learner => "learner",
            MemberState::Joining => "joining",
            MemberState::Removed => "removed",
        }
    }

    pub(super) fn code(self) -> u8 {
        self as u8
    }

    pub(super) fn from_code(code: u8) -> MemberState {
        match code {
            0 => MemberState::Voter,
            1 => MemberState::Learner,
            2 => MemberState::Joining,
            _ => MemberState::Removed,
        }
    }
}

/// Runs an administration command wherever the leader is, and answers it.
pub(super) async fn run(shared: &Shared, command: AdminCommand) -> Reply {
    let (state, leader) = shared.handle.role();
    let reply = if state == RaftState::Leader {
        run_here(shared, &command).await
    } else if let Some(leader) = leader.filter(|&l| l != shared.node_id) {
        forward_to(shared, leader, &command).await
    } else {
        AdminReply::NotLeader { leader_hint: None }
    };
    match reply {
        AdminReply::Ok => Reply::ok(),
        AdminReply::Error(e) => Reply::Error(e),
        AdminReply::NotLeader { .. } => {
            Reply::Error("CLUSTERDOWN no leader known; nothing was changed, retry shortly".into())
        }
    }
}

async fn forward_to(shared: &Shared, leader: NodeId, command: &AdminCommand) -> AdminReply {
    let mut payload = ADMIN_PREFIX.to_vec();
    payload.extend(forward::encode(command));
    match shared
        .transport
        .forward(leader, payload, ADMIN_TIMEOUT)
        .await
    {
        Ok(bytes) => forward::decode::<AdminReply>(&bytes)
            .unwrap_or_else(|| AdminReply::Error("ERR undecodable reply from the leader".into())),
        Err(ForwardError::NotSent(_)) => AdminReply::NotLeader { leader_hint: None },
        Err(ForwardError::Unknown(_)) => AdminReply::Error(
            "ERR no reply from the leader: the change may or may not have happened; \
             check RAFT.INFO"
                .into(),
        ),
    }
}

/// The leader's side of a forwarded administration request.
pub(super) async fn serve_forwarded(shared: &Shared, payload: &[u8]) -> Vec<u8> {
    let reply = match forward::decode::<AdminCommand>(payload) {
        None => AdminReply::Error("ERR undecodable administration request".into()),
        Some(command) if shared.handle.role().0 == RaftState::Leader => {
            run_here(shared, &command).await
        }
        Some(_) => AdminReply::NotLeader {
            leader_hint: shared.handle.role().1,
        },
    };
    forward::encode(&reply)
}

async fn run_here(shared: &Shared, command: &AdminCommand) -> AdminReply {
    let handle = &shared.handle;
    let result = match command {
        AdminCommand::Add {
            id,
            address,
            learner: true,
        } => handle
            .change_membership(raft::ConfChange::AddLearner {
                id: *id,
                address: address.clone(),
            })
            .await
            .map(drop),
        AdminCommand::Add {
            id,
            address,
            learner: false,
        } => handle.add_voter(*id, address.clone()).await.map(drop),
        AdminCommand::Promote { id } => handle.promote(*id).await.map(drop),
        AdminCommand::Remove { id } => handle
            .change_membership(raft::ConfChange::Remove { id: *id })
            .await
            .map(drop),
        AdminCommand::Transfer { target } => handle.transfer_leadership(*target).await.map(drop),
    };
    match result {
        Ok(()) => AdminReply::Ok,
        Err(AdminError::NotLeader { leader_hint }) => AdminReply::NotLeader { leader_hint },
        Err(e) => AdminReply::Error(error_text(&e)),
    }
}

/// The `-ERR` text of a refused or failed administration request.
fn error_text(e: &AdminError) -> String {
    match e {
        AdminError::ChangeInProgress { index } => format!(
            "ERR configuration change in progress (index {index}); one change at a time, retry once it commits"
        ),
        AdminError::TransferFailed { target } => format!(
            "ERR leadership transfer to node {target} did not complete within an election timeout"
        ),
        other => format!("ERR {other}"),
    }
}

/// Follows the configuration in force: keeps this node's vote right in step
/// with it, tells the connections whether this node is still a member, and
/// logs once when it is removed.
///
/// The book of peers is never pruned: a removed server's incarnation stays
/// known, so that if its data dir is wiped and it is restarted with the old
/// `--cluster` list it is suspended, as any wiped voter is. Forgetting it
/// would let two such servers clear each other and elect a leader of the
/// old configuration with empty logs (the simulator's
/// `forget-removed-incarnations` bug shows it). A machine whose data dir was
/// wiped comes back under a new id.
pub(super) async fn follow_configuration(shared: Arc<Shared>) {
    let mut status = shared.handle.watch_status();
    let id = shared.node_id;
    let mut known: Option<Arc<Membership>> = None;
    loop {
        let membership = status.borrow_and_update().membership.clone();
        let state = MemberState::of(&membership, id);
        let before =
            MemberState::from_code(shared.member_state.swap(state.code(), Ordering::Relaxed));
        if known.as_ref() != Some(&membership) {
            if let Err(e) = shared.identity.set_voters(membership.voters()).await {
                tracing::error!(id, "cannot store the vote right: {e}");
            }
            if state == MemberState::Removed && before != MemberState::Removed {
                tracing::warn!(
                    id,
                    "this node is not in the cluster's configuration any more: the members \
                     ignore its vote requests, and it refuses client commands; stop it, or add \
                     it back"
                );
            }
            known = Some(membership.clone());
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// `--join`: asks the members at `addresses` (client ports) for the
/// cluster's id, trying each in turn for up to `patience`.
pub async fn fetch_cluster_id(addresses: &[String], patience: Duration) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut last = String::from("no address given");
    loop {
        for address in addresses {
            match tokio::time::timeout(Duration::from_secs(2), ask_cluster_id(address)).await {
                Ok(Ok(id)) => return Ok(id),
                Ok(Err(e)) => last = format!("{address}: {e}"),
                Err(_) => last = format!("{address}: no answer within 2 s"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "--join: cannot learn the cluster id from any of {addresses:?} (last: {last})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One `RAFT.INFO` over RESP, for its `cluster_id` field.
async fn ask_cluster_id(address: &str) -> Result<String, String> {
    let text = raft_info_at(address).await?;
    cluster_id_in(&text).ok_or_else(|| {
        format!(
            "no cluster_id in its reply ({:?})",
            text.get(..text.len().min(80)).unwrap_or_default()
        )
    })
}

/// The text of `RAFT.INFO` from the node whose client port is at
/// `address`: one RESP bulk string (`$len\r\n`, then `len` bytes and
/// `\r\n`), read until complete. Bounded to 64 KiB; the caller bounds the
/// time. Also what `raftkv up` polls its nodes with.
pub async fn raft_info_at(address: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"*1\r\n$9\r\nRAFT.INFO\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while reply.len() < 64 << 10 {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(buf.get(..n).unwrap_or_default());
        if let Some(body) = complete_bulk(&reply) {
            return Ok(String::from_utf8_lossy(body).into_owned());
        }
    }
    Err(format!(
        "not a complete RAFT.INFO reply ({:?})",
        String::from_utf8_lossy(reply.get(..reply.len().min(80)).unwrap_or_default())
    ))
}

/// The body of a complete RESP bulk string at the start of `reply`.
fn complete_bulk(reply: &[u8]) -> Option<&[u8]> {
    let rest = reply.strip_prefix(b"$")?;
    let eol = rest.windows(2).position(|w| w == b"\r\n")?;
    let len: usize = std::str::from_utf8(rest.get(..eol)?).ok()?.parse().ok()?;
    let body_at = eol + 2;
    let body = rest.get(body_at..body_at.checked_add(len)?)?;
    (rest.get(body_at + len..body_at + len + 2)? == b"\r\n").then_some(body)
}

fn cluster_id_in(text: &str) -> Option<String> {
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("cluster_id:"))?
        .trim();
    (!id.is_empty() && id.len() <= 64).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_knows_whether_it_votes_listens_waits_or_was_removed() {
        let mut m = Membership::new(&[1, 2], &[3]);
        assert_eq!(MemberState::of(&m, 1), MemberState::Voter);
        assert_eq!(MemberState::of(&m, 3), MemberState::Learner);
        assert_eq!(MemberState::of(&m, 4), MemberState::Removed);
        m = Membership::default();
        assert_eq!(MemberState::of(&m, 4), MemberState::Joining);
        for s in [
            MemberState::Voter,
            MemberState::Learner,
            MemberState::Joining,
            MemberState::Removed,
        ] {
            assert_eq!(MemberState::from_code(s.code()), s);
        }
    }

    #[test]
    fn the_cluster_id_is_read_from_a_complete_raft_info_reply() {
        let body = b"# Raft\r\nnode_id:1\r\ncluster_id:1a2b3c4d\r\n";
        let mut reply = format!("${}\r\n", body.len()).into_bytes();
        reply.extend_from_slice(body);
        reply.extend_from_slice(b"\r\n");
        let text = String::from_utf8_lossy(complete_bulk(&reply).expect("complete"));
        assert_eq!(cluster_id_in(&text).as_deref(), Some("1a2b3c4d"));
        // Every cut-off prefix is incomplete; an error reply is not a bulk.
        for cut in 0..reply.len() {
            assert_eq!(complete_bulk(&reply[..cut]), None, "cut at {cut}");
        }
        assert_eq!(complete_bulk(b"-ERR unknown command\r\n"), None);
        assert_eq!(cluster_id_in("# Raft\r\nnode_id:1\r\n"), None);
    }
}
