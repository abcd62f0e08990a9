//! File storage: a write-ahead log (WAL) of the hard state and the log.
//!
//! Raft's Figure 2 says the persistent state (`currentTerm`, `votedFor`,
//! `log[]`) is "updated on stable storage before responding to RPCs". A node
//! that forgets a vote can vote twice in one term, and a node that forgets an
//! entry it acknowledged can lose a committed entry. [`FileStorage`] keeps that
//! promise with an append-only log of checksummed records.
//!
//! # Files
//!
//! The directory holds segment files named by a sequence number, zero-padded
//! to 20 digits so that names sort in order: `00000000000000000001.wal`,
//! `00000000000000000002.wal`, ... Numbers are consecutive; the first one is
//! above 1 once compaction or a reset has deleted older segments. Only the last
//! segment is ever written to; older ones are *sealed*: immutable, and closed
//! until read. When a write would take the last one past
//! [`FileStorageOptions::segment_size`], it is sealed and a new one is started
//! (see "Roll-over"). Every segment begins with a `HardState` record holding
//! the hard state in force when it was created. Records are never rewritten
//! in place.
//!
//! # Records
//!
//! ```text
//! +----------------+-----------------+--------------------------------+
//! | length: u32 LE | crc: u32 LE     | payload: `length` bytes        |
//! |                | crc32c(payload) | [type: u8][type-specific body] |
//! +----------------+-----------------+--------------------------------+
//!
//! type 1, HardState: term u64 | voted_for u64 (0 = none)
//! type 2, Entries:   term u64 | voted_for u64 | count u32 | count times:
//!                    term u64 | index u64 | kind u8 | data length u32 | data
//! type 3, Reset:     term u64 | voted_for u64 | index u64 | index_term u64
//! ```
//!
//! All integers are little-endian. An `Entries` record holds one batch of
//! consecutive entries *and* the hard state in force after it. Replaying a
//! batch whose first index `i` is at or below the last index first discards
//! entries `>= i`: that is how a §5.3 conflict truncation is made durable
//! without touching old bytes. A `Reset` record says "a snapshot ending at
//! (`index`, `index_term`) was installed": replay discards the whole log
//! before it, which then continues at `index + 1`; it carries the hard state
//! too. `index` is never `u64::MAX`.
//!
//! # One batch, one record, one fdatasync
//!
//! Each [`Storage::persist`] call encodes exactly one record: a `HardState`
//! record, or an `Entries` record that carries the new hard state too. It is
//! written with one `pwrite` (after the header of a new segment, if one is
//! started) into preallocated space, and made durable with one `fdatasync`
//! ([`File::sync_data`]) before `persist` returns. The flush is what costs
//! milliseconds; one per batch rather than one per entry is what makes a WAL
//! fast. Because the batch is one checksummed record, a crash keeps all of it
//! or none of it: never a new vote without its entries. (A batch with more
//! than [`FileStorageOptions::max_record_bytes`] of entries, which only a
//! burst of large proposals makes, is split into a few records, each
//! carrying the hard state: a crash then keeps the hard state and a prefix
//! of the entries, which is what a follower may lose anyway before it
//! acknowledges.) `fdatasync` rather
//! than `fsync` skips flushing timestamps, which recovery does not need; a
//! new segment's directory entry is made durable by an fsync of the
//! directory.
//!
//! # Preallocation and the logical end
//!
//! An `fdatasync` after an append to a growing file must also journal the
//! file's new size. On this project's ext4 test machine that made a 2 KB
//! append + `fdatasync` take 0.27–1.4 ms at the median and 1–8 ms at p99,
//! against 0.21 and 0.28–0.34 ms when the blocks were allocated beforehand.
//! So a new segment is created at its full size: `fallocate` with mode 0
//! (`posix_fallocate` semantics: the space is allocated, reads as zeros, and
//! the file's size is [`FileStorageOptions::segment_size`]), then zeros are
//! written over it (so its extents are ordinary written ones, see
//! `Segment::preallocate`), then the file and the directory are fsynced, all
//! before its first record is written.
//! Appends write into that space and never change the file's size (only a
//! single batch larger than a segment grows the file past it).
//!
//! A segment therefore has a *logical end*, where its records end and the
//! next one goes, apart from its file length; every byte between the two is
//! zero. The logical end is not stored anywhere: replay finds it where only
//! zeros are left (no record has length zero; see "Recovery").
//!
//! A filesystem that cannot preallocate (`fallocate` fails with `EOPNOTSUPP`
//! or `ENOSYS`) is noted once in a debug log, and segments then grow as they
//! are written, as they do with [`FileStorageOptions::preallocate`] off; any
//! other `fallocate` error (`ENOSPC`, say) fails the write (or `open`) like
//! any I/O error. The files read the same in either mode: `open` preallocates the
//! last segment if it is shorter than the segment size (a log written without
//! preallocation), and a preallocated tail reads as the end of the log with
//! preallocation off. The cost is disk space: a node holds a whole segment
//! (64 MiB by default) from its first write on, and a second one (the spare,
//! see "Roll-over") once the first is half full.
//!
//! # Roll-over
//!
//! A sealed segment carries no zeros: its file length is its logical end, and
//! zeros at the end of a segment that is not the last are corruption, exactly
//! as before preallocation. Roll-over goes in this order:
//!
//! 1. *Seal* the full segment: truncate it to its logical end (`set_len`) and
//!    fsync it.
//! 2. Create the next segment, preallocate it, fsync it, fsync the directory.
//! 3. Write its hard-state header and the batch with one `pwrite`, and
//!    `fdatasync`.
//!
//! Step 2 is the slow one: zero-filling 64 MiB and fsyncing it. So once the
//! active segment is half full, a thread prepares the next one under a name
//! that is not a segment's (`<seq>.wal.<unique>.spare`: created, preallocated,
//! zero-filled, fsynced), and step 2 becomes a rename and a directory fsync.
//! (It was measured: 40 ms per roll-over on an idle disk, 350 ms with three
//! nodes writing 1 MB values to one disk; the write that met the full
//! segment waited, and the follower's replies with it.) `open` removes any
//! spare a crash left. A renamed spare is an all-zero file, which is what a
//! crash in step 2 may leave anyway, so recovery needs no new rule.
//!
//! Sealing *before* creating means no crash can leave zeros in a segment that
//! is not the last. A crash in step 1 leaves the old segment last: its zero
//! tail (cut or not) is the end of the log, and appends continue there until
//! the next roll-over. A crash in step 2 leaves a new last segment that is
//! empty or all zeros (of any length: a size change may half land), which
//! holds no record; `open` writes its header. A crash in step 3 is a torn
//! write at the start of the last segment. The other order would force
//! recovery to accept a zero tail in the second-to-last segment, and to guess
//! when that is a crash and when it is damage; this order costs one more fsync
//! per roll-over, once per segment. [`Storage::reset`] starts its segment the
//! same way.
//!
//! # Why CRC32C
//!
//! The checksum must catch torn writes and bit rot and be cheap enough to run
//! on every record read. CRC32C (the Castagnoli polynomial) detects every
//! burst error of up to 32 bits and has better error detection than the
//! classic CRC-32 at record sizes; x86 (SSE 4.2) and ARMv8 compute it with a
//! dedicated instruction at many GB/s. LevelDB, RocksDB and etcd's WAL use it
//! for the same job. It is no defence against an attacker, and need not be.
//!
//! # Recovery, and the tail rule
//!
//! [`FileStorage::open`] replays every segment in order and keeps, per entry,
//! only where its record lies (segment, offset, length); entry payloads are
//! read back from disk by [`Storage::entries`] and [`Storage::recover`].
//!
//! In the last segment, the log ends at the end of the file or where every
//! byte left is zero: the preallocated space never written to (or a file
//! extended before its data blocks landed). That is the normal end of a
//! preallocated segment, noted in a debug log only, and needs no repair. In
//! any other segment, zeros at the end are corruption (see "Roll-over").
//!
//! A crash in the middle of an append leaves a *torn write*: a prefix of the
//! last record, perhaps followed by zeros. That record was never
//! acknowledged, so it is safe to drop: recovery cuts the segment at the
//! record's start, fsyncs, and logs a warning. Cutting means truncating the
//! file there and then preallocating it again, so that everything after the
//! logical end is fresh zeros: the next, maybe shorter, record must not leave
//! torn bytes behind it. Only the very last write can be torn, and it only
//! ever appended to the last segment, so a record at offset `o` is torn only
//! if it is in the last segment, the bytes from `o` on are not all zero, and
//!
//! - its header or payload runs past the end of the file, or
//! - its checksum fails and all bytes after its end are zero (or there are none).
//!
//! Anything else is *corruption*, and `open` refuses with
//! [`StorageError::Corruption`] naming the file and byte offset: a bad
//! checksum with data after it, a zero length with data after it, any bad
//! record in a sealed segment (it was complete and synced before the next
//! segment began), a length above 256 MiB (never written), or a record whose
//! checksum is valid but whose contents make no sense (an unknown type, a gap
//! in the log). Dropping those would silently discard acknowledged entries or
//! votes, which Raft cannot tolerate; a human must look. One ambiguity is
//! inherent: damage to the *final* record (a flipped bit, a length now running
//! past the end, bytes zeroed to the end of the file) looks exactly like a
//! torn write or the end of the log, and is treated as one.
//!
//! # Failures
//!
//! After a failed write, fsync, seal or preallocation the file's contents are
//! unknown (Linux may drop the dirty pages and report the error only once), so
//! every later `persist` fails too; the node must stop and reopen, letting
//! recovery decide.
//! Only one `FileStorage` may use a directory at a time; nothing here locks it.
//!
//! # Compaction and reset (§7)
//!
//! Once a snapshot covering the log up to index `n` is durable,
//! [`Storage::compact`]`(n)` deletes whole segments, oldest first: a
//! segment goes when it is sealed and the largest index written to it is
//! `<= n`. (An entry in it may have been rewritten by a later conflict, but
//! compaction only covers committed entries, which never are, so "largest
//! index written" is the right test.) Bytes are still never rewritten; the
//! entries below `n` in the first remaining segment simply stay until it goes
//! too, so [`Storage::first_index`] may stay below `n + 1`. The largest index
//! per segment is kept in memory, so deciding needs no reading. The directory
//! is fsynced after each deletion: a crash then leaves a contiguous run of
//! segments, never a gap (which recovery refuses).
//!
//! Two segments are never deleted: the active one (recovery needs a segment,
//! and it holds the current hard state), and the *anchor*, the segment of the
//! last entry (or, with no entry since, of the latest `Reset`). Replay of the
//! segments that are left must be able to tell where the log ends: if only
//! hard-state records were left, a log ending at 1000 would recover as empty.
//!
//! Replay of a run that starts above segment 1 does not know where the log
//! starts until it meets a `Reset` or an `Entries` record: the first batch
//! starts the log, and a later batch starting *below* the log's start
//! replaces it (it rewrote entries whose older copies were in deleted
//! segments; a replay of the whole history would have truncated to the same
//! suffix). Every other rule is as strict as for a run starting at 1.
//!
//! After installing a snapshot from the leader, [`Storage::reset`] starts a
//! new segment whose first write, after its hard-state header, is a `Reset`
//! record (one write, one fdatasync), then deletes every older segment. A
//! crash before the deletions finish leaves old segments in front of the
//! reset; replay discards what they say, and [`FileStorage::open`] deletes
//! them.
//!
use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::storage::{RecoveredState, Storage, StorageError};
use crate::types::{EntryKind, HardState, LogEntry, LogIndex, Term};

