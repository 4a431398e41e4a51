//! Layer build measurements, ignored by default (they take seconds and
//! write a gigabyte). Run in release and read peak RSS from time(1):
//!
//! ```text
//! cargo test --release -p kiln-builder --test layer_bench -- --ignored --nocapture code_layer
//! /usr/bin/time -v target/release/deps/layer_bench-* --ignored --nocapture big_layer
//! ```
//!
//! `KILN_BENCH_DIR` picks where the gigabyte goes (default: the temp dir).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use kiln_builder::layer::{CodeLayerOptions, Compression, TarOptions, build_code_layer};
use kiln_builder::store::Store;

const QUICKSTART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/quickstart");

/// xorshift64: reproducible "random-ish" bytes without a dependency.
struct Noise(u64);

impl Noise {
    /// Fills `buf` with bytes drawn from `alphabet` (text-like when it is
    /// small, incompressible when it is all 256 values).
    fn fill(&mut self, buf: &mut [u8], alphabet: &[u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = alphabet[(self.0 % alphabet.len() as u64) as usize];
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn options(compression: Compression) -> CodeLayerOptions {
    CodeLayerOptions {
        tar: TarOptions {
            dest: "/app".into(),
            ..TarOptions::default()
        },
        compression,
        ..CodeLayerOptions::default()
    }
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture in release"]
fn code_layer_build_time() {
    let work = tempfile::tempdir().expect("temp dir");
    let context = work.path().join("ctx");
    copy_dir(Path::new(QUICKSTART), &context);
    // Real source text: this crate's own code, cut into 27 KB files.
    let mut corpus = Vec::new();
    for dir in ["src", "src/layer", "src/store"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        names.sort();
        for name in names {
            corpus.extend(fs::read(name).expect("read"));
        }
    }
    for i in 0..50 {
        let text: Vec<u8> = corpus
            .iter()
            .cycle()
            .skip(i * 7919)
            .take(27 * 1024)
            .copied()
            .collect();
        fs::write(context.join(format!("steps/module_{i:02}.py")), text).expect("write");
    }
    for compression in [
        Compression::Gzip { level: 1 },
        Compression::Gzip { level: 2 },
        Compression::Gzip { level: 4 },
        Compression::Gzip { level: 6 },
        Compression::Zstd { level: 3 },
    ] {
        let mut times = Vec::new();
        let mut last = None;
        for i in 0..11 {
            // A fresh store each time: a cache hit would measure nothing.
            let dir = work.path().join(format!("store-{compression:?}-{i}"));
            let store = Store::new(&dir).expect("store");
            let start = Instant::now();
            let layer = build_code_layer(&store, &context, &options(compression)).expect("layer");
            times.push(start.elapsed());
            last = Some(layer);
            fs::remove_dir_all(&dir).expect("clean up");
        }
        times.sort();
        let layer = last.expect("built");
        println!(
            "{compression:?}: {} entries, {} KiB in, {} KiB out, median {:.1} ms, min {:.1} ms",
            layer.entries,
            layer.file_bytes / 1024,
            layer.descriptor.size / 1024,
            ms(times[times.len() / 2]),
            ms(times[0]),
        );
    }
}

#[test]
#[ignore = "measurement: writes 1 GB; run alone under /usr/bin/time -v"]
fn big_layer_rss_and_throughput() {
    let base = std::env::var_os("KILN_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let work = tempfile::tempdir_in(base).expect("temp dir");
    // KILN_BENCH_CONTEXT: measure a real directory instead (site-packages).
    let context = match std::env::var_os("KILN_BENCH_CONTEXT") {
        Some(dir) => dir.into(),
        None => {
            let context = work.path().join("ctx");
            fs::create_dir_all(&context).expect("mkdir");
            write_random_ish(&context.join("weights.bin"));
            context
        }
    };
    // KILN_BENCH_COMPRESSION: "gzip:1,gzip:6,zstd:3" (default: both defaults).
    let compressions: Vec<Compression> = match std::env::var("KILN_BENCH_COMPRESSION") {
        Ok(list) => list
            .split(',')
            .map(|item| match item.split_once(':') {
                Some(("gzip", level)) => Compression::Gzip {
                    level: level.parse().expect("gzip level"),
                },
                Some(("zstd", level)) => Compression::Zstd {
                    level: level.parse().expect("zstd level"),
                },
                _ => panic!("KILN_BENCH_COMPRESSION item {item:?}: expected gzip:N or zstd:N"),
            })
            .collect(),
        Err(_) => vec![Compression::gzip(), Compression::zstd()],
    };
    for compression in compressions {
        let store = Store::new(work.path().join(format!("store-{compression:?}"))).expect("store");
        let start = Instant::now();
        let layer = build_code_layer(&store, &context, &options(compression)).expect("layer");
        let took = start.elapsed();
        println!(
            "{compression:?}: {} MiB -> {} MiB in {:.2} s = {:.0} MiB/s",
            layer.file_bytes >> 20,
            layer.descriptor.size >> 20,
            took.as_secs_f64(),
            (layer.file_bytes >> 20) as f64 / took.as_secs_f64(),
        );
        fs::remove_dir_all(store.root()).expect("clean up");
    }
}

/// KILN_BENCH_BYTES (default 1 GiB) of base64-like text: compresses to 75%.
fn write_random_ish(path: &Path) {
    let size: usize = std::env::var("KILN_BENCH_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 30);
    let mut out = BufWriter::new(File::create(path).expect("create"));
    let mut noise = Noise(7);
    let mut buf = vec![0u8; 1 << 20];
    let alphabet: Vec<u8> = (b'0'..=b'z').take(64).collect();
    for _ in 0..size / buf.len() {
        noise.fill(&mut buf, &alphabet);
        out.write_all(&buf).expect("write");
    }
    out.flush().expect("flush");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
