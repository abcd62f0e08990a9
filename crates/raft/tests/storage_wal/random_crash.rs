//! Random crash points: a crash anywhere in the last write (the file cut, zeroed or
//! followed by garbage) restarts into exactly the log before or after that write,
//! which then accepts appends.

use super::*;

/// How the bytes after a crash look.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Tail {
    /// The file ends where the write stopped.
    Cut,
    /// Zeros follow: the file grew, the data blocks never landed.
    Zeros,
    /// Garbage follows: no filesystem promises otherwise.
    Garbage,
    /// The file keeps its length and the rest of the write never landed:
    /// zeros from the cut on, as in a preallocated segment.
    Zeroed,
    /// As `Zeroed`, with garbage at the cut.
    ZeroedGarbage,
}

/// Writes random batches, crashes during the last one (the last segment is
/// cut, or zeroed from, anywhere between its logical end before and after
/// that write), reopens, and checks the log is exactly the state before or
/// after the last batch. Then writes on, to prove the repaired log accepts
/// appends. Segments are preallocated for most seeds. Returns `None` if
/// `open` (rightly) refused a garbage tail, else whether the cut fell
/// strictly inside the last write.
fn crash_and_recover(seed: u64, tail: Tail) -> Option<bool> {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments([300, 1000, 1 << 20][rng.below(3) as usize])
        .with_preallocation(!rng.chance(20));
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut model = Model::default();
    for _ in 0..rng.below(12) {
        let (hard_state, batch) = random_batch(&mut rng, &model);
        persist(&mut storage, &mut model, hard_state, &batch);
    }
    let before = model.0.clone();
    let (seg_before, len_before) = (
        last_segment(dir.path()),
        logical_end(&last_segment(dir.path())),
    );
    let (hard_state, batch) = random_batch(&mut rng, &model);
    persist(&mut storage, &mut model, hard_state, &batch);
    let after = model.0.clone();
    drop(storage);

    let seg = last_segment(dir.path());
    if options.preallocate {
        assert_eq!(file_len(&seg), options.segment_size.max(logical_end(&seg)));
    } else {
        assert_eq!(file_len(&seg), logical_end(&seg));
    }
    let start = if seg == seg_before { len_before } else { 0 };
    let end = logical_end(&seg);
    let cut = start + rng.below(end - start + 1);
    let written = fs::read(&seg).unwrap();
    let complete = match tail {
        // Zeroing bytes that were zeros anyway changes nothing.
        Tail::Zeroed => written[cut as usize..end as usize].iter().all(|&b| b == 0),
        _ => cut == end,
    };
    match tail {
        Tail::Cut => set_len(&seg, cut),
        Tail::Zeros => {
            set_len(&seg, cut);
            append_bytes(&seg, &vec![0; 1 + rng.below(3000) as usize]);
        }
        Tail::Garbage => {
            set_len(&seg, cut);
            let len = 1 + rng.below(40);
            append_bytes(&seg, &rng.bytes(len));
        }
        Tail::Zeroed => zero_range(&seg, cut, end),
        Tail::ZeroedGarbage => {
            zero_range(&seg, cut, end);
            let len = 1 + rng.below(40);
            write_at(&seg, cut, &rng.bytes(len));
        }
    }

    let mut storage = match FileStorage::open_with(dir.path(), options.clone()) {
        Ok(storage) => storage,
        Err(StorageError::Corruption { path, offset, .. })
            if matches!(tail, Tail::Garbage | Tail::ZeroedGarbage) =>
        {
            // Garbage after a record's end is not a torn write; refusing is
            // right as long as it points at the damaged tail.
            assert_eq!(path, seg, "seed {seed}");
            assert!(offset >= start, "seed {seed}: offset {offset} < {start}");
            return None;
        }
        Err(err) => panic!("seed {seed} {tail:?}: cut at {cut}: {err}"),
    };
    let state = storage.recover().unwrap();
    let got = RecoveredLog(state.hard_state, state.entries);
    assert!(
        got == before || got == after,
        "seed {seed} {tail:?}: cut at {cut}: {got:?}"
    );
    if matches!(tail, Tail::Cut | Tail::Zeroed) {
        let expected = if complete { &after } else { &before };
        assert_eq!(
            &got, expected,
            "seed {seed} {tail:?}: cut at {cut} of {start}.."
        );
    }
    let last = last_segment(dir.path());
    assert!(
        zeros_from(&last, logical_end(&last)),
        "seed {seed} {tail:?}"
    );

    model.0 = got.clone();
    let next = model.last_index() + 1;
    persist(
        &mut storage,
        &mut model,
        Some(hs(1000, Some(1))),
        &entries(1000, next..=next + 2),
    );
    drop(storage);
    assert_eq!(
        reopen(dir.path(), &options).1,
        model.0,
        "seed {seed}: writing after recovery"
    );
    Some(cut > start && !complete)
}

#[test]
fn random_crash_points_restart_into_a_consistent_log() {
    let (mut cut, mut zeroed) = (0, 0);
    for seed in 0..150 {
        cut += usize::from(crash_and_recover(seed, Tail::Cut) == Some(true));
        zeroed += usize::from(crash_and_recover(2000 + seed, Tail::Zeroed) == Some(true));
    }
    assert!(cut > 50, "only {cut} cuts fell inside the last write");
    assert!(
        zeroed > 50,
        "only {zeroed} zeroings fell inside the last write"
    );
}

#[test]
fn random_crash_points_with_zeros_or_garbage_after_the_cut() {
    let (mut garbage, mut zeroed_garbage) = (0, 0);
    for seed in 0..150 {
        let zeros = crash_and_recover(seed, Tail::Zeros);
        assert!(
            zeros.is_some(),
            "seed {seed}: zeros after a cut are always torn"
        );
        garbage += usize::from(crash_and_recover(1000 + seed, Tail::Garbage).is_some());
        let recovered = crash_and_recover(3000 + seed, Tail::ZeroedGarbage).is_some();
        zeroed_garbage += usize::from(recovered);
    }
    // Most garbage is refused (its length field is absurd); some must recover,
    // or this test would not exercise recovery at all.
    assert!(garbage > 10, "only {garbage} garbage tails recovered");
    assert!(
        zeroed_garbage > 10,
        "only {zeroed_garbage} garbage tails in preallocated space recovered"
    );
}
