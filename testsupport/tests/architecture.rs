//! The workspace's own shape: no import circles between the modules of
//! any crate (see `kiln_testsupport::imports` for how they are read).

use std::path::{Path, PathBuf};

use kiln_testsupport::imports::{Source, circles, graph};

/// Every `.rs` file under `dir`, with its path relative to `root`.
fn sources(root: &Path, dir: &Path, out: &mut Vec<Source>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            // A crate's extra binaries are crates of their own.
            if path.file_name().is_some_and(|n| n == "bin") {
                continue;
            }
            sources(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(Source {
                path: path
                    .strip_prefix(root)
                    .expect("a path under the crate's src")
                    .to_string_lossy()
                    .into_owned(),
                text: std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
            });
        }
    }
}

#[test]
fn no_crate_has_an_import_circle() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let crates = [
        "pipeline",
        "oci",
        "rootfs",
        "builder",
        "runner",
        "nodeagent",
        "testsupport",
    ];
    let mut report = Vec::new();
    let mut modules = 0;
    for name in crates {
        let src = workspace.join(name).join("src");
        let mut files = Vec::new();
        sources(&src, &src, &mut files);
        assert!(!files.is_empty(), "no sources under {}", src.display());
        let g = graph(&files);
        modules += g.len();
        for circle in circles(&g) {
            report.push(format!("{name}: {}", circle.join(" → ")));
        }
    }
    // The crates above are the workspace's members; a new one must be added.
    let manifest = std::fs::read_to_string(workspace.join("Cargo.toml")).unwrap();
    for name in crates {
        assert!(
            manifest.contains(&format!("\"{name}\"")),
            "{name} is not a member"
        );
    }
    assert!(modules > 100, "only {modules} modules read");
    assert!(report.is_empty(), "import circles:\n{}", report.join("\n"));
}
