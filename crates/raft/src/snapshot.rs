//! Snapshot files: a point-in-time image of the state machine, and the
//! metadata Raft needs to continue from it (§7, "Log compaction").
//!
//! Once a snapshot covering the log up to index `n` is durable, the log
//! prefix up to `n` can be discarded ([`Storage::compact`]), and a follower
//! too far behind receives the snapshot instead of the entries
//! ([`Storage::reset`] after installing it). [`SnapshotStore`] keeps the
//! snapshot files of one node in one directory.
//!
//! # Format
//!
//! ```text
//! offset 0                                             all integers little-endian
//! +----------+-------------+----------------+---------------+------------------+
//! | magic    | version u32 | last_index u64 | last_term u64 | config length u32|
//! | RAFTSNP1 | (2)         |                |               | (k)              |
//! +----------+-------------+----------------+---------------+------------------+
//! | configuration: k bytes, `Membership::encode` (voters, learners, addresses) |  header:
//! +----------------------------------------------------------------------------+  32 + k bytes
//! | body: the state machine's image, `body length` bytes, opaque to Raft        |
//! +----------------------------+-----------------------------------------------+
//! | body length u64            | crc u32: CRC32C of every byte before it       |  trailer:
//! +----------------------------+-----------------------------------------------+  12 bytes
//! ```
//!
//! The configuration is the one in force at `last_index` (thesis §4.1 and
//! §7: the log entries that held it are gone once the log is compacted, so
//! the snapshot must carry it, learners and addresses included). Format 1,
//! which snapshots written before membership changes used, had the voter
//! count at offset 28 and then 8 bytes per voter; it is still read (as a
//! configuration of those voters, no learners, no addresses) and never
//! written.
//!
//! A file is valid when it starts with the magic and a known version, its
//! length is exactly header + body + trailer, and the checksum matches. Files are named
//! `snap-{last_index:020}-{last_term:020}.snap`, so names sort by index (then
//! term); the name must agree with the header. Temporary files end in `.tmp`.
//!
//! # Crash safety: temp file, fsync, rename, fsync the directory
//!
//! A snapshot is written to a temporary file, fsynced, renamed to its final
//! name, and then the directory is fsynced. Renaming within a directory is
//! atomic, so a final name only ever names a complete file: a crash leaves
//! either no new snapshot or the whole of it (plus perhaps a `.tmp` file,
//! which [`SnapshotStore::open`] deletes). The fsync *before* the rename
//! makes sure the data is on disk before the name points at it (otherwise a
//! crash could leave the name on a file whose blocks never landed); the
//! fsync of the directory *after* it makes the rename itself durable, which
//! it must be before the caller discards the log prefix the snapshot covers.
//!
//! # Why the checksum covers the header and the trailer
//!
//! The metadata matters more than any body byte: a flipped bit in
//! `last_index` would make a node believe its state machine includes
//! entries it does not, and it would then skip or re-apply entries, silently
//! diverging from its peers. So the CRC covers everything but itself. The
//! body length in the trailer makes a cut-off file detectable before the
//! checksum is even computed, and tells a torn file (a crash, or a partial
//! copy) from bit rot in the message.
//!
//! Renames make torn *final* files unlikely, but filesystems, disks and
//! operators still damage files. [`SnapshotStore::latest`] therefore verifies
//! the newest snapshot and, if it is torn or corrupt, logs a warning and falls
//! back to the one before. (The older snapshot plus the log after it still
//! reach the same state, provided the log was compacted only up to it: keep
//! at least two with [`SnapshotStore::retain`] if that matters.) Verifying
//! reads the whole file; it streams, so memory use does not grow with the
//! snapshot.
//!
//! # Sending a snapshot: chunks are opaque file bytes
//!
//! A leader sends a snapshot as chunks of the *file*
//! ([`SnapshotStore::read_chunk`]), header and trailer included, rather than
//! re-encoding the metadata and body into messages. The receiver
//! ([`IncomingSnapshot`]) appends them in order to a temp file, and
//! [`IncomingSnapshot::finish`] checks the same checksum the sender's disk
//! was checked with: end-to-end verification of exactly the bytes that were
//! written, across the network and the receiver's disk, with no second format
//! to keep in sync and no need to trust the transport's framing. The receiver
//! learns the metadata from the verified header, not from the sender's word.
//!
//! # Concurrency
//!
//! Methods take `&self` and may run concurrently (a snapshot being written
//! while another is received, say): temp files get unique names. One
//! [`SnapshotStore`] per directory, though: `open` deletes every `.tmp` file,
//! including another store's transfer in progress.
//!
//! [`Storage::compact`]: crate::Storage::compact
//! [`Storage::reset`]: crate::Storage::reset

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::Membership;
use crate::storage::StorageError;
use crate::storage_file::{corruption, create_dir, io_error, sync_dir};
use crate::types::{LogIndex, NodeId, Term};

