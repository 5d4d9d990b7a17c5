//! `vigil ban`: the bans of the running vigil's `nftables_ban` sinks, through its API
//! (only the running vigil holds CAP_NET_ADMIN and applies bans).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::Value;

use super::{BanAction, ListFormat, print};

/// Where the API is and the token it wants.
struct Api {
    url: String,
    token: Option<String>,
}

/// `--url`/`VIGIL_URL` and `--token-file`/`VIGIL_TOKEN_FILE`/`VIGIL_TOKEN`, else what the
/// pipelines' settings say (`web.listen`, `web.token`/`web.token_file`), else
/// `http://127.0.0.1:5001` without a token.
fn api(
    pipelines: PathBuf,
    url: Option<String>,
    token_file: Option<PathBuf>,
) -> anyhow::Result<Api> {
    let settings =
        if url.is_none() || (token_file.is_none() && std::env::var_os("VIGIL_TOKEN").is_none()) {
            vigil::config::load_paths(&[pipelines], &vigil::config::LoadOptions::default())
                .ok()
                .and_then(|l| l.config)
                .map(|c| c.settings.web)
        } else {
            None
        };
    let url = match (url, &settings) {
        (Some(u), _) => u,
        (None, Some(web)) => {
            let listen = web
                .listen
                .replace("0.0.0.0:", "127.0.0.1:")
                .replace("[::]:", "[::1]:");
            format!("http://{listen}")
        }
        (None, None) => "http://127.0.0.1:5001".into(),
    };
    let token = if let Some(f) = token_file {
        let text = std::fs::read_to_string(&f)
            .with_context(|| format!("reading the token file {}", f.display()))?;
        Some(text.trim().to_string())
    } else if let Ok(t) = std::env::var("VIGIL_TOKEN") {
        Some(t.trim().to_string())
    } else {
        match settings {
            Some(web) if web.token.is_some() || web.token_file.is_some() => Some(
                vigil::secret::resolve_secret("web.token", &web.token, web.token_file.as_deref())
                    .map_err(|e| anyhow::anyhow!(e))?
                    .expose()
                    .to_string(),
            ),
            _ => None,
        }
    };
    Ok(Api {
        url: url.trim_end_matches('/').to_string(),
        token,
    })
}

/// Percent-encodes a path segment (an IPv6 address has `:`; anything else is escaped).
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The person asking, for the record.
fn who() -> String {
    std::env::var("USER").unwrap_or_else(|_| "cli".into())
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "never".into())
}

pub(super) fn ban(
    action: BanAction,
    pipelines: PathBuf,
    url: Option<String>,
    token_file: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let api = api(pipelines, url, token_file)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(action, api))
}

async fn run(action: BanAction, api: Api) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .context("building the HTTP client")?;
    let with_token = |req: reqwest::RequestBuilder| match &api.token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let request = match &action {
        BanAction::List { all, .. } => client
            .get(format!("{}/api/v1/bans", api.url))
            .query(&[("all", all.to_string())]),
        BanAction::Add { ip, ttl, sink } => {
            let mut body = serde_json::json!({"address": ip, "created_by": who()});
            if let Some(t) = ttl {
                body["ttl"] = t.as_str().into();
            }
            if let Some(s) = sink {
                body["sink"] = s.as_str().into();
            }
            client.post(format!("{}/api/v1/bans", api.url)).json(&body)
        }
        BanAction::Remove { ip, sink } => {
            let mut query = vec![("by", who())];
            if let Some(s) = sink {
                query.push(("sink", s.clone()));
            }
            client
                .delete(format!("{}/api/v1/bans/{}", api.url, segment(ip)))
                .query(&query)
        }
    };
    let answer = with_token(request).send().await.with_context(|| {
        format!(
            "cannot reach vigil's API at {} (is `vigil run` running? --url names another address)",
            api.url
        )
    })?;
    let status = answer.status();
    let body: Value = answer
        .json()
        .await
        .with_context(|| format!("vigil's API answered {status} without JSON"))?;
    if !status.is_success() {
        let message = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        let _ = writeln!(std::io::stderr(), "vigil: {message}");
        return Ok(ExitCode::from(1));
    }
    match action {
        BanAction::List { format, .. } => {
            if format == ListFormat::Json {
                print(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&body).unwrap_or_default()
                ))?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut out = String::new();
            for s in body["sinks"].as_array().into_iter().flatten() {
                if s["dry_run"].as_bool() == Some(true) {
                    out.push_str(&format!(
                        "# {}: dry run: nothing is applied (see the deliveries for what would be)\n",
                        s["id"].as_str().unwrap_or_default()
                    ));
                }
            }
            for b in body["bans"].as_array().into_iter().flatten() {
                let state = b["state"].as_str().unwrap_or_default();
                let end = if state == "active" {
                    format!("until {}", when(b["expires_at"].as_i64().unwrap_or(0)))
                } else {
                    format!(
                        "ended {} ({})",
                        when(b["ended_at"].as_i64().unwrap_or(0)),
                        b["ended_by"].as_str().unwrap_or_default()
                    )
                };
                let alert = b["alert_id"]
                    .as_str()
                    .map(|a| format!("  alert {}", a.chars().take(12).collect::<String>()))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "{:<39}  {:<8}  {end}  by {}{alert}\n",
                    b["address"].as_str().unwrap_or_default(),
                    state,
                    b["created_by"].as_str().unwrap_or_default(),
                ));
            }
            print(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        BanAction::Add { .. } | BanAction::Remove { .. } => {
            let message = body["message"].as_str().unwrap_or_default();
            print(&format!("{message}\n"))?;
            Ok(if body["outcome"] == "refused" {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
