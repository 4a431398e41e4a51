//! Layers built without a sandbox: the code layer (a build context as a
//! deterministic tar, `.dockerignore` applied), a [`FileTree`] given entry
//! by entry, and the streaming pass that turns any layer's tar into a
//! compressed, digested blob in the store.
//!
//! ```no_run
//! # fn main() -> Result<(), kiln_builder::layer::LayerError> {
//! use kiln_builder::layer::{build_code_layer, CodeLayerOptions};
//! use kiln_builder::store::Store;
//!
//! let store = Store::new("/tmp/kiln-cache")?;
//! let layer = build_code_layer(&store, "project".as_ref(), &CodeLayerOptions::default())?;
//! let how = if layer.reused { "cached" } else { "built" };
//! println!("{} ({} bytes, {how})", layer.descriptor.digest, layer.descriptor.size);
//! for warning in &layer.warnings {
//!     eprintln!("warning: {warning}");
//! }
//! # Ok(()) }
//! ```

mod archive;
pub mod context;
pub mod dockerignore;
mod pgzip;
pub mod stream;
pub mod tree;

use std::io;
use std::path::{Path, PathBuf};

pub use context::{Context, ContextWarning, TarOptions};
pub use dockerignore::DockerIgnore;
pub use stream::{Compression, LayerWriter};
pub use tree::{FileTree, TreeEntry};

pub use crate::image::media;
use crate::store::{Check, HashingWriter, LayerDescriptor, Store, StoreError};

