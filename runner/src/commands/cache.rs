//! `kiln cache ls|prune`: look into and trim the local layer cache.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use kiln_builder::store::{PrunePolicy, Store};

use crate::cli::CacheCommand;
use crate::progress::{human_size, short};

fn open(dir: &Option<PathBuf>) -> anyhow::Result<Store> {
    let dir = super::cache_dir(dir)?;
    Store::new(&dir).with_context(|| format!("opening the layer cache {}", dir.display()))
}

/// Lists or prunes.
pub(super) fn run(command: &CacheCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        CacheCommand::Ls { cache_dir } => {
            let store = open(cache_dir)?;
            let mut entries = store.list()?;
            entries.sort_by_key(|e| std::cmp::Reverse(e.last_used));
            if json {
                let rows: Vec<_> = entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "key": e.key, "digest": e.descriptor.digest.to_string(), "size": e.descriptor.size,
                            "media_type": e.descriptor.media_type, "blob_present": e.blob_present,
                            "last_used_unix": e.last_used.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
                return Ok(ExitCode::SUCCESS);
            }
            let total: u64 = entries
                .iter()
                .filter(|e| e.blob_present)
                .map(|e| e.descriptor.size)
                .sum();
            println!(
                "{} cached layers, {} in {}",
                entries.len(),
                human_size(total),
                store.root().display()
            );
            let leftovers = store.leftovers()?;
            if !leftovers.is_empty() {
                println!(
                    "{} scratch roots left by killed builds, {} (kiln cache prune removes them)",
                    leftovers.len(),
                    human_size(leftovers.iter().map(|l| l.bytes).sum())
                );
                for l in &leftovers {
                    println!("  {:>9}  {}", human_size(l.bytes), l.path.display());
                }
            }
            for e in &entries {
                let age = SystemTime::now()
                    .duration_since(e.last_used)
                    .unwrap_or_default();
                let missing = if e.blob_present {
                    ""
                } else {
                    " (blob missing)"
                };
                println!(
                    "  {}  {:>9}  used {} ago  key {}{missing}",
                    short(e.descriptor.digest.as_str()),
                    human_size(e.descriptor.size),
                    human_age(age),
                    &e.key[..e.key.len().min(12)]
                );
            }
        }
        CacheCommand::Prune {
            all,
            older_than_days,
            cache_dir,
        } => {
            let store = open(cache_dir)?;
            let policy = if *all {
                PrunePolicy::All
            } else {
                PrunePolicy::OlderThan(Duration::from_secs(older_than_days.saturating_mul(86_400)))
            };
            let report = store.prune(policy)?;
            let (mut scratch, mut scratch_bytes) = store.remove_leftovers()?;
            // Runs in kiln's data directory whose kiln was killed.
            if let Ok(data) = super::build::data_dir() {
                let (runs, bytes) =
                    kiln_runner::local::leftovers::sweep_scratch(&data.join("runs"));
                scratch += runs;
                scratch_bytes += bytes;
            }
            println!(
                "removed {} entries, {} blobs and {scratch} scratch roots, freed {}",
                report.entries_removed,
                report.blobs_removed,
                human_size(report.bytes_freed + scratch_bytes)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn human_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}
