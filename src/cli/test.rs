//! `vigil test`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use vigil::config::Env;
use vigil::config::diagnostic::{self, Format as DiagFormat};
use vigil::testing::Format;

use super::print;

pub(super) fn test(
    paths: Vec<PathBuf>,
    format: Format,
    run: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from("pipelines")]
    } else {
        paths
    };
    let report = vigil::testing::run_matching(&paths, Env::Process, run)?;
    let errors = report.diagnostics.iter().any(|d| d.is_error());
    // Problems with the files: in the format asked for (JSON carries them in its object;
    // JUnit's standard output stays XML, so they go to standard error as text).
    if !report.diagnostics.is_empty() {
        match format {
            Format::Text => print(&diagnostic::render(&report.diagnostics, DiagFormat::Text))?,
            Format::Github => {
                print(&diagnostic::render(&report.diagnostics, DiagFormat::Github))?;
            }
            Format::Json => {}
            Format::Junit => {
                let _ = write!(
                    std::io::stderr(),
                    "{}",
                    diagnostic::render(&report.diagnostics, DiagFormat::Text)
                );
            }
        }
    }
    if errors {
        if format == Format::Json {
            print(&vigil::testing::render(&report, format))?;
        }
        let _ = writeln!(
            std::io::stderr(),
            "vigil: no tests ran: fix the errors above"
        );
        return Ok(ExitCode::from(1));
    }
    print(&vigil::testing::render(&report, format))?;
    if let Some(name) = run
        && report.cases.is_empty()
    {
        let _ = writeln!(
            std::io::stderr(),
            "vigil: no test case name contains `{name}` ({} left out)",
            report.filtered
        );
        return Ok(ExitCode::from(1));
    }
    Ok(if report.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
