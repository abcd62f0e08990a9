//! Spare segments: roll-over renames the spare segment prepared in the background,
//! and a spare left by a crash is removed at open, never read.

use super::*;

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
