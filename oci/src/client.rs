//! The HTTP side of the distribution client: requests with authentication
//! negotiation, retries, and the registry API calls kiln makes.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::Repository;
use super::auth::{Challenge, CredentialSource, Credentials, parse_challenge};
use super::error::{RegistryError, Result};
use super::retry::RequestRetry;
use super::spec::{Descriptor, ImageIndex, ImageManifest, media, sha256_digest as sha256};
use kiln_pipeline::error_chain as chain;

/// How the client connects and authenticates.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Where credentials come from.
    pub credentials: CredentialSource,
    /// Registries (`host[:port]`) that may be spoken to over plain HTTP.
    /// Loopback registries always may.
    pub insecure_registries: Vec<String>,
    /// Extra CA certificates (PEM files) trusted beside the system's.
    pub ca_certs: Vec<PathBuf>,
    /// Retries of failed requests.
    pub retry: RequestRetry,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response.
    pub read_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            credentials: CredentialSource::default(),
            insecure_registries: Vec::new(),
            ca_certs: Vec::new(),
            retry: RequestRetry::default(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
        }
    }
}

/// Operation counts, for reports and tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Blobs uploaded.
    pub blob_uploads: AtomicUsize,
    /// Blobs mounted from another repository.
    pub blob_mounts: AtomicUsize,
    /// Manifests pushed.
    pub manifest_pushes: AtomicUsize,
}

/// A manifest as served.
#[derive(Debug, Clone)]
pub struct ServedManifest {
    /// Raw bytes (their sha256 is the digest).
    pub bytes: Vec<u8>,
    /// Media type (from the body, else the Content-Type header).
    pub media_type: String,
    /// `sha256:...`.
    pub digest: String,
}

/// An image resolved to one platform's manifest.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    /// `registry/path` it lives in.
    pub repository: String,
    /// Manifest digest.
    pub digest: String,
    /// The manifest.
    pub manifest: ServedManifest,
    /// Config descriptor.
    pub config_descriptor: Descriptor,
    /// Config JSON.
    pub config: serde_json::Value,
    /// Layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// A registry client; cheap to clone and safe to share between tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// For loopback and insecure registries: no system trust store.
    local: reqwest::Client,
    /// For everything else, made on first use.
    public: std::sync::OnceLock<reqwest::Client>,
    opts: ClientOptions,
    /// Authorization header values by `host|scope`.
    auth: Mutex<HashMap<String, String>>,
    /// Credentials by host (looked up once per process).
    creds: Mutex<HashMap<String, Option<Credentials>>>,
    /// Scheme by loopback host, once probed.
    schemes: Mutex<HashMap<String, &'static str>>,
    counters: Counters,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("options", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.starts_with("127.") || name == "::1"
}

/// Whether a request failed because the server's TLS certificate is not
/// trusted (rustls names it "invalid peer certificate").
fn is_certificate_error(e: &dyn std::error::Error) -> bool {
    chain(e).contains("certificate")
}

/// A transport failure, told apart: an untrusted certificate will not fix
/// itself on retry and has a known remedy.
fn transport_error(registry: &str, e: &reqwest::Error) -> RegistryError {
    if is_certificate_error(e) {
        RegistryError::Certificate {
            registry: registry.to_string(),
            message: chain(e),
        }
    } else {
        RegistryError::Connection {
            registry: registry.to_string(),
            message: chain(e),
        }
    }
}

