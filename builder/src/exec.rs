//! Exec layers: the layers that run commands inside the image (apt
//! packages, uv, Python requirement groups, the user), in kiln's rootless
//! sandbox, each snapshotted into a layer by a before/after walk.
//!
//! Every layer's cache key is known before any work: it chains the parent's
//! digest, the platform and each layer's exact inputs (the package list, the
//! requirement file bytes, the installer and its arguments). Only when a key
//! misses is the parent's filesystem unpacked and the sandbox started.
//!
//! Python packages go into a virtual environment at [`VENV`], created with
//! `--system-site-packages` and put first on `PATH`. That works the same on
//! images whose Python is "externally managed" (PEP 668, as Debian's is) and
//! on ones whose isn't, never touches the distribution's own packages, and
//! still sees Python libraries installed with apt.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::sync::mpsc;

use kiln_pipeline::Installer;
use kiln_rootfs::sandbox::{BindMount, Network, Output, RunSpec, Sandbox, SandboxConfig};
use kiln_rootfs::snapshot::{self, Excludes, LayerOptions, Manifest};
use kiln_rootfs::unpack::{self, LayerBlob, UnpackOptions};
use sha2::{Digest as _, Sha256};

use crate::image;
use crate::layer::{Compression, LayerWriter};
use crate::plan::{LayerSlot, RequirementGroup, RequirementSource};
use crate::progress::{Event, Progress};
use crate::store::{Check, LayerDescriptor, Store, cache_key};

/// Where kiln's virtual environment lives in images.
pub const VENV: &str = "/opt/kiln/venv";

/// Where a layer's input files are visible during its command.
const INPUTS: &str = "/run/kiln-inputs";

