//! What the builder needs from a registry, as a small trait: the real client
//! implements it, and the build logic is tested against an in-memory fake.

use std::future::Future;
use std::path::Path;

use crate::image::Descriptor;

/// What a registry operation failed with, boxed so the trait does not fix
/// a client (the real one returns `kiln_oci::RegistryError`, fakes their own).
pub type RegistryFailure = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A platform (`linux/amd64`, `linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPlatform {
    /// `linux`.
    pub os: String,
    /// `amd64`.
    pub architecture: String,
    /// `v8`, when it matters.
    pub variant: Option<String>,
}

impl Default for TargetPlatform {
    fn default() -> Self {
        Self {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl std::str::FromStr for TargetPlatform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.contains(',') {
            return Err(format!(
                "{s:?} names several platforms; kiln builds one per build: give one OS/ARCH[/VARIANT], such as linux/amd64"
            ));
        }
        let word =
            |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !s.split('/').all(word) {
            return Err(format!(
                "invalid platform {s:?}: expected OS/ARCH[/VARIANT], such as linux/amd64"
            ));
        }
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Self {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Self {
                    os: (*os).into(),
                    architecture: (*arch).into(),
                    variant: Some((*variant).into()),
                })
            }
            _ => Err(format!(
                "invalid platform {s:?}: expected OS/ARCH[/VARIANT], such as linux/amd64"
            )),
        }
    }
}

impl std::fmt::Display for TargetPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A parent image, resolved to one platform's manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedImage {
    /// `registry/repository` of the image.
    pub repository: String,
    /// Manifest digest (pins the parent).
    pub digest: String,
    /// The config, as JSON.
    pub config: serde_json::Value,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// Registry operations the builder uses. Repositories are written
/// `registry/path` (`127.0.0.1:5000/kiln/quickstart`).
pub trait Registry: Send + Sync {
    /// Resolves a reference (tag or digest) to a platform's manifest and
    /// config.
    fn resolve(
        &self,
        reference: &str,
        platform: &TargetPlatform,
    ) -> impl Future<Output = Result<ResolvedImage, RegistryFailure>> + Send;

    /// Whether `repository` has the blob (HEAD).
    fn blob_exists(
        &self,
        repository: &str,
        digest: &str,
    ) -> impl Future<Output = Result<bool, RegistryFailure>> + Send;

    /// Mounts a blob from another repository of the same registry; `false`
    /// when the registry declined (the caller uploads instead).
    fn mount_blob(
        &self,
        repository: &str,
        from_repository: &str,
        digest: &str,
    ) -> impl Future<Output = Result<bool, RegistryFailure>> + Send;

    /// Uploads a blob from a file, streamed.
    fn push_blob_file(
        &self,
        repository: &str,
        blob: &Descriptor,
        path: &Path,
    ) -> impl Future<Output = Result<(), RegistryFailure>> + Send;

    /// Uploads a small blob from memory.
    fn push_blob_bytes(
        &self,
        repository: &str,
        digest: &str,
        bytes: &[u8],
    ) -> impl Future<Output = Result<(), RegistryFailure>> + Send;

    /// Downloads a blob into a file, verifying its digest.
    fn pull_blob_to_file(
        &self,
        repository: &str,
        blob: &Descriptor,
        path: &Path,
    ) -> impl Future<Output = Result<(), RegistryFailure>> + Send;

    /// The digest of the manifest a tag (or digest) names, `None` when the
    /// repository does not have it (HEAD, no body): how a caller learns an
    /// image is already pushed without building or uploading anything.
    fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> impl Future<Output = Result<Option<String>, RegistryFailure>> + Send;

    /// Pushes a manifest under a tag; returns its digest.
    fn push_manifest(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> impl Future<Output = Result<String, RegistryFailure>> + Send;
}

/// The registry host of a `registry/path` repository.
pub fn registry_of(repository: &str) -> &str {
    repository.split('/').next().unwrap_or(repository)
}

/// The real registry: kiln's distribution client.
impl Registry for kiln_oci::Client {
    async fn resolve(
        &self,
        reference: &str,
        platform: &TargetPlatform,
    ) -> Result<ResolvedImage, RegistryFailure> {
        let r = kiln_oci::Client::resolve(
            self,
            reference,
            &platform.os,
            &platform.architecture,
            platform.variant.as_deref(),
        )
        .await?;
        Ok(ResolvedImage {
            repository: r.repository,
            digest: r.digest,
            config: r.config,
            layers: r.layers,
        })
    }

    async fn blob_exists(&self, repository: &str, digest: &str) -> Result<bool, RegistryFailure> {
        Ok(kiln_oci::Client::blob_exists(self, repository, digest).await?)
    }

    async fn mount_blob(
        &self,
        repository: &str,
        from_repository: &str,
        digest: &str,
    ) -> Result<bool, RegistryFailure> {
        Ok(kiln_oci::Client::mount_blob(self, repository, from_repository, digest).await?)
    }

    async fn push_blob_file(
        &self,
        repository: &str,
        blob: &Descriptor,
        path: &Path,
    ) -> Result<(), RegistryFailure> {
        Ok(kiln_oci::Client::push_blob_file(
            self,
            repository,
            blob.digest().as_ref(),
            blob.size(),
            path,
        )
        .await?)
    }

    async fn push_blob_bytes(
        &self,
        repository: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryFailure> {
        Ok(kiln_oci::Client::push_blob_bytes(self, repository, digest, bytes).await?)
    }

    async fn pull_blob_to_file(
        &self,
        repository: &str,
        blob: &Descriptor,
        path: &Path,
    ) -> Result<(), RegistryFailure> {
        Ok(
            kiln_oci::Client::pull_blob_to_file(self, repository, blob.digest().as_ref(), path)
                .await?,
        )
    }

    async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<String>, RegistryFailure> {
        Ok(kiln_oci::Client::manifest_digest(self, repository, reference).await?)
    }

    async fn push_manifest(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, RegistryFailure> {
        Ok(kiln_oci::Client::push_manifest(self, repository, tag, media_type, bytes).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_platforms() {
        let p: TargetPlatform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!("linux".parse::<TargetPlatform>().is_err());
        assert!("linux//".parse::<TargetPlatform>().is_err());
    }
}
