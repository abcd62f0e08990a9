//! Size limits, and why everything one node sends another fits one frame.
//!
//! A peer frame holds at most [`MAX_FRAME_LEN`] bytes (64 MiB). Whatever must
//! cross to another node is therefore bounded *before* it is accepted: a
//! write that is in the log but cannot be sent stops replication to every
//! follower that lacks it (each AppendEntries to it starts with that entry),
//! and a forward that cannot be sent fails every time it is retried. So the
//! limits form a chain, checked where a request enters:
//!
//! ```text
//!  request size R(args) = Σ (len + ARG_OVERHEAD)  ≤ --max-request-bytes L   (commands.rs)
//!  L                                              ≤ MAX_REQUEST_BYTES        (startup)
//!  its log entry (encoded KvCommand)              ≤ R                        (tested below)
//!  one entry in any log                           ≤ MAX_REQUEST_BYTES        (RaftCore::propose)
//!  one AppendEntries' entries  ≤ max(APPEND_MAX_BYTES, MAX_REQUEST_BYTES + 24)  (RaftLog::slice)
//!  one connection batch / one forward request     ≤ MAX_REQUEST_BYTES        (server.rs)
//!  one forward reply's outcomes                   ≤ MAX_REQUEST_BYTES        (server.rs)
//!  one snapshot chunk                             = SNAPSHOT_CHUNK_BYTES
//! ```
//!
//! and each of the last four, plus [`MESSAGE_ENVELOPE`] for the frame's
//! own fields, fits [`MAX_FRAME_LEN`]: the assertions below check that at
//! compile time. The entry limit in the core is the largest request any node
//! may accept, not this node's configured one, because a leader sends
//! entries that other leaders accepted.

use raft::LogEntry;

pub use crate::peer::MAX_FRAME_LEN;

/// Room in a frame for everything but the entries, commands, outcomes or
/// chunk it carries, with a wide margin (see the assertions below).
pub const FRAME_HEADROOM: usize = 1 << 20;

/// The largest `--max-request-bytes` a node accepts, and the most bytes of
/// commands one batch or one forward carries: one request, as one log entry
/// or as one forwarded command, always fits a frame.
pub const MAX_REQUEST_BYTES: usize = MAX_FRAME_LEN - FRAME_HEADROOM;

/// The smallest `--max-request-bytes`: below it a 64 KiB key or a 1 MiB
/// value would not fit.
pub const MIN_REQUEST_BYTES: usize = (1 << 20) + (64 << 10) + 1024;

/// The default `--max-request-bytes`. A request this large keeps the
/// leader's peer connections busy for a while (on a 1 Gbit/s link, 16 MiB
/// take about 130 ms, and heartbeats wait behind it), so the default stays
/// well below the frame, as etcd's `--max-request-bytes` (1.5 MiB) does.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 << 20;

/// What each argument adds to a request's size besides its bytes: more than
/// any field of a command ever takes to encode (a varint length or an
/// integer is at most 10 bytes, an enum tag 1).
pub const ARG_OVERHEAD: usize = 16;

/// The AppendEntries batching of raftkv's `RaftConfig` (the library
/// defaults): a batch grows to about this many bytes, and one entry larger
/// than that still goes, alone.
pub const APPEND_MAX_BYTES: usize = 1 << 20;
pub const APPEND_MAX_ENTRIES: usize = 1024;

/// Bytes of snapshot file per InstallSnapshot chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// An upper bound on a frame's bytes besides the entries, commands,
/// outcomes or chunk it carries: frame, request and RPC tags, the request
/// id, the RPC's integer fields and the vector lengths (measured below:
/// under 100 bytes).
pub const MESSAGE_ENVELOPE: usize = 256;

/// An upper bound on how many bytes an entry's encoding takes beyond
/// [`LogEntry::size`]: term, index and the data's length as varints, and the
/// kind's tag (measured below).
pub const ENTRY_ENCODING_SLACK: usize = 8;

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

// The chain of inequalities above.
const _: () = {
    assert!(MIN_REQUEST_BYTES <= DEFAULT_MAX_REQUEST_BYTES);
    assert!(DEFAULT_MAX_REQUEST_BYTES <= MAX_REQUEST_BYTES);
    // AppendEntries: entry sizes sum to at most max(APPEND_MAX_BYTES,
    // largest entry + 24) (RaftConfig::max_append_bytes); each entry's
    // encoding adds at most ENTRY_ENCODING_SLACK; at most APPEND_MAX_ENTRIES.
    assert!(
        MESSAGE_ENVELOPE
            + max(
                APPEND_MAX_BYTES,
                MAX_REQUEST_BYTES + LogEntry::SIZE_OVERHEAD
            )
            + APPEND_MAX_ENTRIES * ENTRY_ENCODING_SLACK
            <= MAX_FRAME_LEN
    );
    // A forward request or reply: at most MAX_REQUEST_BYTES of commands or
    // outcomes.
    assert!(MESSAGE_ENVELOPE + MAX_REQUEST_BYTES <= MAX_FRAME_LEN);
    // An InstallSnapshot chunk.
    assert!(MESSAGE_ENVELOPE + SNAPSHOT_CHUNK_BYTES <= MAX_FRAME_LEN);
};

