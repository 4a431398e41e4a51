//! kiln's local content-addressed store: blobs named by their sha256 under
//! `blobs/sha256/<hex>`, written atomically, plus the cache index that maps a
//! layer's cache key to the descriptor of the blob built for it.
//!
//! Layout under the root (default [`default_cache_dir`]):
//!
//! ```text
//! blobs/sha256/<hex>     blob bytes (temp files beside them start with ".tmp-")
//! index/<key>.json       LayerDescriptor of the layer built for cache key <key>
//! work/<name>/           a build's scratch root or inputs, locked by work/<name>.lock
//! ```
//!
//! Several kiln processes may share a root: every write goes to a temp file
//! in the destination directory and is renamed into place, so a reader sees
//! either nothing or a complete file.

mod descriptor;
mod digest;
mod error;
mod index;
mod scratch;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

pub use descriptor::LayerDescriptor;
pub use digest::{Digest, HashingWriter};
pub use error::{Result, StoreError};
pub use index::{CacheEntry, Check, PrunePolicy, PruneReport};
pub use scratch::{Leftover, Scratch};

use error::IoContext as _;
use kiln_rootfs::private_dir::create_private_dir;

/// Prefix of temp files inside store directories; never a valid blob or key.
const TMP_PREFIX: &str = ".tmp-";

