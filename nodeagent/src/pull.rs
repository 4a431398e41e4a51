//! Registry credentials from a pod's `imagePullSecrets`, as the kubelet
//! reads them: Secrets of type `kubernetes.io/dockerconfigjson` (a docker
//! config, `{"auths": {REGISTRY: ENTRY}}`) and the legacy
//! `kubernetes.io/dockercfg` (`{REGISTRY: ENTRY}`), an entry's `auth`
//! (base64 `user:password`) winning over its `username` and `password`.
//! An image is pulled with the credentials whose key matches its registry,
//! the most specific key first: the host and port alike (a `*` in a host
//! label matches any run of characters within it, Docker Hub's aliases are
//! one registry), and a key's path, if any, a prefix of the repository's.
//!
//! Nothing here prints or returns a credential: a [`SecretError`] names the
//! Secret, the key and the registry only.

use base64::Engine as _;
use kiln_oci::{Credentials, Repository};
use serde_json::Value;

/// The Secret type of a docker config (`.dockerconfigjson`).
pub(crate) const TYPE_DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// The legacy Secret type of a `.dockercfg` file.
pub(crate) const TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";

/// Why an image pull secret gives no credentials (the kubelet, too, skips
/// such a Secret and pulls without it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SecretError {
    /// Another type of Secret: the kubelet reads only the two above.
    #[error(
        "image pull secret {name} is of type {kind:?}, not {TYPE_DOCKER_CONFIG_JSON} or {TYPE_DOCKERCFG}"
    )]
    WrongType {
        /// The Secret's name.
        name: String,
        /// Its type.
        kind: String,
    },
    /// The type's key is missing or empty.
    #[error("image pull secret {name} has no {key} key")]
    MissingKey {
        /// The Secret's name.
        name: String,
        /// The key its type wants.
        key: &'static str,
    },
    /// The key does not hold a docker config (the parser's own message is
    /// left out: it may quote the data).
    #[error("image pull secret {name}: {key} is not a docker config")]
    Malformed {
        /// The Secret's name.
        name: String,
        /// The key.
        key: &'static str,
    },
    /// An entry's `auth` is not base64 of `user:password`.
    #[error(
        "image pull secret {name}: the auth of registry {registry} is not base64 of user:password"
    )]
    BadAuth {
        /// The Secret's name.
        name: String,
        /// The entry's key.
        registry: String,
    },
}

/// One entry of a pull secret: where it applies and what to send.
#[derive(Debug, Clone)]
struct Entry {
    /// The host as keyed (lower case, Docker Hub as `docker.io`).
    host: String,
    /// The port, when the key has one.
    port: Option<String>,
    /// The repository path prefix, when the key has one (`team`).
    path: String,
    credentials: Credentials,
}

/// The credentials of a pod's pull secrets, in the order they were added.
#[derive(Debug, Clone, Default)]
pub(crate) struct Keyring {
    entries: Vec<Entry>,
}

impl Keyring {
    /// Adds the entries of Secret `secret` (an object as the API returns
    /// it, its data base64-encoded), named `name`.
    pub(crate) fn add_secret(&mut self, name: &str, secret: &Value) -> Result<(), SecretError> {
        let kind = secret["type"].as_str().unwrap_or_default();
        let key = match kind {
            TYPE_DOCKER_CONFIG_JSON => ".dockerconfigjson",
            TYPE_DOCKERCFG => ".dockercfg",
            _ => {
                return Err(SecretError::WrongType {
                    name: name.to_string(),
                    kind: kind.to_string(),
                });
            }
        };
        let encoded = secret["data"][key]
            .as_str()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SecretError::MissingKey {
                name: name.to_string(),
                key,
            })?;
        let malformed = || SecretError::Malformed {
            name: name.to_string(),
            key,
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| malformed())?;
        let config: Value = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
        let auths = if kind == TYPE_DOCKER_CONFIG_JSON {
            &config["auths"]
        } else {
            &config
        };
        let auths = auths.as_object().ok_or_else(malformed)?;
        for (registry, entry) in auths {
            let Some(credentials) = entry_credentials(name, registry, entry)? else {
                continue;
            };
            let (host, port, path) = split_key(registry);
            self.entries.push(Entry {
                host,
                port,
                path,
                credentials,
            });
        }
        Ok(())
    }

    /// The credentials to try for image `reference`, the most specific key
    /// first (a longer host, then a longer path); empty when none matches.
    pub(crate) fn lookup(&self, reference: &str) -> Vec<Credentials> {
        let repository = Repository::parse(strip_tag(reference));
        let (host, port, _) = split_key(&repository.registry);
        let mut matches: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| {
                e.port == port
                    && host_matches(&e.host, &host)
                    && (e.path.is_empty()
                        || repository.path == e.path
                        || repository.path.starts_with(&format!("{}/", e.path)))
            })
            .collect();
        // Stable: among equally specific keys, the order of the secrets.
        matches.sort_by_key(|e| std::cmp::Reverse((e.host.len(), e.path.len())));
        let mut out: Vec<Credentials> = Vec::new();
        for e in matches {
            if !out.contains(&e.credentials) {
                out.push(e.credentials.clone());
            }
        }
        out
    }
}

/// An entry's credentials: `auth` when set, else `username` and
/// `password`; `None` for an entry with neither (nothing to send).
fn entry_credentials(
    name: &str,
    registry: &str,
    entry: &Value,
) -> Result<Option<Credentials>, SecretError> {
    if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let bad = || SecretError::BadAuth {
            name: name.to_string(),
            registry: registry.to_string(),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (username, secret) = text.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials {
            username: username.to_string(),
            secret: secret.to_string(),
        }));
    }
    match (entry["username"].as_str(), entry["password"].as_str()) {
        (Some(username), Some(secret)) => Ok(Some(Credentials {
            username: username.to_string(),
            secret: secret.to_string(),
        })),
        _ => Ok(None),
    }
}