mod files;
mod meta;
mod record;
mod segment;

use files::*;
pub(crate) use files::{corruption, create_dir, io_error, sync_dir};
use meta::*;
use record::*;
use segment::*;

/// Record header: payload length and payload checksum.
const HEADER_LEN: u64 = 8;
/// No record is this large; a length above it is corruption, not an allocation.
const MAX_PAYLOAD_LEN: u64 = 256 << 20;
const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Entry bytes per record when a batch is split (see
/// [`FileStorageOptions::max_record_bytes`]); well below [`MAX_PAYLOAD_LEN`].
const DEFAULT_MAX_RECORD_BYTES: u64 = 64 << 20;
const TYPE_HARD_STATE: u8 = 1;
const TYPE_ENTRIES: u8 = 2;
const TYPE_RESET: u8 = 3;
/// Type byte, term and voted_for.
const HARD_STATE_PAYLOAD_LEN: u64 = 1 + 8 + 8;
/// The `HardState` record every segment starts with.
const SEGMENT_HEADER_LEN: u64 = HEADER_LEN + HARD_STATE_PAYLOAD_LEN;
/// Per-entry bytes before the data: term, index, kind, data length.
const ENTRY_HEADER_LEN: u64 = 8 + 8 + 1 + 4;
const SEGMENT_EXT: &str = "wal";
/// The extension of a segment prepared ahead of time (see `spare_path`).
const SPARE_EXT: &str = "spare";

/// Tuning for [`FileStorage::open_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStorageOptions {
    /// A new segment is started when a write would take the current one past
    /// this many bytes (a single larger batch still gets a segment of its own).
    pub segment_size: u64,
    /// Whether the active segment is preallocated to
    /// [`segment_size`](Self::segment_size) (`fallocate`), so that an
    /// `fdatasync` never has to journal a change of the file's size; on by
    /// default. Turned off, or on a filesystem that cannot preallocate,
    /// segments grow as they are written. Either way the directory reads
    /// back the same; see the module docs, "Preallocation".
    pub preallocate: bool,
    /// A persisted batch whose entries take more than this many bytes is
    /// written as several records of at most this size each (one entry
    /// larger than it gets a record of its own). The log writer merges
    /// whatever queued during an fsync into one batch, so a batch has no
    /// size bound of its own; without the split, a burst of large proposals
    /// could exceed what a record may hold (256 MiB) and stop the node.
    pub max_record_bytes: u64,
}

