//! kiln's OCI distribution client: resolve images, HEAD/mount/upload blobs,
//! push manifests, with retries and every credential source users have.
//!
//! Written as a thin layer over `reqwest` rather than on `oci-client`:
//! kiln needs a HEAD before every upload, cross-repository mounts, uploads
//! streamed from files (layers can be gigabytes), a fresh upload session on
//! each retry, per-registry plain-HTTP rules and extra CA files, and error
//! messages that name the registry and never the secret. That is a few
//! hundred lines over an HTTP client, each of them tested against a real
//! registry.

mod auth;
mod client;
mod error;
mod retry;

pub use auth::{Challenge, CredentialSource, Credentials, parse_challenge};
pub use client::{Client, ClientOptions, Counters, Manifest, ResolvedImage};
pub use error::{RegistryError, Result};
pub use retry::RetryPolicy;

/// Manifest media types kiln accepts.
pub mod media {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
}

/// A repository split into the host to talk to and the path on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// `host[:port]` as the user wrote it (`docker.io` for Docker Hub).
    pub registry: String,
    /// `team/image` (`library/python` for Docker Hub's short names).
    pub path: String,
}

impl Repository {
    /// Splits `registry/path`; a first component without `.`, `:` or
    /// `localhost` means Docker Hub, as in Docker.
    pub fn parse(text: &str) -> Self {
        match text.split_once('/') {
            Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => Self {
                registry: host.to_string(),
                path: rest.to_string(),
            },
            Some(_) => Self {
                registry: "docker.io".into(),
                path: text.to_string(),
            },
            None => Self {
                registry: "docker.io".into(),
                path: format!("library/{text}"),
            },
        }
    }

    /// The host to send requests to.
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }
}

impl std::fmt::Display for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::Repository;

    #[test]
    fn splits_repositories_like_docker() {
        let r = Repository::parse("127.0.0.1:5000/kiln/qs");
        assert_eq!(
            (r.registry.as_str(), r.path.as_str()),
            ("127.0.0.1:5000", "kiln/qs")
        );
        let r = Repository::parse("python");
        assert_eq!(
            (r.registry.as_str(), r.path.as_str(), r.api_host()),
            ("docker.io", "library/python", "registry-1.docker.io")
        );
        let r = Repository::parse("team/img");
        assert_eq!(r.path, "team/img");
        let r = Repository::parse("localhost/x");
        assert_eq!(r.registry, "localhost");
    }
}
