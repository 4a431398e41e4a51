//! Safe layer unpacking: applies OCI layer tars (gzip, zstd or plain) in
//! order onto a root directory, with whiteouts, and keeps a cache of unpacked
//! roots keyed by the layer chain.
//!
//! # Nothing lands outside the root
//!
//! Every path is resolved component by component inside the root
//! ([`resolve_in_root`]): a symlink met on the way is followed the way the
//! container would follow it (an absolute target restarts at the root, `..`
//! stops at the root), never out. Names with `..` or a leading `/`, and hard
//! links whose target is named that way, are refused (or skipped, see
//! [`OnUnsafe`]). Files are created with `O_CREAT|O_EXCL|O_NOFOLLOW` after
//! removing what was there, so a final symlink is replaced, not followed.
//! Device nodes and FIFOs are never created (counted in the report).
//!
//! # Ownership
//!
//! Files are chowned to the tar's uid/gid **mapped through the sandbox's id
//! map** ([`Ownership::Map`] with [`Sandbox::id_map`](crate::sandbox::Sandbox::id_map)),
//! so the command in the sandbox sees the tar's owners: as root on the host
//! with the `--map-root-user --map-auto` namespace, tar uid 0 stays 0 and tar
//! uid N is written as subordinate id `base + N - 1`. An unprivileged kiln
//! cannot chown to those ids; it first re-executes itself as root of the same
//! kind of user namespace
//! ([`reexec_in_user_namespace`](crate::sandbox::reexec_in_user_namespace)),
//! after which the map is the identity and the kernel does the translation.
//! That keeps one code path for both, lets later layers replace files owned by
//! any id, and lets the snapshot read every file back. Modes (set-uid bits
//! included), mtimes and the xattrs [`crate::xattr`] keeps are kept.

mod apply;
mod cache;
mod compression;
mod error;
mod scoped;

/// Environment variable overriding [`DEFAULT_MAX_BYTES`] (bytes). Here
/// rather than in `apply` because the error that names it needs it too.
pub const MAX_BYTES_ENV: &str = "KILN_MAX_LAYER_BYTES";

pub use apply::{
    DEFAULT_MAX_BYTES, OPAQUE_MARKER, OnUnsafe, Ownership, UnpackOptions, WHITEOUT_PREFIX,
    apply_tar, max_bytes_from_env,
};
pub use cache::{CachedRoot, LayerBlob, RootCache, apply_layer_blob, chain_id};
pub use compression::{BlobCompression, decompress};
pub use error::{ApplyReport, Result, SkipReason, SkippedEntry, UnpackError};
pub use scoped::{Resolved, resolve_in_root};
