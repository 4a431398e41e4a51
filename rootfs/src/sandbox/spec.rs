//! What to run in the sandbox (`RunSpec`), how the sandbox treats every run
//! (`SandboxConfig`), and where the output goes (`OutputRoute`).

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;

use super::error::{Result, SandboxError};

/// The default host CA bundle (Debian's `ca-certificates`).
pub const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Proxy variables passed from kiln's environment into every run unless the
/// spec sets them itself.
pub const PROXY_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
];

/// One command to run inside a root directory.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The root directory (an unpacked image); becomes `/`.
    pub root: PathBuf,
    /// Program and arguments; the program is looked up on the spec's `PATH`
    /// inside the root.
    pub argv: Vec<String>,
    /// The complete environment of the command (the caller merges the image
    /// config's `Env` and its own); proxy variables are added unless present.
    pub env: Vec<(String, String)>,
    /// Working directory inside the root; created (like Docker's WORKDIR)
    /// when missing.
    pub workdir: String,
    /// Numeric user inside the sandbox.
    pub user: User,
    /// Host name seen by the command.
    pub hostname: String,
    /// Extra bind mounts (build secrets, run directories).
    pub mounts: Vec<BindMount>,
    /// When set, the root is the read-only lower layer of an overlay and
    /// every write goes to this private upper directory: many runs share
    /// one unpacked image and none of them changes it.
    pub overlay: Option<Overlay>,
    /// Build secrets (mode 0400, root), kept in a tmpfs at `/run/secrets`:
    /// they never touch a disk and never enter a snapshot.
    pub secrets: Vec<Secret>,
    /// The network the command sees.
    pub network: Network,
}

/// A build secret's content, handed to the sandbox in memory. Its `Debug`
/// shows where it goes, never what it holds.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Secret {
    /// Absolute path inside the root (`/run/secrets/NAME` by default; any
    /// other path gets a file bound from the secrets tmpfs).
    pub target: String,
    /// The content.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({}, {} bytes)", self.target, self.data.len())
    }
}

/// Where build secrets live inside the root.
pub const SECRETS_DIR: &str = "/run/secrets";

/// The network a run sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Network {
    /// The host's (like Buildah's default `--network host` for rootless
    /// builds): the command reaches what kiln reaches.
    #[default]
    Host,
    /// A network namespace of its own with only loopback (Buildah's
    /// `--network none`).
    None,
}

/// The private, writable side of an overlay over the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Receives the run's changes (absolute, empty at first).
    pub upper: PathBuf,
    /// The overlay's scratch directory, on the same file system as `upper`.
    pub work: PathBuf,
}

impl RunSpec {
    /// A spec running `argv` as root in `/` of `root`, with a plain `PATH`.
    pub fn new(
        root: impl Into<PathBuf>,
        argv: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        RunSpec {
            root: root.into(),
            argv: argv.into_iter().map(Into::into).collect(),
            env: vec![(
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            )],
            workdir: "/".into(),
            user: User::ROOT,
            hostname: "kiln".into(),
            mounts: Vec::new(),
            overlay: None,
            secrets: Vec::new(),
            network: Network::Host,
        }
    }

    /// Adds a build secret at `target` (an absolute path; BuildKit's
    /// default is `/run/secrets/ID`), in memory only.
    pub fn secret(mut self, target: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        self.secrets.push(Secret {
            target: target.into(),
            data: data.into(),
        });
        self
    }

    /// Sets (or replaces) one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Adds a bind mount.
    pub fn mount(mut self, mount: BindMount) -> Self {
        self.mounts.push(mount);
        self
    }

    /// Runs on a private overlay over the root: writes land in `upper`
    /// (`work` is the overlay's scratch directory, on the same file system).
    pub fn writable_overlay(mut self, upper: impl Into<PathBuf>, work: impl Into<PathBuf>) -> Self {
        self.overlay = Some(Overlay {
            upper: upper.into(),
            work: work.into(),
        });
        self
    }

