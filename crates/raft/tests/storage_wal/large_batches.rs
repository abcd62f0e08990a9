//! Large batches: a batch over the record limit is split into records that read
//! back whole, and a crash between them keeps the hard state and a prefix.

use super::*;

/// `count` entries of term 1 from index 1, each with `len` bytes of data.
fn large_entries(count: u64, len: usize) -> Vec<LogEntry> {
    (1..=count)
        .map(|i| LogEntry::new(1, i, vec![i as u8; len]))
        .collect()
}

#[test]
fn a_batch_over_the_record_limit_is_split_into_records_that_read_back_whole() {
    // The log writer merges everything that queued during an fsync into one
    // batch; a burst of large proposals must not make a record too large to
    // write (which would stop the node), so the batch is split.
    let dir = tempfile::tempdir().unwrap();
    let options = FileStorageOptions::default().with_max_record_bytes(200);
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    let mut batch = large_entries(9, 60);
    // One entry larger than the limit on its own still goes, alone.
    batch.push(LogEntry::new(1, 10, vec![7; 500]));
    batch.push(LogEntry::new(1, 11, vec![8; 10]));
    storage.persist(Some(&hs(1, Some(1))), &batch).unwrap();
    assert_eq!(storage.entries(1, 12).unwrap(), batch);

    let (storage, recovered) = reopen(dir.path(), &options);
    assert_eq!(recovered, RecoveredLog(hs(1, Some(1)), batch.clone()));
    assert_eq!(storage.entries(4, 11).unwrap(), batch[3..10].to_vec());
    // Several records were written: with one record, the segment would hold
    // the segment header and one record only.
    let one_record = dir.path().join("one");
    let mut whole = FileStorage::open(&one_record).unwrap();
    whole.persist(Some(&hs(1, Some(1))), &batch).unwrap();
    let split_len = logical_end(&last_segment(dir.path()));
    let whole_len = logical_end(&last_segment(&one_record));
    assert!(split_len > whole_len, "{split_len} vs {whole_len}");
}

#[test]
fn a_crash_between_the_records_of_a_split_batch_keeps_the_hard_state_and_a_prefix() {
    let options = FileStorageOptions::default().with_max_record_bytes(100);
    let batch = large_entries(4, 40); // two entries per record
    let dir = tempfile::tempdir().unwrap();
    let mut storage = FileStorage::open_with(dir.path(), options.clone()).unwrap();
    storage.persist(Some(&hs(3, Some(2))), &batch).unwrap();
    drop(storage);
    // Where the first record ends: what the first two entries alone write.
    let prefix_dir = tempfile::tempdir().unwrap();
    let mut prefix = FileStorage::open_with(prefix_dir.path(), options.clone()).unwrap();
    prefix.persist(Some(&hs(3, Some(2))), &batch[..2]).unwrap();
    let first_end = logical_end(&last_segment(prefix_dir.path()));
    let segment = last_segment(dir.path());
    let end = logical_end(&segment);
    assert!(first_end < end);
    // The second record never reached the disk.
    zero_range(&segment, first_end, end);

    let (_, recovered) = reopen(dir.path(), &options);
    assert_eq!(recovered, RecoveredLog(hs(3, Some(2)), batch[..2].to_vec()));
}
