//! `FileStorage`, the write-ahead log: what one `persist` of a batch costs.
//!
//! - `wal persist + fdatasync`: how long does a batch of 1, 16 or 256
//!   entries of 100 bytes take to become durable? One `persist` call is one
//!   record, one `pwrite` and one `fdatasync`, in a `tempfile::tempdir()`
//!   (so on the disk that holds the system's temporary directory), with the
//!   default options (64 MiB preallocated segments). Entries/s shows how
//!   much batching buys: the flush is paid once per batch.
//! - `wal persist, tmpfs`: the same calls in a directory under `/dev/shm`,
//!   where `fdatasync` returns at once: encoding, checksum, `pwrite` and
//!   bookkeeping, without the disk. Segments are not preallocated there
//!   (preallocating a tmpfs file zeroes 64 MiB of memory at each roll-over,
//!   a cost no disk-backed log pays). Skipped when `/dev/shm` is missing.
//!
//! The difference between the two is the price of durability per batch.
//! Each iteration appends at the next indexes; setting those indexes and
//! compacting old segments (every few thousand batches) are outside the
//! timing.
//!
//! Run: `cargo bench -p raft --bench wal`. fdatasync latency depends on the
//! disk and on whatever else writes to it: compare runs on a quiet machine.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft::{FileStorage, FileStorageOptions, HardState, LogEntry, Storage};
use tempfile::TempDir;

const PAYLOAD: usize = 100;
const BATCHES: [usize; 3] = [1, 16, 256];
/// Compact (outside the timing) once this many entries are stored.
const COMPACT_AFTER: u64 = 1 << 20;

/// A storage in a fresh directory under `parent` (the system's temporary
/// directory when `None`), its hard state written.
fn open(parent: Option<&Path>, options: FileStorageOptions) -> (TempDir, FileStorage) {
    let dir = match parent {
        Some(p) => tempfile::tempdir_in(p),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory");
    let mut storage = FileStorage::open_with(dir.path(), options).expect("open");
    let hs = HardState {
        term: 1,
        voted_for: Some(1),
    };
    storage.persist(Some(&hs), &[]).expect("hard state");
    (dir, storage)
}

fn bench_group(c: &mut Criterion, name: &str, parent: Option<&Path>, options: FileStorageOptions) {
    let mut group = c.benchmark_group(name);
    if parent.is_none() {
        // A few hundred µs to ms per iteration: fewer samples keep a run
        // within its measurement time.
        group.sample_size(20);
    }
    for n in BATCHES {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("entries", n), &n, |b, &n| {
            let (_dir, mut storage) = open(parent, options.clone());
            let mut batch: Vec<LogEntry> = (0..n)
                .map(|_| LogEntry::new(1, 0, vec![b'x'; PAYLOAD]))
                .collect();
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let next = storage.last_index() + 1;
                    for (i, e) in batch.iter_mut().enumerate() {
                        e.index = next + i as u64;
                    }
                    let start = Instant::now();
                    storage.persist(None, black_box(&batch)).expect("persist");
                    timed += start.elapsed();
                    if storage.last_index() - storage.first_index() > COMPACT_AFTER {
                        storage.compact(storage.last_index()).expect("compact");
                    }
                }
                timed
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_group(
        c,
        "wal persist + fdatasync",
        None,
        FileStorageOptions::default(),
    );
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        bench_group(
            c,
            "wal persist, tmpfs",
            Some(shm),
            FileStorageOptions::default().with_preallocation(false),
        );
    }
}

criterion_group! {
    name = wal;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(wal);
