//! The orchestrator image: the image kiln's Kubernetes backend runs
//! `kiln orchestrate` in, built from the kiln binary that is running (or one
//! given by path) and pushed to the pipeline's registry.
//!
//! Built from the running binary, not pulled from a published image, so the
//! orchestrator in the cluster is exactly the kiln the user runs: no version
//! skew between the two ends, nothing to fetch from the internet, and it
//! works with air-gapped registries and development builds alike.
//!
//! The image is self-contained and sits on no user image: one layer with
//!
//! - the binary at `/usr/local/bin/kiln`;
//! - every shared library it links and the dynamic loader, each at the path
//!   the loader resolved it to on this machine (a library outside the
//!   loader's default directories also lands in `LD_LIBRARY_PATH`, which is
//!   then the only variable besides `PATH`);
//! - empty `/proc /dev /sys /tmp /etc` and
//!   `/var/run/secrets/kubernetes.io/serviceaccount` for the runtime's mounts;
//! - `/etc/passwd` and `/etc/group` with root and `nobody` (65534), so
//!   `runAsUser: 65534` and name lookups work.
//!
//! Its config: Entrypoint `/usr/local/bin/kiln`, Cmd `orchestrate`, `PATH`,
//! an empty User (root unless the pod says otherwise), and this machine's
//! platform. The layer is gzip, which every runtime reads (containerd of a
//! Kubernetes 1.20 cluster included; zstd needs newer ones). No CA bundle is
//! added: the API server's CA comes with the service account, and the host's
//! bundle would tie the image to this machine; an orchestrator that must
//! reach a registry over public TLS would need one.
//!
//! The libraries are found with `ldd`, not by reading the ELF file: `ldd`
//! asks this machine's own dynamic loader to resolve them exactly as it will
//! when kiln starts (transitive dependencies, `RUNPATH`, `ld.so.cache`,
//! hwcaps subdirectories), where reading `DT_NEEDED` would mean writing a
//! second loader's search rules and getting them subtly wrong. `ldd` runs
//! the loader on the file, which is a hazard only for untrusted binaries;
//! this is kiln's own. It runs only when the layer is not in the cache.
//!
//! The tar is deterministic (sorted paths, mtime 0, owner 0:0, normalized
//! modes) and pigz-style gzip does not depend on the core count, so the
//! same binary and libraries give the same digest on every machine. The tag
//! is `kiln-orchestrator-<kiln version>-<12 hex of the layer digest>`: a
//! registry that has it has this image (the manifest is pushed only after
//! its blobs), so the common path is one `stat`, one cache lookup and one
//! HEAD. The compressed layer is kept in kiln's content store, keyed by the
//! binary's device, inode, size and mtime, so a repeated call never re-reads
//! or re-compresses a 30 MB binary.
//!
//! The layer is built with [`kiln_builder::single_layer`], the builder's
//! one-layer images from a file tree, and pushed with it.
//!
//! ```no_run
//! # async fn example() -> Result<(), kiln_runner::k8s::orchestrator_image::OrchestratorImageError> {
//! use kiln_runner::k8s::orchestrator_image::{OrchestratorImageOptions, push_orchestrator_image};
//!
//! let client = kiln_oci::Client::new(Default::default())
//!     .expect("a registry client");
//! let options = OrchestratorImageOptions::new("/home/me/.cache/kiln");
//! let image = push_orchestrator_image(&client, "127.0.0.1:5000/team/quickstart", &options).await?;
//! println!("{} (uploaded: {})", image.reference, image.uploaded);
//! # Ok(()) }
//! ```

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use kiln_builder::BuildError;
use kiln_builder::image;
use kiln_builder::keys::{self, FileIdentity};
use kiln_builder::layer::{Compression, LayerError};
use kiln_builder::registry::{Registry, RegistryFailure, TargetPlatform};
use kiln_builder::single_layer::{self, FileTree, SingleLayerImage, TreeEntry};
use kiln_builder::store::{Check, Digest, LayerDescriptor, Store, StoreError};
use serde_json::{Value, json};

