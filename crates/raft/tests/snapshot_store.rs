//! Tests of `SnapshotStore`: crash-safe snapshot files, verification that
//! skips a damaged newest snapshot, retention, and chunked transfer.

mod common;

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use common::corruption;
use raft::{Membership, SnapshotMeta, SnapshotStore, StorageError};

// ---- Helpers ----------------------------------------------------------------

fn meta(last_index: u64, last_term: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_index,
        last_term,
        membership: Membership::new(&[1, 2, 3], &[]),
    }
}

/// Bytes of the header before the body: 32 fixed, then the configuration.
fn header_len(meta: &SnapshotMeta) -> u64 {
    32 + meta.membership.encode().len() as u64
}

/// Deterministic body bytes: `len` bytes that differ per seed and position.
fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `bytes` as a snapshot body in pieces of 1 to 4096 bytes.
fn write(store: &SnapshotStore, meta: &SnapshotMeta, bytes: &[u8]) -> PathBuf {
    store
        .write(meta, &mut |out: &mut dyn Write| {
            let mut rest = bytes;
            let mut piece = 1;
            while !rest.is_empty() {
                let (now, later) = rest.split_at(piece.min(rest.len()));
                out.write_all(now)?;
                rest = later;
                piece = piece * 7 % 4093 + 1;
            }
            Ok(())
        })
        .expect("write snapshot")
}

fn read_body(store: &SnapshotStore, path: &Path) -> (SnapshotMeta, Vec<u8>) {
    let (meta, mut reader) = store.open_body(path).expect("open body");
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).unwrap();
    (meta, bytes)
}

/// Every file in `dir`, by name.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x10;
    fs::write(path, bytes).unwrap();
}

fn truncate(path: &Path, len: u64) {
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(len).unwrap();
}

/// Sends the file at `path` from `from` to `to` in `chunk`-byte pieces,
/// passing each through `tamper` on the way.
fn transfer(
    from: &SnapshotStore,
    path: &Path,
    to: &SnapshotStore,
    chunk: usize,
    tamper: &mut dyn FnMut(u64, &mut Vec<u8>),
) -> Result<(SnapshotMeta, PathBuf), StorageError> {
    let mut incoming = to.begin_receive()?;
    loop {
        let offset = incoming.offset();
        let (mut data, total) = from.read_chunk(path, offset, chunk)?;
        if data.is_empty() {
            assert_eq!(offset, total);
            break;
        }
        tamper(offset, &mut data);
        if data.is_empty() {
            break; // the tamperer lost the rest
        }
        incoming.write_chunk(offset, &data)?;
    }
    incoming.finish()
}

// ---- Writing and reading ----------------------------------------------------------

#[test]
fn write_then_latest_returns_it_and_the_body_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path().join("snapshots")).unwrap();
    assert!(store.latest().unwrap().is_none());

    let image = body(1, 5 << 20);
    let m = SnapshotMeta {
        last_index: 1234,
        last_term: 7,
        membership: Membership::new(&[1, 2, 5], &[]),
    };
    let path = write(&store, &m, &image);
    let name = "snap-00000000000000001234-00000000000000000007.snap";
    assert_eq!(path.file_name().unwrap(), name);
    assert_eq!(files(store.dir()), [name], "no temp file is left behind");
    let header = header_len(&m);
    assert_eq!(fs::metadata(&path).unwrap().len(), header + (5 << 20) + 12);

    assert_eq!(store.latest().unwrap(), Some((m.clone(), path.clone())));
    let (read_meta, bytes) = read_body(&store, &path);
    assert_eq!(read_meta, m);
    assert!(
        bytes == image,
        "the body reads back exactly, and only the body"
    );

    // An empty body and no voters are fine too; the newer one is latest.
    let empty = SnapshotMeta {
        last_index: 2000,
        last_term: 8,
        membership: Membership::default(),
    };
    let path2 = write(&store, &empty, &[]);
    assert_eq!(
        store.latest().unwrap(),
        Some((empty.clone(), path2.clone()))
    );
    assert_eq!(read_body(&store, &path2), (empty, Vec::new()));
    // Reopening the store finds both.
    let store = SnapshotStore::open(dir.path().join("snapshots")).unwrap();
    assert_eq!(store.latest().unwrap().unwrap().1, path2);
}

#[test]
fn a_failing_body_writer_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let result = store.write(&meta(5, 1), &mut |out: &mut dyn Write| {
        out.write_all(&[1; 100_000])?;
        Err(io::Error::other("state machine failed"))
    });
    assert!(matches!(result, Err(StorageError::Io { .. })), "{result:?}");
    assert_eq!(files(dir.path()), Vec::<String>::new());
    assert!(store.latest().unwrap().is_none());
}

