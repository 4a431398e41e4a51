//! `ADD archive.tar DEST`: a local tar (plain or compressed) re-rooted at
//! DEST and written entry by entry into the layer tar, streamed (a 2 GB
//! entry needs no 2 GB of memory), under the rules that unpacking a base
//! layer applies: no absolute names or `..`, no whiteouts, no device nodes
//! or FIFOs (skipped, as when unpacking), hard links only to an entry the
//! archive held before (re-rooted with the entry), nothing written through
//! a symlink the archive made, GNU sparse entries written as plain files,
//! and PAX (GNU 1.0) sparse entries refused rather than mis-read.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// Opens a local archive ADD may extract, decompressed by its first bytes:
/// gzip and zstd (as layers are), bzip2 and xz (as Docker's ADD also
/// reads), or plain.
///
/// # Errors
///
/// When the file cannot be opened or read.
pub(crate) fn open_archive(path: &Path) -> io::Result<Box<dyn Read>> {
    use std::io::BufRead as _;
    let mut file = io::BufReader::new(std::fs::File::open(path)?);
    let head = file.fill_buf()?;
    if head.starts_with(b"BZh") {
        Ok(Box::new(bzip2::bufread::MultiBzDecoder::new(file)))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Ok(Box::new(lzma_rust2::XzReader::new(file, true)))
    } else {
        kiln_rootfs::unpack::decompress(file, None)
    }
}

/// What ADD refuses, with the archive and the entry.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AddError {
    /// An entry kiln will not write (an unsafe name, a link out of the
    /// destination, an entry over the size limit).
    #[error("{archive}: entry {entry:?} {reason}")]
    Entry {
        /// The archive being added.
        archive: PathBuf,
        /// The entry's name as the archive has it.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// Reading the archive or writing the layer failed.
    #[error("{archive}: {source}")]
    Io {
        /// The archive being added.
        archive: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// Entries ADD copied and those it skipped (device nodes, FIFOs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct AddReport {
    /// Entries written.
    pub entries: u64,
    /// Device nodes and FIFOs left out, by name.
    pub skipped_devices: Vec<String>,
}

/// Writes every entry of `archive` (already decompressed) under `prefix`
/// (a relative directory in the image, empty for `/`) into `out`.
///
/// # Errors
///
/// The first entry the rules refuse, or an I/O error.
pub(crate) fn append_archive<R: Read, W: io::Write>(
    archive_path: &Path,
    archive: R,
    prefix: &str,
    out: &mut tar::Builder<W>,
) -> Result<AddReport, AddError> {
    let mut add = Adder {
        archive: archive_path,
        prefix,
        out,
        report: AddReport::default(),
        // The layer it makes is capped like an unpacked one: a small sparse
        // archive can stand for terabytes of file data.
        cap: kiln_rootfs::unpack::max_bytes_from_env(),
        bytes: 0,
        files: HashSet::new(),
        symlinks: HashSet::new(),
    };
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries().map_err(|e| add.io_err(e))? {
        let mut entry = entry.map_err(|e| add.io_err(e))?;
        add.entry(&mut entry)?;
    }
    Ok(add.report)
}

/// One ADD extraction under way: where its entries go, and what the
/// archive has made so far, which later entries are checked against.
struct Adder<'a, W: io::Write> {
    archive: &'a Path,
    prefix: &'a str,
    out: &'a mut tar::Builder<W>,
    report: AddReport,
    /// The most file data the layer may hold.
    cap: u64,
    /// File data written so far.
    bytes: u64,
    /// Names (inside the archive) of the files and symlinks it made so far.
    files: HashSet<PathBuf>,
    symlinks: HashSet<PathBuf>,
}

