//! Restart and the `Storage` contract: the hard state and log that were persisted
//! are recovered (the persistent state of Figure 2 in the Raft paper), a conflicting
//! append truncates the suffix durably (§5.3), gaps are refused, reads match writes.

use super::*;

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
