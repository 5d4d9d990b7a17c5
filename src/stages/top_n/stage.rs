//! The running `top_n` stage.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::event::{
    Alert, AlertStatus, AlertWindow, Event, Field, FieldPath, Group, Timestamp, TopRow, TopTable,
};
use crate::node::internal_event::{
    InternalEvent, LateEvent, Lateness, NothingToSum, OldestEventDropped,
};
use crate::node::{NodeCounters, Snapshot, Stage};
use crate::stages::alerting::{AlertTemplates, Finding};
use crate::stages::stage_state;

/// What a `top_n` stage measures and keeps (from [`super::TopNConfig`]).
#[derive(Debug, Clone)]
pub struct TopNSpec {
    /// Row keys.
    pub by: Vec<FieldPath>,
    /// The summed field; `None` counts.
    pub sum: Option<FieldPath>,
    /// Paths restricting an alert's table to its group's values.
    pub within: Vec<FieldPath>,
    /// Rows shown.
    pub n: usize,
    /// The stage's own tumbling window.
    pub window: Option<chrono::Duration>,
    /// How long events are kept behind the watermark.
    pub retain: chrono::Duration,
    /// The most events kept.
    pub max_events: usize,
}

/// Records events and annotates alerts; see [`super::TopNConfig`].
#[derive(Debug)]
pub struct TopNStage {
    spec: TopNSpec,
    templates: AlertTemplates,
    state: State,
    /// Alerts waiting for the next tick to be annotated: the events that caused an alert
    /// may come over another input than the alert itself, and the runtime sends a tick on
    /// only once every input has handed on what it sent before it.
    pending: Vec<Arc<Event>>,
    /// Where late, skipped and dropped events are counted.
    counters: Arc<NodeCounters>,
    /// The node's id, `pipeline.node`, for the log.
    id: Arc<str>,
}

/// One recorded event: a projection, never the event.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rec {
    time: Timestamp,
    key: Vec<Value>,
    weight: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    within: Vec<Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Recorded events in time order.
    recs: VecDeque<Rec>,
    /// The newest event time seen.
    watermark: Option<Timestamp>,
    /// The arrival time of the newest event.
    last_ingest: Option<Timestamp>,
    /// The own window's length in ms, for the fields below.
    window_ms: Option<i64>,
    /// Starts (epoch ms) of own windows with events, not yet reported.
    pending: BTreeSet<i64>,
    /// End of the last own window reported.
    reported_until: Option<Timestamp>,
    /// Events skipped: `sum` field missing or not a usable number.
    skipped: u64,
    /// Events too old to keep, or for a window already reported.
    late: u64,
    /// Events dropped to stay under `max_events`.
    overflow: u64,
    /// Alerts annotated.
    annotated: u64,
    /// Reports raised.
    reports: u64,
}

/// Orders JSON values: null, booleans, numbers (by value), strings, then the rest by text.
fn cmp_value(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => rank(a)
            .cmp(&rank(b))
            .then_with(|| a.to_string().cmp(&b.to_string())),
    }
}

fn value_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn weight_of(v: Option<Field<'_>>) -> Option<f64> {
    v.and_then(crate::stages::window::number)
}

impl TopNStage {
    /// A stage with `spec`; `templates` word its own reports.
    pub fn new(spec: TopNSpec, templates: AlertTemplates) -> TopNStage {
        let window_ms = spec.window.map(|w| w.num_milliseconds().max(1));
        TopNStage {
            spec,
            id: templates.node_id(),
            templates,
            state: State {
                window_ms,
                ..State::default()
            },
            pending: Vec::new(),
            counters: Arc::default(),
        }
    }

    /// Counts what the stage sets aside into `counters` (the node's).
    pub fn counting_into(mut self, counters: Arc<NodeCounters>) -> Self {
        self.counters = counters;
        self
    }

    fn shape(&self) -> Value {
        let names = |p: &[FieldPath]| p.iter().map(|f| f.as_str().to_string()).collect::<Vec<_>>();
        json!({
            "by": names(&self.spec.by),
            "sum": self.spec.sum.as_ref().map(FieldPath::as_str),
            "within": names(&self.spec.within),
        })
    }

    /// Restores what [`Stage::snapshot`] saved, if it was made with the same `by`, `sum`
    /// and `within`. A changed `window` keeps the events but forgets pending reports.
    pub fn restore(&mut self, node: &str, saved: &str) {
        let Some(mut state) = stage_state::load::<State>(node, saved, &self.shape()) else {
            return;
        };
        if state.window_ms != self.state.window_ms {
            state.window_ms = self.state.window_ms;
            state.pending.clear();
            state.reported_until = None;
        }
        self.state = state;
    }

