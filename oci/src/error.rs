//! Registry errors. None of them ever carries a password, token or
//! Authorization header: they name the registry and what failed.

use std::path::PathBuf;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry rejected the credentials (or wanted some).
    #[error(
        "{registry}: authentication failed (401 Unauthorized) for repository {repository}; check the credentials for this registry (docker config.json, credential helper, or --username/--password-stdin)"
    )]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
    },
    /// Authenticated, but not allowed.
    #[error("{registry}: access to {repository} denied (403 Forbidden): {message}")]
    Denied {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// The registry's explanation.
        message: String,
    },
    /// No such manifest or blob.
    #[error("{registry}: {what} not found")]
    NotFound {
        /// Registry host.
        registry: String,
        /// What was looked up.
        what: String,
    },
    /// A non-retryable HTTP error.
    #[error("{registry}: {status}: {message}")]
    Http {
        /// Registry host.
        registry: String,
        /// Status line.
        status: String,
        /// The registry's explanation.
        message: String,
    },
    /// Transport failure (connect, TLS, reset, timeout).
    #[error("{registry}: {message}")]
    Connection {
        /// Registry host.
        registry: String,
        /// What failed.
        message: String,
    },
    /// The registry's TLS certificate is not trusted.
    #[error(
        "{registry}: its TLS certificate is not trusted ({message}); give kiln the registry's CA certificate with --registry-ca FILE"
    )]
    Certificate {
        /// Registry host.
        registry: String,
        /// The TLS library's words.
        message: String,
    },
    /// Gave up after retrying.
    #[error("{registry}: gave up after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        /// Registry host.
        registry: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// Content did not match its digest.
    #[error("digest mismatch: expected {expected}, found {found}")]
    DigestMismatch {
        /// What the reference promised.
        expected: String,
        /// What the bytes hash to.
        found: String,
    },
    /// The index has no manifest for the platform.
    #[error("{reference} has no image for platform {platform} (available: {available})")]
    PlatformNotFound {
        /// The image.
        reference: String,
        /// Wanted platform.
        platform: String,
        /// Platforms the index lists.
        available: String,
    },
    /// The reference does not parse.
    #[error("{reason}")]
    InvalidReference {
        /// As given.
        reference: String,
        /// Why.
        reason: kiln_pipeline::reference::ReferenceError,
    },
    /// A manifest or config is not what the spec says.
    #[error("{registry}: invalid {what}: {message}")]
    Invalid {
        /// Registry host.
        registry: String,
        /// What was being read.
        what: String,
        /// Why.
        message: String,
    },
    /// Reading credentials failed.
    #[error("credentials for {registry}: {message}")]
    Credentials {
        /// Registry host.
        registry: String,
        /// Why (never the secret).
        message: String,
    },
    /// Local file I/O.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Building the HTTP client failed (bad CA file...).
    #[error("registry client setup: {0}")]
    Setup(String),
}

impl RegistryError {
    /// Whether trying again may help (server errors, throttling, transport).
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Connection { .. } => true,
            RegistryError::Http { status, .. } => {
                status.starts_with('5') || status.starts_with("429")
            }
            _ => false,
        }
    }
}

/// Convenience alias.
pub type Result<T> = std::result::Result<T, RegistryError>;
