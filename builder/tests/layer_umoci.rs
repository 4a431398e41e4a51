//! The code layer of testdata/quickstart, checked with the real `tar` CLI:
//! what an OCI unpacker (umoci, containerd) will see.

use std::path::Path;
use std::process::Command;

use kiln_builder::layer::{CodeLayerOptions, TarOptions, build_code_layer};
use kiln_builder::store::Store;

const QUICKSTART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/quickstart");

#[test]
fn quickstart_code_layer_reads_back_with_gnu_tar() {
    let cache = tempfile::tempdir().expect("temp dir");
    let store = Store::new(cache.path()).expect("store");
    let opts = CodeLayerOptions {
        tar: TarOptions {
            dest: "/app".into(),
            ..TarOptions::default()
        },
        ..CodeLayerOptions::default()
    };
    let layer = build_code_layer(&store, Path::new(QUICKSTART), &opts).expect("code layer");
    assert!(layer.warnings.is_empty(), "{:?}", layer.warnings);
    assert_eq!(
        layer.descriptor.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        store.verify(&layer.descriptor.digest).expect("verify"),
        layer.descriptor.size
    );

    let output = Command::new("tar")
        .arg("-tzvf")
        .arg(store.path(&layer.descriptor.digest))
        .output()
        .expect("run tar");
    assert!(
        output.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listing = String::from_utf8_lossy(&output.stdout);
    // "-rw-r--r-- 0/0  1234 1970-01-01 00:00 app/steps/load.py"
    let load = listing
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.last() == Some(&"app/steps/load.py"))
        .unwrap_or_else(|| panic!("app/steps/load.py missing from:\n{listing}"));
    assert_eq!(load[0], "-rw-r--r--", "{listing}");
    assert_eq!(load[1], "0/0", "{listing}");
    assert!(
        load.contains(&"1970-01-01"),
        "mtime is the epoch: {listing}"
    );

    let names: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(names.first(), Some(&"app/"), "{listing}");
    assert!(names.contains(&"app/.dockerignore"), "{listing}");
    assert!(names.contains(&"app/kiln.yaml"), "{listing}");
    assert!(
        !names.iter().any(|n| n.starts_with("app/data")),
        "data/ is in .dockerignore:\n{listing}"
    );
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "entries are sorted");

    // A rebuild gives the same blob: in a fresh store, so it is built
    // again rather than found in the cache.
    let cache2 = tempfile::tempdir().expect("temp dir");
    let store2 = Store::new(cache2.path()).expect("store");
    let again = build_code_layer(&store2, Path::new(QUICKSTART), &opts).expect("rebuild");
    assert!(!again.reused);
    assert_eq!(again.descriptor, layer.descriptor);
}

/// A layer of many gzip blocks (compressed in parallel, stitched together)
/// must read back byte for byte with GNU tar and gzip.
#[test]
fn multi_block_gzip_layer_reads_back_with_gnu_tar() {
    let context = tempfile::tempdir().expect("temp dir");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) {
                (x >> 24) as u8
            } else {
                b"kiln layer "[i % 11]
            }
        })
        .collect();
    std::fs::write(context.path().join("big.bin"), &big).expect("write");

    let cache = tempfile::tempdir().expect("temp dir");
    let store = Store::new(cache.path()).expect("store");
    let opts = CodeLayerOptions {
        tar: TarOptions {
            dest: "/app".into(),
            ..TarOptions::default()
        },
        ..CodeLayerOptions::default()
    };
    let layer = build_code_layer(&store, context.path(), &opts).expect("layer");
    let blob = store.path(&layer.descriptor.digest);

    let gzip = Command::new("gzip")
        .arg("-t")
        .arg(&blob)
        .status()
        .expect("run gzip");
    assert!(gzip.success(), "gzip -t rejects the blob");
    let output = Command::new("tar")
        .arg("-xzOf")
        .arg(&blob)
        .arg("app/big.bin")
        .output()
        .expect("run tar");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout == big, "content differs after a round trip");
}
