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
pub fn open_archive(path: &Path) -> io::Result<Box<dyn Read>> {
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
pub enum AddError {
    #[error("{archive}: entry {entry:?} {reason}")]
    Entry {
        archive: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{archive}: {source}")]
    Io {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Entries ADD copied and those it skipped (device nodes, FIFOs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AddReport {
    pub entries: u64,
    pub skipped_devices: Vec<String>,
}

/// Writes every entry of `archive` (already decompressed) under `prefix`
/// (a relative directory in the image, empty for `/`) into `out`.
///
/// # Errors
///
/// The first entry the rules refuse, or an I/O error.
pub fn append_archive<R: Read, W: io::Write>(
    archive_path: &Path,
    archive: R,
    prefix: &str,
    out: &mut tar::Builder<W>,
) -> Result<AddReport, AddError> {
    let io_err = |source: io::Error| AddError::Io {
        archive: archive_path.to_path_buf(),
        source,
    };
    let refuse = |entry: &Path, reason: String| AddError::Entry {
        archive: archive_path.to_path_buf(),
        entry: entry.to_string_lossy().into_owned(),
        reason,
    };
    let mut report = AddReport::default();
    // The layer it makes is capped like an unpacked one: a small sparse
    // archive can stand for terabytes of file data.
    let cap = kiln_rootfs::unpack::max_bytes_from_env();
    let mut bytes = 0u64;
    // Names (inside the archive) of the files and symlinks it made so far.
    let mut files: HashSet<PathBuf> = HashSet::new();
    let mut symlinks: HashSet<PathBuf> = HashSet::new();
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let raw = entry.path().map_err(io_err)?.into_owned();
        let name = clean(&raw).map_err(|reason| refuse(&raw, reason))?;
        if name.as_os_str().is_empty() {
            // `./` itself: DEST exists already.
            continue;
        }
        if name
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".wh."))
        {
            return Err(refuse(
                &raw,
                "is an OCI whiteout: an added archive may not delete files of the image".into(),
            ));
        }
        if let Some(link) = name.ancestors().skip(1).find(|a| symlinks.contains(*a)) {
            return Err(refuse(
                &raw,
                format!(
                    "goes through {}, a symlink of the archive: it would be written wherever that points",
                    link.display()
                ),
            ));
        }
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                if ext.key().is_ok_and(|k| k.starts_with("GNU.sparse.")) {
                    return Err(refuse(
                        &raw,
                        "is a PAX sparse file (GNU sparse 1.0), which kiln does not read: create the archive without --sparse".into(),
                    ));
                }
            }
        }
        let in_layer = rerooted(prefix, &name);
        let mut header = entry.header().clone();
        let kind = header.entry_type();
        match kind {
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                report.skipped_devices.push(in_layer);
                continue;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(io_err)?
                    .unwrap_or_default()
                    .into_owned();
                out.append_link(&mut header, &in_layer, &target)
                    .map_err(io_err)?;
                symlinks.insert(name.clone());
            }
            EntryType::Link => {
                let target_raw = entry
                    .link_name()
                    .map_err(io_err)?
                    .unwrap_or_default()
                    .into_owned();
                let target = clean(&target_raw).map_err(|reason| {
                    refuse(&raw, format!("is a hard link whose target {reason}"))
                })?;
                if !files.contains(&target) {
                    return Err(refuse(
                        &raw,
                        format!(
                            "is a hard link to {}, which is not a file the archive holds before it",
                            target_raw.display()
                        ),
                    ));
                }
                out.append_link(&mut header, &in_layer, rerooted(prefix, &target))
                    .map_err(io_err)?;
                files.insert(name.clone());
            }
            EntryType::Directory => {
                header.set_size(0);
                out.append_data(&mut header, &in_layer, io::empty())
                    .map_err(io_err)?;
                symlinks.remove(&name);
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                // Sparse: the reader yields the whole file, holes as zeros.
                let size = match (kind, header.as_gnu()) {
                    (EntryType::GNUSparse, Some(gnu)) => gnu.real_size().map_err(io_err)?,
                    _ => entry.size(),
                };
                bytes = bytes.saturating_add(size);
                if bytes > cap {
                    return Err(refuse(
                        &raw,
                        format!(
                            "takes the archive past {cap} bytes of file data, the most one layer may hold ({})",
                            kiln_rootfs::unpack::MAX_BYTES_ENV
                        ),
                    ));
                }
                header.set_entry_type(EntryType::Regular);
                header.set_size(size);
                out.append_data(&mut header, &in_layer, &mut entry)
                    .map_err(io_err)?;
                files.insert(name.clone());
                symlinks.remove(&name);
            }
            other => {
                return Err(refuse(
                    &raw,
                    format!(
                        "has tar entry type {:?}, which ADD does not copy",
                        other.as_byte() as char
                    ),
                ));
            }
        }
        report.entries += 1;
    }
    Ok(report)
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