const MAGIC: [u8; 8] = *b"RAFTSNP1";
/// The format written: the header holds the whole configuration.
const FORMAT_VERSION: u32 = 2;
/// The first format: the header held the voters only. Read, never written.
const FORMAT_VOTERS_ONLY: u32 = 1;
/// Magic, version, last_index, last_term and the configuration's length
/// (format 2) or voter count (format 1).
const FIXED_HEADER_LEN: u64 = 32;
const VERSION_AT: u64 = 8;
const LAST_INDEX_AT: u64 = 12;
const LAST_TERM_AT: u64 = 20;
const CONFIG_LEN_AT: u64 = 28;
/// A configuration bigger than this is not one (a corrupt length field is
/// refused before anything is allocated for it).
const MAX_CONFIG_LEN: u32 = 1 << 20;
/// Body length and CRC.
const TRAILER_LEN: u64 = 12;
const SNAPSHOT_EXT: &str = "snap";
const TEMP_EXT: &str = "tmp";
/// Buffer size for streaming a snapshot to or from disk.
const IO_CHUNK: usize = 64 * 1024;

/// What a snapshot stands for: the state machine after applying every entry
/// up to and including `last_index` (whose term is `last_term`), and the
/// cluster's configuration at that point (thesis §4.1, §7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub last_index: LogIndex,
    pub last_term: Term,
    pub membership: Membership,
}

/// The snapshot files of one node, in one directory (see the module docs).
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

/// A snapshot being received in chunks, into a temp file. Dropping it
/// before [`finish`](IncomingSnapshot::finish) deletes the temp file.
#[derive(Debug)]
pub struct IncomingSnapshot {
    dir: PathBuf,
    temp: TempFile,
    /// Bytes received so far: where the next chunk goes.
    offset: u64,
    /// A chunk failed to write and could not be cut off again: what is in
    /// the file is unknown.
    failed: bool,
}

/// A temp file that is deleted when dropped, unless renamed into place.
#[derive(Debug)]
struct TempFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

/// Where the parts of a verified snapshot file are.
struct Layout {
    meta: SnapshotMeta,
    body_at: u64,
    body_len: u64,
}

/// A writer that checksums and counts what passes through it.
struct CrcWriter<W> {
    inner: W,
    crc: u32,
    written: u64,
}

