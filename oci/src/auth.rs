//! Registry credentials and challenges: docker `config.json` (`auths`,
//! `credHelpers`, `credsStore` through `docker-credential-*` programs),
//! explicit credentials, and parsing of `WWW-Authenticate`.
//!
//! Secrets live only in [`Credentials`], whose `Debug` is redacted.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use super::error::{RegistryError, Result};

/// A user name and secret for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"***")
            .finish()
    }
}

impl Credentials {
    /// The value of a Basic Authorization header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Where credentials come from, in order: explicit, then docker config.
#[derive(Clone, Default)]
pub struct CredentialSource {
    /// `--username` + `--password-stdin`.
    pub explicit: Option<Credentials>,
    /// The registries (`host[:port]`) [`explicit`](Self::explicit) goes to:
    /// kiln's push targets, so a parent image's registry never sees the
    /// password meant for the target. `None`: every registry, for a client
    /// that talks to one registry only.
    pub explicit_registries: Option<Vec<String>>,
    /// The docker config file (default: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
    /// Where `docker-credential-*` programs are searched (default `PATH`).
    pub helper_path: Option<OsString>,
}

impl std::fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSource")
            .field("explicit", &self.explicit)
            .field("explicit_registries", &self.explicit_registries)
            .field("docker_config", &self.docker_config)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

impl std::fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthEntry(***)")
    }
}

/// `docker.io` and its aliases as config files key them.
fn normalize_host(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        other => other.to_string(),
    }
}

impl CredentialSource {
    fn config_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.docker_config {
            return Some(p.clone());
        }
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Some(Path::new(&dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker/config.json"))
    }

    /// Credentials for `registry` (`host[:port]`), or `None` for anonymous.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Some(c) = &self.explicit {
            let wanted = normalize_host(registry);
            let scoped = self.explicit_registries.as_ref();
            if scoped.is_none_or(|list| list.iter().any(|r| normalize_host(r) == wanted)) {
                return Ok(Some(c.clone()));
            }
        }
        let Some(path) = self.config_path() else {
            return Ok(None);
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RegistryError::Io { path, source }),
        };
        let config: DockerConfig =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::Credentials {
                registry: registry.into(),
                message: format!("{} is not a valid docker config: {e}", path.display()),
            })?;
        self.lookup_in(&config, registry)
    }

    fn lookup_in(&self, config: &DockerConfig, registry: &str) -> Result<Option<Credentials>> {
        let wanted = normalize_host(registry);
        if let Some((_, helper)) = config
            .cred_helpers
            .iter()
            .find(|(k, _)| normalize_host(k) == wanted)
        {
            return self.run_helper(helper, registry);
        }
        if let Some(store) = &config.creds_store
            && let Some(c) = self.run_helper(store, registry)?
        {
            return Ok(Some(c));
        }
        let Some((_, entry)) = config
            .auths
            .iter()
            .find(|(k, _)| normalize_host(k) == wanted)
        else {
            return Ok(None);
        };
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credentials {
                username: u.clone(),
                secret: p.clone(),
            }));
        }
        if let Some(token) = &entry.identity_token {
            return Ok(Some(Credentials {
                username: "<token>".into(),
                secret: token.clone(),
            }));
        }
        let Some(auth) = &entry.auth else {
            return Ok(None);
        };
        let bad = || RegistryError::Credentials {
            registry: registry.into(),
            message: "the `auth` entry in the docker config is not base64 of user:password".into(),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (u, p) = text.split_once(':').ok_or_else(bad)?;
        Ok(Some(Credentials {
            username: u.into(),
            secret: p.into(),
        }))
    }

    /// Runs `docker-credential-<name> get` with the server on stdin.
    fn run_helper(&self, name: &str, registry: &str) -> Result<Option<Credentials>> {
        let program = format!("docker-credential-{name}");
        let resolved = self
            .find_program(&program)
            .ok_or_else(|| RegistryError::Credentials {
                registry: registry.into(),
                message: format!("credential helper {program} is configured but not found on PATH"),
            })?;
        let mut child = Command::new(resolved)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| RegistryError::Credentials {
                registry: registry.into(),
                message: format!("cannot run {program}: {e}"),
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(registry.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| RegistryError::Credentials {
                registry: registry.into(),
                message: format!("{program} failed: {e}"),
            })?;
        if !out.status.success() {
            // "credentials not found in native keychain" means anonymous.
            let stderr = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            if stderr.to_lowercase().contains("not found") {
                return Ok(None);
            }
            return Err(RegistryError::Credentials {
                registry: registry.into(),
                message: format!("{program} exited with {}", out.status),
            });
        }
        #[derive(Deserialize)]
        struct HelperReply {
            #[serde(rename = "Username")]
            username: String,
            #[serde(rename = "Secret")]
            secret: String,
        }
        let reply: HelperReply =
            serde_json::from_slice(&out.stdout).map_err(|_| RegistryError::Credentials {
                registry: registry.into(),
                message: format!(
                    "{program} printed something other than {{\"Username\",\"Secret\"}} JSON"
                ),
            })?;
        Ok(Some(Credentials {
            username: reply.username,
            secret: reply.secret,
        }))
    }

    fn find_program(&self, program: &str) -> Option<PathBuf> {
        let path = self
            .helper_path
            .clone()
            .or_else(|| std::env::var_os("PATH"))?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Send Basic credentials.
    Basic,
    /// Fetch a token from `realm`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// `service` parameter.
        service: Option<String>,
        /// `scope` parameter, when the registry names it.
        scope: Option<String>,
    },
}

