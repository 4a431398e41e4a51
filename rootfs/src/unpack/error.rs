//! Errors and reports of layer unpacking.

use std::fmt;
use std::path::PathBuf;

/// Why a tar entry was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The name has a `..` component.
    ParentTraversal,
    /// The name is absolute.
    AbsolutePath,
    /// A hard link names its target with `..` or an absolute path.
    LinkTargetOutside,
    /// A hard link's target does not exist in the root (or is a directory).
    LinkTargetMissing,
    /// A parent component is not a directory, or the symlinks loop.
    BadParent(String),
    /// A whiteout names nothing deletable (`.wh.`, `.wh..`).
    InvalidWhiteout,
    /// Character/block device or FIFO: never created (the sandbox's /dev is
    /// its own).
    DeviceOrFifo,
    /// An entry type kiln does not apply (the tar type byte).
    UnsupportedType(u8),
    /// A PAX sparse file in a format kiln does not read (GNU 0.x).
    UnsupportedSparse(String),
}

impl SkipReason {
    /// Whether the entry tried to reach outside the root (a hostile layer),
    /// as opposed to something merely unsupported.
    pub fn is_unsafe(&self) -> bool {
        matches!(
            self,
            SkipReason::ParentTraversal | SkipReason::AbsolutePath | SkipReason::LinkTargetOutside
        )
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::ParentTraversal => f.write_str("path contains `..`"),
            SkipReason::AbsolutePath => f.write_str("absolute path"),
            SkipReason::LinkTargetOutside => f.write_str("hard link target outside the layer root"),
            SkipReason::LinkTargetMissing => f.write_str("hard link target missing or a directory"),
            SkipReason::BadParent(why) => write!(f, "unusable parent: {why}"),
            SkipReason::InvalidWhiteout => f.write_str("invalid whiteout name"),
            SkipReason::DeviceOrFifo => f.write_str("device node or FIFO"),
            SkipReason::UnsupportedType(t) => write!(f, "unsupported entry type {:?}", *t as char),
            SkipReason::UnsupportedSparse(v) => write!(
                f,
                "PAX sparse file of GNU format {v}, which kiln does not read"
            ),
        }
    }
}

/// One entry that was not applied, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    /// The entry's name as written in the tar (lossy UTF-8).
    pub path: String,
    /// Why.
    pub reason: SkipReason,
}

/// What applying one layer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// `sha256:<hex>` of the uncompressed tar (the layer's diffID).
    pub diff_id: String,
    /// Entries applied (files, directories, links).
    pub applied: u64,
    /// Whiteouts and opaque markers applied.
    pub whiteouts: u64,
    /// Device nodes and FIFOs skipped (always skipped).
    pub devices_skipped: u64,
    /// Entries whose uid/gid the id map does not cover (given the overflow
    /// id, 65534, instead).
    pub unmapped_ids: u64,
    /// Entries not applied, with the reason (devices are only counted).
    pub skipped: Vec<SkippedEntry>,
}

/// Why unpacking failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    /// An entry tried to write outside the root (with [`OnUnsafe::Fail`](super::OnUnsafe::Fail)).
    #[error("refusing layer entry `{path}`: {reason}")]
    UnsafeEntry {
        /// The entry's name.
        path: String,
        /// What is wrong with it.
        reason: SkipReason,
    },

    /// The uncompressed layer does not hash to the diffID it was announced
    /// with.
    #[error("layer diffID mismatch: expected {expected}, found {found}")]
    DiffIdMismatch {
        /// The diffID from the image config.
        expected: String,
        /// The hash of what was read.
        found: String,
    },

    /// Ownership cannot be applied by this process.
    #[error(
        "unpacking with ownership needs root or kiln's user namespace (running as uid {uid}); \
         fix: call `kiln_rootfs::sandbox::reexec_in_user_namespace()` first, or unpack with \
         `Ownership::Ignore`"
    )]
    NeedsRoot {
        /// Effective uid.
        uid: u32,
    },

    /// The layer's files hold more data than the cap allows (a small,
    /// well-compressed layer can expand to fill the disk).
    #[error(
        "the layer writes more than {limit} bytes of file data; refusing it (raise the cap with {env})",
        env = super::MAX_BYTES_ENV
    )]
    TooLarge {
        /// The cap, in bytes.
        limit: u64,
    },

    /// A PAX sparse file's map is not what GNU tar writes.
    #[error("layer entry `{path}`: bad PAX sparse map: {why}")]
    BadSparseMap {
        /// The entry's name.
        path: String,
        /// What is wrong.
        why: String,
    },

    /// Reading the tar stream failed (corrupt or truncated blob).
    #[error("reading layer tar: {source}")]
    Tar {
        /// The error.
        #[source]
        source: std::io::Error,
    },

    /// A filesystem operation failed.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Result of unpacking.
pub type Result<T> = std::result::Result<T, UnpackError>;

impl UnpackError {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        UnpackError::Io {
            context,
            path: path.into(),
            source,
        }
    }
}
