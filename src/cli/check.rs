//! `vigil check`: `vigil validate`, then the environment the pipelines need — every
//! secret file readable, each PCE accepting its API key, each SMTP server, LINE channel
//! and webhook endpoint answering, `state_dir` writable — one line per check, `ok` or
//! `FAIL` with the reason.
//!
//! Safe beside a running vigil: nothing is sent (no mail, message or webhook), the state
//! database is not opened, and the only write is a temporary file in `state_dir`, removed
//! at once. Checks run concurrently, each bounded by `--timeout`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use vigil::config::diagnostic::{self, Format};
use vigil::config::{Env, LoadOptions, SettingsConfig, load_paths};
use vigil::pce::client::{PceClient, PceConnectionConfig, PceError};

use super::print;

/// How one check went.
struct Line {
    what: String,
    outcome: Result<String, String>,
}

type Check = Pin<Box<dyn Future<Output = Line> + Send>>;

pub(super) fn check(pipelines: PathBuf, timeout: Duration) -> anyhow::Result<ExitCode> {
    let opts = LoadOptions {
        env: Env::Process,
        // The secret files are checks of their own below, one line each.
        secret_files: false,
    };
    let loaded = load_paths(&[pipelines], &opts)?;
    if !loaded.diagnostics.is_empty() {
        print(&diagnostic::render(&loaded.diagnostics, Format::Text))?;
    }
    let files = loaded.files.len();
    let has_errors = loaded.has_errors();
    let Some(config) = loaded.config.filter(|_| !has_errors) else {
        print(&format!(
            "{}\nthe environment was not checked: fix the errors above first\n",
            line_text(&Line {
                what: "validate".into(),
                outcome: Err("the pipeline files have errors (above)".into()),
            })
        ))?;
        return Ok(ExitCode::from(1));
    };
    let warnings = loaded.diagnostics.len();
    let validated = Line {
        what: "validate".into(),
        outcome: Ok(format!(
            "{files} file{}, {warnings} warning{}",
            plural(files),
            plural(warnings)
        )),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let lines = rt.block_on(run_checks(&config.settings, timeout));
    let mut out = line_text(&validated);
    out.push('\n');
    let mut failed = 0;
    for line in &lines {
        failed += usize::from(line.outcome.is_err());
        out.push_str(&line_text(line));
        out.push('\n');
    }
    let total = lines.len() + 1;
    out.push_str(&match failed {
        0 => format!("{total} checks passed\n"),
        n => format!("{n} of {total} checks failed\n"),
    });
    print(&out)?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn line_text(line: &Line) -> String {
    match &line.outcome {
        Ok(detail) => format!("ok    {}: {detail}", line.what),
        Err(reason) => format!("FAIL  {}: {reason}", line.what),
    }
}

/// Every check of `settings`, run at once; the lines in a fixed order.
async fn run_checks(settings: &SettingsConfig, timeout: Duration) -> Vec<Line> {
    let mut checks: Vec<Check> = Vec::new();
    for (what, path) in secret_files(settings) {
        checks.push(Box::pin(async move {
            Line {
                what,
                outcome: secret_file(&path),
            }
        }));
    }
    let c = &settings.connections;
    for (name, conn) in &c.pce {
        let (name, conn) = (name.clone(), conn.clone());
        checks.push(bounded(
            format!("pce {name} ({}, org {})", conn.url.trim(), conn.org),
            timeout,
            async move { pce(&conn, timeout).await },
        ));
    }
    for (name, conn) in &c.smtp {
        let (name, conn) = (name.clone(), conn.clone());
        let tls = match conn.tls {
            vigil::sinks::mail::SmtpTls::None => "no TLS",
            vigil::sinks::mail::SmtpTls::Starttls => "STARTTLS",
            vigil::sinks::mail::SmtpTls::Implicit => "implicit TLS",
        };
        let login = if conn.username.is_some() {
            ", AUTH"
        } else {
            ""
        };
        let done = format!("connected, EHLO{}{login}, NOOP answered", tls_step(tls));
        checks.push(bounded(
            format!("smtp {name} ({}:{}, {tls})", conn.host, conn.port()),
            timeout,
            async move {
                vigil::sinks::mail::check_connection(&conn, timeout)
                    .await
                    .map(|()| done)
            },
        ));
    }
    for (name, conn) in &c.line {
        let (name, conn) = (name.clone(), conn.clone());
        checks.push(bounded(
            format!("line {name} ({})", conn.base_url.trim_end_matches('/')),
            timeout,
            async move {
                vigil::sinks::line::check_connection(&conn, timeout)
                    .await
                    .map(|()| "the channel access token is accepted (GET /v2/bot/info)".into())
            },
        ));
    }
    for (name, conn) in &c.webhook {
        let (name, conn) = (name.clone(), conn.clone());
        checks.push(bounded(format!("webhook {name}"), timeout, async move {
            vigil::sinks::webhook::check_connection(&conn, timeout).await
        }));
    }
    let state_dir = settings.state_dir.clone();
    checks.push(Box::pin(async move {
        Line {
            what: format!("state_dir {}", state_dir.display()),
            outcome: writable(&state_dir),
        }
    }));
    futures::future::join_all(checks).await
}

fn tls_step(tls: &str) -> String {
    match tls {
        "no TLS" => String::new(),
        other => format!(", {other}"),
    }
}

/// `check` under a limit a little longer than `timeout` (each check bounds its own steps
/// by `timeout`; this catches anything that would not).
fn bounded(
    what: String,
    timeout: Duration,
    check: impl Future<Output = Result<String, String>> + Send + 'static,
) -> Check {
    Box::pin(async move {
        let limit = timeout + Duration::from_secs(1);
        let outcome = match tokio::time::timeout(limit, check).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {}", seconds(timeout))),
        };
        Line { what, outcome }
    })
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Every secret file the settings name, with the setting's path.
fn secret_files(settings: &SettingsConfig) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut add = |what: String, path: &Option<PathBuf>| {
        if let Some(p) = path {
            out.push((format!("secret file {what} ({})", p.display()), p.clone()));
        }
    };
    let c = &settings.connections;
    for (name, conn) in &c.pce {
        add(
            format!("connections.pce.{name}.api_key_file"),
            &conn.api_key_file,
        );
        add(
            format!("connections.pce.{name}.api_secret_file"),
            &conn.api_secret_file,
        );
    }
    for (name, conn) in &c.smtp {
        add(
            format!("connections.smtp.{name}.password_file"),
            &conn.password_file,
        );
    }
    for (name, conn) in &c.line {
        add(
            format!("connections.line.{name}.token_file"),
            &conn.token_file,
        );
    }
    for (name, conn) in &c.webhook {
        add(
            format!("connections.webhook.{name}.url_file"),
            &conn.url_file,
        );
        add(
            format!("connections.webhook.{name}.signing_secret_file"),
            &conn.signing_secret_file,
        );
    }
    add("web.token_file".into(), &settings.web.token_file);
    out
}

/// Whether a secret file can be read and holds a value (never shown).
fn secret_file(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Err(e) => Err(format!("cannot read it: {e}")),
        Ok(text) if text.trim().is_empty() => Err("it is empty".into()),
        Ok(_) => Ok("readable, not empty".into()),
    }
}

