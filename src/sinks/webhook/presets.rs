//! The built-in webhook bodies: generic, Slack, Teams.

use serde_json::{Value, json};

use crate::event::{Alert, AlertStatus, Severity};
use crate::sinks::delivery::Notification;
use crate::sinks::delivery::dispatch::Change;
use crate::sinks::delivery::render::{alert_url, alert_view, number, scalar_text};

/// Slack's limit on a section's text.
const SLACK_SECTION: usize = 3000;
/// Slack's limit on a header's text.
const SLACK_HEADER: usize = 150;
/// Slack's limit on blocks per message.
const SLACK_BLOCKS: usize = 50;
/// How much of the raw events a chat card shows.
const CHAT_SAMPLES: usize = 2;

/// vigil's own body (documented in the module above).
pub(super) fn generic(n: &Notification, public_url: &str) -> Value {
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("change".into(), n.change(i).as_str().into());
                o.insert("url".into(), alert_url(public_url, a).into());
                if let Some(Value::Array(samples)) = o.get_mut("samples") {
                    for (s, sample) in samples.iter_mut().zip(&a.samples) {
                        if let Some(so) = s.as_object_mut() {
                            so.insert("record".into(), sample.value());
                        }
                    }
                }
            }
            v
        })
        .collect();
    let count = |c: Change| (0..n.alerts.len()).filter(|i| n.change(*i) == c).count();
    json!({
        "version": 1,
        "id": n.id,
        "sink": n.sink,
        "severity": highest(n).as_str(),
        "count": n.alerts.len(),
        "new": count(Change::New) + n.omitted.new,
        "firing": count(Change::Firing) + n.omitted.firing,
        "resolved": count(Change::Resolved) + n.omitted.resolved,
        "omitted": n.omitted.total(),
        "reminder": n.reminder,
        "group": n.group,
        "alerts": alerts,
    })
}

fn highest(n: &Notification) -> Severity {
    n.alerts
        .iter()
        .map(|a| a.severity)
        .max()
        .unwrap_or_default()
}

fn icon(a: &Alert) -> &'static str {
    if a.status == AlertStatus::Resolved {
        return "✅";
    }
    match a.severity {
        Severity::Critical => "🚨",
        Severity::High => "🔴",
        Severity::Medium => "🟠",
        Severity::Low => "🟡",
        Severity::Info => "🔵",
    }
}

fn heading(a: &Alert) -> String {
    let resolved = if a.status == AlertStatus::Resolved {
        " (resolved)"
    } else {
        ""
    };
    format!(
        "[{}] {}{resolved}",
        a.severity.as_str().to_uppercase(),
        a.title
    )
}

fn value_line(a: &Alert) -> String {
    let unit = a
        .unit
        .as_deref()
        .map(|u| format!(" {u}"))
        .unwrap_or_default();
    let estimate = a
        .estimate
        .as_deref()
        .map(|e| format!(", estimate: {e}"))
        .unwrap_or_default();
    format!(
        "{}{unit} (threshold {}{unit}){estimate}",
        number(a.value),
        number(a.threshold)
    )
}

fn window_line(a: &Alert, view: &Value) -> String {
    let w = &view["window"];
    let _ = a;
    format!(
        "{} to {} ({})",
        w["start"].as_str().unwrap_or_default(),
        w["end"].as_str().unwrap_or_default(),
        w["length"].as_str().unwrap_or_default()
    )
}

fn top_lines(a: &Alert) -> Option<(String, Vec<(String, String)>)> {
    let top = a.top.as_ref()?;
    let title = format!("Top {} by {}", top.by.join(", "), top.measure);
    let rows = top
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let key = r
                .key
                .iter()
                .map(scalar_text)
                .collect::<Vec<_>>()
                .join(" / ");
            let share = if top.total > 0.0 {
                format!(" ({:.1}%)", r.value * 100.0 / top.total)
            } else {
                String::new()
            };
            (
                format!("{}. {key}", i + 1),
                format!("{}{share}", number(r.value)),
            )
        })
        .collect();
    Some((title, rows))
}

