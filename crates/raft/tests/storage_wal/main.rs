//! Tests of `FileStorage`, the write-ahead log: restart, conflict truncation,
//! segment roll-over and preallocation, the recovery rule that tells a torn
//! write at the tail (repaired) from corruption (refused), and log compaction
//! (`compact`, `reset`), which `MemoryStorage` is checked against too.
//!
//! The active segment is preallocated: its file length is the segment size,
//! and its records end at its *logical end* ([`logical_end`]), zeros after.

#[path = "../common/mod.rs"]
mod common;

mod compaction;
mod compaction_contract;
mod large_batches;
mod measurement;
mod preallocation;
mod random_crash;
mod reset;
mod restart;
mod segments;
mod spare_segments;
mod torn_writes;

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
