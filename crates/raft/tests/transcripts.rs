//! Transcript tests: the paper's scenarios told as stories, in the style of
//! etcd-io/raft's datadriven tests.
//!
//! Each file in `tests/testdata/` is a sequence of commands, each followed
//! by `----` and the output it must produce:
//!
//! ```text
//! # §5.2: a candidate asks every other server for its vote.
//! campaign 1
//! ----
//! 1: candidate, term 1, voted for 1
//! 1→2 RequestVote term=1 last=0@0
//! 1→3 RequestVote term=1 last=0@0
//! ```
//!
//! Every node is the real [`raft::Driver`] (the code that runs in
//! production and in the simulator) over a [`MemoryStorage`] and a
//! [`ListStateMachine`]; this harness only plays the world: it queues the
//! messages the driver sends, writes what it asks to write and reports it
//! durable at once, and prints what happened. Nothing here knows Raft.
//!
//! Commands (ids are node ids, `client` is any word naming a waiting client):
//!
//! | command | what it does |
//! | --- | --- |
//! | `cluster 3 [pre-vote] [check-quorum] [lease-reads]` | a new cluster of 3 (the options are off unless named) |
//! | `campaign 1` | tick node 1 until its election timer fires and it asks for votes |
//! | `tick 1 [n]` / `heartbeat 1` | tick node 1 `n` times / one heartbeat interval |
//! | `deliver [n]` | deliver queued messages, and those they cause, until none is left (or `n` of them) |
//! | `drop` | lose every queued message |
//! | `propose 1 client data` | a client command, proposed on node 1 |
//! | `read 1 client` | a linearizable read (ReadIndex, thesis §6.4) on node 1 |
//! | `partition 1 2 / 3` / `heal` | cut the network into groups / join it again |
//! | `crash 2` / `restart 2` | lose node 2's memory and queued messages / rebuild it from its disk |
//! | `status` | one line per node: role, term, vote, commit, applied, log terms |
//! | `log 1` | node 1's entries |
//!
//! Run `REWRITE=1 cargo test -p raft --test transcripts` to write the actual
//! outputs into the files (then read the diff: the test is only as good as
//! the outputs someone checked against the paper).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::Path;

use raft::{
    DiskOp, Driver, Effect, EntryKind, Event, ListOutput, ListStateMachine, LogEntry,
    MemoryStorage, Message, NodeId, RaftConfig, RaftCore, Rpc, Storage,
};

/// One server: its driver (and so its core and state machine) and its disk.
struct Node {
    driver: Driver<ListStateMachine, String>,
    disk: MemoryStorage,
    up: bool,
}

struct World {
    ids: Vec<NodeId>,
    config: RaftConfig,
    nodes: BTreeMap<NodeId, Node>,
    queue: VecDeque<Message>,
    /// Partition group of each node; nodes talk only within a group.
    group: BTreeMap<NodeId, usize>,
    out: String,
}

impl World {
    fn new(n: u64, options: &[&str]) -> Result<World, String> {
        let mut config = RaftConfig {
            pre_vote: false,
            check_quorum: false,
            ..RaftConfig::default()
        };
        for option in options {
            match *option {
                "pre-vote" => config.pre_vote = true,
                "check-quorum" => config.check_quorum = true,
                "lease-reads" => {
                    config.check_quorum = true;
                    config.lease_reads = true;
                }
                other => return Err(format!("unknown cluster option {other:?}")),
            }
        }
        let ids: Vec<NodeId> = (1..=n).collect();
        let mut world = World {
            ids: ids.clone(),
            config,
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            group: BTreeMap::new(),
            out: String::new(),
        };
        for id in ids {
            let node = world.boot(id, MemoryStorage::new())?;
            world.nodes.insert(id, node);
        }
        Ok(world)
    }