impl Default for FileStorageOptions {
    fn default() -> Self {
        FileStorageOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            preallocate: true,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

impl FileStorageOptions {
    /// Sets [`segment_size`](Self::segment_size); tests use small values to
    /// exercise many segments.
    pub fn with_segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Sets [`max_record_bytes`](Self::max_record_bytes); tests use small
    /// values to split batches.
    pub fn with_max_record_bytes(mut self, bytes: u64) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// Sets [`preallocate`](Self::preallocate).
    pub fn with_preallocation(mut self, preallocate: bool) -> Self {
        self.preallocate = preallocate;
        self
    }
}

/// Durable Raft storage: a write-ahead log of segment files in one directory.
///
/// Each [`persist`](Storage::persist) is one checksummed record (or, for a
/// batch over [`FileStorageOptions::max_record_bytes`], a few), written and
/// `fdatasync`ed before it returns. [`open`](FileStorage::open) replays the
/// log, cuts off a write torn by a crash at its very tail, and refuses
/// anything else that is damaged with [`StorageError::Corruption`]. The
/// on-disk format and the recovery rule are documented in `storage_file/mod.rs`.
pub struct FileStorage {
    dir: PathBuf,
    options: FileStorageOptions,
    /// The last segment, which appends go to. The segments before it
    /// (`log.segments`) are sealed: never written again, and kept closed
    /// (opened per read) so a long log does not hold a file descriptor per
    /// segment. Compaction deletes them from the front.
    active: Segment,
    log: LogMeta,
    prealloc: Preallocation,
    /// The next segment, being created and preallocated in the background
    /// once the active one is half full (see the module docs, "Roll-over").
    spare: Option<SpareSegment>,
    /// Set when a write or fsync failed: the tail is unknown until reopened.
    failed: bool,
}

impl Drop for FileStorage {
    fn drop(&mut self) {
        self.discard_spare();
    }
}

/// A segment file prepared ahead of roll-over on a thread of its own, under
/// a name that is not a segment's (`<seq>.wal.<unique>.spare`): created,
/// preallocated, zero-filled and fsynced there, it only needs a rename when
/// its turn comes.
struct SpareSegment {
    seq: u64,
    path: PathBuf,
    ready: std::thread::JoinHandle<Result<(Segment, Preallocation), StorageError>>,
}

impl FileStorage {
    /// Opens (creating if missing) the WAL in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStorage, StorageError> {
        Self::open_with(dir, FileStorageOptions::default())
    }

    /// Opens the WAL in `dir`: replays and validates every segment, and
    /// repairs a torn write at the tail (see the module docs).
    pub fn open_with(
        dir: impl AsRef<Path>,
        options: FileStorageOptions,
    ) -> Result<FileStorage, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        create_dir(&dir)?;
        remove_spares(&dir)?;
        let seqs = list_segments(&dir)?;
        let mut log = LogMeta::new(seqs.first().is_none_or(|&seq| seq == 1));
        let mut prealloc = Preallocation {
            enabled: options.preallocate,
            size: options.segment_size,
        };
        let mut active = None;
        for (i, &seq) in seqs.iter().enumerate() {
            let is_last = i + 1 == seqs.len();
            let mut segment = Segment::open(&dir, seq, is_last)?;
            log.replay_segment(&mut segment, is_last)?;
            if is_last {
                active = Some(segment);
            } // else the sealed segment's file is closed here, once replayed
        }
        let active = match active {
            Some(mut segment) => {
                // Replay left zeros (or nothing) after the logical end, so
                // the segment can be preallocated (again): after a torn write
                // was cut off, or if it was written by a growing-file run.
                prealloc.apply(&mut segment)?;
                segment
            }
            None => {
                log.add_segment(1);
                Segment::create(&dir, 1, &mut prealloc)?
            }
        };
        let mut storage = FileStorage {
            dir,
            options,
            active,
            log,
            prealloc,
            spare: None,
            failed: false,
        };
        // A new directory, or a crash while a segment was being started, leaves
        // an empty (or all-zero) last segment; give it its hard state before
        // any batch.
        if storage.active.len == 0 {
            let mut header = Vec::new();
            encode_hard_state(&mut header, &storage.log.hard_state);
            storage.active.write_and_sync(&header)?;
        }
        storage.finish_interrupted_reset()?;
        Ok(storage)
    }

