//! The code layer's bytes, pinned: a fixed context (a nested file, an
//! executable, an empty directory, a symlink, an ignored file) under
//! `/app` with a fixed owner and mtime gives this diffID and these blob
//! digests. A change here is a change of every code layer's digest, and
//! every cached code layer misses.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use kiln_builder::layer::{CodeLayerOptions, Compression, TarOptions, build_code_layer};
use kiln_builder::store::Store;

fn context(dir: &Path) {
    fs::create_dir_all(dir.join("src/pkg")).expect("mkdir");
    fs::create_dir_all(dir.join("empty")).expect("mkdir");
    fs::write(dir.join("src/pkg/main.py"), b"print('pinned')\n").expect("write");
    fs::write(
        dir.join("run.sh"),
        b"#!/bin/sh\nexec python src/pkg/main.py\n",
    )
    .expect("write");
    fs::set_permissions(dir.join("run.sh"), fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::write(dir.join(".dockerignore"), b"*.log\n").expect("write");
    fs::write(dir.join("debug.log"), b"noise").expect("write");
    std::os::unix::fs::symlink("src/pkg/main.py", dir.join("main.py")).expect("symlink");
}

#[test]
fn code_layer_digests_are_pinned() {
    let ctx = tempfile::tempdir().expect("temp dir");
    context(ctx.path());
    let tar = TarOptions {
        dest: "/app".into(),
        mtime: 1_700_000_000,
        uid: 1000,
        gid: 1001,
    };
    let diff_id = "sha256:5be687c9cdf76198b1e38fe24f67615c62c7aa09c519044dc2426ebc64a4770d";
    for (compression, digest) in [
        (
            Compression::gzip(),
            "sha256:387e4b3cf621bba70fe32d2e56497aeda2b3be17aad55b45ec88bb7c0d6db0cf",
        ),
        (
            Compression::zstd(),
            "sha256:22fbb3a1241e72a3da54595dfca529339673568f1e41faa7740a7ccb5a3070dd",
        ),
    ] {
        let cache = tempfile::tempdir().expect("temp dir");
        let store = Store::new(cache.path()).expect("store");
        let opts = CodeLayerOptions {
            tar: tar.clone(),
            compression,
            ..CodeLayerOptions::default()
        };
        let layer = build_code_layer(&store, ctx.path(), &opts).expect("code layer");
        assert_eq!(
            (
                layer.descriptor.diff_id.as_str(),
                layer.descriptor.digest.as_str()
            ),
            (diff_id, digest),
            "{compression:?}"
        );
    }
}