#[test]
fn a_node_id_of_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let bad = SnapshotMeta {
        last_index: 1,
        last_term: 1,
        membership: Membership::new(&[1, 0], &[]),
    };
    let result = store.write(&bad, &mut |_: &mut dyn Write| Ok(()));
    assert!(matches!(result, Err(StorageError::Invalid(_))));
    assert_eq!(files(dir.path()), Vec::<String>::new());
}

/// Thesis §4.1 and §7: once the log is compacted, the snapshot is the only
/// place the configuration at its index is kept, so it holds all of it.
#[test]
fn a_snapshot_carries_the_whole_configuration_learners_and_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let mut membership = Membership::new(&[1, 2, 3], &[4]);
    for id in 1..=4 {
        membership.set_address(id, format!("10.0.0.{id}:7001"));
    }
    let m = SnapshotMeta {
        last_index: 50,
        last_term: 4,
        membership,
    };
    let path = write(&store, &m, b"image");
    assert_eq!(store.latest().unwrap(), Some((m.clone(), path.clone())));
    let (read_meta, bytes) = read_body(&store, &path);
    assert_eq!(read_meta.membership.learners(), &[4]);
    assert_eq!(read_meta.membership.addresses()[&4], "10.0.0.4:7001");
    assert_eq!((read_meta, bytes), (m, b"image".to_vec()));
}

/// Snapshots written before membership changes (format 1: the voters only)
/// still restore, as a configuration of those voters.
#[test]
fn a_format_1_snapshot_reads_as_a_configuration_of_its_voters() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let mut bytes = b"RAFTSNP1".to_vec();
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&7u64.to_le_bytes());
    bytes.extend_from_slice(&2u64.to_le_bytes());
    bytes.extend_from_slice(&3u32.to_le_bytes());
    for voter in [1u64, 2, 3] {
        bytes.extend_from_slice(&voter.to_le_bytes());
    }
    bytes.extend_from_slice(b"old body");
    bytes.extend_from_slice(&8u64.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let path = store
        .dir()
        .join("snap-00000000000000000007-00000000000000000002.snap");
    fs::write(&path, &bytes).unwrap();
    let expected = SnapshotMeta {
        last_index: 7,
        last_term: 2,
        membership: Membership::new(&[1, 2, 3], &[]),
    };
    assert_eq!(
        store.latest().unwrap(),
        Some((expected.clone(), path.clone()))
    );
    assert_eq!(read_body(&store, &path), (expected, b"old body".to_vec()));
    // A voter id of 0 in a format-1 header is refused, naming its offset.
    bytes[32..40].copy_from_slice(&0u64.to_le_bytes());
    let len = bytes.len();
    let crc = crc32c::crc32c(&bytes[..len - 4]);
    bytes[len - 4..].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let (_, offset, text) = corruption(store.open_body(&path));
    assert_eq!(offset, 32, "{text}");
}

// ---- Damage -------------------------------------------------------------------------

#[test]
fn a_torn_newest_snapshot_is_skipped_and_the_previous_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let older = write(&store, &meta(10, 1), &body(2, 10_000));
    let full = fs::metadata(&older).unwrap().len();
    // Cut the newest anywhere: in the trailer, the body, the header, to zero.
    for cut in [full - 1, full - 4, full - 12, full / 2, 40, 31, 8, 0] {
        let newest = write(&store, &meta(20, 2), &body(3, 10_000));
        truncate(&newest, cut);
        assert_eq!(
            store.latest().unwrap(),
            Some((meta(10, 1), older.clone())),
            "cut at {cut}"
        );
        let (path, _, text) = corruption(store.open_body(&newest));
        assert_eq!(path, newest, "cut at {cut}: {text}");
    }
    // The previous snapshot alone is gone too: nothing verifies.
    truncate(&older, full - 1);
    assert_eq!(store.latest().unwrap(), None);
}

