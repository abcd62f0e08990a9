//! The compaction contract for every `Storage`: `MemoryStorage` and `FileStorage`
//! answer `compact` and `reset` alike, and storages written before compaction
//! existed get safe defaults.

use super::compaction::invalid;
use super::*;

/// Runs `compact` and `reset` through their contract on any storage.
fn compaction_contract(storage: &mut dyn Storage, name: &str) {
    storage
        .persist(Some(&hs(1, Some(1))), &entries(1, 1..=10))
        .unwrap();
    storage.compact(0).unwrap();
    assert_eq!(storage.first_index(), 1, "{name}: compact(0) is a no-op");
    storage.compact(4).unwrap();
    let first = storage.first_index();
    assert!((1..=5).contains(&first), "{name}: first {first}");
    assert_eq!(
        storage.last_index(),
        10,
        "{name}: compaction keeps last_index"
    );
    assert_eq!(
        storage.entries(5, 11).unwrap(),
        entries(1, 5..=10),
        "{name}"
    );
    if first > 1 {
        assert!(invalid(storage.entries(first - 1, 11)), "{name}");
    }
    let state = storage.recover().unwrap();
    assert_eq!(state.entries, entries(1, first..=10), "{name}");

    // A conflict after the compacted prefix still truncates.
    storage.persist(None, &entries(2, 8..=12)).unwrap();
    assert_eq!(storage.entries(7, 13).unwrap()[1..], entries(2, 8..=12));
    // Compacting past the end keeps last_index: the next append is still 13.
    storage.compact(100).unwrap();
    assert_eq!(storage.last_index(), 12, "{name}");
    storage.persist(None, &entries(2, 13..=13)).unwrap();

    storage.reset(20, 3).unwrap();
    assert_eq!(
        (storage.first_index(), storage.last_index()),
        (21, 20),
        "{name}"
    );
    let state = storage.recover().unwrap();
    assert_eq!(
        state.hard_state,
        hs(1, Some(1)),
        "{name}: reset keeps the vote"
    );
    assert!(state.entries.is_empty(), "{name}");
    assert!(
        invalid(storage.persist(None, &entries(3, 22..=22))),
        "{name}"
    );
    assert!(
        invalid(storage.persist(None, &entries(3, 20..=21))),
        "{name}"
    );
    storage.persist(None, &entries(3, 21..=22)).unwrap();
    assert_eq!(storage.recover().unwrap().entries, entries(3, 21..=22));
}

#[test]
fn memory_and_file_storage_follow_the_compaction_contract() {
    compaction_contract(&mut MemoryStorage::new(), "memory");
    let dir = tempfile::tempdir().unwrap();
    let mut file = FileStorage::open_with(dir.path(), small_segments(150)).unwrap();
    compaction_contract(&mut file, "file");
}

#[test]
fn memory_storage_compacts_exactly_and_keeps_its_helpers() {
    let mut storage = MemoryStorage::with_state(hs(2, Some(1)), entries(1, 1..=10));
    storage.compact(4).unwrap();
    assert_eq!((storage.first_index(), storage.last_index()), (5, 10));
    assert_eq!(storage.log(), entries(1, 5..=10));
    assert!(invalid(storage.entries(4, 6)));
    assert!(invalid(storage.persist(None, &entries(2, 4..=4))));
    storage.compact(10).unwrap();
    assert_eq!((storage.first_index(), storage.last_index()), (11, 10));
    assert_eq!(storage.log(), []);
    assert_eq!(storage.hard_state(), hs(2, Some(1)));

    // A log that starts after a snapshot, as a restarted node would hold it.
    let mut restarted = MemoryStorage::with_state(hs(3, None), entries(3, 21..=25));
    assert_eq!((restarted.first_index(), restarted.last_index()), (21, 25));
    assert_eq!(restarted.recover().unwrap().entries, entries(3, 21..=25));

    restarted.set_fail_writes(true);
    assert!(matches!(
        restarted.compact(22),
        Err(StorageError::Io { .. })
    ));
    assert!(matches!(
        restarted.reset(30, 3),
        Err(StorageError::Io { .. })
    ));
    assert_eq!(
        restarted.first_index(),
        21,
        "a failed write changes nothing"
    );
    restarted.set_fail_writes(false);
    restarted.reset(30, 3).unwrap();
    assert_eq!(restarted.log(), []);
    assert_eq!((restarted.first_index(), restarted.last_index()), (31, 30));
}

#[test]
fn storages_written_before_compaction_existed_get_safe_defaults() {
    /// Implements only the methods that existed before compaction.
    struct Legacy(MemoryStorage);
    impl Storage for Legacy {
        fn recover(&mut self) -> Result<RecoveredState, StorageError> {
            self.0.recover()
        }
        fn persist(&mut self, h: Option<&HardState>, e: &[LogEntry]) -> Result<(), StorageError> {
            self.0.persist(h, e)
        }
        fn first_index(&self) -> LogIndex {
            self.0.first_index()
        }
        fn last_index(&self) -> LogIndex {
            self.0.last_index()
        }
        fn entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<LogEntry>, StorageError> {
            self.0.entries(lo, hi)
        }
    }
    let mut legacy = Legacy(MemoryStorage::with_state(hs(1, None), entries(1, 1..=5)));
    legacy.compact(3).unwrap(); // keeping everything is allowed
    assert_eq!(legacy.first_index(), 1);
    let term: Term = 1;
    assert!(invalid(legacy.reset(5, term)), "reset cannot be faked");
    assert_eq!(legacy.last_index(), 5);
}
