//! What a stage's filesystem holds, read from its layers' tar headers and
//! never unpacked: each path's type, mode, owner, link target and xattrs,
//! plus the text of `/etc/passwd` and `/etc/group` (for `--chown=name`).
//!
//! COPY, ADD, WORKDIR and VOLUME need it to do what Docker does: write
//! through a destination that is a symlink, leave the parents the image
//! already has as they are, create only the missing ones, and keep the
//! owner a stage recorded. Unpacking a stage's root for that would cost a
//! code-only rebuild seconds; a listing is read once per layer (headers
//! only) and kept in the store beside the blobs, keyed by the layer's
//! diffID, so the next build reads a small JSON file instead.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What kind of entry a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file or a hard link to one.
    File,
    /// A symbolic link.
    Symlink,
    /// A device node or FIFO.
    Other,
}

/// One path's metadata as the layer recorded it (ids as in the image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// Its kind.
    pub kind: EntryKind,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Extended attributes (`security.capability`, `user.*`...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// One layer's own entries: what it adds, and what it deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LayerListing {
    /// Paths (relative, no `./`, no trailing `/`) in the order of the tar.
    pub entries: Vec<(String, Meta)>,
    /// Whiteouts: paths removed with everything under them.
    pub removed: Vec<String>,
    /// Opaque directories: lower layers' content under them is hidden.
    pub opaque: Vec<String>,
    /// `/etc/passwd` if the layer writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passwd: Option<String>,
    /// `/etc/group` if the layer writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// How many bytes of passwd/group kiln keeps (they are small; a huge one
/// is not a user database kiln should parse).
const DB_LIMIT: u64 = 4 * 1024 * 1024;

fn clean(name: &str) -> String {
    name.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

impl LayerListing {
    /// Reads a layer's (decompressed) tar, headers only except for the
    /// user databases.
    ///
    /// # Errors
    ///
    /// When the tar cannot be read.
    pub(crate) fn read(tar: impl Read) -> io::Result<LayerListing> {
        let mut out = LayerListing::default();
        let mut archive = tar::Archive::new(tar);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let name = clean(&entry.path()?.to_string_lossy());
            let (dir, base) = match name.rsplit_once('/') {
                Some((d, b)) => (d.to_string(), b.to_string()),
                None => (String::new(), name.clone()),
            };
            if base == ".wh..wh..opq" {
                out.opaque.push(dir);
                continue;
            }
            if let Some(gone) = base.strip_prefix(".wh.") {
                out.removed.push(join(&dir, gone));
                continue;
            }
            if name.is_empty() {
                continue;
            }
            let header = entry.header().clone();
            let kind = match header.entry_type() {
                tar::EntryType::Directory => EntryKind::Dir,
                tar::EntryType::Symlink => EntryKind::Symlink,
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    EntryKind::Other
                }
                _ => EntryKind::File,
            };
            let mut xattrs = Vec::new();
            if let Some(ext) = entry.pax_extensions()? {
                for e in ext.flatten() {
                    if let Some(k) = e.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                        xattrs.push((k.to_string(), e.value_bytes().to_vec()));
                    }
                }
            }
            let link = match kind {
                EntryKind::Symlink => entry.link_name()?.map(|l| l.to_string_lossy().into_owned()),
                _ => None,
            };
            if kind == EntryKind::File
                && (name == "etc/passwd" || name == "etc/group")
                && header.entry_type().is_file()
            {
                let mut text = String::new();
                (&mut entry).take(DB_LIMIT).read_to_string(&mut text).ok();
                if name == "etc/passwd" {
                    out.passwd = Some(text);
                } else {
                    out.group = Some(text);
                }
            }
            out.entries.push((
                name,
                Meta {
                    kind,
                    mode: header.mode().unwrap_or(0o644) & 0o7777,
                    uid: header.uid().unwrap_or(0),
                    gid: header.gid().unwrap_or(0),
                    link,
                    xattrs,
                },
            ));
        }
        Ok(out)
    }

    /// The listing of the blob at `blob` (compressed as `media_type`),
    /// read from `cache` when it was read before and kept there after.
    ///
    /// # Errors
    ///
    /// When the blob cannot be read; a broken cache file is read again.
    pub(crate) fn of_blob(
        blob: &Path,
        media_type: Option<&str>,
        cache: Option<&Path>,
    ) -> io::Result<LayerListing> {
        if let Some(c) = cache
            && let Ok(bytes) = std::fs::read(c)
            && let Ok(l) = serde_json::from_slice(&bytes)
        {
            return Ok(l);
        }
        let file = std::fs::File::open(blob)?;
        let listing = LayerListing::read(kiln_rootfs::unpack::decompress(file, media_type)?)?;
        if let Some(c) = cache
            && let Some(dir) = c.parent()
            && std::fs::create_dir_all(dir).is_ok()
            && let Ok(bytes) = serde_json::to_vec(&listing)
        {
            // A temp name, then rename: a reader never sees half a file.
            let tmp = c.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, c).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
        Ok(listing)
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The stacked filesystem of a stage so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    entries: BTreeMap<String, Meta>,
    passwd: String,
    group: String,
}