    fn measure(&self) -> String {
        self.spec
            .sum
            .as_ref()
            .map_or_else(|| "count".to_string(), |p| p.as_str().to_string())
    }

    /// The table over recorded events whose `within` values equal `within` (if given), in
    /// an alert's window `(start, end]` (`end_inclusive`: the window of a detection stage,
    /// an event exactly `window` before the newest is out) or in one of its own tumbling
    /// windows `[start, end)`.
    fn table(
        &self,
        window: AlertWindow,
        end_inclusive: bool,
        within: Option<&[Value]>,
    ) -> TopTable {
        let recs = &self.state.recs;
        let lo = if end_inclusive {
            recs.partition_point(|r| r.time <= window.start)
        } else {
            recs.partition_point(|r| r.time < window.start)
        };
        let mut sums: HashMap<String, (Vec<Value>, f64)> = HashMap::new();
        let mut total = 0.0;
        for r in recs.range(lo..) {
            if r.time > window.end || (!end_inclusive && r.time == window.end) {
                break;
            }
            if let Some(w) = within
                && !(w.len() == r.within.len()
                    && w.iter().zip(&r.within).all(|(a, b)| value_eq(a, b)))
            {
                continue;
            }
            total += r.weight;
            let id = serde_json::to_string(&r.key).unwrap_or_default();
            sums.entry(id).or_insert_with(|| (r.key.clone(), 0.0)).1 += r.weight;
        }
        let keys = sums.len() as u64;
        let mut rows: Vec<TopRow> = sums
            .into_values()
            .map(|(key, value)| TopRow { key, value })
            .collect();
        rows.sort_by(|a, b| {
            b.value
                .partial_cmp(&a.value)
                .unwrap_or(Ordering::Equal)
                .then_with(|| {
                    a.key
                        .iter()
                        .zip(&b.key)
                        .map(|(x, y)| cmp_value(x, y))
                        .find(|o| o.is_ne())
                        .unwrap_or(Ordering::Equal)
                })
        });
        rows.truncate(self.spec.n);
        TopTable {
            by: self
                .spec
                .by
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
            measure: self.measure(),
            window,
            rows,
            total,
            keys,
        }
    }

    /// Annotates the alerts held since the last tick and hands them on.
    fn flush_pending(&mut self, out: &mut Vec<Arc<Event>>) {
        for event in std::mem::take(&mut self.pending) {
            if let Some(alert) = event.alert() {
                let annotated = self.annotate(&event, alert);
                out.push(annotated);
            }
        }
    }

    fn annotate(&mut self, event: &Event, alert: &Alert) -> Arc<Event> {
        let within: Option<Vec<Value>> = (!self.spec.within.is_empty()).then(|| {
            self.spec
                .within
                .iter()
                .map(|p| p.first(&alert.group).cloned().unwrap_or(Value::Null))
                .collect()
        });
        if let (Some(wm), Some(first)) = (self.state.watermark, self.state.recs.front())
            && alert.window.start < first.time
            && wm - alert.window.start > self.spec.retain
        {
            tracing::debug!(
                alert = %alert.id,
                "top_n: the alert's window starts before the events still held"
            );
        }
        let table = self.table(alert.window, true, within.as_deref());
        let mut annotated = alert.clone();
        annotated.top = Some(table);
        let mut e = event.clone();
        e.set_alert(annotated);
        self.state.annotated += 1;
        Arc::new(e)
    }

    fn record(&mut self, event: &Event) {
        let weight = match &self.spec.sum {
            None => 1.0,
            Some(path) => match weight_of(path.first_in(event)) {
                Some(w) => w,
                None => {
                    self.state.skipped += 1;
                    NothingToSum {
                        stage: &self.id,
                        field: path.as_str(),
                    }
                    .emit(&self.counters);
                    return;
                }
            },
        };
        let t = event.meta.time;
        let wm = self.state.watermark.map_or(t, |w| w.max(t));
        self.state.watermark = Some(wm);
        self.state.last_ingest = Some(
            self.state
                .last_ingest
                .map_or(event.meta.ingest, |i| i.max(event.meta.ingest)),
        );
        if wm - t >= self.spec.retain {
            self.late(t, Lateness::PastRetain);
            return;
        }
        let project = |paths: &[FieldPath]| -> Vec<Value> {
            paths
                .iter()
                .map(|p| {
                    p.first_in(event)
                        .map_or(Value::Null, |f| f.to_value().into_owned())
                })
                .collect()
        };
        let rec = Rec {
            time: t,
            key: project(&self.spec.by),
            weight,
            within: project(&self.spec.within),
        };
        if let Some(w) = self.state.window_ms {
            if self.state.reported_until.is_some_and(|r| t < r) {
                self.late(t, Lateness::WindowReported);
            } else {
                let ms = t.timestamp_millis();
                self.state.pending.insert(ms - ms.rem_euclid(w));
            }
        }
        let at = self.state.recs.partition_point(|r| r.time <= t);
        self.state.recs.insert(at, rec);
        self.evict();
    }

