//! An image as a comparison sees it: the filesystem its layers stack up to
//! (whiteouts applied) with each entry's type, mode, owner, link target,
//! content digest and xattrs, and the parts of its config a Dockerfile sets.
//! Read straight from an OCI layout's tars, so no extractor (and none of its
//! privileges or id mapping) stands between the image and the judgement.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// One path of the stacked filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `dir`, `file`, `symlink`, `hardlink`, `char`, `block`, `fifo`.
    pub kind: &'static str,
    /// Permission bits with setuid/setgid/sticky (no type bits).
    pub mode: u32,
    /// Owner as stored.
    pub uid: u64,
    /// Group as stored.
    pub gid: u64,
    /// Symlink or hard-link target.
    pub link: String,
    /// First 16 hex digits of the content's sha256 (files only).
    pub content: String,
    /// Extended attributes (PAX `SCHILY.xattr.*`), values hex-encoded.
    pub xattrs: BTreeMap<String, String>,
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:04o} {}:{}",
            self.kind, self.mode, self.uid, self.gid
        )?;
        if !self.link.is_empty() {
            write!(f, " -> {}", self.link)?;
        }
        if !self.content.is_empty() {
            write!(f, " sha256:{}", self.content)?;
        }
        for (k, v) in &self.xattrs {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// A stacked image: its files by path (relative, no `./`, no trailing `/`)
/// and its config JSON.
#[derive(Debug, Clone)]
pub struct ImageTree {
    /// Every path.
    pub files: BTreeMap<String, Entry>,
    /// The image config (`config`, `author`, `history`...).
    pub config: Value,
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    layout.join("blobs").join(alg).join(hex)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Reads the image tagged `tag` in the OCI layout at `layout`.
///
/// # Panics
///
/// When the layout, the tag or a layer cannot be read: a test failure.
pub fn read_layout(layout: &Path, tag: &str) -> ImageTree {
    let index = read_json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let desc = manifests
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .or_else(|| (manifests.len() == 1).then(|| &manifests[0]))
        .unwrap_or_else(|| panic!("no tag {tag} in {}", layout.display()));
    let digest = desc["digest"].as_str().unwrap_or_default();
    let manifest = read_json(&blob_path(layout, digest));
    let config = read_json(&blob_path(
        layout,
        manifest["config"]["digest"].as_str().unwrap_or_default(),
    ));
    let mut files = BTreeMap::new();
    for layer in manifest["layers"].as_array().cloned().unwrap_or_default() {
        let path = blob_path(layout, layer["digest"].as_str().unwrap_or_default());
        let media = layer["mediaType"].as_str().unwrap_or_default();
        let file = std::fs::File::open(&path)
            .unwrap_or_else(|e| panic!("opening layer {}: {e}", path.display()));
        let reader: Box<dyn Read> = if media.ends_with("gzip") {
            Box::new(flate2::read::GzDecoder::new(file))
        } else if media.ends_with("zstd") {
            Box::new(zstd::Decoder::new(file).expect("a zstd layer"))
        } else {
            Box::new(file)
        };
        apply_layer(&mut files, reader);
    }
    ImageTree { files, config }
}

fn clean(name: &str) -> String {
    name.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn remove_tree(files: &mut BTreeMap<String, Entry>, path: &str, keep_self: bool) {
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    files.retain(|k, _| {
        let under = k.starts_with(&prefix) && !(path.is_empty() && k.is_empty());
        !(under || (!keep_self && k == path))
    });
}

fn apply_layer(files: &mut BTreeMap<String, Entry>, reader: impl Read) {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().expect("a tar layer") {
        let mut entry = entry.expect("a tar entry");
        let name = clean(&entry.path().expect("an entry path").to_string_lossy());
        let (dir, base) = match name.rsplit_once('/') {
            Some((d, b)) => (d.to_string(), b.to_string()),
            None => (String::new(), name.clone()),
        };
        if base == ".wh..wh..opq" {
            remove_tree(files, &dir, true);
            continue;
        }
        if let Some(gone) = base.strip_prefix(".wh.") {
            let p = if dir.is_empty() {
                gone.to_string()
            } else {
                format!("{dir}/{gone}")
            };
            remove_tree(files, &p, false);
            continue;
        }
        if name.is_empty() {
            continue; // the root itself
        }
        let header = entry.header().clone();
        let kind = match header.entry_type() {
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => "hardlink",
            tar::EntryType::Char => "char",
            tar::EntryType::Block => "block",
            tar::EntryType::Fifo => "fifo",
            _ => "file",
        };
        if kind != "dir" {
            remove_tree(files, &name, true);
        }
        let mut xattrs = BTreeMap::new();
        if let Ok(Some(ext)) = entry.pax_extensions() {
            for e in ext.flatten() {
                if let Some(k) = e.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    xattrs.insert(k.to_string(), hex(e.value_bytes()));
                }
            }
        }
        let link = entry
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let link = if kind == "hardlink" {
            clean(&link)
        } else {
            link
        };
        let mut content = String::new();
        if kind == "file" {
            let mut h = Sha256::new();
            std::io::copy(&mut entry, &mut h).expect("reading an entry");
            content = hex(&h.finalize())[..16].to_string();
        }
        files.insert(
            name,
            Entry {
                kind,
                mode: header.mode().unwrap_or(0) & 0o7777,
                uid: header.uid().unwrap_or(0),
                gid: header.gid().unwrap_or(0),
                link,
                content,
                xattrs,
            },
        );
    }
}

/// How [`Entry::content`] names `bytes`: a test's expected file content.
pub fn content_digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))[..16].to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The config fields a Dockerfile decides, as a comparable JSON object:
/// `Env`, `Cmd`, `Entrypoint`, `WorkingDir`, `User`, `Labels`, `Volumes`,
/// `ExposedPorts`, `StopSignal`, `Healthcheck`, `OnBuild`, `Shell` and the
/// top-level `author`. Empty and absent values read the same.
pub fn config_view(config: &Value) -> BTreeMap<String, Value> {
    let c = &config["config"];
    let mut out = BTreeMap::new();
    for k in [
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "Labels",
        "Volumes",
        "ExposedPorts",
        "StopSignal",
        "Healthcheck",
        "OnBuild",
        "Shell",
    ] {
        let v = &c[k];
        let empty = v.is_null()
            || v.as_str() == Some("")
            || v.as_array().is_some_and(Vec::is_empty)
            || v.as_object().is_some_and(serde_json::Map::is_empty);
        if !empty {
            out.insert(k.to_string(), v.clone());
        }
    }
    if let Some(a) = config["author"].as_str().filter(|a| !a.is_empty()) {
        out.insert("author".into(), Value::String(a.to_string()));
    }
    out
}

