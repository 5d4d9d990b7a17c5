//! Names the commit in `vigil --version` (`vigil 0.1.0 (782ccd0 2026-12-06)`): asked of
//! git when the sources are a git checkout, `VIGIL_COMMIT` when set (a build from a
//! tarball that knows its commit), none otherwise. Never fails the build.

use std::path::PathBuf;

#[path = "build/version.rs"]
mod version;

use version::describe;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/version.rs");
    println!("cargo:rerun-if-env-changed=VIGIL_COMMIT");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = match std::env::var("VIGIL_COMMIT") {
        Ok(c) if !c.trim().is_empty() => Some(c.trim().to_string()),
        _ => describe("git", &dir).map(|d| {
            for file in &d.watch {
                println!("cargo:rerun-if-changed={}", file.display());
            }
            d.commit
        }),
    };
    let full = match commit {
        Some(c) => format!("{version} ({c})"),
        None => version,
    };
    println!("cargo:rustc-env=VIGIL_VERSION={full}");
}