#[test]
fn a_corrupt_snapshot_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let len = header_len(&meta(30, 3)) + 50_000 + 12;
    // (byte to flip, offset the error names)
    for (flip_at, named) in [
        (0, 0),               // magic
        (8, 8),               // version
        (13, len - 4),        // last_index: only the checksum can tell
        (21, len - 4),        // last_term
        (40, len - 4),        // the configuration (a voter's id)
        (31, 28),             // configuration length: not a configuration's
        (28, len - 12),       // configuration length: the body no longer matches
        (1000, len - 4),      // the body
        (len - 12, len - 12), // the recorded body length
        (len - 2, len - 4),   // the checksum itself
    ] {
        let path = write(&store, &meta(30, 3), &body(4, 50_000));
        assert_eq!(fs::metadata(&path).unwrap().len(), len);
        flip_byte(&path, flip_at);
        let (named_path, offset, text) = corruption(store.open_body(&path));
        assert_eq!(
            (&named_path, offset),
            (&path, named),
            "flip at {flip_at}: {text}"
        );
        let file_name = path.file_name().unwrap().to_str().unwrap();
        assert!(text.contains(file_name), "{text}");
        assert_eq!(store.latest().unwrap(), None, "flip at {flip_at}");
    }
}

#[test]
fn a_snapshot_whose_name_disagrees_with_its_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let real = write(&store, &meta(30, 3), b"state");
    let renamed = dir
        .path()
        .join("snap-00000000000000000099-00000000000000000003.snap");
    fs::copy(&real, &renamed).unwrap();
    let (path, offset, _) = corruption(store.open_body(&renamed));
    assert_eq!((path, offset), (renamed.clone(), 12));
    assert_eq!(store.latest().unwrap(), Some((meta(30, 3), real)));
}

#[test]
fn arbitrary_file_contents_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let good = fs::read(write(&store, &meta(1, 1), &body(5, 300))).unwrap();
    let path = dir
        .path()
        .join("snap-00000000000000000001-00000000000000000001.snap");
    // Every prefix of a valid file, and random bytes behind a valid magic.
    for len in 0..good.len() {
        fs::write(&path, &good[..len]).unwrap();
        corruption(store.open_body(&path));
    }
    for seed in 0..300 {
        let mut bytes = b"RAFTSNP1".to_vec();
        bytes.extend(body(seed, seed as usize % 90));
        if seed % 3 == 0 && bytes.len() >= 12 {
            bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        }
        fs::write(&path, &bytes).unwrap();
        corruption(store.open_body(&path));
    }
}

// ---- Retention ------------------------------------------------------------------------

#[test]
fn retain_keeps_the_newest_n() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let paths: Vec<PathBuf> = (1..=5)
        .map(|i| write(&store, &meta(i * 10, i), &body(i, 1000)))
        .collect();
    assert!(matches!(store.retain(0), Err(StorageError::Invalid(_))));
    assert_eq!(files(dir.path()).len(), 5);
    store.retain(2).unwrap();
    assert!(paths[..3].iter().all(|p| !p.exists()));
    assert!(paths[3..].iter().all(|p| p.exists()));
    store.retain(2).unwrap();
    assert_eq!(files(dir.path()).len(), 2);

    // A damaged newest file does not cost the last good snapshot.
    truncate(&paths[4], 100);
    store.retain(1).unwrap();
    assert!(paths[3].exists() && paths[4].exists());
    assert_eq!(
        store.latest().unwrap(),
        Some((meta(40, 4), paths[3].clone()))
    );
    let newest = write(&store, &meta(60, 6), &body(6, 1000));
    store.retain(1).unwrap();
    assert_eq!(
        files(dir.path()),
        [newest.file_name().unwrap().to_str().unwrap()]
    );
}

// ---- Transfer -------------------------------------------------------------------------

#[test]
fn chunked_transfer_reproduces_the_file_and_finish_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let leader = SnapshotStore::open(dir.path().join("leader")).unwrap();
    let follower = SnapshotStore::open(dir.path().join("follower")).unwrap();
    write(&follower, &meta(5, 1), b"old state");
    let m = meta(777, 9);
    let sent = write(&leader, &m, &body(7, (3 << 20) + 12_345));

    for chunk in [100_003, 1 << 20, 7] {
        let small = chunk == 7;
        let path = match small {
            true => write(&leader, &meta(800, 9), &body(8, 5000)),
            false => sent.clone(),
        };
        let (got_meta, received) =
            transfer(&leader, &path, &follower, chunk, &mut |_, _| {}).unwrap();
        assert_eq!(got_meta, if small { meta(800, 9) } else { m.clone() });
        assert_eq!(received.file_name(), path.file_name());
        assert!(fs::read(&received).unwrap() == fs::read(&path).unwrap());
        assert_eq!(follower.latest().unwrap(), Some((got_meta, received)));
    }
    let (_, bytes) = read_body(&follower, &sent_name_in(&follower, &sent));
    assert!(bytes == body(7, (3 << 20) + 12_345));
    assert!(files(follower.dir()).iter().all(|f| f.ends_with(".snap")));
}

