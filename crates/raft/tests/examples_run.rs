//! Runs every example in `examples/` and checks what it says.
//!
//! Each example writes its story into a `String` through a `narrate`
//! function, and its `main` only prints that string. Including the example
//! file as a module runs the very same code here, so an example that stops
//! telling the truth (or stops compiling) fails the test suite.
//!
//! The checks are about meaning (who is leader, what was applied, which
//! comparisons are true), not about the exact wording of every line.

#[allow(dead_code)]
#[path = "../examples/demo.rs"]
mod demo;

#[allow(dead_code)]
#[path = "../examples/rust_basics.rs"]
mod rust_basics;

#[allow(dead_code)]
#[path = "../examples/partialeq_vs_eq.rs"]
mod partialeq_vs_eq;

#[allow(dead_code)]
#[path = "../examples/ownership.rs"]
mod ownership;

/// One row of the demo's status table:
/// `  node 1: follower      term 0  log up to 0  committed 0  applied 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    id: u64,
    state: String,
    term: u64,
    last_log_index: u64,
    committed: u64,
    applied: u64,
}

fn parse_row(line: &str) -> Option<Row> {
    let rest = line.strip_prefix("  node ")?;
    let (id, rest) = rest.split_once(':')?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    // [state, "term", t, "log", "up", "to", l, "committed", c, "applied", a]
    match words.as_slice() {
        [state, "term", t, "log", "up", "to", l, "committed", c, "applied", a] => Some(Row {
            id: id.parse().ok()?,
            state: state.to_string(),
            term: t.parse().ok()?,
            last_log_index: l.parse().ok()?,
            committed: c.parse().ok()?,
            applied: a.parse().ok()?,
        }),
        _ => None,
    }
}

/// The demo's output cut into its numbered steps: `sections[n]` holds the
/// lines after the heading `-- n. ... --` (section 0 is the preamble).
fn sections(text: &str) -> Vec<Vec<&str>> {
    let mut out = vec![Vec::new()];
    for line in text.lines() {
        if line.starts_with("-- ") && line.ends_with(" --") {
            out.push(Vec::new());
        } else if !line.trim().is_empty() {
            out.last_mut().unwrap().push(line);
        }
    }
    out
}

fn rows(section: &[&str]) -> Vec<Row> {
    section.iter().filter_map(|l| parse_row(l)).collect()
}

/// `node 2 is leader of term 1` → (2, 1).
fn leader_line(section: &[&str]) -> (u64, u64) {
    let line = section
        .iter()
        .find(|l| l.contains(" is leader of term "))
        .unwrap_or_else(|| panic!("no leader line in {section:#?}"));
    let (node, term) = line
        .strip_prefix("node ")
        .and_then(|l| l.split_once(" is leader of term "))
        .unwrap();
    (node.parse().unwrap(), term.parse().unwrap())
}

fn run_demo() -> String {
    let mut out = String::new();
    if let Err(e) = demo::narrate(&mut out) {
        panic!("the demo failed: {e}\n--- output so far ---\n{out}");
    }
    out
}

#[test]
fn demo_narrates_election_replication_refusal_and_failover() {
    let out = run_demo();
    let s = sections(&out);
    assert_eq!(s.len(), 7, "a preamble and six steps:\n{out}");

    // 1. Three followers, nothing in any log.
    let start = rows(&s[1]);
    assert_eq!(start.len(), 3, "{out}");
    for r in &start {
        assert_eq!(
            (r.state.as_str(), r.term, r.last_log_index),
            ("follower", 0, 0)
        );
    }

    // 2. One leader is elected; the other two follow it in the same term.
    let (leader, term) = leader_line(&s[2]);
    assert!(term >= 1, "{out}");
    let after_election = rows(&s[2]);
    assert_eq!(after_election.len(), 3, "{out}");
    for r in &after_election {
        let want = if r.id == leader { "leader" } else { "follower" };
        assert_eq!((r.state.as_str(), r.term), (want, term), "{out}");
    }

    // 3. A follower refuses a command and names the leader.
    let refusal = s[3]
        .iter()
        .find(|l| l.contains("says: not the leader, try node"))
        .unwrap_or_else(|| panic!("no refusal:\n{out}"));
    let (who, hint) = refusal
        .strip_prefix("node ")
        .and_then(|l| l.split_once(" says: not the leader, try node "))
        .unwrap();
    assert_ne!(who.parse::<u64>().unwrap(), leader, "{out}");
    assert_eq!(hint.parse::<u64>().unwrap(), leader, "{out}");

    // 4. Both commands are committed and applied on the leader, in order,
    //    and then on every node: the leader's no-op (index 1) and the two
    //    commands (indexes 2 and 3).
    let submitted: Vec<&&str> = s[4].iter().filter(|l| l.starts_with("submitted")).collect();
    assert_eq!(
        submitted,
        [
            &"submitted \"SET x 1\": committed and applied, state machine says Len(1)",
            &"submitted \"SET y 2\": committed and applied, state machine says Len(2)",
        ],
        "{out}"
    );
    let replicated = rows(&s[4]);
    assert_eq!(replicated.len(), 3, "{out}");
    for r in &replicated {
        assert_eq!(
            (r.last_log_index, r.committed, r.applied),
            (3, 3, 3),
            "node {} has not applied both commands:\n{out}",
            r.id
        );
    }

    // 5. The leader is isolated; another node wins a later term and commits.
    let (new_leader, new_term) = leader_line(&s[5]);
    assert_ne!(new_leader, leader, "{out}");
    assert!(new_term > term, "{out}");
    let commit = format!("node {new_leader} commits \"SET z 3\": Len(3)");
    assert!(s[5].contains(&commit.as_str()), "{out}");

    // 6. After healing: one leader (the new one), the old leader has stepped
    //    down, and every node has applied the same prefix in the same term.
    let end = rows(&s[6]);
    assert_eq!(end.len(), 3, "{out}");
    let leaders: Vec<u64> = end
        .iter()
        .filter(|r| r.state == "leader")
        .map(|r| r.id)
        .collect();
    assert_eq!(leaders, [new_leader], "{out}");
    let old = end.iter().find(|r| r.id == leader).unwrap();
    assert_eq!(old.state, "follower", "{out}");
    for r in &end {
        assert_eq!(r.term, new_term, "{out}");
        assert_eq!(r.applied, end[0].applied, "{out}");
        assert!(
            r.applied >= 5,
            "no-op, 2 commands, no-op, 1 command:\n{out}"
        );
    }
    let read =
        format!("linearizable read on node {new_leader}: [\"SET x 1\", \"SET y 2\", \"SET z 3\"]");
    assert!(s[6].contains(&read.as_str()), "{out}");
}