    /// A crash between writing a `Reset` and deleting the segments before it
    /// leaves them behind; their contents are dead, so delete them now.
    fn finish_interrupted_reset(&mut self) -> Result<(), StorageError> {
        let Some(reset_seq) = self.log.reset.map(|r| r.seq) else {
            return Ok(());
        };
        if self.first_seq() < reset_seq {
            tracing::info!(
                dir = %self.dir.display(),
                segments = ?(self.first_seq()..reset_seq),
                "deleting WAL segments left behind by an interrupted reset"
            );
        }
        self.delete_segments_before(reset_seq)
    }

    /// The directory this storage lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The oldest segment still on disk.
    fn first_seq(&self) -> u64 {
        self.log.segments.front().map_or(self.active.seq, |s| s.seq)
    }

    /// Refuses writes after a failed one (see the module docs, "Failures").
    fn check_not_failed(&self) -> Result<(), StorageError> {
        match self.failed {
            false => Ok(()),
            true => Err(StorageError::Io {
                path: self.active.path.clone(),
                source: io::Error::other("an earlier write failed; reopen the storage"),
            }),
        }
    }

    /// Seals the active segment, then creates segment `seq` and makes it the
    /// active one. Sealing first is what keeps recovery strict: see the
    /// module docs, "Roll-over".
    fn start_segment(&mut self, seq: u64) -> Result<(), StorageError> {
        self.active.seal()?;
        let next = match self.take_spare(seq)? {
            Some(spare) => spare,
            None => Segment::create(&self.dir, seq, &mut self.prealloc)?,
        };
        tracing::debug!(path = %next.path.display(), "started a new WAL segment");
        self.active = next; // the sealed segment's file is closed here
        self.log.add_segment(seq);
        Ok(())
    }

