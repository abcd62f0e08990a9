//! Reset (paper §7, installing a snapshot): `reset` discards the log and the next
//! append continues after the snapshot index; a crash before the old segments are
//! deleted, or while the reset is written, recovers to a consistent log.

use super::compaction::{invalid, seqs};
use super::*;

/// A log of 30 entries over several segments, hard state (2, Some(1)).
fn thirty_entries(dir: &Path, options: &FileStorageOptions) -> FileStorage {
    let mut storage = FileStorage::open_with(dir, options.clone()).unwrap();
    storage.persist(Some(&hs(2, Some(1))), &[]).unwrap();
    for i in 0..10 {
        storage
            .persist(None, &entries(2, i * 3 + 1..=i * 3 + 3))
            .unwrap();
    }
    storage
}

#[test]
fn reset_discards_the_log_and_next_append_continues_after_the_snapshot_index() {
    // A snapshot beyond the log (a lagging follower), and one inside it.
    for snapshot_index in [50, 12] {
        let dir = tempfile::tempdir().unwrap();
        let options = small_segments(300);
        let mut storage = thirty_entries(dir.path(), &options);
        let old = seqs(dir.path());
        assert!(old.len() > 2);

        storage.reset(snapshot_index, 4).unwrap();
        let new_seq = old.last().unwrap() + 1;
        assert_eq!(seqs(dir.path()), [new_seq], "older segments are deleted");
        let empty = RecoveredLog(hs(2, Some(1)), Vec::new());
        for s in [&mut storage, &mut reopen(dir.path(), &options).0] {
            assert_eq!(s.first_index(), snapshot_index + 1);
            assert_eq!(s.last_index(), snapshot_index);
            let state = s.recover().unwrap();
            assert_eq!(RecoveredLog(state.hard_state, state.entries), empty);
            let next = snapshot_index + 1;
            assert_eq!(s.entries(next, next).unwrap(), []);
            assert!(invalid(s.entries(snapshot_index, next)));
            // Only index + 1 follows: no gap, no rewrite of the snapshot.
            assert!(invalid(s.persist(None, &entries(4, next + 1..=next + 2))));
            assert!(invalid(s.persist(None, &entries(4, snapshot_index..=next))));
            assert!(invalid(s.persist(None, &entries(4, 1..=3))));
        }

        let next = snapshot_index + 1;
        let mut expected = entries(4, next..=next + 9);
        storage.persist(Some(&hs(4, None)), &expected).unwrap();
        storage
            .persist(None, &entries(5, next + 10..=next + 20))
            .unwrap();
        expected.extend(entries(5, next + 10..=next + 20));
        drop(storage);
        let (mut storage, log) = reopen(dir.path(), &options);
        assert_eq!(log, RecoveredLog(hs(4, None), expected.clone()));
        assert_eq!(storage.first_index(), next);

        // Compaction after a reset, and a second reset.
        storage.compact(next + 15).unwrap();
        assert!(storage.first_index() <= next + 16);
        storage.reset(next + 100, 9).unwrap();
        drop(storage);
        let (storage, log) = reopen(dir.path(), &options);
        assert_eq!(log, RecoveredLog(hs(4, None), Vec::new()));
        assert_eq!(storage.last_index(), next + 100);
    }
}

#[test]
fn compaction_after_a_reset_keeps_the_reset_until_entries_follow() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(120);
    let mut storage = thirty_entries(dir.path(), &options);
    storage.reset(40, 3).unwrap();
    for term in 3..20 {
        storage.persist(Some(&hs(term, None)), &[]).unwrap();
    }
    let reset_seq = seqs(dir.path())[0];
    storage.compact(1000).unwrap();
    assert_eq!(
        seqs(dir.path())[0],
        reset_seq,
        "the reset says where the log ends"
    );
    let (mut storage, log) = reopen(dir.path(), &options);
    assert_eq!(log, RecoveredLog(hs(19, None), Vec::new()));
    assert_eq!(storage.last_index(), 40);

    storage.persist(None, &entries(19, 41..=42)).unwrap();
    for term in 20..30 {
        storage.persist(Some(&hs(term, None)), &[]).unwrap();
    }
    storage.compact(42).unwrap();
    assert!(seqs(dir.path())[0] > reset_seq, "now the entries say it");
    let (storage, log) = reopen(dir.path(), &options);
    assert_eq!(log, RecoveredLog(hs(29, None), entries(19, 41..=42)));
    assert_eq!(storage.first_index(), 41);
}

