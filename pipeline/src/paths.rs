//! Paths named in kiln.yaml stay inside the project directory (the
//! directory of kiln.yaml): a pipeline from a pull request must not read
//! `../../../../etc/passwd` as its requirements or tar the host's `/etc/ssh`
//! as its code. [`check_relative`] is the pure, lexical rule applied at
//! validation; [`check_on_disk`] resolves symlinks too, when the pipeline is
//! loaded from a file.

use std::path::{Component, Path, PathBuf};

/// Why a path named in kiln.yaml is refused by [`check_relative`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelativePathError {
    /// The path is empty or white space.
    #[error("expected a path relative to the project directory, found an empty string")]
    Empty,
    /// The path has a NUL byte.
    #[error("{path:?} contains a NUL byte")]
    Nul {
        /// The path as written.
        path: String,
    },
    /// The path is absolute.
    #[error(
        "{path:?} is absolute: paths in kiln.yaml are relative to the project directory (the directory of kiln.yaml)"
    )]
    Absolute {
        /// The path as written.
        path: String,
    },
    /// A `..` climbs above the project directory.
    #[error("{path:?} leads outside the project directory (the directory of kiln.yaml)")]
    Outside {
        /// The path as written.
        path: String,
    },
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

/// Refuses an empty or absolute path, a NUL byte, and any `..` that climbs
/// above the project directory.
///
/// # Errors
///
/// What is wrong, in words for the user.
pub fn check_relative(value: &str) -> Result<(), RelativePathError> {
    if value.trim().is_empty() {
        return Err(RelativePathError::Empty);
    }
    if value.contains('\0') {
        return Err(RelativePathError::Nul { path: value.into() });
    }
    let path = Path::new(value);
    if path.is_absolute() {
        return Err(RelativePathError::Absolute { path: value.into() });
    }
    let mut depth = 0usize;
    for c in path.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            _ => {
                return Err(RelativePathError::Outside { path: value.into() });
            }
        }
    }
    Ok(())
}

/// Resolves `value` (already [`check_relative`]) against the project
/// directory `root` (canonical: the caller resolves it once for all paths)
/// with every symlink followed, and refuses it when it lands outside. A
/// path that does not exist yet is judged by its deepest existing ancestor;
/// whether it must exist is for the code that uses it to say.
///
/// # Errors
///
/// What is wrong, in words for the user.
pub fn check_on_disk(root: &Path, value: &str) -> Result<(), SymlinkEscapeError> {
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
    fn relative_paths_inside_pass_and_the_rest_is_refused() {
        for ok in ["requirements.txt", "./a/../b", "a/b/../../c", "src/", "."] {
            assert_eq!(check_relative(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("../../../../etc/passwd", "outside the project"),
            ("a/../../b", "outside the project"),
            ("/etc/ssh", "is absolute"),
            ("", "empty"),
            ("  ", "empty"),
            ("a\0b", "NUL"),
        ] {
            let err = check_relative(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

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
