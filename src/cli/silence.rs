//! `vigil silence`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{SilenceAction, open_store, print};

pub(super) fn silence(
    action: SilenceAction,
    pipelines: PathBuf,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let Some(store) = open_store(pipelines, state_dir)? else {
        return Ok(ExitCode::from(1));
    };
    let now = chrono::Utc::now();
    match action {
        SilenceAction::Add {
            matchers,
            duration,
            comment,
        } => {
            let mut parsed = Vec::new();
            for m in &matchers {
                let (field, value, regex) = match (m.split_once('='), m.split_once('~')) {
                    (Some((f, v)), _) if !f.contains('~') => (f, v, false),
                    (_, Some((f, v))) => (f, v, true),
                    _ => {
                        let _ = writeln!(
                            std::io::stderr(),
                            "vigil: `{m}` is not FIELD=VALUE or FIELD~REGEX"
                        );
                        return Ok(ExitCode::from(2));
                    }
                };
                let matcher = vigil::store::Matcher {
                    field: field.trim().to_string(),
                    value: value.trim().to_string(),
                    regex,
                };
                if let Err(e) = matcher.check() {
                    let _ = writeln!(std::io::stderr(), "vigil: {e}");
                    return Ok(ExitCode::from(2));
                }
                parsed.push(matcher);
            }
            let length = vigil::time::parse_length(&duration)
                .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
            let silence = vigil::store::Silence {
                id: uuid::Uuid::new_v4().to_string(),
                created_at: now.timestamp_millis(),
                expires_at: chrono::Duration::from_std(length)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .context("--duration reaches past the last date vigil can hold")?
                    .timestamp_millis(),
                matchers: parsed,
                comment,
                created_by: std::env::var("USER").unwrap_or_else(|_| "cli".into()),
            };
            store.add_silence(&silence)?;
            print(&format!("{}\n", silence.id))?;
            Ok(ExitCode::SUCCESS)
        }
        SilenceAction::List => {
            let mut out = String::new();
            for s in store.silences()? {
                let active =
                    s.created_at <= now.timestamp_millis() && s.expires_at > now.timestamp_millis();
                let until = chrono::DateTime::from_timestamp_millis(s.expires_at)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                let matchers: Vec<String> = s
                    .matchers
                    .iter()
                    .map(|m| format!("{}{}{}", m.field, if m.regex { "~" } else { "=" }, m.value))
                    .collect();
                out.push_str(&format!(
                    "{}  {}  until {until}  {}  by {}{}\n",
                    s.id,
                    if active { "active" } else { "ended " },
                    matchers.join(" "),
                    s.created_by,
                    if s.comment.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", s.comment)
                    }
                ));
            }
            print(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        SilenceAction::Expire { id } => {
            if store.expire_silence(&id, now.timestamp_millis())? {
                print(&format!("{id}: ended\n"))?;
                Ok(ExitCode::SUCCESS)
            } else {
                let _ = writeln!(std::io::stderr(), "vigil: no active silence `{id}`");
                Ok(ExitCode::from(1))
            }
        }
    }
}
