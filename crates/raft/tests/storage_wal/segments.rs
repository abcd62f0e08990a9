//! Segments: the log rolls over into many segment files and recovers from them;
//! corruption in a sealed segment and a missing or emptied segment are refused, an
//! empty last segment left by a crash during roll-over is repaired.

use super::*;

#[test]
fn many_segments_roll_over_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(1024);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut model = Model::default();
    let mut rng = Rng::new(7);
    while model.last_index() < 400 {
        let (hard_state, batch) = random_batch(&mut rng, &model);
        persist(&mut storage, &mut model, hard_state, &batch);
    }
    drop(storage);

    let files = segments(dir.path());
    assert!(files.len() >= 20, "only {} segments", files.len());
    for (i, file) in files.iter().enumerate() {
        let name = format!("{:020}.wal", i + 1);
        assert_eq!(file.file_name().unwrap().to_str(), Some(name.as_str()));
        let bytes = fs::read(file).unwrap();
        assert!(bytes.len() <= 1024, "{} is {} bytes", name, bytes.len());
        assert_eq!(bytes[8], 1, "{name} must start with a hard-state record");
    }

    let (mut storage, log) = reopen(dir.path(), &options);
    assert_eq!(log, model.0);
    for _ in 0..200 {
        let lo = 1 + rng.below(model.last_index());
        let hi = lo + rng.below(model.last_index() + 2 - lo);
        let want = &model.0 .1[lo as usize - 1..hi as usize - 1];
        assert_eq!(storage.entries(lo, hi).unwrap(), want);
    }
    // Appending after a restart continues in the last segment and rolls on.
    let next = model.last_index() + 1;
    persist(
        &mut storage,
        &mut model,
        Some(hs(99, Some(4))),
        &entries(99, next..=next + 40),
    );
    persist(
        &mut storage,
        &mut model,
        None,
        &entries(100, next + 41..=next + 41),
    );
    drop(storage);
    assert!(segments(dir.path()).len() > files.len());
    assert_eq!(reopen(dir.path(), &options).1, model.0);
}

#[test]
fn corruption_in_a_non_last_segment_is_refused() {
    // Damage that would pass as a torn write at the tail of the last segment
    // is corruption anywhere else: older segments were complete and synced.
    for damage in ["cut", "flip"] {
        let dir = tempfile::tempdir().unwrap();
        let options = small_segments(400);
        let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
        let mut record_starts = Vec::new(); // (segment, offset) of each batch
        for i in 0..30 {
            let before = (
                last_segment(dir.path()),
                logical_end(&last_segment(dir.path())),
            );
            storage
                .persist(None, &entries(1, i * 3 + 1..=i * 3 + 3))
                .unwrap();
            let seg = last_segment(dir.path());
            let start = if seg == before.0 { before.1 } else { 25 };
            record_starts.push((seg, start));
        }
        drop(storage);
        let first = &segments(dir.path())[0];
        let &(_, last_record) = record_starts.iter().rfind(|(s, _)| s == first).unwrap();
        match damage {
            "cut" => set_len(first, file_len(first) - 3),
            _ => flip_byte(first, file_len(first) - 2),
        }
        let (path, offset, text) = corruption(FileStorage::open_with(dir.path(), options));
        assert_eq!((&path, offset), (first, last_record), "{damage}: {text}");
        assert!(text.contains("00000000000000000001.wal"), "{text}");
    }
}

#[test]
fn missing_or_emptied_segment_is_refused() {
    for damage in ["delete", "empty"] {
        let dir = tempfile::tempdir().unwrap();
        let options = small_segments(200);
        let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
        for i in 0..10 {
            storage
                .persist(None, &entries(1, i * 2 + 1..=i * 2 + 2))
                .unwrap();
        }
        drop(storage);
        let files = segments(dir.path());
        assert!(files.len() >= 4);
        let named = match damage {
            "delete" => {
                fs::remove_file(&files[1]).unwrap();
                &files[2] // the segment after the hole
            }
            _ => {
                set_len(&files[1], 0);
                &files[1]
            }
        };
        let (path, offset, text) = corruption(FileStorage::open_with(dir.path(), options));
        assert_eq!((&path, offset), (named, 0), "{damage}: {text}");
    }
}

#[test]
fn empty_last_segment_from_a_crash_during_roll_over_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(200);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    storage
        .persist(Some(&hs(3, Some(2))), &entries(3, 1..=2))
        .unwrap();
    drop(storage);
    // The crash came after the new file was created, before anything landed.
    // Roll-over had sealed (truncated) the old segment first.
    seal(&last_segment(dir.path()));
    let next = dir
        .path()
        .join(format!("{:020}.wal", segments(dir.path()).len() + 1));
    fs::File::create(&next).unwrap();

    let (mut storage, log) = reopen(dir.path(), &options);
    assert_eq!(log, RecoveredLog(hs(3, Some(2)), entries(3, 1..=2)));
    assert!(
        file_len(&next) > 0,
        "the empty segment got its hard-state header"
    );
    storage.persist(None, &entries(3, 3..=3)).unwrap();
    drop(storage);
    assert_eq!(
        reopen(dir.path(), &options).1,
        RecoveredLog(hs(3, Some(2)), entries(3, 1..=3))
    );
}