/// Why a layer could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// Reading the build context failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What kiln was doing.
        action: &'static str,
        /// The file it was doing it to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Walking the build context failed (permissions, a vanished directory).
    #[error("walking the build context: {source}")]
    Walk {
        /// The walker's error, which names the path.
        #[source]
        source: ignore::Error,
    },
    /// A `.dockerignore` pattern Docker would also reject.
    #[error("{}:{line}: bad pattern {pattern:?}: {reason}", file.display())]
    BadPattern {
        /// The ignore file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// The line as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The destination directory is not usable.
    #[error("destination {dest:?} is not usable: {reason}")]
    BadDestination {
        /// As given.
        dest: String,
        /// Why not.
        reason: &'static str,
    },
    /// A file changed size while it was being archived; rebuild when the
    /// context is quiet.
    #[error(
        "{} changed while it was being archived ({expected} bytes expected, {found} read)",
        path.display()
    )]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// Size when archiving started.
        expected: u64,
        /// Bytes actually read.
        found: u64,
    },
    /// Compressing or writing the blob failed (disk full, ...).
    #[error("compressing the layer: {source}")]
    Compress {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The compressor thread panicked (a bug).
    #[error("the layer compressor thread panicked")]
    CompressorPanicked,
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Adds the action and path to an `io::Error`.
pub(crate) trait IoContext<T> {
    /// Wraps the error as [`LayerError::Io`].
    fn at(self, action: &'static str, path: &Path) -> Result<T, LayerError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T, LayerError> {
        self.map_err(|source| LayerError::Io {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Everything the code layer depends on besides the files themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeLayerOptions {
    /// Where the context lands and with which owner and mtime.
    pub tar: TarOptions,
    /// An ignore file other than `<context>/.dockerignore`.
    pub ignore_file: Option<PathBuf>,
    /// Blob compression.
    pub compression: Compression,
}

/// A stored code layer and what the user should be told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeLayer {
    /// The blob in the store.
    pub descriptor: LayerDescriptor,
    /// The store's key for it: the tar's diffID and the compression, so an
    /// unchanged context is found whatever else changed.
    pub key: String,
    /// Whether the layer came from the cache (nothing was compressed).
    pub reused: bool,
    /// Skipped special files, a large context without `.dockerignore`.
    pub warnings: Vec<ContextWarning>,
    /// Entries (files, directories, symlinks) from the context.
    pub entries: usize,
    /// Bytes of regular files archived.
    pub file_bytes: u64,
    /// The entries' paths relative to the context root, in tar order (for
    /// `kiln build --explain`'s per-file hashes).
    pub paths: Vec<PathBuf>,
}

/// Builds the code layer from `context_dir` into `store`, or finds it in
/// the store's cache: one walk, then the tar is hashed (cheap, nothing
/// stored) and compressed only when no layer with that diffID and
/// compression is cached. Nothing is held in memory but the list of
/// paths. What `kiln build` runs for every code layer.
pub fn build_code_layer(
    store: &Store,
    context_dir: &Path,
    opts: &CodeLayerOptions,
) -> Result<CodeLayer, LayerError> {
    let context = Context::scan(context_dir, opts.ignore_file.as_deref())?;
    let hashed = context.write_tar(HashingWriter::new(io::sink()), &opts.tar)?;
    let (_, diff_id, _) = hashed.finish();
    let key = crate::keys::code_layer(diff_id.as_str(), opts.compression);
    let (descriptor, reused) = match store.lookup(&key, Check::Full)? {
        Some(descriptor) => (descriptor, true),
        None => {
            let mut writer = LayerWriter::new(store, opts.compression)?;
            if let Err(e) = context.write_tar(&mut writer, &opts.tar) {
                // "Compressor stopped" hides the cause: prefer the compressor's.
                return Err(writer.abort().unwrap_or(e));
            }
            let descriptor = writer.finish()?;
            store.insert(&key, &descriptor)?;
            (descriptor, false)
        }
    };
    Ok(CodeLayer {
        descriptor,
        key,
        reused,
        warnings: context.warnings().to_vec(),
        entries: context.paths().count(),
        file_bytes: context.file_bytes(),
        paths: context.paths().map(Path::to_path_buf).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_context_at_two_paths_gives_the_same_digest() {
        let mut digests = Vec::new();
        for _ in 0..2 {
            // A store each: the second context must build, not hit the cache.
            let store_dir = tempfile::tempdir().unwrap();
            let store = Store::new(store_dir.path()).unwrap();
            let ctx = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(ctx.path().join("src")).unwrap();
            std::fs::write(ctx.path().join("src/main.py"), b"print(1)\n").unwrap();
            std::fs::write(ctx.path().join(".dockerignore"), b"*.log\n").unwrap();
            std::fs::write(ctx.path().join("debug.log"), b"noise").unwrap();
            for compression in [Compression::gzip(), Compression::zstd()] {
                let opts = CodeLayerOptions {
                    tar: TarOptions {
                        dest: "/app".into(),
                        ..TarOptions::default()
                    },
                    compression,
                    ..CodeLayerOptions::default()
                };
                let layer = build_code_layer(&store, ctx.path(), &opts).unwrap();
                assert_eq!(layer.entries, 3);
                digests.push(layer.descriptor);
            }
        }
        assert_eq!(digests[0], digests[2]);
        assert_eq!(digests[1], digests[3]);
        assert_eq!(
            digests[0].diff_id, digests[1].diff_id,
            "same tar either way"
        );
        assert_ne!(digests[0].digest, digests[1].digest);
    }

    #[test]
    fn an_unchanged_context_is_found_in_the_cache() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::new(store_dir.path()).unwrap();
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("main.py"), b"print(1)\n").unwrap();
        let opts = CodeLayerOptions::default();
        let first = build_code_layer(&store, ctx.path(), &opts).unwrap();
        assert!(!first.reused);
        assert_eq!(first.paths, [PathBuf::from("main.py")]);
        let again = build_code_layer(&store, ctx.path(), &opts).unwrap();
        assert!(again.reused);
        assert_eq!(
            again,
            CodeLayer {
                reused: true,
                ..first.clone()
            }
        );
        std::fs::write(ctx.path().join("main.py"), b"print(2)\n").unwrap();
        let changed = build_code_layer(&store, ctx.path(), &opts).unwrap();
        assert!(!changed.reused);
        assert_ne!(changed.key, first.key);
    }
}