/// How many symlinks one path may pass through (Linux's limit).
const MAX_LINKS: usize = 40;

impl Listing {
    /// Stacks a layer on top.
    pub(crate) fn apply(&mut self, layer: &LayerListing) {
        for dir in &layer.opaque {
            self.remove_under(dir);
        }
        for gone in &layer.removed {
            self.remove_under(gone);
            self.entries.remove(gone);
        }
        for (path, meta) in &layer.entries {
            // Only a directory replaced by something else has children to
            // drop; most entries replace nothing, so look before scanning.
            if meta.kind != EntryKind::Dir
                && self
                    .entries
                    .get(path)
                    .is_some_and(|m| m.kind == EntryKind::Dir)
            {
                self.remove_under(path);
            }
            self.entries.insert(path.clone(), meta.clone());
        }
        if let Some(p) = &layer.passwd {
            self.passwd = p.clone();
        }
        if let Some(g) = &layer.group {
            self.group = g.clone();
        }
    }

    fn remove_under(&mut self, dir: &str) {
        if dir.is_empty() {
            self.entries.clear();
            return;
        }
        let prefix = format!("{dir}/");
        let doomed: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.entries.remove(&k);
        }
    }

    /// The metadata of `path` (relative) itself, links not followed.
    pub(crate) fn get(&self, path: &str) -> Option<&Meta> {
        self.entries.get(path)
    }

    /// `/etc/passwd` as the stage has it (empty if none).
    pub(crate) fn passwd(&self) -> &str {
        &self.passwd
    }

    /// `/etc/group` as the stage has it (empty if none).
    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    /// `path` with every symlink on the way resolved inside the root (an
    /// absolute target starts again at the root, `..` stops at it), the
    /// last component too when `follow_last`. What does not exist is kept
    /// as written after the part that does.
    pub(crate) fn resolve(&self, path: &str, follow_last: bool) -> String {
        let mut todo: Vec<String> = clean(path).split('/').rev().map(String::from).collect();
        todo.retain(|p| !p.is_empty());
        let mut done: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(part) = todo.pop() {
            if part == ".." {
                done.pop();
                continue;
            }
            let here = join(&done.join("/"), &part);
            let last = todo.is_empty();
            match self.entries.get(&here) {
                Some(Meta {
                    kind: EntryKind::Symlink,
                    link: Some(target),
                    ..
                }) if (!last || follow_last) && links < MAX_LINKS => {
                    links += 1;
                    if target.starts_with('/') {
                        done.clear();
                    }
                    for p in target.split('/').rev() {
                        if !p.is_empty() && p != "." {
                            todo.push(p.to_string());
                        }
                    }
                }
                _ => done.push(part),
            }
        }
        done.join("/")
    }

    /// Whether `path` (resolved) is a directory.
    pub(crate) fn is_dir(&self, path: &str) -> bool {
        path.is_empty() || self.get(path).is_some_and(|m| m.kind == EntryKind::Dir)
    }
}

