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
use kiln_rootfs::sandbox::{BindMount, Network, OutputRoute, RunSpec, Sandbox, SandboxConfig};
use kiln_rootfs::snapshot::{self, Excludes, LayerOptions, Manifest};
use kiln_rootfs::unpack::{self, LayerBlob, UnpackOptions};
use sha2::{Digest as _, Sha256};

use crate::image;
use crate::keys;
use crate::layer::{Compression, LayerWriter};
use crate::plan::{LayerSlot, RequirementGroup, RequirementSource};
use crate::progress::{Event, Progress};
use crate::store::{Check, LayerDescriptor, Store};

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
    Sandbox(#[from] kiln_rootfs::sandbox::SandboxError),
    /// Unpacking the parent failed.
    #[error("unpacking the parent image: {0}")]
    Unpack(#[from] kiln_rootfs::unpack::UnpackError),
    /// Snapshotting failed.
    #[error("taking the layer snapshot: {0}")]
    Snapshot(#[from] kiln_rootfs::snapshot::SnapshotError),
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
    let mut out: Vec<PreparedLayer> = Vec::new();
    for slot in slots {
        let read = read_requirements(slot, base_dir)?;
        let previous = out.last().map_or(parent_digest, |l| l.key.as_str());
        if let Some(layer) = prepare_layer(slot, read, previous, platform, compression) {
            out.push(layer);
        }
    }
    Ok(out)
}

/// A requirement source as read: the name `--explain` shows it by, and
/// its bytes.
#[derive(Debug, Clone)]
struct RequirementInput {
    name: String,
    bytes: Vec<u8>,
}

/// A requirements slot's sources as bytes: the one part of preparing a
/// layer that reads files or runs commands on this machine. Empty for
/// the other slots, which read nothing.
fn read_requirements(
    slot: &LayerSlot,
    base_dir: &Path,
) -> Result<Vec<RequirementInput>, ExecError> {
    let LayerSlot::Requirements { group, source, .. } = slot else {
        return Ok(Vec::new());
    };
    let input = |name: String, bytes: Vec<u8>| RequirementInput { name, bytes };
    Ok(match source {
        RequirementSource::Files(paths) => {
            let mut read = Vec::new();
            for p in paths {
                let path = base_dir.join(p);
                let bytes = std::fs::read(&path).map_err(|e| ExecError::Input {
                    what: format!("requirements file {}", path.display()),
                    message: e.to_string(),
                })?;
                read.push(input(p.display().to_string(), bytes));
            }
            read
        }
        RequirementSource::List(list) => {
            let mut text = list.join("\n");
            text.push('\n');
            vec![input(format!("{} list", group.as_str()), text.into_bytes())]
        }
        RequirementSource::Command(argv) => {
            let bytes = run_local(argv, base_dir)?;
            vec![input(format!("`{}`", argv.join(" ")), bytes)]
        }
        RequirementSource::Pyproject { path, command } => {
            let dir = base_dir
                .join(path)
                .parent()
                .map_or_else(|| base_dir.to_path_buf(), Path::to_path_buf);
            let bytes = run_local(command, &dir)?;
            vec![input(format!("{} export", path.display()), bytes)]
        }
    })
}

/// One exec layer from its slot and its sources as read, keyed after
/// `previous` (the parent's digest, or the key of the layer before).
/// Pure, so that what the key covers can be tested with plain data.
/// `None` for the code slot, which is no exec layer.
fn prepare_layer(
    slot: &LayerSlot,
    read: Vec<RequirementInput>,
    previous: &str,
    platform: &str,
    compression: Compression,
) -> Option<PreparedLayer> {
    let Recipe {
        script,
        files,
        mut inputs,
        warnings,
    } = recipe(slot, read)?;
    inputs.insert("kiln recipe".into(), short_hash(script.as_bytes()));
    let key = keys::exec_layer(
        previous,
        platform,
        compression,
        &slot.label(),
        &script,
        &files,
    );
    Some(PreparedLayer {
        label: slot.label(),
        script,
        files,
        inputs,
        key,
        warnings,
    })
}

/// What an exec layer runs, with which files, before it is keyed.
#[derive(Default)]
struct Recipe {
    script: String,
    files: Vec<(String, Vec<u8>)>,
    inputs: BTreeMap<String, String>,
    warnings: Vec<String>,
}

/// The script and `--explain` inputs of each kind of exec slot; `None`
/// for the code slot.
fn recipe(slot: &LayerSlot, read: Vec<RequirementInput>) -> Option<Recipe> {
    let simple = |input: &str, value: String, script: String| Recipe {
        script,
        inputs: BTreeMap::from([(input.to_string(), value)]),
        ..Recipe::default()
    };
    Some(match slot {
        LayerSlot::Apt { packages } => {
            simple("apt packages", packages.join(" "), apt_script(packages))
        }
        LayerSlot::InstallUv => simple(
            "uv",
            "latest".into(),
            format!(
                "set -e\n{}\n$PIP install -q --no-cache-dir --disable-pip-version-check uv",
                ensure_venv()
            ),
        ),
        LayerSlot::Requirements {
            group,
            installer,
            installer_args: args,
            ..
        } => requirements_recipe(*group, *installer, args, read),
        LayerSlot::User { name, workdir } => {
            simple("user", name.clone(), user_script(name, workdir))
        }
        LayerSlot::Code { .. } => return None,
    })
}

/// Installs the packages and leaves apt's lists and caches out of the
/// layer.
fn apt_script(packages: &[String]) -> String {
    format!(
        "set -e\nexport DEBIAN_FRONTEND=noninteractive\napt-get update -q\napt-get install -y -q --no-install-recommends {}\napt-get clean\nrm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log",
        packages
            .iter()
            .map(|p| quote(p))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Creates the user unless the image has it (useradd, or busybox's
/// adduser) and hands it the workdir.
fn user_script(name: &str, workdir: &str) -> String {
    let n = quote(name);
    format!(
        "set -e\nif ! id -u {n} >/dev/null 2>&1; then\n  if command -v useradd >/dev/null; then useradd --create-home --user-group --shell /bin/sh {n}; else adduser -D {n}; fi\nfi\nmkdir -p {w}\nchown {n}: {w}",
        w = quote(workdir)
    )
}

/// A requirement group's layer: each source becomes a file under
/// [`INPUTS`], hashed into the inputs and warned about when it pins
/// nothing, and pip or uv installs them all into [`VENV`].
fn requirements_recipe(
    group: RequirementGroup,
    installer: Installer,
    args: &BTreeMap<String, String>,
    read: Vec<RequirementInput>,
) -> Recipe {
    let mut recipe = Recipe::default();
    for RequirementInput { name, bytes } in read {
        let loose = unpinned(&String::from_utf8_lossy(&bytes));
        if !loose.is_empty() {
            recipe.warnings.push(unpinned_warning(group, &loose));
        }
        recipe.inputs.insert(name, short_hash(&bytes));
        let file = format!("{}-{}.txt", recipe.files.len(), group_file(group));
        recipe.files.push((file, bytes));
    }
    let extra = installer_args(args);
    recipe
        .inputs
        .insert("installer".into(), format!("{installer:?} {extra}"));
    let reqs: String = recipe
        .files
        .iter()
        .map(|(n, _)| format!(" -r {INPUTS}/{n}"))
        .collect();
    let install = match installer {
        Installer::Pip => {
            format!("$PIP install -q --no-cache-dir --disable-pip-version-check{reqs} {extra}")
        }
        Installer::Uv => {
            format!("{VENV}/bin/uv pip install --python {VENV}/bin/python --no-cache{reqs} {extra}")
        }
    };
    recipe.script = format!("set -e\n{}\n{install}", ensure_venv());
    recipe
}

/// The warning for a requirement source with unpinned lines, naming them.
fn unpinned_warning(group: RequirementGroup, loose: &[String]) -> String {
    format!(
        "requirements ({}): {} not pinned to a version ({}); pin them (pkg==1.2.3) for reproducible images",
        group.as_str(),
        if loose.len() == 1 {
            "1 requirement is"
        } else {
            "some requirements are"
        },
        loose.join(", ")
    )
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
) -> (Result<i32, kiln_rootfs::sandbox::SandboxError>, Vec<String>) {
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
        let code = sandbox.run(spec, OutputRoute::Lines(tx));
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

    /// The keys, inputs and file names kiln has stored caches under: a
    /// change here makes every existing cache miss.
    #[test]
    fn keys_stay_what_existing_caches_were_stored_under() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.txt"), "six==1.16.0\nrich\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/reqs.txt"), "attrs==23.1.0\n").unwrap();
        let slots = [
            LayerSlot::Apt {
                packages: vec!["curl".into(), "jq".into()],
            },
            LayerSlot::InstallUv,
            LayerSlot::Requirements {
                group: RequirementGroup::Stack,
                source: RequirementSource::Files(vec!["r.txt".into()]),
                installer: Installer::Uv,
                installer_args: [("index-url".to_string(), "https://pi.example".to_string())]
                    .into(),
            },
            LayerSlot::Code {
                source_root: ".".into(),
                dockerignore: None,
                workdir: "/app".into(),
            },
            req(RequirementSource::List(vec!["numpy==2.0.0".into()])),
            LayerSlot::Requirements {
                group: RequirementGroup::Pyproject,
                source: RequirementSource::Pyproject {
                    path: "sub/pyproject.toml".into(),
                    command: vec!["cat".into(), "reqs.txt".into()],
                },
                installer: Installer::Pip,
                installer_args: BTreeMap::new(),
            },
            LayerSlot::User {
                name: "trainer".into(),
                workdir: "/app".into(),
            },
        ];
        let refs: Vec<&LayerSlot> = slots.iter().collect();
        let p = prepare(
            &refs,
            dir.path(),
            "sha256:p",
            "linux/amd64",
            Compression::zstd(),
        )
        .unwrap();
        // Label, key, file names, inputs.
        type Stored = (
            &'static str,
            &'static str,
            &'static [&'static str],
            &'static [(&'static str, &'static str)],
        );
        let expected: [Stored; 6] = [
            (
                "apt packages",
                "fea70d578994674e78ad11fbf0d8ab049ce5713ce29410d6c8b07ed349eb020e",
                &[],
                &[
                    ("apt packages", "curl jq"),
                    ("kiln recipe", "4d480b6e8769941b"),
                ],
            ),
            (
                "uv",
                "6ff7f614cb88ff3efcaa3ba3e6dce526f70fb20264f917de519813bac559479d",
                &[],
                &[("kiln recipe", "0b0c3a5dfa1d91a7"), ("uv", "latest")],
            ),
            (
                "requirements (stack)",
                "a87861413cc31f2d87c41b5bf91951d7dde27b3c9dc4bbed87ff7d1780f81bf1",
                &["0-stack.txt"],
                &[
                    ("installer", "Uv --index-url https://pi.example"),
                    ("kiln recipe", "0a0588f4773c1ba0"),
                    ("r.txt", "779901cfabd564a6"),
                ],
            ),
            (
                "requirements (user)",
                "83ec08d213be0a66546a5693d7338948a0e064f959076a8b3b4414249eeb5450",
                &["0-requirements.txt"],
                &[
                    ("installer", "Pip "),
                    ("kiln recipe", "873313624c88bcb8"),
                    ("user list", "face025c59f708ed"),
                ],
            ),
            (
                "requirements (pyproject)",
                "0bae388252010f149b13c7a0d935b8c6c35b18c15e67c886ebb765756a1a78a2",
                &["0-pyproject.txt"],
                &[
                    ("installer", "Pip "),
                    ("kiln recipe", "b3debe581cc06888"),
                    ("sub/pyproject.toml export", "9ff158354191429a"),
                ],
            ),
            (
                "user trainer",
                "4406742e307410be12207d76b12b6d12956d879b4e92a7418e81a8687523d06f",
                &[],
                &[("kiln recipe", "ca776c017f26b4ff"), ("user", "trainer")],
            ),
        ];
        assert_eq!(p.len(), expected.len());
        for (layer, (label, key, files, inputs)) in p.iter().zip(expected) {
            assert_eq!(layer.label, label);
            assert_eq!(layer.key, key, "{label}");
            let names: Vec<&str> = layer.files.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, files, "{label}");
            let inputs: BTreeMap<String, String> = inputs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(layer.inputs, inputs, "{label}");
        }
        assert_eq!(p[2].warnings.len(), 1, "{:?}", p[2].warnings);
        assert!(p[2].warnings[0].contains("(rich)"), "{:?}", p[2].warnings);
    }

    /// The plain data one layer's key is made from.
    #[derive(Clone)]
    struct KeyInputs {
        slot: LayerSlot,
        read: Vec<RequirementInput>,
        previous: &'static str,
        platform: &'static str,
        compression: Compression,
    }

    impl KeyInputs {
        fn key(&self) -> String {
            prepare_layer(
                &self.slot,
                self.read.clone(),
                self.previous,
                self.platform,
                self.compression,
            )
            .unwrap()
            .key
        }
    }

    fn read(name: &str, text: &str) -> RequirementInput {
        RequirementInput {
            name: name.into(),
            bytes: text.as_bytes().to_vec(),
        }
    }

    /// A requirements layer read from one file.
    fn requirements() -> KeyInputs {
        KeyInputs {
            slot: req(RequirementSource::Files(vec!["r.txt".into()])),
            read: vec![read("r.txt", "six==1.16.0\n")],
            previous: "sha256:p",
            platform: "linux/amd64",
            compression: Compression::gzip(),
        }
    }

    /// Edits the requirements slot's group, installer and arguments.
    fn edit_requirements(
        k: &mut KeyInputs,
        edit: fn(&mut RequirementGroup, &mut Installer, &mut BTreeMap<String, String>),
    ) {
        if let LayerSlot::Requirements {
            group,
            installer,
            installer_args,
            ..
        } = &mut k.slot
        {
            edit(group, installer, installer_args);
        }
    }

    #[rstest::rstest]
    #[case::nothing(|_: &mut KeyInputs| {}, false)]
    #[case::parent(|k: &mut KeyInputs| k.previous = "sha256:other", true)]
    #[case::platform(|k: &mut KeyInputs| k.platform = "linux/arm64", true)]
    #[case::compression(|k: &mut KeyInputs| k.compression = Compression::zstd(), true)]
    #[case::compression_level(
        |k: &mut KeyInputs| k.compression = Compression::Gzip { level: 9 },
        true
    )]
    #[case::requirement_bytes(
        |k: &mut KeyInputs| k.read[0].bytes = b"six==1.17.0\n".to_vec(),
        true
    )]
    #[case::another_source(
        |k: &mut KeyInputs| k.read.push(read("s.txt", "rich==13.0.0\n")),
        true
    )]
    #[case::group(
        |k: &mut KeyInputs| edit_requirements(k, |g, _, _| *g = RequirementGroup::Stack),
        true
    )]
    #[case::installer(
        |k: &mut KeyInputs| edit_requirements(k, |_, i, _| *i = Installer::Uv),
        true
    )]
    #[case::installer_args(
        |k: &mut KeyInputs| edit_requirements(k, |_, _, a| {
            a.insert("pre".into(), String::new());
        }),
        true
    )]
    // Where the bytes come from only names them for `--explain`.
    #[case::source_name(|k: &mut KeyInputs| k.read[0].name = "other/r.txt".into(), false)]
    #[case::source_kind(
        |k: &mut KeyInputs| k.slot = req(RequirementSource::List(vec!["six==1.16.0".into()])),
        false
    )]
    fn requirements_keys_follow_their_inputs(
        #[case] change: fn(&mut KeyInputs),
        #[case] changes: bool,
    ) {
        let before = requirements();
        let mut after = before.clone();
        change(&mut after);
        assert_eq!(before.key() != after.key(), changes);
    }

    fn apt(packages: &[&str]) -> LayerSlot {
        LayerSlot::Apt {
            packages: packages.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn user(name: &str, workdir: &str) -> LayerSlot {
        LayerSlot::User {
            name: name.into(),
            workdir: workdir.into(),
        }
    }

    #[rstest::rstest]
    #[case::same_packages(apt(&["jq"]), apt(&["jq"]), false)]
    #[case::more_packages(apt(&["jq"]), apt(&["curl", "jq"]), true)]
    #[case::other_package(apt(&["jq"]), apt(&["yq"]), true)]
    #[case::same_user(user("app", "/app"), user("app", "/app"), false)]
    #[case::user_name(user("app", "/app"), user("trainer", "/app"), true)]
    #[case::user_workdir(user("app", "/app"), user("app", "/srv"), true)]
    #[case::slot_kind(LayerSlot::InstallUv, apt(&["uv"]), true)]
    fn slot_keys_follow_what_the_slot_says(
        #[case] before: LayerSlot,
        #[case] after: LayerSlot,
        #[case] changes: bool,
    ) {
        let key = |slot: LayerSlot| {
            KeyInputs {
                slot,
                read: Vec::new(),
                ..requirements()
            }
            .key()
        };
        assert_eq!(key(before) != key(after), changes);
    }

    #[test]
    fn the_code_slot_is_no_exec_layer() {
        let code = LayerSlot::Code {
            source_root: ".".into(),
            dockerignore: None,
            workdir: "/app".into(),
        };
        let p = prepare_layer(
            &code,
            Vec::new(),
            "sha256:p",
            "linux/amd64",
            Compression::gzip(),
        );
        assert!(p.is_none());
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