/// A content store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the store at `root`, creating its directories if needed. The
    /// caller picks the root (usually [`default_cache_dir`]) so tests and
    /// CI can point kiln anywhere.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let store = Self { root: root.into() };
        if !store.root.exists() {
            create_private_dir(&store.root).at("creating", store.root.clone())?;
        }
        // What kiln keeps in the store is private to its owner whatever
        // the root's own mode (a `--cache-dir` may be anywhere).
        for dir in [
            store.root.join("blobs"),
            store.blobs_dir(),
            store.index_dir(),
        ] {
            create_private_dir(&dir).at("creating", dir)?;
        }
        Ok(store)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` lives (whether or not it is there yet), for
    /// callers that hand the file to something else (an OCI layout writer).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Whether a file for `digest` exists. Says nothing about its content:
    /// see [`Store::verify`].
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Opens the blob `digest` for reading.
    pub fn open(&self, digest: &Digest) -> Result<File> {
        let path = self.path(digest);
        File::open(&path).map_err(|source| missing_or_io(digest, "opening", path, source))
    }

    /// Re-hashes the blob `digest` and returns its size. A blob whose bytes
    /// do not match its name is deleted (so that nothing can push it later)
    /// and reported as [`StoreError::DigestMismatch`]; a missing one as
    /// [`StoreError::BlobMissing`]. Either way the caller rebuilds it.
    pub fn verify(&self, digest: &Digest) -> Result<u64> {
        let path = self.path(digest);
        let mut file = self.open(digest)?;
        let mut hasher = HashingWriter::new(io::sink());
        io::copy(&mut file, &mut hasher).at("reading", &path)?;
        let (_, found, size) = hasher.finish();
        if &found == digest {
            return Ok(size);
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Io {
                    action: "removing corrupt blob",
                    path,
                    source,
                });
            }
        }
        Err(StoreError::DigestMismatch {
            expected: digest.clone(),
            found,
        })
    }

    /// Stores small in-memory bytes (configs, manifests) and returns their
    /// digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let mut writer = self.blob_writer()?;
        writer.write_all(bytes).at("writing", writer.temp_path())?;
        Ok(writer.commit()?.0)
    }

    /// Starts a streamed blob: write its bytes, then [`BlobWriter::commit`]
    /// names it by their digest. Dropping it uncommitted leaves nothing
    /// behind.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let dir = self.blobs_dir();
        let temp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(&dir)
            .at("creating a temp file in", &dir)?;
        Ok(BlobWriter {
            inner: HashingWriter::new(BufWriter::with_capacity(256 * 1024, temp)),
            dir,
        })
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }
}

fn missing_or_io(digest: &Digest, action: &'static str, path: PathBuf, e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::BlobMissing {
            digest: digest.clone(),
        }
    } else {
        StoreError::Io {
            action,
            path,
            source: e,
        }
    }
}

/// A blob being written: bytes go to a temp file beside the final one and
/// are hashed on the way.
#[derive(Debug)]
pub struct BlobWriter {
    inner: HashingWriter<BufWriter<tempfile::NamedTempFile>>,
    dir: PathBuf,
}

impl BlobWriter {
    fn temp_path(&self) -> PathBuf {
        self.inner.get_ref().get_ref().path().to_path_buf()
    }

    /// Flushes and fsyncs the bytes, renames the file to `blobs/sha256/<hex>`
    /// (replacing a corrupt copy if one was there) and returns the digest
    /// and size.
    pub fn commit(self) -> Result<(Digest, u64)> {
        let temp_path = self.temp_path();
        let Self { inner, dir } = self;
        let (buffered, digest, size) = inner.finish();
        let temp = buffered
            .into_inner()
            .map_err(|e| e.into_error())
            .at("writing", temp_path)?;
        temp.as_file().sync_all().at("syncing", temp.path())?;
        let target = dir.join(digest.hex());
        temp.persist(&target)
            .map_err(|e| e.error)
            .at("renaming a temp file to", &target)?;
        sync_dir(&dir)?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at("syncing directory", dir)
}

/// kiln's default store root: `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`;
/// `None` when neither variable is usable (the caller must then ask for a
/// directory).
pub fn default_cache_dir() -> Option<PathBuf> {
    cache_dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

/// [`default_cache_dir`] from given variable values. A relative
/// `XDG_CACHE_HOME` is ignored, as the XDG spec says.
fn cache_dir_from(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |v: OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    xdg_cache_home
        .and_then(absolute)
        .or_else(|| home.and_then(absolute).map(|h| h.join(".cache")))
        .map(|base| base.join("kiln"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_then_verify_and_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        let digest = store.put_bytes(b"hello").unwrap();
        assert_eq!(digest, Digest::of(b"hello"));
        assert_eq!(store.verify(&digest).unwrap(), 5);
        assert_eq!(fs::read(store.path(&digest)).unwrap(), b"hello");
        assert!(store.open(&digest).is_ok());
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(store.blobs_dir()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn corrupt_blob_is_reported_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        let digest = store.put_bytes(b"good bytes").unwrap();
        fs::write(store.path(&digest), b"evil bytes").unwrap();
        match store.verify(&digest) {
            Err(StoreError::DigestMismatch { expected, found }) => {
                assert_eq!(expected, digest);
                assert_eq!(found, Digest::of(b"evil bytes"));
            }
            other => panic!("expected a digest mismatch, got {other:?}"),
        }
        assert!(!store.contains(&digest), "a corrupt blob must not stay");
        assert!(matches!(
            store.verify(&digest),
            Err(StoreError::BlobMissing { .. })
        ));
        // Writing it again heals the store.
        store.put_bytes(b"good bytes").unwrap();
        assert_eq!(store.verify(&digest).unwrap(), 10);
    }

    #[test]
    fn uncommitted_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path()).unwrap();
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(store.blobs_dir()).unwrap().count(), 0);
    }

    #[test]
    fn default_cache_dir_follows_xdg() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            cache_dir_from(os("/x/cache"), os("/home/u")),
            Some(PathBuf::from("/x/cache/kiln"))
        );
        assert_eq!(
            cache_dir_from(os("relative"), os("/home/u")),
            Some(PathBuf::from("/home/u/.cache/kiln"))
        );
        assert_eq!(
            cache_dir_from(None, os("/home/u")),
            Some(PathBuf::from("/home/u/.cache/kiln"))
        );
        assert_eq!(cache_dir_from(None, None), None);
    }
}
