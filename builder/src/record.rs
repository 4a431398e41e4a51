//! Build records: which image each step runs in, written after a build and
//! read by `kiln run` and by the next build's `--explain`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The outcome of building one pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct BuildRecord {
    /// The pipeline's name.
    pub pipeline: String,
    /// The pipeline file, absolute.
    pub file: PathBuf,
    /// Images by plan name.
    pub images: BTreeMap<String, ImageRecord>,
}

/// One built image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    /// Steps that run in it.
    pub steps: Vec<String>,
    /// Where it was written: `registry/repo:tag`, `oci:DIR:tag` or `tar:FILE`.
    pub reference: String,
    /// `registry/repo@sha256:...` when pushed to a registry.
    pub pinned: Option<String>,
    /// Manifest digest.
    pub digest: String,
    /// The parent image, pinned by digest.
    pub parent: String,
    /// Per added layer: its label, cache key and the inputs that made it, so
    /// the next `--explain` can say what changed.
    pub layers: Vec<LayerRecord>,
}

/// What went into one layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LayerRecord {
    /// Human label (`code`, `requirements (user)`).
    pub label: String,
    /// The cache key.
    pub key: String,
    /// Inputs by name (file path -> digest, `parent` -> digest, ...).
    pub inputs: BTreeMap<String, String>,
}

impl BuildRecord {
    /// The image record of a step (the tests read records back with it).
    #[cfg(test)]
    pub(crate) fn image_of(&self, step: &str) -> Option<&ImageRecord> {
        self.images
            .values()
            .find(|i| i.steps.iter().any(|s| s == step))
    }
}

/// Where the record of the pipeline file `file` is kept: one file per
/// pipeline file under kiln's data directory, so two checkouts never mix.
pub(crate) fn record_path(data_dir: &Path, pipeline: &str, file: &Path) -> PathBuf {
    let key = crate::image::sha256_digest(file.to_string_lossy().as_bytes());
    let short = key
        .trim_start_matches("sha256:")
        .get(..12)
        .unwrap_or_default()
        .to_string();
    data_dir
        .join("builds")
        .join(format!("{pipeline}-{short}.json"))
}

/// Reads a record; a missing file is `None`, a corrupt one is treated as
/// missing (it only speeds things up and explains).
pub(crate) fn load(path: &Path) -> Option<BuildRecord> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes a record atomically.
pub(crate) fn save(path: &Path, record: &BuildRecord) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    // One write, not one syscall per JSON token.
    let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    io::Write::write_all(tmp.as_file_mut(), &bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Explains why a layer was rebuilt: the inputs that differ from the last
/// build's, in words.
pub(crate) fn explain_change(
    previous: Option<&LayerRecord>,
    key: &str,
    current: &BTreeMap<String, String>,
) -> String {
    let Some(previous) = previous else {
        return "not built before".into();
    };
    let mut changed = Vec::new();
    for (name, digest) in current {
        match previous.inputs.get(name) {
            None => changed.push(format!("{name} added")),
            Some(old) if old != digest => changed.push(format!("{name} changed")),
            Some(_) => {}
        }
    }
    for name in previous.inputs.keys() {
        if !current.contains_key(name) {
            changed.push(format!("{name} removed"));
        }
    }
    if changed.is_empty() {
        return if previous.key == key {
            "inputs unchanged, but the cached layer is missing".into()
        } else {
            "an earlier layer or the parent image changed".into()
        };
    }
    let total = changed.len();
    if total > 5 {
        changed.truncate(5);
        changed.push(format!("and {} more", total - 5));
    }
    changed.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn explains_what_changed() {
        let prev = LayerRecord {
            label: "code".into(),
            key: "k".into(),
            inputs: inputs(&[("steps/a.py", "1"), ("steps/b.py", "2"), ("old.py", "3")]),
        };
        let now = inputs(&[("steps/a.py", "1"), ("steps/b.py", "9"), ("new.py", "4")]);
        assert_eq!(
            explain_change(Some(&prev), "k2", &now),
            "new.py added, steps/b.py changed, old.py removed"
        );
        assert_eq!(explain_change(None, "k", &now), "not built before");
    }

    #[test]
    fn round_trips_and_finds_step_image() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = BuildRecord {
            pipeline: "qs".into(),
            ..BuildRecord::default()
        };
        record.images.insert(
            "train".into(),
            ImageRecord {
                steps: vec!["train".into()],
                digest: "sha256:x".into(),
                ..ImageRecord::default()
            },
        );
        let path = record_path(dir.path(), "qs", Path::new("/a/kiln.yaml"));
        save(&path, &record).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.image_of("train").unwrap().digest, "sha256:x");
        assert!(back.image_of("load").is_none());
        assert_ne!(
            path,
            record_path(dir.path(), "qs", Path::new("/b/kiln.yaml"))
        );
    }
}
