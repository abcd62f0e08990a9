//! raftkv's RESP codec against the `redis-protocol` crate.
//!
//! The question it answers: is a hand-written request parser worth having
//! over a maintained crate? Each parse benchmark decodes one pipelined read
//! buffer of 100 commands, as a server does after one `read`, so criterion's
//! time divided by 100 is the cost per command. `redis-protocol` is measured
//! doing the least a server would need: its zero-copy `decode_bytes_mut` into
//! frames, without then turning the frames into argument lists.
//!
//! Run: `cargo bench -p raftkv --bench resp`.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use raftkv::resp::{encode, parse_command, CommandParser, Limits, Protocol, Reply};
use redis_protocol::resp2::decode::decode_bytes_mut as resp2_decode;
use redis_protocol::resp2::encode::extend_encode as resp2_encode;
use redis_protocol::resp2::types::BytesFrame as Resp2Frame;
use redis_protocol::resp3::decode::complete::decode_bytes_mut as resp3_decode;

const BATCH: usize = 100;

fn multibulk(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// `SET key:000123 <100-byte value>` x 100, as redis-benchmark sends them.
fn set_pipeline() -> Vec<u8> {
    let value = [b'x'; 100];
    let mut out = Vec::new();
    for i in 0..BATCH {
        multibulk(
            &[b"SET", format!("key:{i:06}").as_bytes(), &value],
            &mut out,
        );
    }
    out
}

/// `GET key:000123` x 100.
fn get_pipeline() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..BATCH {
        multibulk(&[b"GET", format!("key:{i:06}").as_bytes()], &mut out);
    }
    out
}

/// Parses every command in `input` with each parser; the buffer copy made
/// for each iteration is setup, outside the timing.
fn bench_parse(c: &mut Criterion, name: &str, input: &[u8]) {
    let mut group = c.benchmark_group(format!("parse {name} x{BATCH}"));
    group.throughput(Throughput::Elements(BATCH as u64));
    let limits = Limits::default();
    let fresh = || BytesMut::from(input);
    group.bench_function("raftkv", |b| {
        b.iter_batched(
            fresh,
            |mut buf| {
                while let Some(command) = parse_command(&mut buf, &limits).unwrap() {
                    black_box(command);
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("raftkv CommandParser", |b| {
        b.iter_batched(
            fresh,
            |mut buf| {
                let mut parser = CommandParser::new(limits);
                while let Some(command) = parser.parse(&mut buf).unwrap() {
                    black_box(command);
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("redis-protocol resp2", |b| {
        b.iter_batched(
            fresh,
            |mut buf| {
                while let Some(frame) = resp2_decode(&mut buf).unwrap() {
                    black_box(frame);
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("redis-protocol resp3", |b| {
        b.iter_batched(
            fresh,
            |mut buf| {
                while let Some(frame) = resp3_decode(&mut buf).unwrap() {
                    black_box(frame);
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A 1 MiB `SET` arriving in 16 KiB reads: 63 of its 64 reads leave it
/// incomplete, and a stateless parser looks at it again from the start each
/// time. Measures those 63 fruitless calls. They consume nothing, so the
/// prepared buffers are reused across iterations.
fn bench_incomplete_value(c: &mut Criterion) {
    let mut input = Vec::new();
    multibulk(&[b"SET", b"big", &vec![b'v'; 1 << 20]], &mut input);
    let mut prefixes: Vec<BytesMut> = (1..64)
        .map(|reads| BytesMut::from(&input[..reads * 16 * 1024]))
        .collect();
    let mut group = c.benchmark_group("parse 1 MiB SET, 63 incomplete reads");
    group.throughput(Throughput::Elements(prefixes.len() as u64));
    let limits = Limits::default();
    group.bench_function("raftkv", |b| {
        b.iter(|| {
            for buf in prefixes.iter_mut() {
                assert!(parse_command(buf, &limits).unwrap().is_none());
            }
        })
    });
    group.bench_function("redis-protocol resp2", |b| {
        b.iter(|| {
            for buf in prefixes.iter_mut() {
                assert!(resp2_decode(buf).unwrap().is_none());
            }
        })
    });
    group.finish();
}

/// Encodes 100 replies into a reused output buffer with each encoder.
fn bench_encode(c: &mut Criterion, name: &str, ours: Reply, theirs: Resp2Frame) {
    let mut group = c.benchmark_group(format!("encode {name} x{BATCH}"));
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut out = BytesMut::with_capacity(64 * 1024);
    group.bench_function("raftkv resp2", |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..BATCH {
                encode(black_box(&ours), Protocol::Resp2, &mut out);
            }
        })
    });
    group.bench_function("redis-protocol resp2", |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..BATCH {
                resp2_encode(&mut out, black_box(&theirs), false).unwrap();
            }
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_parse(c, "SET key <100 B>", &set_pipeline());
    bench_parse(c, "GET key", &get_pipeline());
    bench_incomplete_value(c);
    let value = Bytes::from(vec![b'x'; 100]);
    bench_encode(
        c,
        "+OK",
        Reply::ok(),
        Resp2Frame::SimpleString(Bytes::from("OK")),
    );
    bench_encode(
        c,
        "100 B bulk",
        Reply::Bulk(value.clone()),
        Resp2Frame::BulkString(value),
    );
}

criterion_group! {
    name = resp;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(resp);