impl<W: io::Write> Adder<'_, W> {
    /// An I/O error, naming the archive.
    fn io_err(&self, source: io::Error) -> AddError {
        AddError::Io {
            archive: self.archive.to_path_buf(),
            source,
        }
    }

    /// An entry the rules refuse, naming the archive and the entry.
    fn refuse(&self, entry: &Path, reason: String) -> AddError {
        AddError::Entry {
            archive: self.archive.to_path_buf(),
            entry: entry.to_string_lossy().into_owned(),
            reason,
        }
    }

    /// Copies one entry into the layer, re-rooted under the prefix, by its
    /// kind; device nodes and FIFOs are listed and not counted.
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), AddError> {
        let raw = entry.path().map_err(|e| self.io_err(e))?.into_owned();
        let Some(name) = self.admit(entry, &raw)? else {
            // `./` itself: DEST exists already.
            return Ok(());
        };
        let in_layer = rerooted(self.prefix, &name);
        let header = entry.header().clone();
        let kind = header.entry_type();
        let it = Item {
            entry,
            header,
            raw,
            name,
            in_layer,
        };
        match kind {
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.report.skipped_devices.push(it.in_layer);
                return Ok(());
            }
            EntryType::Symlink => self.symlink(it)?,
            EntryType::Link => self.hard_link(it)?,
            EntryType::Directory => self.dir(it)?,
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => self.file(it)?,
            other => {
                return Err(self.refuse(
                    &it.raw,
                    format!(
                        "has tar entry type {:?}, which ADD does not copy",
                        other.as_byte() as char
                    ),
                ));
            }
        }
        self.report.entries += 1;
        Ok(())
    }

    /// The entry's clean name, once the rules every kind shares allow it:
    /// no whiteout, nothing below a symlink the archive made, no PAX
    /// sparse file. `None` for the archive's root (`./`).
    fn admit<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        raw: &Path,
    ) -> Result<Option<PathBuf>, AddError> {
        let name = clean(raw).map_err(|reason| self.refuse(raw, reason))?;
        if name.as_os_str().is_empty() {
            return Ok(None);
        }
        if name
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".wh."))
        {
            return Err(self.refuse(
                raw,
                "is an OCI whiteout: an added archive may not delete files of the image".into(),
            ));
        }
        if let Some(link) = name
            .ancestors()
            .skip(1)
            .find(|a| self.symlinks.contains(*a))
        {
            return Err(self.refuse(
                raw,
                format!(
                    "goes through {}, a symlink of the archive: it would be written wherever that points",
                    link.display()
                ),
            ));
        }
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                if ext.key().is_ok_and(|k| k.starts_with("GNU.sparse.")) {
                    return Err(self.refuse(
                        raw,
                        "is a PAX sparse file (GNU sparse 1.0), which kiln does not read: create the archive without --sparse".into(),
                    ));
                }
            }
        }
        Ok(Some(name))
    }

    /// A link entry's target as written (empty when it has none).
    fn link_name<R: Read>(&self, entry: &tar::Entry<'_, R>) -> Result<PathBuf, AddError> {
        Ok(entry
            .link_name()
            .map_err(|e| self.io_err(e))?
            .unwrap_or_default()
            .into_owned())
    }

    /// A symlink is copied as it is, and remembered so that no later entry
    /// is written through it.
    fn symlink<R: Read>(&mut self, mut it: Item<'_, '_, R>) -> Result<(), AddError> {
        let target = self.link_name(it.entry)?;
        self.out
            .append_link(&mut it.header, &it.in_layer, &target)
            .map_err(|e| self.io_err(e))?;
        self.symlinks.insert(it.name);
        Ok(())
    }

    /// A hard link may only point at a file the archive held before it; its
    /// target is re-rooted with it.
    fn hard_link<R: Read>(&mut self, mut it: Item<'_, '_, R>) -> Result<(), AddError> {
        let target_raw = self.link_name(it.entry)?;
        let target = clean(&target_raw).map_err(|reason| {
            self.refuse(&it.raw, format!("is a hard link whose target {reason}"))
        })?;
        if !self.files.contains(&target) {
            return Err(self.refuse(
                &it.raw,
                format!(
                    "is a hard link to {}, which is not a file the archive holds before it",
                    target_raw.display()
                ),
            ));
        }
        self.out
            .append_link(&mut it.header, &it.in_layer, rerooted(self.prefix, &target))
            .map_err(|e| self.io_err(e))?;
        self.files.insert(it.name);
        Ok(())
    }

    /// A directory carries no data; a file or directory at a name stops the
    /// name being a symlink of the archive.
    fn dir<R: Read>(&mut self, mut it: Item<'_, '_, R>) -> Result<(), AddError> {
        it.header.set_size(0);
        self.out
            .append_data(&mut it.header, &it.in_layer, io::empty())
            .map_err(|e| self.io_err(e))?;
        self.symlinks.remove(&it.name);
        Ok(())
    }

    /// A file's data is streamed into the layer as a plain file (a GNU
    /// sparse one at its full size), counted against the cap first.
    fn file<R: Read>(&mut self, mut it: Item<'_, '_, R>) -> Result<(), AddError> {
        // Sparse: the reader yields the whole file, holes as zeros.
        let size = match (it.header.entry_type(), it.header.as_gnu()) {
            (EntryType::GNUSparse, Some(gnu)) => gnu.real_size().map_err(|e| self.io_err(e))?,
            _ => it.entry.size(),
        };
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > self.cap {
            return Err(self.refuse(
                &it.raw,
                format!(
                    "takes the archive past {} bytes of file data, the most one layer may hold ({})",
                    self.cap,
                    kiln_rootfs::unpack::MAX_BYTES_ENV
                ),
            ));
        }
        it.header.set_entry_type(EntryType::Regular);
        it.header.set_size(size);
        self.out
            .append_data(&mut it.header, &it.in_layer, it.entry)
            .map_err(|e| self.io_err(e))?;
        self.files.insert(it.name.clone());
        self.symlinks.remove(&it.name);
        Ok(())
    }
}

