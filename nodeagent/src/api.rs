//! The API server, spoken to as plain JSON over the workspace's `reqwest`,
//! authenticated with the kubeconfig's CA and bearer token.
//!
//! Why not `kube`: the agent needs five verbs on two resources (nodes and
//! pods, with their `status` and `binding` subresources). `reqwest` and
//! rustls are already built for kiln's registry client, so plain JSON adds
//! no dependency to fetch or compile, and the untyped `Value`s let the agent
//! send exactly the fields a 1.20 API server expects.

use std::path::Path;

use base64::Engine as _;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

/// Why a request to the API server (or reading the kubeconfig) failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The kubeconfig cannot be read or lacks what the agent needs.
    #[error("kubeconfig {path}: {detail}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// No answer (connection, TLS).
    #[error("{method} {path}: {source}")]
    Http {
        /// The verb.
        method: Method,
        /// The request path.
        path: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// An answer other than 2xx.
    #[error("{method} {path}: HTTP {status}: {body}")]
    Status {
        /// The verb.
        method: Method,
        /// The request path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The body (a `Status` object, usually).
        body: String,
    },
    /// A 2xx answer that is not JSON.
    #[error("{method} {path}: the answer is not JSON: {source}")]
    Json {
        /// The verb.
        method: Method,
        /// The request path.
        path: String,
        /// The parse error.
        source: serde_json::Error,
    },
}

impl ApiError {
    /// The HTTP status of a non-2xx answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context")]
    current_context: String,
    clusters: Vec<Named<ClusterEntry>>,
    users: Vec<Named<UserEntry>>,
    contexts: Vec<Named<ContextEntry>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    item: T,
}

#[derive(Deserialize)]
struct ClusterEntry {
    server: String,
    #[serde(rename = "certificate-authority-data", default)]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority", default)]
    ca_file: Option<String>,
}

#[derive(Deserialize)]
struct UserEntry {
    #[serde(default)]
    token: Option<String>,
}

#[derive(Deserialize)]
struct ContextEntry {
    cluster: String,
    user: String,
}

/// A client for one API server.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    server: String,
    token: String,
}

impl Api {
    /// From a kubeconfig with a bearer token and a CA (embedded or a file):
    /// what `scripts/cluster` writes.
    pub fn from_kubeconfig(path: &Path) -> Result<Api, ApiError> {
        let fail = |detail: String| ApiError::Kubeconfig {
            path: path.display().to_string(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let config: Kubeconfig = serde_saphyr::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let context = config
            .contexts
            .iter()
            .find(|c| c.name == config.current_context)
            .ok_or_else(|| fail(format!("no context {:?}", config.current_context)))?;
        let cluster = config
            .clusters
            .iter()
            .find(|c| c.name == context.item.cluster)
            .ok_or_else(|| fail(format!("no cluster {:?}", context.item.cluster)))?;
        let token = config
            .users
            .iter()
            .find(|u| u.name == context.item.user)
            .and_then(|u| u.item.token.clone())
            .ok_or_else(|| fail(format!("user {:?} has no token", context.item.user)))?;
        let ca = match (&cluster.item.ca_data, &cluster.item.ca_file) {
            (Some(data), _) => base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| fail(format!("certificate-authority-data: {e}")))?,
            (None, Some(file)) => std::fs::read(file).map_err(|e| fail(format!("{file}: {e}")))?,
            (None, None) => return Err(fail("the cluster has no CA".into())),
        };
        let cert = reqwest::Certificate::from_pem(&ca).map_err(|e| fail(e.to_string()))?;
        let http = reqwest::Client::builder()
            .add_root_certificate(cert)
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        Ok(Api {
            http,
            server: cluster.item.server.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// The API server's URL as the kubeconfig names it (no trailing `/`).
    pub fn server(&self) -> &str {
        &self.server
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, &Value)>,
    ) -> Result<Value, ApiError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.server))
            .bearer_auth(&self.token)
            .header("Accept", "application/json");
        if let Some((content_type, body)) = body {
            request = request
                .header("Content-Type", content_type)
                .body(body.to_string());
        }
        let http = |source| ApiError::Http {
            method: method.clone(),
            path: path.to_string(),
            source,
        };
        let response = request.send().await.map_err(http)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http)?;
        if !status.is_success() {
            return Err(ApiError::Status {
                method,
                path: path.to_string(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).trim().to_string(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|source| ApiError::Json {
            method,
            path: path.to_string(),
            source,
        })
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.call(Method::POST, path, Some(("application/json", body)))
            .await
    }

    /// `PATCH path` with a JSON merge patch (lists are replaced whole,
    /// which is what a status report wants).
    pub async fn merge_patch(&self, path: &str, patch: &Value) -> Result<Value, ApiError> {
        self.call(
            Method::PATCH,
            path,
            Some(("application/merge-patch+json", patch)),
        )
        .await
    }

    /// `DELETE path` with `DeleteOptions`.
    pub async fn delete(&self, path: &str, options: &Value) -> Result<Value, ApiError> {
        self.call(Method::DELETE, path, Some(("application/json", options)))
            .await
    }
}
