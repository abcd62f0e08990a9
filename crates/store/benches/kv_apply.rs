//! The key-value state machine, per command, as the server drives it.
//!
//! The question: what does applying one committed write, or answering one
//! read, cost once consensus is done? The server hands each committed log
//! entry's bytes to `StateMachine::apply` (postcard decode, then the map
//! update) and each read's bytes to `StateMachine::query`, so that is what is
//! measured, one command per iteration, on a map of 10,000 keys with
//! 100-byte values (the load of `docs/benchmarks.md`):
//!
//! - `apply SET`: overwrites one of the 10,000 keys, in turn;
//! - `apply INCR`: increments one of 10,000 counters, in turn;
//! - `query GET`: reads one of the 10,000 keys (the reply copies the value),
//!   and `query GET missing`, a key that is not there;
//! - `execute SET (decoded)`: the map update alone, the command already
//!   decoded (decoding is outside the timing), to show what postcard costs.
//!
//! The commands are encoded (`encode_command`, as the leader does before
//! proposing) outside the timing.
//!
//! Run: `cargo bench -p raftkv-store --bench kv_apply`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use raft::StateMachine;
use raftkv_store::{encode_command, encode_query, KvCommand, KvOutput, KvQuery, KvStore};

const KEYS: usize = 10_000;
const VALUE: usize = 100;

fn key(i: usize) -> Vec<u8> {
    format!("key:{i:08}").into_bytes()
}

fn set(i: usize) -> KvCommand {
    KvCommand::Set {
        key: key(i),
        value: vec![b'x'; VALUE],
    }
}

/// A store holding the 10,000 keys, as after a preload.
fn loaded() -> KvStore {
    let mut kv = KvStore::new();
    for i in 0..KEYS {
        kv.execute(set(i));
    }
    kv
}

/// Runs `f` on the commands in turn, one per iteration.
fn each<'a, T>(
    items: &'a [T],
    mut f: impl FnMut(u64, &T) -> KvOutput + 'a,
) -> impl FnMut() -> KvOutput + 'a {
    let mut n = 0usize;
    move || {
        let item = &items[n % items.len()];
        n += 1;
        f(n as u64, item)
    }
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("kv, {KEYS} keys, {VALUE} B values"));
    group.throughput(Throughput::Elements(1));

    let sets: Vec<Vec<u8>> = (0..KEYS).map(|i| encode_command(&set(i))).collect();
    let mut kv = loaded();
    group.bench_function("apply SET", |b| {
        b.iter(each(&sets, |index, cmd| kv.apply(index, black_box(cmd))))
    });
    assert_eq!(kv.len(), KEYS);

    let incrs: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| {
            encode_command(&KvCommand::IncrBy {
                key: format!("counter:{i:08}").into_bytes(),
                by: 1,
            })
        })
        .collect();
    group.bench_function("apply INCR", |b| {
        b.iter(each(&incrs, |index, cmd| kv.apply(index, black_box(cmd))))
    });

    let gets: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| encode_query(&KvQuery::Get { key: key(i) }))
        .collect();
    group.bench_function("query GET", |b| {
        b.iter(each(&gets, |_, q| StateMachine::query(&kv, black_box(q))))
    });
    assert_eq!(
        StateMachine::query(&kv, &gets[0]),
        KvOutput::Value(vec![b'x'; VALUE])
    );

    let missing = [encode_query(&KvQuery::Get {
        key: b"key:missing".to_vec(),
    })];
    group.bench_function("query GET missing", |b| {
        b.iter(each(&missing, |_, q| {
            StateMachine::query(&kv, black_box(q))
        }))
    });

    // Decoded exactly as `apply` decodes, so the two differ by the decode.
    let mut n = 0usize;
    group.bench_function("execute SET (decoded)", |b| {
        b.iter_batched(
            || {
                n += 1;
                postcard::from_bytes::<KvCommand>(&sets[n % KEYS]).expect("decodes")
            },
            |cmd| kv.execute(cmd),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = kv_apply;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(kv_apply);
