//! The write-ahead log on disk (item 14): a torn tail is repaired, corruption
//! refused.

use super::*;

/// Segment files of a node's WAL, in order.
fn wal_segments(data_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(data_dir.join("wal"))
        .expect("wal dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

/// Record offsets of a segment: [len u32 LE][crc u32 LE][payload].
fn record_offsets(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 || off + 8 + len > bytes.len() {
            break;
        }
        out.push((off, len));
        off += 8 + len;
    }
    out
}

#[test]
fn a_torn_log_tail_is_repaired_and_a_corrupt_log_is_refused() {
    let mut c = Cluster::start();
    let leader = c.wait_for_leader(secs(5));
    let victim = c.followers(leader)[0];
    let mut con = c.redis(leader);
    let keys: Vec<String> = (0..60).map(|i| format!("wal{i}")).collect();
    for k in &keys {
        let _: String = q(&mut con, &["SET", k, k]);
    }
    let status = c.sigterm(victim, secs(5)).expect("victim stops");
    assert!(status.success());

    // A crash mid-append: the tail holds a prefix of a record that was never
    // acknowledged (its header, part of its payload, then zeros, as a
    // filesystem may leave it). Truncating an *acknowledged* record instead
    // would break Raft's durability assumption, not simulate a crash.
    let segs = wal_segments(&c.nodes[victim].data_dir);
    let last = segs.last().expect("a WAL segment");
    let mut torn = Vec::new();
    torn.extend_from_slice(&200u32.to_le_bytes());
    torn.extend_from_slice(&0x1234_5678u32.to_le_bytes());
    torn.extend_from_slice(&[0xab; 50]);
    torn.extend_from_slice(&[0; 100]);
    // Segments are preallocated (zero-filled to their full size), so the
    // torn bytes go where the next record would have: right after the last
    // complete one, not at the end of the file.
    let bytes = std::fs::read(last).expect("read segment");
    let end = record_offsets(&bytes)
        .last()
        .map_or(0, |&(off, len)| off + 8 + len);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .expect("open");
    f.seek(std::io::SeekFrom::Start(end as u64)).expect("seek");
    f.write_all(&torn).expect("write a torn record");
    drop(f);
    c.spawn(victim);
    c.wait_for_leader(secs(10));
    let target = c.info(leader).expect("info").num("commit_index");
    wait_until(secs(10), "the repaired node to catch up", || {
        c.info(victim)
            .filter(|i| i.num("last_applied") >= target)
            .map(|_| ())
    });
    let mut vcon = c.redis(victim);
    let got = mget_all(&mut vcon, &keys);
    assert!(got.iter().zip(&keys).all(|(g, k)| g.as_deref() == Some(k)));
    drop(vcon);

    // Bit rot in the middle of the log: the node must refuse to start.
    let status = c.sigterm(victim, secs(5)).expect("victim stops");
    assert!(status.success());
    let segs = wal_segments(&c.nodes[victim].data_dir);
    let seg = &segs[0];
    let mut bytes = std::fs::read(seg).expect("read segment");
    let records = record_offsets(&bytes);
    assert!(
        records.len() >= 10,
        "expected many records, got {records:?}"
    );
    let (off, len) = records[records.len() / 2];
    bytes[off + 8 + len - 1] ^= 0xff;
    std::fs::write(seg, &bytes).expect("write segment");
    let file_name = seg
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    c.spawn(victim);
    let child = c.nodes[victim].child.as_mut().expect("spawned");
    let status = wait_child(child, secs(10));
    let log = tail(&c.nodes[victim].log, 5);
    let status = status.unwrap_or_else(|| {
        panic!("a node with a corrupt log at offset {off} of {file_name} did not refuse to start")
    });
    c.nodes[victim].child = None;
    assert!(!status.success(), "corrupt log: exit status {status}");
    let line = log
        .lines()
        .rfind(|l| l.starts_with("raftkv:"))
        .unwrap_or_else(|| panic!("no 'raftkv:' line; stderr tail:\n{log}"));
    assert!(
        line.contains(&file_name) && line.contains(&off.to_string()),
        "the refusal must name {file_name} and offset {off}: {line}"
    );
    assert!(!log.contains("panicked"), "{log}");

    // The other two nodes keep serving.
    let _: String = q(&mut con, &["SET", "after", "1"]);
}
