//! `vigil send-test`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use vigil::runtime::WallClock;

use super::{load_for_use, print};

pub(super) fn send_test(path: PathBuf, sink: &str, dry_run: bool) -> anyhow::Result<ExitCode> {
    let loaded = load_for_use(path)?;
    let Some(config) = loaded.config else {
        return Ok(ExitCode::from(1));
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = rt.block_on(async {
        let send =
            vigil::runtime::send_test::send_test(&config, sink, dry_run, Arc::new(WallClock));
        match tokio::time::timeout(std::time::Duration::from_secs(60), send).await {
            Ok(r) => r,
            Err(_) => Err("no answer within 60s".to_string()),
        }
    });
    let t = match outcome {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "vigil: send-test: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut out = String::new();
    if !t.recipients.is_empty() {
        out.push_str(&format!("recipients: {}\n", t.recipients.join(", ")));
    }
    if dry_run {
        for (part, text) in &t.preview {
            out.push_str(&format!("----- {part} -----\n{text}\n"));
        }
    }
    let code = match &t.result {
        None => {
            out.push_str(&format!(
                "{} ({}): rendered, not sent (--dry-run)\n",
                t.sink, t.kind
            ));
            ExitCode::SUCCESS
        }
        Some(Ok(answer)) => {
            out.push_str(&format!(
                "{} ({}): delivered: {}\n",
                t.sink, t.kind, answer.0
            ));
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            let kind = match e {
                vigil::sinks::delivery::SendError::Transient { .. } => {
                    "failed (transient, would be retried)"
                }
                vigil::sinks::delivery::SendError::Permanent { .. } => "refused (permanent)",
            };
            out.push_str(&format!("{} ({}): {kind}: {e}\n", t.sink, t.kind));
            ExitCode::from(1)
        }
    };
    print(&out)?;
    Ok(code)
}