    /// Checks what can be checked without touching the disk.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(SandboxError::InvalidSpec {
                field,
                reason: reason.to_string(),
            })
        };
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return bad("argv", "no program to run");
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return bad("argv", "an argument contains a NUL byte");
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(SandboxError::InvalidSpec {
                    field: "env",
                    reason: format!("`{k}` is not a valid variable name (or its value holds NUL)"),
                });
            }
        }
        if !self.workdir.starts_with('/') || self.workdir.contains('\0') {
            return bad("workdir", "must be an absolute path");
        }
        let h = &self.hostname;
        if h.is_empty()
            || h.starts_with('-')
            || h.len() > 64
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return bad(
                "hostname",
                "1-64 characters of [A-Za-z0-9.-], not starting with `-`",
            );
        }
        if !self.root.is_absolute() {
            return bad("root", "must be an absolute path");
        }
        if let Some(o) = &self.overlay {
            for (what, path) in [("root", &self.root), ("upper", &o.upper), ("work", &o.work)] {
                let text = path.to_string_lossy();
                if !path.is_absolute() || text.contains([',', ':', '\\']) {
                    return Err(SandboxError::InvalidSpec {
                        field: "overlay",
                        reason: format!(
                            "the {what} directory {text} must be absolute and free of ',', ':' and '\\' (overlay mount options)"
                        ),
                    });
                }
            }
        }
        for sec in &self.secrets {
            let t = Path::new(&sec.target);
            let plain = t.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )
            });
            if !t.is_absolute()
                || !plain
                || sec.target.contains('\0')
                || t == Path::new(SECRETS_DIR)
                || t == Path::new("/")
            {
                return Err(SandboxError::InvalidSpec {
                    field: "secrets",
                    reason: format!("`{}` is not an absolute file path", sec.target),
                });
            }
        }
        for m in &self.mounts {
            if !m.target.is_absolute() {
                return Err(SandboxError::InvalidSpec {
                    field: "mounts",
                    reason: format!("target {} must be absolute", m.target.display()),
                });
            }
            if !m.source.is_absolute() {
                return Err(SandboxError::InvalidSpec {
                    field: "mounts",
                    reason: format!("source {} must be absolute", m.source.display()),
                });
            }
        }
        Ok(())
    }
}

/// A numeric user and group inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    /// uid inside the sandbox.
    pub uid: u32,
    /// gid inside the sandbox.
    pub gid: u32,
}

impl User {
    /// Root inside the sandbox (the invoking user outside).
    pub const ROOT: User = User { uid: 0, gid: 0 };

    /// Resolves a Dockerfile-style `USER` value (`name`, `uid`, `name:group`,
    /// `uid:gid`) against the root's `/etc/passwd` and `/etc/group`; a user
    /// given without group gets its primary group.
    pub fn resolve_in_root(root: &Path, spec: &str) -> Result<User> {
        let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap_or_default();
        User::resolve_in(&read("etc/passwd"), &read("etc/group"), spec)
    }

    /// The home directory `/etc/passwd` (its text) gives `uid`, if any.
    pub fn home_in(passwd: &str, uid: u32) -> Option<String> {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2).and_then(|s| s.parse::<u32>().ok()) == Some(uid))
                .then(|| f.get(5).map(|h| h.to_string()))
                .flatten()
                .filter(|h| !h.is_empty())
        })
    }

    /// As [`User::resolve_in_root`], with the two databases' text given (a
    /// layer listing has them without an unpacked root).
    pub fn resolve_in(passwd: &str, group_db: &str, spec: &str) -> Result<User> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let lookup = |db: &str, name: &str, field: usize| -> Option<u32> {
            db.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&name))
                    .then(|| f.get(field)?.parse().ok())
                    .flatten()
            })
        };
        let uid = match user.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(passwd, user, 2).ok_or_else(|| SandboxError::InvalidSpec {
                field: "user",
                reason: format!("no user `{user}` in the image's /etc/passwd"),
            })?,
        };
        let gid = match group {
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => lookup(group_db, g, 2).ok_or_else(|| SandboxError::InvalidSpec {
                    field: "user",
                    reason: format!("no group `{g}` in the image's /etc/group"),
                })?,
            },
            None => passwd
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.get(2).and_then(|s| s.parse::<u32>().ok()) == Some(uid))
                        .then(|| f.get(3)?.parse().ok())
                        .flatten()
                })
                .unwrap_or(0),
        };
        Ok(User { uid, gid })
    }
}

/// A host file or directory bind-mounted into the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Host path (absolute).
    pub source: PathBuf,
    /// Path inside the root (absolute, resolved inside the root).
    pub target: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

impl BindMount {
    /// A read-only mount.
    pub fn read_only(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        BindMount {
            source: source.into(),
            target: target.into(),
            read_only: true,
        }
    }

    /// A read-write mount.
    pub fn read_write(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        BindMount {
            source: source.into(),
            target: target.into(),
            read_only: false,
        }
    }
}

/// When the host's CA bundle is bound into the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaBundleMode {
    /// Only over a bundle the root already has. A root without one (a slim
    /// image before `apt-get install ca-certificates`) keeps none, so that
    /// the package's `update-ca-certificates` can create it: a bind-mounted
    /// file cannot be renamed over (EBUSY) and would make that install fail.
    IfPresent,
    /// Always, creating the file (and removing it afterwards) when missing.
    Always,
}

