//! Tests of `FileStorage`, the write-ahead log: restart, conflict truncation,
//! segment roll-over and preallocation, the recovery rule that tells a torn
//! write at the tail (repaired) from corruption (refused), and log compaction
//! (`compact`, `reset`), which `MemoryStorage` is checked against too.
//!
//! The active segment is preallocated: its file length is the segment size,
//! and its records end at its *logical end* ([`logical_end`]), zeros after.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::corruption;
use raft::{
    EntryKind, FileStorage, FileStorageOptions, HardState, LogEntry, LogIndex, MemoryStorage,
    RecoveredState, Storage, StorageError, Term,
};

// ---- Helpers ----------------------------------------------------------------

fn entry(term: u64, index: u64) -> LogEntry {
    LogEntry::new(
        term,
        index,
        format!("term {term} index {index}").into_bytes(),
    )
}

fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<LogEntry> {
    indexes.map(|i| entry(term, i)).collect()
}

fn hs(term: u64, voted_for: Option<u64>) -> HardState {
    HardState { term, voted_for }
}

/// `FileStorageOptions::default().segment_size`.
const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

fn small_segments(bytes: u64) -> FileStorageOptions {
    FileStorageOptions::default().with_segment_size(bytes)
}

/// The files in `dir` with extension `ext`, in order.
fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// The segment files in `dir`, in order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    files_with_extension(dir, "wal")
}

fn last_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().expect("at least one segment")
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// Where the records of a segment end: the first offset holding no
/// complete record header and payload (a zero length, or one running past
/// the end of the file). Checksums are not checked.
fn logical_end(path: &Path) -> u64 {
    let bytes = fs::read(path).unwrap();
    let mut offset = 0usize;
    while let Some(header) = bytes.get(offset..offset + 8) {
        let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        if len == 0 || offset + 8 + len > bytes.len() {
            break;
        }
        offset += 8 + len;
    }
    offset as u64
}

/// True if every byte of the file from `offset` on is zero.
fn zeros_from(path: &Path, offset: u64) -> bool {
    let bytes = fs::read(path).unwrap();
    let zeros = [0u8; 4096];
    bytes[offset as usize..]
        .chunks(zeros.len())
        .all(|chunk| chunk == &zeros[..chunk.len()])
}

/// Overwrites bytes in place, keeping the file's length (unless they run
/// past it).
fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, offset)
        .unwrap();
}

/// Zeros the bytes in `from..to`, as when a write into preallocated space
/// never landed.
fn zero_range(path: &Path, from: u64, to: u64) {
    write_at(path, from, &vec![0; (to - from) as usize]);
}

/// Cuts a segment's zero tail, as roll-over does before the next segment is
/// created: tests that copy in an older segment model the sealed state.
fn seal(path: &Path) {
    set_len(path, logical_end(path));
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn flip_byte(path: &Path, offset: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], offset).unwrap();
}

/// A well-formed record (valid length and checksum) around `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn reopen(dir: &Path, options: &FileStorageOptions) -> (FileStorage, RecoveredLog) {
    let mut storage = FileStorage::open_with(dir, options.clone()).expect("reopen");
    let state = storage.recover().expect("recover");
    (storage, RecoveredLog(state.hard_state, state.entries))
}

/// Recovered state as a comparable value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct RecoveredLog(HardState, Vec<LogEntry>);

/// What `persist` promises, modelled in memory (same rules as `MemoryStorage`).
#[derive(Debug, Clone, Default)]
struct Model(RecoveredLog);

impl Model {
    fn apply(&mut self, hard_state: Option<HardState>, batch: &[LogEntry]) {
        if let Some(first) = batch.first() {
            self.0 .1.truncate(first.index as usize - 1);
            self.0 .1.extend_from_slice(batch);
        }
        if let Some(hs) = hard_state {
            self.0 .0 = hs;
        }
    }

    fn last_index(&self) -> u64 {
        self.0 .1.len() as u64
    }
}

/// Persists into both the storage and the model.
fn persist(
    storage: &mut FileStorage,
    model: &mut Model,
    hs: Option<HardState>,
    batch: &[LogEntry],
) {
    storage.persist(hs.as_ref(), batch).expect("persist");
    model.apply(hs, batch);
}

/// A tiny deterministic PRNG (xorshift64*), so no `rand` dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn bytes(&mut self, len: u64) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A random batch: sometimes a new term or vote, sometimes a conflict that
/// rewrites a suffix, entries of random kinds and sizes.
fn random_batch(rng: &mut Rng, model: &Model) -> (Option<HardState>, Vec<LogEntry>) {
    let current = model.0 .0;
    let hard_state = rng.chance(30).then(|| HardState {
        term: current.term + rng.below(2),
        voted_for: rng.chance(50).then(|| 1 + rng.below(5)),
    });
    if hard_state.is_some() && rng.chance(25) {
        return (hard_state, Vec::new());
    }
    let last = model.last_index();
    // A conflict rewrites a recent suffix, as when a new leader overrides
    // entries that the old one never committed.
    let first = if last > 0 && rng.chance(25) {
        last - rng.below(last.min(10))
    } else {
        last + 1
    };
    let term = hard_state.unwrap_or(current).term;
    let batch = (first..first + 1 + rng.below(8))
        .map(|index| match rng.chance(10) {
            true => LogEntry::noop(term, index),
            false => LogEntry::new(term, index, {
                let len = rng.below(120);
                rng.bytes(len)
            }),
        })
        .collect();
    (hard_state, batch)
}

// ---- Restart and the Storage contract ----------------------------------------

#[test]
fn restart_recovers_hard_state_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = FileStorage::open(dir.path()).unwrap();
    assert_eq!((storage.first_index(), storage.last_index()), (1, 0));
    storage
        .persist(Some(&hs(1, Some(2))), &entries(1, 1..=3))
        .unwrap();
    storage.persist(Some(&hs(2, None)), &[]).unwrap();
    storage
        .persist(None, &[LogEntry::noop(2, 4), entry(2, 5)])
        .unwrap();
    drop(storage);

    let mut storage = FileStorage::open(dir.path()).unwrap();
    let state = storage.recover().unwrap();
    assert_eq!(state.hard_state, hs(2, None));
    let mut expected = entries(1, 1..=3);
    expected.extend([LogEntry::noop(2, 4), entry(2, 5)]);
    assert_eq!(state.entries, expected);
    assert_eq!(state.entries[3].kind, EntryKind::Noop);
    assert_eq!((storage.first_index(), storage.last_index()), (1, 5));
}

#[test]
fn new_storage_recovers_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("wal");
    let mut storage = FileStorage::open(&path).unwrap();
    let state = storage.recover().unwrap();
    assert_eq!(state.hard_state, HardState::default());
    assert!(state.entries.is_empty());
    drop(storage);
    let (_, log) = reopen(&path, &FileStorageOptions::default());
    assert_eq!(log, RecoveredLog::default());
}

#[test]
fn persist_of_conflicting_entries_truncates_suffix_durably() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = FileStorage::open(dir.path()).unwrap();
    storage
        .persist(Some(&hs(1, Some(1))), &entries(1, 1..=5))
        .unwrap();
    storage
        .persist(Some(&hs(2, Some(3))), &entries(2, 3..=4))
        .unwrap();
    assert_eq!(storage.last_index(), 4);
    assert!(matches!(
        storage.entries(1, 6),
        Err(StorageError::Invalid(_))
    ));
    drop(storage);

    let (storage, log) = reopen(dir.path(), &FileStorageOptions::default());
    let mut expected = entries(1, 1..=2);
    expected.extend(entries(2, 3..=4));
    assert_eq!(log, RecoveredLog(hs(2, Some(3)), expected));
    assert_eq!(storage.last_index(), 4);
}

#[test]
fn gap_in_append_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = FileStorage::open(dir.path()).unwrap();
    storage
        .persist(Some(&hs(1, None)), &entries(1, 1..=2))
        .unwrap();
    let len = logical_end(&last_segment(dir.path()));

    let invalid = |r: Result<(), StorageError>| matches!(r, Err(StorageError::Invalid(_)));
    assert!(invalid(
        storage.persist(Some(&hs(9, None)), &entries(1, 4..=5))
    ));
    assert!(invalid(storage.persist(None, &[entry(1, 0)])));
    assert!(invalid(storage.persist(None, &[entry(1, 3), entry(1, 5)])));
    assert!(invalid(storage.persist(Some(&hs(9, Some(0))), &[])));
    assert_eq!(
        logical_end(&last_segment(dir.path())),
        len,
        "refused batches write nothing"
    );

    // The storage is still usable, and the refused hard state was not applied.
    storage.persist(None, &entries(1, 3..=3)).unwrap();
    drop(storage);
    let (_, log) = reopen(dir.path(), &FileStorageOptions::default());
    assert_eq!(log, RecoveredLog(hs(1, None), entries(1, 1..=3)));
}