    /// Waits for a spare still being prepared and removes it (dropping the
    /// storage; nothing of the log is in it).
    fn discard_spare(&mut self) {
        if let Some(spare) = self.spare.take() {
            let _ = spare.ready.join();
            let _ = fs::remove_file(&spare.path);
        }
    }

    /// Starts preparing the next segment in the background, once the active
    /// one is half full: zero-filling 64 MiB and fsyncing it took 40 ms on an
    /// idle disk and 350 ms with three nodes writing large values to one
    /// disk, and the write that met a full segment waited for all of it
    /// (and with it the follower's replies, long enough for the leader to
    /// lose check-quorum). Without preallocation a new segment is cheap and
    /// none is prepared.
    fn maybe_prepare_spare(&mut self) {
        if self.spare.is_some()
            || !self.prealloc.enabled
            || self.active.len < self.options.segment_size / 2
        {
            return;
        }
        let seq = self.active.seq + 1;
        let path = spare_path(&self.dir, seq);
        let mut prealloc = self.prealloc;
        let target = path.clone();
        let spawned = std::thread::Builder::new()
            .name("wal-spare".into())
            .spawn(move || {
                let mut segment = Segment::create_file(target, seq, false)?;
                prealloc.apply(&mut segment)?;
                Ok((segment, prealloc))
            });
        // No thread (the process is out of them): roll-over creates the
        // segment itself, as without a spare.
        if let Ok(ready) = spawned {
            self.spare = Some(SpareSegment { seq, path, ready });
        }
    }

