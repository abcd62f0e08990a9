//! Large entries and a transport with a frame limit: every entry the log
//! accepts can be sent, and one that could not is refused at `propose`,
//! before it touches the log (issue 13: an accepted 90 MB write no frame
//! could carry cost the leader its term).

mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::Cluster;
use raft::{LogEntry, ProposeError, RaftConfig, Rpc};

/// Small batches and a small entry limit, so that the limits bind.
fn config() -> RaftConfig {
    RaftConfig {
        max_bytes_per_append: 300,
        max_entries_per_append: 16,
        max_entry_bytes: 1_000,
        ..common::config(true, true)
    }
}

fn entry_bytes(entries: &[LogEntry]) -> usize {
    entries.iter().map(LogEntry::size).sum()
}

#[test]
fn an_oversize_proposal_is_refused_without_touching_the_log() {
    let mut cl = Cluster::new(3, config());
    cl.elect(1);
    let before = cl.core(1).last_log_index();
    assert!(!cl.core(1).has_ready());
    let refused = cl.core_mut(1).propose(vec![7; 1_001]);
    assert_eq!(
        refused,
        Err(ProposeError::TooLarge {
            size: 1_001,
            limit: 1_000
        })
    );
    assert_eq!(cl.core(1).last_log_index(), before, "nothing appended");
    assert!(!cl.core(1).has_ready(), "nothing to persist or send");
    // A follower refuses it for its size too: no retry elsewhere can help.
    assert!(matches!(
        cl.core_mut(2).propose(vec![7; 1_001]),
        Err(ProposeError::TooLarge { .. })
    ));
    // The limit itself is accepted.
    assert!(cl.core_mut(1).propose(vec![7; 1_000]).is_ok());
}

#[test]
fn a_max_size_entry_replicates_alone_over_a_transport_that_carries_only_max_append_bytes() {
    let mut cl = Cluster::new(3, config());
    let bound = cl.config.max_append_bytes();
    assert_eq!(bound, 1_000 + LogEntry::SIZE_OVERHEAD);
    // A "frame limit" of exactly the bound: anything larger is lost, and
    // counted, since it must never happen.
    let too_big = Rc::new(Cell::new(0));
    let seen = too_big.clone();
    cl.drop_if = Some(Box::new(move |m| match &m.rpc {
        Rpc::AppendEntries(a) if entry_bytes(&a.entries) > bound => {
            seen.set(seen.get() + 1);
            true
        }
        _ => false,
    }));
    cl.elect(1);
    let mut proposed = Vec::new();
    for i in 0..40u8 {
        // Small entries around one of the largest size, twice.
        let data = if i == 10 || i == 11 {
            vec![i; 1_000]
        } else {
            vec![i; 50]
        };
        // Proposed together, as a burst of clients would: one Ready.
        assert!(cl.core_mut(1).propose(data.clone()).is_ok());
        proposed.push(data);
    }
    cl.process(1);
    cl.deliver();
    cl.tick_all(cl.config.heartbeat_ticks() * 2);
    assert_eq!(too_big.get(), 0, "an AppendEntries over the bound was sent");
    for id in [1, 2, 3] {
        assert_eq!(cl.applied_data(id), proposed, "node {id} applied all");
    }
    // Each large entry went in a message of its own; small ones batched.
    let appends: Vec<&Vec<LogEntry>> = cl
        .delivered
        .iter()
        .filter_map(|m| match &m.rpc {
            Rpc::AppendEntries(a) if !a.entries.is_empty() => Some(&a.entries),
            _ => None,
        })
        .collect();
    for entries in &appends {
        if entries.iter().any(|e| e.data.len() == 1_000) {
            assert_eq!(entries.len(), 1, "a max-size entry travels alone");
        }
    }
    assert!(appends.iter().any(|e| e.len() > 1), "small entries batch");
}
