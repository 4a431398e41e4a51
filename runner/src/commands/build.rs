//! `kiln build`: build a pipeline's step images and push them (or write
//! them to an OCI layout or archive).

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use kiln_builder::image::Format;
use kiln_builder::layer::Compression;
use kiln_builder::{BuildOptions, BuildReport, Output};
use kiln_oci::{Client, ClientOptions, CredentialSource, Credentials};

use super::load_pipeline;
use crate::cli::{BuildArgs, CompressionArg, FormatArg, NetworkArg, RegistryArgs};
use crate::progress::{Display, human_size, short};

/// Builds; exit 1 when the build fails, 2 for Dockerfile builds (not yet).
pub(super) fn run(args: &BuildArgs, json: bool) -> anyhow::Result<ExitCode> {
    let secrets = args
        .secrets
        .iter()
        .map(|s| parse_secret(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pipeline = match &args.dockerfile {
        Some(_) => None,
        None => match load_pipeline(&args.pipeline)? {
            Some(p) => Some(p),
            None => return Ok(ExitCode::from(1)),
        },
    };
    let opts = BuildOptions {
        only_step: args.step.clone(),
        platform: args.platform.parse().map_err(anyhow::Error::msg)?,
        format: match args.format {
            FormatArg::Oci => Format::Oci,
            FormatArg::Docker => Format::Docker,
        },
        compression: match args.compression {
            CompressionArg::Gzip => Compression::gzip(),
            CompressionArg::Zstd => Compression::zstd(),
        },
        output: args.output.parse::<Output>().map_err(anyhow::Error::msg)?,
        cache_dir: super::cache_dir(&args.cache_dir)?,
        data_dir: data_dir()?,
        source_date_epoch: source_date_epoch()?,
        concurrency: 4,
        secrets: secrets.clone(),
        network: match args.network {
            NetworkArg::Host => kiln_rootfs::sandbox::Network::Host,
            NetworkArg::None => kiln_rootfs::sandbox::Network::None,
        },
    };
    let client = registry_client(
        &args.registry,
        push_registries(pipeline.as_ref(), &args.tags),
    )?;
    let display = Display::choose(json);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = match (&pipeline, &args.dockerfile) {
        (Some(pipeline), _) => runtime.block_on(kiln_builder::build::build(
            pipeline, &opts, &client, &display,
        ))?,
        (None, Some(dockerfile)) => {
            if args.tags.is_empty() && opts.output == Output::Registry {
                bail!(
                    "kiln build -f needs -t REGISTRY/REPO:TAG to push to (or --output oci:DIR / tar:FILE)"
                );
            }
            let build_args = args
                .build_args
                .iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => Ok((k.to_string(), v.to_string())),
                    // `--build-arg NAME` takes the value from the environment, as docker does.
                    None => std::env::var(kv).map(|v| (kv.clone(), v)).with_context(|| {
                        format!(
                            "--build-arg {kv}: expected K=V, or a variable set in the environment"
                        )
                    }),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let labels = args
                .labels
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .filter(|(k, _)| !k.is_empty())
                        .with_context(|| format!("--label {kv:?}: expected KEY=VALUE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let request = kiln_builder::dfbuild::DockerfileRequest {
                labels,
                dockerfile: dockerfile.clone(),
                context: args.context.clone().unwrap_or_else(|| PathBuf::from(".")),
                tags: args.tags.clone(),
                build_args,
                target: args.target.clone(),
            };
            let image = runtime.block_on(kiln_builder::dfbuild::build_dockerfile(
                &request, &opts, &client, &display,
            ))?;
            BuildReport {
                pipeline: String::new(),
                images: vec![image],
            }
        }
        (None, None) => bail!("nothing to build"),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serializing the report")?
        );
    } else {
        print_summary(&report, args.explain);
    }
    Ok(ExitCode::SUCCESS)
}

/// The registries kiln pushes to: the only ones `--username` and
/// `--password-stdin` are sent to. A parent image's registry gets its own
/// credentials from the docker config, or none.
pub(super) fn push_registries(
    pipeline: Option<&kiln_pipeline::Pipeline>,
    tags: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = pipeline {
        for step in p.steps() {
            if let Ok(s) = p.effective(&step.name.value)
                && let Some(repo) = &s.docker.target_repository
                && let Ok(r) = kiln_pipeline::reference::parse(&repo.value)
            {
                out.push(r.registry().to_string());
            }
        }
    }
    out.extend(
        tags.iter()
            .filter_map(|t| kiln_pipeline::reference::parse(t).ok())
            .map(|r| r.registry().to_string()),
    );
    out.sort();
    out.dedup();
    out
}

/// Registry client from the flags: explicit credentials (password read from
/// stdin, never from argv) for the push registries only, insecure
/// registries, extra CAs.
pub(super) fn registry_client(args: &RegistryArgs, push_to: Vec<String>) -> anyhow::Result<Client> {
    let explicit = match &args.username {
        Some(username) if args.password_stdin => {
            let mut secret = String::new();
            std::io::stdin()
                .read_to_string(&mut secret)
                .context("reading the password from stdin")?;
            let secret = secret.trim_end_matches(['\n', '\r']).to_string();
            if secret.is_empty() {
                bail!("--password-stdin: standard input was empty");
            }
            Some(Credentials {
                username: username.clone(),
                secret,
            })
        }
        _ => None,
    };
    let options = ClientOptions {
        credentials: CredentialSource {
            explicit,
            explicit_registries: Some(push_to),
            ..CredentialSource::default()
        },
        insecure_registries: args.insecure_registries.clone(),
        ca_certs: args.registry_ca.clone(),
        ..ClientOptions::default()
    };
    Ok(Client::new(options)?)
}

/// `id=NAME,src=FILE` or `id=NAME,env=VAR` (BuildKit's syntax). The value
/// is read into memory now; it reaches the sandbox through a pipe and a
/// tmpfs, never through a file of kiln's.
fn parse_secret(text: &str) -> anyhow::Result<kiln_builder::exec::Secret> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
            Some(("env", v)) => env = Some(v.to_string()),
            _ => bail!("--secret {text:?}: expected id=NAME,src=FILE or id=NAME,env=VAR"),
        }
    }
    let id = id
        .filter(|i| !i.is_empty() && !i.contains('/'))
        .with_context(|| format!("--secret {text:?}: id=NAME is required (no '/')"))?;
    match (src, env) {
        (Some(src), None) => {
            if !src.is_file() {
                bail!("--secret id={id}: {} is not a readable file", src.display());
            }
            let data = std::fs::read(&src)
                .with_context(|| format!("--secret id={id}: reading {}", src.display()))?;
            Ok(kiln_builder::exec::Secret { id, data })
        }
        (None, Some(var)) => {
            let value = std::env::var_os(&var).with_context(|| {
                format!("--secret id={id}: environment variable {var} is not set")
            })?;
            Ok(kiln_builder::exec::Secret {
                id,
                data: value.into_encoded_bytes(),
            })
        }
        _ => bail!("--secret {text:?}: give exactly one of src=FILE or env=VAR"),
    }
}

