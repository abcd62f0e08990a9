//! Preallocation: the active segment has the full segment size (zeros after its
//! logical end), sealed segments are cut to their records, a crash during roll-over
//! recovers, and growing and preallocated segments read each other.

use super::*;

#[test]
fn preallocated_segments_have_the_full_size_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(64 << 10);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let seg = last_segment(dir.path());
    assert_eq!(file_len(&seg), 64 << 10, "preallocated when created");
    assert_eq!(logical_end(&seg), 25, "just the hard-state header");
    let mut model = Model::default();
    let mut ends = Vec::new();
    for i in 0..5 {
        let batch = entries(1, i * 3 + 1..=i * 3 + 3);
        persist(&mut storage, &mut model, Some(hs(1, Some(i + 1))), &batch);
        assert_eq!(file_len(&seg), 64 << 10, "appends never change the size");
        ends.push(logical_end(&seg));
    }
    assert!(ends.windows(2).all(|w| w[0] < w[1]), "{ends:?}");
    assert!(zeros_from(&seg, ends[4]));
    drop(storage);

    // Reopening finds the log's end in the zeros, and appends go there, not
    // to the end of the file.
    let (mut storage, log) = reopen(dir.path(), &options);
    assert_eq!(log, model.0);
    assert_eq!(file_len(&seg), 64 << 10);
    persist(&mut storage, &mut model, None, &entries(2, 16..=20));
    assert!(logical_end(&seg) > ends[4] && zeros_from(&seg, logical_end(&seg)));
    drop(storage);
    assert_eq!(reopen(dir.path(), &options).1, model.0);
    assert_eq!(segments(dir.path()), std::slice::from_ref(&seg));
    assert_eq!(file_len(&seg), 64 << 10);

    // The default segment size too.
    let dir = tempfile::tempdir().unwrap();
    let mut storage = FileStorage::open(dir.path()).unwrap();
    storage.persist(None, &entries(1, 1..=3)).unwrap();
    assert_eq!(file_len(&last_segment(dir.path())), DEFAULT_SEGMENT_SIZE);
    drop(storage);
    let (_, log) = reopen(dir.path(), &FileStorageOptions::default());
    assert_eq!(log, RecoveredLog(HardState::default(), entries(1, 1..=3)));
}

#[test]
fn sealed_segments_are_truncated_to_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments(300);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut model = Model::default();
    let mut rng = Rng::new(11);
    let check = |dir: &Path| {
        let files = segments(dir);
        let (last, sealed) = files.split_last().unwrap();
        for file in sealed {
            let len = file_len(file);
            assert_eq!(len, logical_end(file), "{file:?} is cut at its records");
            let bytes = fs::read(file).unwrap();
            assert!(len <= 300 || bytes.len() == 25 + 8 + payload_len(&bytes, 25));
        }
        assert_eq!(file_len(last), 300.max(logical_end(last)), "{last:?}");
        files.len()
    };
    while model.last_index() < 150 {
        let (hard_state, batch) = random_batch(&mut rng, &model);
        persist(&mut storage, &mut model, hard_state, &batch);
        check(dir.path());
    }
    // One batch larger than a segment gets a segment of its own, and grows it.
    let next = model.last_index() + 1;
    let big = [LogEntry::new(7, next, vec![7; 1000])];
    persist(&mut storage, &mut model, Some(hs(7, None)), &big);
    assert!(file_len(&last_segment(dir.path())) > 1000);
    persist(
        &mut storage,
        &mut model,
        None,
        &entries(7, next + 1..=next + 1),
    );
    let files = check(dir.path());
    assert!(files > 10, "only {files} segments");
    drop(storage);

    // A restart, then roll-overs again: the reopened segment is sealed too.
    let (mut storage, log) = reopen(dir.path(), &options);
    assert_eq!(log, model.0);
    for _ in 0..30 {
        let (hard_state, batch) = random_batch(&mut rng, &model);
        persist(&mut storage, &mut model, hard_state, &batch);
    }
    assert!(check(dir.path()) > files);
    // Reset seals the active segment before it starts its own (and then
    // deletes the older ones).
    storage.reset(model.last_index() + 5, 9).unwrap();
    assert_eq!(check(dir.path()), 1);
    drop(storage);
    assert_eq!(
        reopen(dir.path(), &options).0.last_index(),
        model.last_index() + 5
    );
}

/// The payload length in the record header at `offset`.
fn payload_len(bytes: &[u8], offset: usize) -> usize {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize
}

