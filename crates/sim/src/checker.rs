//! The invariants, checked after every step of the simulation.
//!
//! Figure 3 of the Raft paper lists the properties Raft guarantees at all
//! times; each has a check here, fed by what the simulator observes of every
//! node after every event (its role, term, commit index, the entries in its
//! `Ready`s and the entries it applies). The checks are incremental: each
//! step costs what changed, not the size of the logs.
//!
//! With log compaction (§7) a node no longer holds the entries its snapshot
//! covers. Those are committed, so the checks over entries (Log Matching,
//! Leader Completeness, durability) look only at entries still held and
//! take the snapshot's last `(index, term)` as a matching entry; what the
//! snapshot covers is checked through the *state*: State Machine Safety also
//! records a digest of the KV state after each index, and every node that
//! reaches that index, by applying entries or by restoring a snapshot,
//! must have the same state there.

use std::collections::HashMap;

use raft::{LogEntry, LogIndex, NodeId, RaftCore, Term};

/// Which property broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// At most one leader per term.
    ElectionSafety,
    /// A leader never overwrites or deletes entries in its log.
    LeaderAppendOnly,
    /// Same index and term ⇒ same entry and identical logs up to it.
    LogMatching,
    /// A committed entry is in the log of every leader of a later term.
    LeaderCompleteness,
    /// An entry counted as committed while a server lacking it can still
    /// be elected (the Figure 8 hazard).
    UnsafeCommit,
    /// No two nodes apply different entries at the same index.
    StateMachineSafety,
    /// A node's commit index went down without a crash.
    CommitIndexDecreased,
    /// A node dropped or replaced an entry at or below its commit index.
    CommittedEntryRemoved,
    /// A reply or vote left before the state it depends on was durable.
    PersistBeforeReply,
    /// The core asked the disk for the impossible (a gap in the log).
    StorageContract,
    /// A write acknowledged to a client is not in the final log.
    Durability,
    /// A ReadIndex read was served below an index committed before it began.
    StaleRead,
    /// The client history has no linearization.
    Linearizability,
    /// After the last fault healed, no leader committed within the bound.
    Liveness,
    /// Only a voter of the configuration in force in its log leads (or, by
    /// thesis §4.2.2, a voter whose own removal it has not seen commit).
    Membership,
}

impl ViolationKind {
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::ElectionSafety => "Election Safety",
            ViolationKind::LeaderAppendOnly => "Leader Append-Only",
            ViolationKind::LogMatching => "Log Matching",
            ViolationKind::LeaderCompleteness => "Leader Completeness",
            ViolationKind::UnsafeCommit => "commit safety",
            ViolationKind::StaleRead => "ReadIndex freshness",
            ViolationKind::StateMachineSafety => "State Machine Safety",
            ViolationKind::CommitIndexDecreased => "commit index never decreases",
            ViolationKind::CommittedEntryRemoved => "committed entries are never removed",
            ViolationKind::PersistBeforeReply => "persist before replying",
            ViolationKind::StorageContract => "storage contract",
            ViolationKind::Durability => "durability of acknowledged writes",
            ViolationKind::Linearizability => "linearizability",
            ViolationKind::Liveness => "liveness after faults heal",
            ViolationKind::Membership => "only voters lead",
        }
    }

    /// Where the property comes from.
    pub fn source(self) -> &'static str {
        match self {
            ViolationKind::ElectionSafety => "§5.2, Figure 3",
            ViolationKind::LeaderAppendOnly => "§5.3, Figure 3",
            ViolationKind::LogMatching => "§5.3, Figure 3",
            ViolationKind::LeaderCompleteness => "§5.4.1, Figure 3",
            ViolationKind::UnsafeCommit => {
                "§5.4.2, Figure 8: only a majority that blocks every other log commits"
            }
            ViolationKind::StaleRead => "thesis §6.4: the read index covers every earlier commit",
            ViolationKind::StateMachineSafety => "§5.4.3, Figure 3",
            ViolationKind::CommitIndexDecreased => "Figure 2: commitIndex increases monotonically",
            ViolationKind::CommittedEntryRemoved => "§5.3, §5.4: committed entries are durable",
            ViolationKind::PersistBeforeReply => "Figure 2: persist before responding to RPCs",
            ViolationKind::StorageContract => "Storage::persist: entries are consecutive",
            ViolationKind::Durability => "§5.3 and §8: a committed write survives",
            ViolationKind::Linearizability => "§8, thesis §6: linearizable semantics",
            ViolationKind::Liveness => "§5.2, §9.1: progress once a majority can talk",
            ViolationKind::Membership => {
                "thesis §4.1, §4.2.2: a server is a voter of the configuration it leads in"
            }
        }
    }
}

