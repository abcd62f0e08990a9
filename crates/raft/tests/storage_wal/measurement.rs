//! Measurement, not a correctness test (ignored): append latency with growing and
//! with preallocated segments.

use super::*;

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