#[test]
fn empty_persist_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = FileStorage::open(dir.path()).unwrap();
    let len = logical_end(&last_segment(dir.path()));
    storage.persist(None, &[]).unwrap();
    assert_eq!(logical_end(&last_segment(dir.path())), len);
}

#[test]
fn entries_range_reads_match_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(700);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut model = Model::default();
    persist(&mut storage, &mut model, None, &entries(1, 1..=10));
    persist(&mut storage, &mut model, None, &entries(1, 11..=20));
    persist(&mut storage, &mut model, None, &entries(2, 6..=12)); // replaces 6..=20
    persist(&mut storage, &mut model, None, &entries(3, 13..=30));

    let (reopened, _) = reopen(dir.path(), &options);
    for s in [&storage, &reopened] {
        let last = s.last_index();
        assert_eq!(last, 30);
        for lo in 1..=last + 1 {
            for hi in lo..=last + 1 {
                let want = &model.0 .1[lo as usize - 1..hi as usize - 1];
                assert_eq!(s.entries(lo, hi).unwrap(), want, "entries({lo}, {hi})");
            }
        }
        for (lo, hi) in [(0, 1), (0, 0), (5, 4), (1, 32), (31, 32)] {
            let result = s.entries(lo, hi);
            assert!(
                matches!(result, Err(StorageError::Invalid(_))),
                "entries({lo}, {hi})"
            );
        }
    }
}

#[test]
fn entries_are_read_back_from_disk_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = FileStorage::open(dir.path()).unwrap();
    storage.persist(None, &entries(1, 1..=3)).unwrap();
    let header_end = logical_end(&last_segment(dir.path()));
    storage.persist(None, &entries(1, 4..=6)).unwrap();
    // Bit rot after open: the next read of entries 4..=6 must notice.
    flip_byte(&last_segment(dir.path()), header_end + 40);
    assert_eq!(storage.entries(1, 4).unwrap(), entries(1, 1..=3));
    match storage.entries(5, 6) {
        Err(StorageError::Corruption { offset, .. }) => assert_eq!(offset, header_end),
        other => panic!("expected corruption, got {other:?}"),
    }
}

// ---- Segments -----------------------------------------------------------------

#[test]
fn many_segments_roll_over_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(1024);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut model = Model::default();
    let mut rng = Rng::new(7);
    while model.last_index() < 400 {
        let (hard_state, batch) = random_batch(&mut rng, &model);
        persist(&mut storage, &mut model, hard_state, &batch);
    }
    drop(storage);

    let files = segments(dir.path());
    assert!(files.len() >= 20, "only {} segments", files.len());
    for (i, file) in files.iter().enumerate() {
        let name = format!("{:020}.wal", i + 1);
        assert_eq!(file.file_name().unwrap().to_str(), Some(name.as_str()));
        let bytes = fs::read(file).unwrap();
        assert!(bytes.len() <= 1024, "{} is {} bytes", name, bytes.len());
        assert_eq!(bytes[8], 1, "{name} must start with a hard-state record");
    }

    let (mut storage, log) = reopen(dir.path(), &options);
    assert_eq!(log, model.0);
    for _ in 0..200 {
        let lo = 1 + rng.below(model.last_index());
        let hi = lo + rng.below(model.last_index() + 2 - lo);
        let want = &model.0 .1[lo as usize - 1..hi as usize - 1];
        assert_eq!(storage.entries(lo, hi).unwrap(), want);
    }
    // Appending after a restart continues in the last segment and rolls on.
    let next = model.last_index() + 1;
    persist(
        &mut storage,
        &mut model,
        Some(hs(99, Some(4))),
        &entries(99, next..=next + 40),
    );
    persist(
        &mut storage,
        &mut model,
        None,
        &entries(100, next + 41..=next + 41),
    );
    drop(storage);
    assert!(segments(dir.path()).len() > files.len());
    assert_eq!(reopen(dir.path(), &options).1, model.0);
}

#[test]
fn corruption_in_a_non_last_segment_is_refused() {
    // Damage that would pass as a torn write at the tail of the last segment
    // is corruption anywhere else: older segments were complete and synced.
    for damage in ["cut", "flip"] {
        let dir = tempfile::tempdir().unwrap();
        let options = small_segments(400);
        let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
        let mut record_starts = Vec::new(); // (segment, offset) of each batch
        for i in 0..30 {
            let before = (
                last_segment(dir.path()),
                logical_end(&last_segment(dir.path())),
            );
            storage
                .persist(None, &entries(1, i * 3 + 1..=i * 3 + 3))
                .unwrap();
            let seg = last_segment(dir.path());
            let start = if seg == before.0 { before.1 } else { 25 };
            record_starts.push((seg, start));
        }
        drop(storage);
        let first = &segments(dir.path())[0];
        let &(_, last_record) = record_starts.iter().rfind(|(s, _)| s == first).unwrap();
        match damage {
            "cut" => set_len(first, file_len(first) - 3),
            _ => flip_byte(first, file_len(first) - 2),
        }
        let (path, offset, text) = corruption(FileStorage::open_with(dir.path(), options));
        assert_eq!((&path, offset), (first, last_record), "{damage}: {text}");
        assert!(text.contains("00000000000000000001.wal"), "{text}");
    }
}

#[test]
fn missing_or_emptied_segment_is_refused() {
    for damage in ["delete", "empty"] {
        let dir = tempfile::tempdir().unwrap();
        let options = small_segments(200);
        let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
        for i in 0..10 {
            storage
                .persist(None, &entries(1, i * 2 + 1..=i * 2 + 2))
                .unwrap();
        }
        drop(storage);
        let files = segments(dir.path());
        assert!(files.len() >= 4);
        let named = match damage {
            "delete" => {
                fs::remove_file(&files[1]).unwrap();
                &files[2] // the segment after the hole
            }
            _ => {
                set_len(&files[1], 0);
                &files[1]
            }
        };
        let (path, offset, text) = corruption(FileStorage::open_with(dir.path(), options));
        assert_eq!((&path, offset), (named, 0), "{damage}: {text}");
    }
}

#[test]
fn empty_last_segment_from_a_crash_during_roll_over_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(200);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    storage
        .persist(Some(&hs(3, Some(2))), &entries(3, 1..=2))
        .unwrap();
    drop(storage);
    // The crash came after the new file was created, before anything landed.
    // Roll-over had sealed (truncated) the old segment first.
    seal(&last_segment(dir.path()));
    let next = dir
        .path()
        .join(format!("{:020}.wal", segments(dir.path()).len() + 1));
    fs::File::create(&next).unwrap();

    let (mut storage, log) = reopen(dir.path(), &options);
    assert_eq!(log, RecoveredLog(hs(3, Some(2)), entries(3, 1..=2)));
    assert!(
        file_len(&next) > 0,
        "the empty segment got its hard-state header"
    );
    storage.persist(None, &entries(3, 3..=3)).unwrap();
    drop(storage);
    assert_eq!(
        reopen(dir.path(), &options).1,
        RecoveredLog(hs(3, Some(2)), entries(3, 1..=3))
    );
}

// ---- Preallocation --------------------------------------------------------------

#[test]
fn preallocated_segments_have_the_full_size_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(64 << 10);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let seg = last_segment(dir.path());
    assert_eq!(file_len(&seg), 64 << 10, "preallocated when created");
    assert_eq!(logical_end(&seg), 25, "just the hard-state header");
    let mut model = Model::default();
    let mut ends = Vec::new();
    for i in 0..5 {
        let batch = entries(1, i * 3 + 1..=i * 3 + 3);
        persist(&mut storage, &mut model, Some(hs(1, Some(i + 1))), &batch);
        assert_eq!(file_len(&seg), 64 << 10, "appends never change the size");
        ends.push(logical_end(&seg));
    }
    assert!(ends.windows(2).all(|w| w[0] < w[1]), "{ends:?}");
    assert!(zeros_from(&seg, ends[4]));
    drop(storage);

    // Reopening finds the log's end in the zeros, and appends go there, not
    // to the end of the file.
    let (mut storage, log) = reopen(dir.path(), &options);
    assert_eq!(log, model.0);
    assert_eq!(file_len(&seg), 64 << 10);
    persist(&mut storage, &mut model, None, &entries(2, 16..=20));
    assert!(logical_end(&seg) > ends[4] && zeros_from(&seg, logical_end(&seg)));
    drop(storage);
    assert_eq!(reopen(dir.path(), &options).1, model.0);
    assert_eq!(segments(dir.path()), std::slice::from_ref(&seg));
    assert_eq!(file_len(&seg), 64 << 10);

    // The default segment size too.
    let dir = tempfile::tempdir().unwrap();
    let mut storage = FileStorage::open(dir.path()).unwrap();
    storage.persist(None, &entries(1, 1..=3)).unwrap();
    assert_eq!(file_len(&last_segment(dir.path())), DEFAULT_SEGMENT_SIZE);
    drop(storage);
    let (_, log) = reopen(dir.path(), &FileStorageOptions::default());
    assert_eq!(log, RecoveredLog(HardState::default(), entries(1, 1..=3)));
}