    fn evict(&mut self) {
        if let Some(wm) = self.state.watermark {
            let cutoff = wm - self.spec.retain;
            while self.state.recs.front().is_some_and(|r| r.time <= cutoff) {
                self.state.recs.pop_front();
            }
        }
        while self.state.recs.len() > self.spec.max_events {
            self.state.recs.pop_front();
            self.state.overflow += 1;
            OldestEventDropped {
                stage: &self.id,
                max_events: self.spec.max_events,
            }
            .emit(&self.counters);
        }
    }

    fn late(&mut self, t: Timestamp, why: Lateness) {
        self.state.late += 1;
        LateEvent {
            stage: &self.id,
            time: t,
            key: None,
            why,
        }
        .emit(&self.counters);
    }

    /// Reports every pending own window that ends at or before `through` (all when `None`).
    fn report(&mut self, through: Option<Timestamp>, out: &mut Vec<Arc<Event>>) {
        let Some(w) = self.state.window_ms else {
            return;
        };
        while let Some(&start_ms) = self.state.pending.first() {
            let (Some(start), Some(end)) = (
                chrono::DateTime::from_timestamp_millis(start_ms),
                chrono::DateTime::from_timestamp_millis(start_ms.saturating_add(w)),
            ) else {
                self.state.pending.pop_first();
                continue;
            };
            if through.is_some_and(|t| end > t) {
                break;
            }
            self.state.pending.pop_first();
            let window = AlertWindow { start, end };
            let table = self.table(window, false, None);
            let mut alert = self.templates.alert(Finding::once(
                Group::default(),
                table.total,
                0.0,
                window,
                Vec::new(),
                AlertStatus::Firing,
            ));
            alert.top = Some(table);
            self.state.reported_until = Some(self.state.reported_until.map_or(end, |r| r.max(end)));
            self.state.reports += 1;
            out.push(self.templates.event(alert));
        }
    }
}