/// Where the binary lives in the image.
pub const BINARY_PATH: &str = "/usr/local/bin/kiln";

/// The kiln version the tag carries (the workspace shares one version).
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Part of the cache key: bumped whenever the layer's layout changes, so a
/// cached layer built by an older layout is never reused for a binary that
/// did not change (a binary passed by path, as tests do).
const LAYOUT: &str = "kiln-orchestrator-layer-v1";

/// `PATH` in the image.
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Empty directories the runtime mounts over (`/proc`, `/dev`, `/sys`, the
/// service account's token) or that programs expect (`/tmp`, `/etc`).
const EMPTY_DIRS: [(&str, u32); 6] = [
    ("dev", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("var/run/secrets/kubernetes.io/serviceaccount", 0o755),
];

/// `/etc/passwd`: root, and `nobody` for pods that run as 65534.
const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n";

/// `/etc/group`, to match.
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";

/// How to build and push the orchestrator image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrchestratorImageOptions {
    /// The kiln binary to put in the image; `None` for the running one
    /// (`std::env::current_exe`). Tests pass the kiln they built.
    pub binary: Option<PathBuf>,
    /// kiln's content store (`--cache-dir`, by default
    /// [`kiln_builder::store::default_cache_dir`]): where the layer is cached.
    pub cache_dir: PathBuf,
    /// Blob uploads at once.
    pub concurrency: usize,
}

impl OrchestratorImageOptions {
    /// The running binary, cached in `cache_dir`, four uploads at once.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            binary: None,
            cache_dir: cache_dir.into(),
            concurrency: 4,
        }
    }
}

/// The pushed orchestrator image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrchestratorImage {
    /// `repository@sha256:...`: what a pod spec should name, so the cluster
    /// runs exactly this image whatever later happens to the tag.
    pub reference: String,
    /// `kiln-orchestrator-<version>-<12 hex of the layer digest>`.
    pub tag: String,
    /// Whether anything was pushed; `false` when the registry already had
    /// the tag, the common case.
    pub uploaded: bool,
}

