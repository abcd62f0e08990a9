//! One segment file: create, preallocate, append and fsync, seal, and read
//! back frame by frame (a record, the end, a zero tail, a torn or corrupt
//! frame).

use super::*;

/// Whether, and to what size, the active segment is preallocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Preallocation {
    /// From [`FileStorageOptions::preallocate`]; turned off for good the
    /// first time the filesystem says it cannot preallocate.
    pub(super) enabled: bool,
    pub(super) size: u64,
}

/// An open segment file.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) seq: u64,
    pub(super) path: PathBuf,
    pub(super) file: File,
    /// The logical end: length of the valid prefix, where the next record
    /// goes. While a segment is replayed, the file's length, until replay
    /// finds where the records end.
    pub(super) len: u64,
    /// The file's length. Every byte in `len..file_len` is zero: the
    /// preallocated space of the active segment. Equal to `len` in a sealed
    /// segment (see the module docs, "Preallocation").
    pub(super) file_len: u64,
}

/// What a segment holds at some offset.
pub(super) enum Frame {
    Record(Vec<u8>),
    /// The end of the file.
    End,
    /// Nothing but zeros from here to the end of the file: preallocated
    /// space that was never written.
    ZeroTail,
    Torn(String),
    Corrupt(String),
}

/// Bytes of zeros written at a time when a segment is preallocated.
pub(super) const ZERO_FILL_CHUNK: usize = 1 << 20;

impl Preallocation {
    /// Preallocates `segment` to the segment size, unless it is disabled or
    /// the records already reach that size. The first time the filesystem
    /// says it cannot (`EOPNOTSUPP`, `ENOSYS`), logs that once and turns
    /// itself off: segments then grow as they are written, as they always
    /// could. Every byte after the segment's logical end must be zero.
    pub(super) fn apply(&mut self, segment: &mut Segment) -> Result<(), StorageError> {
        if !self.enabled || segment.len >= self.size {
            return Ok(());
        }
        if !segment.preallocate(self.size)? {
            self.enabled = false;
            tracing::debug!(
                path = %segment.path.display(),
                "the filesystem cannot preallocate; WAL segments will grow as they are written"
            );
        }
        Ok(())
    }
}

impl Segment {
    /// Opens an existing segment; only the last one is opened for writing.
    /// A sealed segment's file length is its valid length; the last one's
    /// logical end is found by replay.
    pub(super) fn open(dir: &Path, seq: u64, writable: bool) -> Result<Segment, StorageError> {
        let path = segment_path(dir, seq);
        let opened = OpenOptions::new().read(true).write(writable).open(&path);
        let file = opened.map_err(io_error(&path))?;
        let len = file.metadata().map_err(io_error(&path))?.len();
        Ok(Segment {
            seq,
            path,
            file,
            len,
            file_len: len,
        })
    }

    /// Creates segment `seq`, preallocated (if enabled and supported), and
    /// makes it durable: the file (its size and allocation), then its
    /// directory entry.
    pub(super) fn create(
        dir: &Path,
        seq: u64,
        prealloc: &mut Preallocation,
    ) -> Result<Segment, StorageError> {
        let mut segment = Segment::create_file(segment_path(dir, seq), seq, true)?;
        prealloc.apply(&mut segment)?;
        sync_dir(dir)?;
        Ok(segment)
    }

