//! `vigil.tetragon_dropping`: Tetragon said it drops events — it throttled a cgroup
//! (`process_throttle` `THROTTLE_START`) or its rate limit dropped some (`rate_limit_info`).
//! The rules see none of those events, so a `file` or `exec` source reading Tetragon's
//! events raises an internal alert for each such record (see the `internal` source).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::event::{Alert, AlertStatus, AlertWindow, Event, Sample, Severity};
use crate::sources::internal::InternalAlerts;

/// Publishes `vigil.tetragon_dropping` for every record of `events` that says Tetragon
/// drops events.
pub(crate) fn report(internal: &InternalAlerts, events: &[Arc<Event>]) {
    for e in events {
        if let Some(alert) = alert_of(e) {
            internal.publish(alert);
        }
    }
}

/// The alert a normalised Tetragon event makes, if it says Tetragon drops events.
pub fn alert_of(event: &Event) -> Option<Alert> {
    let data = event.data();
    let kind = data.pointer("/event/type").and_then(Value::as_str)?;
    let node = data
        .get("node_name")
        .and_then(Value::as_str)
        .unwrap_or("unknown node");
    let (cgroup, dropped) = match kind {
        "process_throttle" => {
            if data.pointer("/throttle/type").and_then(Value::as_str) != Some("THROTTLE_START") {
                return None;
            }
            let cgroup = data
                .pointer("/throttle/cgroup")
                .and_then(Value::as_str)
                .unwrap_or("");
            (cgroup, None)
        }
        "rate_limit_info" => {
            // protojson writes a 64-bit count as a string.
            let n = data
                .pointer("/rate_limit/number_of_dropped_process_events")
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
            ("", n)
        }
        _ => return None,
    };
    let at = event.meta.time;
    let window = AlertWindow { start: at, end: at };
    let group_key = format!("node={node},cgroup={cgroup}");
    let (title, summary) = match (cgroup.is_empty(), dropped) {
        (false, _) => (
            format!("Tetragon is dropping events for cgroup {cgroup} on {node}"),
            format!(
                "Tetragon on {node} throttled cgroup {cgroup} at {at}: until it says THROTTLE_STOP, the processes of that cgroup are not seen by any rule."
            ),
        ),
        (true, Some(n)) => (
            format!("Tetragon is dropping events on {node}: {n} dropped by its rate limit"),
            format!(
                "Tetragon on {node} reported at {at} that its rate limit dropped {n} process event(s); no rule saw them."
            ),
        ),
        (true, None) => (
            format!("Tetragon is dropping events on {node}"),
            format!(
                "Tetragon on {node} reported at {at} that it dropped events; no rule saw them."
            ),
        ),
    };
    let mut fields = Map::new();
    fields.insert("node".into(), node.into());
    fields.insert("source".into(), event.meta.source.as_ref().into());
    if !cgroup.is_empty() {
        fields.insert("cgroup".into(), cgroup.into());
    }
    if let Some(n) = dropped {
        fields.insert("dropped".into(), n.into());
    }
    Some(Alert {
        id: Alert::make_id("vigil", "tetragon_dropping", &group_key, &window),
        status: AlertStatus::Firing,
        pipeline: "vigil".into(),
        stage: "tetragon_dropping".into(),
        severity: Severity::High,
        title,
        summary,
        group: json!({"node": node, "cgroup": cgroup}),
        group_key,
        value: dropped.unwrap_or(1) as f64,
        threshold: 1.0,
        unit: None,
        estimate: None,
        window,
        first_seen: at,
        last_seen: at,
        updates: 0,
        episode: false,
        samples: vec![Sample::of(event)],
        top: None,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(line: &str) -> Event {
        let record: Value = serde_json::from_str(line).unwrap();
        let data = crate::sources::tetragon::normalize(&record).unwrap().data;
        let now = "2026-03-01T00:00:00Z".parse().unwrap();
        Event::from_line(
            bytes::Bytes::from(line.to_string()),
            data,
            "p.tetra".into(),
            now,
        )
    }

    #[test]
    fn a_throttle_start_and_a_rate_limit_report_are_alerts_the_rest_not() {
        let start = alert_of(&event(
            r#"{"process_throttle":{"type":"THROTTLE_START","cgroup":"pod-1.slice"},"node_name":"n1","time":"2026-03-01T00:00:00Z"}"#,
        ))
        .expect("an alert");
        assert_eq!(
            start.title,
            "Tetragon is dropping events for cgroup pod-1.slice on n1"
        );
        assert_eq!(start.severity, Severity::High);
        assert_eq!(start.samples.len(), 1);
        // protojson's 64-bit count is a string.
        let limit = alert_of(&event(
            r#"{"rate_limit_info":{"number_of_dropped_process_events":"1234"},"node_name":"n2","time":"2026-03-01T00:00:00Z"}"#,
        ))
        .expect("an alert");
        assert_eq!(
            limit.title,
            "Tetragon is dropping events on n2: 1234 dropped by its rate limit"
        );
        assert_eq!(limit.value, 1234.0);
        for quiet in [
            r#"{"process_throttle":{"type":"THROTTLE_STOP","cgroup":"pod-1.slice"},"node_name":"n1","time":"2026-03-01T00:00:00Z"}"#,
            r#"{"process_exec":{"process":{"binary":"/bin/ls","pid":1}},"node_name":"n1","time":"2026-03-01T00:00:00Z"}"#,
        ] {
            assert!(alert_of(&event(quiet)).is_none(), "{quiet}");
        }
    }
}