/// Parses `Basic realm="x"` or `Bearer realm="...",service="...",scope="..."`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let params = parse_params(rest);
            Some(Challenge::Bearer {
                realm: params.get("realm")?.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            })
        }
        _ => None,
    }
}

/// `k="v",k2=v2` with commas allowed inside quotes.
fn parse_params(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source_with(config: &str) -> (tempfile::TempDir, CredentialSource) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, config).unwrap();
        let source = CredentialSource {
            docker_config: Some(path),
            helper_path: Some(dir.path().as_os_str().to_owned()),
            ..CredentialSource::default()
        };
        (dir, source)
    }

    #[test]
    fn reads_base64_auth_and_user_password() {
        let (_d, s) = source_with(
            r#"{"auths":{"https://reg.example:5443":{"auth":"dXNlcjpwQHNz"},"other.example":{"username":"u2","password":"p2"}}}"#,
        );
        let c = s.lookup("reg.example:5443").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("user", "p@ss"));
        let c = s.lookup("other.example").unwrap().unwrap();
        assert_eq!(c.secret, "p2");
        assert!(s.lookup("unknown.example").unwrap().is_none());
    }

    #[test]
    fn docker_hub_aliases_match() {
        let (_d, s) = source_with(r#"{"auths":{"https://index.docker.io/v1/":{"auth":"YTpi"}}}"#);
        assert_eq!(
            s.lookup("registry-1.docker.io").unwrap().unwrap().username,
            "a"
        );
    }

    #[test]
    fn explicit_credentials_win() {
        let (_d, mut s) = source_with(r#"{"auths":{"r.example":{"auth":"YTpi"}}}"#);
        s.explicit = Some(Credentials {
            username: "x".into(),
            secret: "y".into(),
        });
        assert_eq!(s.lookup("r.example").unwrap().unwrap().username, "x");
    }

    #[test]
    fn explicit_credentials_go_only_to_the_registries_they_are_for() {
        let (_d, mut s) = source_with(r#"{"auths":{"parent.example":{"auth":"YTpi"}}}"#);
        s.explicit = Some(Credentials {
            username: "pusher".into(),
            secret: "for-the-target-only".into(),
        });
        s.explicit_registries = Some(vec!["push.example:5443".into(), "docker.io".into()]);
        assert_eq!(
            s.lookup("push.example:5443").unwrap().unwrap().username,
            "pusher"
        );
        assert_eq!(
            s.lookup("registry-1.docker.io").unwrap().unwrap().username,
            "pusher"
        );
        // The parent's registry gets its own credentials, or none.
        assert_eq!(s.lookup("parent.example").unwrap().unwrap().username, "a");
        assert!(s.lookup("push.example").unwrap().is_none());
        assert!(s.lookup("elsewhere.example").unwrap().is_none());
    }

    #[test]
    fn credential_helpers_and_store_are_run() {
        let (dir, s) = source_with(
            r#"{"credsStore":"teststore","credHelpers":{"helped.example":"testhelper"}}"#,
        );
        for (name, user) in [("teststore", "store-user"), ("testhelper", "helper-user")] {
            let script = dir.path().join(format!("docker-credential-{name}"));
            std::fs::write(
                &script,
                format!("#!/bin/sh\nread server\nif [ \"$server\" = nothing.example ]; then echo 'credentials not found in native keychain'; exit 1; fi\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"{user}\",\"Secret\":\"s3cret\"}}'\n"),
            )
            .unwrap();
            std::os::unix::fs::PermissionsExt::set_mode(
                &mut std::fs::metadata(&script).unwrap().permissions(),
                0o755,
            );
            let mut perms = std::fs::metadata(&script).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
            std::fs::set_permissions(&script, perms).unwrap();
        }
        assert_eq!(
            s.lookup("helped.example").unwrap().unwrap().username,
            "helper-user"
        );
        assert_eq!(
            s.lookup("any.example").unwrap().unwrap().username,
            "store-user"
        );
        assert!(s.lookup("nothing.example").unwrap().is_none());
    }

    #[test]
    fn missing_helper_is_a_clear_error() {
        let (_d, s) = source_with(r#"{"credHelpers":{"r.example":"absent"}}"#);
        let err = s.lookup("r.example").unwrap_err().to_string();
        assert!(err.contains("docker-credential-absent"), "{err}");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credentials {
            username: "u".into(),
            secret: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let s = CredentialSource {
            explicit: Some(c),
            ..CredentialSource::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn parses_challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Negotiate x"), None);
    }
}
