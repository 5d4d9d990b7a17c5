//! The running `report` stage.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::TOP_KEY;
use super::period::{Calendar, Span};
use crate::event::{
    AlertStatus, AlertWindow, Event, FieldPath, Group, Timestamp, TopRow, TopTable,
};
use crate::node::internal_event::{InternalEvent, KeyNotCounted, LateEvent, Lateness};
use crate::node::{NodeCounters, Snapshot, Stage};
use crate::stages::alerting::{AlertTemplates, Finding, GroupBy};
use crate::stages::stage_state::{self, SavedField};
use crate::stages::window::number;

/// What a `report` stage totals and how (from [`super::ReportConfig`]).
#[derive(Debug, Clone)]
pub struct ReportSpec {
    /// The key paths.
    pub group_by: GroupBy,
    /// The fields totalled; the first is the alerts' value.
    pub sum: Vec<FieldPath>,
    /// The periods.
    pub calendar: Calendar,
    /// How long after its end a period waits for events.
    pub grace: chrono::Duration,
    /// The most keys a period holds.
    pub max_keys: usize,
    /// Keys in the top-N alert; `None` makes none.
    pub top: Option<usize>,
    /// The unit of the first sum.
    pub unit: Option<String>,
}

/// Totals per key over calendar periods; see [`super::ReportConfig`].
#[derive(Debug)]
pub struct ReportStage {
    spec: ReportSpec,
    templates: AlertTemplates,
    top_templates: AlertTemplates,
    state: State,
    /// Where late and ignored events are counted.
    counters: Arc<NodeCounters>,
    /// The node's id, `pipeline.node`, for the log.
    id: Arc<str>,
    /// The group key of the event at hand.
    key_buf: String,
}

/// What the stage saves.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// The periods not reported yet, by start (epoch milliseconds).
    periods: BTreeMap<i64, Open>,
    /// The end of the latest period reported: an event before it is late.
    #[serde(default)]
    reported_until: Option<Timestamp>,
    /// The latest tick: an event whose period ended `grace` before it is late.
    #[serde(default)]
    clock: Option<Timestamp>,
    /// Events late for their period.
    #[serde(default)]
    late: u64,
    /// Events of keys past `max_keys` in their period, not counted.
    #[serde(default)]
    ignored: u64,
    /// Values missing or not numbers at a `sum` field (one per field and event).
    #[serde(default)]
    unmeasured: u64,
    /// Periods reported.
    #[serde(default)]
    reports: u64,
}

/// One period being totalled.
#[derive(Debug, Serialize, Deserialize)]
struct Open {
    /// Its name (`2026-03`).
    label: String,
    start: Timestamp,
    end: Timestamp,
    /// Totals by group key.
    keys: HashMap<String, Totals>,
    /// Events of keys past `max_keys`, not counted.
    #[serde(default)]
    ignored: u64,
}

/// One key's totals in a period.
#[derive(Debug, Serialize, Deserialize)]
struct Totals {
    group: Vec<SavedField>,
    /// Events.
    count: u64,
    /// Each `sum` field's total, in the order of `sum`.
    sums: Vec<f64>,
    /// Events without a usable number at each `sum` field.
    unmeasured: Vec<u64>,
}

/// `v` as JSON: a whole number as an integer (exact up to 2^53), else as it is.
fn num(v: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if v.fract() == 0.0 && v.abs() <= EXACT {
        json!(v as i64)
    } else {
        json!(v)
    }
}

impl ReportStage {
    /// A stage with no period open.
    pub fn new(
        spec: ReportSpec,
        templates: AlertTemplates,
        top_templates: AlertTemplates,
    ) -> ReportStage {
        ReportStage {
            spec,
            id: templates.node_id(),
            templates,
            top_templates,
            state: State::default(),
            counters: Arc::default(),
            key_buf: String::new(),
        }
    }

