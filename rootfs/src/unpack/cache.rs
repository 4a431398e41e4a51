//! A cache of unpacked roots keyed by the layer chain: one directory per
//! chain, completed atomically (unpack into a temporary directory, write a
//! marker, rename), so a concurrent or interrupted unpack never leaves a
//! half root where a reader could find it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::apply::{Ownership, UnpackOptions, apply_tar};
use super::compression::decompress;
use super::error::{ApplyReport, Result, UnpackError};

/// A layer blob on disk and what the image says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// The (possibly compressed) blob.
    pub path: PathBuf,
    /// Its media type from the manifest, if known (else the magic bytes
    /// decide the compression).
    pub media_type: Option<String>,
    /// `sha256:<hex>` of the uncompressed tar, from the image config's
    /// `rootfs.diff_ids`; checked while unpacking.
    pub diff_id: String,
}

/// The OCI ChainID of an ordered list of diffIDs: the first diffID, then
/// `sha256(previous + " " + next)` for each further layer. `None` for no
/// layers.
pub fn chain_id<S: AsRef<str>>(diff_ids: &[S]) -> Option<String> {
    let (first, rest) = diff_ids.split_first()?;
    let mut chain = first.as_ref().to_string();
    for d in rest {
        let digest = Sha256::digest(format!("{chain} {}", d.as_ref()).as_bytes());
        chain = format!("sha256:{digest:x}");
    }
    Some(chain)
}

/// Applies one layer blob onto `root`, decompressing as needed, and checks
/// that the uncompressed stream hashes to the blob's diffID.
pub fn apply_layer_blob(
    root: &Path,
    blob: &LayerBlob,
    opts: &UnpackOptions,
) -> Result<ApplyReport> {
    let file =
        File::open(&blob.path).map_err(|e| UnpackError::io("opening layer blob", &blob.path, e))?;
    let tar = decompress(file, blob.media_type.as_deref())
        .map_err(|e| UnpackError::io("reading layer blob", &blob.path, e))?;
    let report = apply_tar(root, tar, opts)?;
    if !report.diff_id.eq_ignore_ascii_case(&blob.diff_id) {
        return Err(UnpackError::DiffIdMismatch {
            expected: blob.diff_id.clone(),
            found: report.diff_id,
        });
    }
    Ok(report)
}

/// Unpacked roots, one per layer chain (and ownership mapping), under a
/// directory the caller owns. Roots in the cache are shared: run commands in
/// a copy, never in the cached root itself.
#[derive(Debug, Clone)]
pub struct RootCache {
    dir: PathBuf,
}

/// A root from the cache.
#[derive(Debug, Clone)]
pub struct CachedRoot {
    /// The root directory.
    pub rootfs: PathBuf,
    /// The chain's ChainID.
    pub chain_id: String,
    /// `true` when this call unpacked it, `false` on a cache hit.
    pub unpacked_now: bool,
    /// One report per layer when unpacked now (empty on a hit).
    pub reports: Vec<ApplyReport>,
}

