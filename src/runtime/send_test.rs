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
/// `config`, renders an example alert through it and, unless `dry_run`, sends it once.
/// The example is shaped like the alerts the sink will get (see [`shaped_alert`]); a sink
/// with no detection stage upstream gets the generic sample alert.
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
    let alert = shaped_alert(&pipeline.config, sink.inputs()).unwrap_or_else(sample_alert);
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

/// An example alert shaped like those of the detection stage upstream of `inputs` in
/// `pipeline`: its pipeline and stage, severity, title and summary rendered by its own
/// templates, its group (values from the example events, else `example`), the columns of
/// a `top_n` stage on the way, and as raw events the inputs of the pipeline's first test
/// case (its own example events) when it has one. `None` when no detection stage feeds
/// the sink.
pub fn shaped_alert(
    pipeline: &crate::config::PipelineConfig,
    inputs: &[String],
) -> Option<crate::event::Alert> {
    use crate::components::StageConfig;
    use crate::event::{AlertStatus, FieldPath, Group, Sample, TopRow};
    use crate::stages::alerting::Finding;
    // The stages upstream of the sink, nearest first.
    let mut upstream = Vec::new();
    let mut queue: std::collections::VecDeque<&String> = inputs.iter().collect();
    while let Some(name) = queue.pop_front() {
        if upstream.iter().any(|(n, _)| *n == name) {
            continue;
        }
        if let Some(stage) = pipeline.stages.get(name) {
            upstream.push((name, stage));
            queue.extend(stage.inputs());
        }
    }
    let base = sample_alert();
    // (templates, threshold, unit, group_by, and for a stage whose value is not a multiple
    // of its threshold or whose alerts carry values of their own: value and fields)
    type Example = Option<(f64, serde_json::Map<String, serde_json::Value>)>;
    let (templates, threshold, unit, group_by, example): (_, _, _, _, Example) =
        upstream.iter().find_map(|(name, stage)| match stage {
            StageConfig::WindowCount(c) => c
                .alert_templates(&pipeline.name, name)
                .map(|t| (t, c.threshold, None, c.group_by.clone(), None)),
            StageConfig::Bandwidth(c) => c
                .alert_templates(&pipeline.name, name)
                .map(|(t, u)| (t, c.threshold, Some(u), c.group_by.clone(), None)),
            StageConfig::Metric(c) => c.alert_templates(&pipeline.name, name).map(|t| {
                (
                    t,
                    c.above.or(c.below).unwrap_or_default(),
                    None,
                    c.group_by.clone(),
                    None,
                )
            }),
            StageConfig::DistinctCount(c) => c.alert_templates(&pipeline.name, name).map(|t| {
                (
                    t,
                    c.threshold,
                    None,
                    c.group_by.clone(),
                    Some((c.threshold.max(1.0) * 3.0, c.example_fields(&[]))),
                )
            }),
            StageConfig::Spike(c) => c.alert_templates(&pipeline.name, name).map(|t| {
                let (value, threshold, fields) = c.example_report();
                (
                    t,
                    threshold,
                    None,
                    c.group_by.clone(),
                    Some((value, fields)),
                )
            }),
            StageConfig::Ratio(c) => c.alert_templates(&pipeline.name, name).map(|t| {
                let (value, threshold, fields) = c.example_report();
                (
                    t,
                    threshold,
                    None,
                    c.group_by.clone(),
                    Some((value, fields)),
                )
            }),
            StageConfig::NewTerm(c) => c.alert_templates(&pipeline.name, name).map(|t| {
                (
                    t,
                    1.0,
                    None,
                    c.group_by.clone(),
                    Some((1.0, c.example_fields(&[]))),
                )
            }),
            StageConfig::Flatline(c) => c
                .alert_templates(&pipeline.name, name)
                .map(|t| (t, base.threshold, None, c.group_by.clone(), None)),
            StageConfig::Report(c) => c.alert_templates(&pipeline.name, name).map(|t| {
                (
                    t,
                    0.0,
                    c.unit.as_deref(),
                    c.group_by.clone(),
                    Some((1_073_741_824.0, c.example_fields(false))),
                )
            }),
            _ => None,
        })?;
    // The pipeline's own example events: the inputs of its first test case.
    let examples: Vec<serde_json::Value> = pipeline
        .tests
        .first()
        .map(|t| t.input.iter().map(|i| i.event.clone()).collect())
        .unwrap_or_default();
    let records: Vec<serde_json::Value> = if examples.is_empty() {
        base.samples.iter().map(Sample::value).collect()
    } else {
        examples
    };
    let value_at = |path: &str| -> serde_json::Value {
        FieldPath::parse(path)
            .ok()
            .and_then(|p| records.iter().find_map(|r| p.first(r).cloned()))
            .unwrap_or_else(|| serde_json::Value::String("example".into()))
    };
    let group = Group {
        fields: group_by
            .iter()
            .map(|p| (p.clone(), Some(value_at(p))))
            .collect(),
    };
    let samples: Vec<Sample> = records
        .iter()
        .take(3)
        .zip(base.samples.iter().map(|s| (s.time, s.source.clone())))
        .filter_map(|(record, (time, _))| {
            Some(Sample {
                time,
                source: format!("{}.example", pipeline.name).into(),
                record: serde_json::value::to_raw_value(record).ok()?.into(),
            })
        })
        .collect();
    let (value, fields) = example.unwrap_or_else(|| (threshold.max(1.0) * 3.0, Default::default()));
    // A distinct count lists the values of its field in the examples.
    let fields = match upstream.iter().find_map(|(_, stage)| match stage {
        StageConfig::DistinctCount(c) if fields.contains_key("distinct_values") => Some(c),
        _ => None,
    }) {
        Some(c) => {
            let mut fields = c.example_fields(&records);
            let shown = fields["distinct_values"].as_array().map_or(0, Vec::len);
            let omitted = (value as usize).saturating_sub(shown);
            fields.insert("distinct_values_omitted".into(), omitted.into());
            fields
        }
        None => fields,
    };
    // A new term is one value (the first the examples hold), seen at one time, after
    // the learn period.
    let new_term = upstream.iter().find_map(|(_, stage)| match stage {
        StageConfig::NewTerm(c) if fields.contains_key("term") => Some(c),
        _ => None,
    });
    let (value, fields, window) = match new_term {
        Some(c) => {
            let end = base.window.end;
            let mut fields = c.example_fields(&records);
            let since = end
                .checked_sub_signed(c.learn.span())
                .unwrap_or(end)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            fields.insert("learning_since".into(), since.into());
            (1.0, fields, crate::event::AlertWindow { start: end, end })
        }
        None => (value, fields, base.window),
    };
    let finding = Finding {
        unit: unit.map(str::to_string),
        fields,
        ..Finding::once(
            group,
            value,
            threshold,
            window,
            samples,
            AlertStatus::Firing,
        )
    };
    let mut alert = templates.alert(finding);
    // A top-N stage on the way adds its table: its columns, rows from the examples.
    alert.top = upstream.iter().find_map(|(_, stage)| match stage {
        StageConfig::TopN(c) => {
            let keys: Vec<Vec<serde_json::Value>> = records
                .iter()
                .take(2)
                .map(|r| {
                    c.by.iter()
                        .map(|b| {
                            FieldPath::parse(b)
                                .ok()
                                .and_then(|p| p.first(r).cloned())
                                .unwrap_or_else(|| serde_json::Value::String("example".into()))
                        })
                        .collect()
                })
                .collect();
            let rows: Vec<TopRow> = keys
                .into_iter()
                .zip([value * 2.0 / 3.0, value / 3.0])
                .map(|(key, value)| TopRow { key, value })
                .collect();
            let mut top = base.top.clone()?;
            top.by = c.by.clone();
            top.measure = c.sum.clone().unwrap_or_else(|| "count".into());
            top.keys = rows.len() as u64;
            top.total = rows.iter().map(|r| r.value).sum();
            top.rows = rows;
            Some(top)
        }
        _ => None,
    });
    Some(alert)
}