    /// Counts what the stage sets aside into `counters` (the node's).
    pub fn counting_into(mut self, counters: Arc<NodeCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// What makes a saved state fit this stage.
    fn shape(&self) -> Value {
        let names = |p: &[FieldPath]| p.iter().map(|f| f.as_str().to_string()).collect::<Vec<_>>();
        json!({
            "group_by": names(&self.spec.group_by.0),
            "sum": names(&self.spec.sum),
            "period": self.spec.calendar.period.as_str(),
            "time_zone": self.spec.calendar.tz.name(),
        })
    }

    /// Restores what [`Stage::snapshot`] saved, if it was made with the same `group_by`,
    /// `sum`, `period` and `time_zone`; `true` when it was.
    pub fn restore(&mut self, node: &str, saved: &str) -> bool {
        match stage_state::load::<State>(node, saved, &self.shape()) {
            Some(state) => {
                self.state = state;
                true
            }
            None => false,
        }
    }

    /// Events late for their period so far.
    pub fn late(&self) -> u64 {
        self.state.late
    }

    /// Events of keys past `max_keys` in their period so far, not counted.
    pub fn ignored(&self) -> u64 {
        self.state.ignored
    }

    /// Values missing or not numbers at a `sum` field so far (one per field and event).
    pub fn unmeasured(&self) -> u64 {
        self.state.unmeasured
    }

    /// Periods reported so far.
    pub fn reports(&self) -> u64 {
        self.state.reports
    }

    /// The open period holding `t`, opened if need be; `None` when `t` is late for it.
    fn period_of(&mut self, t: Timestamp) -> Option<i64> {
        if self.state.reported_until.is_some_and(|r| t < r) {
            return None;
        }
        let ms = t.timestamp_millis();
        if let Some((&start, open)) = self.state.periods.range(..=ms).next_back()
            && t < open.end
        {
            return Some(start);
        }
        let Span { start, end, label } = self.spec.calendar.span_of(t);
        let due = crate::time::later_by(end, self.spec.grace);
        if self.state.clock.is_some_and(|now| due <= now) {
            return None;
        }
        let at = start.timestamp_millis();
        self.state.periods.entry(at).or_insert_with(|| Open {
            label,
            start,
            end,
            keys: HashMap::new(),
            ignored: 0,
        });
        Some(at)
    }

    fn count_late(&mut self, event: &Event) {
        self.state.late += 1;
        LateEvent {
            stage: &self.id,
            time: event.meta.time,
            key: None,
            why: Lateness::WindowReported,
        }
        .emit(&self.counters);
    }

    /// Reports every open period `grace` past its end at `now` (all when `None`), in
    /// time order.
    fn report_due(&mut self, now: Option<Timestamp>, out: &mut Vec<Arc<Event>>) {
        while let Some(entry) = self.state.periods.first_entry() {
            let due = crate::time::later_by(entry.get().end, self.spec.grace);
            if now.is_some_and(|n| n < due) {
                break;
            }
            let open = entry.remove();
            self.report(&open, out);
        }
    }

    /// The alerts of one period: one per key, in key order, then the top-N one.
    fn report(&mut self, open: &Open, out: &mut Vec<Arc<Event>>) {
        let window = AlertWindow {
            start: open.start,
            end: open.end,
        };
        let mut keys: Vec<(&String, &Totals)> = open.keys.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        let measure = |t: &Totals| t.sums.first().copied().unwrap_or(t.count as f64);
        for (_, totals) in &keys {
            let fields = self.fields(open, totals.count, &totals.sums, &totals.unmeasured);
            let alert = self.templates.alert(Finding {
                unit: self.spec.unit.clone(),
                fields,
                ..Finding::once(
                    stage_state::load_group(totals.group.clone()),
                    measure(totals),
                    0.0,
                    window,
                    Vec::new(),
                    AlertStatus::Firing,
                )
            });
            out.push(self.templates.event(alert));
        }
        if let Some(n) = self.spec.top {
            let n_sums = self.spec.sum.len();
            let mut sums = vec![0.0; n_sums];
            let mut unmeasured = vec![0; n_sums];
            let mut count = 0;
            for (_, t) in &keys {
                count += t.count;
                for i in 0..n_sums {
                    sums[i] += t.sums.get(i).copied().unwrap_or(0.0);
                    unmeasured[i] += t.unmeasured.get(i).copied().unwrap_or(0);
                }
            }
            let mut ranked: Vec<&(&String, &Totals)> = keys.iter().collect();
            // Biggest first; `keys` is in key order and the sort is stable: ties in key order.
            ranked.sort_by(|a, b| measure(b.1).total_cmp(&measure(a.1)));
            let rows = ranked
                .into_iter()
                .take(n)
                .map(|(_, t)| TopRow {
                    key: t
                        .group
                        .iter()
                        .map(|f| f.value.clone().unwrap_or(Value::Null))
                        .collect(),
                    value: measure(t),
                })
                .collect();
            let total = sums.first().copied().unwrap_or(count as f64);
            let table = TopTable {
                by: self
                    .spec
                    .group_by
                    .0
                    .iter()
                    .map(|p| p.as_str().to_string())
                    .collect(),
                measure: self
                    .spec
                    .sum
                    .first()
                    .map_or_else(|| "count".to_string(), |p| p.as_str().to_string()),
                window,
                rows,
                total,
                keys: keys.len() as u64,
            };
            let mut fields = self.fields(open, count, &sums, &unmeasured);
            fields.insert("keys".into(), json!(keys.len()));
            fields.insert("ignored".into(), json!(open.ignored));
            let mut alert = self.top_templates.alert(Finding {
                unit: self.spec.unit.clone(),
                fields,
                id: Some(self.top_templates.alert_id(TOP_KEY, &window)),
                ..Finding::once(
                    Group::default(),
                    total,
                    0.0,
                    window,
                    Vec::new(),
                    AlertStatus::Firing,
                )
            });
            alert.top = Some(table);
            out.push(self.top_templates.event(alert));
        }
        self.state.reported_until = Some(
            self.state
                .reported_until
                .map_or(open.end, |r| r.max(open.end)),
        );
        self.state.reports += 1;
    }

    /// A report's `fields`: the period, the zone, the count and the totals by path.
    fn fields(
        &self,
        open: &Open,
        count: u64,
        sums: &[f64],
        unmeasured: &[u64],
    ) -> serde_json::Map<String, Value> {
        let by_path = |v: &mut dyn FnMut(usize) -> Value| -> Value {
            Value::Object(
                self.spec
                    .sum
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.as_str().to_string(), v(i)))
                    .collect(),
            )
        };
        let mut f = serde_json::Map::new();
        f.insert("period".into(), json!(open.label));
        f.insert("time_zone".into(), json!(self.spec.calendar.tz.name()));
        f.insert("count".into(), json!(count));
        f.insert(
            "totals".into(),
            by_path(&mut |i| num(sums.get(i).copied().unwrap_or(0.0))),
        );
        f.insert(
            "unmeasured".into(),
            by_path(&mut |i| json!(unmeasured.get(i).copied().unwrap_or(0))),
        );
        f
    }
}

