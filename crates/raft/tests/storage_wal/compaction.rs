//! Log compaction (paper §7): `compact` deletes only whole segments the index
//! covers, never an entry after it, and recovery still works; segment numbers may
//! start above one, and a gap between segments is still refused.

use super::*;

/// The number in a segment file's name.
fn seq_of(path: &Path) -> u64 {
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap();
    name.parse().unwrap()
}

pub(crate) fn seqs(dir: &Path) -> Vec<u64> {
    segments(dir).iter().map(|p| seq_of(p)).collect()
}

/// Persists `batch` and notes, per segment, the largest index written to it.
fn persist_tracked(
    storage: &mut FileStorage,
    model: &mut Model,
    max_index: &mut std::collections::BTreeMap<u64, u64>,
    hs: Option<HardState>,
    batch: &[LogEntry],
) {
    persist(storage, model, hs, batch);
    if let Some(last) = batch.last() {
        let seq = seq_of(&last_segment(storage.dir()));
        let max = max_index.entry(seq).or_insert(0);
        *max = (*max).max(last.index);
    }
}

pub(crate) fn invalid<T: std::fmt::Debug>(result: Result<T, StorageError>) -> bool {
    matches!(result, Err(StorageError::Invalid(_)))
}

/// The model's entries from `first` on.
fn suffix(model: &Model, first: u64) -> Vec<LogEntry> {
    model.0 .1[first as usize - 1..].to_vec()
}

/// Checks `storage` (and a reopened copy) against the model's suffix from
/// its first index.
fn check_suffix(storage: &mut FileStorage, model: &Model, options: &FileStorageOptions) {
    let first = storage.first_index();
    assert_eq!(storage.last_index(), model.last_index());
    let state = storage.recover().unwrap();
    assert_eq!(state.hard_state, model.0 .0);
    assert_eq!(state.entries, suffix(model, first));
    let reopened = FileStorage::open_with(storage.dir(), options.clone()).unwrap();
    assert_eq!(
        (reopened.first_index(), reopened.last_index()),
        (first, model.last_index()),
        "reopened {:?}",
        seqs(storage.dir())
    );
    let (_, log) = reopen(storage.dir(), options);
    assert_eq!(log, RecoveredLog(model.0 .0, suffix(model, first)));
}

#[test]
fn compact_deletes_only_whole_covered_segments_and_recovery_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(300);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let (mut model, mut max_index) = (Model::default(), Default::default());
    persist_tracked(
        &mut storage,
        &mut model,
        &mut max_index,
        Some(hs(3, Some(2))),
        &[],
    );
    for i in 0..20 {
        let batch = entries(3, i * 3 + 1..=i * 3 + 3);
        persist_tracked(&mut storage, &mut model, &mut max_index, None, &batch);
    }
    persist_tracked(
        &mut storage,
        &mut model,
        &mut max_index,
        Some(hs(4, None)),
        &[],
    );
    let before = seqs(dir.path());
    assert!(before.len() >= 8, "{before:?}");

    let c = 31;
    let expected_kept: Vec<u64> = before
        .iter()
        .copied()
        .skip_while(|seq| max_index.get(seq).is_none_or(|&max| max <= c))
        .collect();
    assert!(expected_kept.len() < before.len() && expected_kept.len() > 1);
    storage.compact(c).unwrap();
    assert_eq!(
        seqs(dir.path()),
        expected_kept,
        "segments on disk after compact({c})"
    );

    // The first entry left is the first one written to the first segment left.
    let first = storage.first_index();
    assert!(first > 1 && first <= c + 1, "first index {first}");
    assert_eq!(max_index[&(expected_kept[0] - 1)] + 1, first);
    assert!(invalid(storage.entries(first - 1, first)));
    assert!(invalid(storage.entries(1, 3)));
    assert_eq!(storage.entries(first, 61).unwrap(), suffix(&model, first));
    check_suffix(&mut storage, &model, &options);

    // Compacting again at the same index, or below, changes nothing.
    storage.compact(c).unwrap();
    storage.compact(2).unwrap();
    assert_eq!(seqs(dir.path()), expected_kept);

    // Appends continue, and a restart sees them after the compacted prefix.
    let (mut storage, _) = reopen(dir.path(), &options);
    persist(
        &mut storage,
        &mut model,
        Some(hs(5, Some(1))),
        &entries(5, 61..=70),
    );
    check_suffix(&mut storage, &model, &options);
}

