//! `GET /api/v1/stream`: the live stream of events and alerts as Server-Sent Events.
//!
//! Query (all optional): `severity=info|low|medium|high|critical` (alerts at least this
//! severe; events carry no severity, so they are left out), `type=event|alert`,
//! `pipeline=NAME`, and `token=` (for browsers, whose `EventSource` cannot send an
//! `Authorization` header; checked by the auth middleware).
//!
//! Each item is an SSE event named `event` or `alert` whose data is
//! `{type, time, source, pipeline, severity?, title?, record}`: `record` is the record as
//! read (events) or the alert. A listener that falls behind loses the oldest items (the
//! stream says how many in an SSE comment); the graph never waits for it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use crate::event::{Event, Severity};

/// What a listener asked for.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct StreamQuery {
    severity: Option<Severity>,
    #[serde(rename = "type")]
    kind: Option<Kind>,
    pipeline: Option<String>,
    // `token` is read by the auth middleware (unknown keys are ignored here).
}

/// `type=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Event,
    Alert,
}

/// The `token` query parameter of `uri`, if any.
pub(super) fn query_token(uri: &Uri) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct OnlyToken {
        token: Option<String>,
    }
    axum::extract::Query::<OnlyToken>::try_from_uri(uri)
        .ok()
        .and_then(|q| q.0.token)
}

pub(super) async fn stream(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(q)) = query else {
        return super::error(
            StatusCode::BAD_REQUEST,
            "query: severity=info|low|medium|high|critical, type=event|alert, pipeline=NAME",
        );
    };
    // Subscribe before answering: whatever happens once the client sees the stream open
    // is in it.
    let rx = state.reloader.live_feed().await;
    let shutdown = state.shutdown.clone();
    let items = futures::stream::unfold((rx, q, shutdown), |(mut rx, q, shutdown)| async move {
        loop {
            let got = tokio::select! {
                () = shutdown.cancelled() => return None,
                got = rx.recv() => got,
            };
            let item = match got {
                Ok(event) => match item(&event, &q) {
                    Some(item) => item,
                    None => continue,
                },
                Err(RecvError::Lagged(n)) => {
                    sse::Event::default().comment(format!("{n} items skipped: too slow"))
                }
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok::<_, Infallible>(item), (rx, q, shutdown)));
        }
    });
    Sse::new(items)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The SSE event for `event`, if the query wants it.
fn item(event: &Arc<Event>, q: &StreamQuery) -> Option<sse::Event> {
    let source: &str = &event.meta.source;
    let pipeline = source.split_once('.').map_or(source, |(p, _)| p);
    if q.pipeline.as_deref().is_some_and(|p| p != pipeline) {
        return None;
    }
    let alert = event.alert();
    let kind = if alert.is_some() {
        Kind::Alert
    } else {
        Kind::Event
    };
    if q.kind.is_some_and(|k| k != kind) {
        return None;
    }
    if let Some(min) = q.severity
        && alert.is_none_or(|a| a.severity < min)
    {
        return None;
    }
    let name = match kind {
        Kind::Event => "event",
        Kind::Alert => "alert",
    };
    let mut data = json!({
        "type": name,
        "time": event.meta.time,
        "source": source,
        "pipeline": pipeline,
        "record": event.data(),
    });
    if let (Some(a), Some(o)) = (alert, data.as_object_mut()) {
        o.insert("severity".into(), a.severity.as_str().into());
        o.insert("title".into(), a.title.clone().into());
    }
    sse::Event::default().event(name).json_data(data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire form of one item: `event: NAME\ndata: JSON\n\n`.
    fn wire(e: sse::Event) -> String {
        let resp = Sse::new(futures::stream::iter([Ok::<_, Infallible>(e)])).into_response();
        let bytes = futures::executor::block_on(axum::body::to_bytes(resp.into_body(), usize::MAX))
            .expect("body");
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    fn data(text: &str) -> serde_json::Value {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data");
        serde_json::from_str(line).expect("JSON")
    }

    fn record() -> Arc<Event> {
        Arc::new(Event::from_record(
            json!({"src": "10.0.0.1", "timestamp": "2026-11-21T10:00:00Z"}),
            Arc::from("p.in"),
            chrono::Utc::now(),
        ))
    }

    fn alert(severity: Severity) -> Arc<Event> {
        let window = crate::event::AlertWindow {
            start: chrono::Utc::now(),
            end: chrono::Utc::now(),
        };
        let a = crate::event::Alert {
            id: "x".into(),
            status: crate::event::AlertStatus::Firing,
            pipeline: "p".into(),
            stage: "burst".into(),
            severity,
            title: "burst from a".into(),
            summary: String::new(),
            group: json!({"src": "a"}),
            group_key: "src=a".into(),
            value: 1.0,
            threshold: 1.0,
            unit: None,
            estimate: None,
            window,
            samples: Vec::new(),
            top: None,
            fields: serde_json::Map::new(),
        };
        Arc::new(Event::from_alert(
            a,
            Arc::from("p.burst"),
            chrono::Utc::now(),
        ))
    }

    #[test]
    fn events_and_alerts_carry_the_contract_fields() {
        let all = StreamQuery::default();
        let text = wire(item(&record(), &all).expect("kept"));
        assert!(text.starts_with("event: event\ndata: "), "{text}");
        let json = data(&text);
        assert_eq!(json["type"], "event");
        assert_eq!(json["source"], "p.in");
        assert_eq!(json["pipeline"], "p");
        assert_eq!(json["time"], "2026-11-21T10:00:00Z");
        assert_eq!(json["record"]["src"], "10.0.0.1");
        assert!(json.get("severity").is_none());

        let text = wire(item(&alert(Severity::High), &all).expect("kept"));
        assert!(text.starts_with("event: alert\n"), "{text}");
        let json = data(&text);
        assert_eq!(json["severity"], "high");
        assert_eq!(json["title"], "burst from a");
        assert_eq!(json["record"]["group_key"], "src=a");
    }

    #[test]
    fn filters_by_type_severity_and_pipeline() {
        let q = |s: &str| -> StreamQuery {
            axum::extract::Query::<StreamQuery>::try_from_uri(
                &format!("/api/v1/stream?{s}").parse().expect("uri"),
            )
            .expect("query")
            .0
        };
        assert!(item(&record(), &q("type=alert")).is_none());
        assert!(item(&record(), &q("type=event")).is_some());
        assert!(item(&alert(Severity::Low), &q("type=event")).is_none());
        assert!(item(&alert(Severity::Low), &q("severity=high")).is_none());
        assert!(item(&alert(Severity::Critical), &q("severity=high")).is_some());
        assert!(item(&record(), &q("severity=info")).is_none());
        assert!(item(&record(), &q("pipeline=other")).is_none());
        assert!(item(&record(), &q("pipeline=p&token=t")).is_some());
        assert_eq!(
            query_token(
                &"/api/v1/stream?type=event&token=a%2Bb"
                    .parse()
                    .expect("uri")
            ),
            Some("a+b".into())
        );
    }
}
