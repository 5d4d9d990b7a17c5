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
    let env = if no_env { Env::NoEnv } else { Env::Process };
    let opts = LoadOptions {
        env: env.clone(),
        secret_files: !no_env,
    };
    // `*.test.yaml` files given by name are test files: their pipelines are the other
    // paths given, or else the files of their directory.
    let (tests, mut pipelines): (Vec<PathBuf>, Vec<PathBuf>) =
        paths.iter().cloned().partition(|p| is_test_file(p));
    if pipelines.is_empty() {
        pipelines = tests
            .iter()
            .map(|t| match t.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        pipelines.dedup();
    }
    let mut loaded = load_paths(&pipelines, &opts)?;
    let test_diags = vigil::testing::check_test_files(&paths, &env, loaded.config.as_ref())?;
    loaded.diagnostics.extend(test_diags);
    diagnostic::sort(&mut loaded.diagnostics);
    print(&diagnostic::render(&loaded.diagnostics, format))?;
    let errors = loaded.diagnostics.iter().any(|d| d.is_error());
    let warnings = loaded.diagnostics.iter().any(|d| !d.is_error());
    Ok(if errors || (deny_warnings && warnings) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn is_test_file(p: &std::path::Path) -> bool {
    p.is_file()
        && p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".test.yaml") || n.ends_with(".test.yml"))
}