/// Podman's default process limit per container.
pub const DEFAULT_PIDS_LIMIT: u64 = 2048;

/// How the sandbox treats every run.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The host CA bundle made visible at the same path inside the root
    /// (read-only), or `None` for no CA bundle.
    pub ca_bundle: Option<PathBuf>,
    /// When the CA bundle is bound.
    pub ca_bundle_mode: CaBundleMode,
    /// Pass the host's proxy variables ([`PROXY_ENV`]) into runs.
    pub pass_proxy_env: bool,
    /// Bind the host's `/etc/resolv.conf` and `/etc/hosts` (read-only).
    pub host_network_files: bool,
    /// The most processes (threads included) the run's user may have
    /// (`RLIMIT_NPROC`, which a user namespace may lower); `None` for the
    /// host's limit. Podman's default is 2048.
    pub pids_limit: Option<u64>,
    /// When kiln runs as root: make root inside the sandbox host root (the
    /// old, unsafe mapping) instead of the first id of root's subordinate
    /// range. For images that truly need it; off by default, and
    /// [`HOST_ROOT_ENV`]`=1` turns it on.
    pub host_root: bool,
}

/// Set to `1` to run sandboxes of a root kiln as host root (see
/// [`SandboxConfig::host_root`]).
pub const HOST_ROOT_ENV: &str = "KILN_SANDBOX_HOST_ROOT";

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            ca_bundle: Some(PathBuf::from(DEFAULT_CA_BUNDLE)),
            ca_bundle_mode: CaBundleMode::IfPresent,
            pass_proxy_env: true,
            host_network_files: true,
            pids_limit: Some(DEFAULT_PIDS_LIMIT),
            host_root: std::env::var_os(HOST_ROOT_ENV).is_some_and(|v| v == "1"),
        }
    }
}

/// Which stream a captured line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of the command's output (without its newline; invalid UTF-8
/// replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// Where it came from.
    pub stream: Stream,
    /// The text.
    pub line: String,
}

/// Where the command's stdout and stderr go. Stdin is always `/dev/null`:
/// builds are not interactive.
#[derive(Debug)]
#[non_exhaustive]
pub enum OutputRoute {
    /// Kiln's own stdout/stderr.
    Inherit,
    /// Discarded.
    Null,
    /// Pipes the caller takes with `Running::take_stdout`/`take_stderr`.
    Piped,
    /// Line by line into a channel (a thread per stream reads them); all
    /// lines are sent before `Running::wait` returns.
    Lines(Sender<OutputLine>),
}

/// Environment variables that point the usual TLS clients (OpenSSL, curl,
/// pip, requests, git, node) at `bundle`. Opt-in for callers that bind a host
/// bundle which clients would not otherwise read (pip reads its own unless
/// told).
pub fn ca_bundle_env(bundle: &str) -> Vec<(String, String)> {
    [
        "SSL_CERT_FILE",
        "PIP_CERT",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "NODE_EXTRA_CA_CERTS",
    ]
    .iter()
    .map(|k| (k.to_string(), bundle.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_specs() {
        let ok = RunSpec::new("/r", ["sh"]);
        assert!(ok.validate().is_ok());
        assert!(RunSpec::new("/r", Vec::<String>::new()).validate().is_err());
        assert!(ok.clone().env("A=B", "x").validate().is_err());
        let mut s = ok.clone();
        s.workdir = "rel".into();
        assert!(s.validate().is_err());
        let mut s = ok.clone();
        s.hostname = "bad host".into();
        assert!(s.validate().is_err());
        assert!(RunSpec::new("rel", ["sh"]).validate().is_err());
        assert!(
            ok.mount(BindMount::read_only("rel", "/x"))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn env_replaces_existing_keys() {
        let s = RunSpec::new("/r", ["sh"]).env("PATH", "/bin").env("A", "1");
        assert_eq!(
            s.env,
            vec![("PATH".into(), "/bin".into()), ("A".into(), "1".into())]
        );
    }

    #[test]
    fn resolves_user_names_in_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let r = |s| User::resolve_in_root(dir.path(), s);
        assert_eq!(
            r("app").unwrap(),
            User {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(r("app:staff").unwrap(), User { uid: 1000, gid: 50 });
        assert_eq!(r("5:6").unwrap(), User { uid: 5, gid: 6 });
        assert_eq!(
            r("1000").unwrap(),
            User {
                uid: 1000,
                gid: 1001
            }
        );
        assert!(r("nobody").is_err());
        assert!(r("app:nogroup").is_err());
    }
}
