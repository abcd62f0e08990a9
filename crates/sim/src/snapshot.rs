//! Snapshots in the simulation (§7): the file a node writes and sends, the
//! digest of a KV state that State Machine Safety compares, and the crash
//! points inside snapshotting and installation.
//!
//! A simulated snapshot file is what `raft::SnapshotStore` writes, cut down
//! to what the simulation needs:
//!
//! ```text
//! | last_index u64 | last_term u64 | configuration length u64 | configuration |
//! | image length u64 | image | crc32c u32 |
//! ```
//!
//! (little-endian; the CRC covers every byte before it). The configuration
//! is the one in force at `last_index` (`Membership::encode`), as in
//! `raft::SnapshotStore`'s format 2: a follower that installs the snapshot,
//! or a node that restarts from it, learns the cluster's membership from it
//! (thesis §4.1, chapter 5). The image is the
//! `KvStore`'s own (`StateMachine::snapshot` → `write_to`), so restoring goes
//! through the real `StateMachine::restore`; its pairs are put in key order
//! first (the map's iteration order is not deterministic, and a replay must
//! produce the same bytes). Leaders send the whole file in chunks; the
//! follower verifies length, CRC and header before it installs.

use std::fmt;
use std::rc::Rc;

use raft::{LogIndex, Membership, StateMachine, Term};

use raftkv_store::{KvCommand, KvStore};

/// Index, term and the configuration's length.
const HEADER: usize = 24;
const TRAILER: usize = 4;

/// One snapshot file: its metadata and its bytes (header, configuration,
/// image, CRC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSnapshot {
    pub index: LogIndex,
    pub term: Term,
    /// The configuration in force at `index` (thesis §4.1).
    pub membership: Membership,
    /// Where the image starts in `bytes`.
    image_at: usize,
    pub bytes: Rc<Vec<u8>>,
}

impl SimSnapshot {
    /// The file of `kv`'s state after applying `index` (of term `term`),
    /// with `membership` the configuration in force there.
    pub fn take(kv: &KvStore, index: LogIndex, term: Term, membership: &Membership) -> SimSnapshot {
        let image = canonical_image(kv);
        let config = membership.encode();
        let mut bytes = Vec::with_capacity(HEADER + config.len() + 8 + image.len() + TRAILER);
        bytes.extend_from_slice(&index.to_le_bytes());
        bytes.extend_from_slice(&term.to_le_bytes());
        bytes.extend_from_slice(&(config.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&config);
        bytes.extend_from_slice(&(image.len() as u64).to_le_bytes());
        let image_at = bytes.len();
        bytes.extend_from_slice(&image);
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        SimSnapshot {
            index,
            term,
            membership: membership.clone(),
            image_at,
            bytes: Rc::new(bytes),
        }
    }

    /// Checks a received file: its length, its CRC and its header.
    pub fn verify(bytes: Vec<u8>) -> Result<SimSnapshot, String> {
        if bytes.len() < HEADER + TRAILER {
            return Err(format!("{} bytes is too short for a snapshot", bytes.len()));
        }
        let body_end = bytes.len() - TRAILER;
        let crc = u32::from_le_bytes(bytes[body_end..].try_into().unwrap_or_default());
        if crc32c::crc32c(&bytes[..body_end]) != crc {
            return Err("checksum mismatch".to_string());
        }
        let word = |at: usize| {
            bytes
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| format!("the file ends inside the header word at byte {at}"))
        };
        let (index, term, config_len) = (word(0)?, word(8)?, word(16)?);
        let config_end = usize::try_from(config_len)
            .ok()
            .and_then(|n| HEADER.checked_add(n))
            .filter(|&end| end + 8 <= body_end)
            .ok_or_else(|| {
                format!("header says {config_len} configuration bytes, more than the file holds")
            })?;
        let membership = Membership::decode(&bytes[HEADER..config_end])
            .map_err(|e| format!("the configuration does not decode: {e}"))?;
        let image_len = word(config_end)?;
        let image_at = config_end + 8;
        if image_len != (body_end - image_at) as u64 {
            return Err(format!(
                "header says {image_len} image bytes, the file holds {}",
                body_end - image_at
            ));
        }
        Ok(SimSnapshot {
            index,
            term,
            membership,
            image_at,
            bytes: Rc::new(bytes),
        })
    }

    /// Total size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The state machine image inside the file.
    pub fn image(&self) -> &[u8] {
        &self.bytes[self.image_at..self.bytes.len() - TRAILER]
    }

    /// A `KvStore` restored from the image through `StateMachine::restore`.
    pub fn restore(&self) -> Result<KvStore, String> {
        let mut kv = KvStore::new();
        let mut image = self.image();
        StateMachine::restore(&mut kv, &mut image).map_err(|e| e.to_string())?;
        if !image.is_empty() {
            return Err(format!("{} bytes left after the image", image.len()));
        }
        Ok(kv)
    }
}