#[test]
fn sealed_segments_are_truncated_to_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(300);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut model = Model::default();
    let mut rng = Rng::new(11);
    let check = |dir: &Path| {
        let files = segments(dir);
        let (last, sealed) = files.split_last().unwrap();
        for file in sealed {
            let len = file_len(file);
            assert_eq!(len, logical_end(file), "{file:?} is cut at its records");
            let bytes = fs::read(file).unwrap();
            assert!(len <= 300 || bytes.len() == 25 + 8 + payload_len(&bytes, 25));
        }
        assert_eq!(file_len(last), 300.max(logical_end(last)), "{last:?}");
        files.len()
    };
    while model.last_index() < 150 {
        let (hard_state, batch) = random_batch(&mut rng, &model);
        persist(&mut storage, &mut model, hard_state, &batch);
        check(dir.path());
    }
    // One batch larger than a segment gets a segment of its own, and grows it.
    let next = model.last_index() + 1;
    let big = [LogEntry::new(7, next, vec![7; 1000])];
    persist(&mut storage, &mut model, Some(hs(7, None)), &big);
    assert!(file_len(&last_segment(dir.path())) > 1000);
    persist(
        &mut storage,
        &mut model,
        None,
        &entries(7, next + 1..=next + 1),
    );
    let files = check(dir.path());
    assert!(files > 10, "only {files} segments");
    drop(storage);

    // A restart, then roll-overs again: the reopened segment is sealed too.
    let (mut storage, log) = reopen(dir.path(), &options);
    assert_eq!(log, model.0);
    for _ in 0..30 {
        let (hard_state, batch) = random_batch(&mut rng, &model);
        persist(&mut storage, &mut model, hard_state, &batch);
    }
    assert!(check(dir.path()) > files);
    // Reset seals the active segment before it starts its own (and then
    // deletes the older ones).
    storage.reset(model.last_index() + 5, 9).unwrap();
    assert_eq!(check(dir.path()), 1);
    drop(storage);
    assert_eq!(
        reopen(dir.path(), &options).0.last_index(),
        model.last_index() + 5
    );
}

/// The payload length in the record header at `offset`.
fn payload_len(bytes: &[u8], offset: usize) -> usize {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize
}

#[test]
fn a_crash_during_roll_over_recovers() {
    // Roll-over seals the old segment (cuts its zeros, fsync), then creates the
    // new one (preallocate, fsync, fsync the directory), then writes its
    // header and the batch (one fdatasync). Each state a crash can leave is
    // built by hand from a log whose last batch rolled over.
    let options = small_segments(300);
    let setup = |dir: &Path| {
        let mut storage = FileStorage::open_with(dir, options.clone()).unwrap();
        let mut model = Model::default();
        let mut i = 0;
        loop {
            let before = model.0.clone();
            let batch = entries(1, i * 2 + 1..=i * 2 + 2);
            persist(&mut storage, &mut model, Some(hs(1, Some(i + 1))), &batch);
            i += 1;
            if segments(dir).len() == 2 {
                return (before, model);
            }
        }
    };
    for state in [
        "old one not yet cut",          // crash while sealing: no new file yet
        "new one empty",                // created, not yet preallocated
        "new one preallocated",         // all zeros: header not yet written
        "new one half preallocated",    // a size change that half landed
        "header torn",                  // the header and batch half landed
        "header written, batch zeroed", // only the header landed
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (before, mut model) = setup(dir.path());
        let [old, new] = <[PathBuf; 2]>::try_from(segments(dir.path())).unwrap();
        assert_eq!(file_len(&old), logical_end(&old), "sealed");
        match state {
            "old one not yet cut" => {
                fs::remove_file(&new).unwrap();
                set_len(&old, 300);
            }
            "new one empty" => set_len(&new, 0),
            "new one preallocated" => zero_range(&new, 0, 300),
            "new one half preallocated" => {
                set_len(&new, 0);
                set_len(&new, 150);
            }
            "header torn" => zero_range(&new, 13, 300),
            _ => zero_range(&new, 25, 300),
        }

        let (mut storage, log) = reopen(dir.path(), &options);
        assert_eq!(log, before, "{state}");
        model.0 = log;
        let last = last_segment(dir.path());
        assert_eq!(file_len(&last), 300, "{state}: preallocated");
        assert_eq!(
            fs::read(&last).unwrap()[8],
            1,
            "{state}: starts with a hard state"
        );
        // Appends continue, roll over again, and recover.
        for i in 0..10 {
            let next = model.last_index() + 1;
            persist(
                &mut storage,
                &mut model,
                None,
                &entries(2, next..=next + i % 3),
            );
        }
        drop(storage);
        assert_eq!(reopen(dir.path(), &options).1, model.0, "{state}");
        assert!(segments(dir.path()).len() >= 3, "{state}");
    }

    // The order above never leaves zeros at the end of a segment that is not
    // the last, so they are still refused there: an old segment not yet cut
    // while the new one exists cannot come from a crash.
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let [old, new] = <[PathBuf; 2]>::try_from(segments(dir.path())).unwrap();
    let end = file_len(&old);
    set_len(&old, 300);
    zero_range(&new, 0, 300);
    let (path, offset, text) = corruption(FileStorage::open_with(dir.path(), options));
    assert_eq!((path, offset), (old, end), "{text}");
    assert!(text.contains("zero-filled tail"), "{text}");
}

#[test]
fn segments_grow_without_preallocation_and_either_mode_reads_the_other() {
    // Preallocation off is also what a filesystem without fallocate gets.
    let dir = tempfile::tempdir().unwrap();
    let growing = small_segments(300).with_preallocation(false);
    let preallocated = small_segments(300);
    let mut storage = FileStorage::open_with(dir.path(), growing.clone()).unwrap();
    let mut model = Model::default();
    let mut rng = Rng::new(5);
    let mut run = |storage: &mut FileStorage, model: &mut Model, rounds| {
        for _ in 0..rounds {
            let (hard_state, batch) = random_batch(&mut rng, model);
            persist(storage, model, hard_state, &batch);
        }
    };
    run(&mut storage, &mut model, 20);
    for file in segments(dir.path()) {
        assert_eq!(file_len(&file), logical_end(&file), "{file:?} grows");
    }
    drop(storage);

    // Upgrading: the last segment is preallocated when opened.
    let (mut storage, log) = reopen(dir.path(), &preallocated);
    assert_eq!(log, model.0);
    let last = last_segment(dir.path());
    assert_eq!(file_len(&last), 300.max(logical_end(&last)));
    run(&mut storage, &mut model, 20);
    drop(storage);

    // And back: a preallocated tail is read as the end of the log.
    let (mut storage, log) = reopen(dir.path(), &growing);
    assert_eq!(log, model.0);
    run(&mut storage, &mut model, 20);
    drop(storage);
    assert_eq!(reopen(dir.path(), &preallocated).1, model.0);
}

// ---- Torn writes versus corruption ------------------------------------------------

/// Writes three batches and returns the segment and its length after each.
fn three_batches(dir: &Path) -> (PathBuf, [u64; 3]) {
    let mut storage = FileStorage::open(dir).unwrap();
    let seg = last_segment(dir);
    storage
        .persist(Some(&hs(1, Some(1))), &entries(1, 1..=3))
        .unwrap();
    let l1 = logical_end(&seg);
    storage
        .persist(Some(&hs(2, Some(2))), &entries(2, 4..=6))
        .unwrap();
    let l2 = logical_end(&seg);
    storage
        .persist(Some(&hs(3, None)), &entries(3, 7..=9))
        .unwrap();
    assert_eq!(file_len(&seg), DEFAULT_SEGMENT_SIZE, "preallocated");
    (seg.clone(), [l1, l2, logical_end(&seg)])
}