#[test]
fn compact_never_drops_entries_after_the_index() {
    // Random batches (with conflicts that rewrite suffixes, and batches that
    // straddle segments), then compaction in steps, with appends in between.
    for seed in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let options = small_segments([250, 600, 2000][seed as usize % 3]);
        let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
        let mut model = Model::default();
        let mut rng = Rng::new(seed);
        let mut compacted_to = 0;
        for round in 0..6 {
            let target = model.last_index() + 40;
            while model.last_index() < target {
                let (hard_state, batch) = random_batch(&mut rng, &model);
                // Committed entries are never rewritten: no conflict reaches
                // into what was compacted.
                if batch.first().is_some_and(|e| e.index <= compacted_to) {
                    continue;
                }
                persist(&mut storage, &mut model, hard_state, &batch);
            }
            let c = compacted_to + rng.below(model.last_index() - compacted_to + 5);
            let files_before = seqs(dir.path());
            storage.compact(c).unwrap();
            compacted_to = compacted_to.max(c.min(model.last_index()));
            let first = storage.first_index();
            assert!(
                first <= c + 1,
                "seed {seed} round {round}: compact({c}) dropped up to {first}"
            );
            let files = seqs(dir.path());
            assert!(files_before.ends_with(&files), "only a prefix is deleted");
            check_suffix(&mut storage, &model, &options);
            if round % 2 == 1 {
                storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
            }
        }
        assert!(
            storage.first_index() > 1,
            "seed {seed}: nothing was ever compacted"
        );
    }
}

#[test]
fn compaction_after_a_conflict_keeps_the_rewritten_entries() {
    // Segment 1: entries 1..=10. Segment 2: 11..=15, then a conflict rewrites
    // 8..=9. Segment 3: 10..=20. Compacting to 10 deletes segment 1; replay of
    // segment 2 meets 11..=15 first and then 8..=9, below it: they must win.
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(400);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut model = Model::default();
    let segment_of_next_write = |s: &FileStorage| seq_of(&last_segment(s.dir()));
    persist(&mut storage, &mut model, None, &entries(1, 1..=10));
    assert_eq!(segment_of_next_write(&storage), 1);
    persist(
        &mut storage,
        &mut model,
        Some(hs(2, None)),
        &entries(1, 11..=15),
    );
    persist(&mut storage, &mut model, None, &entries(2, 8..=9));
    assert_eq!(segment_of_next_write(&storage), 2);
    persist(&mut storage, &mut model, None, &entries(2, 10..=20));
    assert_eq!(seqs(dir.path()), [1, 2, 3]);

    storage.compact(10).unwrap();
    assert_eq!(seqs(dir.path()), [2, 3]);
    assert_eq!(storage.first_index(), 8);
    check_suffix(&mut storage, &model, &options);
}

#[test]
fn compaction_keeps_the_segment_that_says_where_the_log_ends() {
    // After the last entry, only hard states: deleting every segment with
    // entries would leave nothing to tell a restart that the log ends at 6.
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(120);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut model = Model::default();
    persist(&mut storage, &mut model, None, &entries(1, 1..=3));
    persist(&mut storage, &mut model, None, &entries(1, 4..=6));
    let last_entry_segment = seq_of(&last_segment(dir.path()));
    for term in 2..30 {
        persist(&mut storage, &mut model, Some(hs(term, Some(1))), &[]);
    }
    assert!(seqs(dir.path()).len() > last_entry_segment as usize + 2);

    storage.compact(6).unwrap();
    assert_eq!(seqs(dir.path())[0], last_entry_segment);
    assert_eq!(storage.last_index(), 6);
    check_suffix(&mut storage, &model, &options);
    let (mut storage, _) = reopen(dir.path(), &options);
    persist(&mut storage, &mut model, None, &entries(30, 7..=7));
    check_suffix(&mut storage, &model, &options);
}

#[test]
fn segment_numbers_may_start_above_one_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(200);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut model = Model::default();
    for i in 0..15 {
        persist(
            &mut storage,
            &mut model,
            None,
            &entries(1, i * 2 + 1..=i * 2 + 2),
        );
    }
    storage.compact(20).unwrap();
    let kept = seqs(dir.path());
    assert!(kept[0] > 1, "{kept:?}");
    drop(storage);

    let (mut storage, log) = reopen(dir.path(), &options);
    let first = storage.first_index();
    assert_eq!(log.1, suffix(&model, first));
    for i in 15..30 {
        persist(
            &mut storage,
            &mut model,
            None,
            &entries(1, i * 2 + 1..=i * 2 + 2),
        );
    }
    let files = seqs(dir.path());
    assert_eq!(files[0], kept[0]);
    let consecutive: Vec<u64> = (files[0]..files[0] + files.len() as u64).collect();
    assert_eq!(files, consecutive);
    check_suffix(&mut storage, &model, &options);
}

#[test]
fn a_gap_between_segments_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(200);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    for i in 0..20 {
        let batch = entries(1, i * 2 + 1..=i * 2 + 2);
        storage.persist(None, &batch).unwrap();
    }
    storage.compact(16).unwrap();
    drop(storage);
    let files = segments(dir.path());
    assert!(seq_of(&files[0]) > 1 && files.len() >= 4, "{files:?}");
    fs::remove_file(&files[2]).unwrap();
    let (path, offset, text) = corruption(FileStorage::open_with(dir.path(), options));
    assert_eq!((&path, offset), (&files[3], 0), "{text}");
    assert!(text.contains("is missing"), "{text}");
}