/// A broken invariant: what, when (virtual µs) and the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    pub at_us: u64,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}) violated at t={}: {}",
            self.kind.name(),
            self.kind.source(),
            crate::trace::fmt_time(self.at_us),
            self.detail
        )
    }
}

type Check = Result<(), (ViolationKind, String)>;

/// One server for commit safety: its id, whether it may vote, and each log
/// it could present with the voters of the configuration it would campaign
/// in and whether it may campaign with that log (`RaftCore::may_campaign`).
pub type CandidateLogs<'a> = (NodeId, bool, Vec<(LogView, &'a [NodeId], bool)>);

/// What commit safety needs to know of one log a server could present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogView {
    pub last_index: LogIndex,
    pub last_term: Term,
    /// The term of the entry at the committed index being checked, if any.
    pub term_at_committed: Option<Term>,
    /// Which index `term_at_committed` refers to.
    pub committed_index: LogIndex,
}

impl LogView {
    fn term_at(&self, index: LogIndex) -> Option<Term> {
        debug_assert_eq!(index, self.committed_index);
        self.term_at_committed
    }

    /// §5.4.1: later last term wins; same last term, the longer log wins.
    fn at_least_as_up_to_date_as(&self, other: &LogView) -> bool {
        self.last_term > other.last_term
            || (self.last_term == other.last_term && self.last_index >= other.last_index)
    }
}

fn fail(kind: ViolationKind, detail: String) -> Check {
    Err((kind, detail))
}

/// An entry's identity beyond `(index, term)`: its content and the term of
/// the entry before it (which, by induction, pins the whole prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    content: u64,
    prev_term: Term,
}