#[test]
fn crash_after_reset_before_old_segments_are_deleted_recovers_to_the_reset() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(300);
    let mut storage = thirty_entries(dir.path(), &options);
    let saved = tempfile::tempdir().unwrap();
    for file in segments(dir.path()) {
        fs::copy(&file, saved.path().join(file.file_name().unwrap())).unwrap();
    }
    storage.reset(25, 3).unwrap();
    drop(storage);
    // The crash: the reset segment is on disk, the deletions never happened.
    // (The old active segment had been sealed before the reset segment was
    // created.)
    let reset_segment = last_segment(dir.path());
    for file in segments(saved.path()) {
        let copy = dir.path().join(file.file_name().unwrap());
        fs::copy(&file, &copy).unwrap();
        seal(&copy);
    }
    assert!(segments(dir.path()).len() > 2);

    let (mut storage, log) = reopen(dir.path(), &options);
    assert_eq!(log, RecoveredLog(hs(2, Some(1)), Vec::new()));
    assert_eq!((storage.first_index(), storage.last_index()), (26, 25));
    assert_eq!(
        segments(dir.path()),
        [reset_segment],
        "open finishes the reset"
    );
    storage.persist(None, &entries(3, 26..=27)).unwrap();
    drop(storage);
    assert_eq!(
        reopen(dir.path(), &options).1,
        RecoveredLog(hs(2, Some(1)), entries(3, 26..=27))
    );
}

#[test]
fn crash_while_writing_the_reset_keeps_the_old_log() {
    // The reset segment was created, then its write was torn or never landed:
    // reset had not returned, so the old log must come back whole.
    for (cut, preallocated) in [(0, false), (10, false), (30, false), (40, false)]
        .into_iter()
        .chain([(0, true), (10, true), (30, true), (40, true)])
    {
        let dir = tempfile::tempdir().unwrap();
        let options = small_segments(300);
        let storage = thirty_entries(dir.path(), &options);
        drop(storage);
        let (_, before) = reopen(dir.path(), &options);
        let saved = tempfile::tempdir().unwrap();
        for file in segments(dir.path()) {
            fs::copy(&file, saved.path().join(file.file_name().unwrap())).unwrap();
        }
        let (mut storage, _) = reopen(dir.path(), &options);
        storage.reset(25, 3).unwrap();
        drop(storage);
        let reset_segment = last_segment(dir.path());
        let full = logical_end(&reset_segment);
        assert!(cut < full, "{cut} < {full}");
        match preallocated {
            false => set_len(&reset_segment, cut),
            true => zero_range(&reset_segment, cut, full),
        }
        // Reset sealed the old active segment before creating its own.
        for file in segments(saved.path()) {
            let copy = dir.path().join(file.file_name().unwrap());
            fs::copy(&file, &copy).unwrap();
            seal(&copy);
        }

        let (mut storage, log) = reopen(dir.path(), &options);
        assert_eq!(log, before, "cut at {cut}, preallocated {preallocated}");
        storage.persist(None, &entries(2, 31..=31)).unwrap();
        assert_eq!(storage.last_index(), 31);
    }
}

#[test]
fn a_reset_record_in_a_sealed_segment_is_checked_like_any_record() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(200);
    let mut storage = thirty_entries(dir.path(), &options);
    storage.reset(40, 3).unwrap();
    for i in 0..10 {
        storage
            .persist(None, &entries(3, 41 + i * 2..=42 + i * 2))
            .unwrap();
    }
    drop(storage);
    let files = segments(dir.path());
    assert!(files.len() > 2);
    // The Reset record follows the 25-byte hard-state header.
    flip_byte(&files[0], 25 + 8 + 20);
    let (path, offset, _) = corruption(FileStorage::open_with(dir.path(), options));
    assert_eq!((path, offset), (files[0].clone(), 25));
}