impl SnapshotStore {
    /// Opens the store in `dir`, creating the directory if needed, and
    /// deletes temp files left by a crash during a write or a transfer.
    pub fn open(dir: impl AsRef<Path>) -> Result<SnapshotStore, StorageError> {
        let dir = dir.as_ref().to_path_buf();
        create_dir(&dir)?;
        let store = SnapshotStore { dir };
        store.remove_temp_files()?;
        Ok(store)
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a snapshot: temp file, body streamed by `write_body` through a
    /// checksumming writer (never buffered whole in memory), fsync, rename to
    /// its final name, fsync the directory. Returns its path. An error from
    /// `write_body` is returned as [`StorageError::Io`] on the temp file,
    /// which is deleted.
    pub fn write(
        &self,
        meta: &SnapshotMeta,
        write_body: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<PathBuf, StorageError> {
        let header = encode_header(meta)?;
        let final_name = file_name(meta.last_index, meta.last_term);
        let mut temp = TempFile::create(&self.dir, &final_name)?;
        write_file(&temp.file, &header, write_body)
            .and_then(|()| temp.file.sync_all())
            .map_err(io_error(&temp.path))?;
        let path = self.dir.join(final_name);
        temp.persist(&path)?;
        sync_dir(&self.dir)?;
        tracing::debug!(path = %path.display(), "wrote a snapshot");
        Ok(path)
    }

    /// The newest snapshot whose checksum verifies, and its path. A newer one
    /// that is torn or corrupt is skipped with a warning naming the file (the
    /// previous one is used). `None` when there is none.
    pub fn latest(&self) -> Result<Option<(SnapshotMeta, PathBuf)>, StorageError> {
        for path in self.list()?.into_iter().rev() {
            match verify_path(&path) {
                Ok(layout) => return Ok(Some((layout.meta, path))),
                Err(err @ StorageError::Corruption { .. }) => {
                    tracing::warn!(
                        path = %path.display(),
                        error = %err,
                        "skipping a snapshot that does not verify; trying an older one"
                    );
                }
                Err(err) => return Err(err),
            }
        }
        Ok(None)
    }

    /// Verifies the file, then returns its metadata and a reader positioned
    /// at the start of the body, limited to the body.
    pub fn open_body(
        &self,
        path: &Path,
    ) -> Result<(SnapshotMeta, Box<dyn Read + Send>), StorageError> {
        let on_err = io_error(path);
        let mut file = File::open(path).map_err(&on_err)?;
        let layout = verify_file(&file, path)?;
        file.seek(SeekFrom::Start(layout.body_at))
            .map_err(&on_err)?;
        let body = BufReader::with_capacity(IO_CHUNK, file.take(layout.body_len));
        Ok((layout.meta, Box::new(body)))
    }

    /// Deletes all but the newest `keep` (>= 1) snapshots, by name. The
    /// newest one that verifies is kept too, even if it is older than that:
    /// a damaged newer file must not cost the last good snapshot.
    pub fn retain(&self, keep: usize) -> Result<(), StorageError> {
        if keep == 0 {
            return Err(StorageError::Invalid(
                "retain must keep at least one snapshot".into(),
            ));
        }
        let all = self.list()?;
        let Some(old) = all.len().checked_sub(keep).filter(|&n| n > 0) else {
            return Ok(());
        };
        let newest_valid = self.latest()?.map(|(_, path)| path);
        let doomed = all.get(..old).unwrap_or_default();
        for path in doomed.iter().filter(|&p| Some(p) != newest_valid.as_ref()) {
            fs::remove_file(path).map_err(io_error(path))?;
            tracing::debug!(path = %path.display(), "deleted an old snapshot");
        }
        sync_dir(&self.dir)
    }

    /// For sending: the whole file's bytes `[offset, offset + len)` (fewer at
    /// the end of the file; header, body and trailer alike, opaque to the
    /// receiver) and the file's total size. `offset` past the end is
    /// [`StorageError::Invalid`].
    pub fn read_chunk(
        &self,
        path: &Path,
        offset: u64,
        len: usize,
    ) -> Result<(Vec<u8>, u64), StorageError> {
        let on_err = io_error(path);
        let file = File::open(path).map_err(&on_err)?;
        let total = file.metadata().map_err(&on_err)?.len();
        let Some(left) = total.checked_sub(offset) else {
            return Err(StorageError::Invalid(format!(
                "chunk offset {offset} is past the end of {} ({total} bytes)",
                path.display()
            )));
        };
        let mut chunk = vec![0; left.min(len as u64) as usize];
        file.read_exact_at(&mut chunk, offset).map_err(&on_err)?;
        Ok((chunk, total))
    }

    /// For receiving a snapshot sent in chunks: a temp file that chunks are
    /// appended to in order.
    pub fn begin_receive(&self) -> Result<IncomingSnapshot, StorageError> {
        Ok(IncomingSnapshot {
            dir: self.dir.clone(),
            temp: TempFile::create(&self.dir, "incoming")?,
            offset: 0,
            failed: false,
        })
    }

    /// The snapshot files, oldest first. Other files are ignored.
    fn list(&self) -> Result<Vec<PathBuf>, StorageError> {
        let mut found = Vec::new();
        for dirent in fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let path = dirent.map_err(io_error(&self.dir))?.path();
            if let Some(key) = path_name(&path).and_then(parse_file_name) {
                found.push((key, path));
            }
        }
        found.sort_unstable();
        Ok(found.into_iter().map(|(_, path)| path).collect())
    }

    fn remove_temp_files(&self) -> Result<(), StorageError> {
        let mut removed = 0;
        for dirent in fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let path = dirent.map_err(io_error(&self.dir))?.path();
            if path.extension().is_some_and(|e| e == TEMP_EXT) && path.is_file() {
                fs::remove_file(&path).map_err(io_error(&path))?;
                tracing::info!(path = %path.display(), "deleted a leftover snapshot temp file");
                removed += 1;
            }
        }
        match removed {
            0 => Ok(()),
            _ => sync_dir(&self.dir),
        }
    }
}