/// `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln`.
pub(super) fn data_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return Ok(dir.join("kiln"));
    }
    let home =
        std::env::var_os("HOME").context("HOME is not set: cannot find kiln's data directory")?;
    Ok(PathBuf::from(home).join(".local/share/kiln"))
}

/// `SOURCE_DATE_EPOCH`, the reproducible-builds convention; 0 when unset.
fn source_date_epoch() -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a Unix time in seconds")),
        _ => Ok(0),
    }
}

fn print_summary(report: &BuildReport, explain: bool) {
    for image in &report.images {
        if image.steps.is_empty() {
            println!("{}@{}", image.reference, image.digest);
        } else {
            println!(
                "{} ({}): {}@{}",
                image.name,
                image.steps.join(", "),
                image.reference,
                image.digest
            );
        }
        if explain {
            for layer in &image.layers {
                let status = match layer.status {
                    kiln_builder::progress::LayerStatus::Reused => "reused",
                    kiln_builder::progress::LayerStatus::Built => "built",
                    kiln_builder::progress::LayerStatus::Parent => "parent",
                };
                let why = layer
                    .reason
                    .as_deref()
                    .map(|r| format!(" — {r}"))
                    .unwrap_or_default();
                println!(
                    "  {:<24} {status:<6} {} {}{why}",
                    layer.label,
                    short(&layer.digest),
                    human_size(layer.size)
                );
            }
            println!("  parent {}", image.parent);
            println!("  blobs uploaded: {}", image.uploaded);
        }
    }
}

/// Builds (through the cache) and pushes the image `image` of the plan;
/// returns it pinned by digest, or why it could not be built.
pub(super) fn build_pinned(
    runtime: &tokio::runtime::Runtime,
    pipeline: &kiln_pipeline::Pipeline,
    image: &kiln_builder::plan::ImagePlan,
    cache_dir: &std::path::Path,
    data: &std::path::Path,
    client: &kiln_oci::Client,
    display: &Display,
) -> Result<String, String> {
    let opts = BuildOptions {
        only_step: image.steps.first().cloned(),
        output: Output::Registry,
        cache_dir: cache_dir.to_path_buf(),
        data_dir: data.to_path_buf(),
        ..BuildOptions::default()
    };
    match runtime.block_on(kiln_builder::build::build(pipeline, &opts, client, display)) {
        Ok(report) => match report.images.iter().find(|i| i.name == image.name) {
            Some(built) => pinned(&built.reference, &built.digest),
            None => Err(format!("the build did not produce image {}", image.name)),
        },
        Err(e) => Err(format!(
            "building image {}: {}",
            image.name,
            kiln_pipeline::error_chain(&e)
        )),
    }
}

/// `registry/repo@digest` from a pushed `registry/repo:tag` and its digest.
fn pinned(reference: &str, digest: &str) -> Result<String, String> {
    let r = kiln_pipeline::reference::parse(reference).map_err(|e| e.to_string())?;
    Ok(format!("{}/{}@{digest}", r.registry(), r.repository()))
}
