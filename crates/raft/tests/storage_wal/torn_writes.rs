//! Torn writes versus corruption: a torn or zero-filled tail record is truncated and
//! the node starts; corruption before the tail, or a checksummed but meaningless
//! record, is refused, naming the file and offset.

use super::*;

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