/// The `KvStore`'s image with its pairs in key order: equal states, equal
/// bytes.
fn canonical_image(kv: &KvStore) -> Vec<u8> {
    let mut image = Vec::new();
    if let Some(mut writer) = StateMachine::snapshot(kv) {
        writer
            .write_to(&mut image)
            .expect("writing to a Vec cannot fail");
    }
    let Some((mut pairs, rest)) = parse_image(&image) else {
        return image;
    };
    pairs.sort_unstable();
    let mut out = Vec::with_capacity(image.len());
    out.extend_from_slice(&(pairs.len() as u64).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    // The trailer (the store's clock) as it was.
    out.extend_from_slice(rest);
    out
}

/// A digest of a KV state that does not depend on how the map iterates:
/// the wrapping sum of a hash of each pair, so that applying a command can
/// update it from the keys the command touches ([`DigestUpdate`]) instead
/// of hashing the whole map after every entry.
pub fn state_digest(kv: &KvStore) -> u64 {
    let mut image = Vec::new();
    if let Some(mut writer) = StateMachine::snapshot(kv) {
        writer
            .write_to(&mut image)
            .expect("writing to a Vec cannot fail");
    }
    parse_image(&image)
        .map(|(pairs, _)| pairs)
        .unwrap_or_default()
        .into_iter()
        .fold(0u64, |d, (k, v)| d.wrapping_add(pair_digest(k, Some(v))))
}

/// The hash of one pair (0 for a missing key): FNV-1a of the lengths and
/// bytes, then SplitMix64's finaliser so that sums do not cancel easily.
fn pair_digest(key: &[u8], value: Option<&[u8]>) -> u64 {
    let Some(value) = value else {
        return 0;
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [key, value] {
        for &b in (part.len() as u32).to_le_bytes().iter().chain(part) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// Updates a [`state_digest`] across one apply: [`DigestUpdate::before`]
/// takes the touched pairs out, [`DigestUpdate::after`] puts them back in.
pub struct DigestUpdate {
    keys: Vec<Vec<u8>>,
    /// The command may change every key (`FLUSHALL`): digest it all again.
    all: bool,
}

impl DigestUpdate {
    /// The keys the command `data` may change, and the digest without
    /// their pairs. (A command that does not decode changes nothing.)
    pub fn before(kv: &KvStore, digest: u64, data: &[u8]) -> (DigestUpdate, u64) {
        let (mut keys, all): (Vec<Vec<u8>>, bool) = match postcard::from_bytes::<KvCommand>(data) {
            Ok(cmd) => (
                cmd.keys().into_iter().map(<[u8]>::to_vec).collect(),
                cmd.touches_every_key(),
            ),
            Err(_) => (Vec::new(), false),
        };
        keys.sort_unstable();
        keys.dedup();
        let out = keys
            .iter()
            .fold(digest, |d, k| d.wrapping_sub(pair_digest(k, kv.get(k))));
        (DigestUpdate { keys, all }, out)
    }

    /// The digest after the command was applied to `kv`.
    pub fn after(&self, kv: &KvStore, digest: u64) -> u64 {
        if self.all {
            return state_digest(kv);
        }
        self.keys
            .iter()
            .fold(digest, |d, k| d.wrapping_add(pair_digest(k, kv.get(k))))
    }
}

/// The pairs of a `KvStore` image (`count u64`, then per pair
/// `key_len u32, key, value_len u32, value`).
/// Returns the pairs and what follows them (the trailer).
fn parse_image(image: &[u8]) -> Option<Pairs<'_>> {
    let mut at = 0usize;
    let mut take = |n: usize| {
        let s = image.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let count = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let mut pairs = Vec::new();
    for _ in 0..count {
        let klen = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let k = take(klen)?;
        let vlen = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let v = take(vlen)?;
        pairs.push((k, v));
    }
    Some((pairs, image.get(at..).unwrap_or_default()))
}

type Pairs<'a> = (Vec<(&'a [u8], &'a [u8])>, &'a [u8]);

/// Where in snapshotting or installing a node can be crashed. The nemesis
/// crashes at each with a small probability (with `snapshot` and a node
/// fault in the mix); a scenario can arm one to crash a given node there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CrashPoint {
    /// Taking a snapshot: the temp file is written, not yet fsynced. A
    /// crash loses it; the previous snapshot stays.
    SnapshotWritten,
    /// The temp file is fsynced, not yet renamed. A crash still loses it.
    SnapshotSynced,
    /// Renamed, the directory not yet fsynced: a process crash keeps the
    /// snapshot, a power loss may or may not.
    SnapshotRenamed,
    /// Durable (directory fsynced), the log not yet compacted: on restart
    /// the snapshot wins over the entries it covers.
    SnapshotDurable,
    /// The log compacted, in memory and on disk.
    SnapshotCompacted,
    /// Installing: a chunk was accepted, the transfer is not done (the
    /// incoming buffer is volatile and is lost).
    InstallMidTransfer,
    /// The received snapshot is verified and durable; the log is not yet
    /// compacted or reset, the state machine not yet restored.
    InstallStored,
    /// The log was compacted or reset after the installed snapshot; the
    /// leader has not heard "installed" yet.
    InstallLogReset,
}

impl CrashPoint {
    pub const ALL: [CrashPoint; 8] = [
        CrashPoint::SnapshotWritten,
        CrashPoint::SnapshotSynced,
        CrashPoint::SnapshotRenamed,
        CrashPoint::SnapshotDurable,
        CrashPoint::SnapshotCompacted,
        CrashPoint::InstallMidTransfer,
        CrashPoint::InstallStored,
        CrashPoint::InstallLogReset,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::SnapshotWritten => "snapshot temp file written, not synced",
            CrashPoint::SnapshotSynced => "snapshot temp file synced, not renamed",
            CrashPoint::SnapshotRenamed => "snapshot renamed, directory not synced",
            CrashPoint::SnapshotDurable => "snapshot durable, log not compacted",
            CrashPoint::SnapshotCompacted => "log compacted after the snapshot",
            CrashPoint::InstallMidTransfer => "InstallSnapshot mid-transfer",
            CrashPoint::InstallStored => "received snapshot stored, log not reset",
            CrashPoint::InstallLogReset => "log reset to the installed snapshot, not acknowledged",
        }
    }
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkv_store::KvCommand;

    fn kv(pairs: &[(&str, &str)]) -> KvStore {
        let mut kv = KvStore::new();
        for (k, v) in pairs {
            kv.execute(KvCommand::Set {
                key: k.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
            });
        }
        kv
    }

    #[test]
    fn a_snapshot_file_round_trips_and_a_damaged_one_is_refused() {
        let a = kv(&[("k0", "1"), ("k1", "22"), ("k2", "333")]);
        let membership = Membership::new(&[1, 3], &[4]);
        let snap = SimSnapshot::take(&a, 17, 3, &membership);
        let back = SimSnapshot::verify(snap.bytes.to_vec()).unwrap();
        assert_eq!((back.index, back.term), (17, 3));
        assert_eq!(back.membership, membership);
        assert_eq!(state_digest(&back.restore().unwrap()), state_digest(&a));
        let mut bad = snap.bytes.to_vec();
        bad[30] ^= 1;
        assert!(SimSnapshot::verify(bad).is_err());
        let cut = snap.bytes[..snap.len() - 1].to_vec();
        assert!(SimSnapshot::verify(cut).is_err());
    }

    #[test]
    fn the_digest_updated_across_applies_equals_the_digest_of_the_state() {
        use raftkv_store::encode_command;
        let b = |s: &str| s.as_bytes().to_vec();
        let commands = [
            KvCommand::Set {
                key: b("a"),
                value: b("1"),
            },
            KvCommand::IncrBy { key: b("a"), by: 2 },
            KvCommand::IncrBy { key: b("n"), by: 1 },
            KvCommand::MSet {
                pairs: vec![(b("x"), b("1")), (b("x"), b("2")), (b("y"), b("3"))],
            },
            KvCommand::SetIfEq {
                key: b("y"),
                value: b("4"),
                expected: b("3"),
            },
            KvCommand::SetIfEq {
                key: b("y"),
                value: b("5"),
                expected: b("3"),
            },
            KvCommand::Del {
                keys: vec![b("a"), b("a"), b("missing")],
            },
            KvCommand::Rename {
                key: b("x"),
                new_key: b("z"),
                nx: false,
            },
            KvCommand::FlushAll,
            KvCommand::Set {
                key: b("after"),
                value: b("flush"),
            },
        ];
        let mut kv = KvStore::new();
        let mut digest = state_digest(&kv);
        for (i, cmd) in commands.iter().enumerate() {
            let data = encode_command(cmd);
            let (update, partial) = DigestUpdate::before(&kv, digest, &data);
            StateMachine::apply(&mut kv, i as u64 + 1, &data);
            digest = update.after(&kv, partial);
            assert_eq!(digest, state_digest(&kv), "after {cmd:?}");
        }
        let (update, partial) = DigestUpdate::before(&kv, digest, b"garbage");
        assert_eq!(update.after(&kv, partial), digest);
    }

    #[test]
    fn equal_states_give_equal_files() {
        let a = kv(&[("k0", "1"), ("k1", "2"), ("k2", "3"), ("k3", "4")]);
        let b = kv(&[("k3", "4"), ("k2", "3"), ("k1", "2"), ("k0", "1")]);
        let m = Membership::new(&[1, 2, 3], &[]);
        assert_eq!(
            SimSnapshot::take(&a, 5, 1, &m),
            SimSnapshot::take(&b, 5, 1, &m)
        );
    }

    #[test]
    fn the_state_digest_ignores_insertion_order_but_not_content() {
        let a = kv(&[("k0", "1"), ("k1", "2")]);
        let b = kv(&[("k1", "2"), ("k0", "1")]);
        let c = kv(&[("k0", "1"), ("k1", "3")]);
        assert_eq!(state_digest(&a), state_digest(&b));
        assert_ne!(state_digest(&a), state_digest(&c));
        assert_ne!(state_digest(&KvStore::new()), state_digest(&a));
    }
}