/// What may differ between two images and why: paths (with everything
/// under them) and config keys or label names to leave out of a comparison.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    /// Paths whose entries (and subtrees) are not compared.
    pub paths: Vec<String>,
    /// Labels not compared.
    pub labels: Vec<String>,
    /// Compare `Env` as a set: Buildah moves a variable set again to the
    /// end, where Docker replaces it in place.
    pub env_order: bool,
}

/// Every difference between `ours` and `theirs`, one line each (empty when
/// the two match), leaving out what `allowed` lists.
pub fn differences(ours: &ImageTree, theirs: &ImageTree, allowed: &Allowed) -> Vec<String> {
    let skip = |p: &str| {
        allowed
            .paths
            .iter()
            .any(|a| p == a || p.starts_with(&format!("{a}/")))
    };
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> =
        ours.files.keys().chain(theirs.files.keys()).collect();
    for k in keys {
        if skip(k) {
            continue;
        }
        match (ours.files.get(k), theirs.files.get(k)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => out.push(format!("{k}: kiln {a}, buildah {b}")),
            (Some(a), None) => out.push(format!("{k}: only in kiln ({a})")),
            (None, Some(b)) => out.push(format!("{k}: only in buildah ({b})")),
            (None, None) => {}
        }
    }
    let view = |c: &Value| {
        let mut v = config_view(c);
        if allowed.env_order
            && let Some(Value::Array(env)) = v.get_mut("Env")
        {
            env.sort_by_key(|e| e.as_str().unwrap_or_default().to_string());
        }
        if let Some(Value::Object(labels)) = v.get_mut("Labels") {
            labels.retain(|k, _| !allowed.labels.contains(k));
            if labels.is_empty() {
                v.remove("Labels");
            }
        }
        v
    };
    let (a, b) = (view(&ours.config), view(&theirs.config));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        if a.get(k) != b.get(k) {
            out.push(format!(
                "config {k}: kiln {}, buildah {}",
                a.get(k).unwrap_or(&Value::Null),
                b.get(k).unwrap_or(&Value::Null)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: tar::EntryType, name: &str, mode: u32, data: &[u8]) -> (tar::Header, Vec<u8>) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_path(name).expect("a name");
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        (h, data.to_vec())
    }

    fn layer(entries: &[(tar::Header, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (h, d) in entries {
            b.append(h, &d[..]).expect("appending");
        }
        b.into_inner().expect("a tar")
    }

    #[test]
    fn whiteouts_and_opaque_dirs_remove_what_lower_layers_held() {
        use tar::EntryType as T;
        let mut files = BTreeMap::new();
        apply_layer(
            &mut files,
            &layer(&[
                entry(T::Directory, "a/", 0o755, b""),
                entry(T::Regular, "a/x", 0o644, b"x"),
                entry(T::Directory, "b/", 0o755, b""),
                entry(T::Regular, "b/y", 0o600, b"y"),
            ])[..],
        );
        apply_layer(
            &mut files,
            &layer(&[
                entry(T::Regular, "a/.wh.x", 0o644, b""),
                entry(T::Directory, "b/", 0o700, b""),
                entry(T::Regular, "b/.wh..wh..opq", 0o644, b""),
                entry(T::Regular, "b/z", 0o644, b"z"),
            ])[..],
        );
        let paths: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(paths, ["a", "b", "b/z"]);
        assert_eq!(files["b"].mode, 0o700);
    }

    #[test]
    fn a_difference_in_mode_or_config_is_reported_and_an_allowed_path_is_not() {
        let e = |mode| Entry {
            kind: "dir",
            mode,
            uid: 0,
            gid: 0,
            link: String::new(),
            content: String::new(),
            xattrs: BTreeMap::new(),
        };
        let a = ImageTree {
            files: [
                ("tmp".to_string(), e(0o1777)),
                ("run".to_string(), e(0o755)),
            ]
            .into(),
            config: serde_json::json!({"config": {"Cmd": ["a"]}}),
        };
        let b = ImageTree {
            files: [("tmp".to_string(), e(0o755))].into(),
            config: serde_json::json!({"config": {"Cmd": ["b"]}, "author": ""}),
        };
        let allowed = Allowed {
            paths: vec!["run".into()],
            ..Allowed::default()
        };
        let d = differences(&a, &b, &allowed);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("tmp: kiln dir 1777"), "{d:?}");
        assert!(d[1].starts_with("config Cmd"), "{d:?}");
    }
}
