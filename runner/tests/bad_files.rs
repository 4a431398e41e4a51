//! Every file in testdata/bad fails validation with the message, line and
//! column its first line announces (`# expect: LINE:COL: TEXT`).

use std::path::Path;

use kiln_pipeline::PipelineError;
use kiln_runner::pipeline_file::load;

#[test]
fn every_bad_file_fails_with_its_expected_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/bad");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        // Lossy: one of the files is not UTF-8 on purpose.
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        let header = text.lines().next().unwrap();
        let expect = header
            .strip_prefix("# expect: ")
            .unwrap_or_else(|| panic!("{} lacks an `# expect:` header", path.display()));
        let (line, rest) = expect.split_once(':').unwrap();
        let (column, needle) = rest.split_once(':').unwrap();
        let (line, column): (u64, u64) = (line.parse().unwrap(), column.parse().unwrap());
        let needle = needle.trim();

        let err = load(&path).expect_err(&format!("{} should be rejected", path.display()));
        let PipelineError::Invalid { diagnostics, file } = &err else {
            panic!("{}: unexpected error {err}", path.display());
        };
        assert_eq!(file, &path);
        let d = &diagnostics[0];
        assert!(
            d.message.contains(needle),
            "{}: expected message containing {needle:?}, got {:?}",
            path.display(),
            d.message
        );
        assert_eq!(
            (d.line, d.column),
            (line, column),
            "{}: {}",
            path.display(),
            d.message
        );
        assert!(
            err.to_string()
                .starts_with(&format!("{}:{line}:{column}: ", path.display()))
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} bad files found");
}

#[test]
fn quickstart_is_valid_and_needs_two_images() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/quickstart/kiln.yaml");
    let p = load(&path).unwrap();
    assert_eq!(p.steps().len(), 4);
    let load = p.effective("load").unwrap().docker;
    let train = p.effective("train").unwrap().docker;
    assert_ne!(load, train, "train has its own image settings");
    assert_eq!(p.effective("featurize").unwrap().docker, load);
}