impl IncomingSnapshot {
    /// Bytes received so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Appends a chunk, which must start where the previous one ended
    /// ([`offset`](Self::offset)); anything else is [`StorageError::Invalid`]
    /// and changes nothing. After an I/O error the offset is unchanged and
    /// the same chunk may be sent again.
    pub fn write_chunk(&mut self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Invalid(
                "an earlier chunk failed to write; the transfer must start again".into(),
            ));
        }
        if offset != self.offset {
            return Err(StorageError::Invalid(format!(
                "snapshot chunk at offset {offset}, but {} bytes were received",
                self.offset
            )));
        }
        if let Err(err) = self.temp.file.write_all_at(data, offset) {
            // Cut off whatever part of the chunk landed, so that it can be
            // sent again; if even that fails, the file is beyond repair.
            self.failed = self.temp.file.set_len(self.offset).is_err();
            return Err(io_error(&self.temp.path)(err));
        }
        self.offset += data.len() as u64;
        Ok(())
    }

    /// Verifies the checksum and header, fsyncs, renames into place, fsyncs
    /// the directory. Returns the metadata and final path. On error the temp
    /// file is deleted.
    pub fn finish(mut self) -> Result<(SnapshotMeta, PathBuf), StorageError> {
        if self.failed {
            return Err(StorageError::Invalid(
                "an earlier chunk failed to write; the transfer must start again".into(),
            ));
        }
        let layout = verify_file(&self.temp.file, &self.temp.path)?;
        self.temp
            .file
            .sync_all()
            .map_err(io_error(&self.temp.path))?;
        let meta = layout.meta;
        let path = self.dir.join(file_name(meta.last_index, meta.last_term));
        self.temp.persist(&path)?;
        sync_dir(&self.dir)?;
        tracing::debug!(path = %path.display(), bytes = self.offset, "received a snapshot");
        Ok((meta, path))
    }
}

impl TempFile {
    /// Creates `{stem}.{random}.tmp` in `dir`; never an existing file.
    fn create(dir: &Path, stem: &str) -> Result<TempFile, StorageError> {
        let path = dir.join(format!("{stem}.{:016x}.{TEMP_EXT}", fastrand::u64(..)));
        let mut options = OpenOptions::new();
        let opened = options.read(true).write(true).create_new(true).open(&path);
        let file = opened.map_err(io_error(&path))?;
        Ok(TempFile {
            path,
            file,
            persisted: false,
        })
    }

    /// Renames the file to `to` (replacing any file there); it is then no
    /// longer deleted on drop.
    fn persist(&mut self, to: &Path) -> Result<(), StorageError> {
        fs::rename(&self.path, to).map_err(io_error(to))?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            if let Err(err) = fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), %err, "could not delete a temp file");
            }
        }
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let done = buf.get(..n).unwrap_or(buf);
        self.crc = crc32c::crc32c_append(self.crc, done);
        self.written += done.len() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// ---- Writing ----------------------------------------------------------------

/// Writes header, body and trailer to `file` (not yet synced).
fn write_file(
    file: &File,
    header: &[u8],
    write_body: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let mut out = CrcWriter {
        inner: BufWriter::with_capacity(IO_CHUNK, file),
        crc: 0,
        written: 0,
    };
    out.write_all(header)?;
    write_body(&mut out)?;
    let body_len = out.written.saturating_sub(header.len() as u64);
    out.write_all(&body_len.to_le_bytes())?;
    let crc = out.crc;
    out.inner.write_all(&crc.to_le_bytes())?;
    out.inner.flush()
}