    /// The spare segment renamed to segment `seq`, durably, if one was
    /// prepared for `seq` and its preparation succeeded; otherwise `None`
    /// (and any spare is removed): the caller creates the segment itself,
    /// meeting any error the spare met again.
    fn take_spare(&mut self, seq: u64) -> Result<Option<Segment>, StorageError> {
        let Some(spare) = self.spare.take() else {
            return Ok(None);
        };
        let prepared = match spare.ready.join() {
            Ok(Ok(prepared)) if spare.seq == seq => Some(prepared),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "preparing the next WAL segment failed");
                None
            }
            _ => None,
        };
        let Some((mut segment, prealloc)) = prepared else {
            let _ = fs::remove_file(&spare.path);
            return Ok(None);
        };
        // The spare is all zeros and fsynced: under its segment name it is
        // what a crash during `Segment::create` may leave, an empty last
        // segment, which `open` accepts. The directory fsync makes the name
        // durable before the first record goes in.
        let path = segment_path(&self.dir, seq);
        match fs::rename(&spare.path, &path) {
            Ok(()) => {}
            // Removed meanwhile: another storage opened on this directory
            // (only tests do that; a node holds a lock on its data dir)
            // removes every spare it finds. Create the segment as without.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        }
        sync_dir(&self.dir)?;
        segment.path = path;
        self.prealloc = prealloc;
        Ok(Some(segment))
    }

    /// Deletes every segment numbered below `seq`, oldest first, and forgets
    /// the entries they held. The directory is fsynced after each file, so
    /// that a crash leaves a contiguous run of segments, never a gap.
    fn delete_segments_before(&mut self, seq: u64) -> Result<(), StorageError> {
        while let Some(oldest) = self.log.segments.front().map(|s| s.seq) {
            if oldest >= seq || oldest == self.active.seq {
                break;
            }
            let path = segment_path(&self.dir, oldest);
            fs::remove_file(&path).map_err(io_error(&path))?;
            self.log.forget_segments_before(oldest + 1);
            sync_dir(&self.dir)?;
            tracing::debug!(path = %path.display(), "deleted a WAL segment");
        }
        Ok(())
    }
    /// Writes one encoded record, first starting a new segment if the current
    /// one is full. Returns where the record landed once it is durable.
    fn append_record(&mut self, record: &[u8]) -> Result<Location, StorageError> {
        let full = self.active.len > SEGMENT_HEADER_LEN
            && self.active.len + record.len() as u64 > self.options.segment_size;
        let mut buf = Vec::new();
        if full {
            self.start_segment(self.active.seq + 1)?;
            encode_hard_state(&mut buf, &self.log.hard_state);
        }
        let location = Location {
            seq: self.active.seq,
            offset: self.active.len + buf.len() as u64,
            payload_len: (record.len() as u64 - HEADER_LEN) as u32,
        };
        buf.extend_from_slice(record);
        self.active.write_and_sync(&buf)?;
        self.maybe_prepare_spare();
        Ok(location)
    }

    /// Validates a batch before anything is written, like `MemoryStorage`.
    fn check_batch(
        &self,
        hard_state: Option<&HardState>,
        entries: &[LogEntry],
    ) -> Result<(), StorageError> {
        if hard_state.is_some_and(|hs| hs.voted_for == Some(0)) {
            let reason = "voted_for is node id 0, which is not a node";
            return Err(StorageError::Invalid(reason.into()));
        }
        if let Some(first) = entries.first() {
            self.log
                .check_append(first.index)
                .map_err(StorageError::Invalid)?;
        }
        for pair in entries.windows(2) {
            if let [a, b] = pair {
                if b.index != a.index + 1 {
                    return Err(StorageError::Invalid(format!(
                        "entries are not consecutive: {} follows {}",
                        b.index, a.index
                    )));
                }
            }
        }
        Ok(())
    }

    /// Reads back the batch record at `location`, checking it again (bits can
    /// rot after `open` validated them), and returns its entries in `range`;
    /// the batch must hold `range.start`. Sealed segments are opened per read.
    fn read_batch(
        &self,
        location: Location,
        range: Range<LogIndex>,
    ) -> Result<Vec<LogEntry>, StorageError> {
        let sealed;
        let segment = if location.seq == self.active.seq {
            &self.active
        } else {
            sealed = Segment::open(&self.dir, location.seq, false)?;
            &sealed
        };
        let bad = |reason: String| corruption(&segment.path, location.offset, reason);
        let payload = match segment.read_frame(location.offset)? {
            Frame::Record(p) if p.len() == location.payload_len as usize => p,
            Frame::Record(_) | Frame::End | Frame::ZeroTail => {
                return Err(bad("record is not as written".into()));
            }
            Frame::Torn(reason) | Frame::Corrupt(reason) => return Err(bad(reason)),
        };
        let batch = match decode_record(&payload).map_err(bad)? {
            Record::Entries(_, batch) if batch.iter().any(|e| e.index == range.start) => batch,
            _ => return Err(bad(format!("record does not hold entry {}", range.start))),
        };
        let wanted = batch.iter().filter(|e| range.contains(&e.index));
        Ok(wanted.map(EntryRef::to_log_entry).collect())
    }
}

