//! `vigil validate`.

use std::path::PathBuf;
use std::process::ExitCode;

use vigil::config::diagnostic::{self, Format};
use vigil::config::{Env, LoadOptions, load_paths};

use super::print;

pub(super) fn validate(
    paths: Vec<PathBuf>,
    format: Format,
    deny_warnings: bool,
    no_env: bool,
) -> anyhow::Result<ExitCode> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from("pipelines")]
    } else {
        paths
    };
    let opts = LoadOptions {
        env: if no_env { Env::NoEnv } else { Env::Process },
        secret_files: !no_env,
    };
    let loaded = load_paths(&paths, &opts)?;
    print(&diagnostic::render(&loaded.diagnostics, format))?;
    let warnings = loaded.diagnostics.iter().any(|d| !d.is_error());
    Ok(if loaded.has_errors() || (deny_warnings && warnings) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
