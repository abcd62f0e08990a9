//! The journal's Day 1 demo, on the real library: a 3-node cluster on the
//! in-memory network, narrated step by step.
//!
//! Run it with `cargo run --example demo`. Time is tokio's paused clock, so
//! the run is instant and prints the same story every time.
//!
//! The story is written into a `String` by [`narrate`], and `main` prints it.
//! That is what lets `tests/examples_run.rs` run the very same story and check
//! what it says (a leader is elected, a follower refuses, every node applies
//! both commands, a new leader takes over, the final read is in order).

use std::fmt::Write;
use std::time::Duration;

use raft::{
    create_cluster, ClientError, ListOutput, ListStateMachine, Membership, MemoryStorage, NodeId,
    RaftConfig, RaftHandle, RaftServer, RaftState, ServerParts,
};

type Handle = RaftHandle<ListOutput>;
type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> DemoResult<()> {
    let mut out = String::new();
    let result = narrate(&mut out);
    // Print the story even if it stopped half-way: the last line shows where.
    print!("{out}");
    result
}

/// Runs the whole demo on a fresh paused-clock runtime and writes the
/// narration into `out`.
pub fn narrate(out: &mut String) -> DemoResult<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    runtime.block_on(demo(out))
}

async fn demo(out: &mut String) -> DemoResult<()> {
    let ids: Vec<NodeId> = vec![1, 2, 3];
    let config = RaftConfig::default();
    writeln!(out, "== A 3-node Raft cluster ==")?;
    writeln!(
        out,
        "heartbeat every {:?}, election timeout drawn from {:?}..{:?}",
        config.heartbeat_interval, config.election_timeout_min, config.election_timeout_max
    )?;
    let (net, endpoints) = create_cluster(&ids, 7, Duration::from_millis(100));
    let mut handles = Vec::new();
    for (&id, (transport, incoming)) in ids.iter().zip(endpoints) {
        let (handle, _task) = RaftServer::spawn(ServerParts {
            id,
            membership: Membership::new(&ids, &[]),
            config: config.clone(),
            storage: Box::new(MemoryStorage::new()),
            transport,
            incoming,
            state_machine: ListStateMachine::default(),
            seed: id,
        })?;
        handles.push(handle);
    }
    writeln!(out, "\n-- 1. Everyone starts as a follower (§5.2) --")?;
    show(out, &handles)?;

    writeln!(
        out,
        "\n-- 2. An election timeout fires; a pre-vote, then a vote, elects a leader --"
    )?;
    let leader = wait_for_leader(out, &handles, None).await?;
    show(out, &handles)?;

    writeln!(
        out,
        "\n-- 3. Followers refuse client commands and point at the leader --"
    )?;
    let follower = handles
        .iter()
        .find(|h| h.status().id != leader)
        .ok_or("no follower")?;
    match follower.submit(b"SET x 1".to_vec()).await {
        Err(ClientError::NotLeader {
            leader_hint: Some(hint),
        }) => writeln!(
            out,
            "node {} says: not the leader, try node {}",
            follower.status().id,
            hint
        )?,
        other => writeln!(out, "unexpected: {other:?}")?,
    }

    writeln!(
        out,
        "\n-- 4. The leader appends, replicates, commits and applies (§5.3) --"
    )?;
    let lh = &handles[(leader - 1) as usize];
    for cmd in ["SET x 1", "SET y 2"] {
        let reply = lh.submit(cmd.as_bytes().to_vec()).await?;
        writeln!(
            out,
            "submitted {cmd:?}: committed and applied, state machine says {reply:?}"
        )?;
    }
    tokio::time::sleep(config.heartbeat_interval * 2).await;
    show(out, &handles)?;

    writeln!(
        out,
        "\n-- 5. The leader is cut off; the others elect a new one (§5.2) --"
    )?;
    net.isolate(leader);
    let new_leader = wait_for_leader(out, &handles, Some(leader)).await?;
    let nh = &handles[(new_leader - 1) as usize];
    let reply = nh.submit(b"SET z 3".to_vec()).await?;
    writeln!(out, "node {new_leader} commits \"SET z 3\": {reply:?}")?;

    writeln!(
        out,
        "\n-- 6. The old leader rejoins, steps down and catches up (§5.1) --"
    )?;
    net.heal();
    tokio::time::sleep(config.election_timeout_max * 2).await;
    show(out, &handles)?;
    if let ListOutput::Items(items) = nh.read(Vec::new()).await? {
        let items: Vec<String> = items
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        writeln!(out, "linearizable read on node {new_leader}: {items:?}")?;
    }
    writeln!(
        out,
        "\nEvery node applied the same commands in the same order. That is Raft."
    )?;
    Ok(())
}

async fn wait_for_leader(
    out: &mut String,
    handles: &[Handle],
    not: Option<NodeId>,
) -> DemoResult<NodeId> {
    for _ in 0..1000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if let Some(h) = handles.iter().find(|h| {
            let s = h.status();
            s.state == RaftState::Leader && Some(s.id) != not
        }) {
            let s = h.status();
            writeln!(out, "node {} is leader of term {}", s.id, s.term)?;
            return Ok(s.id);
        }
    }
    Err("no leader within 10 s".into())
}

fn show(out: &mut String, handles: &[Handle]) -> std::fmt::Result {
    for h in handles {
        let s = h.status();
        writeln!(
            out,
            "  node {}: {:<13} term {}  log up to {}  committed {}  applied {}",
            s.id,
            s.state.to_string(),
            s.term,
            s.last_log_index,
            s.commit_index,
            s.last_applied
        )?;
    }
    Ok(())
}
