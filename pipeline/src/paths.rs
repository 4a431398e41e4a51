//! Paths named in kiln.yaml stay inside the project directory (the
//! directory of kiln.yaml): a pipeline from a pull request must not read
//! `../../../../etc/passwd` as its requirements or tar the host's `/etc/ssh`
//! as its code. [`check_relative`] is the pure, lexical rule applied at
//! validation; the loader (`kiln_runner::pipeline_file`) resolves symlinks
//! too, when the pipeline is read from a file.

use std::path::{Component, Path};

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
}