fn content_hash(e: &LogEntry) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let kind = e.kind.to_byte();
    for b in std::iter::once(kind).chain(e.data.iter().copied()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[derive(Debug, Clone, Copy)]
struct Committed {
    term: Term,
    content: u64,
    /// The term of the node that first saw it committed: an upper bound on
    /// the term in which it was committed. Leaders of later terms must hold it.
    commit_term: Term,
    first_seen_by: NodeId,
}

/// What the checks remember across steps.
#[derive(Debug, Default)]
pub struct Invariants {
    leaders: HashMap<Term, NodeId>,
    entries: HashMap<(LogIndex, Term), Fingerprint>,
    /// `committed[i - 1]`: the entry at index `i` once any node committed it.
    committed: Vec<Committed>,
    /// `applied[i - 1]`: the entry first applied at index `i`, and by whom.
    applied: Vec<(Term, u64, NodeId)>,
    /// `states[i - 1]`: the digest of the KV state after index `i`, the
    /// first node that reached it, and how (`true`: from a snapshot).
    states: Vec<(u64, NodeId, bool)>,
    /// Writes acknowledged to clients: `(index, term, op id)`.
    acked: Vec<(LogIndex, Term, usize)>,
}

impl Invariants {
    pub fn new() -> Self {
        Self::default()
    }

    /// Election Safety (§5.2): "at most one leader can be elected in a given term".
    pub fn on_leader(&mut self, node: NodeId, term: Term) -> Check {
        let first = *self.leaders.entry(term).or_insert(node);
        if first != node {
            return fail(
                ViolationKind::ElectionSafety,
                format!("n{node} became leader of term {term}, but n{first} was already leader of term {term}"),
            );
        }
        Ok(())
    }

    pub fn leader_of(&self, term: Term) -> Option<NodeId> {
        self.leaders.get(&term).copied()
    }

    /// Log Matching (§5.3), checked on every entry a node writes: an entry is
    /// identified by `(index, term)`; two with the same identity must have the
    /// same content and the same predecessor term, which by induction makes
    /// the logs identical up to there. Also: no node replaces an entry at or
    /// below its own commit index with a different one.
    pub fn on_written(
        &mut self,
        node: NodeId,
        core: &RaftCore,
        entries: &[LogEntry],
        node_commit: LogIndex,
    ) -> Check {
        for e in entries {
            let prev_term = if e.index <= 1 {
                0
            } else {
                // The snapshot's last entry counts: its term is known.
                match core.term_at(e.index - 1) {
                    Some(p) => p,
                    None => {
                        return fail(
                            ViolationKind::LogMatching,
                            format!("n{node} wrote index {} with no entry before it", e.index),
                        )
                    }
                }
            };
            let fp = Fingerprint {
                content: content_hash(e),
                prev_term,
            };
            let known = *self.entries.entry((e.index, e.term)).or_insert(fp);
            if known != fp {
                let what = if known.content != fp.content {
                    "a different command".to_string()
                } else {
                    format!(
                        "a different predecessor (term {} at index {}, elsewhere term {})",
                        fp.prev_term,
                        e.index - 1,
                        known.prev_term
                    )
                };
                return fail(
                    ViolationKind::LogMatching,
                    format!(
                        "n{node} holds index {} term {} with {what} than another node's entry {}/{}",
                        e.index, e.term, e.index, e.term
                    ),
                );
            }
            if e.index <= node_commit {
                if let Some(c) = self.committed.get((e.index - 1) as usize) {
                    if c.term != e.term || c.content != fp.content {
                        return fail(
                            ViolationKind::CommittedEntryRemoved,
                            format!(
                                "n{node} replaced committed index {} (term {}) with term {} although its commit index is {node_commit}",
                                e.index, c.term, e.term
                            ),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// A node's commit index rose from `from` to `to`: remember what was
    /// committed, and check it agrees with what others committed there.
    pub fn on_commit(
        &mut self,
        node: NodeId,
        core: &RaftCore,
        from: LogIndex,
        to: LogIndex,
    ) -> Check {
        // What a snapshot covers was committed before it was taken; it is
        // checked through the state digest instead.
        for i in from.max(core.snapshot_index()) + 1..=to {
            let Some(e) = core.entry(i) else {
                return fail(
                    ViolationKind::CommittedEntryRemoved,
                    format!(
                        "n{node} has commit index {to} but its log ends at {}",
                        core.last_log_index()
                    ),
                );
            };
            let content = content_hash(e);
            match self.committed.get((i - 1) as usize) {
                Some(c) if c.term != e.term || c.content != content => {
                    return fail(
                        ViolationKind::StateMachineSafety,
                        format!(
                            "n{node} committed index {i} with term {}, but n{} committed term {} there",
                            e.term, c.first_seen_by, c.term
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    // Commit indexes are prefixes, so indexes arrive in
                    // order; a node whose snapshot covers what nobody was
                    // seen committing has a snapshot of nothing committed.
                    if self.committed.len() as LogIndex != i - 1 {
                        return fail(
                            ViolationKind::StateMachineSafety,
                            format!(
                                "n{node} committed index {i}, but only {} indexes were ever seen committed (its snapshot ends at {})",
                                self.committed.len(),
                                core.snapshot_index()
                            ),
                        );
                    }
                    self.committed.push(Committed {
                        term: e.term,
                        content,
                        commit_term: core.term(),
                        first_seen_by: node,
                    });
                }
            }
        }
        Ok(())
    }

    /// Leader Completeness (§5.4): a leader of term `T` holds every entry
    /// committed in a term before `T`. Checked when a node takes office.
    /// Entries a snapshot covers are not held any more: the snapshot's last
    /// entry must have the committed term, and what it covers is checked by
    /// the state digest.
    pub fn on_elected(&self, node: NodeId, core: &RaftCore) -> Check {
        let term = core.term();
        let (snap_index, snap_term) = (core.snapshot_index(), core.snapshot_term());
        if snap_index > 0 {
            if let Some(c) = self.committed.get((snap_index - 1) as usize) {
                if c.term != snap_term {
                    return fail(
                        ViolationKind::LeaderCompleteness,
                        format!(
                            "n{node} became leader of term {term} with a snapshot ending at {snap_index}/{snap_term}, but index {snap_index} was committed with term {}",
                            c.term
                        ),
                    );
                }
            }
        }
        for (pos, c) in self.committed.iter().enumerate().skip(snap_index as usize) {
            if c.commit_term >= term {
                continue;
            }
            let index = pos as LogIndex + 1;
            match core.entry(index) {
                Some(e) if e.term == c.term && content_hash(e) == c.content => {}
                other => {
                    let has = match other {
                        Some(e) => format!("term {} there", e.term),
                        None => format!("a log ending at {}", core.last_log_index()),
                    };
                    return fail(
                        ViolationKind::LeaderCompleteness,
                        format!(
                            "n{node} became leader of term {term} with {has}, but index {index} (term {}) was committed by term {} (seen by n{})",
                            c.term, c.commit_term, c.first_seen_by
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// State Machine Safety (§5.4.3): "if a server has applied a log entry at
    /// a given index to its state machine, no other server will ever apply a
    /// different log entry for the same index". `expected` is the index the
    /// node should apply next.
    pub fn on_applied(&mut self, node: NodeId, e: &LogEntry, expected: LogIndex) -> Check {
        if e.index != expected {
            return fail(
                ViolationKind::StateMachineSafety,
                format!(
                    "n{node} applied index {} when index {expected} was next",
                    e.index
                ),
            );
        }
        let content = content_hash(e);
        let pos = (e.index - 1) as usize;
        if let Some(&(term, c, by)) = self.applied.get(pos) {
            if term != e.term || c != content {
                return fail(
                    ViolationKind::StateMachineSafety,
                    format!(
                        "n{node} applied index {} term {}, but n{by} applied term {term} at index {} before",
                        e.index, e.term, e.index
                    ),
                );
            }
        } else if pos == self.applied.len() {
            self.applied.push((e.term, content, node));
        } else {
            return fail(
                ViolationKind::StateMachineSafety,
                format!(
                    "n{node} applied index {}, but no node ever applied index {}",
                    e.index,
                    self.applied.len() + 1
                ),
            );
        }
        Ok(())
    }

    /// State Machine Safety over states: `digest` is the KV state of `node`
    /// after index `index`, reached by applying entries or (`from_snapshot`)
    /// by restoring a snapshot that ends there. The first node to reach an
    /// index sets its state; every later one must agree.
    pub fn on_state(
        &mut self,
        node: NodeId,
        index: LogIndex,
        digest: u64,
        from_snapshot: bool,
    ) -> Check {
        if index == 0 {
            return Ok(());
        }
        let how = |snap: bool| {
            if snap {
                "restoring a snapshot"
            } else {
                "applying entries"
            }
        };
        let pos = (index - 1) as usize;
        match self.states.get(pos) {
            Some(&(d, by, by_snap)) if d != digest => fail(
                ViolationKind::StateMachineSafety,
                format!(
                    "n{node} reached index {index} by {} with a different KV state than n{by} reached by {}",
                    how(from_snapshot),
                    how(by_snap)
                ),
            ),
            Some(_) => Ok(()),
            None if pos == self.states.len() => {
                self.states.push((digest, node, from_snapshot));
                Ok(())
            }
            None if from_snapshot => fail(
                ViolationKind::StateMachineSafety,
                format!(
                    "n{node} restored a snapshot ending at index {index}, but no node ever applied past index {}",
                    self.states.len()
                ),
            ),
            None => fail(
                ViolationKind::StateMachineSafety,
                format!(
                    "n{node} applied index {index}, but no node ever reached index {}",
                    self.states.len() + 1
                ),
            ),
        }
    }

    /// The term of the entry first applied at `index`, if any node applied it.
    pub fn applied_term(&self, index: LogIndex) -> Option<Term> {
        let pos = index.checked_sub(1)? as usize;
        self.applied.get(pos).map(|&(term, _, _)| term)
    }

    /// A client was told its write succeeded.
    pub fn on_acknowledged(&mut self, index: LogIndex, term: Term, op: usize) {
        self.acked.push((index, term, op));
    }

    /// Durability, at the end of a run: every acknowledged write is in the
    /// final leader's log, committed, with the term it was acknowledged with.
    /// A write the leader's snapshot covers counts as held if the entry
    /// everyone applied there has that term (the state digest checked that
    /// the snapshot holds what applying it gave).
    pub fn check_durability(&self, leader: NodeId, core: &RaftCore) -> Check {
        for &(index, term, op) in &self.acked {
            let held = if index <= core.snapshot_index() {
                self.applied_term(index)
            } else {
                core.entry(index).map(|e| e.term)
            };
            if held != Some(term) || index > core.commit_index() {
                return fail(
                    ViolationKind::Durability,
                    format!(
                        "op {op} was acknowledged at index {index} term {term}, but the final leader n{leader} has {} there (commit index {})",
                        held.map_or("nothing".to_string(), |t| format!("term {t}")),
                        core.commit_index()
                    ),
                );
            }
        }
        Ok(())
    }

    pub fn committed_len(&self) -> LogIndex {
        self.committed.len() as LogIndex
    }

    /// The last committed entry: `(index, term)`.
    pub fn last_committed(&self) -> Option<(LogIndex, Term)> {
        self.committed
            .last()
            .map(|c| (self.committed.len() as LogIndex, c.term))
    }

    /// Commit safety (§5.4.1, §5.4.2): once `(index, term)` is committed, no
    /// server whose log lacks it can win an election. `logs` lists, for each
    /// server, the logs it could present: the one in memory and the durable
    /// one (a power loss can take it back to that), each as
    /// `(last index, last term, term at index)`. A voter grants its vote to
    /// a log at least as up-to-date as one of its own (§5.4.1). In correct
    /// Raft a majority durably holds an entry of the committing leader's
    /// term at or after `index`, and refuses every log that lacks it; the
    /// Figure 8 bug commits without such a majority.
    /// `logs`: each node's id, whether it may ever vote (a node whose
    /// data dir was wiped never does: `raft::incarnation`), and the views
    /// of its log, each with the voters of the configuration it would
    /// campaign in (thesis §4.1: a candidate counts the votes of the voters
    /// in its own latest configuration, whoever else grants).
    pub fn check_commit_safety(&self, logs: &[CandidateLogs<'_>]) -> Check {
        let Some((index, term)) = self.last_committed() else {
            return Ok(());
        };
        for (candidate, _, views) in logs.iter().filter(|(_, may_vote, _)| *may_vote) {
            for (y, config, may_campaign) in views
                .iter()
                .filter(|(v, _, _)| v.term_at(index) != Some(term))
            {
                if !may_campaign {
                    // No voter of its configuration (nor one whose own
                    // removal it has not seen commit): it never campaigns.
                    continue;
                }
                let quorum = config.len() / 2 + 1;
                let voters: Vec<NodeId> = logs
                    .iter()
                    .filter(|(voter, may_vote, own)| {
                        *may_vote
                            && config.contains(voter)
                            && (voter == candidate
                                || own.iter().any(|(v, _, _)| y.at_least_as_up_to_date_as(v)))
                    })
                    .map(|(voter, _, _)| *voter)
                    .collect();
                if voters.len() >= quorum {
                    let names: Vec<String> = voters.iter().map(|v| format!("n{v}")).collect();
                    return fail(
                        ViolationKind::UnsafeCommit,
                        format!(
                            "index {index} (term {term}) is committed, but n{candidate}, whose log ends at {}/{} without it, could be elected by {{{}}}",
                            y.last_index,
                            y.last_term,
                            names.join(",")
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    pub fn acknowledged(&self) -> usize {
        self.acked.len()
    }
}