/// Why the orchestrator image could not be built or pushed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestratorImageError {
    /// The orchestrator runs in Linux containers, built from this machine's
    /// binary: another OS has no binary to offer.
    #[error("the orchestrator image is built from kiln's own Linux binary; this machine runs {os}")]
    UnsupportedOs {
        /// `std::env::consts::OS`.
        os: String,
    },
    /// No OCI architecture name is known for this machine's.
    #[error("no OCI platform is known for the {arch} architecture")]
    UnsupportedArch {
        /// `std::env::consts::ARCH`.
        arch: String,
    },
    /// The repository is not a `registry/repository` name.
    #[error("invalid repository {repository:?} for the orchestrator image: {reason}")]
    InvalidRepository {
        /// As given.
        repository: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The running binary could not be found.
    #[error("finding kiln's own binary: {source}")]
    CurrentExe {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file of the image could not be read.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What kiln was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `ldd` could not be started.
    #[error("running ldd on {} (it lists the shared libraries to copy; it comes with glibc): {source}", binary.display())]
    LddUnavailable {
        /// The binary.
        binary: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `ldd` failed.
    #[error("ldd {} failed ({status}): {stderr}", binary.display())]
    LddFailed {
        /// The binary.
        binary: PathBuf,
        /// How it ended.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The loader cannot find a library the binary needs: the image would
    /// not start either.
    #[error("{} needs {library}, which this machine's dynamic loader cannot find", binary.display())]
    LibraryNotFound {
        /// The binary.
        binary: PathBuf,
        /// The library's name.
        library: String,
    },
    /// ldd named a library by a path that cannot be placed in the image
    /// as it is (relative, or with `.` or `..` in it).
    #[error("ldd named the library {}, which is not an absolute, plain path", path.display())]
    LibraryPath {
        /// As ldd printed it.
        path: PathBuf,
    },
    /// A file changed size while it was archived; the layer would be
    /// corrupt.
    #[error("{} changed while it was being archived ({expected} bytes expected, {found} read)", path.display())]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// Size when archiving started.
        expected: u64,
        /// Bytes read.
        found: u64,
    },
    /// Compressing the layer failed.
    #[error("orchestrator image layer: {0}")]
    Layer(#[from] LayerError),
    /// kiln's content store failed.
    #[error("layer cache: {0}")]
    Store(#[from] StoreError),
    /// Asking the registry for the tag failed.
    #[error("checking {repository}:{tag}: {source}")]
    Registry {
        /// The repository.
        repository: String,
        /// The tag.
        tag: String,
        /// The registry's error.
        #[source]
        source: RegistryFailure,
    },
    /// Pushing the image failed.
    #[error(transparent)]
    Push(Box<BuildError>),
}

/// Builds (once per binary) and pushes the image that runs
/// `kiln orchestrate` in a cluster, to `repository`
/// (`127.0.0.1:5000/team/quickstart`), and names it by digest.
///
/// When the registry already has the tag nothing is built or uploaded (a
/// cache lookup and one HEAD). Blocking work (ldd, archiving, compression)
/// runs on the caller's thread on a cache miss, as the builder's other
/// layers do.
pub async fn push_orchestrator_image<R: Registry>(
    registry: &R,
    repository: &str,
    options: &OrchestratorImageOptions,
) -> Result<OrchestratorImage, OrchestratorImageError> {
    check_repository(repository)?;
    let platform = platform_for(std::env::consts::OS, std::env::consts::ARCH)?;
    let binary = match &options.binary {
        Some(path) => std::path::absolute(path).map_err(|source| OrchestratorImageError::Io {
            action: "resolving",
            path: path.clone(),
            source,
        })?,
        None => std::env::current_exe()
            .map_err(|source| OrchestratorImageError::CurrentExe { source })?,
    };
    let store = Store::new(&options.cache_dir)?;
    let key = identity_key(&binary)?;
    let (layer, built) = match store.lookup(&key, Check::Size)? {
        Some(layer) => (layer, None),
        None => {
            let built = build_layer(&store, &binary)?;
            // A binary replaced while it was read must not be cached under
            // its old identity; the layer itself is consistent either way.
            if identity_key(&binary)? == key {
                store.insert(&key, &built.descriptor)?;
            }
            (built.descriptor.clone(), Some(built))
        }
    };
    let tag = orchestrator_tag(VERSION, &layer.digest);
    let registry_err = |source| OrchestratorImageError::Registry {
        repository: repository.to_string(),
        tag: tag.clone(),
        source,
    };
    if let Some(digest) = registry
        .manifest_digest(repository, &tag)
        .await
        .map_err(registry_err)?
    {
        return Ok(OrchestratorImage {
            reference: format!("{repository}@{digest}"),
            tag,
            uploaded: false,
        });
    }
    // Not in the registry: the library list (for the config) comes from
    // ldd, which a cached layer skipped.
    let libraries = match built {
        Some(b) => b.libraries,
        None => shared_libraries(&binary)?,
    };
    let config = orchestrator_config(&platform, &layer.diff_id, &libraries);
    let image = SingleLayerImage {
        name: "kiln orchestrator",
        layer: &layer,
        created_by: &history_line(),
        config: &config,
        repository,
        tag: &tag,
    };
    let digest = single_layer::push(registry, &store, &image, options.concurrency)
        .await
        .map_err(|e| OrchestratorImageError::Push(Box::new(e)))?;
    Ok(OrchestratorImage {
        reference: format!("{repository}@{digest}"),
        tag,
        uploaded: true,
    })
}

/// The tag for an orchestrator image of kiln `version` whose layer is
/// `layer`: the version for people, the digest so that two builds of the
/// same version (development builds) never share a tag. Characters a tag
/// may not hold (`+` of build metadata) become `-`.
pub fn orchestrator_tag(version: &str, layer: &Digest) -> String {
    let version: String = version
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let hex = layer.hex();
    format!(
        "kiln-orchestrator-{version}-{}",
        hex.get(..12).unwrap_or(hex)
    )
}

/// A repository without tag or digest.
fn check_repository(repository: &str) -> Result<(), OrchestratorImageError> {
    let invalid = |reason: String| OrchestratorImageError::InvalidRepository {
        repository: repository.to_string(),
        reason,
    };
    let parsed = kiln_pipeline::reference::parse(repository).map_err(|e| invalid(e.to_string()))?;
    if parsed.tag().is_some() || parsed.digest().is_some() {
        return Err(invalid(
            "give the repository alone; kiln picks the tag and refers to the image by digest"
                .into(),
        ));
    }
    Ok(())
}

/// The OCI platform of a Rust `(OS, ARCH)` pair.
fn platform_for(os: &str, arch: &str) -> Result<TargetPlatform, OrchestratorImageError> {
    if os != "linux" {
        return Err(OrchestratorImageError::UnsupportedOs { os: os.into() });
    }
    let architecture = match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        _ => return Err(OrchestratorImageError::UnsupportedArch { arch: arch.into() }),
    };
    Ok(TargetPlatform {
        os: "linux".into(),
        architecture: architecture.into(),
        variant: None,
    })
}

/// The cache key of a binary: its device, inode, size and mtime (a rebuilt
/// or replaced binary changes at least one), plus the layer layout.
fn identity_key(binary: &Path) -> Result<String, OrchestratorImageError> {
    let meta = fs::metadata(binary).map_err(|source| OrchestratorImageError::Io {
        action: "reading metadata of",
        path: binary.to_path_buf(),
        source,
    })?;
    Ok(keys::orchestrator_layer(
        LAYOUT,
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        },
    ))
}

/// A layer just built, with the libraries that went into it.
struct BuiltLayer {
    descriptor: LayerDescriptor,
    libraries: Vec<PathBuf>,
}

/// Finds the libraries, archives the root and stores it gzip-compressed.
fn build_layer(store: &Store, binary: &Path) -> Result<BuiltLayer, OrchestratorImageError> {
    let libraries = shared_libraries(binary)?;
    let root = root_entries(binary, &libraries)?;
    let descriptor =
        single_layer::build_layer(store, &root, Compression::gzip()).map_err(layer_error)?;
    Ok(BuiltLayer {
        descriptor,
        libraries,
    })
}

/// A layer error as this module has always reported it: reading a file of
/// the root is [`OrchestratorImageError::Io`] or [`OrchestratorImageError::FileChanged`],
/// the rest (compression, the store) [`OrchestratorImageError::Layer`].
fn layer_error(error: LayerError) -> OrchestratorImageError {
    match error {
        LayerError::Io {
            action,
            path,
            source,
        } => OrchestratorImageError::Io {
            action,
            path,
            source,
        },
        LayerError::FileChanged {
            path,
            expected,
            found,
        } => OrchestratorImageError::FileChanged {
            path,
            expected,
            found,
        },
        other => OrchestratorImageError::Layer(other),
    }
}

/// The shared libraries and loader `binary` needs, from `ldd`; none for a
/// static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, OrchestratorImageError> {
    let out = Command::new("ldd")
        .arg(binary)
        .env("LC_ALL", "C")
        .output()
        .map_err(|source| OrchestratorImageError::LddUnavailable {
            binary: binary.to_path_buf(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // glibc's ldd exits 1 for a static (non-PIE) executable.
        if stderr.contains("not a dynamic executable")
            || stdout.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(OrchestratorImageError::LddFailed {
            binary: binary.to_path_buf(),
            status: out.status.to_string(),
            stderr: stderr.trim().to_string(),
        });
    }
    parse_ldd(&stdout).map_err(|library| OrchestratorImageError::LibraryNotFound {
        binary: binary.to_path_buf(),
        library,
    })
}

/// The absolute paths in `ldd` output, in order, without repeats:
///
/// ```text
///     linux-vdso.so.1 (0x00007ffc...)                      the kernel's: skipped
///     libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)  taken
///     /lib64/ld-linux-x86-64.so.2 (0x...)                  the loader: taken
///     libfoo.so.1 => not found                             Err("libfoo.so.1")
///     statically linked                                    nothing
/// ```
fn parse_ldd(output: &str) -> Result<Vec<PathBuf>, String> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, target) = match line.split_once("=>") {
            Some((name, target)) => (name.trim(), target.trim()),
            None => ("", line),
        };
        if target.starts_with("not found") {
            return Err(name.to_string());
        }
        let path = target
            .rsplit_once(" (0x")
            .map_or(target, |(path, _)| path)
            .trim();
        if path.starts_with('/') && !paths.iter().any(|p| p.as_os_str() == path) {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// The image's root. Every directory comes before what it holds; the
/// first entry for a path wins: the binary and kiln's files over a library
/// that happens to share their path.
fn root_entries(binary: &Path, libraries: &[PathBuf]) -> Result<FileTree, OrchestratorImageError> {
    let mut root = FileTree::new();
    for (dir, mode) in EMPTY_DIRS {
        root.add(dir, TreeEntry::Dir { mode });
    }
    root.add(
        BINARY_PATH.trim_start_matches('/'),
        TreeEntry::Copy {
            source: binary.to_path_buf(),
            mode: 0o755,
        },
    );
    for (path, content) in [("etc/passwd", PASSWD), ("etc/group", GROUP)] {
        let content = content.as_bytes().to_vec();
        root.add(
            path,
            TreeEntry::Bytes {
                content,
                mode: 0o644,
            },
        );
    }
    for library in libraries {
        let path_err = || OrchestratorImageError::LibraryPath {
            path: library.clone(),
        };
        let relative = image_path(library).ok_or_else(path_err)?;
        let meta = fs::metadata(library).map_err(|source| OrchestratorImageError::Io {
            action: "reading metadata of",
            path: library.clone(),
            source,
        })?;
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        let copy = TreeEntry::Copy {
            source: library.clone(),
            mode,
        };
        if !root.add(&relative, copy) {
            return Err(path_err());
        }
    }
    Ok(root)
}

/// `/lib/x/libc.so.6` -> `lib/x/libc.so.6`; `None` for a relative path or
/// one with `..` or `.` in it.
fn image_path(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::Prefix(_) | Component::CurDir | Component::ParentDir => return None,
        }
    }
    (path.is_absolute() && !parts.is_empty()).then(|| parts.join("/"))
}

/// The image config: entrypoint, command, environment, platform, the one
/// layer's diffID, fixed times.
fn orchestrator_config(
    platform: &TargetPlatform,
    diff_id: &Digest,
    libraries: &[PathBuf],
) -> Value {
    let mut env = vec![PATH_ENV.to_string()];
    if let Some(dirs) = library_path(libraries) {
        env.push(format!("LD_LIBRARY_PATH={dirs}"));
    }
    let created = image::rfc3339(0);
    let mut config = json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "created": created,
        "config": {
            "Entrypoint": [BINARY_PATH],
            "Cmd": ["orchestrate"],
            "Env": env,
            "User": "",
            "Labels": {
                "org.opencontainers.image.title": "kiln orchestrator",
                "org.opencontainers.image.version": VERSION,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id.as_str()]},
        "history": [{
            "created": created,
            "created_by": history_line(),
            "comment": "kiln",
        }],
    });
    if let (Some(variant), Some(object)) = (&platform.variant, config.as_object_mut()) {
        object.insert("variant".into(), json!(variant));
    }
    config
}