    /// A node from what its disk holds (§5.1: only the persistent state of
    /// Figure 2 survives a crash).
    fn boot(&self, id: NodeId, mut disk: MemoryStorage) -> Result<Node, String> {
        let recovered = disk.recover().map_err(|e| e.to_string())?;
        // A fixed seed per node: the same file always tells the same story.
        let core = RaftCore::new(id, &self.ids, self.config.clone(), recovered, id)
            .map_err(|e| e.to_string())?;
        let mut driver = Driver::new(core, ListStateMachine::default());
        driver.record_applied(true);
        Ok(Node {
            driver,
            disk,
            up: true,
        })
    }

    fn node(&mut self, id: NodeId) -> Result<&mut Node, String> {
        match self.nodes.get_mut(&id) {
            Some(node) if node.up => Ok(node),
            Some(_) => Err(format!("node {id} is down")),
            None => Err(format!("no node {id}")),
        }
    }

    /// Carries out everything node `id`'s driver asks, the way `RaftNode`
    /// does: the round's IO first, then the state machine's work.
    fn settle(&mut self, id: NodeId) {
        loop {
            let Some(node) = self.nodes.get_mut(&id) else {
                return;
            };
            node.driver.process_ready();
            if !node.driver.has_effects() {
                if !node.driver.has_committed() {
                    return;
                }
                node.driver.apply_committed();
            }
            for effect in node.driver.take_effects() {
                self.carry_out(id, effect);
            }
        }
    }

    fn carry_out(&mut self, id: NodeId, effect: Effect<String, ListOutput>) {
        match effect {
            Effect::Send(m) | Effect::SendDurable(m) => self.queue.push_back(m),
            Effect::Disk(op) => {
                let Some(node) = self.nodes.get_mut(&id) else {
                    return;
                };
                let seq = op.seq();
                let written = match op {
                    DiskOp::Persist {
                        hard_state,
                        entries,
                        ..
                    } => node.disk.persist(hard_state.as_ref(), &entries),
                    DiskOp::Compact { index, .. } => node.disk.compact(index),
                    DiskOp::Reset { index, term, .. } => node.disk.reset(index, term),
                };
                match written {
                    // This disk is durable the moment it is written.
                    Ok(()) => node.driver.durable(seq),
                    Err(e) => self.line(format!("{id}: disk write failed: {e}")),
                }
            }
            Effect::Answer(client, result) => {
                let text = match result {
                    Ok(ListOutput::Len(n)) => format!("ok, {n} applied"),
                    Ok(ListOutput::Items(items)) => format!("ok, read {}", items_text(&items)),
                    Err(e) => format!("error: {e}"),
                };
                self.line(format!("{id}: client {client}: {text}"));
            }
            Effect::ReadIndex { id: read, index } => {
                self.line(format!("{id}: read {read} may be served at index {index}"))
            }
            Effect::Event(Event::StateChanged {
                state,
                term,
                leader,
            }) => {
                let mut text = format!("{id}: {} in term {term}", role(state));
                if let Some(l) = leader {
                    let _ = write!(text, ", leader {l}");
                }
                self.line(text);
            }
            Effect::Applied(entry) => {
                self.line(format!("{id}: applied {}", entry_text(&entry)));
            }
            Effect::SendSnapshot(to) => self.line(format!("{id}: would stream a snapshot to {to}")),
        }
    }

    fn line(&mut self, text: String) {
        self.out.push_str(&text);
        self.out.push('\n');
    }

    fn can_talk(&self, a: NodeId, b: NodeId) -> bool {
        let up = |id: NodeId| self.nodes.get(&id).is_some_and(|n| n.up);
        up(a) && up(b) && self.group.get(&a) == self.group.get(&b)
    }

    fn deliver(&mut self, limit: Option<usize>) -> Result<(), String> {
        let mut delivered = 0;
        while let Some(m) = self.queue.pop_front() {
            if limit.is_some_and(|l| delivered >= l) {
                self.queue.push_front(m);
                break;
            }
            delivered += 1;
            if delivered > 10_000 {
                return Err("message storm: the cluster never went quiet".into());
            }
            if !self.can_talk(m.from, m.to) {
                self.line(format!("{} (lost)", message_text(&m)));
                continue;
            }
            self.line(message_text(&m));
            let to = m.to;
            self.node(to)?.driver.step(m);
            self.settle(to);
        }
        Ok(())
    }

