//! `vigil completions` and `vigil man`: shell completions and manual pages generated from
//! the command line's own definition, so they never drift from it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::{Cli, print};

/// Prints the completion script of `shell` for `vigil`.
pub(super) fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "vigil", &mut out);
    let text = String::from_utf8(out).context("the completion script is not UTF-8")?;
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the manual page `vigil(1)`; with `out`, writes it and one page per command
/// (`vigil-run.1`, `vigil-outbox-list.1`, ...) into that directory instead.
pub(super) fn man(out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match out {
        None => print(&main_page()?)?,
        Some(dir) => write_pages(&dir)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn write_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing the manual pages into {}", dir.display()))?;
    // vigil(1) again, with the sections clap does not know.
    let main = dir.join("vigil.1");
    std::fs::write(&main, main_page()?).with_context(|| format!("writing {}", main.display()))?;
    Ok(())
}

/// vigil(1): clap's sections, then exit status, environment and files.
fn main_page() -> anyhow::Result<String> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command().disable_help_subcommand(true))
        .render(&mut page)
        .context("rendering the manual page")?;
    let mut page = String::from_utf8(page).context("the manual page is not UTF-8")?;
    page.push_str(EXTRA_SECTIONS);
    Ok(page)
}

/// The sections of vigil(1) after clap's, in roff.
const EXTRA_SECTIONS: &str = r#".SH "EXIT STATUS"
.TP
0
Success (\fBvalidate\fR: no errors; warnings allowed unless \fB\-\-deny\-warnings\fR).
.TP
1
The configuration is invalid, or a node of a run failed.
.TP
2
Usage or I/O error (bad flags, a path that cannot be read).
.TP
130
A second SIGINT or SIGTERM cut a draining shutdown short.
.SH ENVIRONMENT
.TP
\fBVIGIL_LOG\fR, \fBRUST_LOG\fR
Log filter (default \fBinfo\fR), e.g. \fBVIGIL_LOG=vigil=debug\fR.
.TP
\fBNO_COLOR\fR
When set (to anything), logs carry no colour even on a terminal. Logs written to a file or a pipe never do.
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
Set by systemd for a \fBType=notify\fR unit: \fBvigil run\fR sends READY=1 once its pipelines run and its API listens, STOPPING=1 when it starts to drain, and watchdog pings at half the period.
.TP
\fBCREDENTIALS_DIRECTORY\fR
Set by systemd's \fBLoadCredential=\fR: point a \fB*_file:\fR setting at \fB${CREDENTIALS_DIRECTORY}/NAME\fR to read a secret from it.
.SH FILES
.TP
\fI/etc/vigil/pipelines/\fR
The pipeline files of the packaged service (\fBvigil run \-\-pipelines /etc/vigil/pipelines\fR).
.TP
\fI/var/lib/vigil/\fR
The packaged service's \fBstate_dir\fR: checkpoints, history, the outbox and silences.
.SH "SEE ALSO"
\fBvigil\-run\fR(1), \fBvigil\-validate\fR(1), \fBsystemd.exec\fR(5), \fBsd_notify\fR(3)
"#;