impl Client {
    /// A client with these options.
    pub fn new(opts: ClientOptions) -> Result<Self> {
        // Loopback and insecure registries get a client without the system
        // trust store: loading it costs tens of milliseconds, a large part
        // of a no-op build. The full client is made on first use.
        let local = Self::http_client(&opts, false)?;
        Ok(Self {
            inner: Arc::new(Inner {
                local,
                public: std::sync::OnceLock::new(),
                opts,
                auth: Mutex::new(HashMap::new()),
                creds: Mutex::new(HashMap::new()),
                schemes: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        })
    }

    fn http_client(opts: &ClientOptions, system_roots: bool) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(8)
            .tls_built_in_root_certs(system_roots);
        for path in &opts.ca_certs {
            let pem = std::fs::read(path).map_err(|source| RegistryError::Io {
                path: path.clone(),
                source,
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                RegistryError::Setup(format!("{} is not a PEM certificate: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        builder.build().map_err(|e| RegistryError::Setup(chain(&e)))
    }

    /// The HTTP client for a host: the light one for loopback and insecure
    /// registries, the one trusting the system's CAs for the rest.
    fn http_for(&self, host: &str) -> Result<&reqwest::Client> {
        if is_loopback(host)
            || self
                .inner
                .opts
                .insecure_registries
                .iter()
                .any(|h| h == host)
        {
            return Ok(&self.inner.local);
        }
        if let Some(c) = self.inner.public.get() {
            return Ok(c);
        }
        let client = Self::http_client(&self.inner.opts, true)?;
        Ok(self.inner.public.get_or_init(|| client))
    }

    /// Operation counts so far.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// HTTPS, except for registries named insecure (plain HTTP) and
    /// loopback ones, which use HTTPS when they speak it and plain HTTP
    /// otherwise (Docker's rule for localhost); probed once per host.
    async fn scheme(&self, host: &str) -> &'static str {
        if self
            .inner
            .opts
            .insecure_registries
            .iter()
            .any(|h| h == host)
        {
            return "http";
        }
        if !is_loopback(host) {
            return "https";
        }
        if let Some(s) = self
            .inner
            .schemes
            .lock()
            .ok()
            .and_then(|m| m.get(host).copied())
        {
            return s;
        }
        let probe = self
            .inner
            .local
            .get(format!("https://{host}/v2/"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        // A certificate kiln does not trust still means the registry speaks
        // TLS: stay on https so the user gets the certificate error and its
        // advice, not a confusing plain-HTTP reply from a TLS port.
        let scheme = match &probe {
            Ok(_) => "https",
            Err(e) if is_certificate_error(e) => "https",
            Err(_) => "http",
        };
        if let Ok(mut m) = self.inner.schemes.lock() {
            m.insert(host.to_string(), scheme);
        }
        scheme
    }

    async fn url(&self, repo: &Repository, tail: &str) -> String {
        let host = repo.api_host();
        format!(
            "{}://{host}/v2/{}/{tail}",
            self.scheme(host).await,
            repo.path
        )
    }

    /// The credentials this client sends to `registry` (`host[:port]`, as
    /// in a reference; `docker.io` for Docker Hub), `None` for anonymous:
    /// explicit ones, else the docker config and its helpers, looked up
    /// once per host. Public so that what kiln hands on (a cluster's image
    /// pull secret) is exactly what its own pushes used.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Some(c) = self
            .inner
            .creds
            .lock()
            .ok()
            .and_then(|m| m.get(registry).cloned())
        {
            return Ok(c);
        }
        let found = self.inner.opts.credentials.lookup(registry)?;
        if let Ok(mut m) = self.inner.creds.lock() {
            m.insert(registry.to_string(), found.clone());
        }
        Ok(found)
    }

    /// Sends one request, answering an authentication challenge once.
    /// `make` builds the request afresh (bodies are not replayable).
    async fn send<F>(&self, repo: &Repository, actions: &str, make: F) -> Result<Response>
    where
        F: Fn(&reqwest::Client) -> Result<RequestBuilder>,
    {
        let key = format!("{}|{}:{actions}", repo.registry, repo.path);
        let cached = self
            .inner
            .auth
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned());
        let transport = |e: reqwest::Error| transport_error(&repo.registry, &e);
        let http = self.http_for(repo.api_host())?;
        let mut request = make(http)?;
        if let Some(h) = &cached {
            request = request.header(AUTHORIZATION, h);
        }
        let response = request.send().await.map_err(transport)?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let unauthorized = || RegistryError::Unauthorized {
            registry: repo.registry.clone(),
            repository: repo.path.clone(),
        };
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge)
            .ok_or_else(unauthorized)?;
        let creds = self.credentials(&repo.registry)?;
        let header = match challenge {
            Challenge::Basic => creds
                .as_ref()
                .map(Credentials::basic_header)
                .ok_or_else(unauthorized)?,
            Challenge::Bearer { realm, service, .. } => {
                let scope = format!("repository:{}:{actions}", repo.path);
                self.token(repo, &realm, service.as_deref(), &scope, creds.as_ref())
                    .await?
            }
        };
        if cached.as_deref() == Some(header.as_str()) {
            return Err(unauthorized());
        }
        if let Ok(mut m) = self.inner.auth.lock() {
            m.insert(key, header.clone());
        }
        let response = make(http)?
            .header(AUTHORIZATION, &header)
            .send()
            .await
            .map_err(transport)?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(unauthorized());
        }
        Ok(response)
    }

    async fn token(
        &self,
        repo: &Repository,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Result<String> {
        let realm_host = realm
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or(realm);
        let mut request = self
            .http_for(realm_host)?
            .get(realm)
            .query(&[("scope", scope)]);
        if let Some(service) = service {
            request = request.query(&[("service", service)]);
        }
        if let Some(c) = creds {
            request = request.header(AUTHORIZATION, c.basic_header());
        }
        let response =
            request
                .send()
                .await
                .map_err(|e| match transport_error(&repo.registry, &e) {
                    RegistryError::Connection { registry, message } => RegistryError::Connection {
                        registry,
                        message: format!("token service: {message}"),
                    },
                    other => other,
                })?;
        if response.status() == StatusCode::UNAUTHORIZED
            || response.status() == StatusCode::FORBIDDEN
        {
            return Err(RegistryError::Unauthorized {
                registry: repo.registry.clone(),
                repository: repo.path.clone(),
            });
        }
        let response = check(response, repo, "token").await?;
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| RegistryError::Connection {
                registry: repo.registry.clone(),
                message: format!("token service: {}", chain(&e)),
            })?;
        let body: Token = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid {
            registry: repo.registry.clone(),
            what: "token response".into(),
            message: e.to_string(),
        })?;
        let token = body
            .token
            .or(body.access_token)
            .ok_or_else(|| RegistryError::Invalid {
                registry: repo.registry.clone(),
                what: "token response".into(),
                message: "no token in the reply".into(),
            })?;
        Ok(format!("Bearer {token}"))
    }

    /// Runs `op` until it succeeds, fails for good, or the attempts run out.
    async fn retry<T, F, Fut>(&self, registry: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let policy = self.inner.opts.retry;
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => {
                    if attempt >= policy.attempts {
                        return Err(RegistryError::RetriesExhausted {
                            registry: registry.to_string(),
                            attempts: attempt,
                            last: e.to_string(),
                        });
                    }
                    tokio::time::sleep(policy.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Fetches a manifest by tag or digest.
    pub async fn get_manifest(&self, repository: &str, reference: &str) -> Result<ServedManifest> {
        let repo = Repository::parse(repository);
        let url = self.url(&repo, &format!("manifests/{reference}")).await;
        let accept = manifest_accept();
        self.retry(&repo.registry, || async {
            let response = self
                .send(&repo, "pull", |h| Ok(h.get(&url).header(ACCEPT, &accept)))
                .await?;
            let response = check(
                response,
                &repo,
                &format!("manifest {repository}:{reference}"),
            )
            .await?;
            let header_type = header(&response, CONTENT_TYPE.as_str());
            let header_digest = header(&response, "docker-content-digest");
            let bytes = response
                .bytes()
                .await
                .map_err(|e| RegistryError::Connection {
                    registry: repo.registry.clone(),
                    message: chain(&e),
                })?
                .to_vec();
            let digest = sha256(&bytes);
            let expected = if reference.starts_with("sha256:") {
                Some(reference.to_string())
            } else {
                header_digest
            };
            if let Some(expected) = expected.filter(|d| d.starts_with("sha256:"))
                && expected != digest
            {
                return Err(RegistryError::DigestMismatch {
                    expected,
                    found: digest,
                });
            }
            let body_type = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(String::from)
                });
            let media_type = body_type
                .or(header_type.map(|t| t.split(';').next().unwrap_or_default().trim().to_string()))
                .unwrap_or_default();
            Ok(ServedManifest {
                bytes,
                media_type,
                digest,
            })
        })
        .await
    }

    /// The digest of the manifest `reference` (a tag or digest) names, by a
    /// HEAD request: `None` when the repository does not have it. One round
    /// trip and no body, so "is this image already pushed?" stays cheap.
    /// A registry that answers without `Docker-Content-Digest` is asked
    /// with a GET instead, and the digest computed from the bytes.
    pub async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<String>> {
        let repo = Repository::parse(repository);
        let url = self.url(&repo, &format!("manifests/{reference}")).await;
        let accept = manifest_accept();
        let found = self
            .retry(&repo.registry, || async {
                let response = self
                    .send(&repo, "pull", |h| Ok(h.head(&url).header(ACCEPT, &accept)))
                    .await?;
                match response.status() {
                    StatusCode::NOT_FOUND => Ok(None),
                    s if s.is_success() => Ok(Some(
                        header(&response, "docker-content-digest")
                            .filter(|d| d.starts_with("sha256:")),
                    )),
                    _ => check(
                        response,
                        &repo,
                        &format!("manifest {repository}:{reference}"),
                    )
                    .await
                    .map(|_| None),
                }
            })
            .await?;
        match found {
            None => Ok(None),
            Some(Some(digest)) => Ok(Some(digest)),
            Some(None) => Ok(Some(self.get_manifest(repository, reference).await?.digest)),
        }
    }

    /// Resolves `reference` to one platform's image: manifest and config.
    pub async fn resolve(
        &self,
        reference: &str,
        os: &str,
        architecture: &str,
        variant: Option<&str>,
    ) -> Result<PlatformImage> {
        let parsed = kiln_pipeline::reference::parse(reference).map_err(|reason| {
            RegistryError::InvalidReference {
                reference: reference.into(),
                reason,
            }
        })?;
        let repository = format!("{}/{}", parsed.registry(), parsed.repository());
        let tag_or_digest = parsed
            .digest()
            .map(String::from)
            .or_else(|| parsed.tag().map(String::from))
            .unwrap_or_else(|| "latest".into());
        let repo = Repository::parse(&repository);
        let mut manifest = self.get_manifest(&repository, &tag_or_digest).await?;
        let invalid = |what: &str, message: String| RegistryError::Invalid {
            registry: repo.registry.clone(),
            what: what.into(),
            message,
        };
        if media::is_index(&manifest.media_type) {
            let index: ImageIndex = serde_json::from_slice(&manifest.bytes)
                .map_err(|e| invalid("image index", e.to_string()))?;
            let chosen = index.manifests().iter().find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    p.os().to_string() == os
                        && p.architecture().to_string() == architecture
                        && (variant.is_none() || p.variant().as_deref() == variant)
                })
            });
            let Some(chosen) = chosen else {
                let available: Vec<String> = index
                    .manifests()
                    .iter()
                    .filter_map(|m| {
                        m.platform()
                            .as_ref()
                            .map(|p| format!("{}/{}", p.os(), p.architecture()))
                    })
                    .collect();
                return Err(RegistryError::PlatformNotFound {
                    reference: reference.into(),
                    platform: format!("{os}/{architecture}"),
                    available: available.join(", "),
                });
            };
            manifest = self
                .get_manifest(&repository, chosen.digest().as_ref())
                .await?;
        }
        let image: ImageManifest = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| invalid("image manifest", e.to_string()))?;
        let config_bytes = self
            .get_blob_bytes(&repository, image.config().digest().as_ref())
            .await?;
        let config: serde_json::Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid("image config", e.to_string()))?;
        Ok(PlatformImage {
            repository,
            digest: manifest.digest.clone(),
            manifest,
            config_descriptor: image.config().clone(),
            config,
            layers: image.layers().clone(),
        })
    }

    /// Fetches a small blob into memory, verifying its digest.
    pub async fn get_blob_bytes(&self, repository: &str, digest: &str) -> Result<Vec<u8>> {
        let repo = Repository::parse(repository);
        let url = self.url(&repo, &format!("blobs/{digest}")).await;
        self.retry(&repo.registry, || async {
            let response = self.send(&repo, "pull", |h| Ok(h.get(&url))).await?;
            let response = check(response, &repo, &format!("blob {digest}")).await?;
            let bytes = response
                .bytes()
                .await
                .map_err(|e| RegistryError::Connection {
                    registry: repo.registry.clone(),
                    message: chain(&e),
                })?;
            let found = sha256(&bytes);
            if found != digest {
                return Err(RegistryError::DigestMismatch {
                    expected: digest.into(),
                    found,
                });
            }
            Ok(bytes.to_vec())
        })
        .await
    }

    /// Streams a blob into `path` (created or truncated), verifying its
    /// digest; a mismatch removes the file.
    pub async fn pull_blob_to_file(
        &self,
        repository: &str,
        digest: &str,
        path: &Path,
    ) -> Result<()> {
        let repo = Repository::parse(repository);
        let url = self.url(&repo, &format!("blobs/{digest}")).await;
        let io_err = |source| RegistryError::Io {
            path: path.to_path_buf(),
            source,
        };
        self.retry(&repo.registry, || async {
            let response = self.send(&repo, "pull", |h| Ok(h.get(&url))).await?;
            let response = check(response, &repo, &format!("blob {digest}")).await?;
            let mut file = tokio::fs::File::create(path).await.map_err(io_err)?;
            let mut hasher = Sha256::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| RegistryError::Connection {
                    registry: repo.registry.clone(),
                    message: chain(&e),
                })?;
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(io_err)?;
            }
            file.flush().await.map_err(io_err)?;
            let found = format!("sha256:{:x}", hasher.finalize());
            if found != digest {
                let _ = tokio::fs::remove_file(path).await;
                return Err(RegistryError::DigestMismatch {
                    expected: digest.into(),
                    found,
                });
            }
            Ok(())
        })
        .await
    }

    /// Whether the repository has the blob (HEAD).
    pub async fn blob_exists(&self, repository: &str, digest: &str) -> Result<bool> {
        let repo = Repository::parse(repository);
        let url = self.url(&repo, &format!("blobs/{digest}")).await;
        self.retry(&repo.registry, || async {
            let response = self.send(&repo, "pull,push", |h| Ok(h.head(&url))).await?;
            match response.status() {
                s if s.is_success() => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => check(response, &repo, &format!("blob {digest}"))
                    .await
                    .map(|_| false),
            }
        })
        .await
    }

    /// Mounts a blob from `from` (same registry); `false` when the registry
    /// started an upload instead.
    pub async fn mount_blob(&self, repository: &str, from: &str, digest: &str) -> Result<bool> {
        let repo = Repository::parse(repository);
        let from_repo = Repository::parse(from);
        if from_repo.registry != repo.registry {
            return Ok(false);
        }
        let url = self.url(&repo, "blobs/uploads/").await;
        let mounted = self
            .retry(&repo.registry, || async {
                let response = self
                    .send(&repo, "pull,push", |h| {
                        Ok(h.post(&url)
                            .query(&[("mount", digest), ("from", from_repo.path.as_str())])
                            .header(CONTENT_LENGTH, 0))
                    })
                    .await?;
                let response = check(response, &repo, "blob mount").await?;
                Ok(response.status() == StatusCode::CREATED)
            })
            .await?;
        if mounted {
            self.inner
                .counters
                .blob_mounts
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(mounted)
    }

    async fn start_upload(&self, repo: &Repository) -> Result<String> {
        let url = self.url(repo, "blobs/uploads/").await;
        let response = self
            .send(repo, "pull,push", |h| {
                Ok(h.post(&url).header(CONTENT_LENGTH, 0))
            })
            .await?;
        let response = check(response, repo, "blob upload").await?;
        let location =
            header(&response, LOCATION.as_str()).ok_or_else(|| RegistryError::Invalid {
                registry: repo.registry.clone(),
                what: "upload reply".into(),
                message: "no Location header".into(),
            })?;
        Ok(
            if location.starts_with("http://") || location.starts_with("https://") {
                location
            } else {
                let host = repo.api_host();
                format!("{}://{host}{location}", self.scheme(host).await)
            },
        )
    }

    async fn finish_upload<F>(
        &self,
        repo: &Repository,
        location: &str,
        digest: &str,
        body: F,
    ) -> Result<()>
    where
        F: Fn() -> Result<(reqwest::Body, u64)>,
    {
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={digest}");
        let response = self
            .send(repo, "pull,push", |h| {
                let (body, len) = body()?;
                Ok(h.request(Method::PUT, &url)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, len)
                    .body(body))
            })
            .await?;
        check(response, repo, &format!("upload of blob {digest}")).await?;
        self.inner
            .counters
            .blob_uploads
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Uploads a blob streamed from a file. Each attempt opens a fresh
    /// upload session, so a connection dropped mid-body restarts cleanly.
    pub async fn push_blob_file(
        &self,
        repository: &str,
        digest: &str,
        size: u64,
        path: &Path,
    ) -> Result<()> {
        let repo = Repository::parse(repository);
        self.retry(&repo.registry, || async {
            let location = self.start_upload(&repo).await?;
            self.finish_upload(&repo, &location, digest, || {
                let file = std::fs::File::open(path).map_err(|source| RegistryError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                Ok((reqwest::Body::from(tokio::fs::File::from_std(file)), size))
            })
            .await
        })
        .await
    }

    /// Uploads a small blob from memory.
    pub async fn push_blob_bytes(
        &self,
        repository: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<()> {
        let repo = Repository::parse(repository);
        let owned = bytes::Bytes::copy_from_slice(bytes);
        self.retry(&repo.registry, || async {
            let location = self.start_upload(&repo).await?;
            self.finish_upload(&repo, &location, digest, || {
                Ok((reqwest::Body::from(owned.clone()), owned.len() as u64))
            })
            .await
        })
        .await
    }

    /// Pushes a manifest under `reference` (a tag or its digest); returns
    /// the digest.
    pub async fn push_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let repo = Repository::parse(repository);
        let url = self.url(&repo, &format!("manifests/{reference}")).await;
        let owned = bytes::Bytes::copy_from_slice(bytes);
        let digest = sha256(bytes);
        self.retry(&repo.registry, || async {
            let response = self
                .send(&repo, "pull,push", |h| {
                    Ok(h.put(&url)
                        .header(CONTENT_TYPE, media_type)
                        .header(CONTENT_LENGTH, owned.len())
                        .body(owned.clone()))
                })
                .await?;
            check(
                response,
                &repo,
                &format!("manifest {repository}:{reference}"),
            )
            .await?;
            Ok(())
        })
        .await?;
        self.inner
            .counters
            .manifest_pushes
            .fetch_add(1, Ordering::Relaxed);
        Ok(digest)
    }
}

fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// Turns a non-success reply into the matching error, with the registry's
/// own explanation (its JSON `errors`) when it gave one.
async fn check(response: Response, repo: &Repository, what: &str) -> Result<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v["errors"].as_array().map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["code"].as_str().unwrap_or_default(),
                            e["message"].as_str().unwrap_or_default()
                        )
                        .trim()
                        .to_string()
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| body.chars().take(200).collect());
    let registry = repo.registry.clone();
    Err(match status {
        StatusCode::UNAUTHORIZED => RegistryError::Unauthorized {
            registry,
            repository: repo.path.clone(),
        },
        StatusCode::FORBIDDEN => RegistryError::Denied {
            registry,
            repository: repo.path.clone(),
            message,
        },
        StatusCode::NOT_FOUND => RegistryError::NotFound {
            registry,
            what: what.to_string(),
        },
        _ => RegistryError::Http {
            registry,
            status: status.to_string(),
            message: format!("{what}: {message}"),
        },
    })
}

