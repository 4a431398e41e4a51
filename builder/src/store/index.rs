//! The cache index: cache key (hex, computed by the planner from a layer's
//! resolved inputs) -> descriptor of the layer built from them, one small
//! JSON file per key so that concurrent builds never rewrite a shared file.
//! An entry's file mtime is its "last used" time: set on insert, refreshed on
//! every hit, read by `kiln cache ls` and `kiln cache prune`.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::error::IoContext as _;
use super::{Digest, LayerDescriptor, Result, Store, StoreError, TMP_PREFIX, sync_dir};

/// How much [`Store::lookup`] checks the blob behind a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Check {
    /// The blob exists and has the recorded size: one `stat`, the default
    /// for planning a build.
    #[default]
    Size,
    /// The blob is re-hashed too (`kiln build --verify-cache`, and before a
    /// push of a blob kiln did not just write).
    Full,
}

/// One entry of the index, for `kiln cache ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The cache key.
    pub key: String,
    /// The layer built for it.
    pub descriptor: LayerDescriptor,
    /// When it was inserted or last hit.
    pub last_used: SystemTime,
    /// Whether the blob file is still in the store.
    pub blob_present: bool,
}

/// What `kiln cache prune` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrunePolicy {
    /// Every entry and every blob.
    All,
    /// Entries not used within this long, then the blobs no remaining entry
    /// refers to (blobs written within this long are kept, as they may
    /// belong to a build that has not recorded its entry yet).
    OlderThan(Duration),
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneReport {
    /// Index entries removed.
    pub entries_removed: usize,
    /// Blob files removed.
    pub blobs_removed: usize,
    /// Bytes of blobs removed.
    pub bytes_freed: u64,
}

/// Temp files older than this are leftovers of a crashed write.
const STALE_TEMP: Duration = Duration::from_secs(3600);

impl Store {
    /// Records that `key` built `descriptor` (atomically replacing any older
    /// entry).
    pub fn insert(&self, key: &str, descriptor: &LayerDescriptor) -> Result<()> {
        let path = self.entry_path(key)?;
        let json = serde_json::to_vec_pretty(descriptor).map_err(|source| StoreError::Encode {
            key: key.to_owned(),
            source,
        })?;
        let dir = self.index_dir();
        let mut temp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(&dir)
            .at("creating a temp file in", &dir)?;
        temp.write_all(&json).at("writing", temp.path())?;
        temp.as_file().sync_all().at("syncing", temp.path())?;
        temp.persist(&path)
            .map_err(|e| e.error)
            .at("renaming a temp file to", &path)?;
        sync_dir(&dir)
    }