/// The marker written (last) into a completed entry.
const COMPLETE: &str = "complete";
const TMP_PREFIX: &str = ".tmp-";
/// Makes temporary names unique between threads of one process.
static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl RootCache {
    /// A cache in `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Result<RootCache> {
        let dir = dir.into();
        crate::private_dir::create_private_dir(&dir)
            .map_err(|e| UnpackError::io("creating root cache", &dir, e))?;
        Ok(RootCache { dir })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn key(diff_ids: &[&str], opts: &UnpackOptions) -> Option<String> {
        let chain = chain_id(diff_ids)?;
        let hexpart = chain.strip_prefix("sha256:").unwrap_or(&chain).to_string();
        Some(match &opts.ownership {
            Ownership::Map(ids) if ids.is_identity() => hexpart,
            Ownership::Map(ids) => format!("{hexpart}-{}", ids.fingerprint()),
            Ownership::Ignore => format!("{hexpart}-noown"),
        })
    }

    /// The completed root for this chain, if cached.
    pub fn lookup(&self, diff_ids: &[&str], opts: &UnpackOptions) -> Option<PathBuf> {
        let entry = self.dir.join(Self::key(diff_ids, opts)?);
        entry.join(COMPLETE).is_file().then(|| entry.join("rootfs"))
    }

    /// The root for `layers` (bottom first): from the cache, or unpacked now
    /// into a temporary directory that is renamed into place when complete.
    /// When two processes race, the first rename wins and the other's copy
    /// is discarded.
    pub fn get_or_unpack(&self, layers: &[LayerBlob], opts: &UnpackOptions) -> Result<CachedRoot> {
        let ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let chain = chain_id(&ids).unwrap_or_else(|| "empty".to_string());
        let key = Self::key(&ids, opts).unwrap_or_else(|| "empty".to_string());
        let entry = self.dir.join(&key);
        if entry.join(COMPLETE).is_file() {
            return Ok(CachedRoot {
                rootfs: entry.join("rootfs"),
                chain_id: chain,
                unpacked_now: false,
                reports: Vec::new(),
            });
        }
        self.remove_abandoned();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{key}-{}-{nanos}{n}",
            std::process::id()
        ));
        let result = self.unpack_into(&tmp, layers, opts, &chain);
        let reports = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        match std::fs::rename(&tmp, &entry) {
            Ok(()) => {}
            Err(_) if entry.join(COMPLETE).is_file() => {
                // Someone else finished first: use theirs.
                let _ = std::fs::remove_dir_all(&tmp);
                return Ok(CachedRoot {
                    rootfs: entry.join("rootfs"),
                    chain_id: chain,
                    unpacked_now: false,
                    reports: Vec::new(),
                });
            }
            Err(_) => {
                // An incomplete entry (should not exist): replace it.
                let _ = std::fs::remove_dir_all(&entry);
                std::fs::rename(&tmp, &entry)
                    .map_err(|e| UnpackError::io("completing cached root", &entry, e))?;
            }
        }
        Ok(CachedRoot {
            rootfs: entry.join("rootfs"),
            chain_id: chain,
            unpacked_now: true,
            reports,
        })
    }

    fn unpack_into(
        &self,
        tmp: &Path,
        layers: &[LayerBlob],
        opts: &UnpackOptions,
        chain: &str,
    ) -> Result<Vec<ApplyReport>> {
        let rootfs = tmp.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(|e| UnpackError::io("creating", &rootfs, e))?;
        if let Ownership::Map(ids) = &opts.ownership
            && let (Some(u), Some(g)) = (ids.to_outer_uid(0), ids.to_outer_gid(0))
        {
            std::os::unix::fs::lchown(&rootfs, Some(u), Some(g))
                .map_err(|e| UnpackError::io("chown", &rootfs, e))?;
        }
        let mut reports = Vec::with_capacity(layers.len());
        for l in layers {
            reports.push(apply_layer_blob(&rootfs, l, opts)?);
        }
        let marker = tmp.join(COMPLETE);
        let mut f = File::create(&marker).map_err(|e| UnpackError::io("writing", &marker, e))?;
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        writeln!(f, "chain_id={chain}\ndiff_ids={}", diff_ids.join(","))
            .and_then(|()| f.sync_all())
            .map_err(|e| UnpackError::io("writing", &marker, e))?;
        Ok(reports)
    }

    /// Removes temporary directories left by unpacks whose process is gone
    /// (killed mid-way); those of live processes are left alone.
    fn remove_abandoned(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(TMP_PREFIX) else {
                continue;
            };
            let pid = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_follows_the_oci_definition() {
        let a = "sha256:aaaa";
        let b = "sha256:bbbb";
        assert_eq!(chain_id::<&str>(&[]), None);
        assert_eq!(chain_id(&[a]).unwrap(), a);
        let ab = format!("sha256:{:x}", Sha256::digest(b"sha256:aaaa sha256:bbbb"));
        assert_eq!(chain_id(&[a, b]).unwrap(), ab);
        assert_ne!(chain_id(&[b, a]).unwrap(), ab);
    }
}
