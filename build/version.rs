// The commit `vigil --version` names, asked of git at build time. Shared by `build.rs`
// and the tests (`tests/install.rs` includes it): no dependencies, nothing that panics.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What git says about the checkout at `dir`.
pub(crate) struct Described {
    /// The short commit hash and its commit date: `782ccd0 2026-12-06`.
    pub(crate) commit: String,
    /// Files whose change means another commit is checked out: `HEAD`, the branch's ref
    /// (loose or packed), for `cargo:rerun-if-changed`.
    pub(crate) watch: Vec<PathBuf>,
}

/// Runs `git` (the program `git`) in `dir`; `None` when git is missing, fails, or `dir`
/// is not the top of its own checkout (a source tarball unpacked inside some other
/// repository must not take that repository's commit).
pub(crate) fn describe(git: &str, dir: &Path) -> Option<Described> {
    let ask = |args: &[&str]| -> Option<String> {
        let out = Command::new(git)
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8(out.stdout).ok()?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_string())
    };
    let top = PathBuf::from(ask(&["rev-parse", "--show-toplevel"])?);
    if !same_dir(&top, dir) {
        return None;
    }
    let commit = ask(&["log", "-1", "--format=%h %cs", "--abbrev=7"])?;
    let absolute = |p: String| -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { dir.join(p) }
    };
    let git_dir = absolute(ask(&["rev-parse", "--git-dir"])?);
    let common_dir = ask(&["rev-parse", "--git-common-dir"])
        .map(absolute)
        .unwrap_or_else(|| git_dir.clone());
    let head = git_dir.join("HEAD");
    let mut watch = vec![head.clone()];
    // HEAD's reflog: every commit, checkout or reset of this checkout (a worktree has its
    // own) adds a line, whichever way its branch's ref is stored.
    let reflog = git_dir.join("logs").join("HEAD");
    if reflog.is_file() {
        watch.push(reflog);
    }
    if let Ok(text) = std::fs::read_to_string(&head)
        && let Some(name) = text.trim().strip_prefix("ref: ")
    {
        // A branch: its loose ref when there is one, and the packed refs (where it moves
        // to after `git pack-refs`).
        for candidate in [common_dir.join(name), common_dir.join("packed-refs")] {
            if candidate.is_file() {
                watch.push(candidate);
            }
        }
    }
    Some(Described { commit, watch })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