/// A docker config key (or a reference's registry) as host, port and path:
/// the scheme and a `/v1/` or `/v2/` path dropped, Docker Hub's names made
/// one.
fn split_key(key: &str) -> (String, Option<String>, String) {
    let rest = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = path.trim_matches('/');
    let path = match path.split_once('/') {
        Some(("v1" | "v2", tail)) => tail,
        None if path == "v1" || path == "v2" => "",
        _ => path,
    };
    let authority = authority.to_ascii_lowercase();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
            (h.to_string(), Some(p.to_string()))
        }
        _ => (authority, None),
    };
    let host = match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => host,
    };
    (host, port, path.trim_matches('/').to_string())
}

/// A reference without its `@digest` and `:tag`.
fn strip_tag(reference: &str) -> &str {
    let name = reference.split_once('@').map_or(reference, |(n, _)| n);
    match name.rsplit_once(':') {
        Some((n, tag)) if !tag.contains('/') => n,
        _ => name,
    }
}

/// Host `host` matches key host `pattern`: label by label, the same count,
/// `*` in a pattern label matching any run of characters within a label.
fn host_matches(pattern: &str, host: &str) -> bool {
    let (p, h): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), host.split('.').collect());
    p.len() == h.len() && p.iter().zip(&h).all(|(p, h)| glob(p, h))
}

/// `*`-only glob match of one label.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            // The star takes 0, 1, ... characters of the rest.
            (0..=rest.len())
                .filter(|i| rest.is_char_boundary(*i))
                .any(|i| glob(tail, &rest[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn secret(kind: &str, key: &str, config: &Value) -> Value {
        json!({"type": kind, "data": {key: b64(&config.to_string())}})
    }

    fn users(found: &[Credentials]) -> Vec<&str> {
        found.iter().map(|c| c.username.as_str()).collect()
    }

    #[test]
    fn a_docker_config_json_secret_matches_its_registry_only() {
        let mut k = Keyring::default();
        let config = json!({"auths": {"127.0.0.1:5443": {
            "username": "kiln", "password": "pw", "auth": b64("kiln:pw:x")
        }}});
        k.add_secret(
            "s",
            &secret(TYPE_DOCKER_CONFIG_JSON, ".dockerconfigjson", &config),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let found = k.lookup("127.0.0.1:5443/kiln-test/private@sha256:00");
        assert_eq!(found.len(), 1);
        // `auth` wins, and a password may hold a colon.
        assert_eq!(found[0].secret, "pw:x");
        assert!(
            k.lookup("127.0.0.1:5000/kiln-test/private@sha256:00")
                .is_empty()
        );
        assert!(k.lookup("127.0.0.1/kiln-test/private:latest").is_empty());
        assert!(k.lookup("busybox").is_empty());
    }

    #[test]
    fn a_legacy_dockercfg_secret_is_read_too() {
        let mut k = Keyring::default();
        let config =
            json!({"https://registry.example:5000/v1/": {"username": "old", "password": "p"}});
        k.add_secret("legacy", &secret(TYPE_DOCKERCFG, ".dockercfg", &config))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            users(&k.lookup("registry.example:5000/team/img:1.0")),
            ["old"]
        );
    }

    #[test]
    fn docker_hub_aliases_globs_and_paths_match_as_the_kubelet_matches_them() {
        let mut k = Keyring::default();
        let config = json!({"auths": {
            "https://index.docker.io/v1/": {"auth": b64("hub:1")},
            "*.example.org": {"auth": b64("star:2")},
            "reg.example.org/team": {"auth": b64("team:3")},
        }});
        k.add_secret(
            "s",
            &secret(TYPE_DOCKER_CONFIG_JSON, ".dockerconfigjson", &config),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(users(&k.lookup("python:3.11")), ["hub"]);
        assert_eq!(users(&k.lookup("docker.io/library/python")), ["hub"]);
        // The path key is more specific than the glob: tried first.
        assert_eq!(
            users(&k.lookup("reg.example.org/team/img@sha256:00")),
            ["team", "star"]
        );
        assert_eq!(users(&k.lookup("reg.example.org/teamx/img")), ["star"]);
        assert!(
            k.lookup("a.b.example.org/img").is_empty(),
            "one label per *"
        );
    }

    #[test]
    fn unusable_secrets_are_named_without_their_data() {
        let mut k = Keyring::default();
        let opaque = json!({"type": "Opaque", "data": {"x": b64("hunter2")}});
        assert!(matches!(
            k.add_secret("o", &opaque),
            Err(SecretError::WrongType { .. })
        ));
        let empty = json!({"type": TYPE_DOCKER_CONFIG_JSON, "data": {}});
        assert!(matches!(
            k.add_secret("e", &empty),
            Err(SecretError::MissingKey { .. })
        ));
        let broken = json!({"type": TYPE_DOCKER_CONFIG_JSON, "data": {".dockerconfigjson": b64("{\"auths\": \"hunter2\"")}});
        let e = k.add_secret("b", &broken).unwrap_err();
        assert!(matches!(e, SecretError::Malformed { .. }), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let bad_auth = json!({"auths": {"r.example": {"auth": "hunter2!"}}});
        let e = k
            .add_secret(
                "a",
                &secret(TYPE_DOCKER_CONFIG_JSON, ".dockerconfigjson", &bad_auth),
            )
            .unwrap_err();
        assert!(matches!(e, SecretError::BadAuth { .. }), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(k.lookup("r.example/x").is_empty());
    }
}