    /// Creates an empty file at `path` for segment `seq`; `new`: refusing
    /// to replace an existing one (a spare from an earlier run is replaced).
    pub(super) fn create_file(path: PathBuf, seq: u64, new: bool) -> Result<Segment, StorageError> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if new {
            options.create_new(true);
        } else {
            options.create(true).truncate(true);
        }
        let file = options.open(&path).map_err(io_error(&path))?;
        Ok(Segment {
            seq,
            path,
            file,
            len: 0,
            file_len: 0,
        })
    }

    /// Extends the file to `size` bytes with `fallocate` (mode 0: allocated,
    /// reading as zeros), writes zeros over the new space and fsyncs it, so
    /// that later `fdatasync`s need not journal a size change nor an extent
    /// conversion. Returns `false`, having changed nothing, if the
    /// filesystem cannot preallocate.
    ///
    /// Why the zeros: `fallocate` leaves *unwritten* extents, and the first
    /// write into each one converts it, a metadata update that every
    /// `fdatasync` then has to write too. Zero-filled blocks are plain
    /// written blocks. On this project's ext4 test machine, a 4 KiB
    /// overwrite followed by `fdatasync` ran about 7,300 times a second into
    /// zero-filled space against 5,300 into fallocated space; the fill costs
    /// about 40 ms per 64 MiB segment, once: at roll-over, or at `open` when
    /// the last segment is shorter than a segment (a log written without
    /// preallocation).
    pub(super) fn preallocate(&mut self, size: u64) -> Result<bool, StorageError> {
        if self.file_len >= size {
            return Ok(true);
        }
        let (offset, len) = (self.file_len, size - self.file_len);
        let flags = rustix::fs::FallocateFlags::empty();
        match rustix::fs::fallocate(&self.file, flags, offset, len) {
            Ok(()) => {}
            Err(errno) if errno == rustix::io::Errno::OPNOTSUPP => return Ok(false),
            Err(errno) if errno == rustix::io::Errno::NOSYS => return Ok(false),
            Err(errno) => return Err(io_error(&self.path)(errno.into())),
        }
        let zeros = vec![0u8; ZERO_FILL_CHUNK.min(len as usize)];
        let mut at = offset;
        while at < size {
            let n = (size - at).min(zeros.len() as u64) as usize;
            self.file
                .write_all_at(&zeros[..n], at)
                .map_err(io_error(&self.path))?;
            at += n as u64;
        }
        self.file.sync_all().map_err(io_error(&self.path))?;
        self.file_len = size;
        Ok(true)
    }

    /// Appends `buf` at the logical end and waits until it is on stable
    /// storage.
    pub(super) fn write_and_sync(&mut self, buf: &[u8]) -> Result<(), StorageError> {
        let on_err = io_error(&self.path);
        self.file.write_all_at(buf, self.len).map_err(&on_err)?;
        self.file.sync_data().map_err(on_err)?;
        self.len += buf.len() as u64;
        self.file_len = self.file_len.max(self.len);
        Ok(())
    }

    /// Makes this segment immutable before the next one is created: cuts the
    /// preallocated zeros after its last record, durably, so that a sealed
    /// segment's file length is its logical end.
    pub(super) fn seal(&mut self) -> Result<(), StorageError> {
        if self.file_len == self.len {
            return Ok(());
        }
        let on_err = io_error(&self.path);
        self.file.set_len(self.len).map_err(&on_err)?;
        self.file.sync_all().map_err(on_err)?;
        self.file_len = self.len;
        Ok(())
    }

    /// Replay met zeros from `offset` to the end of the file: preallocated
    /// space never written. The log ends there; nothing needs repair.
    pub(super) fn end_at_zero_tail(&mut self, offset: u64) {
        tracing::debug!(
            path = %self.path.display(),
            offset,
            zero_bytes = self.file_len - offset,
            "the log ends where the zero-filled (preallocated) tail of the last segment begins"
        );
        self.len = offset;
    }

    /// Drops a torn write and makes that durable, so that the next append
    /// does not land before garbage: the file is cut at `offset`, and
    /// [`Preallocation::apply`] then extends it with fresh zeros again.
    pub(super) fn cut_torn_tail(&mut self, offset: u64, reason: &str) -> Result<(), StorageError> {
        tracing::warn!(
            path = %self.path.display(),
            offset,
            dropped_bytes = self.file_len - offset,
            reason,
            "truncating a torn write at the tail of the log"
        );
        let on_err = io_error(&self.path);
        self.file.set_len(offset).map_err(&on_err)?;
        self.file.sync_all().map_err(on_err)?;
        self.len = offset;
        self.file_len = offset;
        Ok(())
    }

    /// Reads the record at `offset`, telling a torn write from corruption by
    /// the tail rule of the module docs. I/O errors are returned as such.
    pub(super) fn read_frame(&self, offset: u64) -> Result<Frame, StorageError> {
        let on_err = io_error(&self.path);
        let remaining = self.len.saturating_sub(offset);
        if remaining == 0 {
            return Ok(Frame::End);
        }
        if remaining < HEADER_LEN {
            return Ok(match self.zeros_to_eof(offset)? {
                true => Frame::ZeroTail,
                false => Frame::Torn("record header runs past end of file".into()),
            });
        }
        let mut header = [0u8; HEADER_LEN as usize];
        self.file
            .read_exact_at(&mut header, offset)
            .map_err(&on_err)?;
        let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
        let len = u64::from(u32::from_le_bytes([l0, l1, l2, l3]));
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
        let end = offset + HEADER_LEN + len;
        if len == 0 {
            return Ok(match self.zeros_to_eof(offset)? {
                true => Frame::ZeroTail,
                false => Frame::Corrupt("record with zero length".into()),
            });
        }
        if len > MAX_PAYLOAD_LEN {
            return Ok(Frame::Corrupt(format!(
                "record length {len} exceeds the limit"
            )));
        }
        if end > self.len {
            return Ok(Frame::Torn("record runs past end of file".into()));
        }
        let mut payload = vec![0u8; len as usize];
        let payload_at = offset + HEADER_LEN;
        self.file
            .read_exact_at(&mut payload, payload_at)
            .map_err(&on_err)?;
        if crc32c::crc32c(&payload) == crc {
            Ok(Frame::Record(payload))
        } else if self.zeros_to_eof(end)? {
            Ok(Frame::Torn("checksum mismatch in the final record".into()))
        } else {
            Ok(Frame::Corrupt("checksum mismatch".into()))
        }
    }

    /// True when every byte from `offset` to the end of the segment is zero.
    /// With preallocation this reads up to a whole segment, once per open.
    pub(super) fn zeros_to_eof(&self, mut offset: u64) -> Result<bool, StorageError> {
        let mut chunk = vec![0u8; self.len.saturating_sub(offset).min(1 << 20) as usize];
        while offset < self.len {
            chunk.truncate((self.len - offset).min(chunk.len() as u64) as usize);
            let read = self.file.read_exact_at(&mut chunk, offset);
            read.map_err(io_error(&self.path))?;
            if !is_zero(&chunk) {
                return Ok(false);
            }
            offset += chunk.len() as u64;
        }
        Ok(true)
    }
}