fn after_two_batches() -> RecoveredLog {
    let mut log = entries(1, 1..=3);
    log.extend(entries(2, 4..=6));
    RecoveredLog(hs(2, Some(2)), log)
}

#[test]
fn torn_tail_record_is_truncated_and_node_starts() {
    let defaults = FileStorageOptions::default();
    // Cuts inside the header, right after it, mid-payload and one byte short;
    // the file ends at the cut (a growing file) or the rest of the write never
    // landed in the preallocated space (zeros from the cut on).
    for cut in [1, 5, 8, 9, 30, u64::MAX] {
        for preallocated in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (seg, [_, l2, l3]) = three_batches(dir.path());
            let cut_at = if cut == u64::MAX { l3 - 1 } else { l2 + cut };
            match preallocated {
                false => set_len(&seg, cut_at),
                true => zero_range(&seg, cut_at, l3),
            }

            let (storage, log) = reopen(dir.path(), &defaults);
            let what = format!("cut at {cut_at}, preallocated {preallocated}");
            assert_eq!(log, after_two_batches(), "{what}");
            assert_eq!(logical_end(&seg), l2, "{what}: the torn record is cut off");
            assert!(zeros_from(&seg, l2), "{what}: only zeros after the log");
            assert_eq!(file_len(&seg), DEFAULT_SEGMENT_SIZE, "{what}");
            check_appends_after_two_batches(storage, dir.path(), &defaults);
        }
    }
}

/// Appends entry 7 to a log recovered as [`after_two_batches`], and checks
/// that a reopen sees it.
fn check_appends_after_two_batches(
    mut storage: FileStorage,
    dir: &Path,
    defaults: &FileStorageOptions,
) {
    storage.persist(None, &entries(4, 7..=7)).unwrap();
    drop(storage);
    let mut expected = after_two_batches();
    expected.1.push(entry(4, 7));
    assert_eq!(reopen(dir, defaults).1, expected);
}

#[test]
fn zero_filled_tail_is_treated_as_torn() {
    let defaults = FileStorageOptions::default();
    let mut complete = after_two_batches();
    complete.0 = hs(3, None);
    complete.1.extend(entries(3, 7..=9));
    // (bytes of the last record zeroed from this offset into it, zeros
    // appended to a file that ended at the last record, or left preallocated)
    for (zero_from, zeros_after, expected) in [
        (None, Some(4096), &complete), // file extended, data never landed
        (None, None, &complete),       // the preallocated tail of a clean log
        (Some(0), Some(0), &after_two_batches()), // whole last record is zeros
        (Some(0), Some(100), &after_two_batches()),
        (Some(0), None, &after_two_batches()),
        (Some(20), Some(0), &after_two_batches()), // second half of it is zeros
        (Some(20), Some(4096), &after_two_batches()),
        (Some(20), None, &after_two_batches()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (seg, [_, l2, l3]) = three_batches(dir.path());
        if let Some(from) = zero_from {
            zero_range(&seg, l2 + from, l3);
        }
        if let Some(zeros) = zeros_after {
            set_len(&seg, l3);
            append_bytes(&seg, &vec![0; zeros]);
        }

        let (storage, log) = reopen(dir.path(), &defaults);
        let what = format!("zeroed from {zero_from:?}, {zeros_after:?} zeros after");
        assert_eq!(&log, expected, "{what}");
        let clean = if expected == &complete { l3 } else { l2 };
        assert_eq!(logical_end(&seg), clean, "{what}");
        assert!(zeros_from(&seg, clean), "{what}");
        assert_eq!(file_len(&seg), DEFAULT_SEGMENT_SIZE, "{what}: preallocated");
        if expected != &complete {
            check_appends_after_two_batches(storage, dir.path(), &defaults);
        }
    }
}

#[test]
fn data_after_a_zero_filled_gap_is_refused() {
    // In the preallocated space, and at the very end of the file.
    for at in [Some(512), None] {
        let dir = tempfile::tempdir().unwrap();
        let (seg, [_, _, l3]) = three_batches(dir.path());
        match at {
            Some(gap) => write_at(&seg, l3 + gap, &[7]),
            None => append_bytes(&seg, &[7]),
        }
        let before = fs::read(&seg).unwrap();
        let (path, offset, _) = corruption(FileStorage::open(dir.path()));
        assert_eq!((path, offset), (seg.clone(), l3), "{at:?}");
        assert!(
            fs::read(&seg).unwrap() == before,
            "a refused log is left untouched"
        );
    }
}

#[test]
fn corrupt_record_in_the_middle_is_refused_naming_file_and_offset() {
    // A flipped bit in the payload, in the checksum, and in the length field.
    for flip_at in [8 + 5, 4, 0] {
        let dir = tempfile::tempdir().unwrap();
        let (seg, [l1, _, _]) = three_batches(dir.path());
        flip_byte(&seg, l1 + flip_at);
        let before = fs::read(&seg).unwrap();

        let (path, offset, text) = corruption(FileStorage::open(dir.path()));
        assert_eq!((&path, offset), (&seg, l1), "flip at {flip_at}: {text}");
        assert!(text.contains("00000000000000000001.wal"), "{text}");
        assert!(text.contains(&format!("offset {l1}")), "{text}");
        assert!(
            fs::read(&seg).unwrap() == before,
            "a refused log is left untouched"
        );
    }
}

#[test]
fn checksummed_but_meaningless_records_are_refused_even_at_the_tail() {
    let unknown_type = frame(&[9, 1, 2, 3]);
    let mut gap = vec![2];
    gap.extend_from_slice(&[0; 16]); // hard state
    gap.extend_from_slice(&1u32.to_le_bytes());
    gap.extend_from_slice(&3u64.to_le_bytes()); // term
    gap.extend_from_slice(&20u64.to_le_bytes()); // index 20 after 9: a gap
    gap.extend_from_slice(&[0, 0, 0, 0, 0]); // kind, data length
    let mut huge = (u32::MAX - 1).to_le_bytes().to_vec(); // length > 256 MiB
    huge.extend_from_slice(&[1; 64]);
    for (name, tail) in [
        ("unknown type", unknown_type),
        ("gap", frame(&gap)),
        ("huge", huge),
    ] {
        for preallocated in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (seg, [_, _, l3]) = three_batches(dir.path());
            if !preallocated {
                set_len(&seg, l3);
            }
            write_at(&seg, l3, &tail);
            let (path, offset, text) = corruption(FileStorage::open(dir.path()));
            assert_eq!((path, offset), (seg, l3), "{name}: {text}");
        }
    }
}

// ---- Random crash points ------------------------------------------------------

/// How the bytes after a crash look.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Tail {
    /// The file ends where the write stopped.
    Cut,
    /// Zeros follow: the file grew, the data blocks never landed.
    Zeros,
    /// Garbage follows: no filesystem promises otherwise.
    Garbage,
    /// The file keeps its length and the rest of the write never landed:
    /// zeros from the cut on, as in a preallocated segment.
    Zeroed,
    /// As `Zeroed`, with garbage at the cut.
    ZeroedGarbage,
}

