//! The extended attributes an image carries (PAX `SCHILY.xattr.*` in its
//! layers): `user.*` and `security.capability` (file capabilities, so
//! `setcap` in one step still holds after a snapshot, an unpack or a
//! `COPY --from`). `security.selinux` and ACLs are the host's business and
//! are not carried.
//!
//! File capabilities name the root they belong to: written inside a user
//! namespace, the kernel stores them as revision 3 with the host uid of the
//! namespace's root (`rootid`), and honours them only in that namespace.
//! An image stores them as revision 2 (no root id), as Docker's do. So a
//! snapshot taken from the host turns a v3 whose root id is the sandbox's
//! root back into v2, and an unpack for the sandbox writes a v2 as v3 with
//! the sandbox's root id.

use std::io;
use std::path::Path;

use crate::sandbox::IdMap;

/// The name of the file capability attribute.
pub const CAPABILITY: &str = "security.capability";

/// The xattrs kiln keeps in layers.
pub fn kept(name: &str) -> bool {
    name.starts_with("user.") || name == CAPABILITY
}

const REVISION_MASK: u32 = 0xff00_0000;
const REVISION_2: u32 = 0x0200_0000;
const REVISION_3: u32 = 0x0300_0000;
const V2_LEN: usize = 20;
const V3_LEN: usize = 24;

fn magic(v: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(v.get(..4)?.try_into().ok()?))
}

/// A capability as the image stores it: a v3 owned by the sandbox's root
/// (`ids`' outer uid of 0) becomes v2; anything else is kept.
pub fn capability_to_image(v: &[u8], ids: &IdMap) -> Vec<u8> {
    let Some(m) = magic(v) else {
        return v.to_vec();
    };
    if m & REVISION_MASK == REVISION_3 && v.len() == V3_LEN {
        let rootid = u32::from_le_bytes([v[20], v[21], v[22], v[23]]);
        if ids.to_outer_uid(0) == Some(rootid) {
            let mut out = v[..V2_LEN].to_vec();
            let m2 = (m & !REVISION_MASK) | REVISION_2;
            out[..4].copy_from_slice(&m2.to_le_bytes());
            return out;
        }
    }
    v.to_vec()
}

/// A capability as the disk must hold it for the sandbox: an image's v2
/// becomes v3 owned by the sandbox's root when that root is not the
/// host's; anything else is kept.
pub fn capability_to_disk(v: &[u8], ids: &IdMap) -> Vec<u8> {
    let Some(m) = magic(v) else {
        return v.to_vec();
    };
    match ids.to_outer_uid(0) {
        Some(root) if root != 0 && m & REVISION_MASK == REVISION_2 && v.len() == V2_LEN => {
            let mut out = v.to_vec();
            let m3 = (m & !REVISION_MASK) | REVISION_3;
            out[..4].copy_from_slice(&m3.to_le_bytes());
            out.extend_from_slice(&root.to_le_bytes());
            out
        }
        _ => v.to_vec(),
    }
}

/// The kept xattrs of `path` (links not followed), in name order, as the
/// image stores them.
///
/// # Errors
///
/// When they cannot be listed or read; a filesystem without xattrs gives
/// none.
pub fn read(path: &Path, ids: &IdMap) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) if names.len() < (1 << 20) => {
                names.resize(names.len() * 4, 0);
            }
            Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::PERM) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if !kept(name) {
            continue;
        }
        let mut value = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, name, &mut value[..]) {
                Ok(n) => break Some(n),
                Err(rustix::io::Errno::RANGE) if value.len() < (1 << 16) => {
                    value.resize(value.len() * 16, 0);
                }
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        let Some(len) = len else { continue };
        value.truncate(len);
        if name == CAPABILITY {
            value = capability_to_image(&value, ids);
        }
        out.push((name.to_string(), value));
    }
    out.sort();
    Ok(out)
}

