//! What is known about the log without reading its payloads: where each
//! entry is, which segments exist, the latest reset; and replay, which
//! rebuilds it from the segments at open.

use super::*;

/// What is known about the log without its payloads.
#[derive(Debug)]
pub(super) struct LogMeta {
    pub(super) hard_state: HardState,
    /// Index of `locations[0]` (`last_index() + 1` when the log is empty): 1
    /// until compaction or a reset moves it.
    pub(super) first_index: LogIndex,
    /// Where each live entry's record is: `locations[i]` is entry `first_index + i`.
    /// Their segment numbers never decrease with the index: an append
    /// replaces a suffix with entries in the newest segment.
    pub(super) locations: Vec<Location>,
    /// Every segment file, oldest first; the last one is the active segment.
    pub(super) segments: VecDeque<SegmentMeta>,
    /// The latest `Reset` still on disk, if any.
    pub(super) reset: Option<ResetMark>,
    /// During replay: whether the index the log starts from is known. It is
    /// when replay starts at segment 1 (the log starts at 1) or has met a
    /// `Reset`; after compaction deleted the first segments it is not, and
    /// the replayed records themselves say where the log starts (see the
    /// module docs, "Compaction and reset").
    pub(super) base_known: bool,
}

/// Where the latest `Reset` record is, and the snapshot it reset the log to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ResetMark {
    pub(super) seq: u64,
    pub(super) index: LogIndex,
    pub(super) term: Term,
}

/// What compaction needs to know about a segment, kept so that it can
/// decide without reading the segment again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SegmentMeta {
    pub(super) seq: u64,
    /// The largest index of any entry written to the segment since the last
    /// `Reset`; `None` if there is none (only hard states, or everything in
    /// it precedes a `Reset`).
    pub(super) max_index: Option<LogIndex>,
}

/// Where an entry lives: the record holding its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Location {
    pub(super) seq: u64,
    pub(super) offset: u64,
    pub(super) payload_len: u32,
}

impl LogMeta {
    pub(super) fn new(base_known: bool) -> LogMeta {
        LogMeta {
            hard_state: HardState::default(),
            first_index: 1,
            locations: Vec::new(),
            segments: VecDeque::new(),
            reset: None,
            base_known,
        }
    }

    pub(super) fn add_segment(&mut self, seq: u64) {
        self.segments.push_back(SegmentMeta {
            seq,
            max_index: None,
        });
    }

    /// The oldest segment that compaction up to `index` must keep: the
    /// active one, one holding an entry above `index`, or the *anchor*, the
    /// one that tells replay where the log ends (the segment of the last
    /// entry, else of the latest `Reset`). Without the anchor, a replay of
    /// the remaining segments could not know the log's last index.
    pub(super) fn first_kept_segment(&self, index: LogIndex, active_seq: u64) -> Option<u64> {
        let anchor = self.locations.last().map(|l| l.seq);
        let anchor = anchor.or(self.reset.map(|r| r.seq));
        let keep = |s: &&SegmentMeta| {
            s.seq == active_seq
                || Some(s.seq) == anchor
                || s.max_index.is_some_and(|max| max > index)
        };
        self.segments.iter().find(keep).map(|s| s.seq)
    }

    /// Forgets the segments numbered below `seq` (deleted) and the entries
    /// located in them: a prefix of the log, as locations are in segment order.
    pub(super) fn forget_segments_before(&mut self, seq: u64) {
        while self.segments.front().is_some_and(|s| s.seq < seq) {
            self.segments.pop_front();
        }
        let gone = self.locations.iter().take_while(|l| l.seq < seq).count();
        self.locations.drain(..gone);
        self.first_index += gone as LogIndex;
    }

    /// Empties the log, which now follows the snapshot ending at
    /// `mark.index` (`< LogIndex::MAX`). Everything written before the
    /// `Reset` is dead.
    pub(super) fn reset(&mut self, mark: ResetMark) {
        self.first_index = mark.index + 1;
        self.locations.clear();
        self.reset = Some(mark);
        self.base_known = true;
        for segment in &mut self.segments {
            segment.max_index = None;
        }
    }

    pub(super) fn last_index(&self) -> LogIndex {
        self.first_index + self.locations.len() as LogIndex - 1
    }