fn encode_header(meta: &SnapshotMeta) -> Result<Vec<u8>, StorageError> {
    if meta.membership.members().contains(&0) {
        return Err(StorageError::Invalid(
            "node id 0 is not a node id".to_string(),
        ));
    }
    let config = meta.membership.encode();
    let len = u32::try_from(config.len())
        .ok()
        .filter(|&n| n <= MAX_CONFIG_LEN)
        .ok_or_else(|| StorageError::Invalid("configuration too large for a snapshot".into()))?;
    let mut buf = Vec::with_capacity(FIXED_HEADER_LEN as usize + config.len());
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    buf.extend_from_slice(&meta.last_index.to_le_bytes());
    buf.extend_from_slice(&meta.last_term.to_le_bytes());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&config);
    Ok(buf)
}

// ---- Verifying --------------------------------------------------------------

fn verify_path(path: &Path) -> Result<Layout, StorageError> {
    let file = File::open(path).map_err(io_error(path))?;
    verify_file(&file, path)
}

/// Checks a whole snapshot file (see the module docs, "Format"): structure
/// first, for a precise message, then the checksum, then the header contents,
/// which only the checksum makes trustworthy. Every read is bounds-checked
/// against the file length; nothing in the file can cause a panic or an
/// allocation larger than the file.
fn verify_file(file: &File, path: &Path) -> Result<Layout, StorageError> {
    let len = file.metadata().map_err(io_error(path))?.len();
    if len < FIXED_HEADER_LEN + TRAILER_LEN {
        let reason = format!("{len}-byte file is shorter than any snapshot");
        return Err(corruption(path, len, reason));
    }
    let fixed: [u8; FIXED_HEADER_LEN as usize] = read_array(file, path, 0)?;
    if fixed.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(corruption(path, 0, "not a snapshot file (bad magic)"));
    }
    let version = le_u32(&fixed, VERSION_AT);
    let counted = le_u32(&fixed, CONFIG_LEN_AT);
    let body_at = match version {
        FORMAT_VERSION if counted <= MAX_CONFIG_LEN => FIXED_HEADER_LEN + u64::from(counted),
        FORMAT_VERSION => {
            let reason = format!("a {counted}-byte configuration is not one");
            return Err(corruption(path, CONFIG_LEN_AT, reason));
        }
        FORMAT_VOTERS_ONLY => FIXED_HEADER_LEN + 8 * u64::from(counted),
        _ => {
            let reason = format!("unsupported snapshot format version {version}");
            return Err(corruption(path, VERSION_AT, reason));
        }
    };
    let body_len = check_length(file, path, len, body_at)?;
    check_crc(file, path, len)?;
    let membership = match version {
        FORMAT_VOTERS_ONLY => Membership::new(&read_voters(file, path, body_at)?, &[]),
        _ => read_membership(file, path, body_at)?,
    };
    let meta = SnapshotMeta {
        last_index: le_u64(&fixed, LAST_INDEX_AT),
        last_term: le_u64(&fixed, LAST_TERM_AT),
        membership,
    };
    check_name(path, &meta)?;
    Ok(Layout {
        meta,
        body_at,
        body_len,
    })
}

/// Checks that the file is exactly header + body + trailer long, as a torn
/// (cut-off) file is not; returns the body length.
fn check_length(file: &File, path: &Path, len: u64, body_at: u64) -> Result<u64, StorageError> {
    let trailer_at = len - TRAILER_LEN;
    if body_at > trailer_at {
        let reason = format!("header of {body_at} bytes does not fit in a {len}-byte file");
        return Err(corruption(path, CONFIG_LEN_AT, reason));
    }
    let body_len = u64::from_le_bytes(read_array(file, path, trailer_at)?);
    if body_at.checked_add(body_len) != Some(trailer_at) {
        let reason = format!(
            "trailer records a {body_len}-byte body but the file holds {} (torn or truncated)",
            trailer_at - body_at
        );
        return Err(corruption(path, trailer_at, reason));
    }
    Ok(body_len)
}

/// Streams the file through CRC32C and compares with the stored checksum.
fn check_crc(file: &File, path: &Path, len: u64) -> Result<(), StorageError> {
    let crc_at = len - 4;
    let stored = u32::from_le_bytes(read_array(file, path, crc_at)?);
    let mut buf = vec![0u8; IO_CHUNK];
    let (mut crc, mut at) = (0u32, 0u64);
    while at < crc_at {
        let n = (crc_at - at).min(IO_CHUNK as u64) as usize;
        let chunk = buf.get_mut(..n).unwrap_or_default();
        file.read_exact_at(chunk, at).map_err(io_error(path))?;
        crc = crc32c::crc32c_append(crc, chunk);
        at += n as u64;
    }
    match crc == stored {
        true => Ok(()),
        false => Err(corruption(path, crc_at, "checksum mismatch")),
    }
}