#[test]
fn demo_tells_the_same_story_every_time() {
    // Paused clock and fixed seeds: two runs print exactly the same text.
    assert_eq!(run_demo(), run_demo());
}

fn run(narrate: fn(&mut String) -> std::fmt::Result) -> String {
    let mut out = String::new();
    narrate(&mut out).expect("writing to a String");
    out
}

fn assert_lines(out: &str, wanted: &[&str]) {
    for want in wanted {
        assert!(
            out.lines().any(|l| l == *want),
            "missing line {want:?} in:\n{out}"
        );
    }
}

#[test]
fn rust_basics_shows_each_idea_on_raft_types() {
    let out = run(rust_basics::narrate);
    assert_lines(
        &out,
        &[
            // variables: an immutable term, a mutable commit index
            "term 3, commit index 2",
            // structs: a LogEntry's fields
            "entry 1: term 3, Normal, command \"SET x 1\"",
            // enums and match: every role is described, Rpc data is matched out
            "a follower answers leaders and candidates",
            "a pre-candidate asks whether it could win, without a new term",
            "a candidate asks for votes in a new term",
            "a leader handles client commands and replicates the log",
            "RequestVote: node 2 asks for a vote in term 4",
            // Vec and Option: a hit and a miss
            "the log holds 3 entries",
            "entry at index 2: term 3, \"SET y 2\"",
            "entry at index 9: none (the log is shorter)",
            "last term: 4",
            // Result and ?: validate() accepts one config and explains the other
            "heartbeat 50ms: ok, election timeout from 300ms",
            "heartbeat 400ms: rejected: heartbeat interval (400ms) must be below \
             the minimum election timeout (300ms)",
            // loops and iterators
            "2 entries in term 3, indexes [1, 2, 3]",
            "the first entry of term 4 is at index 3",
        ],
    );
}

#[test]
fn partialeq_vs_eq_shows_nan_and_hash_keys() {
    let out = run(partialeq_vs_eq::narrate);
    assert_lines(
        &out,
        &[
            "PartialEq gives ==: Leader == Leader is true, Leader == Follower is false",
            "a cloned LogEntry is == to the original: true",
            // RaftState is Eq + Hash: roles counted in a HashMap
            "leaders: 1",
            "candidates: 1",
            "followers: 3",
            // Term is a u64: Eq + Hash
            "distinct terms in a log: [1, 2, 3]",
            "every Term equals itself: true; so does every RaftState: true",
            // f64 is only PartialEq
            "f64::NAN == f64::NAN is false",
            "1.5 == 1.5 is true",
            "f64::NAN.total_cmp(&f64::NAN) is Equal",
            "sorted with total_cmp: [0.0, 0.1, 0.5, NaN]",
            "0.1 vs NaN: partial_cmp gives None, total_cmp gives Less",
            "loss on link 1 -> 2: Some(0.25)",
            "a LinkLoss equals itself: true; one holding NaN does not: false",
        ],
    );
}

#[test]
fn ownership_shows_borrow_versus_clone_and_arc() {
    let mut out = String::new();
    ownership::narrate(&mut out).expect("the ownership example");
    assert_lines(
        &out,
        &[
            // the same votes either way; only the by-value version clones
            "by value:     votes [true, false], 2 clones of the args",
            "by reference: votes [true, false], 0 clones of the args",
            "args still usable: candidate 1",
            // iterating by reference keeps the leader's Vec
            "borrowed and cloned each: follower has 3, leader still has 3",
            "RaftLog::append_from_leader(entries): had 1, moved in 2, leader still has 3",
            "moved every entry: 3 entries, 0 clones",
            // Arc: three owners while two tasks hold a clone, one afterwards
            "owners once each task has its clone: 3",
            "task 1 counted 19 command bytes, task 2 counted 2 SETs",
            "owners after both finished: 1",
        ],
    );
}

/// Every chapter listed in `docs/SUMMARY.md` is included in `src/guide.rs`,
/// so that `cargo test --doc` compiles its Rust blocks.
#[test]
fn every_chapter_of_the_guide_is_doc_tested() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let summary = std::fs::read_to_string(root.join("../../docs/SUMMARY.md")).unwrap();
    let guide = std::fs::read_to_string(root.join("src/guide.rs")).unwrap();
    let mut chapters = 0;
    for part in summary.split("](").skip(1) {
        let file = part.split(')').next().unwrap();
        let include = format!("include_str!(\"../../../docs/{file}\")");
        assert!(guide.contains(&include), "src/guide.rs lacks {include}");
        chapters += 1;
    }
    assert!(chapters >= 13, "README.md and chapters 1 to 12");
}