/// One archive entry on its way into the layer: the entry, the header it
/// will be written with, its name as written and cleaned, and its path in
/// the layer.
struct Item<'e, 'r, R: Read> {
    entry: &'e mut tar::Entry<'r, R>,
    header: tar::Header,
    raw: PathBuf,
    name: PathBuf,
    in_layer: String,
}

/// An entry name inside the archive, `./` and empty parts dropped.
fn clean(raw: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err("is absolute: an added archive's names are relative".into());
            }
            Component::ParentDir => {
                return Err("leads out of the destination ('..')".into());
            }
        }
    }
    Ok(out)
}

fn rerooted(prefix: &str, name: &Path) -> String {
    if prefix.is_empty() {
        name.to_string_lossy().into_owned()
    } else {
        format!("{prefix}/{}", name.to_string_lossy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of (name, kind, data or link target).
    fn archive(entries: &[(&str, EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            match kind {
                EntryType::Symlink | EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, name, data).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    // Names the builder would refuse are written raw.
                    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                    h.set_cksum();
                    b.append(&h, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn add(
        entries: &[(&str, EntryType, &str)],
        prefix: &str,
    ) -> Result<Vec<(String, String)>, AddError> {
        let tar = archive(entries);
        let mut out = tar::Builder::new(Vec::new());
        append_archive(Path::new("a.tar"), &tar[..], prefix, &mut out)?;
        let bytes = out.into_inner().unwrap();
        let mut read = tar::Archive::new(&bytes[..]);
        Ok(read
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned());
                let mut data = String::new();
                e.read_to_string(&mut data).unwrap();
                (name, link.unwrap_or(data))
            })
            .collect())
    }

    #[test]
    fn entries_are_re_rooted_hard_links_with_them_and_symlinks_kept() {
        let got = add(
            &[
                ("a", EntryType::Regular, "A"),
                ("b", EntryType::Link, "a"),
                ("l", EntryType::Symlink, "/etc/passwd"),
            ],
            "opt",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("opt/a".into(), "A".into()),
                ("opt/b".into(), "opt/a".into()),
                ("opt/l".into(), "/etc/passwd".into()),
            ]
        );
    }

    #[test]
    fn hostile_entries_are_refused_with_their_name() {
        for (entries, says) in [
            (vec![("x", EntryType::Link, "/tmp/x")], "absolute"),
            (vec![("x", EntryType::Link, "../../../../tmp/x")], "'..'"),
            (
                vec![("x", EntryType::Link, "etc/passwd")],
                "not a file the archive holds",
            ),
            (vec![("../x", EntryType::Regular, "X")], "'..'"),
            (vec![("d/.wh.f", EntryType::Regular, "")], "whiteout"),
            (
                vec![
                    ("d", EntryType::Symlink, "/etc"),
                    ("d/cron", EntryType::Regular, "X"),
                ],
                "goes through d",
            ),
        ] {
            let err = add(&entries, "").unwrap_err().to_string();
            assert!(err.contains(says), "{entries:?}: {err}");
            assert!(err.starts_with("a.tar: entry"), "{err}");
        }
    }

    #[test]
    fn devices_and_fifos_are_skipped_like_when_unpacking() {
        let tar = archive(&[
            ("null", EntryType::Char, ""),
            ("p", EntryType::Fifo, ""),
            ("f", EntryType::Regular, "F"),
        ]);
        let mut out = tar::Builder::new(Vec::new());
        let r = append_archive(Path::new("a.tar"), &tar[..], "", &mut out).unwrap();
        assert_eq!(r.entries, 1);
        assert_eq!(r.skipped_devices, vec!["null".to_string(), "p".to_string()]);
    }
}
