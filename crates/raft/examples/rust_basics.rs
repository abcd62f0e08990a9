//! Rust basics, on the raft crate's own types.
//!
//! Run it with `cargo run -p raft --example rust_basics`. Each section below
//! is one idea from chapter 7 of the guide (docs/07-rust-for-this-codebase.md):
//! variables, structs, enums and `match`, `Vec` and `Option`, `Result` and
//! `?`, loops and iterators. The story is written into a `String` (so that
//! `tests/examples_run.rs` can check it), and `main` prints it.

// `Write` is the trait that gives `writeln!(out, ...)` for a `String`.
use std::fmt::Write;
use std::time::Duration;

use raft::{ConfigError, LogEntry, LogIndex, RaftConfig, RaftState, RequestVoteArgs, Rpc, Term};

fn main() {
    let mut out = String::new();
    // Writing into a String cannot fail, so `expect` never fires here.
    narrate(&mut out).expect("writing to a String");
    print!("{out}");
}

/// Tells the whole story into `out`. It returns `std::fmt::Result` because
/// `writeln!` does; each `?` below passes on an error that, for a `String`,
/// never happens.
pub fn narrate(out: &mut String) -> std::fmt::Result {
    // -- 1. Variables are immutable unless declared `mut`. --------------------
    writeln!(out, "-- 1. variables and mutability --")?;
    let term: Term = 3; // `Term` is just another name for `u64` (types.rs)
    let mut commit_index: LogIndex = 0;
    // `commit_index` is `mut`, so it may change. `term += 1;` would be
    // refused: "cannot assign twice to immutable variable".
    commit_index += 2;
    writeln!(out, "term {term}, commit index {commit_index}")?;

    // -- 2. Structs: named fields, built with a constructor. ------------------
    writeln!(out, "-- 2. structs --")?;
    let entry = LogEntry::new(term, 1, b"SET x 1".to_vec());
    // Fields are read with a dot. `data` is bytes (`Vec<u8>`), shown as text:
    let text = String::from_utf8_lossy(&entry.data);
    writeln!(
        out,
        "entry {}: term {}, {:?}, command {text:?}",
        entry.index, entry.term, entry.kind
    )?;

    // -- 3. Enums and match: one value, one of several variants. -------------
    writeln!(out, "-- 3. enums and match --")?;
    let roles = [
        RaftState::Follower,
        RaftState::PreCandidate,
        RaftState::Candidate,
        RaftState::Leader,
    ];
    for state in roles {
        writeln!(out, "a {state} {}", what_it_does(state))?;
    }
    // An enum variant can carry data: `Rpc::RequestVote` carries the arguments.
    let rpc = Rpc::RequestVote(RequestVoteArgs {
        term: 4,
        candidate_id: 2,
        last_log_index: 1,
        last_log_term: 3,
        pre_vote: false,
        leadership_transfer: false,
    });
    // `match` takes the data back out; `if` guards refine a pattern.
    match &rpc {
        Rpc::RequestVote(args) if args.pre_vote => writeln!(out, "a pre-vote")?,
        Rpc::RequestVote(args) => writeln!(
            out,
            "{}: node {} asks for a vote in term {}",
            rpc.kind(),
            args.candidate_id,
            args.term
        )?,
        other => writeln!(out, "some other message: {}", other.kind())?,
    }

    // -- 4. Vec and Option: a log, and lookups that may find nothing. --------
    writeln!(out, "-- 4. Vec and Option --")?;
    // `entry` *moves* into the Vec: from here on, `entry` cannot be used.
    let mut log: Vec<LogEntry> = vec![entry];
    // `push` adds at the end; the Vec grows as needed.
    log.push(LogEntry::new(3, 2, b"SET y 2".to_vec()));
    log.push(LogEntry::new(4, 3, b"DEL x".to_vec()));
    writeln!(out, "the log holds {} entries", log.len())?;
    for index in [2, 9] {
        // `Option<&LogEntry>`: `Some(entry)` or `None`, never a null pointer.
        match entry_at(&log, index) {
            Some(e) => writeln!(
                out,
                "entry at index {index}: term {}, {:?}",
                e.term,
                String::from_utf8_lossy(&e.data)
            )?,
            None => writeln!(out, "entry at index {index}: none (the log is shorter)")?,
        }
    }
    // Combinators say the same thing in one line (compare RaftLog::last_term).
    let last_term = log.last().map_or(0, |e| e.term);
    writeln!(out, "last term: {last_term}")?;

    // -- 5. Result and `?`: errors are values. --------------------------------
    writeln!(out, "-- 5. Result and ? --")?;
    for heartbeat_ms in [50, 400] {
        match config_with_heartbeat(heartbeat_ms) {
            Ok(config) => writeln!(
                out,
                "heartbeat {heartbeat_ms}ms: ok, election timeout from {:?}",
                config.election_timeout_min
            )?,
            // `ConfigError` implements `Display` (thanks to thiserror): `{e}`.
            Err(e) => writeln!(out, "heartbeat {heartbeat_ms}ms: rejected: {e}")?,
        }
    }

    // -- 6. Loops and iterators. ----------------------------------------------
    writeln!(out, "-- 6. loops and iterators --")?;
    // `for x in &vec` borrows each element in turn; the Vec stays ours.
    for e in &log {
        writeln!(out, "  {} {}", e.index, String::from_utf8_lossy(&e.data))?;
    }
    // Iterator chains: filter, then count; map, then collect into a Vec.
    let in_term_3 = log.iter().filter(|e| e.term == 3).count();
    let indexes: Vec<LogIndex> = log.iter().map(|e| e.index).collect();
    writeln!(out, "{in_term_3} entries in term 3, indexes {indexes:?}")?;
    // A `while` loop, counting down to the first entry of term 4.
    let mut i = log.len();
    while i > 0 && log[i - 1].term == 4 {
        i -= 1;
    }
    writeln!(out, "the first entry of term 4 is at index {}", i + 1)?;
    Ok(())
}

/// A `match` must cover every variant: add one to `RaftState`, and this
/// function stops compiling until it says what the new role does.
fn what_it_does(state: RaftState) -> &'static str {
    match state {
        RaftState::Follower => "answers leaders and candidates",
        RaftState::PreCandidate => "asks whether it could win, without a new term",
        RaftState::Candidate => "asks for votes in a new term",
        RaftState::Leader => "handles client commands and replicates the log",
    }
}

/// Log indexes start at 1; `Vec` positions start at 0. `get` returns `None`
/// instead of crashing when the position is past the end (`log[8]` would panic).
fn entry_at(log: &[LogEntry], index: LogIndex) -> Option<&LogEntry> {
    if index == 0 {
        return None;
    }
    log.get((index - 1) as usize)
}

/// Returns the config, or why it is wrong. `validate()?` means: if it is
/// `Err(e)`, return `Err(e)` from this function right now; if `Ok`, go on.
fn config_with_heartbeat(ms: u64) -> Result<RaftConfig, ConfigError> {
    let config = RaftConfig {
        heartbeat_interval: Duration::from_millis(ms),
        ..RaftConfig::default() // every other field from the defaults
    };
    config.validate()?;
    Ok(config)
}