    /// The layer built for `key`, if its blob is still usable. An entry whose
    /// blob is missing, has the wrong size, or (with [`Check::Full`]) the
    /// wrong content is a miss: the caller rebuilds and re-inserts. A hit
    /// refreshes the entry's last-used time.
    pub fn lookup(&self, key: &str, check: Check) -> Result<Option<LayerDescriptor>> {
        let path = self.entry_path(key)?;
        let Some(descriptor) = read_entry(&path)? else {
            return Ok(None);
        };
        let size_ok = match fs::metadata(self.path(&descriptor.digest)) {
            Ok(meta) => meta.is_file() && meta.len() == descriptor.size,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(source) => {
                return Err(StoreError::Io {
                    action: "reading metadata of",
                    path: self.path(&descriptor.digest),
                    source,
                });
            }
        };
        if !size_ok {
            return Ok(None);
        }
        if check == Check::Full {
            match self.verify(&descriptor.digest) {
                Ok(_) => {}
                Err(StoreError::BlobMissing { .. } | StoreError::DigestMismatch { .. }) => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        touch(&path);
        Ok(Some(descriptor))
    }

    /// Every readable entry, sorted by key. Unreadable entry files are
    /// skipped (prune removes them).
    pub fn list(&self) -> Result<Vec<CacheEntry>> {
        let mut entries = Vec::new();
        for (key, path) in self.entry_files()? {
            let Ok(Some(descriptor)) = read_entry(&path) else {
                continue;
            };
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            entries.push(CacheEntry {
                blob_present: self.contains(&descriptor.digest),
                last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                key,
                descriptor,
            });
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    /// Removes entries (all, or those not used within a duration) and then
    /// the blobs that no remaining entry refers to. Temp files are removed
    /// only once stale (an hour), so a build in flight is never broken.
    pub fn prune(&self, policy: PrunePolicy) -> Result<PruneReport> {
        let now = SystemTime::now();
        let expired = |modified: SystemTime| match policy {
            PrunePolicy::All => true,
            PrunePolicy::OlderThan(age) => now.duration_since(modified).unwrap_or_default() > age,
        };
        let mut report = PruneReport::default();
        let mut kept = BTreeSet::new();
        let mut dropped = BTreeSet::new();

        for (_, path) in self.entry_files()? {
            let modified = mtime(&path)?;
            let descriptor = read_entry(&path).ok().flatten();
            match descriptor {
                Some(d) if !expired(modified) => {
                    kept.insert(d.digest);
                    continue;
                }
                Some(d) => {
                    dropped.insert(d.digest);
                }
                None => {}
            }
            remove(&path)?;
            report.entries_removed += 1;
        }
        remove_stale_temps(&self.index_dir(), now)?;

        let blobs_dir = self.blobs_dir();
        for item in fs::read_dir(&blobs_dir).at("listing", &blobs_dir)? {
            let item = item.at("listing", &blobs_dir)?;
            let name = item.file_name();
            let Some(digest) = name.to_str().and_then(Digest::from_hex) else {
                continue;
            };
            if kept.contains(&digest) {
                continue;
            }
            let path = item.path();
            let meta = fs::metadata(&path).at("reading metadata of", &path)?;
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().at("reading mtime of", &path)?;
            if dropped.contains(&digest) || expired(modified) {
                remove(&path)?;
                report.blobs_removed += 1;
                report.bytes_freed += meta.len();
            }
        }
        remove_stale_temps(&blobs_dir, now)?;
        // Layer listings and RUN cache mounts: derived or disposable, kept
        // by the same age rule (all of them with `All`).
        for dir in [self.root().join("listings"), self.root().join("run-caches")] {
            let Ok(items) = fs::read_dir(&dir) else {
                continue;
            };
            for item in items.flatten() {
                let path = item.path();
                if expired(mtime(&path)?) {
                    report.bytes_freed += kiln_rootfs::private_dir::bytes_under(&path);
                    let gone = if path.is_dir() {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                    gone.at("removing", &path)?;
                }
            }
        }
        Ok(report)
    }

    fn entry_path(&self, key: &str) -> Result<PathBuf> {
        if !is_key(key) {
            return Err(StoreError::InvalidKey {
                key: key.to_owned(),
            });
        }
        Ok(self.index_dir().join(format!("{key}.json")))
    }

    /// `(key, path)` of every index file named like an entry.
    fn entry_files(&self) -> Result<Vec<(String, PathBuf)>> {
        let dir = self.index_dir();
        let mut files = Vec::new();
        for item in fs::read_dir(&dir).at("listing", &dir)? {
            let item = item.at("listing", &dir)?;
            let name = item.file_name();
            let Some(key) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if is_key(key) {
                files.push((key.to_owned(), item.path()));
            }
        }
        Ok(files)
    }
}

fn is_key(key: &str) -> bool {
    (1..=128).contains(&key.len()) && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// An entry's descriptor; `None` when the file is absent or is not a valid
/// entry (a cache miss, never an error: the layer is simply rebuilt).
fn read_entry(path: &Path) -> Result<Option<LayerDescriptor>> {
    match fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            action: "reading",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Marks an entry used now. Best effort: a read-only cache still serves hits.
fn touch(path: &Path) {
    if let Ok(file) = File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

fn mtime(path: &Path) -> Result<SystemTime> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .at("reading mtime of", path)
}

/// Removes a file; one already gone (another prune) is fine.
fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::Io {
            action: "removing",
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn remove_stale_temps(dir: &Path, now: SystemTime) -> Result<()> {
    for item in fs::read_dir(dir).at("listing", dir)? {
        let item = item.at("listing", dir)?;
        let is_temp = item
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TMP_PREFIX));
        if !is_temp {
            continue;
        }
        let path = item.path();
        let age = now.duration_since(mtime(&path)?).unwrap_or_default();
        if age > STALE_TEMP {
            remove(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::media;

    fn layer(store: &Store, bytes: &[u8]) -> LayerDescriptor {
        let digest = store.put_bytes(bytes).unwrap();
        LayerDescriptor {
            media_type: media::OCI_LAYER_GZIP.to_owned(),
            digest,
            size: bytes.len() as u64,
            diff_id: Digest::of(b"uncompressed"),
        }
    }

    fn set_mtime(path: &Path, ago: Duration) {
        let file = File::options().append(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - ago).unwrap();
    }

    const KEY: &str = "00ff";

    #[test]
    fn insert_then_lookup_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        assert_eq!(store.lookup(KEY, Check::Size).unwrap(), None);
        let d = layer(&store, b"layer bytes");
        store.insert(KEY, &d).unwrap();
        assert_eq!(store.lookup(KEY, Check::Size).unwrap(), Some(d.clone()));
        assert_eq!(store.lookup(KEY, Check::Full).unwrap(), Some(d.clone()));
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, KEY);
        assert_eq!(listed[0].descriptor, d);
        assert!(listed[0].blob_present);
    }

    #[test]
    fn keys_that_are_not_hex_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        for bad in ["", "../x", "ABCD", "a b", &"a".repeat(129)] {
            assert!(
                matches!(
                    store.lookup(bad, Check::Size),
                    Err(StoreError::InvalidKey { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn index_write_is_atomic_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        let first = layer(&store, b"one");
        let second = layer(&store, b"two");
        store.insert(KEY, &first).unwrap();
        store.insert(KEY, &second).unwrap();
        let names: Vec<String> = fs::read_dir(store.index_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![format!("{KEY}.json")]);
        assert_eq!(store.lookup(KEY, Check::Size).unwrap(), Some(second));
    }

    #[test]
    fn missing_or_corrupt_blob_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        let d = layer(&store, b"original content");
        store.insert(KEY, &d).unwrap();

        // Same size, different bytes: only a full check sees it.
        fs::write(store.path(&d.digest), b"tampered content").unwrap();
        assert_eq!(store.lookup(KEY, Check::Size).unwrap(), Some(d.clone()));
        assert_eq!(store.lookup(KEY, Check::Full).unwrap(), None);
        assert!(!store.contains(&d.digest), "the corrupt blob is removed");

        // Missing blob: a miss even with the cheap check.
        assert_eq!(store.lookup(KEY, Check::Size).unwrap(), None);

        // Truncated blob: the size check catches it.
        fs::write(store.path(&d.digest), b"short").unwrap();
        assert_eq!(store.lookup(KEY, Check::Size).unwrap(), None);
    }

    #[test]
    fn garbage_entry_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        fs::write(store.index_dir().join(format!("{KEY}.json")), b"{not json").unwrap();
        assert_eq!(store.lookup(KEY, Check::Size).unwrap(), None);
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn prune_all_empties_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        let d = layer(&store, b"abc");
        store.insert(KEY, &d).unwrap();
        store.put_bytes(b"unreferenced").unwrap();
        let report = store.prune(PrunePolicy::All).unwrap();
        assert_eq!(report.entries_removed, 1);
        assert_eq!(report.blobs_removed, 2);
        assert_eq!(report.bytes_freed, 3 + 12);
        assert!(store.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(store.blobs_dir()).unwrap().count(), 0);
    }

    #[test]
    fn prune_removes_listings_and_run_caches_by_the_same_rule() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        let listing = dir.path().join("listings/abc.json");
        let cache = dir.path().join("run-caches/0123/pip");
        fs::create_dir_all(listing.parent().unwrap()).unwrap();
        fs::create_dir_all(&cache).unwrap();
        fs::write(&listing, b"{}").unwrap();
        fs::write(cache.join("wheel"), b"12345").unwrap();
        store
            .prune(PrunePolicy::OlderThan(Duration::from_secs(3600)))
            .unwrap();
        assert!(listing.exists() && cache.exists());
        let report = store.prune(PrunePolicy::All).unwrap();
        assert!(!listing.exists() && !dir.path().join("run-caches/0123").exists());
        assert_eq!(report.bytes_freed, 5);
    }

    #[test]
    fn prune_older_than_keeps_recent_entries_and_their_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        let day = Duration::from_secs(86_400);

        let old = layer(&store, b"old layer");
        store.insert("0001", &old).unwrap();
        set_mtime(&store.entry_path("0001").unwrap(), 3 * day);

        let fresh = layer(&store, b"fresh layer");
        store.insert("0002", &fresh).unwrap();
        // The fresh entry's blob is old on disk but still referenced.
        set_mtime(&store.path(&fresh.digest), 3 * day);

        let orphan_old = store.put_bytes(b"orphan, old").unwrap();
        set_mtime(&store.path(&orphan_old), 3 * day);
        let orphan_new = store.put_bytes(b"orphan, just written").unwrap();

        let stale_temp = store.blobs_dir().join(".tmp-crashed");
        fs::write(&stale_temp, b"half").unwrap();
        set_mtime(&stale_temp, 2 * STALE_TEMP);
        let live_temp = store.blobs_dir().join(".tmp-in-flight");
        fs::write(&live_temp, b"half").unwrap();

        let report = store.prune(PrunePolicy::OlderThan(day)).unwrap();
        assert_eq!(report.entries_removed, 1);
        assert_eq!(report.blobs_removed, 2, "old entry's blob and old orphan");
        assert_eq!(store.lookup("0001", Check::Size).unwrap(), None);
        assert_eq!(store.lookup("0002", Check::Size).unwrap(), Some(fresh));
        assert!(!store.contains(&old.digest));
        assert!(!store.contains(&orphan_old));
        assert!(
            store.contains(&orphan_new),
            "may belong to a build in flight"
        );
        assert!(!stale_temp.exists());
        assert!(live_temp.exists());
    }

    #[test]
    fn lookup_refreshes_last_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        let d = layer(&store, b"abc");
        store.insert(KEY, &d).unwrap();
        let path = store.entry_path(KEY).unwrap();
        set_mtime(&path, Duration::from_secs(86_400));
        let before = store.list().unwrap()[0].last_used;
        store.lookup(KEY, Check::Size).unwrap();
        let after = store.list().unwrap()[0].last_used;
        assert!(after > before);
    }
}