    /// Ticks `id` once; true if that started an election (or a pre-vote
    /// round): it asked for votes.
    fn tick(&mut self, id: NodeId) -> Result<bool, String> {
        self.node(id)?.driver.tick();
        let queued = self.queue.len();
        self.settle(id);
        Ok(self
            .queue
            .iter()
            .skip(queued)
            .any(|m| m.from == id && matches!(m.rpc, Rpc::RequestVote(_))))
    }

    fn status(&mut self) {
        let lines: Vec<String> = self
            .nodes
            .iter()
            .map(|(id, node)| {
                if !node.up {
                    return format!("{id}: down");
                }
                let core = node.driver.core();
                let vote = core
                    .voted_for()
                    .map_or("none".to_string(), |v| v.to_string());
                let terms: Vec<String> = (core.snapshot_index() + 1..=core.last_log_index())
                    .map(|i| core.term_at(i).unwrap_or(0).to_string())
                    .collect();
                format!(
                    "{id}: {} term={} vote={vote} commit={} applied={} log=[{}]",
                    role(core.state()),
                    core.term(),
                    core.commit_index(),
                    node.driver.last_applied(),
                    terms.join(" ")
                )
            })
            .collect();
        for l in lines {
            self.line(l);
        }
    }

    fn run(&mut self, words: &[&str]) -> Result<(), String> {
        let id = |i: usize| -> Result<NodeId, String> {
            words
                .get(i)
                .ok_or_else(|| format!("{}: missing node id", words[0]))?
                .parse()
                .map_err(|_| format!("{}: bad node id {:?}", words[0], words[i]))
        };
        match words[0] {
            "campaign" => {
                let id = id(1)?;
                for _ in 0..10_000 {
                    if self.tick(id)? {
                        return Ok(());
                    }
                }
                Err(format!("node {id} never campaigned"))
            }
            "tick" => {
                let id = id(1)?;
                let n: u64 = words
                    .get(2)
                    .map_or(Ok(1), |w| w.parse())
                    .map_err(|_| "bad count")?;
                for _ in 0..n {
                    self.tick(id)?;
                }
                Ok(())
            }
            "heartbeat" => {
                let id = id(1)?;
                for _ in 0..self.config.heartbeat_ticks() {
                    self.tick(id)?;
                }
                Ok(())
            }
            "deliver" => {
                let limit = match words.get(1) {
                    Some(w) => Some(w.parse().map_err(|_| "deliver: bad count")?),
                    None => None,
                };
                self.deliver(limit)
            }
            "drop" => {
                let n = self.queue.len();
                self.queue.clear();
                self.line(format!("dropped {n} message(s)"));
                Ok(())
            }
            "propose" => {
                let id = id(1)?;
                let (Some(client), Some(data)) = (words.get(2), words.get(3)) else {
                    return Err("propose: want `propose <node> <client> <data>`".into());
                };
                let at = self
                    .node(id)?
                    .driver
                    .propose(data.as_bytes().to_vec(), client.to_string());
                if let Some((index, term)) = at {
                    self.line(format!("{id}: {client}'s {data:?} is entry {index}@{term}"));
                }
                self.settle(id);
                Ok(())
            }
            "read" => {
                let id = id(1)?;
                let Some(client) = words.get(2) else {
                    return Err("read: want `read <node> <client>`".into());
                };
                if let Some(read) = self.node(id)?.driver.read(Vec::new(), client.to_string()) {
                    self.line(format!("{id}: {client}'s read is read {read}"));
                }
                self.settle(id);
                Ok(())
            }
            "partition" => {
                self.group.clear();
                for (g, part) in words[1..].split(|w| *w == "/").enumerate() {
                    for w in part {
                        let n: NodeId = w.parse().map_err(|_| format!("bad node id {w:?}"))?;
                        self.group.insert(n, g + 1);
                    }
                }
                Ok(())
            }
            "heal" => {
                self.group.clear();
                Ok(())
            }
            "crash" => {
                let id = id(1)?;
                let node = self.node(id)?;
                // Clients waiting on it learn nothing more from it.
                node.driver.stop();
                node.up = false;
                self.settle_effects_of_down(id);
                self.queue.retain(|m| m.to != id && m.from != id);
                Ok(())
            }
            "restart" => {
                let id = id(1)?;
                let Some(old) = self.nodes.remove(&id) else {
                    return Err(format!("no node {id}"));
                };
                let node = self.boot(id, old.disk)?;
                self.nodes.insert(id, node);
                Ok(())
            }
            "status" => {
                self.status();
                Ok(())
            }
            "log" => {
                let id = id(1)?;
                let core = self.node(id)?.driver.core();
                let lines: Vec<String> = (core.snapshot_index() + 1..=core.last_log_index())
                    .filter_map(|i| core.entry(i).map(entry_text))
                    .collect();
                for l in lines {
                    self.line(l);
                }
                Ok(())
            }
            other => Err(format!("unknown command {other:?}")),
        }
    }