fn samples_text(a: &Alert) -> Option<String> {
    if a.samples.is_empty() {
        return None;
    }
    Some(
        a.samples
            .iter()
            .take(CHAT_SAMPLES)
            .map(|s| serde_json::to_string(&s.value()).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Cuts `s` to at most `max` characters, ending with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Escapes the characters Slack's mrkdwn treats specially.
fn mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack incoming-webhook body: `text` (the notification's fallback) and blocks per
/// alert: header, summary, facts, top-N, the first raw events, a link.
pub(super) fn slack(n: &Notification, public_url: &str) -> Value {
    let mut blocks: Vec<Value> = Vec::new();
    for (i, a) in n.alerts.iter().enumerate() {
        let view = alert_view(a, public_url);
        let mut these = Vec::new();
        if i > 0 {
            these.push(json!({"type": "divider"}));
        }
        these.push(json!({
            "type": "header",
            "text": {"type": "plain_text", "text": cut(&format!("{} {}", icon(a), heading(a)), SLACK_HEADER), "emoji": true}
        }));
        if !a.summary.is_empty() {
            these.push(json!({
                "type": "section",
                "text": {"type": "mrkdwn", "text": cut(&mrkdwn(&a.summary), SLACK_SECTION)}
            }));
        }
        let group = if a.group_key.is_empty() {
            "-".to_string()
        } else {
            a.group_key.clone()
        };
        these.push(json!({
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": format!("*Value*\n{}", mrkdwn(&value_line(a)))},
                {"type": "mrkdwn", "text": format!("*Window*\n{}", window_line(a, &view))},
                {"type": "mrkdwn", "text": format!("*Rule*\n{} / {}", mrkdwn(&a.pipeline), mrkdwn(&a.stage))},
                {"type": "mrkdwn", "text": format!("*Group*\n`{}`", mrkdwn(&group))},
            ]
        }));
        if let Some((title, rows)) = top_lines(a) {
            let table = rows
                .iter()
                .map(|(k, v)| format!("{k}  {v}"))
                .collect::<Vec<_>>()
                .join("\n");
            these.push(json!({
                "type": "section",
                "text": {"type": "mrkdwn", "text": cut(&format!("*{}*\n```{}```", mrkdwn(&title), mrkdwn(&table)), SLACK_SECTION)}
            }));
        }
        if let Some(raw) = samples_text(a) {
            these.push(json!({
                "type": "section",
                "text": {"type": "mrkdwn", "text": format!("*Raw events*\n```{}```", cut(&mrkdwn(&raw), SLACK_SECTION - 40))}
            }));
        }
        these.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("<{}|Open in vigil> · alert `{}`", alert_url(public_url, a), a.id)}]
        }));
        if blocks.len() + these.len() > SLACK_BLOCKS {
            blocks.push(json!({
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": format!("…and {} more alerts in vigil", n.alerts.len() - i)}]
            }));
            break;
        }
        blocks.extend(these);
    }
    let text = match n.alerts.as_slice() {
        [one] => heading(one),
        many => format!(
            "{} alerts, highest {}: {}",
            many.len() + n.omitted.total(),
            highest(n).as_str(),
            many.first().map(heading).unwrap_or_default()
        ),
    };
    let text = if n.reminder {
        format!("Still firing: {text}")
    } else {
        text
    };
    json!({"text": text, "blocks": blocks})
}

/// A Microsoft Teams Workflows-webhook body: a message with one Adaptive Card (1.4)
/// holding every alert: title, summary, facts, top-N, the first raw events, a link.
pub(super) fn teams(n: &Notification, public_url: &str) -> Value {
    let mut body: Vec<Value> = Vec::new();
    let mut actions: Vec<Value> = Vec::new();
    for (i, a) in n.alerts.iter().enumerate() {
        let view = alert_view(a, public_url);
        let color = match (a.status, a.severity) {
            (AlertStatus::Resolved, _) => "Good",
            (_, Severity::Critical | Severity::High) => "Attention",
            (_, Severity::Medium | Severity::Low) => "Warning",
            (_, Severity::Info) => "Accent",
        };
        body.push(json!({
            "type": "TextBlock",
            "text": heading(a),
            "size": "Large",
            "weight": "Bolder",
            "color": color,
            "wrap": true,
            "separator": i > 0,
        }));
        if !a.summary.is_empty() {
            body.push(json!({"type": "TextBlock", "text": a.summary, "wrap": true}));
        }
        let group = if a.group_key.is_empty() {
            "-".to_string()
        } else {
            a.group_key.clone()
        };
        body.push(json!({
            "type": "FactSet",
            "facts": [
                {"title": "Value", "value": value_line(a)},
                {"title": "Window", "value": window_line(a, &view)},
                {"title": "Rule", "value": format!("{} / {}", a.pipeline, a.stage)},
                {"title": "Group", "value": group},
            ]
        }));
        if let Some((title, rows)) = top_lines(a) {
            body.push(
                json!({"type": "TextBlock", "text": title, "weight": "Bolder", "wrap": true}),
            );
            body.push(json!({
                "type": "FactSet",
                "facts": rows.into_iter().map(|(k, v)| json!({"title": k, "value": v})).collect::<Vec<_>>()
            }));
        }
        if !a.samples.is_empty() {
            body.push(json!({"type": "TextBlock", "text": "Raw events", "weight": "Bolder"}));
            // One block per event: hosts differ on whether a lone `\n` in a TextBlock
            // breaks the line, and two events run together are hard to read.
            for s in a.samples.iter().take(CHAT_SAMPLES) {
                let raw = serde_json::to_string(&s.value()).unwrap_or_default();
                body.push(json!({"type": "TextBlock", "text": raw, "fontType": "Monospace", "size": "Small", "wrap": true, "spacing": "Small"}));
            }
        }
        actions.push(json!({
            "type": "Action.OpenUrl",
            "title": if n.alerts.len() == 1 { "Open in vigil".to_string() } else { format!("Open alert {}", i + 1) },
            "url": alert_url(public_url, a),
        }));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": {"width": "Full"},
                "body": body,
                "actions": actions,
            }
        }]
    })
}
