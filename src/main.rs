//! The `vigil` command.
//!
//! Exit codes:
//! - 0: success (`validate`: no errors; warnings allowed unless `--deny-warnings`).
//! - 1: the configuration is invalid, or a node of a run failed.
//! - 2: usage or I/O error (bad flags, a path that cannot be read).
//! - 130: a second Ctrl-C/SIGTERM cut a draining shutdown short.

mod cli;

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use cli::{Cli, LogFormat, dispatch};

/// Events are allocated on a source's thread and freed on a sink's: glibc's allocator
/// spends much of its time on locks and trimming in that pattern, mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let format = cli.log_format;
    init_logging(format);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            // Said once: a line a person reads, or a log record a collector parses.
            let text = error_text(&e);
            match format {
                LogFormat::Json => tracing::error!("{text}"),
                LogFormat::Text => {
                    // The error may name a path or quote a file: no escape sequence gets
                    // through.
                    let _ = writeln!(
                        std::io::stderr(),
                        "error: {}",
                        vigil::diagnostic::escape_text(&text)
                    );
                }
            }
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, `: `-separated; a cause whose text its error already
/// quotes (`cannot read X: No such file` caused by `No such file`) is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("VIGIL_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        // The demo's loopback SMTP library announces itself at info, ahead of the banner.
        .unwrap_or_else(|_| EnvFilter::new("info,mailin_embedded=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_wanted())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Colour only for a person at a terminal: standard error is one, and `NO_COLOR` is not
/// set to something (<https://no-color.org>). A file, a pipe or the journal gets plain
/// text.
fn colour_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