    /// The answers a crashed node's driver gave its clients as it stopped.
    fn settle_effects_of_down(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        for effect in node.driver.take_effects() {
            if let Effect::Answer(..) = effect {
                self.carry_out(id, effect);
            }
        }
    }
}

fn role(state: raft::RaftState) -> &'static str {
    match state {
        raft::RaftState::Follower => "follower",
        raft::RaftState::PreCandidate => "pre-candidate",
        raft::RaftState::Candidate => "candidate",
        raft::RaftState::Leader => "leader",
    }
}

fn items_text(items: &[Vec<u8>]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|i| String::from_utf8_lossy(i).into_owned())
        .collect();
    format!("[{}]", items.join(" "))
}

fn entry_text(e: &LogEntry) -> String {
    match e.kind {
        EntryKind::Noop => format!("{}@{} no-op", e.index, e.term),
        EntryKind::ConfChange => match raft::Membership::decode(&e.data) {
            Ok(m) => format!(
                "{}@{} config voters={:?} learners={:?}",
                e.index,
                e.term,
                m.voters(),
                m.learners()
            ),
            Err(why) => format!("{}@{} config (bad: {why})", e.index, e.term),
        },
        EntryKind::Normal => format!(
            "{}@{} {:?}",
            e.index,
            e.term,
            String::from_utf8_lossy(&e.data)
        ),
    }
}

/// One line per message, with the fields the paper's Figure 2 names.
fn message_text(m: &Message) -> String {
    let body = match &m.rpc {
        Rpc::RequestVote(a) => format!(
            "{} term={} last={}@{}",
            m.rpc.kind(),
            a.term,
            a.last_log_index,
            a.last_log_term
        ),
        Rpc::RequestVoteReply(r) => format!(
            "{} term={} {}",
            m.rpc.kind(),
            r.term,
            if r.vote_granted {
                "granted"
            } else {
                "rejected"
            }
        ),
        Rpc::AppendEntries(a) => {
            let entries: Vec<String> = a.entries.iter().map(entry_text).collect();
            format!(
                "AppendEntries term={} prev={}@{} commit={} entries=[{}]",
                a.term,
                a.prev_log_index,
                a.prev_log_term,
                a.leader_commit,
                entries.join(", ")
            )
        }
        Rpc::AppendEntriesReply(r) if r.success => format!(
            "AppendEntriesReply term={} ok match={}",
            r.term, r.match_index
        ),
        Rpc::AppendEntriesReply(r) => {
            let hint = match r.conflict_term {
                Some(t) => format!("conflict term {t} from {}", r.conflict_index),
                None => format!("log ends before {}", r.conflict_index),
            };
            format!(
                "AppendEntriesReply term={} rejected prev={} ({hint})",
                r.term, r.rejected_prev_index
            )
        }
        Rpc::InstallSnapshot(a) => format!(
            "InstallSnapshot term={} last={}@{} offset={} done={}",
            a.term, a.last_included_index, a.last_included_term, a.offset, a.done
        ),
        Rpc::InstallSnapshotReply(r) => {
            format!("InstallSnapshotReply term={} success={}", r.term, r.success)
        }
        Rpc::TimeoutNow(a) => format!("TimeoutNow term={}", a.term),
        Rpc::TimeoutNowReply(r) => format!("TimeoutNowReply term={}", r.term),
    };
    format!("{}→{} {body}", m.from, m.to)
}

