//! `vigil send-test SINK`: a sample alert through a configured sink, now, bypassing the
//! outbox, with the peer's answer reported.

use std::sync::Arc;

use crate::config::Config;
use crate::runtime::{BuildContext, delivery_services};
use crate::sinks::delivery::{Answer, Notification, Notifier, SendError, sample_alert};
use crate::time::SharedClock;

/// What `send-test` did.
#[derive(Debug)]
pub struct SendTest {
    /// The sink, as `pipeline.sink`.
    pub sink: String,
    /// Its kind (`mail`, `line`, `webhook`).
    pub kind: &'static str,
    /// What would be (or was) sent: (part, text).
    pub preview: Vec<(String, String)>,
    /// The recipients, for sinks that route (mail).
    pub recipients: Vec<String>,
    /// The peer's answer; `None` for a dry run.
    pub result: Option<Result<Answer, SendError>>,
}

/// Finds sink `name` (`pipeline.sink`, or a sink name unique across pipelines) in
/// `config`, renders a sample alert through it and, unless `dry_run`, sends it once.
pub async fn send_test(
    config: &Config,
    name: &str,
    dry_run: bool,
    clock: SharedClock,
) -> Result<SendTest, String> {
    let mut found = Vec::new();
    for p in &config.pipelines {
        for (sink_name, sink) in &p.config.sinks {
            let id = format!("{}.{sink_name}", p.config.name);
            if id == name || sink_name == name {
                found.push((p, sink_name, sink, id));
            }
        }
    }
    let (pipeline, sink_name, sink, id) = match found.len() {
        1 => found.remove(0),
        0 => {
            let known: Vec<String> = config
                .pipelines
                .iter()
                .flat_map(|p| {
                    p.config
                        .sinks
                        .iter()
                        .filter(|(_, s)| s.connection().is_some())
                        .map(move |(n, _)| format!("{}.{n}", p.config.name))
                })
                .collect();
            return Err(if known.is_empty() {
                format!("no sink `{name}`; no pipeline has a mail, line or webhook sink")
            } else {
                format!(
                    "no sink `{name}`; the delivering sinks are: {}",
                    known.join(", ")
                )
            });
        }
        _ => {
            let ids: Vec<&str> = found.iter().map(|f| f.3.as_str()).collect();
            return Err(format!(
                "`{name}` names several sinks ({}): write `pipeline.sink`",
                ids.join(", ")
            ));
        }
    };
    let store = crate::store::Store::in_memory().map_err(|e| e.to_string())?;
    let cx = BuildContext {
        id: id.as_str().into(),
        pipeline: pipeline.config.name.as_str().into(),
        node: sink_name.as_str().into(),
        base_dir: pipeline
            .file
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default(),
        state_dir: config.settings.state_dir.clone(),
        rejected_max_bytes: config.settings.retention.rejected_max_bytes,
        clock,
        store: Arc::new(store),
        keep_state: false,
        public_url: config.settings.public_url.as_str().into(),
        history_interval: config.settings.history_interval.span(),
        rebuilt: false,
        counters: Default::default(),
    };
    let notifier = match sink.notifier(&cx, &delivery_services(&config.settings)) {
        Some(n) => n.map_err(|e| format!("{id}: {e}"))?,
        None => {
            return Err(format!(
                "`{id}` is a {} sink: send-test works with mail, line and webhook sinks",
                sink.kind()
            ));
        }
    };
    let alert = sample_alert();
    let recipients = notifier.route(&alert).map_err(|e| format!("{id}: {e}"))?;
    let n = Notification {
        // A fresh id when sending: a LINE retry key already used would be answered 409.
        // A dry run shows the fixed sample id, so its output is the same every time.
        id: if dry_run {
            crate::sinks::delivery::sample_notification("", Vec::new()).id
        } else {
            uuid::Uuid::new_v4().to_string()
        },
        sink: id.clone(),
        route: recipients.clone(),
        ..crate::sinks::delivery::sample_notification("", vec![alert])
    };
    let preview = notifier.preview(&n).map_err(|e| format!("{id}: {e}"))?;
    let result = if dry_run {
        None
    } else {
        Some(notifier.send(&n).await)
    };
    Ok(SendTest {
        sink: id,
        kind: sink.kind(),
        preview,
        recipients,
        result,
    })
}