/// Writes random batches, crashes during the last one (the last segment is
/// cut, or zeroed from, anywhere between its logical end before and after
/// that write), reopens, and checks the log is exactly the state before or
/// after the last batch. Then writes on, to prove the repaired log accepts
/// appends. Segments are preallocated for most seeds. Returns `None` if
/// `open` (rightly) refused a garbage tail, else whether the cut fell
/// strictly inside the last write.
fn crash_and_recover(seed: u64, tail: Tail) -> Option<bool> {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments([300, 1000, 1 << 20][rng.below(3) as usize])
        .with_preallocation(!rng.chance(20));
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut model = Model::default();
    for _ in 0..rng.below(12) {
        let (hard_state, batch) = random_batch(&mut rng, &model);
        persist(&mut storage, &mut model, hard_state, &batch);
    }
    let before = model.0.clone();
    let (seg_before, len_before) = (
        last_segment(dir.path()),
        logical_end(&last_segment(dir.path())),
    );
    let (hard_state, batch) = random_batch(&mut rng, &model);
    persist(&mut storage, &mut model, hard_state, &batch);
    let after = model.0.clone();
    drop(storage);

    let seg = last_segment(dir.path());
    if options.preallocate {
        assert_eq!(file_len(&seg), options.segment_size.max(logical_end(&seg)));
    } else {
        assert_eq!(file_len(&seg), logical_end(&seg));
    }
    let start = if seg == seg_before { len_before } else { 0 };
    let end = logical_end(&seg);
    let cut = start + rng.below(end - start + 1);
    let written = fs::read(&seg).unwrap();
    let complete = match tail {
        // Zeroing bytes that were zeros anyway changes nothing.
        Tail::Zeroed => written[cut as usize..end as usize].iter().all(|&b| b == 0),
        _ => cut == end,
    };
    match tail {
        Tail::Cut => set_len(&seg, cut),
        Tail::Zeros => {
            set_len(&seg, cut);
            append_bytes(&seg, &vec![0; 1 + rng.below(3000) as usize]);
        }
        Tail::Garbage => {
            set_len(&seg, cut);
            let len = 1 + rng.below(40);
            append_bytes(&seg, &rng.bytes(len));
        }
        Tail::Zeroed => zero_range(&seg, cut, end),
        Tail::ZeroedGarbage => {
            zero_range(&seg, cut, end);
            let len = 1 + rng.below(40);
            write_at(&seg, cut, &rng.bytes(len));
        }
    }

    let mut storage = match FileStorage::open_with(dir.path(), options.clone()) {
        Ok(storage) => storage,
        Err(StorageError::Corruption { path, offset, .. })
            if matches!(tail, Tail::Garbage | Tail::ZeroedGarbage) =>
        {
            // Garbage after a record's end is not a torn write; refusing is
            // right as long as it points at the damaged tail.
            assert_eq!(path, seg, "seed {seed}");
            assert!(offset >= start, "seed {seed}: offset {offset} < {start}");
            return None;
        }
        Err(err) => panic!("seed {seed} {tail:?}: cut at {cut}: {err}"),
    };
    let state = storage.recover().unwrap();
    let got = RecoveredLog(state.hard_state, state.entries);
    assert!(
        got == before || got == after,
        "seed {seed} {tail:?}: cut at {cut}: {got:?}"
    );
    if matches!(tail, Tail::Cut | Tail::Zeroed) {
        let expected = if complete { &after } else { &before };
        assert_eq!(
            &got, expected,
            "seed {seed} {tail:?}: cut at {cut} of {start}.."
        );
    }
    let last = last_segment(dir.path());
    assert!(
        zeros_from(&last, logical_end(&last)),
        "seed {seed} {tail:?}"
    );

    model.0 = got.clone();
    let next = model.last_index() + 1;
    persist(
        &mut storage,
        &mut model,
        Some(hs(1000, Some(1))),
        &entries(1000, next..=next + 2),
    );
    drop(storage);
    assert_eq!(
        reopen(dir.path(), &options).1,
        model.0,
        "seed {seed}: writing after recovery"
    );
    Some(cut > start && !complete)
}

#[test]
fn random_crash_points_restart_into_a_consistent_log() {
    let (mut cut, mut zeroed) = (0, 0);
    for seed in 0..150 {
        cut += usize::from(crash_and_recover(seed, Tail::Cut) == Some(true));
        zeroed += usize::from(crash_and_recover(2000 + seed, Tail::Zeroed) == Some(true));
    }
    assert!(cut > 50, "only {cut} cuts fell inside the last write");
    assert!(
        zeroed > 50,
        "only {zeroed} zeroings fell inside the last write"
    );
}

#[test]
fn random_crash_points_with_zeros_or_garbage_after_the_cut() {
    let (mut garbage, mut zeroed_garbage) = (0, 0);
    for seed in 0..150 {
        let zeros = crash_and_recover(seed, Tail::Zeros);
        assert!(
            zeros.is_some(),
            "seed {seed}: zeros after a cut are always torn"
        );
        garbage += usize::from(crash_and_recover(1000 + seed, Tail::Garbage).is_some());
        let recovered = crash_and_recover(3000 + seed, Tail::ZeroedGarbage).is_some();
        zeroed_garbage += usize::from(recovered);
    }
    // Most garbage is refused (its length field is absurd); some must recover,
    // or this test would not exercise recovery at all.
    assert!(garbage > 10, "only {garbage} garbage tails recovered");
    assert!(
        zeroed_garbage > 10,
        "only {zeroed_garbage} garbage tails in preallocated space recovered"
    );
}

// ---- Compaction ---------------------------------------------------------------

/// The number in a segment file's name.
fn seq_of(path: &Path) -> u64 {
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap();
    name.parse().unwrap()
}

fn seqs(dir: &Path) -> Vec<u64> {
    segments(dir).iter().map(|p| seq_of(p)).collect()
}

/// Persists `batch` and notes, per segment, the largest index written to it.
fn persist_tracked(
    storage: &mut FileStorage,
    model: &mut Model,
    max_index: &mut std::collections::BTreeMap<u64, u64>,
    hs: Option<HardState>,
    batch: &[LogEntry],
) {
    persist(storage, model, hs, batch);
    if let Some(last) = batch.last() {
        let seq = seq_of(&last_segment(storage.dir()));
        let max = max_index.entry(seq).or_insert(0);
        *max = (*max).max(last.index);
    }
}

fn invalid<T: std::fmt::Debug>(result: Result<T, StorageError>) -> bool {
    matches!(result, Err(StorageError::Invalid(_)))
}

/// The model's entries from `first` on.
fn suffix(model: &Model, first: u64) -> Vec<LogEntry> {
    model.0 .1[first as usize - 1..].to_vec()
}

/// Checks `storage` (and a reopened copy) against the model's suffix from
/// its first index.
fn check_suffix(storage: &mut FileStorage, model: &Model, options: &FileStorageOptions) {
    let first = storage.first_index();
    assert_eq!(storage.last_index(), model.last_index());
    let state = storage.recover().unwrap();
    assert_eq!(state.hard_state, model.0 .0);
    assert_eq!(state.entries, suffix(model, first));
    let reopened = FileStorage::open_with(storage.dir(), options.clone()).unwrap();
    assert_eq!(
        (reopened.first_index(), reopened.last_index()),
        (first, model.last_index()),
        "reopened {:?}",
        seqs(storage.dir())
    );
    let (_, log) = reopen(storage.dir(), options);
    assert_eq!(log, RecoveredLog(model.0 .0, suffix(model, first)));
}

#[test]
fn compact_deletes_only_whole_covered_segments_and_recovery_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(300);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let (mut model, mut max_index) = (Model::default(), Default::default());
    persist_tracked(
        &mut storage,
        &mut model,
        &mut max_index,
        Some(hs(3, Some(2))),
        &[],
    );
    for i in 0..20 {
        let batch = entries(3, i * 3 + 1..=i * 3 + 3);
        persist_tracked(&mut storage, &mut model, &mut max_index, None, &batch);
    }
    persist_tracked(
        &mut storage,
        &mut model,
        &mut max_index,
        Some(hs(4, None)),
        &[],
    );
    let before = seqs(dir.path());
    assert!(before.len() >= 8, "{before:?}");

    let c = 31;
    let expected_kept: Vec<u64> = before
        .iter()
        .copied()
        .skip_while(|seq| max_index.get(seq).is_none_or(|&max| max <= c))
        .collect();
    assert!(expected_kept.len() < before.len() && expected_kept.len() > 1);
    storage.compact(c).unwrap();
    assert_eq!(
        seqs(dir.path()),
        expected_kept,
        "segments on disk after compact({c})"
    );

    // The first entry left is the first one written to the first segment left.
    let first = storage.first_index();
    assert!(first > 1 && first <= c + 1, "first index {first}");
    assert_eq!(max_index[&(expected_kept[0] - 1)] + 1, first);
    assert!(invalid(storage.entries(first - 1, first)));
    assert!(invalid(storage.entries(1, 3)));
    assert_eq!(storage.entries(first, 61).unwrap(), suffix(&model, first));
    check_suffix(&mut storage, &model, &options);

    // Compacting again at the same index, or below, changes nothing.
    storage.compact(c).unwrap();
    storage.compact(2).unwrap();
    assert_eq!(seqs(dir.path()), expected_kept);

    // Appends continue, and a restart sees them after the compacted prefix.
    let (mut storage, _) = reopen(dir.path(), &options);
    persist(
        &mut storage,
        &mut model,
        Some(hs(5, Some(1))),
        &entries(5, 61..=70),
    );
    check_suffix(&mut storage, &model, &options);
}