/// The size a request counts for against `--max-request-bytes`: its bytes,
/// and [`ARG_OVERHEAD`] per argument. A command's log entry, or its share of
/// a forward, is never larger (tested in `crates/store`).
pub fn request_size(args: &[bytes::Bytes]) -> usize {
    args.iter()
        .map(|a| a.len().saturating_add(ARG_OVERHEAD))
        .fold(0, usize::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::{ForwardReply, Outcome};
    use crate::peer::{encode_frame, Frame, RequestBody, ResponseBody};
    use raft::{AppendEntriesArgs, InstallSnapshotArgs, Rpc};

    fn request(body: RequestBody) -> usize {
        let frame = Frame::Request { id: u64::MAX, body };
        encode_frame(&frame).map(|f| f.len()).unwrap_or(usize::MAX)
    }

    fn append(entries: Vec<LogEntry>) -> RequestBody {
        RequestBody::Raft(Rpc::AppendEntries(AppendEntriesArgs {
            term: u64::MAX,
            leader_id: u64::MAX,
            prev_log_index: u64::MAX,
            prev_log_term: u64::MAX,
            entries,
            leader_commit: u64::MAX,
            read_round: u64::MAX,
        }))
    }

    fn worst_entry(len: usize) -> LogEntry {
        LogEntry::new(u64::MAX, u64::MAX, vec![0xff; len])
    }

    #[test]
    fn every_frame_envelope_is_within_the_reserved_bytes() {
        let snapshot = RequestBody::Raft(Rpc::InstallSnapshot(InstallSnapshotArgs {
            term: u64::MAX,
            leader_id: u64::MAX,
            last_included_index: u64::MAX,
            last_included_term: u64::MAX,
            offset: u64::MAX,
            data: Vec::new(),
            total_size: u64::MAX,
            done: true,
        }));
        let reply = ForwardReply::Outcomes(Vec::<Outcome>::new());
        for (what, len) in [
            ("AppendEntries", request(append(Vec::new()))),
            ("InstallSnapshot", request(snapshot)),
            ("forward", request(RequestBody::Forward(Vec::new()))),
            (
                "forward reply",
                encode_frame(&Frame::Response {
                    id: u64::MAX,
                    body: ResponseBody::Forward(crate::forward::encode(&reply)),
                })
                .map(|f| f.len())
                .unwrap_or(usize::MAX),
            ),
        ] {
            // A payload's length prefix grows by at most 9 bytes over the
            // empty one measured here.
            assert!(len + 9 <= MESSAGE_ENVELOPE, "{what}: {len} bytes");
        }
    }

    #[test]
    fn an_entry_encodes_to_at_most_its_size_plus_the_slack() {
        for len in [0, 1, 127, 128, 16_383, 16_384, 2_097_152, 1 << 24] {
            let e = worst_entry(len);
            let encoded = postcard::to_allocvec(&e).map(|v| v.len()).unwrap_or(0);
            assert!(
                encoded <= e.size() + ENTRY_ENCODING_SLACK,
                "{len}: {encoded} > {} + {ENTRY_ENCODING_SLACK}",
                e.size()
            );
        }
    }

    #[test]
    fn the_largest_append_entries_fits_one_frame() {
        // One entry of the largest size any node accepts, alone.
        let one = request(append(vec![worst_entry(MAX_REQUEST_BYTES)]));
        assert!(one <= MAX_FRAME_LEN, "{one} bytes");
        // A full batch of small entries, as many as a message may hold.
        let each = APPEND_MAX_BYTES / APPEND_MAX_ENTRIES - LogEntry::SIZE_OVERHEAD;
        let many = request(append(
            (0..APPEND_MAX_ENTRIES).map(|_| worst_entry(each)).collect(),
        ));
        assert!(many <= MAX_FRAME_LEN, "{many} bytes");
    }

    #[test]
    fn raftkv_batches_append_entries_as_the_bounds_assume() {
        let raft = raft::RaftConfig::default();
        assert_eq!(raft.max_bytes_per_append, APPEND_MAX_BYTES);
        assert_eq!(raft.max_entries_per_append, APPEND_MAX_ENTRIES);
        assert_eq!(raft.snapshot_chunk_bytes, SNAPSHOT_CHUNK_BYTES);
    }
}