impl Stage for TopNStage {
    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
        if event.alert().is_some() {
            self.pending.push(event);
            return;
        }
        self.record(&event);
        let wm = self.state.watermark;
        if wm.is_some() {
            self.report(wm, out);
        }
    }

    fn tick(&mut self, now: Timestamp, out: &mut Vec<Arc<Event>>) {
        self.flush_pending(out);
        let (Some(wm), Some(ingest)) = (self.state.watermark, self.state.last_ingest) else {
            return;
        };
        let idle = (now - ingest).max(chrono::Duration::zero());
        self.report(Some(wm + idle), out);
    }

    fn finish(&mut self, out: &mut Vec<Arc<Event>>) {
        self.flush_pending(out);
        self.report(None, out);
    }

    fn snapshot(&self, max_bytes: u64) -> Option<Snapshot> {
        stage_state::save(&self.shape(), &self.state, max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Severity;
    use crate::stages::alerting::AlertConfig;
    use chrono::{TimeZone, Utc};

    fn t(s: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap() + chrono::Duration::seconds(s)
    }

    fn ev(v: Value, s: i64) -> Arc<Event> {
        Arc::new(Event::from_record(v, "p.blocked".into(), t(s)))
    }

    fn flow(ip: &str, port: Value, s: i64) -> Arc<Event> {
        ev(
            json!({"src": {"ip": ip}, "dst": {"port": port}, "bytes": 10}),
            s,
        )
    }

    fn paths(p: &[&str]) -> Vec<FieldPath> {
        let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
        crate::stages::alerting::GroupBy::parse(&p).unwrap().0
    }

    fn stage(sum: Option<&str>, within: &[&str], n: usize, window: Option<i64>) -> TopNStage {
        let templates = AlertTemplates::compile(
            &AlertConfig::default(),
            "Top ports: {{value}}",
            "s",
            "p",
            "top",
        )
        .unwrap();
        TopNStage::new(
            TopNSpec {
                by: paths(&["dst.port"]),
                sum: sum.map(|s| FieldPath::parse(s).unwrap()),
                within: paths(within),
                n,
                window: window.map(chrono::Duration::seconds),
                retain: chrono::Duration::hours(1),
                max_events: 1000,
            },
            templates,
        )
    }

    fn alert(group: Value, start: i64, end: i64) -> Arc<Event> {
        let a = Alert {
            id: "id".into(),
            status: AlertStatus::Firing,
            pipeline: "p".into(),
            stage: "burst".into(),
            severity: Severity::High,
            title: "burst".into(),
            summary: String::new(),
            group,
            group_key: "k".into(),
            value: 1.0,
            threshold: 1.0,
            unit: None,
            estimate: None,
            window: AlertWindow {
                start: t(start),
                end: t(end),
            },
            first_seen: Default::default(),

            last_seen: Default::default(),

            updates: 0,

            episode: false,

            samples: vec![],
            top: None,
            fields: Default::default(),
        };
        Arc::new(Event::from_alert(a, "p.burst".into(), t(end)))
    }

    fn rows(table: &TopTable) -> Vec<(Vec<Value>, f64)> {
        table
            .rows
            .iter()
            .map(|r| (r.key.clone(), r.value))
            .collect()
    }

    #[test]
    fn alerts_get_the_top_keys_of_their_window_ties_in_key_order() {
        let mut s = stage(None, &[], 3, None);
        let mut out = Vec::new();
        s.process(flow("a", json!(22), 9), &mut out); // before the window
        s.process(flow("a", json!(22), 10), &mut out); // exactly at the start: out
        for (port, at) in [
            (json!(443), 11),
            (json!(22), 12),
            (json!(80), 13),
            (json!(9), 14),
            (json!(443), 15),
            (json!(8080), 16),
            (json!(80), 17),
            (json!(9), 18),
            (json!(22), 19),
            (json!(22), 20), // exactly at the end: in
        ] {
            s.process(flow("a", port, at), &mut out);
        }
        s.process(flow("a", json!(8080), 21), &mut out); // after the window
        assert!(out.is_empty(), "raw events are not handed on");

        s.process(alert(json!({"src": {"ip": "a"}}), 10, 20), &mut out);

        s.flush_pending(&mut out);
        assert_eq!(out.len(), 1);
        let a = out[0].alert().expect("still an alert");
        assert_eq!(a.title, "burst");
        let top = a.top.as_ref().expect("annotated");
        assert_eq!(top.by, vec!["dst.port"]);
        assert_eq!(top.measure, "count");
        assert_eq!(
            top.window,
            AlertWindow {
                start: t(10),
                end: t(20)
            }
        );
        assert_eq!(
            rows(top),
            vec![
                (vec![json!(22)], 3.0),
                (vec![json!(9)], 2.0),
                (vec![json!(80)], 2.0)
            ]
        );
        assert_eq!(top.total, 10.0);
        assert_eq!(top.keys, 5);
        // The JSON form of the event carries the table too.
        assert_eq!(out[0].data()["top"]["rows"][0]["key"], json!([22]));
    }

    #[test]
    fn within_restricts_the_table_to_the_alerts_group() {
        let mut s = stage(Some("bytes"), &["src.ip"], 5, None);
        let mut out = Vec::new();
        s.process(flow("a", json!(22), 1), &mut out);
        s.process(flow("a", json!(22), 2), &mut out);
        s.process(flow("b", json!(22), 3), &mut out);
        s.process(flow("b", json!(3389), 4), &mut out);
        s.process(flow("a", json!(443), 5), &mut out);
        s.process(
            ev(
                json!({"src": {"ip": "a"}, "dst": {"port": 25}, "bytes": "x"}),
                5,
            ),
            &mut out,
        );
        s.process(
            ev(
                json!({"src": {"ip": "a"}, "dst": {"port": 25}, "bytes": "5"}),
                5,
            ),
            &mut out,
        );
        s.process(ev(json!({"src": {"ip": "a"}, "bytes": 1}), 5), &mut out);
        s.process(alert(json!({"src": {"ip": "a"}}), 0, 10), &mut out);
        s.flush_pending(&mut out);
        let top = out[0].alert().unwrap().top.clone().unwrap();
        assert_eq!(top.measure, "bytes");
        assert_eq!(
            rows(&top),
            vec![
                (vec![json!(22)], 20.0),
                (vec![json!(443)], 10.0),
                (vec![json!(25)], 5.0),
                (vec![Value::Null], 1.0),
            ]
        );
        assert_eq!((top.total, top.keys), (36.0, 4));
        assert_eq!(s.state.skipped, 1, "`bytes: x` is not a number");

        s.process(alert(json!({"src": {"ip": "b"}}), 0, 10), &mut out);

        s.flush_pending(&mut out);
        let top = out[1].alert().unwrap().top.clone().unwrap();
        assert_eq!(
            rows(&top),
            vec![(vec![json!(22)], 10.0), (vec![json!(3389)], 10.0)]
        );
    }

    #[test]
    fn own_windows_are_reported_when_they_end() {
        let mut s = stage(None, &[], 2, Some(60));
        let mut out = Vec::new();
        for (port, at) in [(22, 0), (22, 10), (80, 59)] {
            s.process(flow("a", json!(port), at), &mut out);
        }
        assert!(out.is_empty());
        // Nothing in [60, 120): the event at 125 closes [0, 60) only.
        s.process(flow("a", json!(443), 125), &mut out);
        assert_eq!(out.len(), 1);
        let a = out[0].alert().unwrap();
        assert_eq!(a.value, 3.0);
        assert_eq!(a.threshold, 0.0);
        assert_eq!(a.title, "Top ports: 3");
        assert_eq!(
            a.window,
            AlertWindow {
                start: t(0),
                end: t(60)
            }
        );
        assert_eq!(out[0].meta.time, t(60));
        let top = a.top.as_ref().unwrap();
        assert_eq!(
            rows(top),
            vec![(vec![json!(22)], 2.0), (vec![json!(80)], 1.0)]
        );
        assert_eq!((top.total, top.keys), (3.0, 2));

        // A late event for the reported window is counted (for `/metrics` too), not
        // reported again.
        s.process(flow("a", json!(22), 30), &mut out);
        assert_eq!(s.state.late, 1);
        let late = crate::node::internal_event::DropReason::Late;
        assert_eq!(s.counters.dropped_for(late), 1);

        // Events stop: the clock closes [120, 180) once it is 55 s past 125 + (180 - 125).
        out.clear();
        s.tick(t(179), &mut out);
        assert!(out.is_empty());
        s.tick(t(180), &mut out);
        assert_eq!(out.len(), 1);
        let a = out[0].alert().unwrap();
        assert_eq!(
            a.window,
            AlertWindow {
                start: t(120),
                end: t(180)
            }
        );
        assert_eq!(a.value, 1.0);
        out.clear();
        s.finish(&mut out);
        assert!(out.is_empty(), "nothing left open");
        assert_eq!(s.state.reports, 2);
    }

    #[test]
    fn finish_reports_open_windows_and_annotation_alone_reports_nothing() {
        let mut s = stage(None, &[], 2, Some(60));
        let mut out = Vec::new();
        s.process(flow("a", json!(22), 0), &mut out);
        s.finish(&mut out);
        assert_eq!(out.len(), 1);

        let mut plain = stage(None, &[], 2, None);
        let mut out = Vec::new();
        plain.process(flow("a", json!(22), 0), &mut out);
        plain.tick(t(10_000), &mut out);
        plain.finish(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn old_events_are_forgotten_after_retain() {
        let mut s = stage(None, &[], 5, None);
        let mut out = Vec::new();
        s.process(flow("a", json!(22), 0), &mut out);
        s.process(flow("a", json!(80), 3600), &mut out);
        assert_eq!(s.state.recs.len(), 1);
        s.process(flow("a", json!(81), 0), &mut out);
        assert_eq!(s.state.late, 1);
        let late = crate::node::internal_event::DropReason::Late;
        assert_eq!(s.counters.dropped_for(late), 1);
    }

    #[test]
    fn recorded_events_survive_a_restart_unless_the_shape_changes() {
        let mut s = stage(None, &["src.ip"], 5, Some(60));
        let mut out = Vec::new();
        s.process(flow("a", json!(22), 1), &mut out);
        s.process(flow("a", json!(80), 2), &mut out);
        let saved = crate::node::snapshot_text(&s).unwrap();

        let mut again = stage(None, &["src.ip"], 5, Some(60));
        again.restore("p.top", &saved);
        again.process(alert(json!({"src": {"ip": "a"}}), 0, 10), &mut out);
        again.flush_pending(&mut out);
        let top = out[0].alert().unwrap().top.clone().unwrap();
        assert_eq!((top.total, top.keys), (2.0, 2));
        out.clear();
        again.finish(&mut out);
        assert_eq!(out.len(), 1, "the pending window survived");

        let mut other = stage(Some("bytes"), &["src.ip"], 5, Some(60));
        other.restore("p.top", &saved);
        out.clear();
        other.process(alert(json!({"src": {"ip": "a"}}), 0, 10), &mut out);
        other.flush_pending(&mut out);
        let top = out[0].alert().unwrap().top.clone().unwrap();
        assert_eq!((top.total, top.keys), (0.0, 0));
    }
}
