//! Every layer cache key kiln computes, in one place: what each kind of
//! layer is keyed by. A key names a layer in the local store's index, so a
//! change here is a change of every user's cache; the tests pin each recipe
//! to the exact key existing caches were stored under.
//!
//! Each recipe starts with a versioned tag (`code-v1`, `exec-v1`, `df-v2`,
//! `mkdir-v1`): bumping it is how a recipe changes on purpose. Keys never
//! hold a secret's value, only what the layer is made of (digests, the
//! resolved instruction text, secret ids).

use sha2::{Digest as _, Sha256};

use std::fmt::Debug;

use crate::image;

/// sha256 over the parts, each terminated by a NUL so that no two
/// different part lists collide (`["ab", "c"]` is not `["a", "bc"]`).
pub fn cache_key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    format!("{:x}", h.finalize())
}

/// A kiln.yaml code layer: the code's uncompressed tar and how it is
/// compressed (the same code, gzip or zstd, is two blobs).
///
/// Compression enters every key as its `Debug` text (`Gzip { level: 6 }`),
/// as existing caches were stored; taking any `Debug` keeps this module
/// free of the layer writer's types.
pub fn code_layer(diff_id: &str, compression: impl Debug) -> String {
    cache_key(&["code-v1", diff_id, &format!("{compression:?}")])
}

/// A kiln.yaml exec layer (apt packages, a requirement group, the user):
/// the chain so far, where it is built, how it is compressed, what it runs
/// and the content of each file it reads (by sha256, named).
pub fn exec_layer(
    previous: &str,
    platform: &str,
    compression: impl Debug,
    label: &str,
    script: &str,
    files: &[(String, Vec<u8>)],
) -> String {
    let mut parts: Vec<String> = vec![
        "exec-v1".into(),
        previous.into(),
        platform.into(),
        format!("{compression:?}"),
        label.into(),
        script.into(),
    ];
    for (name, bytes) in files {
        parts.push(format!("{name}={}", image::hex(&Sha256::digest(bytes))));
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    cache_key(&refs)
}

/// The start of a Dockerfile stage's chain on a base image: its manifest
/// digest.
pub fn dockerfile_base(digest: &str) -> String {
    cache_key(&["df-v2", "from", digest])
}

/// The start of a Dockerfile stage's chain on `scratch`.
pub fn dockerfile_scratch() -> String {
    cache_key(&["df-v2", "scratch"])
}

/// The chain after a Dockerfile instruction: the chain before and the
/// instruction with its arguments substituted.
pub fn dockerfile_step(chain: &str, resolved: &str) -> String {
    cache_key(&[chain, resolved])
}

/// A RUN layer: the chain, the instruction, the ids of the secrets it
/// mounts (never their values) and what its bind mounts hold.
pub fn dockerfile_run(chain: &str, resolved: &str, secret_ids: &[&str], bound: &str) -> String {
    cache_key(&[chain, resolved, &secret_ids.join(","), bound])
}

/// A COPY or ADD layer: the chain, the instruction and what its sources
/// hold (one line per source, remote sources after the local ones).
pub fn dockerfile_copy(chain: &str, resolved: &str, sources: &str) -> String {
    cache_key(&[chain, resolved, sources])
}

/// The layer of directories WORKDIR and VOLUME make.
pub fn dockerfile_mkdir(chain: &str, dirs: &[String]) -> String {
    cache_key(&[chain, "mkdir-v1", &dirs.join("\n")])
}

/// The file identity a binary's layer is cached by: device, inode, size
/// and mtime (seconds and nanoseconds). A rebuilt or replaced binary
/// changes at least one of them, so it is never read or compressed again
/// while it stays the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `st_size`.
    pub size: u64,
    /// `st_mtime`.
    pub mtime: i64,
    /// `st_mtime_nsec`.
    pub mtime_nsec: i64,
}