/// One authenticated request to the PCE, without retries.
async fn pce(conn: &PceConnectionConfig, timeout: Duration) -> Result<String, String> {
    let mut cfg = conn.clone();
    cfg.max_retries = 0;
    let limit =
        vigil::time::Duration::from_millis(timeout.as_millis().try_into().unwrap_or(u64::MAX));
    cfg.request_timeout = limit;
    cfg.connect_timeout = limit;
    let client =
        PceClient::new(&cfg, Arc::new(vigil::runtime::WallClock)).map_err(|e| e.to_string())?;
    client
        .check_access()
        .await
        .map(|()| {
            format!(
                "the API key is accepted (GET /orgs/{}/labels answered)",
                cfg.org
            )
        })
        .map_err(|e| pce_failure(&e, &cfg))
}

/// A PCE failure in the words of its class: 401, 403, timeout, DNS, TLS, refused.
fn pce_failure(e: &PceError, cfg: &PceConnectionConfig) -> String {
    let e = match e {
        PceError::RetriesExhausted { last, .. } => last,
        other => other,
    };
    match e {
        PceError::Status { status: 401, .. } => {
            "401 unauthorized: the PCE refuses the API key (check api_key/api_secret or their files; the key may have been deleted)".into()
        }
        PceError::Status { status: 403, .. } => format!(
            "403 forbidden: the API key may not read org {} (check `org` and the key's role)",
            cfg.org
        ),
        PceError::Timeout { after, .. } => format!("timed out: no answer within {}", seconds(*after)),
        PceError::Connect { message, .. } => connect_failure(message),
        other => other.to_string(),
    }
}

/// What kind of connection failure `message` (an error chain) is; the chain from the
/// connector's own words on (the URL is on the line already).
fn connect_failure(message: &str) -> String {
    let message = message
        .split_once("(Connect): ")
        .map_or(message, |(_, cause)| cause);
    let lower = message.to_ascii_lowercase();
    let class = if lower.contains("dns error") || lower.contains("failed to lookup") {
        "DNS: the host name does not resolve"
    } else if [
        "certificate",
        "tls",
        "handshake",
        "ssl",
        "corrupt message",
        "invalidcontenttype",
        "fatal alert",
        "peer sent",
    ]
    .iter()
    .any(|s| lower.contains(s))
    {
        "TLS: the handshake failed (check ca_file, or the url's host and port)"
    } else if lower.contains("connection refused") {
        "connection refused: nothing listens at the url's host and port"
    } else if lower.contains("timed out") {
        "timed out connecting"
    } else {
        "cannot connect"
    };
    format!("{class}: {message}")
}

/// Whether vigil can create files in `dir` (or, when it does not exist yet, in the
/// directory it would be created in): a temporary file is created and removed.
fn writable(dir: &Path) -> Result<String, String> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(format!(
            "{} is not a directory, so state_dir cannot be created under it",
            existing.display()
        ));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let probe = existing.join(format!(".vigil-check-{}-{nanos}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| format!("cannot create a file in {}: {e}", existing.display()))?;
    std::fs::remove_file(&probe)
        .map_err(|e| format!("cannot remove the test file {} again: {e}", probe.display()))?;
    Ok(if existing == dir {
        "writable".into()
    } else {
        format!(
            "does not exist yet; vigil run creates it in {}, which is writable",
            existing.display()
        )
    })
}
