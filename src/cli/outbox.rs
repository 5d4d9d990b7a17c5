//! `vigil outbox`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{ListFormat, OutboxAction, OutboxFilter, open_store, print};

pub(super) fn outbox(
    action: OutboxAction,
    pipelines: PathBuf,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use vigil::store::OutboxState;
    let Some(store) = open_store(pipelines, state_dir)? else {
        return Ok(ExitCode::from(1));
    };
    let now = chrono::Utc::now().timestamp_millis();
    match action {
        OutboxAction::List {
            state,
            limit,
            format,
        } => {
            let filter = match state {
                OutboxFilter::Dead => Some(OutboxState::Dead),
                OutboxFilter::Pending => Some(OutboxState::Pending),
                OutboxFilter::Gathering => Some(OutboxState::Gathering),
                OutboxFilter::Sending => Some(OutboxState::Sending),
                OutboxFilter::Sent => Some(OutboxState::Sent),
                OutboxFilter::All => None,
            };
            let entries = store.outbox(filter, limit)?;
            if format == ListFormat::Json {
                print(&format!("{}\n", serde_json::to_string_pretty(&entries)?))?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut out = String::new();
            for e in &entries {
                let when = chrono::DateTime::from_timestamp_millis(e.created_at)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "{}  {}  {}  {} alert(s)  {} attempt(s)  stored {when}\n",
                    e.id,
                    e.state.as_str(),
                    e.sink,
                    e.alerts.len(),
                    e.attempts
                ));
                for a in &e.alerts {
                    out.push_str(&format!("    [{}] {}\n", a.severity, a.title));
                }
                if let Some(err) = &e.last_error {
                    out.push_str(&format!("    reason: {err}\n"));
                }
                if let Some(answer) = &e.answer {
                    out.push_str(&format!("    answer: {answer}\n"));
                }
            }
            out.push_str(&format!("{} message(s)\n", entries.len()));
            print(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        OutboxAction::Retry { ref id } | OutboxAction::Drop { ref id } => {
            let retry = matches!(action, OutboxAction::Retry { .. });
            let done = match store.outbox_entry(id)? {
                Some(e) if retry => store.retry_dead(&e.id, now)?.then_some(format!(
                    "{}: pending again; a running vigil sends it within seconds, or the next start does\n",
                    e.id
                )),
                Some(e) => store
                    .drop_dead(&e.id)?
                    .then_some(format!("{}: dropped\n", e.id)),
                None => None,
            };
            match done {
                Some(message) => {
                    print(&message)?;
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "vigil: no dead letter `{id}` (`vigil outbox list` shows them)"
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