#[test]
fn a_crash_during_roll_over_recovers() {
    // Roll-over seals the old segment (cuts its zeros, fsync), then creates the
    // new one (preallocate, fsync, fsync the directory), then writes its
    // header and the batch (one fdatasync). Each state a crash can leave is
    // built by hand from a log whose last batch rolled over.
    let options = small_segments(300);
    let setup = |dir: &Path| {
        let mut storage = FileStorage::open_with(dir, options.clone()).unwrap();
        let mut model = Model::default();
        let mut i = 0;
        loop {
            let before = model.0.clone();
            let batch = entries(1, i * 2 + 1..=i * 2 + 2);
            persist(&mut storage, &mut model, Some(hs(1, Some(i + 1))), &batch);
            i += 1;
            if segments(dir).len() == 2 {
                return (before, model);
            }
        }
    };
    for state in [
        "old one not yet cut",          // crash while sealing: no new file yet
        "new one empty",                // created, not yet preallocated
        "new one preallocated",         // all zeros: header not yet written
        "new one half preallocated",    // a size change that half landed
        "header torn",                  // the header and batch half landed
        "header written, batch zeroed", // only the header landed
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (before, mut model) = setup(dir.path());
        let [old, new] = <[PathBuf; 2]>::try_from(segments(dir.path())).unwrap();
        assert_eq!(file_len(&old), logical_end(&old), "sealed");
        match state {
            "old one not yet cut" => {
                fs::remove_file(&new).unwrap();
                set_len(&old, 300);
            }
            "new one empty" => set_len(&new, 0),
            "new one preallocated" => zero_range(&new, 0, 300),
            "new one half preallocated" => {
                set_len(&new, 0);
                set_len(&new, 150);
            }
            "header torn" => zero_range(&new, 13, 300),
            _ => zero_range(&new, 25, 300),
        }

        let (mut storage, log) = reopen(dir.path(), &options);
        assert_eq!(log, before, "{state}");
        model.0 = log;
        let last = last_segment(dir.path());
        assert_eq!(file_len(&last), 300, "{state}: preallocated");
        assert_eq!(
            fs::read(&last).unwrap()[8],
            1,
            "{state}: starts with a hard state"
        );
        // Appends continue, roll over again, and recover.
        for i in 0..10 {
            let next = model.last_index() + 1;
            persist(
                &mut storage,
                &mut model,
                None,
                &entries(2, next..=next + i % 3),
            );
        }
        drop(storage);
        assert_eq!(reopen(dir.path(), &options).1, model.0, "{state}");
        assert!(segments(dir.path()).len() >= 3, "{state}");
    }

    // The order above never leaves zeros at the end of a segment that is not
    // the last, so they are still refused there: an old segment not yet cut
    // while the new one exists cannot come from a crash.
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let [old, new] = <[PathBuf; 2]>::try_from(segments(dir.path())).unwrap();
    let end = file_len(&old);
    set_len(&old, 300);
    zero_range(&new, 0, 300);
    let (path, offset, text) = corruption(FileStorage::open_with(dir.path(), options));
    assert_eq!((path, offset), (old, end), "{text}");
    assert!(text.contains("zero-filled tail"), "{text}");
}

#[test]
fn segments_grow_without_preallocation_and_either_mode_reads_the_other() {
    // Preallocation off is also what a filesystem without fallocate gets.
    let dir = tempfile::tempdir().unwrap();
    let growing = small_segments(300).with_preallocation(false);
    let preallocated = small_segments(300);
    let mut storage = FileStorage::open_with(dir.path(), growing.clone()).unwrap();
    let mut model = Model::default();
    let mut rng = Rng::new(5);
    let mut run = |storage: &mut FileStorage, model: &mut Model, rounds| {
        for _ in 0..rounds {
            let (hard_state, batch) = random_batch(&mut rng, model);
            persist(storage, model, hard_state, &batch);
        }
    };
    run(&mut storage, &mut model, 20);
    for file in segments(dir.path()) {
        assert_eq!(file_len(&file), logical_end(&file), "{file:?} grows");
    }
    drop(storage);

    // Upgrading: the last segment is preallocated when opened.
    let (mut storage, log) = reopen(dir.path(), &preallocated);
    assert_eq!(log, model.0);
    let last = last_segment(dir.path());
    assert_eq!(file_len(&last), 300.max(logical_end(&last)));
    run(&mut storage, &mut model, 20);
    drop(storage);

    // And back: a preallocated tail is read as the end of the log.
    let (mut storage, log) = reopen(dir.path(), &growing);
    assert_eq!(log, model.0);
    run(&mut storage, &mut model, 20);
    drop(storage);
    assert_eq!(reopen(dir.path(), &preallocated).1, model.0);
}