impl Stage for ReportStage {
    fn process(&mut self, event: Arc<Event>, _out: &mut Vec<Arc<Event>>) {
        let Some(at) = self.period_of(event.meta.time) else {
            self.count_late(&event);
            return;
        };
        let mut key = std::mem::take(&mut self.key_buf);
        crate::stages::window::write_key(&mut key, &self.spec.group_by.0, &*event);
        let Some(open) = self.state.periods.get_mut(&at) else {
            self.key_buf = key;
            return;
        };
        if !open.keys.contains_key(&key) && open.keys.len() >= self.spec.max_keys {
            open.ignored += 1;
            self.state.ignored += 1;
            KeyNotCounted {
                stage: &self.id,
                period: &open.label,
                max_keys: self.spec.max_keys,
                first: open.ignored == 1,
            }
            .emit(&self.counters);
            self.key_buf = key;
            return;
        }
        let n = self.spec.sum.len();
        if !open.keys.contains_key(&key) {
            let totals = Totals {
                group: stage_state::save_group(&self.spec.group_by.group(event.data())),
                count: 0,
                sums: vec![0.0; n],
                unmeasured: vec![0; n],
            };
            open.keys.insert(key.clone(), totals);
        }
        let Some(totals) = open.keys.get_mut(&key) else {
            self.key_buf = key;
            return;
        };
        totals.count += 1;
        for (i, path) in self.spec.sum.iter().enumerate() {
            match path.first_in(&event).and_then(number) {
                Some(v) => totals.sums[i] += v,
                None => {
                    totals.unmeasured[i] += 1;
                    self.state.unmeasured += 1;
                }
            }
        }
        self.key_buf = key;
    }

    fn tick(&mut self, now: Timestamp, out: &mut Vec<Arc<Event>>) {
        self.state.clock = Some(self.state.clock.map_or(now, |c| c.max(now)));
        self.report_due(Some(now), out);
    }

    fn finish(&mut self, out: &mut Vec<Arc<Event>>) {
        self.report_due(None, out);
    }

    fn snapshot(&self, max_bytes: u64) -> Option<Snapshot> {
        stage_state::save(&self.shape(), &self.state, max_bytes)
    }
}
