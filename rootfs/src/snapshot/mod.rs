//! Snapshots: the layer a command produced in a root, as Kaniko takes it —
//! a cheap metadata manifest before the command, a second walk after it, and
//! a deterministic tar of what changed (OCI whiteouts for deletions).
//!
//! ```text
//! let before = Manifest::capture(root, &Excludes::default())?;
//! sandbox.run(&spec, OutputRoute::Inherit)?;
//! let summary = snapshot::layer(root, &before, &Excludes::default(), &opts, writer)?;
//! ```
//!
//! An overlay upper directory would give the diff for free, but dpkg fails on
//! overlayfs inside a user namespace (EXDEV on a directory rename), so the
//! walk is the one method that works everywhere.
//!
//! - **Change detection** — see [`EntryMeta::changed`]: files by size, mtime,
//!   mode, owner, inode and ctime (ctime cannot be forged from user space,
//!   so no modification is missed; no content hashing is needed).
//! - **Deletions** — `.wh.NAME`, only at the top of a deleted tree; a
//!   directory deleted and created again (new inode or birth time) is written with an
//!   opaque marker `.wh..wh..opq` and all its current content.
//! - **Order and time** — entries sorted by path, parents (unchanged ones
//!   too, for their mode and owner) before children; mtimes clamped to the
//!   caller's `SOURCE_DATE_EPOCH`; no user/group names; hard links within the
//!   layer kept as links.
//! - **Ids** — written as the sandbox sees them: on-disk ids mapped back
//!   through the sandbox's [`IdMap`](crate::sandbox::IdMap).
//! - **Excluded** — [`SANDBOX_EXCLUDES`] (`/proc`, `/dev`, `/sys`,
//!   `/run/secrets`, `/etc/resolv.conf`, `/etc/hosts`) plus the caller's; the
//!   sandbox also removes the mount points it had to create once the command
//!   ends, so they never show up.
//!
//! Needs to read every file of the root: run as root, real or inside kiln's
//! user namespace.

mod diff;
mod error;
mod manifest;
mod write;

use std::io::Write;
use std::path::Path;

pub use diff::{Change, compare};
pub use error::{Result, SnapshotError};
pub use manifest::{EntryMeta, Excludes, Kind, Manifest, SANDBOX_EXCLUDES};
pub use write::{LayerOptions, Summary, write_layer};

/// Walks `root` again, compares it with `before` and writes the layer of
/// the differences to `out` (the caller compresses and hashes the stream).
pub fn layer<W: Write>(
    root: &Path,
    before: &Manifest,
    excludes: &Excludes,
    opts: &LayerOptions,
    out: W,
) -> Result<Summary> {
    let after = Manifest::capture(root, excludes)?;
    let changes = compare(before, &after);
    write_layer(root, &after, &changes, opts, out)
}