#[test]
fn compact_never_drops_entries_after_the_index() {
    // Random batches (with conflicts that rewrite suffixes, and batches that
    // straddle segments), then compaction in steps, with appends in between.
    for seed in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let options = small_segments([250, 600, 2000][seed as usize % 3]);
        let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
        let mut model = Model::default();
        let mut rng = Rng::new(seed);
        let mut compacted_to = 0;
        for round in 0..6 {
            let target = model.last_index() + 40;
            while model.last_index() < target {
                let (hard_state, batch) = random_batch(&mut rng, &model);
                // Committed entries are never rewritten: no conflict reaches
                // into what was compacted.
                if batch.first().is_some_and(|e| e.index <= compacted_to) {
                    continue;
                }
                persist(&mut storage, &mut model, hard_state, &batch);
            }
            let c = compacted_to + rng.below(model.last_index() - compacted_to + 5);
            let files_before = seqs(dir.path());
            storage.compact(c).unwrap();
            compacted_to = compacted_to.max(c.min(model.last_index()));
            let first = storage.first_index();
            assert!(
                first <= c + 1,
                "seed {seed} round {round}: compact({c}) dropped up to {first}"
            );
            let files = seqs(dir.path());
            assert!(files_before.ends_with(&files), "only a prefix is deleted");
            check_suffix(&mut storage, &model, &options);
            if round % 2 == 1 {
                storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
            }
        }
        assert!(
            storage.first_index() > 1,
            "seed {seed}: nothing was ever compacted"
        );
    }
}

#[test]
fn compaction_after_a_conflict_keeps_the_rewritten_entries() {
    // Segment 1: entries 1..=10. Segment 2: 11..=15, then a conflict rewrites
    // 8..=9. Segment 3: 10..=20. Compacting to 10 deletes segment 1; replay of
    // segment 2 meets 11..=15 first and then 8..=9, below it: they must win.
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(400);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut model = Model::default();
    let segment_of_next_write = |s: &FileStorage| seq_of(&last_segment(s.dir()));
    persist(&mut storage, &mut model, None, &entries(1, 1..=10));
    assert_eq!(segment_of_next_write(&storage), 1);
    persist(
        &mut storage,
        &mut model,
        Some(hs(2, None)),
        &entries(1, 11..=15),
    );
    persist(&mut storage, &mut model, None, &entries(2, 8..=9));
    assert_eq!(segment_of_next_write(&storage), 2);
    persist(&mut storage, &mut model, None, &entries(2, 10..=20));
    assert_eq!(seqs(dir.path()), [1, 2, 3]);

    storage.compact(10).unwrap();
    assert_eq!(seqs(dir.path()), [2, 3]);
    assert_eq!(storage.first_index(), 8);
    check_suffix(&mut storage, &model, &options);
}

#[test]
fn compaction_keeps_the_segment_that_says_where_the_log_ends() {
    // After the last entry, only hard states: deleting every segment with
    // entries would leave nothing to tell a restart that the log ends at 6.
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(120);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut model = Model::default();
    persist(&mut storage, &mut model, None, &entries(1, 1..=3));
    persist(&mut storage, &mut model, None, &entries(1, 4..=6));
    let last_entry_segment = seq_of(&last_segment(dir.path()));
    for term in 2..30 {
        persist(&mut storage, &mut model, Some(hs(term, Some(1))), &[]);
    }
    assert!(seqs(dir.path()).len() > last_entry_segment as usize + 2);

    storage.compact(6).unwrap();
    assert_eq!(seqs(dir.path())[0], last_entry_segment);
    assert_eq!(storage.last_index(), 6);
    check_suffix(&mut storage, &model, &options);
    let (mut storage, _) = reopen(dir.path(), &options);
    persist(&mut storage, &mut model, None, &entries(30, 7..=7));
    check_suffix(&mut storage, &model, &options);
}

#[test]
fn segment_numbers_may_start_above_one_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(200);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut model = Model::default();
    for i in 0..15 {
        persist(
            &mut storage,
            &mut model,
            None,
            &entries(1, i * 2 + 1..=i * 2 + 2),
        );
    }
    storage.compact(20).unwrap();
    let kept = seqs(dir.path());
    assert!(kept[0] > 1, "{kept:?}");
    drop(storage);

    let (mut storage, log) = reopen(dir.path(), &options);
    let first = storage.first_index();
    assert_eq!(log.1, suffix(&model, first));
    for i in 15..30 {
        persist(
            &mut storage,
            &mut model,
            None,
            &entries(1, i * 2 + 1..=i * 2 + 2),
        );
    }
    let files = seqs(dir.path());
    assert_eq!(files[0], kept[0]);
    let consecutive: Vec<u64> = (files[0]..files[0] + files.len() as u64).collect();
    assert_eq!(files, consecutive);
    check_suffix(&mut storage, &model, &options);
}

#[test]
fn a_gap_between_segments_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(200);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    for i in 0..20 {
        let batch = entries(1, i * 2 + 1..=i * 2 + 2);
        storage.persist(None, &batch).unwrap();
    }
    storage.compact(16).unwrap();
    drop(storage);
    let files = segments(dir.path());
    assert!(seq_of(&files[0]) > 1 && files.len() >= 4, "{files:?}");
    fs::remove_file(&files[2]).unwrap();
    let (path, offset, text) = corruption(FileStorage::open_with(dir.path(), options));
    assert_eq!((&path, offset), (&files[3], 0), "{text}");
    assert!(text.contains("is missing"), "{text}");
}

// ---- Reset ------------------------------------------------------------------------

/// A log of 30 entries over several segments, hard state (2, Some(1)).
fn thirty_entries(dir: &Path, options: &FileStorageOptions) -> FileStorage {
    let mut storage = FileStorage::open_with(dir, options.clone()).unwrap();
    storage.persist(Some(&hs(2, Some(1))), &[]).unwrap();
    for i in 0..10 {
        storage
            .persist(None, &entries(2, i * 3 + 1..=i * 3 + 3))
            .unwrap();
    }
    storage
}

#[test]
fn reset_discards_the_log_and_next_append_continues_after_the_snapshot_index() {
    // A snapshot beyond the log (a lagging follower), and one inside it.
    for snapshot_index in [50, 12] {
        let dir = tempfile::tempdir().unwrap();
        let options = small_segments(300);
        let mut storage = thirty_entries(dir.path(), &options);
        let old = seqs(dir.path());
        assert!(old.len() > 2);

        storage.reset(snapshot_index, 4).unwrap();
        let new_seq = old.last().unwrap() + 1;
        assert_eq!(seqs(dir.path()), [new_seq], "older segments are deleted");
        let empty = RecoveredLog(hs(2, Some(1)), Vec::new());
        for s in [&mut storage, &mut reopen(dir.path(), &options).0] {
            assert_eq!(s.first_index(), snapshot_index + 1);
            assert_eq!(s.last_index(), snapshot_index);
            let state = s.recover().unwrap();
            assert_eq!(RecoveredLog(state.hard_state, state.entries), empty);
            let next = snapshot_index + 1;
            assert_eq!(s.entries(next, next).unwrap(), []);
            assert!(invalid(s.entries(snapshot_index, next)));
            // Only index + 1 follows: no gap, no rewrite of the snapshot.
            assert!(invalid(s.persist(None, &entries(4, next + 1..=next + 2))));
            assert!(invalid(s.persist(None, &entries(4, snapshot_index..=next))));
            assert!(invalid(s.persist(None, &entries(4, 1..=3))));
        }

        let next = snapshot_index + 1;
        let mut expected = entries(4, next..=next + 9);
        storage.persist(Some(&hs(4, None)), &expected).unwrap();
        storage
            .persist(None, &entries(5, next + 10..=next + 20))
            .unwrap();
        expected.extend(entries(5, next + 10..=next + 20));
        drop(storage);
        let (mut storage, log) = reopen(dir.path(), &options);
        assert_eq!(log, RecoveredLog(hs(4, None), expected.clone()));
        assert_eq!(storage.first_index(), next);

        // Compaction after a reset, and a second reset.
        storage.compact(next + 15).unwrap();
        assert!(storage.first_index() <= next + 16);
        storage.reset(next + 100, 9).unwrap();
        drop(storage);
        let (storage, log) = reopen(dir.path(), &options);
        assert_eq!(log, RecoveredLog(hs(4, None), Vec::new()));
        assert_eq!(storage.last_index(), next + 100);
    }
}

#[test]
fn compaction_after_a_reset_keeps_the_reset_until_entries_follow() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(120);
    let mut storage = thirty_entries(dir.path(), &options);
    storage.reset(40, 3).unwrap();
    for term in 3..20 {
        storage.persist(Some(&hs(term, None)), &[]).unwrap();
    }
    let reset_seq = seqs(dir.path())[0];
    storage.compact(1000).unwrap();
    assert_eq!(
        seqs(dir.path())[0],
        reset_seq,
        "the reset says where the log ends"
    );
    let (mut storage, log) = reopen(dir.path(), &options);
    assert_eq!(log, RecoveredLog(hs(19, None), Vec::new()));
    assert_eq!(storage.last_index(), 40);

    storage.persist(None, &entries(19, 41..=42)).unwrap();
    for term in 20..30 {
        storage.persist(Some(&hs(term, None)), &[]).unwrap();
    }
    storage.compact(42).unwrap();
    assert!(seqs(dir.path())[0] > reset_seq, "now the entries say it");
    let (storage, log) = reopen(dir.path(), &options);
    assert_eq!(log, RecoveredLog(hs(29, None), entries(19, 41..=42)));
    assert_eq!(storage.first_index(), 41);
}