/// Where the store keeps the listing of the layer with `diff_id`.
pub(crate) fn cache_path(store_root: &Path, diff_id: &str) -> PathBuf {
    let hex = diff_id.rsplit(':').next().unwrap_or(diff_id);
    store_root.join("listings").join(format!("{hex}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: EntryKind, link: Option<&str>) -> Meta {
        Meta {
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            link: link.map(String::from),
            xattrs: Vec::new(),
        }
    }

    fn listing(entries: &[(&str, EntryKind, Option<&str>)]) -> Listing {
        let mut l = Listing::default();
        l.apply(&LayerListing {
            entries: entries
                .iter()
                .map(|(p, k, t)| (p.to_string(), meta(*k, *t)))
                .collect(),
            ..LayerListing::default()
        });
        l
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        use EntryKind::*;
        let l = listing(&[
            ("opt", Dir, None),
            ("opt/real", Dir, None),
            ("opt/real/deep", Dir, None),
            ("opt/abs", Symlink, Some("/opt/real")),
            ("opt/rel", Symlink, Some("real/deep")),
            ("opt/up", Symlink, Some("../../../../etc")),
            ("lib", Symlink, Some("usr/lib")),
            ("loop", Symlink, Some("loop")),
        ]);
        assert_eq!(l.resolve("/opt/abs/x", true), "opt/real/x");
        assert_eq!(l.resolve("opt/rel", true), "opt/real/deep");
        assert_eq!(l.resolve("opt/rel", false), "opt/rel");
        assert_eq!(l.resolve("opt/up/passwd", true), "etc/passwd");
        assert_eq!(l.resolve("lib/x/y", true), "usr/lib/x/y");
        assert_eq!(l.resolve("new/dir/", true), "new/dir");
        // A loop ends at the limit instead of spinning.
        assert_eq!(l.resolve("loop", true), "loop");
    }

    #[test]
    fn whiteouts_and_opaque_markers_hide_lower_entries() {
        use EntryKind::*;
        let mut l = listing(&[
            ("a", Dir, None),
            ("a/x", File, None),
            ("b", Dir, None),
            ("b/y", File, None),
            ("c", Dir, None),
            ("c/z", File, None),
        ]);
        l.apply(&LayerListing {
            entries: vec![("c".into(), meta(File, None))],
            removed: vec!["a/x".into()],
            opaque: vec!["b".into()],
            ..LayerListing::default()
        });
        assert!(l.get("a").is_some() && l.get("a/x").is_none());
        assert!(l.get("b").is_some() && l.get("b/y").is_none());
        assert_eq!(l.get("c").map(|m| m.kind), Some(File));
        assert!(l.get("c/z").is_none());
    }

    #[test]
    fn a_layer_tar_reads_with_modes_owners_links_xattrs_and_the_user_database() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o1777);
        h.set_size(0);
        b.append_data(&mut h, "./tmp/", io::empty()).unwrap();
        b.append_pax_extensions([("SCHILY.xattr.user.k", b"v".as_slice())])
            .unwrap();
        let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(7);
        h.set_size(passwd.len() as u64);
        b.append_data(&mut h, "etc/passwd", &passwd[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "bin", "usr/bin").unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        b.append_data(&mut h, "usr/.wh.games", io::empty()).unwrap();
        let bytes = b.into_inner().unwrap();
        let l = LayerListing::read(&bytes[..]).unwrap();
        let names: Vec<&str> = l.entries.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["tmp", "etc/passwd", "bin"]);
        assert_eq!(l.entries[0].1.mode, 0o1777);
        assert_eq!(
            l.entries[1].1.xattrs,
            vec![("user.k".into(), b"v".to_vec())]
        );
        assert_eq!(l.entries[1].1.uid, 7);
        assert_eq!(l.entries[2].1.link.as_deref(), Some("usr/bin"));
        assert_eq!(l.removed, ["usr/games"]);
        assert_eq!(l.passwd.as_deref(), Some("root:x:0:0:root:/root:/bin/sh\n"));
    }
}