    pub(super) fn location(&self, index: LogIndex) -> Result<Location, StorageError> {
        index
            .checked_sub(self.first_index)
            .and_then(|i| self.locations.get(i as usize))
            .copied()
            .ok_or_else(|| StorageError::Invalid(format!("entry {index} is not stored")))
    }

    /// Why entries starting at `first` cannot be appended, if they cannot.
    pub(super) fn check_append(&self, first: LogIndex) -> Result<(), String> {
        let last = self.last_index();
        if first == 0 || first < self.first_index || first > last + 1 {
            return Err(format!(
                "append at index {first} would leave a gap after {last}"
            ));
        }
        Ok(())
    }

    /// Records `count` (> 0) entries from `first` (already checked) at
    /// `location`, in the newest segment, discarding entries at or after
    /// `first` (§5.3).
    pub(super) fn record_append(&mut self, first: LogIndex, count: usize, location: Location) {
        self.locations.truncate((first - self.first_index) as usize);
        self.locations.extend(std::iter::repeat_n(location, count));
        let last = first + (count as LogIndex).saturating_sub(1);
        if let Some(segment) = self.segments.back_mut() {
            segment.max_index = Some(segment.max_index.map_or(last, |max| max.max(last)));
        }
    }

    /// Like [`check_append`](Self::check_append), for a batch met during
    /// replay. While the base is unknown (the segments before the first one
    /// left were compacted away), the first batch starts the log, and so does
    /// a batch starting below it: it rewrote entries whose older copies were
    /// in the deleted segments.
    pub(super) fn check_replayed_append(&mut self, first: LogIndex) -> Result<(), String> {
        if !self.base_known && (self.locations.is_empty() || first < self.first_index) {
            self.first_index = first;
            self.locations.clear();
            return Ok(());
        }
        self.check_append(first)
    }

    /// Replays every record of `segment`. Only the last segment may end in
    /// zeros, which end the log (its logical end is set there), or in a torn
    /// write, which is cut off here.
    pub(super) fn replay_segment(
        &mut self,
        segment: &mut Segment,
        is_last: bool,
    ) -> Result<(), StorageError> {
        self.add_segment(segment.seq);
        let mut offset = 0;
        loop {
            match segment.read_frame(offset)? {
                Frame::End if offset == 0 && !is_last => {
                    return Err(corruption(
                        &segment.path,
                        0,
                        "empty segment before the last",
                    ));
                }
                Frame::End => return Ok(()),
                Frame::ZeroTail if is_last => {
                    segment.end_at_zero_tail(offset);
                    return Ok(());
                }
                Frame::ZeroTail => {
                    // Sealing truncates a segment before the next one is
                    // created, so no crash leaves zeros here.
                    let reason = "zero-filled tail, in a segment that is not the last";
                    return Err(corruption(&segment.path, offset, reason));
                }
                Frame::Record(payload) => {
                    self.replay(segment, offset, &payload)?;
                    offset += HEADER_LEN + payload.len() as u64;
                }
                Frame::Torn(reason) if is_last => return segment.cut_torn_tail(offset, &reason),
                Frame::Torn(reason) => {
                    let reason = format!("{reason}, in a segment that is not the last");
                    return Err(corruption(&segment.path, offset, reason));
                }
                Frame::Corrupt(reason) => return Err(corruption(&segment.path, offset, reason)),
            }
        }
    }

    /// Applies one checksummed record, refusing records that no correct
    /// writer could have produced.
    pub(super) fn replay(
        &mut self,
        segment: &Segment,
        offset: u64,
        payload: &[u8],
    ) -> Result<(), StorageError> {
        let bad = |reason: String| corruption(&segment.path, offset, reason);
        match decode_record(payload).map_err(bad)? {
            Record::HardState(hs) => self.hard_state = hs,
            Record::Entries(..) | Record::Reset { .. } if offset == 0 => {
                return Err(bad("segment does not start with a hard state".into()));
            }
            Record::Reset {
                hard_state,
                index,
                term,
            } => {
                let seq = segment.seq;
                self.reset(ResetMark { seq, index, term });
                self.hard_state = hard_state;
            }
            Record::Entries(hs, entries) => {
                let first = entries.first().map_or(0, |e| e.index);
                self.check_replayed_append(first).map_err(bad)?;
                let location = Location {
                    seq: segment.seq,
                    offset,
                    payload_len: payload.len() as u32,
                };
                self.record_append(first, entries.len(), location);
                self.hard_state = hs;
            }
        }
        Ok(())
    }
}
