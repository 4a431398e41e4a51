//! sha256 digests as a validated newtype, and a writer that hashes (and
//! counts) the bytes passing through it.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use super::StoreError;

/// A `sha256:<64 lower-case hex>` content digest.
///
/// Validated on construction so that a digest can be turned into a path
/// under `blobs/sha256/` without any risk of escaping the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

const PREFIX: &str = "sha256:";

impl Digest {
    /// The digest of `bytes`, for small in-memory blobs.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The finished digest of a running hash.
    pub(crate) fn from_hasher(hasher: Sha256) -> Self {
        Self(format!("{PREFIX}{:x}", hasher.finalize()))
    }

    /// The 64 hex digits, which name the blob file.
    pub fn hex(&self) -> &str {
        self.0.get(PREFIX.len()..).unwrap_or_default()
    }

    /// `sha256:<hex>`, as manifests and configs spell it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same digest as oci-spec's type, for descriptors.
    pub fn oci(&self) -> kiln_oci::Digest {
        // A store digest is sha256 with 64 lower-case hex digits, a subset
        // of what oci-spec accepts, so the parse cannot fail.
        self.0
            .parse()
            .expect("a validated sha256 digest is an OCI digest")
    }

    /// Parses a bare hex name as found in `blobs/sha256/`; `None` for
    /// anything else (temp files, stray names).
    pub(crate) fn from_hex(hex: &str) -> Option<Self> {
        is_sha256_hex(hex).then(|| Self(format!("{PREFIX}{hex}")))
    }
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl FromStr for Digest {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.strip_prefix(PREFIX) {
            Some(hex) if is_sha256_hex(hex) => Ok(Self(text.to_owned())),
            _ => Err(StoreError::InvalidDigest {
                digest: text.to_owned(),
            }),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A writer that sha256-hashes and counts everything written through it, so
/// a stream's digest and size come out of the same pass that writes it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The inner writer, for reading its state (a temp file's path).
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer, the digest and the byte count of what went through.
    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest::from_hasher(self.hasher), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let done = buf.get(..n).unwrap_or(buf);
        self.hasher.update(done);
        self.written += done.len() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_rejects_what_could_escape_the_store() {
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:ABC",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} should be rejected");
        }
        let good = Digest::of(b"x");
        assert_eq!(good.as_str().parse::<Digest>().ok(), Some(good.clone()));
        assert_eq!(Digest::from_hex(good.hex()), Some(good));
    }

    #[test]
    fn hashing_writer_matches_one_shot_digest() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (bytes, digest, n) = w.finish();
        assert_eq!(bytes, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(digest, Digest::of(b"hello world"));
    }
}