/// Sets the kept ones of `attrs` on `path` (links not followed; a symlink
/// takes none). Call it after chown: chown clears file capabilities.
///
/// # Errors
///
/// When one cannot be set.
pub fn write(path: &Path, attrs: &[(String, Vec<u8>)], ids: &IdMap) -> io::Result<()> {
    for (name, value) in attrs.iter().filter(|(n, _)| kept(n)) {
        let value = if name == CAPABILITY {
            capability_to_disk(value, ids)
        } else {
            value.clone()
        };
        rustix::fs::lsetxattr(path, name.as_str(), &value, rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}

/// The xattrs a tar entry's PAX header carries (`SCHILY.xattr.NAME`).
pub fn of_entry<R: io::Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(ext)) = entry.pax_extensions() {
        for e in ext.flatten() {
            if let Some(k) = e.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                out.push((k.to_string(), e.value_bytes().to_vec()));
            }
        }
    }
    out
}

/// Writes `attrs` as the PAX header of the next entry of `tar` (nothing
/// when there are none).
///
/// # Errors
///
/// When the header cannot be written.
pub fn append_pax<W: io::Write>(
    tar: &mut tar::Builder<W>,
    attrs: &[(String, Vec<u8>)],
) -> io::Result<()> {
    if attrs.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = attrs
        .iter()
        .map(|(k, _)| format!("SCHILY.xattr.{k}"))
        .collect();
    tar.append_pax_extensions(
        keys.iter()
            .zip(attrs)
            .map(|(k, (_, v))| (k.as_str(), v.as_slice())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::IdRange;

    fn mapped() -> IdMap {
        let r = vec![IdRange {
            inner: 0,
            outer: 100_000,
            count: 65536,
        }];
        IdMap::new(r.clone(), r)
    }

    fn v2() -> Vec<u8> {
        let mut v = (REVISION_2 | 1).to_le_bytes().to_vec();
        v.extend_from_slice(&(1u32 << 13).to_le_bytes()); // cap_net_bind_service
        v.extend_from_slice(&[0; 12]);
        v
    }

    #[test]
    fn a_capability_round_trips_through_the_sandboxs_root() {
        let ids = mapped();
        let disk = capability_to_disk(&v2(), &ids);
        assert_eq!(disk.len(), V3_LEN);
        assert_eq!(magic(&disk).unwrap() & REVISION_MASK, REVISION_3);
        assert_eq!(&disk[20..], &100_000u32.to_le_bytes());
        assert_eq!(capability_to_image(&disk, &ids), v2());
        // Without a mapped root, nothing changes.
        assert_eq!(capability_to_disk(&v2(), &IdMap::identity()), v2());
        // A v3 of another root is not the sandbox's to rewrite.
        let mut other = disk.clone();
        other[20..].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(capability_to_image(&other, &ids), other);
        // Garbage stays garbage.
        assert_eq!(capability_to_image(b"ab", &ids), b"ab");
    }

    #[test]
    fn user_xattrs_and_capabilities_are_kept_and_others_are_not() {
        assert!(kept("user.mime_type"));
        assert!(kept(CAPABILITY));
        assert!(!kept("security.selinux"));
        assert!(!kept("system.posix_acl_access"));
        assert!(!kept("trusted.overlay.opaque"));
    }

    #[test]
    fn pax_headers_carry_them_into_a_tar_and_back() {
        let mut b = tar::Builder::new(Vec::new());
        let attrs = vec![
            ("user.a".to_string(), b"1".to_vec()),
            (CAPABILITY.to_string(), v2()),
        ];
        append_pax(&mut b, &attrs).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        b.append_data(&mut h, "f", io::empty()).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(of_entry(&mut entry), attrs);
    }

    #[test]
    fn a_files_user_xattr_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let attrs = vec![("user.kiln".to_string(), b"yes".to_vec())];
        write(&f, &attrs, &IdMap::identity()).unwrap();
        assert_eq!(read(&f, &IdMap::identity()).unwrap(), attrs);
    }
}
