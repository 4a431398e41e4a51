//! User and group id mappings between the sandbox's user namespace and the
//! ids this process sees on disk, so that unpacking and snapshotting agree
//! with what the sandboxed command sees.

use std::fmt;

/// One contiguous range of a `uid_map`/`gid_map`: `count` ids starting at
/// `inner` inside the namespace are `outer..outer+count` outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdRange {
    /// First id as seen inside the sandbox.
    pub inner: u32,
    /// First id as seen by this process (on disk).
    pub outer: u32,
    /// Number of ids in the range.
    pub count: u32,
}

/// The uid and gid mapping of the sandbox's user namespace, as seen from this
/// process. The unpacker maps tar ids through it (`to_outer_*`) so files come
/// out with the right owner inside the sandbox; the snapshot maps ids on disk
/// back (`to_inner_*`) so a layer records the ids the command used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdMap {
    uids: Vec<IdRange>,
    gids: Vec<IdRange>,
}

/// The id unmapped ids are shown as inside a user namespace (`overflowuid`).
pub const OVERFLOW_ID: u32 = 65534;

impl IdMap {
    /// No translation: ids on disk are the ids inside the sandbox. True when
    /// this process is already root inside the sandbox's user namespace (kiln
    /// re-executed itself there) or when no user namespace is involved.
    pub fn identity() -> Self {
        let full = IdRange {
            inner: 0,
            outer: 0,
            count: u32::MAX,
        };
        IdMap {
            uids: vec![full],
            gids: vec![full],
        }
    }

    /// A mapping from explicit ranges (as read from `/proc/PID/uid_map`).
    pub fn new(uids: Vec<IdRange>, gids: Vec<IdRange>) -> Self {
        IdMap { uids, gids }
    }

    /// Parses the text of a `uid_map`/`gid_map` file: lines of
    /// `inner outer count`. Returns `None` on malformed text.
    pub fn parse_ranges(text: &str) -> Option<Vec<IdRange>> {
        let mut out = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut it = line.split_whitespace().map(str::parse::<u32>);
            let (Some(Ok(inner)), Some(Ok(outer)), Some(Ok(count)), None) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return None;
            };
            out.push(IdRange {
                inner,
                outer,
                count,
            });
        }
        Some(out)
    }

    /// Whether this is the identity mapping (no translation at all).
    pub fn is_identity(&self) -> bool {
        *self == IdMap::identity()
    }

    /// The uid ranges.
    pub fn uids(&self) -> &[IdRange] {
        &self.uids
    }

    /// The gid ranges.
    pub fn gids(&self) -> &[IdRange] {
        &self.gids
    }

    /// The on-disk uid of sandbox uid `inner`, if mapped.
    pub fn to_outer_uid(&self, inner: u32) -> Option<u32> {
        to_outer(&self.uids, inner)
    }

    /// The on-disk gid of sandbox gid `inner`, if mapped.
    pub fn to_outer_gid(&self, inner: u32) -> Option<u32> {
        to_outer(&self.gids, inner)
    }

    /// The sandbox uid of on-disk uid `outer`, if mapped.
    pub fn to_inner_uid(&self, outer: u32) -> Option<u32> {
        to_inner(&self.uids, outer)
    }

    /// The sandbox gid of on-disk gid `outer`, if mapped.
    pub fn to_inner_gid(&self, outer: u32) -> Option<u32> {
        to_inner(&self.gids, outer)
    }

    /// A short stable fingerprint, used to keep unpacked roots made for
    /// different mappings apart in a cache.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.to_string().as_bytes());
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }
}

fn to_outer(ranges: &[IdRange], inner: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        let off = inner.checked_sub(r.inner)?;
        (off < r.count).then(|| r.outer.checked_add(off)).flatten()
    })
}

fn to_inner(ranges: &[IdRange], outer: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        let off = outer.checked_sub(r.outer)?;
        (off < r.count).then(|| r.inner.checked_add(off)).flatten()
    })
}

impl fmt::Display for IdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |f: &mut fmt::Formatter<'_>, rs: &[IdRange]| -> fmt::Result {
            for (i, r) in rs.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{}:{}:{}", r.inner, r.outer, r.count)?;
            }
            Ok(())
        };
        f.write_str("uid ")?;
        show(f, &self.uids)?;
        f.write_str(" gid ")?;
        show(f, &self.gids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_auto() -> IdMap {
        let r = IdMap::parse_ranges("0 1000 1\n1 100000 65535\n").unwrap();
        IdMap::new(r.clone(), r)
    }

    #[test]
    fn maps_root_to_invoking_user_and_the_rest_to_subordinate_ids() {
        let m = map_auto();
        assert_eq!(m.to_outer_uid(0), Some(1000));
        assert_eq!(m.to_outer_uid(100), Some(100_099));
        assert_eq!(m.to_outer_uid(65535), Some(165_534));
        assert_eq!(m.to_outer_uid(65536), None);
        assert_eq!(m.to_inner_uid(100_099), Some(100));
        assert_eq!(m.to_inner_uid(1000), Some(0));
        assert_eq!(m.to_inner_uid(0), None);
    }

    #[test]
    fn identity_maps_everything_to_itself() {
        let m = IdMap::identity();
        assert!(m.is_identity());
        assert_eq!(m.to_outer_gid(4_000_000), Some(4_000_000));
        assert_eq!(m.to_inner_gid(7), Some(7));
        assert!(!map_auto().is_identity());
    }

    #[test]
    fn rejects_malformed_maps() {
        assert!(IdMap::parse_ranges("0 1000").is_none());
        assert!(IdMap::parse_ranges("0 1000 1 4").is_none());
        assert!(IdMap::parse_ranges("a b c").is_none());
        assert_eq!(IdMap::parse_ranges("").map(|v| v.len()), Some(0));
    }

    #[test]
    fn fingerprint_differs_between_mappings() {
        assert_ne!(map_auto().fingerprint(), IdMap::identity().fingerprint());
        assert_eq!(map_auto().fingerprint().len(), 12);
    }
}