/// One command of a transcript and the output it must produce.
struct Case {
    /// Comment and blank lines before the command, kept when rewriting.
    preamble: Vec<String>,
    command: String,
    line: usize,
    expected: String,
}

fn parse(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    let mut preamble = Vec::new();
    while let Some((n, line)) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            preamble.push(line.to_string());
            continue;
        }
        let command = line.to_string();
        let mut expected = String::new();
        if lines.peek().is_some_and(|(_, l)| l.trim() == "----") {
            lines.next();
            while let Some((_, l)) = lines.peek() {
                if l.trim().is_empty() {
                    break;
                }
                expected.push_str(l);
                expected.push('\n');
                lines.next();
            }
        }
        cases.push(Case {
            preamble: std::mem::take(&mut preamble),
            command,
            line: n + 1,
            expected,
        });
    }
    cases
}

/// Runs the transcript `testdata/<name>.txt`, failing at the first command
/// whose output differs (or rewriting the file with `REWRITE=1`).
fn transcript(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata")
        .join(format!("{name}.txt"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let rewrite = std::env::var_os("REWRITE").is_some();
    let mut world: Option<World> = None;
    let mut rewritten = String::new();
    for case in parse(&text) {
        let words: Vec<&str> = case.command.split_whitespace().collect();
        let output = if words[0] == "cluster" {
            let n = words.get(1).and_then(|w| w.parse().ok()).unwrap_or(3);
            match World::new(n, &words[2..]) {
                Ok(w) => {
                    world = Some(w);
                    String::new()
                }
                Err(e) => format!("error: {e}\n"),
            }
        } else {
            let w = world
                .as_mut()
                .unwrap_or_else(|| panic!("{path:?}:{}: no `cluster` yet", case.line));
            w.out.clear();
            if let Err(e) = w.run(&words) {
                w.line(format!("error: {e}"));
            }
            std::mem::take(&mut w.out)
        };
        let output = if output.is_empty() {
            "ok\n".to_string()
        } else {
            output
        };
        for l in &case.preamble {
            rewritten.push_str(l);
            rewritten.push('\n');
        }
        let _ = write!(rewritten, "{}\n----\n{output}", case.command);
        if !rewrite && output != case.expected {
            panic!(
                "{}:{}: `{}` printed\n{output}but the transcript expects\n{}\
                 (REWRITE=1 cargo test -p raft --test transcripts rewrites the file)",
                path.display(),
                case.line,
                case.command,
                case.expected
            );
        }
    }
    if rewrite {
        std::fs::write(&path, rewritten).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    }
}

#[test]
fn section_5_1_persistent_state_survives_a_crash() {
    transcript("5_1_crash_and_restart");
}

#[test]
fn section_5_2_leader_election() {
    transcript("5_2_leader_election");
}

#[test]
fn section_5_3_log_replication() {
    transcript("5_3_log_replication");
}

#[test]
fn section_5_3_log_repair_and_overwritten_clients() {
    transcript("5_3_log_repair");
}

#[test]
fn section_5_4_1_election_restriction() {
    transcript("5_4_1_election_restriction");
}

#[test]
fn thesis_6_4_read_index() {
    transcript("6_4_read_index");
}

#[test]
fn thesis_9_6_prevote_keeps_a_returning_server_from_disrupting() {
    transcript("9_6_prevote");
}
