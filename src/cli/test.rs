//! `vigil test`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use vigil::config::Env;
use vigil::config::diagnostic::{self, Format};

use super::print;

pub(super) fn test(paths: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from("pipelines")]
    } else {
        paths
    };
    let report = vigil::testing::run_paths(&paths, Env::Process)?;
    if !report.diagnostics.is_empty() {
        print(&diagnostic::render(&report.diagnostics, Format::Text))?;
    }
    if report.diagnostics.iter().any(|d| d.is_error()) {
        let _ = writeln!(
            std::io::stderr(),
            "vigil: no tests ran: fix the errors above"
        );
        return Ok(ExitCode::from(1));
    }
    print(&report.text)?;
    Ok(if report.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