fn history_line() -> String {
    format!("COPY kiln {BINARY_PATH} # with its shared libraries and loader")
}

/// `LD_LIBRARY_PATH` for libraries the loader found outside its default
/// directories (through `RUNPATH` or `ld.so.conf`, which the image lacks);
/// `None` when all are in `/lib`, `/usr/lib`, `/lib64`, `/usr/lib64` or a
/// multiarch directory under them, as usual.
fn library_path(libraries: &[PathBuf]) -> Option<String> {
    const DEFAULT: [&str; 4] = ["/lib", "/usr/lib", "/lib64", "/usr/lib64"];
    let is_default = |dir: &Path| {
        let text = dir.to_string_lossy();
        DEFAULT.contains(&text.as_ref())
            || dir.parent().is_some_and(|p| {
                DEFAULT[..2].contains(&p.to_string_lossy().as_ref())
                    && dir
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().contains("-linux-"))
            })
    };
    let mut dirs: Vec<String> = Vec::new();
    for dir in libraries.iter().filter_map(|l| l.parent()) {
        let text = dir.to_string_lossy().into_owned();
        if !is_default(dir) && !dirs.contains(&text) {
            dirs.push(text);
        }
    }
    (!dirs.is_empty()).then(|| dirs.join(":"))
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Read as _;

    use kiln_builder::layer::TarOptions;

    use super::*;

    const DEBIAN_LDD: &str = "\tlinux-vdso.so.1 (0x00007ff967332000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007ff967301000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007ff967221000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007ff965e1e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007ff967334000)