/// A build secret: visible as `/run/secrets/<id>` while commands run, never
/// in a layer, the config, the history or the cache key.
#[derive(Clone)]
pub struct Secret {
    /// The name under /run/secrets.
    pub id: String,
    /// Its content, kept in memory: it reaches the sandbox through a pipe
    /// and a tmpfs, never a file on disk.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why an exec layer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The sandbox cannot start (user namespaces, subordinate ids...).
    #[error(transparent)]
    Sandbox(#[from] kiln_rootfs::sandbox::Error),
    /// Unpacking the parent failed.
    #[error("unpacking the parent image: {0}")]
    Unpack(#[from] kiln_rootfs::unpack::Error),
    /// Snapshotting failed.
    #[error("taking the layer snapshot: {0}")]
    Snapshot(#[from] kiln_rootfs::snapshot::Error),
    /// The layer's commands failed.
    #[error("its commands exited with code {code}; last output:\n{tail}")]
    Command {
        /// Exit code.
        code: i32,
        /// Last lines of its output.
        tail: String,
    },
    /// A requirement source could not be read or produced.
    #[error("{what}: {message}")]
    Input {
        /// The input.
        what: String,
        /// Why.
        message: String,
    },
    /// Building the layer blob failed.
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Local I/O.
    #[error("{what}: {source}")]
    Io {
        /// What kiln was doing.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExecError {
    let what = what.into();
    move |source| ExecError::Io { what, source }
}

/// One exec layer, resolved: what runs, with which files, under which key.
#[derive(Debug, Clone)]
pub struct PreparedLayer {
    /// Label for messages.
    pub label: String,
    /// The shell script run in the sandbox.
    pub script: String,
    /// Files visible under `/run/kiln-inputs`.
    pub files: Vec<(String, Vec<u8>)>,
    /// Inputs by name, for `--explain`.
    pub inputs: BTreeMap<String, String>,
    /// Chained cache key.
    pub key: String,
    /// Warnings for the user (unpinned requirements...).
    pub warnings: Vec<String>,
}

fn short_hash(bytes: &[u8]) -> String {
    image::hex(&Sha256::digest(bytes))[..16].to_string()
}

fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@+,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Requirement lines that pin nothing: reproducibility depends on the day.
fn unpinned(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.contains("==")
                && !l.contains(" @ ")
                && !l.contains("://")
        })
        .map(String::from)
        .collect()
}

fn installer_args(args: &BTreeMap<String, String>) -> String {
    args.iter()
        .map(|(k, v)| {
            let flag = if k.starts_with('-') {
                k.clone()
            } else {
                format!("--{k}")
            };
            if v.is_empty() {
                quote(&flag)
            } else {
                format!("{} {}", quote(&flag), quote(v))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Turns exec slots into scripts, input files and chained cache keys.
/// Reads requirement files and runs local export commands (I/O on this
/// machine only; nothing runs in the image yet).
pub fn prepare(
    slots: &[&LayerSlot],
    base_dir: &Path,
    parent_digest: &str,
    platform: &str,
    compression: Compression,
) -> Result<Vec<PreparedLayer>, ExecError> {
    let mut out = Vec::new();
    let mut previous = parent_digest.to_string();
    for slot in slots {
        let mut files = Vec::new();
        let mut inputs = BTreeMap::new();
        let mut warnings = Vec::new();
        let script = match slot {
            LayerSlot::Apt { packages } => {
                inputs.insert("apt packages".into(), packages.join(" "));
                format!(
                    "set -e\nexport DEBIAN_FRONTEND=noninteractive\napt-get update -q\napt-get install -y -q --no-install-recommends {}\napt-get clean\nrm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log",
                    packages
                        .iter()
                        .map(|p| quote(p))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
            LayerSlot::InstallUv => {
                inputs.insert("uv".into(), "latest".into());
                format!(
                    "set -e\n{}\n$PIP install -q --no-cache-dir --disable-pip-version-check uv",
                    ensure_venv()
                )
            }
            LayerSlot::Requirements {
                group,
                source,
                installer,
                installer_args: args,
            } => {
                let mut names = Vec::new();
                let mut add = |name: String,
                               bytes: Vec<u8>,
                               inputs: &mut BTreeMap<String, String>,
                               warnings: &mut Vec<String>| {
                    let text = String::from_utf8_lossy(&bytes).to_string();
                    let loose = unpinned(&text);
                    if !loose.is_empty() {
                        warnings.push(format!(
                            "requirements ({}): {} not pinned to a version ({}); pin them (pkg==1.2.3) for reproducible images",
                            group.as_str(),
                            if loose.len() == 1 { "1 requirement is" } else { "some requirements are" },
                            loose.join(", ")
                        ));
                    }
                    inputs.insert(name.clone(), short_hash(&bytes));
                    let file = format!("{}-{}.txt", names.len(), group_file(*group));
                    names.push(file.clone());
                    files.push((file, bytes));
                };
                match source {
                    RequirementSource::Files(paths) => {
                        for p in paths {
                            let path = base_dir.join(p);
                            let bytes = std::fs::read(&path).map_err(|e| ExecError::Input {
                                what: format!("requirements file {}", path.display()),
                                message: e.to_string(),
                            })?;
                            add(p.display().to_string(), bytes, &mut inputs, &mut warnings);
                        }
                    }
                    RequirementSource::List(list) => {
                        let mut text = list.join("\n");
                        text.push('\n');
                        add(
                            format!("{} list", group.as_str()),
                            text.into_bytes(),
                            &mut inputs,
                            &mut warnings,
                        );
                    }
                    RequirementSource::Command(argv) => {
                        let bytes = run_local(argv, base_dir)?;
                        add(
                            format!("`{}`", argv.join(" ")),
                            bytes,
                            &mut inputs,
                            &mut warnings,
                        );
                    }
                    RequirementSource::Pyproject { path, command } => {
                        let dir = base_dir
                            .join(path)
                            .parent()
                            .map_or_else(|| base_dir.to_path_buf(), Path::to_path_buf);
                        let bytes = run_local(command, &dir)?;
                        add(
                            format!("{} export", path.display()),
                            bytes,
                            &mut inputs,
                            &mut warnings,
                        );
                    }
                }
                let extra = installer_args(args);
                inputs.insert("installer".into(), format!("{installer:?} {extra}"));
                let reqs: String = names.iter().map(|n| format!(" -r {INPUTS}/{n}")).collect();
                let install = match installer {
                    Installer::Pip => format!(
                        "$PIP install -q --no-cache-dir --disable-pip-version-check{reqs} {extra}"
                    ),
                    Installer::Uv => format!(
                        "{VENV}/bin/uv pip install --python {VENV}/bin/python --no-cache{reqs} {extra}"
                    ),
                };
                format!("set -e\n{}\n{install}", ensure_venv())
            }
            LayerSlot::User { name, workdir } => {
                inputs.insert("user".into(), name.clone());
                let n = quote(name);
                format!(
                    "set -e\nif ! id -u {n} >/dev/null 2>&1; then\n  if command -v useradd >/dev/null; then useradd --create-home --user-group --shell /bin/sh {n}; else adduser -D {n}; fi\nfi\nmkdir -p {w}\nchown {n}: {w}",
                    w = quote(workdir)
                )
            }
            LayerSlot::Code { .. } => continue,
        };
        inputs.insert("kiln recipe".into(), short_hash(script.as_bytes()));
        let mut parts: Vec<String> = vec![
            "exec-v1".into(),
            previous.clone(),
            platform.into(),
            format!("{compression:?}"),
            slot.label(),
            script.clone(),
        ];
        for (name, bytes) in &files {
            parts.push(format!("{name}={}", image::hex(&Sha256::digest(bytes))));
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let key = cache_key(&refs);
        previous = key.clone();
        out.push(PreparedLayer {
            label: slot.label(),
            script,
            files,
            inputs,
            key,
            warnings,
        });
    }
    Ok(out)
}

fn group_file(group: RequirementGroup) -> &'static str {
    match group {
        RequirementGroup::LocalEnvironment => "local-environment",
        RequirementGroup::Stack => "stack",
        RequirementGroup::ExtraFiles => "extra",
        RequirementGroup::Integrations => "integrations",
        RequirementGroup::Pyproject => "pyproject",
        RequirementGroup::User => "requirements",
    }
}

/// Creates the virtual environment once. Without its own copy of pip when
/// the image's pip can install into it (`pip --python`, pip >= 22.3): that
/// keeps ~7 MB of pip out of the layer.
fn ensure_venv() -> String {
    format!(
        "if [ ! -x {VENV}/bin/python ]; then\n  if python3 -m pip --version 2>/dev/null | grep -qE 'pip (2[3-9]|[3-9][0-9])\\.'; then python3 -m venv --without-pip --system-site-packages {VENV}; else python3 -m venv --system-site-packages {VENV}; fi\nfi\nif [ -x {VENV}/bin/pip ]; then PIP=\"{VENV}/bin/python -m pip\"; else PIP=\"python3 -m pip --python {VENV}/bin/python\"; fi"
    )
}

/// Runs an export command (`pip freeze`, `poetry export`) on this machine.
fn run_local(argv: &[String], dir: &Path) -> Result<Vec<u8>, ExecError> {
    let what = format!("`{}`", argv.join(" "));
    let (program, args) = argv.split_first().ok_or_else(|| ExecError::Input {
        what: what.clone(),
        message: "empty command".into(),
    })?;
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| ExecError::Input {
            what: what.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(ExecError::Input {
            what,
            message: format!(
                "exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out.stdout)
}

/// Looks every prepared layer up in the cache (blobs re-hashed: a corrupt
/// one is a miss and gets rebuilt, never pushed).
pub fn lookup(
    store: &Store,
    prepared: &[PreparedLayer],
) -> Result<Vec<Option<LayerDescriptor>>, ExecError> {
    prepared
        .iter()
        .map(|layer| {
            store
                .lookup(&layer.key, Check::Full)
                .map_err(ExecError::from)
        })
        .collect()
}

/// Builds the layers that missed: unpacks the parent (then the hits before
/// each miss) into a scratch root and runs each missing layer's script in
/// the sandbox, snapshotting it into a layer. Returns every layer with
/// whether it was reused.
///
/// On failure, names the layer that failed: the first missing one when the
/// shared preparation (sandbox, parent unpack) fails.
#[allow(clippy::too_many_arguments)]
pub fn execute(
    store: &Store,
    image_name: &str,
    prepared: &[PreparedLayer],
    found: Vec<Option<LayerDescriptor>>,
    parent_layers: &[LayerBlob],
    env: &[(String, String)],
    secrets: &[Secret],
    network: Network,
    compression: Compression,
    epoch: u64,
    progress: &dyn Progress,
) -> Result<Vec<(LayerDescriptor, bool)>, LayerFailure> {
    if found.iter().all(Option::is_some) {
        return Ok(found.into_iter().flatten().map(|d| (d, true)).collect());
    }
    let mut failing = prepared
        .iter()
        .zip(&found)
        .find(|(_, hit)| hit.is_none())
        .map(|(l, _)| l.label.clone())
        .unwrap_or_default();
    let run = Run {
        store,
        image_name,
        env,
        secrets,
        network,
        compression,
        epoch,
        progress,
    };
    run.layers(prepared, found, parent_layers, &mut failing)
        .map_err(|source| LayerFailure {
            layer: failing,
            source: Box::new(source),
        })
}

/// Chowns a directory kiln made for a run, and what is directly in it, to
/// the sandbox's root (see [`Sandbox::root_owner`]).
pub(crate) fn give_to_sandbox_root(dir: &Path, (uid, gid): (u32, u32)) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    for entry in std::fs::read_dir(dir)? {
        std::os::unix::fs::lchown(entry?.path(), Some(uid), Some(gid))?;
    }
    Ok(())
}

/// An exec layer that failed, and why.
#[derive(Debug)]
pub struct LayerFailure {
    /// The failing layer's label ("apt packages", "requirements (user)"...).
    pub layer: String,
    /// Why it failed (boxed: errors travel the cold path).
    pub source: Box<ExecError>,
}

/// What every layer of one `execute` call shares.
struct Run<'a> {
    store: &'a Store,
    image_name: &'a str,
    env: &'a [(String, String)],
    secrets: &'a [Secret],
    network: Network,
    compression: Compression,
    epoch: u64,
    progress: &'a dyn Progress,
}

impl Run<'_> {
    fn layers(
        &self,
        prepared: &[PreparedLayer],
        found: Vec<Option<LayerDescriptor>>,
        parent_layers: &[LayerBlob],
        failing: &mut String,
    ) -> Result<Vec<(LayerDescriptor, bool)>, ExecError> {
        let Run {
            store,
            image_name,
            env,
            secrets,
            network,
            compression,
            epoch,
            progress,
        } = *self;
        let sandbox = Sandbox::new(SandboxConfig::default())?;
        let unpack_opts = UnpackOptions::mapped(sandbox.id_map().clone());
        let work = store.scratch("root-")?;
        let root = work.path().join("rootfs");
        std::fs::create_dir_all(&root).map_err(io("creating a scratch root"))?;
        for blob in parent_layers {
            unpack::apply_layer_blob(&root, blob, &unpack_opts)?;
        }
        let mut results = Vec::new();
        let excludes = Excludes::default();
        for (layer, hit) in prepared.iter().zip(found) {
            if let Some(desc) = hit {
                let blob = LayerBlob {
                    path: store.path(&desc.digest),
                    media_type: Some(desc.media_type.clone()),
                    diff_id: desc.diff_id.to_string(),
                };
                unpack::apply_layer_blob(&root, &blob, &unpack_opts)?;
                results.push((desc, true));
                continue;
            }
            failing.clone_from(&layer.label);
            for w in &layer.warnings {
                progress.event(Event::Warning { message: w.clone() });
            }
            let inputs_dir = store.scratch("inputs-")?;
            for (name, bytes) in &layer.files {
                std::fs::write(inputs_dir.path().join(name), bytes)
                    .map_err(io("writing layer inputs"))?;
            }
            // Readable by the sandbox's root, an unprivileged host id.
            give_to_sandbox_root(inputs_dir.path(), sandbox.root_owner())
                .map_err(io("handing layer inputs to the sandbox"))?;
            let before = Manifest::capture(&root, &excludes)?;
            let mut spec = RunSpec::new(
                &root,
                vec!["/bin/sh".into(), "-c".into(), layer.script.clone()],
            );
            for (k, v) in env {
                spec = spec.env(k.clone(), v.clone());
            }
            spec = spec.mount(BindMount::read_only(inputs_dir.path(), INPUTS));
            spec.network = network;
            for s in secrets {
                spec = spec.secret(format!("/run/secrets/{}", s.id), s.data.clone());
            }
            let (code, tail) = run_streaming(&sandbox, &spec, progress, image_name, &layer.label);
            let code = code?;
            if code != 0 {
                return Err(ExecError::Command {
                    code,
                    tail: tail.join("\n"),
                });
            }
            let mut writer = LayerWriter::new(store, compression)?;
            let opts = LayerOptions {
                epoch: Some(epoch),
                ids: sandbox.id_map().clone(),
            };
            if let Err(e) = snapshot::layer(&root, &before, &excludes, &opts, &mut writer) {
                let _ = writer.abort();
                return Err(e.into());
            }
            let desc = writer.finish()?;
            store.insert(&layer.key, &desc)?;
            results.push((desc, false));
        }
        Ok(results)
    }
}

/// Runs `spec` to its end, each output line sent to `progress` as the
/// output of `layer` of `image`; returns the exit code and the last 20
/// lines, for the error message when it fails.
pub fn run_streaming(
    sandbox: &Sandbox,
    spec: &RunSpec,
    progress: &dyn Progress,
    image: &str,
    layer: &str,
) -> (Result<i32, kiln_rootfs::sandbox::Error>, Vec<String>) {
    let (tx, rx) = mpsc::channel::<kiln_rootfs::sandbox::OutputLine>();
    std::thread::scope(|scope| {
        let forward = scope.spawn(|| {
            let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
            for line in rx {
                progress.event(Event::Output {
                    image: image.to_string(),
                    layer: layer.to_string(),
                    line: line.line.clone(),
                });
                tail.push_back(line.line);
                if tail.len() > 20 {
                    tail.pop_front();
                }
            }
            tail.into_iter().collect()
        });
        let code = sandbox.run(spec, Output::Lines(tx));
        (code, forward.join().unwrap_or_default())
    })
}

/// The uid and gid of `user` as recorded in a layer's `/etc/passwd`: how
/// the code layer is owned by a user that kiln created, even when that
/// layer came from the cache.
pub fn user_ids_from_layer(blob: &Path, media_type: &str, user: &str) -> Option<(u64, u64)> {
    let file = std::fs::File::open(blob).ok()?;
    let reader = unpack::decompress(file, Some(media_type)).ok()?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        let path = entry
            .path()
            .ok()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if path == "etc/passwd" {
            let mut text = String::new();
            entry.read_to_string(&mut text).ok()?;
            return passwd_ids(&text, user);
        }
    }
    None
}

/// Finds `user` in passwd text: `name:x:uid:gid:...`.
pub fn passwd_ids(text: &str, user: &str) -> Option<(u64, u64)> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 4 && fields[0] == user)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_pipeline::Installer;

    fn req(source: RequirementSource) -> LayerSlot {
        LayerSlot::Requirements {
            group: RequirementGroup::User,
            source,
            installer: Installer::Pip,
            installer_args: BTreeMap::new(),
        }
    }

    #[test]
    fn keys_chain_and_change_with_inputs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.txt"), "six==1.16.0\n").unwrap();
        let apt = LayerSlot::Apt {
            packages: vec!["jq".into()],
        };
        let reqs = req(RequirementSource::Files(vec!["r.txt".into()]));
        let a = prepare(
            &[&apt, &reqs],
            dir.path(),
            "sha256:p",
            "linux/amd64",
            Compression::gzip(),
        )
        .unwrap();
        let b = prepare(
            &[&apt, &reqs],
            dir.path(),
            "sha256:p",
            "linux/amd64",
            Compression::gzip(),
        )
        .unwrap();
        assert_eq!(a[0].key, b[0].key);
        assert_eq!(a[1].key, b[1].key);
        std::fs::write(dir.path().join("r.txt"), "six==1.17.0\n").unwrap();
        let c = prepare(
            &[&apt, &reqs],
            dir.path(),
            "sha256:p",
            "linux/amd64",
            Compression::gzip(),
        )
        .unwrap();
        assert_eq!(a[0].key, c[0].key, "apt layer unaffected by requirements");
        assert_ne!(a[1].key, c[1].key);
        let d = prepare(
            &[&apt, &reqs],
            dir.path(),
            "sha256:other",
            "linux/amd64",
            Compression::gzip(),
        )
        .unwrap();
        assert_ne!(c[0].key, d[0].key, "a new parent invalidates everything");
        assert_ne!(c[1].key, d[1].key);
    }

    #[test]
    fn warns_about_unpinned_requirements() {
        let dir = tempfile::tempdir().unwrap();
        let reqs = req(RequirementSource::List(vec![
            "six==1.16.0".into(),
            "pandas".into(),
            "# note".into(),
        ]));
        let p = prepare(
            &[&reqs],
            dir.path(),
            "sha256:p",
            "linux/amd64",
            Compression::gzip(),
        )
        .unwrap();
        assert_eq!(p[0].warnings.len(), 1);
        assert!(p[0].warnings[0].contains("pandas"), "{:?}", p[0].warnings);
        assert!(p[0].script.contains("$PIP install"), "{}", p[0].script);
        assert!(
            p[0].script
                .contains("--system-site-packages /opt/kiln/venv"),
            "{}",
            p[0].script
        );
    }

    #[test]
    fn missing_requirements_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let reqs = req(RequirementSource::Files(vec!["nope.txt".into()]));
        let err = prepare(
            &[&reqs],
            dir.path(),
            "sha256:p",
            "linux/amd64",
            Compression::gzip(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("nope.txt"), "{err}");
    }

    #[test]
    fn installer_args_become_flags() {
        let args: BTreeMap<String, String> = [
            (
                "index-url".to_string(),
                "https://pi.example/simple".to_string(),
            ),
            ("pre".to_string(), String::new()),
        ]
        .into();
        assert_eq!(
            installer_args(&args),
            "--index-url https://pi.example/simple --pre"
        );
    }

    #[test]
    fn finds_users_in_passwd() {
        let text = "root:x:0:0:root:/root:/bin/bash\ntrainer:x:1000:1001::/home/trainer:/bin/sh\n";
        assert_eq!(passwd_ids(text, "trainer"), Some((1000, 1001)));
        assert_eq!(passwd_ids(text, "nobody"), None);
    }
}