/// The manifest kinds kiln reads, for a manifest request's `Accept`.
fn manifest_accept() -> String {
    [
        media::OCI_MANIFEST,
        media::OCI_INDEX,
        media::DOCKER_MANIFEST,
        media::DOCKER_MANIFEST_LIST,
    ]
    .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_may_use_http() {
        for host in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:5000",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["registry.example", "10.0.0.1:5000", "127example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
        let client = Client::new(ClientOptions {
            insecure_registries: vec!["reg.internal:5000".into()],
            ..ClientOptions::default()
        })
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(client.scheme("reg.internal:5000")), "http");
        assert_eq!(rt.block_on(client.scheme("reg.internal")), "https");
    }

    #[test]
    fn retryable_errors() {
        let http = |status: &str| RegistryError::Http {
            registry: "r".into(),
            status: status.into(),
            message: String::new(),
        };
        assert!(http("503 Service Unavailable").is_retryable());
        assert!(http("429 Too Many Requests").is_retryable());
        assert!(!http("400 Bad Request").is_retryable());
        assert!(
            RegistryError::Connection {
                registry: "r".into(),
                message: "reset".into()
            }
            .is_retryable()
        );
        assert!(
            !RegistryError::Unauthorized {
                registry: "r".into(),
                repository: "x".into()
            }
            .is_retryable()
        );
    }
}