";

    #[test]
    fn ldd_output_gives_libraries_and_loader() {
        let paths = parse_ldd(DEBIAN_LDD).unwrap();
        let shown: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            shown,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libm.so.6",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2",
            ]
        );
    }

    #[test]
    fn ldd_output_edge_cases() {
        // Old glibc: the vdso with an empty target; a library twice.
        let old = "\tlinux-vdso.so.1 =>  (0x00007ffd)\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n\
                   \tlibc.so.6 => /lib/libc.so.6 (0x1)\n\t/lib/ld-linux.so.2 (0x2)\n";
        assert_eq!(
            parse_ldd(old).unwrap(),
            [PathBuf::from("/lib/libc.so.6"), "/lib/ld-linux.so.2".into()]
        );
        // musl's ldd names the loader as libc.
        let musl = "\t/lib/ld-musl-x86_64.so.1 (0x7f)\n\tlibc.musl-x86_64.so.1 => /lib/ld-musl-x86_64.so.1 (0x7f)\n";
        assert_eq!(
            parse_ldd(musl).unwrap(),
            [PathBuf::from("/lib/ld-musl-x86_64.so.1")]
        );
        assert_eq!(
            parse_ldd("\tstatically linked\n").unwrap(),
            Vec::<PathBuf>::new()
        );
        assert_eq!(
            parse_ldd("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n\tlibssl.so.3 => not found\n"),
            Err("libssl.so.3".to_string())
        );
    }

    #[test]
    fn ldd_finds_this_test_binarys_libraries() {
        let me = std::env::current_exe().unwrap();
        let libraries = shared_libraries(&me).unwrap();
        assert!(
            libraries
                .iter()
                .any(|l| l.to_string_lossy().contains("libc.so")),
            "{libraries:?}"
        );
        assert!(libraries.iter().all(|l| l.is_absolute() && l.exists()));
    }

    #[test]
    fn tags_carry_version_and_layer_digest() {
        let layer = Digest::of(b"layer");
        let hex = layer.hex().to_string();
        assert_eq!(
            orchestrator_tag("0.1.0", &layer),
            format!("kiln-orchestrator-0.1.0-{}", &hex[..12])
        );
        // Build metadata's `+` is not allowed in a tag.
        let tag = orchestrator_tag("1.2.0-rc.1+git.abc", &layer);
        assert_eq!(
            tag,
            format!("kiln-orchestrator-1.2.0-rc.1-git.abc-{}", &hex[..12])
        );
        assert!(tag.len() <= 128);
        assert!(orchestrator_tag(&"9".repeat(500), &layer).len() <= 128);
    }

    #[test]
    fn platforms_by_rust_arch() {
        let arch = |a: &str| platform_for("linux", a).map(|p| p.to_string()).ok();
        assert_eq!(arch("x86_64").as_deref(), Some("linux/amd64"));
        assert_eq!(arch("aarch64").as_deref(), Some("linux/arm64"));
        assert_eq!(arch("sparc"), None);
        assert!(matches!(
            platform_for("macos", "aarch64"),
            Err(OrchestratorImageError::UnsupportedOs { .. })
        ));
    }

    #[test]
    fn repositories_must_not_carry_a_tag_or_digest() {
        assert!(check_repository("127.0.0.1:5000/team/quickstart").is_ok());
        assert!(check_repository("127.0.0.1:5000/team/quickstart:v1").is_err());
        assert!(check_repository("reg.example/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").is_err());
        assert!(check_repository("").is_err());
    }

    #[test]
    fn library_path_only_for_libraries_outside_default_dirs() {
        let libs = |paths: &[&str]| paths.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            library_path(&libs(&[
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/lib/aarch64-linux-gnu/libm.so.6",
                "/lib64/ld-linux-x86-64.so.2",
                "/usr/lib64/libz.so.1",
            ])),
            None
        );
        assert_eq!(
            library_path(&libs(&[
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/local/lib/libfoo.so.1",
                "/opt/x/lib/libbar.so",
                "/usr/local/lib/libbaz.so",
            ]))
            .as_deref(),
            Some("/usr/local/lib:/opt/x/lib")
        );
    }

    /// Entries of a tar: (path, type, mode, uid, gid, mtime, content).
    type TarEntry = (String, char, u32, u64, u64, u64, Vec<u8>);

    fn read_tar(bytes: &[u8]) -> Vec<TarEntry> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut content = Vec::new();
                e.read_to_end(&mut content).unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    match h.entry_type() {
                        tar::EntryType::Directory => 'd',
                        tar::EntryType::Regular => 'f',
                        other => panic!("unexpected {other:?}"),
                    },
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.mtime().unwrap(),
                    content,
                )
            })
            .collect()
    }

    /// A fake binary and two "libraries", one reached through a symlink.
    fn sample() -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("kiln");
        fs::write(&bin, b"\x7fELF binary").unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o700)).unwrap();
        let libdir = dir.path().join("lib");
        fs::create_dir(&libdir).unwrap();
        fs::write(libdir.join("libc.so.6.real"), b"libc bytes").unwrap();
        std::os::unix::fs::symlink("libc.so.6.real", libdir.join("libc.so.6")).unwrap();
        let loader = libdir.join("ld.so");
        fs::write(&loader, b"loader bytes").unwrap();
        fs::set_permissions(&loader, fs::Permissions::from_mode(0o755)).unwrap();
        (dir, bin, vec![libdir.join("libc.so.6"), loader])
    }

    #[test]
    fn root_tar_is_deterministic_and_complete() {
        let (dir, bin, libs) = sample();
        let root = root_entries(&bin, &libs).unwrap();
        let first = root.write_tar(Vec::new(), &TarOptions::default()).unwrap();
        // Same content, other mtimes and permissions on disk: same bytes.
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let file = File::options().append(true).open(&bin).unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7))
            .unwrap();
        let again = root_entries(&bin, &libs)
            .unwrap()
            .write_tar(Vec::new(), &TarOptions::default())
            .unwrap();
        assert!(first == again, "the tar differs between two writes");

        let entries = read_tar(&first);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "entries are sorted");
        for (path, ..) in &entries {
            let parent = Path::new(path.trim_end_matches('/')).parent().unwrap();
            if parent != Path::new("") {
                let parent = format!("{}/", parent.display());
                let at = names.iter().position(|n| *n == parent);
                let me = names.iter().position(|n| n == path);
                assert!(at < me, "{parent} must come before {path}");
            }
        }
        for (path, _, _, uid, gid, mtime, _) in &entries {
            assert_eq!((*uid, *gid, *mtime), (0, 0, 0), "{path}");
        }
        let get = |name: &str| {
            entries
                .iter()
                .find(|e| e.0 == name)
                .unwrap_or_else(|| panic!("{name} missing from {names:?}"))
        };
        for dir in [
            "dev/",
            "proc/",
            "sys/",
            "etc/",
            "var/run/secrets/kubernetes.io/serviceaccount/",
        ] {
            assert_eq!(get(dir).1, 'd');
        }
        assert_eq!(get("tmp/").2, 0o1777);
        let kiln = get("usr/local/bin/kiln");
        assert_eq!(
            (kiln.1, kiln.2, kiln.6.as_slice()),
            ('f', 0o755, &b"\x7fELF binary"[..])
        );
        let libc = format!("{}/lib/libc.so.6", image_path(dir.path()).unwrap());
        let libc = get(&libc);
        assert_eq!(
            (libc.1, libc.2, libc.6.as_slice()),
            ('f', 0o644, &b"libc bytes"[..])
        );
        let loader = format!("{}/lib/ld.so", image_path(dir.path()).unwrap());
        assert_eq!(get(&loader).2, 0o755);
        let passwd = String::from_utf8(get("etc/passwd").6.clone()).unwrap();
        assert!(passwd.starts_with("root:x:0:0:"));
        assert!(passwd.contains("\nnobody:x:65534:65534:"));
        let group = String::from_utf8(get("etc/group").6.clone()).unwrap();
        assert_eq!(group, "root:x:0:\nnobody:x:65534:\n");
    }

    /// The layer of a root that does not depend on the machine (no
    /// libraries, a fixed fake binary). Pinned: these are the bytes the
    /// image had when it was written by a tar writer of its own, and a
    /// change here changes every orchestrator image's tag, so caches miss.
    #[test]
    fn root_layer_digest_is_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("kiln");
        fs::write(&bin, b"\x7fELF pinned binary\n").unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o700)).unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::new(store_dir.path()).unwrap();
        let root = root_entries(&bin, &[]).unwrap();
        let layer = single_layer::build_layer(&store, &root, Compression::gzip()).unwrap();
        assert_eq!(
            (layer.diff_id.as_str(), layer.digest.as_str()),
            (
                "sha256:7fd2c69582ea52acf64fa57e79d4ba075b2d9aaa845e1742cbb78220b4dcf554",
                "sha256:6ba6e054e48000f2a20127a876296ca66fd20454f508d00fd4ffcd93cb8c892a"
            )
        );
    }

    #[test]
    fn relative_or_climbing_library_paths_are_refused() {
        assert_eq!(
            image_path(Path::new("/lib/libc.so")).as_deref(),
            Some("lib/libc.so")
        );
        assert_eq!(image_path(Path::new("lib/libc.so")), None);
        assert_eq!(image_path(Path::new("/lib/../etc/passwd")), None);
        assert_eq!(image_path(Path::new("/")), None);
    }

    #[test]
    fn config_names_entrypoint_cmd_env_and_platform() {
        let platform = platform_for("linux", "x86_64").unwrap();
        let diff = Digest::of(b"tar");
        let config = orchestrator_config(
            &platform,
            &diff,
            &[PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")],
        );
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"]["Entrypoint"], json!([BINARY_PATH]));
        assert_eq!(config["config"]["Cmd"], json!(["orchestrate"]));
        assert_eq!(config["config"]["Env"], json!([PATH_ENV]));
        assert_eq!(config["config"]["User"], "");
        assert_eq!(config["rootfs"]["diff_ids"], json!([diff.as_str()]));
        assert_eq!(config["created"], "1970-01-01T00:00:00Z");
        let odd = orchestrator_config(&platform, &diff, &[PathBuf::from("/opt/l/libx.so")]);
        assert_eq!(
            odd["config"]["Env"],
            json!([PATH_ENV, "LD_LIBRARY_PATH=/opt/l"])
        );
    }

    #[test]
    fn layer_of_a_real_binary_is_reproducible_and_identity_follows_the_file() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::new(store_dir.path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("true");
        fs::copy("/bin/true", &bin).unwrap();
        let a = build_layer(&store, &bin).unwrap();
        let b = build_layer(&store, &bin).unwrap();
        assert_eq!(a.descriptor, b.descriptor, "same binary, same layer");
        assert_eq!(
            a.descriptor.media_type,
            kiln_builder::image::media::OCI_LAYER_GZIP
        );
        let key = identity_key(&bin).unwrap();
        assert_eq!(key, identity_key(&bin).unwrap());
        // Touching the binary changes its identity.
        let file = File::options().append(true).open(&bin).unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_ne!(key, identity_key(&bin).unwrap());
    }
}