#[test]
fn crash_after_reset_before_old_segments_are_deleted_recovers_to_the_reset() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(300);
    let mut storage = thirty_entries(dir.path(), &options);
    let saved = tempfile::tempdir().unwrap();
    for file in segments(dir.path()) {
        fs::copy(&file, saved.path().join(file.file_name().unwrap())).unwrap();
    }
    storage.reset(25, 3).unwrap();
    drop(storage);
    // The crash: the reset segment is on disk, the deletions never happened.
    // (The old active segment had been sealed before the reset segment was
    // created.)
    let reset_segment = last_segment(dir.path());
    for file in segments(saved.path()) {
        let copy = dir.path().join(file.file_name().unwrap());
        fs::copy(&file, &copy).unwrap();
        seal(&copy);
    }
    assert!(segments(dir.path()).len() > 2);

    let (mut storage, log) = reopen(dir.path(), &options);
    assert_eq!(log, RecoveredLog(hs(2, Some(1)), Vec::new()));
    assert_eq!((storage.first_index(), storage.last_index()), (26, 25));
    assert_eq!(
        segments(dir.path()),
        [reset_segment],
        "open finishes the reset"
    );
    storage.persist(None, &entries(3, 26..=27)).unwrap();
    drop(storage);
    assert_eq!(
        reopen(dir.path(), &options).1,
        RecoveredLog(hs(2, Some(1)), entries(3, 26..=27))
    );
}

#[test]
fn crash_while_writing_the_reset_keeps_the_old_log() {
    // The reset segment was created, then its write was torn or never landed:
    // reset had not returned, so the old log must come back whole.
    for (cut, preallocated) in [(0, false), (10, false), (30, false), (40, false)]
        .into_iter()
        .chain([(0, true), (10, true), (30, true), (40, true)])
    {
        let dir = tempfile::tempdir().unwrap();
        let options = small_segments(300);
        let storage = thirty_entries(dir.path(), &options);
        drop(storage);
        let (_, before) = reopen(dir.path(), &options);
        let saved = tempfile::tempdir().unwrap();
        for file in segments(dir.path()) {
            fs::copy(&file, saved.path().join(file.file_name().unwrap())).unwrap();
        }
        let (mut storage, _) = reopen(dir.path(), &options);
        storage.reset(25, 3).unwrap();
        drop(storage);
        let reset_segment = last_segment(dir.path());
        let full = logical_end(&reset_segment);
        assert!(cut < full, "{cut} < {full}");
        match preallocated {
            false => set_len(&reset_segment, cut),
            true => zero_range(&reset_segment, cut, full),
        }
        // Reset sealed the old active segment before creating its own.
        for file in segments(saved.path()) {
            let copy = dir.path().join(file.file_name().unwrap());
            fs::copy(&file, &copy).unwrap();
            seal(&copy);
        }

        let (mut storage, log) = reopen(dir.path(), &options);
        assert_eq!(log, before, "cut at {cut}, preallocated {preallocated}");
        storage.persist(None, &entries(2, 31..=31)).unwrap();
        assert_eq!(storage.last_index(), 31);
    }
}

#[test]
fn a_reset_record_in_a_sealed_segment_is_checked_like_any_record() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(200);
    let mut storage = thirty_entries(dir.path(), &options);
    storage.reset(40, 3).unwrap();
    for i in 0..10 {
        storage
            .persist(None, &entries(3, 41 + i * 2..=42 + i * 2))
            .unwrap();
    }
    drop(storage);
    let files = segments(dir.path());
    assert!(files.len() > 2);
    // The Reset record follows the 25-byte hard-state header.
    flip_byte(&files[0], 25 + 8 + 20);
    let (path, offset, _) = corruption(FileStorage::open_with(dir.path(), options));
    assert_eq!((path, offset), (files[0].clone(), 25));
}

// ---- The compaction contract, for every Storage ------------------------------------

/// Runs `compact` and `reset` through their contract on any storage.
fn compaction_contract(storage: &mut dyn Storage, name: &str) {
    storage
        .persist(Some(&hs(1, Some(1))), &entries(1, 1..=10))
        .unwrap();
    storage.compact(0).unwrap();
    assert_eq!(storage.first_index(), 1, "{name}: compact(0) is a no-op");
    storage.compact(4).unwrap();
    let first = storage.first_index();
    assert!((1..=5).contains(&first), "{name}: first {first}");
    assert_eq!(
        storage.last_index(),
        10,
        "{name}: compaction keeps last_index"
    );
    assert_eq!(
        storage.entries(5, 11).unwrap(),
        entries(1, 5..=10),
        "{name}"
    );
    if first > 1 {
        assert!(invalid(storage.entries(first - 1, 11)), "{name}");
    }
    let state = storage.recover().unwrap();
    assert_eq!(state.entries, entries(1, first..=10), "{name}");

    // A conflict after the compacted prefix still truncates.
    storage.persist(None, &entries(2, 8..=12)).unwrap();
    assert_eq!(storage.entries(7, 13).unwrap()[1..], entries(2, 8..=12));
    // Compacting past the end keeps last_index: the next append is still 13.
    storage.compact(100).unwrap();
    assert_eq!(storage.last_index(), 12, "{name}");
    storage.persist(None, &entries(2, 13..=13)).unwrap();

    storage.reset(20, 3).unwrap();
    assert_eq!(
        (storage.first_index(), storage.last_index()),
        (21, 20),
        "{name}"
    );
    let state = storage.recover().unwrap();
    assert_eq!(
        state.hard_state,
        hs(1, Some(1)),
        "{name}: reset keeps the vote"
    );
    assert!(state.entries.is_empty(), "{name}");
    assert!(
        invalid(storage.persist(None, &entries(3, 22..=22))),
        "{name}"
    );
    assert!(
        invalid(storage.persist(None, &entries(3, 20..=21))),
        "{name}"
    );
    storage.persist(None, &entries(3, 21..=22)).unwrap();
    assert_eq!(storage.recover().unwrap().entries, entries(3, 21..=22));
}

#[test]
fn memory_and_file_storage_follow_the_compaction_contract() {
    compaction_contract(&mut MemoryStorage::new(), "memory");
    let dir = tempfile::tempdir().unwrap();
    let mut file = FileStorage::open_with(dir.path(), small_segments(150)).unwrap();
    compaction_contract(&mut file, "file");
}

#[test]
fn memory_storage_compacts_exactly_and_keeps_its_helpers() {
    let mut storage = MemoryStorage::with_state(hs(2, Some(1)), entries(1, 1..=10));
    storage.compact(4).unwrap();
    assert_eq!((storage.first_index(), storage.last_index()), (5, 10));
    assert_eq!(storage.log(), entries(1, 5..=10));
    assert!(invalid(storage.entries(4, 6)));
    assert!(invalid(storage.persist(None, &entries(2, 4..=4))));
    storage.compact(10).unwrap();
    assert_eq!((storage.first_index(), storage.last_index()), (11, 10));
    assert_eq!(storage.log(), []);
    assert_eq!(storage.hard_state(), hs(2, Some(1)));

    // A log that starts after a snapshot, as a restarted node would hold it.
    let mut restarted = MemoryStorage::with_state(hs(3, None), entries(3, 21..=25));
    assert_eq!((restarted.first_index(), restarted.last_index()), (21, 25));
    assert_eq!(restarted.recover().unwrap().entries, entries(3, 21..=25));

    restarted.set_fail_writes(true);
    assert!(matches!(
        restarted.compact(22),
        Err(StorageError::Io { .. })
    ));
    assert!(matches!(
        restarted.reset(30, 3),
        Err(StorageError::Io { .. })
    ));
    assert_eq!(
        restarted.first_index(),
        21,
        "a failed write changes nothing"
    );
    restarted.set_fail_writes(false);
    restarted.reset(30, 3).unwrap();
    assert_eq!(restarted.log(), []);
    assert_eq!((restarted.first_index(), restarted.last_index()), (31, 30));
}