fn sent_name_in(store: &SnapshotStore, sent: &Path) -> PathBuf {
    store.dir().join(sent.file_name().unwrap())
}

#[test]
fn read_chunk_reports_the_size_and_refuses_offsets_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let path = write(&store, &meta(3, 1), &body(9, 100));
    let total = fs::metadata(&path).unwrap().len();
    let (head, size) = store.read_chunk(&path, 0, 8).unwrap();
    assert_eq!((head.as_slice(), size), (&b"RAFTSNP1"[..], total));
    let (tail, _) = store.read_chunk(&path, total - 5, 1000).unwrap();
    assert_eq!(tail.len(), 5);
    assert_eq!(store.read_chunk(&path, total, 10).unwrap(), (vec![], total));
    let past = store.read_chunk(&path, total + 1, 10);
    assert!(matches!(past, Err(StorageError::Invalid(_))));
}

#[test]
fn a_chunk_at_the_wrong_offset_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let path = write(&store, &meta(3, 1), &body(9, 1000));
    let bytes = fs::read(&path).unwrap();
    let receiver = SnapshotStore::open(dir.path().join("in")).unwrap();
    let mut incoming = receiver.begin_receive().unwrap();
    let invalid = |r: Result<(), StorageError>| matches!(r, Err(StorageError::Invalid(_)));

    assert!(invalid(incoming.write_chunk(10, &bytes[10..20])), "a gap");
    incoming.write_chunk(0, &bytes[..500]).unwrap();
    assert!(invalid(incoming.write_chunk(0, &bytes[..500])), "a repeat");
    assert!(
        invalid(incoming.write_chunk(400, &bytes[400..])),
        "an overlap"
    );
    assert!(invalid(incoming.write_chunk(501, &bytes[501..])), "a gap");
    assert_eq!(incoming.offset(), 500, "refused chunks change nothing");
    incoming.write_chunk(500, &bytes[500..]).unwrap();
    let (got, received) = incoming.finish().unwrap();
    assert_eq!(got, meta(3, 1));
    assert_eq!(fs::read(received).unwrap(), bytes);
}

#[test]
fn a_corrupted_transfer_fails_finish_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let leader = SnapshotStore::open(dir.path().join("leader")).unwrap();
    let sent = write(&leader, &meta(50, 5), &body(10, 200_000));
    let total = fs::metadata(&sent).unwrap().len();
    let receiver_dir = dir.path().join("follower");
    let follower = SnapshotStore::open(&receiver_dir).unwrap();

    // A flipped bit in the body, in the header, and a lost final chunk.
    for damage in ["body", "header", "short"] {
        let mut tamper = |offset: u64, data: &mut Vec<u8>| match damage {
            "body" if offset == 65_536 => data[100] ^= 1,
            "header" if offset == 0 => data[14] ^= 1,
            "short" if offset + data.len() as u64 == total => data.truncate(data.len() - 1),
            _ => {}
        };
        let result = transfer(&leader, &sent, &follower, 65_536, &mut tamper);
        let (path, _, text) = corruption(result);
        assert!(path.starts_with(&receiver_dir), "{damage}: {text}");
        assert_eq!(files(&receiver_dir), Vec::<String>::new(), "{damage}");
        assert!(follower.latest().unwrap().is_none());
    }

    // An abandoned transfer leaves nothing either.
    let mut incoming = follower.begin_receive().unwrap();
    incoming.write_chunk(0, b"RAFTSNP1").unwrap();
    assert_eq!(files(&receiver_dir).len(), 1);
    drop(incoming);
    assert_eq!(files(&receiver_dir), Vec::<String>::new());
}

#[test]
fn leftover_temp_files_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    let kept = write(&store, &meta(9, 2), b"image");
    // A crash mid-write and mid-transfer leaves temp files behind.
    let mut incoming = store.begin_receive().unwrap();
    incoming.write_chunk(0, b"RAFTSNP1 partial").unwrap();
    std::mem::forget(incoming);
    fs::write(
        dir.path()
            .join("snap-00000000000000000010-00000000000000000002.snap.1234abcd.tmp"),
        b"half",
    )
    .unwrap();
    fs::write(dir.path().join("notes.txt"), b"not ours").unwrap();
    assert_eq!(files(dir.path()).len(), 4);

    let store = SnapshotStore::open(dir.path()).unwrap();
    let name = kept.file_name().unwrap().to_str().unwrap();
    assert_eq!(files(dir.path()), ["notes.txt", name]);
    assert_eq!(store.latest().unwrap(), Some((meta(9, 2), kept)));
}
