//! The one tar writer of kiln's unsandboxed layers (the code layer, a
//! one-layer image's file tree): GNU headers, every entry's owner and mtime
//! from [`TarOptions`], no user or group names, the entry's own mode, file
//! contents streamed and counted so that a file changing while it is read
//! fails the layer instead of producing a corrupt tar.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use super::{IoContext as _, LayerError, TarOptions};

/// Writes tar entries with fixed metadata; [`TarWriter::finish`] ends the
/// archive and returns the output.
pub(crate) struct TarWriter<'o, W: Write> {
    tar: tar::Builder<W>,
    opts: &'o TarOptions,
}

impl<'o, W: Write> TarWriter<'o, W> {
    /// Starts an archive on `out` whose entries get `opts`'s owner and
    /// mtime (its `dest` is the caller's business).
    pub(crate) fn new(out: W, opts: &'o TarOptions) -> Self {
        Self {
            tar: tar::Builder::new(out),
            opts,
        }
    }

    /// A directory `name` (ending in `/`); `at` names it in errors.
    pub(crate) fn dir(&mut self, name: &Path, mode: u32, at: &Path) -> Result<(), LayerError> {
        let mut header = header(self.opts, tar::EntryType::Directory, mode);
        self.tar
            .append_data(&mut header, name, io::empty())
            .at("archiving", at)
    }

    /// A regular file `name` holding `content`.
    pub(crate) fn bytes(
        &mut self,
        name: &Path,
        content: &[u8],
        mode: u32,
        at: &Path,
    ) -> Result<(), LayerError> {
        let mut header = header(self.opts, tar::EntryType::Regular, mode);
        header.set_size(content.len() as u64);
        self.tar
            .append_data(&mut header, name, content)
            .at("archiving", at)
    }

    /// A symlink `name` to `target`, stored as is.
    pub(crate) fn symlink(
        &mut self,
        name: &Path,
        target: &Path,
        at: &Path,
    ) -> Result<(), LayerError> {
        let mut header = header(self.opts, tar::EntryType::Symlink, 0o777);
        self.tar
            .append_link(&mut header, name, target)
            .at("archiving", at)
    }

    /// A regular file `name` with the bytes of `source` (symlinks
    /// followed), streamed. `mode` `None` normalizes the file's own: 0o755
    /// when anyone may execute it, else 0o644.
    pub(crate) fn file(
        &mut self,
        name: &Path,
        source: &Path,
        mode: Option<u32>,
    ) -> Result<(), LayerError> {
        let file = File::open(source).at("opening", source)?;
        let meta = file.metadata().at("reading metadata of", source)?;
        let mode = mode.unwrap_or(if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        });
        let expected = meta.len();
        let mut header = header(self.opts, tar::EntryType::Regular, mode);
        header.set_size(expected);
        let mut reader = Counted {
            inner: file.take(expected),
            count: 0,
        };
        self.tar
            .append_data(&mut header, name, &mut reader)
            .at("archiving", source)?;
        if reader.count != expected {
            return Err(LayerError::FileChanged {
                path: source.to_path_buf(),
                expected,
                found: reader.count,
            });
        }
        Ok(())
    }

    /// Ends the archive (two zero blocks) and returns the output; `at`
    /// names the archive in errors.
    pub(crate) fn finish(self, at: &Path) -> Result<W, LayerError> {
        self.tar.into_inner().at("archiving", at)
    }
}

/// A header with everything fixed but type and mode: owner from the
/// options, no user or group names, the fixed mtime.
fn header(opts: &TarOptions, kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(opts.uid);
    header.set_gid(opts.gid);
    header.set_mtime(opts.mtime);
    header.set_size(0);
    header
}

/// Counts the bytes read through it: a file that shrank while it was read
/// would otherwise be padded silently by the tar writer.
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}