impl Storage for FileStorage {
    fn recover(&mut self) -> Result<RecoveredState, StorageError> {
        Ok(RecoveredState {
            hard_state: self.log.hard_state,
            entries: self.entries(self.first_index(), self.last_index() + 1)?,
        })
    }

    fn persist(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[LogEntry],
    ) -> Result<(), StorageError> {
        self.check_not_failed()?;
        if hard_state.is_none() && entries.is_empty() {
            return Ok(());
        }
        self.check_batch(hard_state, entries)?;
        let new_hard_state = hard_state.copied().unwrap_or(self.log.hard_state);
        let mut record = Vec::new();
        if entries.is_empty() {
            encode_hard_state(&mut record, &new_hard_state);
            self.append_record(&record)
                .inspect_err(|_| self.failed = true)?;
            self.log.hard_state = new_hard_state;
            return Ok(());
        }
        // Each record carries the new hard state, so whichever prefix of the
        // records a crash leaves is a valid state: the hard state, and a
        // prefix of the entries, as a torn batch would be.
        let mut rest = entries;
        while !rest.is_empty() {
            let n = entries_per_record(rest, self.options.max_record_bytes);
            let (batch, tail) = rest.split_at(n);
            record.clear();
            encode_entries(&mut record, &new_hard_state, batch)?;
            let location = self
                .append_record(&record)
                .inspect_err(|_| self.failed = true)?;
            self.log
                .record_append(batch[0].index, batch.len(), location);
            self.log.hard_state = new_hard_state;
            rest = tail;
        }
        Ok(())
    }

