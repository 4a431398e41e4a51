//! Layer compression: told by the media type when there is one, else by the
//! first bytes of the blob.

use std::io::{BufRead, BufReader, Read};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobCompression {
    /// A plain tar.
    None,
    /// gzip (`+gzip`, Docker's `.tar.gzip`).
    Gzip,
    /// zstd (`+zstd`).
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

impl BlobCompression {
    /// From an OCI or Docker layer media type; `None` when it says nothing
    /// about compression (unknown or foreign types).
    pub fn from_media_type(media_type: &str) -> Option<BlobCompression> {
        let mt = media_type.trim();
        if mt.ends_with("+gzip") || mt.ends_with(".tar.gzip") || mt.ends_with(".tar.gz") {
            Some(BlobCompression::Gzip)
        } else if mt.ends_with("+zstd") || mt.ends_with(".tar.zstd") {
            Some(BlobCompression::Zstd)
        } else if mt.ends_with(".tar") || mt.ends_with("layer.v1.tar") {
            Some(BlobCompression::None)
        } else {
            None
        }
    }

    /// From the first bytes of a blob.
    pub fn sniff(head: &[u8]) -> BlobCompression {
        if head.starts_with(GZIP_MAGIC) {
            BlobCompression::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            BlobCompression::Zstd
        } else {
            BlobCompression::None
        }
    }
}

/// Wraps `blob` in the right decompressor: the media type decides when it
/// names a compression, else the magic bytes do. Returns the uncompressed tar
/// stream.
pub fn decompress<'a, R: Read + 'a>(
    blob: R,
    media_type: Option<&str>,
) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, blob);
    let kind = match media_type.and_then(BlobCompression::from_media_type) {
        Some(c) => c,
        None => BlobCompression::sniff(buffered.fill_buf()?),
    };
    Ok(match kind {
        BlobCompression::None => Box::new(buffered),
        BlobCompression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        BlobCompression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn media_types() {
        let c = BlobCompression::from_media_type;
        assert_eq!(
            c("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(BlobCompression::Gzip)
        );
        assert_eq!(
            c("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(BlobCompression::Zstd)
        );
        assert_eq!(
            c("application/vnd.oci.image.layer.v1.tar"),
            Some(BlobCompression::None)
        );
        assert_eq!(
            c("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(BlobCompression::Gzip)
        );
        assert_eq!(c("application/octet-stream"), None);
    }

    #[test]
    fn sniffs_and_decompresses_each_kind() {
        let plain = b"hello layer".to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::stream::encode_all(&plain[..], 1).unwrap();
        for (blob, kind) in [
            (plain.clone(), BlobCompression::None),
            (gz, BlobCompression::Gzip),
            (zs, BlobCompression::Zstd),
        ] {
            assert_eq!(BlobCompression::sniff(&blob), kind);
            let mut out = Vec::new();
            decompress(&blob[..], None)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, plain);
        }
    }
}