#[test]
fn storages_written_before_compaction_existed_get_safe_defaults() {
    /// Implements only the methods that existed before compaction.
    struct Legacy(MemoryStorage);
    impl Storage for Legacy {
        fn recover(&mut self) -> Result<RecoveredState, StorageError> {
            self.0.recover()
        }
        fn persist(&mut self, h: Option<&HardState>, e: &[LogEntry]) -> Result<(), StorageError> {
            self.0.persist(h, e)
        }
        fn first_index(&self) -> LogIndex {
            self.0.first_index()
        }
        fn last_index(&self) -> LogIndex {
            self.0.last_index()
        }
        fn entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<LogEntry>, StorageError> {
            self.0.entries(lo, hi)
        }
    }
    let mut legacy = Legacy(MemoryStorage::with_state(hs(1, None), entries(1, 1..=5)));
    legacy.compact(3).unwrap(); // keeping everything is allowed
    assert_eq!(legacy.first_index(), 1);
    let term: Term = 1;
    assert!(invalid(legacy.reset(5, term)), "reset cannot be faked");
    assert_eq!(legacy.last_index(), 5);
}

// ---- Measurement ------------------------------------------------------------------

/// Not a correctness test: persists 20,000 batches of one 100-byte entry (one
/// fdatasync each) with growing and with preallocated segments, alternately,
/// and prints the rate and latency percentiles of each. Run with `cargo test
/// --release -p raft --test storage_wal -- --ignored --nocapture
/// append_latency`; set `WAL_BENCH_DIR` to measure on another filesystem than
/// the temporary directory's, `WAL_BENCH_ROUNDS` for more rounds.
#[test]
#[ignore = "a measurement; run by hand in release mode"]
fn append_latency() {
    let rounds = std::env::var("WAL_BENCH_ROUNDS").map_or(1, |r| r.parse().unwrap());
    for _ in 0..rounds {
        for preallocate in [false, true] {
            let options = FileStorageOptions::default().with_preallocation(preallocate);
            println!("preallocate {preallocate:5}: {}", measure_appends(options));
        }
    }
}

fn measure_appends(options: FileStorageOptions) -> String {
    const BATCHES: u64 = 20_000;
    let dir = match std::env::var_os("WAL_BENCH_DIR") {
        Some(parent) => tempfile::tempdir_in(parent).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    storage.persist(Some(&hs(1, Some(1))), &[]).unwrap();
    let mut latencies = Vec::with_capacity(BATCHES as usize);
    let started = std::time::Instant::now();
    for index in 1..=BATCHES {
        let batch = [LogEntry::new(1, index, vec![0xAB; 100])];
        let t = std::time::Instant::now();
        storage.persist(None, &batch).unwrap();
        latencies.push(t.elapsed());
    }
    let total = started.elapsed();
    drop(storage);
    let t = std::time::Instant::now();
    let reopened = FileStorage::open_with(dir.path(), options).unwrap();
    let open = t.elapsed();
    assert_eq!(reopened.last_index(), BATCHES);
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let ms = |d: std::time::Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
    format!(
        "{BATCHES} batches of one 100-byte entry: {:.0} fsyncs/s, p50 {}, p99 {}, \
         p99.9 {}, max {}; reopen {}",
        BATCHES as f64 / total.as_secs_f64(),
        ms(at(0.50)),
        ms(at(0.99)),
        ms(at(0.999)),
        ms(latencies[latencies.len() - 1]),
        ms(open),
    )
}

// ---- Large batches -----------------------------------------------------------

/// `count` entries of term 1 from index 1, each with `len` bytes of data.
fn large_entries(count: u64, len: usize) -> Vec<LogEntry> {
    (1..=count)
        .map(|i| LogEntry::new(1, i, vec![i as u8; len]))
        .collect()
}

#[test]
fn a_batch_over_the_record_limit_is_split_into_records_that_read_back_whole() {
    // The log writer merges everything that queued during an fsync into one
    // batch; a burst of large proposals must not make a record too large to
    // write (which would stop the node), so the batch is split.
    let dir = tempfile::tempdir().unwrap();
    let options = FileStorageOptions::default().with_max_record_bytes(200);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut batch = large_entries(9, 60);
    // One entry larger than the limit on its own still goes, alone.
    batch.push(LogEntry::new(1, 10, vec![7; 500]));
    batch.push(LogEntry::new(1, 11, vec![8; 10]));
    storage.persist(Some(&hs(1, Some(1))), &batch).unwrap();
    assert_eq!(storage.entries(1, 12).unwrap(), batch);

    let (storage, recovered) = reopen(dir.path(), &options);
    assert_eq!(recovered, RecoveredLog(hs(1, Some(1)), batch.clone()));
    assert_eq!(storage.entries(4, 11).unwrap(), batch[3..10].to_vec());
    // Several records were written: with one record, the segment would hold
    // the segment header and one record only.
    let one_record = dir.path().join("one");
    let mut whole = FileStorage::open(&one_record).unwrap();
    whole.persist(Some(&hs(1, Some(1))), &batch).unwrap();
    let split_len = logical_end(&last_segment(dir.path()));
    let whole_len = logical_end(&last_segment(&one_record));
    assert!(split_len > whole_len, "{split_len} vs {whole_len}");
}

#[test]
fn a_crash_between_the_records_of_a_split_batch_keeps_the_hard_state_and_a_prefix() {
    let options = FileStorageOptions::default().with_max_record_bytes(100);
    let batch = large_entries(4, 40); // two entries per record
    let dir = tempfile::tempdir().unwrap();
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    storage.persist(Some(&hs(3, Some(2))), &batch).unwrap();
    drop(storage);
    // Where the first record ends: what the first two entries alone write.
    let prefix_dir = tempfile::tempdir().unwrap();
    let mut prefix = FileStorage::open_with(prefix_dir.path(), options.clone()).unwrap();
    prefix.persist(Some(&hs(3, Some(2))), &batch[..2]).unwrap();
    let first_end = logical_end(&last_segment(prefix_dir.path()));
    let segment = last_segment(dir.path());
    let end = logical_end(&segment);
    assert!(first_end < end);
    // The second record never reached the disk.
    zero_range(&segment, first_end, end);

    let (_, recovered) = reopen(dir.path(), &options);
    assert_eq!(recovered, RecoveredLog(hs(3, Some(2)), batch[..2].to_vec()));
}

// ---- Spare segments ----------------------------------------------------------

/// Spare segments (`<seq>.wal.<unique>.spare`) in `dir`, in order.
fn spares(dir: &Path) -> Vec<PathBuf> {
    files_with_extension(dir, "spare")
}

#[test]
fn roll_over_renames_the_spare_segment_prepared_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(4096);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut written = Vec::new();
    let mut index = 1;
    // Past half the first segment: the spare for segment 2 is started, on
    // a thread of its own (a real one: wait for its file, boundedly).
    while logical_end(&last_segment(dir.path())) <= 2048 {
        let e = LogEntry::new(1, index, vec![index as u8; 100]);
        storage.persist(None, std::slice::from_ref(&e)).unwrap();
        written.push(e);
        index += 1;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while spares(dir.path()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no spare was prepared"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(segments(dir.path()).len(), 1);
    let spare = spares(dir.path()).remove(0);
    let name = spare.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("00000000000000000002.wal."), "{name}");
    // Up to the roll-over: the spare becomes segment 2, preallocated.
    while segments(dir.path()).len() < 2 {
        assert!(index < 200, "no roll-over");
        let e = LogEntry::new(1, index, vec![index as u8; 100]);
        storage.persist(None, std::slice::from_ref(&e)).unwrap();
        written.push(e);
        index += 1;
    }
    assert!(!spare.exists(), "the spare was renamed");
    assert_eq!(file_len(&last_segment(dir.path())), 4096, "preallocated");
    drop(storage);
    let (_, recovered) = reopen(dir.path(), &options);
    assert_eq!(recovered.1, written);
}

#[test]
fn a_spare_segment_left_by_a_crash_is_removed_at_open_and_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = FileStorage::open(dir.path()).unwrap();
    storage
        .persist(Some(&hs(1, None)), &entries(1, 1..=3))
        .unwrap();
    drop(storage);
    // A crash while the spare was being filled: garbage, or zeros.
    let spare = dir.path().join("00000000000000000002.wal.123-4.spare");
    fs::write(&spare, b"not zeros, not a record").unwrap();
    let (_, recovered) = reopen(dir.path(), &FileStorageOptions::default());
    assert_eq!(recovered, RecoveredLog(hs(1, None), entries(1, 1..=3)));
    assert!(!spare.exists());
    assert_eq!(segments(dir.path()).len(), 1);
}
