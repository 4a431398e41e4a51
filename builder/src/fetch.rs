//! `ADD <http(s) url>`: the file is downloaded into the build's scratch
//! directory, streamed (a large file needs no memory of its size), hashed
//! as it arrives, checked against `--checksum` when one is given, and
//! capped like a layer. Its digest is the step's cache key, as BuildKit
//! keys an HTTP source by its content.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The request failed or the server answered with an error.
    #[error("downloading {url}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The content is not what `--checksum` says.
    #[error("{url}: checksum mismatch: expected {expected}, got {actual}")]
    Checksum {
        /// The URL.
        url: String,
        /// `--checksum`.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// More than the cap arrived.
    #[error("{url}: larger than {limit} bytes (KILN_MAX_LAYER_BYTES)")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap.
        limit: u64,
    },
    /// Writing the file failed.
    #[error("writing {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A downloaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fetched {
    /// Where it is.
    pub path: PathBuf,
    /// `sha256:HEX` of its content.
    pub digest: String,
    /// The file name the URL's path ends in (what `ADD url dir/` names it).
    pub name: String,
}

/// Whether a COPY/ADD source is an http(s) URL.
pub(crate) fn is_http(source: &str) -> bool {
    let l = source.to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// The last segment of a URL's path, without query or fragment.
pub(crate) fn file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    let path = path.split_once('/').map_or("", |(_, p)| p);
    path.rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or_default()
        .to_string()
}

/// Downloads `url` into the directory `into` (as `download-N`), checking
/// `checksum` (`sha256:HEX`) when given.
///
/// # Errors
///
/// See [`FetchError`].
pub(crate) async fn fetch(
    url: &str,
    into: &Path,
    checksum: Option<&str>,
    max_bytes: u64,
) -> Result<Fetched, FetchError> {
    let http = |message: String| FetchError::Http {
        url: url.to_string(),
        message,
    };
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| http(e.to_string()))?;
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| http(kiln_pipeline::error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(http(format!("the server answered {}", response.status())));
    }
    let n = std::fs::read_dir(into).map(|d| d.count()).unwrap_or(0);
    let path = into.join(format!("download-{n}"));
    let io = |source| FetchError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::File::create(&path).map_err(io)?;
    let mut hash = Sha256::new();
    let mut total = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| http(kiln_pipeline::error_chain(&e)))?
    {
        total += chunk.len() as u64;
        if total > max_bytes {
            return Err(FetchError::TooLarge {
                url: url.to_string(),
                limit: max_bytes,
            });
        }
        hash.update(&chunk);
        file.write_all(&chunk).map_err(io)?;
    }
    file.flush().map_err(io)?;
    let digest = format!("sha256:{}", crate::image::hex(&hash.finalize()));
    if let Some(expected) = checksum
        && expected != digest
    {
        return Err(FetchError::Checksum {
            url: url.to_string(),
            expected: expected.to_string(),
            actual: digest,
        });
    }
    Ok(Fetched {
        path,
        digest,
        name: file_name(url),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_name_is_the_urls_last_path_segment() {
        assert_eq!(file_name("http://h:1/a/b/c.tar.gz"), "c.tar.gz");
        assert_eq!(file_name("https://h/a/b/?x=1#f"), "b");
        assert_eq!(file_name("https://h/file?sig=abc"), "file");
        assert_eq!(file_name("https://h"), "");
    }
}