    fn first_index(&self) -> LogIndex {
        self.log.first_index
    }

    fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<LogEntry>, StorageError> {
        let (first, last) = (self.first_index(), self.last_index());
        if lo == 0 || lo < first || hi < lo || hi > last + 1 {
            return Err(StorageError::Invalid(format!(
                "entries({lo}, {hi}) out of range {first}..={last}"
            )));
        }
        let mut out = Vec::with_capacity((hi - lo) as usize);
        let mut next = lo;
        while next < hi {
            let location = self.log.location(next)?;
            for entry in self.read_batch(location, next..hi)? {
                // A later conflict may have replaced the rest of this batch.
                if self.log.location(next)? != location {
                    break;
                }
                out.push(entry);
                next += 1;
            }
        }
        Ok(out)
    }

    /// Deletes the oldest segments while every entry in them is `<= index`
    /// (see the module docs, "Compaction and reset").
    fn compact(&mut self, index: LogIndex) -> Result<(), StorageError> {
        self.check_not_failed()?;
        match self.log.first_kept_segment(index, self.active.seq) {
            Some(keep) => self.delete_segments_before(keep),
            None => Ok(()),
        }
    }

    /// Writes a `Reset` record at the start of a new segment, then deletes
    /// every older segment.
    fn reset(&mut self, index: LogIndex, term: Term) -> Result<(), StorageError> {
        self.check_not_failed()?;
        if index == LogIndex::MAX {
            return Err(StorageError::Invalid("reset to the largest index".into()));
        }
        let mut buf = Vec::new();
        encode_hard_state(&mut buf, &self.log.hard_state);
        encode_reset(&mut buf, &self.log.hard_state, index, term);
        let seq = self.active.seq + 1;
        self.start_segment(seq)
            .and_then(|()| self.active.write_and_sync(&buf))
            .inspect_err(|_| self.failed = true)?;
        self.log.reset(ResetMark { seq, index, term });
        self.delete_segments_before(seq)
    }
}

impl fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStorage")
            .field("dir", &self.dir)
            .field("segments", &(self.first_seq()..=self.active.seq))
            .field("hard_state", &self.log.hard_state)
            .field("first_index", &self.log.first_index)
            .field("last_index", &self.log.last_index())
            .field("reset", &self.log.reset)
            .field("failed", &self.failed)
            .finish()
    }
}
