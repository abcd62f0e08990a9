//! The readable record of a run: a ring buffer of the last events, one line
//! each, plus a digest of *every* line so two runs can be compared exactly.
//!
//! ```text
//! t=1234.000ms n2 → n3 AppendEntries(term 4, prev 17/3, 2 entries, commit 16)
//! t=1240.512ms n3 crash (power loss: kept 1 of 2 unsynced writes)
//! t=1502.100ms n1 leader  term 5  commit 17  last 18/5
//! ```

use std::collections::VecDeque;

use raft::{Message, Rpc};

/// Formats a virtual time in microseconds as milliseconds.
pub fn fmt_time(us: u64) -> String {
    format!("{}.{:03}ms", us / 1000, us % 1000)
}

/// One message as a trace line fragment: `n2 → n3 AppendEntries(...)`.
pub fn fmt_message(m: &Message) -> String {
    let body = match &m.rpc {
        Rpc::AppendEntries(a) => {
            let entries = match a.entries.len() {
                0 => "heartbeat".to_string(),
                1 => format!("1 entry {}", a.entries[0].index),
                n => format!(
                    "{n} entries {}..{}",
                    a.entries[0].index,
                    a.entries[n - 1].index
                ),
            };
            format!(
                "AppendEntries(term {}, prev {}/{}, {}, commit {}, round {})",
                a.term, a.prev_log_index, a.prev_log_term, entries, a.leader_commit, a.read_round
            )
        }
        Rpc::AppendEntriesReply(r) if r.success => format!(
            "AppendEntriesReply(term {}, ok, match {}, round {})",
            r.term, r.match_index, r.read_round
        ),
        Rpc::AppendEntriesReply(r) => format!(
            "AppendEntriesReply(term {}, reject prev {}, hint {}/{:?}, round {})",
            r.term, r.rejected_prev_index, r.conflict_index, r.conflict_term, r.read_round
        ),
        Rpc::RequestVote(a) => format!(
            "{}(term {}, last {}/{})",
            m.rpc.kind(),
            a.term,
            a.last_log_index,
            a.last_log_term
        ),
        Rpc::RequestVoteReply(r) => format!(
            "{}(term {}, {})",
            m.rpc.kind(),
            r.term,
            if r.vote_granted { "granted" } else { "refused" }
        ),
        Rpc::InstallSnapshot(a) => format!(
            "InstallSnapshot(term {}, last included {}/{}, offset {}, {} bytes{})",
            a.term,
            a.last_included_index,
            a.last_included_term,
            a.offset,
            a.data.len(),
            if a.done { ", done" } else { "" }
        ),
        Rpc::InstallSnapshotReply(r) => format!(
            "InstallSnapshotReply(term {}, {}, next offset {}{})",
            r.term,
            if r.success { "ok" } else { "refused" },
            r.next_offset,
            if r.installed { ", installed" } else { "" }
        ),
        Rpc::TimeoutNow(a) => format!("TimeoutNow(term {}, from leader {})", a.term, a.leader_id),
        Rpc::TimeoutNowReply(r) => format!("TimeoutNowReply(term {})", r.term),
    };
    format!("n{} → n{} {}", m.from, m.to, body)
}

/// The last `capacity` lines, and a digest of all of them.
#[derive(Debug, Clone)]
pub struct Trace {
    lines: VecDeque<String>,
    capacity: usize,
    /// Every line ever pushed, when the caller asked to keep them.
    all: Option<Vec<String>>,
    digest: u64,
    count: u64,
}

impl Trace {
    pub fn new(capacity: usize, keep_all: bool) -> Self {
        Trace {
            lines: VecDeque::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
            all: keep_all.then(Vec::new),
            digest: 0xcbf2_9ce4_8422_2325,
            count: 0,
        }
    }

    pub fn push(&mut self, now_us: u64, text: String) {
        let line = format!("t={} {}", fmt_time(now_us), text);
        // FNV-1a: stable across processes, unlike std's RandomState.
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            self.digest ^= b as u64;
            self.digest = self.digest.wrapping_mul(0x0100_0000_01b3);
        }
        self.count += 1;
        if let Some(all) = &mut self.all {
            all.push(line.clone());
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The last lines, oldest first.
    pub fn tail(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }

    /// Every line, if kept.
    pub fn all(&self) -> Option<&[String]> {
        self.all.as_deref()
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}
