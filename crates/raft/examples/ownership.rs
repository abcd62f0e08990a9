//! Ownership: why handlers take `&RequestVoteArgs`, when a clone is needed,
//! and what `Arc` is for. The journal's Day 1 questions: "why do we need
//! `vote_args.clone()`?", "can we avoid doing clone() during iteration?".
//!
//! Run it with `cargo run -p raft --example ownership`. Chapter 7 of the
//! guide ("Ownership and borrowing", "Single ownership versus Arc and
//! Mutex") is the prose version. The story is written into a `String` (so
//! that `tests/examples_run.rs` can check it), and `main` prints it.

use std::fmt::Write;
use std::sync::Arc;

use raft::log::RaftLog;
use raft::{LogEntry, RequestVoteArgs};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let mut out = String::new();
    let result = narrate(&mut out);
    print!("{out}");
    result
}

/// Takes `args` by value: the function becomes its owner, and the caller
/// cannot use it afterwards. To ask two voters, the caller must clone.
fn vote_by_value(voter: &RaftLog, args: RequestVoteArgs) -> bool {
    voter.is_up_to_date(args.last_log_index, args.last_log_term)
}

/// Borrows `args` (`&`): it only reads it, and the caller keeps it. This is
/// the shape of the real handlers (`RaftLog::is_up_to_date(&self, ..)`).
fn vote_by_ref(voter: &RaftLog, args: &RequestVoteArgs) -> bool {
    voter.is_up_to_date(args.last_log_index, args.last_log_term)
}

fn entry(term: u64, index: u64, cmd: &str) -> LogEntry {
    LogEntry::new(term, index, cmd.as_bytes().to_vec())
}

pub fn narrate(out: &mut String) -> Res<()> {
    // Two voters: node 2 has the candidate's entries, node 3 has one more.
    let voters = [
        RaftLog::new(vec![entry(1, 1, "SET x 1")]),
        RaftLog::new(vec![entry(1, 1, "SET x 1"), entry(1, 2, "SET y 2")]),
    ];
    let args = RequestVoteArgs {
        term: 2,
        candidate_id: 1,
        last_log_index: 1,
        last_log_term: 1,
        pre_vote: false,
        leadership_transfer: false,
    };

    // -- 1. Move versus borrow ------------------------------------------------
    writeln!(out, "-- 1. taking ownership versus borrowing --")?;
    let mut clones = 0;
    let mut granted = Vec::new();
    for voter in &voters {
        // Without `.clone()`: "use of moved value: `args`" on the second
        // turn of the loop, because the first call took `args` away.
        granted.push(vote_by_value(voter, args.clone()));
        clones += 1;
    }
    writeln!(
        out,
        "by value:     votes {granted:?}, {clones} clones of the args"
    )?;
    let granted: Vec<bool> = voters.iter().map(|v| vote_by_ref(v, &args)).collect();
    writeln!(out, "by reference: votes {granted:?}, 0 clones of the args")?;
    // `args` is still ours: nobody took it.
    writeln!(out, "args still usable: candidate {}", args.candidate_id)?;

    // -- 2. Cloning while iterating -------------------------------------------
    writeln!(out, "-- 2. one entry at a time, not the whole Vec --")?;
    let entries = vec![
        entry(2, 1, "SET x 1"),
        entry(2, 2, "SET y 2"),
        entry(2, 3, "DEL x"),
    ];
    // `for e in &entries` borrows the Vec; `e` is a `&LogEntry`. We clone the
    // entry itself only because the follower's log must own its copy.
    let mut follower: Vec<LogEntry> = Vec::new();
    for e in &entries {
        follower.push(e.clone());
    }
    writeln!(
        out,
        "borrowed and cloned each: follower has {}, leader still has {}",
        follower.len(),
        entries.len()
    )?;
    // The real follower does better: the AppendEntries it received is its
    // own and is dropped right after, so `append_from_leader` takes the Vec
    // by value and *moves* the entries it does not have yet into its log. (We
    // clone here only because this example keeps using `entries`: the
    // network made the follower's copy in the real thing.)
    let mut real = RaftLog::new(vec![entry(2, 1, "SET x 1")]);
    let had = real.last_index();
    real.append_from_leader(entries.clone());
    writeln!(
        out,
        "RaftLog::append_from_leader(entries): had {had}, moved in {}, leader still has {}",
        real.last_index() - had,
        entries.len()
    )?;
    // When the caller is done with the Vec, it can *move* it: no clone at all.
    // After `for e in entries`, using `entries` again is "borrow of moved value".
    let mut moved: Vec<LogEntry> = Vec::new();
    for e in entries {
        moved.push(e);
    }
    writeln!(out, "moved every entry: {} entries, 0 clones", moved.len())?;

    // -- 3. Arc: several owners, across tasks -----------------------------------
    writeln!(out, "-- 3. Arc: shared ownership across tasks --")?;
    // A spawned task may outlive the function that spawned it, so it cannot
    // borrow from it: it must own what it uses (`'static`). To give two tasks
    // the same log without copying it, wrap it in `Arc` (a reference-counted
    // pointer) and give each task its own `Arc::clone`, which copies the
    // pointer, not the entries. (RaftNode::send does this with the transport.)
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let shared: Arc<Vec<LogEntry>> = Arc::new(moved);
    let counts = runtime.block_on(async {
        let for_bytes = Arc::clone(&shared);
        let for_sets = Arc::clone(&shared);
        let owners = Arc::strong_count(&shared);
        let bytes = tokio::spawn(async move { for_bytes.iter().map(|e| e.data.len()).sum() });
        let sets = tokio::spawn(async move {
            for_sets
                .iter()
                .filter(|e| e.data.starts_with(b"SET"))
                .count()
        });
        let bytes: usize = bytes.await?;
        let sets: usize = sets.await?;
        Ok::<_, tokio::task::JoinError>((owners, bytes, sets))
    })?;
    let (owners, bytes, sets) = counts;
    writeln!(out, "owners once each task has its clone: {owners}")?;
    writeln!(
        out,
        "task 1 counted {bytes} command bytes, task 2 counted {sets} SETs"
    )?;
    writeln!(
        out,
        "owners after both finished: {}",
        Arc::strong_count(&shared)
    )?;
    // Single ownership needs none of this: the server task owns the core, and
    // everyone else sends it messages (chapter 7, "Single ownership versus Arc
    // and Mutex"). `Arc<Mutex<T>>` is for when several tasks must *change* it.
    Ok(())
}
