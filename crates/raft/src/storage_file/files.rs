//! Segment file names, directory listing and fsync, and the errors.

use super::*;

// ---- Files and errors -------------------------------------------------------

/// Whether `bytes` are all zero. Compares against a zero block (a `memcmp`)
/// rather than byte by byte, which is slow in debug builds.
pub(super) fn is_zero(bytes: &[u8]) -> bool {
    static ZEROS: [u8; 4096] = [0; 4096];
    bytes
        .chunks(ZEROS.len())
        .all(|chunk| ZEROS.get(..chunk.len()) == Some(chunk))
}

pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.{SEGMENT_EXT}"))
}

/// `<seq>.wal.<pid>-<n>.spare`: unique to this process and this spare, so
/// two storages on one directory (a test reopening it while the old one is
/// still alive) never prepare the same file.
pub(super) fn spare_path(dir: &Path, seq: u64) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id();
    dir.join(format!("{seq:020}.{SEGMENT_EXT}.{pid}-{n}.{SPARE_EXT}"))
}

/// Removes spare segments left by an earlier run: never part of the log.
pub(super) fn remove_spares(dir: &Path) -> Result<(), StorageError> {
    for dirent in fs::read_dir(dir).map_err(io_error(dir))? {
        let path = dirent.map_err(io_error(dir))?.path();
        if path.extension().and_then(|e| e.to_str()) == Some(SPARE_EXT) {
            fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    Ok(())
}

/// Parses `00000000000000000042.wal` into 42; `None` for other names.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_EXT)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().filter(|&seq| seq > 0)
}

/// The segment numbers in `dir`, ascending. Files without the `.wal`
/// extension are ignored. The run may start above 1 (compaction deleted the
/// first segments), but a missing number within it is corruption, as the log
/// in that file would be lost.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<u64>, StorageError> {
    let mut seqs = Vec::new();
    for dirent in fs::read_dir(dir).map_err(io_error(dir))? {
        let path = dirent.map_err(io_error(dir))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        match parse_segment_name(name) {
            Some(seq) => seqs.push(seq),
            None => return Err(corruption(&path, 0, "not a valid segment file name")),
        }
    }
    seqs.sort_unstable();
    for pair in seqs.windows(2) {
        if let [prev, seq] = *pair {
            if seq != prev + 1 {
                let reason = format!("segment {} is missing", prev + 1);
                return Err(corruption(&segment_path(dir, seq), 0, reason));
            }
        }
    }
    Ok(seqs)
}

/// Creates `dir` if needed and makes its entry in the parent durable.
pub(crate) fn create_dir(dir: &Path) -> Result<(), StorageError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// fsync on a directory makes the entries created in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let on_err = io_error(dir);
    File::open(dir).and_then(|d| d.sync_all()).map_err(on_err)
}

pub(crate) fn io_error(path: &Path) -> impl Fn(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn corruption(path: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Corruption {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}
