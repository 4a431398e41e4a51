//! What can go wrong in the content store and its cache index.

use std::io;
use std::path::PathBuf;

use super::Digest;

/// Why a store operation failed. A missing or corrupt blob is an error the
/// caller acts on (rebuild, never push), not a crash.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A filesystem operation on a store path failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What kiln was doing ("writing", "renaming", ...).
        action: &'static str,
        /// The path it was doing it to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Text that should be a `sha256:<hex>` digest is not one.
    #[error("{digest:?} is not a sha256 digest (expected sha256:<64 lower-case hex digits>)")]
    InvalidDigest {
        /// The offending text.
        digest: String,
    },
    /// A cache key is not lower-case hex (it names a file, so it is checked).
    #[error("cache key {key:?} is not 1 to 128 lower-case hex digits")]
    InvalidKey {
        /// The offending key.
        key: String,
    },
    /// The blob is not in the store.
    #[error("blob {digest} is missing from the store")]
    BlobMissing {
        /// The digest asked for.
        digest: Digest,
    },
    /// The blob's bytes do not hash to its name: it was corrupted on disk.
    /// The blob has been removed; rebuild it.
    #[error("blob {expected} is corrupt: its content hashes to {found}")]
    DigestMismatch {
        /// The digest the blob is stored under.
        expected: Digest,
        /// What its bytes hash to.
        found: Digest,
    },
    /// The blob's size differs from what its descriptor says.
    #[error("blob {digest} has {found} bytes, its descriptor says {expected}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Size recorded in the descriptor.
        expected: u64,
        /// Size on disk.
        found: u64,
    },
    /// An index entry could not be serialized.
    #[error("encoding cache entry {key}: {source}")]
    Encode {
        /// The cache key.
        key: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Adds the action and path to an `io::Error`.
pub(crate) trait IoContext<T> {
    /// Wraps the error as [`StoreError::Io`].
    fn at(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| StoreError::Io {
            action,
            path: path.into(),
            source,
        })
    }
}
