//! sandbox_run: unpack an OCI layout into a root and run one command in the
//! rootless sandbox, optionally writing the layer it produced — the library
//! end to end, usable by hand and by the rootless tests (run under
//! `runuser -u USER`).
//!
//! ```text
//! sandbox_run [--layout OCI_DIR] --root DIR [--snapshot FILE] [--epoch N]
//!             [--env K=V]... [--user UID:GID] [--workdir DIR] [--hostname H]
//!             [--mount SRC:DST[:ro]]... [--secret NAME=SRC]... [--ca-always | --no-ca]
//!             -- ARGV...
//! ```
//!
//! Exit code: the command's; 125 when kiln itself fails (message on stderr).

#[path = "../tests/sandbox_support/layout.rs"]
mod layout;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use kiln_rootfs::sandbox::{
    self, BindMount, CaBundleMode, OutputRoute, RunSpec, Sandbox, SandboxConfig, User,
};
use kiln_rootfs::snapshot::{self, Excludes, LayerOptions, Manifest};
use kiln_rootfs::unpack::{UnpackOptions, apply_layer_blob};

#[derive(Default)]
struct Args {
    layout: Option<PathBuf>,
    root: Option<PathBuf>,
    snapshot: Option<PathBuf>,
    epoch: Option<u64>,
    env: Vec<(String, String)>,
    user: Option<String>,
    workdir: Option<String>,
    hostname: Option<String>,
    mounts: Vec<BindMount>,
    secrets: Vec<(String, Vec<u8>)>,
    ca_always: bool,
    no_ca: bool,
    argv: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--layout" => a.layout = Some(val("--layout")?.into()),
            "--root" => a.root = Some(val("--root")?.into()),
            "--snapshot" => a.snapshot = Some(val("--snapshot")?.into()),
            "--epoch" => {
                a.epoch = Some(
                    val("--epoch")?
                        .parse()
                        .map_err(|e| format!("--epoch: {e}"))?,
                )
            }
            "--env" => {
                let v = val("--env")?;
                let (k, v) = v.split_once('=').ok_or("--env wants K=V")?;
                a.env.push((k.into(), v.into()));
            }
            "--user" => a.user = Some(val("--user")?),
            "--workdir" => a.workdir = Some(val("--workdir")?),
            "--hostname" => a.hostname = Some(val("--hostname")?),
            "--mount" => {
                let v = val("--mount")?;
                let parts: Vec<&str> = v.split(':').collect();
                match parts.as_slice() {
                    [s, d] => a.mounts.push(BindMount::read_write(*s, *d)),
                    [s, d, "ro"] => a.mounts.push(BindMount::read_only(*s, *d)),
                    _ => return Err("--mount wants SRC:DST[:ro]".into()),
                }
            }
            "--secret" => {
                let v = val("--secret")?;
                let (n, s) = v.split_once('=').ok_or("--secret wants NAME=SRC")?;
                let data = std::fs::read(s).map_err(|e| format!("--secret {n}: {s}: {e}"))?;
                a.secrets.push((n.to_string(), data));
            }
            "--ca-always" => a.ca_always = true,
            "--no-ca" => a.no_ca = true,
            "--" => {
                a.argv = it.by_ref().collect();
                break;
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if a.argv.is_empty() {
        return Err("no command (give it after `--`)".into());
    }
    Ok(a)
}

fn run() -> Result<i32, String> {
    // Unprivileged: become root of a user namespace first (no-op as root).
    sandbox::reexec_in_user_namespace().map_err(|e| format!("{e}"))?;
    let args = parse()?;
    let root = args.root.clone().ok_or("--root is required")?;
    let config = SandboxConfig {
        ca_bundle_mode: if args.ca_always {
            CaBundleMode::Always
        } else {
            CaBundleMode::IfPresent
        },
        ..SandboxConfig::default()
    };
    let config = SandboxConfig {
        ca_bundle: if args.no_ca { None } else { config.ca_bundle },
        ..config
    };
    let sb = Sandbox::new(config).map_err(|e| format!("{e}"))?;
    let mut env = vec![(
        "PATH".to_string(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    )];
    if let Some(layout_dir) = &args.layout {
        if !root.exists() {
            let t = Instant::now();
            std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
            let opts = UnpackOptions::mapped(sb.id_map().clone());
            for blob in layout::layout_layers(layout_dir)? {
                let r = apply_layer_blob(&root, &blob, &opts).map_err(|e| format!("{e}"))?;
                eprintln!(
                    "sandbox_run: unpacked {} ({} entries, {} skipped)",
                    r.diff_id,
                    r.applied,
                    r.skipped.len()
                );
            }
            eprintln!("sandbox_run: unpack took {:.1}s", t.elapsed().as_secs_f64());
        }
        env = layout::layout_env(layout_dir);
    }
    let mut spec = RunSpec::new(&root, args.argv.clone());
    for (k, v) in env.into_iter().chain(args.env.clone()) {
        spec = spec.env(k, v);
    }
    if let Some(u) = &args.user {
        spec.user = User::resolve_in_root(&root, u).map_err(|e| format!("{e}"))?;
    }
    if let Some(w) = &args.workdir {
        spec.workdir = w.clone();
    }
    if let Some(h) = &args.hostname {
        spec.hostname = h.clone();
    }
    spec.mounts = args.mounts.clone();
    for (name, data) in &args.secrets {
        spec = spec.secret(format!("{}/{name}", sandbox::SECRETS_DIR), data.clone());
    }

    let excludes = Excludes::default();
    let before = match &args.snapshot {
        Some(_) => Some(Manifest::capture(&root, &excludes).map_err(|e| format!("{e}"))?),
        None => None,
    };
    let t = Instant::now();
    let code = sb
        .run(&spec, OutputRoute::Inherit)
        .map_err(|e| format!("{e}"))?;
    eprintln!(
        "sandbox_run: exit code {code} after {:.1}s",
        t.elapsed().as_secs_f64()
    );
    if let (Some(out), Some(before)) = (&args.snapshot, before) {
        let file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
        let opts = LayerOptions {
            epoch: args.epoch,
            ids: sb.id_map().clone(),
        };
        let s = snapshot::layer(
            &root,
            &before,
            &excludes,
            &opts,
            std::io::BufWriter::new(file),
        )
        .map_err(|e| format!("{e}"))?;
        eprintln!(
            "sandbox_run: layer: {} added, {} modified, {} deleted, {} entries",
            s.added, s.modified, s.deleted, s.entries
        );
    }
    Ok(code)
}

fn main() -> ExitCode {
    // First: this process may be started as the sandbox's init.
    kiln_rootfs::sandbox::run_init_if_requested();
    match run() {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            eprintln!("sandbox_run: error: {e}");
            ExitCode::from(125)
        }
    }
}
