//! The commit and remote of the checkout a pipeline lives in, read straight
//! from `.git` (HEAD, refs, packed-refs, config), for the image's
//! `org.opencontainers.image.revision` and `.source` labels.
//!
//! Read by hand rather than by running `git` twice: spawning git costs
//! several milliseconds of a build that should take fifty, and the files
//! involved are small and stable.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The OCI source labels for `dir`, empty outside a git checkout.
pub(crate) fn source_labels(dir: &Path) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let Some((git_dir, common_dir)) = find_git_dir(dir) else {
        return labels;
    };
    let Some(rev) = head_commit(&git_dir, &common_dir) else {
        return labels;
    };
    labels.insert("org.opencontainers.image.revision".into(), rev);
    if let Some(url) = fs::read_to_string(common_dir.join("config"))
        .ok()
        .and_then(|c| origin_url(&c))
    {
        labels.insert(
            "org.opencontainers.image.source".into(),
            strip_credentials(&url),
        );
    }
    labels
}

/// The git dir and the common dir (they differ for linked worktrees).
fn find_git_dir(start: &Path) -> Option<(PathBuf, PathBuf)> {
    let start = std::path::absolute(start).ok()?;
    for dir in start.ancestors() {
        let dot_git = dir.join(".git");
        let git_dir = if dot_git.is_dir() {
            dot_git
        } else if dot_git.is_file() {
            let text = fs::read_to_string(&dot_git).ok()?;
            let target = text.trim().strip_prefix("gitdir:")?.trim();
            dir.join(target)
        } else {
            continue;
        };
        let common = match fs::read_to_string(git_dir.join("commondir")) {
            Ok(rel) => git_dir.join(rel.trim()),
            Err(_) => git_dir.clone(),
        };
        return Some((git_dir, common));
    }
    None
}

fn head_commit(git_dir: &Path, common_dir: &Path) -> Option<String> {
    let head = fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref:").map(str::trim) else {
        return is_hash(head).then(|| head.to_string());
    };
    for dir in [git_dir, common_dir] {
        if let Ok(hash) = fs::read_to_string(dir.join(reference)) {
            let hash = hash.trim();
            if is_hash(hash) {
                return Some(hash.to_string());
            }
        }
    }
    let packed = fs::read_to_string(common_dir.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (hash, name) = line.split_once(' ')?;
        (name == reference && is_hash(hash)).then(|| hash.to_string())
    })
}

fn is_hash(text: &str) -> bool {
    (text.len() == 40 || text.len() == 64) && text.chars().all(|c| c.is_ascii_hexdigit())
}

/// `url` of `[remote "origin"]` in a git config.
fn origin_url(config: &str) -> Option<String> {
    let mut in_origin = false;
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_origin = line.replace(' ', "") == "[remote\"origin\"]";
            continue;
        }
        if in_origin
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "url"
        {
            return Some(value.trim().to_string());
        }
    }
    None
}

/// Never publish credentials embedded in a remote URL.
fn strip_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if path.is_empty() {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_head_through_refs_and_packed_refs() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join(".git");
        fs::create_dir_all(git.join("refs/heads")).unwrap();
        fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        let a = "a".repeat(40);
        fs::write(
            git.join("packed-refs"),
            format!("# pack-refs\n{a} refs/heads/main\n"),
        )
        .unwrap();
        fs::write(
            git.join("config"),
            "[core]\n\tbare = false\n[remote \"origin\"]\n\turl = https://user:tok@git.example/team/repo.git\n",
        )
        .unwrap();
        let sub = dir.path().join("pipelines/x");
        fs::create_dir_all(&sub).unwrap();
        let labels = source_labels(&sub);
        assert_eq!(labels["org.opencontainers.image.revision"], a);
        assert_eq!(
            labels["org.opencontainers.image.source"],
            "https://git.example/team/repo.git"
        );
        let b = "b".repeat(40);
        fs::write(git.join("refs/heads/main"), format!("{b}\n")).unwrap();
        assert_eq!(source_labels(&sub)["org.opencontainers.image.revision"], b);
    }

    #[test]
    fn nothing_outside_a_checkout() {
        let dir = tempfile::tempdir().unwrap();
        // A temp dir may sit under a checkout on some machines; only assert
        // when no .git is above it.
        if find_git_dir(dir.path()).is_none() {
            assert!(source_labels(dir.path()).is_empty());
        }
    }

    #[test]
    fn credentials_never_reach_labels() {
        assert_eq!(
            strip_credentials("https://u:p@h.example/r"),
            "https://h.example/r"
        );
        assert_eq!(
            strip_credentials("git@h.example:r.git"),
            "git@h.example:r.git"
        );
    }
}