/// Reads the configuration between the fixed header and `body_at` (already
/// checked to lie within the file; format 2).
fn read_membership(file: &File, path: &Path, body_at: u64) -> Result<Membership, StorageError> {
    let mut bytes = vec![0u8; (body_at - FIXED_HEADER_LEN) as usize];
    let read = file.read_exact_at(&mut bytes, FIXED_HEADER_LEN);
    read.map_err(io_error(path))?;
    let membership = Membership::decode(&bytes)
        .map_err(|why| corruption(path, FIXED_HEADER_LEN, format!("configuration: {why}")))?;
    match membership.members().contains(&0) {
        false => Ok(membership),
        true => Err(corruption(
            path,
            FIXED_HEADER_LEN,
            "node id 0 is not a node id",
        )),
    }
}

/// Reads the voter ids between the fixed header and `body_at` (already
/// checked to lie within the file; format 1).
fn read_voters(file: &File, path: &Path, body_at: u64) -> Result<Vec<NodeId>, StorageError> {
    let mut bytes = vec![0u8; (body_at - FIXED_HEADER_LEN) as usize];
    let read = file.read_exact_at(&mut bytes, FIXED_HEADER_LEN);
    read.map_err(io_error(path))?;
    let voters: Vec<NodeId> = bytes.chunks_exact(8).map(|c| le_u64(c, 0)).collect();
    match voters.iter().position(|&id| id == 0) {
        None => Ok(voters),
        Some(i) => {
            let at = FIXED_HEADER_LEN + 8 * i as u64;
            Err(corruption(path, at, "voter id 0 is not a node id"))
        }
    }
}

/// A snapshot's name must agree with its header, or `latest` would pick by
/// one index and restore another.
fn check_name(path: &Path, meta: &SnapshotMeta) -> Result<(), StorageError> {
    match path_name(path).and_then(parse_file_name) {
        Some(named) if named != (meta.last_index, meta.last_term) => {
            let reason = format!(
                "header is for index {} term {}, but the file name says index {} term {}",
                meta.last_index, meta.last_term, named.0, named.1
            );
            Err(corruption(path, LAST_INDEX_AT, reason))
        }
        _ => Ok(()),
    }
}

fn read_array<const N: usize>(file: &File, path: &Path, at: u64) -> Result<[u8; N], StorageError> {
    let mut buf = [0u8; N];
    file.read_exact_at(&mut buf, at).map_err(io_error(path))?;
    Ok(buf)
}

/// The little-endian `u32` at `at` in `bytes` (callers pass offsets within
/// their buffers; a field past the end would read as 0, not panic).
fn le_u32(bytes: &[u8], at: u64) -> u32 {
    u32::from_le_bytes(le_field(bytes, at))
}

/// The little-endian `u64` at `at` in `bytes`, like [`le_u32`].
fn le_u64(bytes: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(le_field(bytes, at))
}

fn le_field<const N: usize>(bytes: &[u8], at: u64) -> [u8; N] {
    let start = usize::try_from(at).unwrap_or(usize::MAX);
    let field = start.checked_add(N).and_then(|end| bytes.get(start..end));
    field.and_then(|f| f.try_into().ok()).unwrap_or([0; N])
}

// ---- Names ------------------------------------------------------------------

fn file_name(last_index: LogIndex, last_term: Term) -> String {
    format!("snap-{last_index:020}-{last_term:020}.{SNAPSHOT_EXT}")
}

fn path_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

/// Parses `snap-{index:020}-{term:020}.snap` into (index, term).
fn parse_file_name(name: &str) -> Option<(LogIndex, Term)> {
    let stem = name.strip_suffix(SNAPSHOT_EXT)?.strip_suffix('.')?;
    let (index, term) = stem.strip_prefix("snap-")?.split_once('-')?;
    Some((parse_padded(index)?, parse_padded(term)?))
}

fn parse_padded(digits: &str) -> Option<u64> {
    match digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        true => digits.parse().ok(),
        false => None,
    }
}
