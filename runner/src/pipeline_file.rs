//! Reading kiln.yaml: the file, its bytes parsed by kiln-pipeline, and the
//! paths it names resolved on disk with every symlink followed, so a
//! pipeline from a pull request cannot point `requirements` or `code` at
//! the host's files through a symlink in the project (`leak -> /etc`).
//! kiln-pipeline does the lexical checks and stays free of I/O; this is
//! the I/O half.

use std::path::{Path, PathBuf};

use kiln_pipeline::{Pipeline, PipelineError};

/// Reads, parses and validates a pipeline file, then checks every path it
/// names on disk.
///
/// # Errors
///
/// The file cannot be read, or is not a valid pipeline (each problem with
/// its line and column), or a path it names leads out of the project.
pub fn load(path: &Path) -> Result<Pipeline, PipelineError> {
    let bytes = std::fs::read(path).map_err(|source| PipelineError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let pipeline = Pipeline::parse_bytes(&bytes, path)?;
    // An unreadable project directory: the paths' users will say so.
    let Ok(root) = pipeline.base_dir().canonicalize() else {
        return Ok(pipeline);
    };
    pipeline.check_paths(|value| check_on_disk(&root, value))?;
    Ok(pipeline)
}

/// A path that [`check_on_disk`] found leading out of the project
/// directory through a symlink.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{path:?} resolves through a symlink to {}, outside the project directory {}",
    resolved.display(),
    root.display()
)]
pub struct SymlinkEscapeError {
    /// The path as written.
    pub path: String,
    /// Where it resolves to.
    pub resolved: PathBuf,
    /// The project directory.
    pub root: PathBuf,
}

/// Resolves `value` (already `kiln_pipeline::paths::check_relative`) against the project
/// directory `root` (canonical: the caller resolves it once for all paths)
/// with every symlink followed, and refuses it when it lands outside. A
/// path that does not exist yet is judged by its deepest existing ancestor;
/// whether it must exist is for the code that uses it to say.
///
/// # Errors
///
/// What is wrong, in words for the user.
fn check_on_disk(root: &Path, value: &str) -> Result<(), SymlinkEscapeError> {
    let mut probe: PathBuf = root.join(value);
    let resolved = loop {
        match probe.canonicalize() {
            Ok(p) => break p,
            Err(_) => match probe.parent() {
                Some(parent) => probe = parent.to_path_buf(),
                None => return Ok(()),
            },
        }
    };
    if resolved.starts_with(root) {
        Ok(())
    } else {
        Err(SymlinkEscapeError {
            path: value.into(),
            resolved,
            root: root.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_out_of_the_project_is_refused_and_one_inside_is_fine() {
        let t = tempfile::tempdir().unwrap();
        let project = t.path().canonicalize().unwrap().join("p");
        std::fs::create_dir_all(project.join("code")).unwrap();
        let outside = t.path().join("secret");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, project.join("leak")).unwrap();
        std::os::unix::fs::symlink("code", project.join("alias")).unwrap();
        assert_eq!(check_on_disk(&project, "code"), Ok(()));
        assert_eq!(check_on_disk(&project, "alias/x.txt"), Ok(()));
        assert_eq!(check_on_disk(&project, "not/there/yet"), Ok(()));
        for bad in ["leak", "leak/requirements.txt", "leak/missing/deeper"] {
            let err = check_on_disk(&project, bad).unwrap_err().to_string();
            assert!(err.contains("outside the project"), "{bad}: {err}");
        }
    }
}
