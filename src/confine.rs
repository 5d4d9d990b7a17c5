//! Paths a pipeline file names (template sets, script files) stay inside the pipeline
//! file's directory: no `..` step, no absolute path elsewhere, no symbolic link leading
//! out of it.
//!
//! The check is lexical first (what the name says), then, when the file exists, on the
//! real path (`canonicalize`): a link inside the directory that points outside is refused
//! as well.

use std::path::{Component, Path, PathBuf};

/// A path that leads out of the pipeline file's directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfineError {
    /// The path has a `..` step.
    #[error(
        "`{given}` has a `..` step: name a file inside the pipeline file's directory {dir} (copy it there)"
    )]
    ParentDir {
        /// The path as written.
        given: String,
        /// The pipeline file's directory.
        dir: String,
    },
    /// An absolute path that is not inside the directory.
    #[error(
        "`{given}` is outside the pipeline file's directory {dir}: name a file inside it (copy it there)"
    )]
    Outside {
        /// The path as written.
        given: String,
        /// The pipeline file's directory.
        dir: String,
    },
    /// The path is inside, but a symbolic link on it leads out.
    #[error(
        "`{given}` leads through a symbolic link to {target}, outside the pipeline file's directory {dir}: copy the file into the directory instead"
    )]
    Symlink {
        /// The path as written.
        given: String,
        /// Where it really leads.
        target: String,
        /// The pipeline file's directory.
        dir: String,
    },
}

/// `given` (relative to `base`, or absolute) as a path inside `base`, without `.` steps;
/// an error when it leads out of `base` (see the module docs). A path that does not
/// exist is returned as it is, for the caller to report it missing.
pub fn confine(base: &Path, given: &str) -> Result<PathBuf, ConfineError> {
    let dir = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    let shown = || dir.display().to_string();
    let path = Path::new(given);
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(ConfineError::ParentDir {
            given: given.to_string(),
            dir: shown(),
        });
    }
    let joined: PathBuf = if path.is_absolute() {
        let absolute_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let inside = without_dots(path)
            .strip_prefix(without_dots(&absolute_dir))
            .map(Path::to_path_buf);
        match inside {
            Ok(rest) => base.join(rest),
            Err(_) => {
                return Err(ConfineError::Outside {
                    given: given.to_string(),
                    dir: shown(),
                });
            }
        }
    } else {
        base.join(without_dots(path))
    };
    // The real path, when there is one: a symbolic link may lead elsewhere.
    if let (Ok(real), Ok(real_dir)) = (joined.canonicalize(), dir.canonicalize())
        && !real.starts_with(&real_dir)
    {
        return Err(ConfineError::Symlink {
            given: given.to_string(),
            target: real.display().to_string(),
            dir: shown(),
        });
    }
    Ok(joined)
}

/// `path` without its `.` steps.
fn without_dots(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_inside_is_kept_without_dot_steps() {
        assert_eq!(
            confine(Path::new("p"), "./scripts/./x.rhai"),
            Ok(PathBuf::from("p/scripts/x.rhai"))
        );
        assert_eq!(
            confine(Path::new(""), "x.rhai"),
            Ok(PathBuf::from("x.rhai"))
        );
        let cwd = std::env::current_dir().unwrap();
        let inside = cwd.join("p/x.rhai");
        assert_eq!(
            confine(Path::new("p"), inside.to_str().unwrap()),
            Ok(PathBuf::from("p/x.rhai"))
        );
    }

    #[test]
    fn dot_dot_and_absolute_paths_elsewhere_are_refused() {
        assert!(matches!(
            confine(Path::new("p"), "../plugins/x.rhai"),
            Err(ConfineError::ParentDir { .. })
        ));
        assert!(matches!(
            confine(Path::new("p"), "templates/../../etc/passwd.subject.hbs"),
            Err(ConfineError::ParentDir { .. })
        ));
        assert!(matches!(
            confine(Path::new("/srv/vigil/pipelines"), "/etc/passwd"),
            Err(ConfineError::Outside { .. })
        ));
        assert!(matches!(
            confine(
                Path::new("/srv/vigil/pipelines"),
                "/srv/vigil/pipelines-other/x"
            ),
            Err(ConfineError::Outside { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_leading_out_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("x.rhai"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("scripts")).unwrap();
        std::fs::write(dir.path().join("ok.rhai"), "true").unwrap();
        std::os::unix::fs::symlink(dir.path().join("ok.rhai"), dir.path().join("alias.rhai"))
            .unwrap();
        for name in ["x.rhai", "scripts/secret"] {
            let err = confine(dir.path(), name).unwrap_err();
            assert!(matches!(err, ConfineError::Symlink { .. }), "{err}");
        }
        // A link that stays inside is fine.
        assert_eq!(
            confine(dir.path(), "alias.rhai"),
            Ok(dir.path().join("alias.rhai"))
        );
    }
}