/// The orchestrator image's one layer: the layout it is written in (its
/// versioned tag) and the kiln binary it carries, by file identity.
pub fn orchestrator_layer(layout: &str, binary: FileIdentity) -> String {
    let parts = [
        binary.dev.to_string(),
        binary.ino.to_string(),
        binary.size.to_string(),
        binary.mtime.to_string(),
        binary.mtime_nsec.to_string(),
    ];
    let mut all: Vec<&str> = vec![layout, "gzip"];
    all.extend(parts.iter().map(String::as_str));
    cache_key(&all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Compression;

    const GZIP: Compression = Compression::Gzip { level: 6 };
    const ZSTD: Compression = Compression::Zstd { level: 3 };

    #[test]
    fn parts_are_terminated() {
        assert_ne!(cache_key(&["ab", "c"]), cache_key(&["a", "bc"]));
        assert_eq!(cache_key(&["x"]), cache_key(&["x"]));
        assert_eq!(cache_key(&[]).len(), 64);
    }

    /// Each recipe, pinned to the key existing caches hold.
    #[rstest::rstest]
    #[case::code(
        code_layer("sha256:aa", GZIP),
        "c0880101ab3f51c7b0b1480463b01a4d60c3c61d35921f69ea1828fe8b978e8c"
    )]
    #[case::code_zstd(
        code_layer("sha256:aa", ZSTD),
        "c9f6a0860ddf7995554d8c928a9b3af12094c9c9fa92b471df764935b8821cd4"
    )]
    #[case::exec(
        exec_layer("prev", "linux/amd64", GZIP, "apt", "apt-get install -y curl", &[("requirements.txt".into(), b"numpy==2.0\n".to_vec())]),
        "532a8894ab3d0729e3dc35d81f52d7b809f0b8962267e9cac0cea9817053c4c2"
    )]
    #[case::base(
        dockerfile_base("sha256:bb"),
        "07d2e7126107cd9c3c64358b069614427a65b51a4f18f073f0f31b6e2c7cd54c"
    )]
    #[case::scratch(
        dockerfile_scratch(),
        "8833cd6dd037cd5620e2718ff2482b878ec506f85f12b51bb1e5305c103a72d7"
    )]
    #[case::step(
        dockerfile_step("chain", "ENV A=1"),
        "d1c177ef091d15d12244f4c91ba9c4f6b85bb2caae0eca786529c7ded29b4aa1"
    )]
    #[case::run(dockerfile_run("chain", "RUN make", &["token", "key"], "bound"), "276e0a99d8f754ad9d3beff93413291729fa8968bcda681369f538b15f761572")]
    #[case::copy(
        dockerfile_copy("chain", "COPY . /app", "a\nb"),
        "5eb69e527229c40677990442be1157934f0c8a8922e51213195761e328e02a87"
    )]
    #[case::mkdir(dockerfile_mkdir("chain", &["/app".into(), "/data".into()]), "34ff25c4bc5c9a6bd83022c0123e088f8440bdb327a3a8861d230d089b49c41a")]
    #[case::orchestrator(
        orchestrator_layer("kiln-orchestrator-layer-v1", FileIdentity { dev: 2049, ino: 131, size: 65_000_000, mtime: 1_700_000_000, mtime_nsec: 5 }),
        "cd1a92455a7b6d813b0144b7ca0e6c6044ac0c7d95dd3245ea73aa356dd49b45"
    )]
    fn recipes_keep_their_keys(#[case] key: String, #[case] pinned: &str) {
        assert_eq!(key, pinned);
    }

    #[rstest::rstest]
    #[case::compression(code_layer("sha256:aa", ZSTD), code_layer("sha256:aa", GZIP))]
    #[case::code(code_layer("sha256:ab", GZIP), code_layer("sha256:aa", GZIP))]
    #[case::secret_ids(
        dockerfile_run("c", "RUN x", &["a"], ""),
        dockerfile_run("c", "RUN x", &["b"], "")
    )]
    #[case::mount_content(
        dockerfile_run("c", "RUN x", &[], "1"),
        dockerfile_run("c", "RUN x", &[], "2")
    )]
    #[case::chain(
        dockerfile_copy("c1", "COPY a b", ""),
        dockerfile_copy("c2", "COPY a b", "")
    )]
    #[case::file_content(
        exec_layer("p", "linux/amd64", GZIP, "l", "s", &[("f".into(), b"1".to_vec())]),
        exec_layer("p", "linux/amd64", GZIP, "l", "s", &[("f".into(), b"2".to_vec())])
    )]
    #[case::base_digest(dockerfile_base("sha256:1"), dockerfile_base("sha256:2"))]
    fn what_a_layer_is_made_of_changes_its_key(#[case] a: String, #[case] b: String) {
        assert_ne!(a, b);
    }
}
