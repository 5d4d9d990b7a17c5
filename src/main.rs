//! The `vigil` command.
//!
//! Exit codes:
//! - 0: success (`validate`: no errors; warnings allowed unless `--deny-warnings`).
//! - 1: the configuration is invalid, or a node of a run failed.
//! - 2: usage or I/O error (bad flags, a path that cannot be read).
//! - 130: a second Ctrl-C/SIGTERM cut a draining shutdown short.

mod cli;

use std::io::Write as _;
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
    init_logging(cli.log_format);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            // The error may name a path or quote a file: no escape sequence gets through.
            let text = format!("{e:#}");
            let _ = writeln!(
                std::io::stderr(),
                "error: {}",
                vigil::diagnostic::escape_text(&text)
            );
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("VIGIL_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
