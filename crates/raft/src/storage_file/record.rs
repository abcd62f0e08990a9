//! The bytes of a record: encoding hard states, entry batches and resets,
//! and decoding them back, refusing anything malformed.

use super::*;

/// A decoded payload. Entry data borrows from the payload buffer.
pub(super) enum Record<'a> {
    HardState(HardState),
    Entries(HardState, Vec<EntryRef<'a>>),
    /// The log was discarded up to a snapshot ending at (`index`, `term`).
    Reset {
        hard_state: HardState,
        index: LogIndex,
        term: Term,
    },
}

pub(super) struct EntryRef<'a> {
    pub(super) term: u64,
    pub(super) index: LogIndex,
    pub(super) kind: EntryKind,
    pub(super) data: &'a [u8],
}

impl EntryRef<'_> {
    pub(super) fn to_log_entry(&self) -> LogEntry {
        LogEntry {
            term: self.term,
            index: self.index,
            kind: self.kind,
            data: self.data.to_vec(),
        }
    }
}

// ---- Encoding ---------------------------------------------------------------

/// Appends a framed `HardState` record to `buf`.
pub(super) fn encode_hard_state(buf: &mut Vec<u8>, hs: &HardState) {
    let start = begin_record(buf, TYPE_HARD_STATE);
    put_hard_state(buf, hs);
    finish_record(buf, start);
}

/// How many of `entries` (at least one) go in the next record: as many as
/// fit `max_bytes` of data and entry headers.
pub(super) fn entries_per_record(entries: &[LogEntry], max_bytes: u64) -> usize {
    let mut bytes = 0u64;
    let fitting = entries
        .iter()
        .take_while(|e| {
            bytes += ENTRY_HEADER_LEN + e.data.len() as u64;
            bytes <= max_bytes
        })
        .count();
    fitting.max(1)
}

/// Appends a framed `Entries` record to `buf`, refusing batches too large to
/// be read back.
pub(super) fn encode_entries(
    buf: &mut Vec<u8>,
    hs: &HardState,
    entries: &[LogEntry],
) -> Result<(), StorageError> {
    let data: u64 = entries.iter().map(|e| e.data.len() as u64).sum();
    let payload_len = HARD_STATE_PAYLOAD_LEN + 4 + ENTRY_HEADER_LEN * entries.len() as u64 + data;
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(StorageError::Invalid(format!(
            "batch of {payload_len} bytes exceeds the {MAX_PAYLOAD_LEN}-byte record limit"
        )));
    }
    buf.reserve(HEADER_LEN as usize + payload_len as usize);
    let start = begin_record(buf, TYPE_ENTRIES);
    put_hard_state(buf, hs);
    buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        buf.extend_from_slice(&e.term.to_le_bytes());
        buf.extend_from_slice(&e.index.to_le_bytes());
        buf.push(e.kind.to_byte());
        buf.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        buf.extend_from_slice(&e.data);
    }
    finish_record(buf, start);
    Ok(())
}

/// Appends a framed `Reset` record to `buf`.
pub(super) fn encode_reset(buf: &mut Vec<u8>, hs: &HardState, index: LogIndex, term: Term) {
    let start = begin_record(buf, TYPE_RESET);
    put_hard_state(buf, hs);
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(&term.to_le_bytes());
    finish_record(buf, start);
}

/// Reserves the header and writes the type byte; returns the record start.
pub(super) fn begin_record(buf: &mut Vec<u8>, record_type: u8) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN as usize]);
    buf.push(record_type);
    start
}

/// Fills in the header reserved by [`begin_record`] now the payload is known.
pub(super) fn finish_record(buf: &mut [u8], start: usize) {
    let record = buf.get_mut(start..).unwrap_or_default();
    if let Some((header, payload)) = record.split_first_chunk_mut::<{ HEADER_LEN as usize }>() {
        let [l0, l1, l2, l3] = (payload.len() as u32).to_le_bytes();
        let [c0, c1, c2, c3] = crc32c::crc32c(payload).to_le_bytes();
        *header = [l0, l1, l2, l3, c0, c1, c2, c3];
    }
}

pub(super) fn put_hard_state(buf: &mut Vec<u8>, hs: &HardState) {
    buf.extend_from_slice(&hs.term.to_le_bytes());
    buf.extend_from_slice(&hs.voted_for.unwrap_or(0).to_le_bytes());
}

// ---- Decoding ---------------------------------------------------------------

/// A bounds-checked reader over a payload; every method fails instead of
/// panicking when the payload is shorter than it claims.
pub(super) struct Decoder<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Decoder<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let bytes = self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end))
            .ok_or_else(|| format!("payload ends at byte {} of a {n}-byte field", self.pos))?;
        self.pos += n;
        Ok(bytes)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let bytes = self.take(N)?;
        bytes.try_into().map_err(|_| "short field".to_string())
    }

    pub(super) fn u8(&mut self) -> Result<u8, String> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

/// Decodes a checksummed payload; an error here is always corruption, since
/// the bytes are exactly what some writer produced.
pub(super) fn decode_record(payload: &[u8]) -> Result<Record<'_>, String> {
    let mut d = Decoder {
        buf: payload,
        pos: 0,
    };
    let record = match d.u8()? {
        TYPE_HARD_STATE => Record::HardState(decode_hard_state(&mut d)?),
        TYPE_ENTRIES => {
            let hs = decode_hard_state(&mut d)?;
            Record::Entries(hs, decode_entries(&mut d)?)
        }
        TYPE_RESET => decode_reset(&mut d)?,
        other => return Err(format!("unknown record type {other}")),
    };
    match d.remaining() {
        0 => Ok(record),
        n => Err(format!("{n} unexpected bytes after the record")),
    }
}

pub(super) fn decode_hard_state(d: &mut Decoder<'_>) -> Result<HardState, String> {
    let term = d.u64()?;
    let voted_for = Some(d.u64()?).filter(|&id| id != 0);
    Ok(HardState { term, voted_for })
}

pub(super) fn decode_reset<'a>(d: &mut Decoder<'_>) -> Result<Record<'a>, String> {
    let hard_state = decode_hard_state(d)?;
    let index = d.u64()?;
    let term = d.u64()?;
    if index == LogIndex::MAX {
        return Err("reset to the largest index".into());
    }
    Ok(Record::Reset {
        hard_state,
        index,
        term,
    })
}

/// Decodes a non-empty batch of consecutive entries.
pub(super) fn decode_entries<'a>(d: &mut Decoder<'a>) -> Result<Vec<EntryRef<'a>>, String> {
    let count = d.u32()? as usize;
    if count == 0 {
        return Err("entries record with no entries".into());
    }
    // `count` comes from disk: cap the allocation by what the payload can hold.
    let mut entries = Vec::with_capacity(count.min(d.remaining() / ENTRY_HEADER_LEN as usize));
    for _ in 0..count {
        let term = d.u64()?;
        let index = d.u64()?;
        let kind_byte = d.u8()?;
        let kind = EntryKind::from_byte(kind_byte)
            .ok_or_else(|| format!("entry {index} has unknown kind {kind_byte}"))?;
        let data_len = d.u32()? as usize;
        let data = d.take(data_len)?;
        let expected = entries
            .last()
            .map_or(Some(index), |prev: &EntryRef| prev.index.checked_add(1));
        if index == 0 || Some(index) != expected {
            let expected = expected.map_or("none".into(), |i| i.to_string());
            return Err(format!("entry index {index} where {expected} was expected"));
        }
        entries.push(EntryRef {
            term,
            index,
            kind,
            data,
        });
    }
    Ok(entries)
}
