//! The running `cooldown` stage.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::event::{AlertStatus, Event, FieldPath, Timestamp};
use crate::node::internal_event::{CooldownSuppressed, InternalEvent, KeysEvicted};
use crate::node::{Snapshot, Stage};
use crate::stages::stage_state;

/// Suppresses a key for a period after one of its events passes; see
/// [`super::CooldownConfig`].
#[derive(Debug)]
pub struct CooldownStage {
    key: Vec<FieldPath>,
    period: chrono::Duration,
    max_keys: usize,
    state: State,
    /// Where suppressed events and evicted keys are counted.
    counters: std::sync::Arc<crate::node::NodeCounters>,
    /// The node's id, `pipeline.node`, for the log.
    id: std::sync::Arc<str>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Key → event time of the one that passed last.
    passed_at: HashMap<String, Timestamp>,
    /// Key → the input (`pipeline.node` that made the event) it passed from: its period
    /// is measured on that input's event time.
    #[serde(default)]
    input_of: HashMap<String, String>,
    /// Key → the id of the alert that passed: later reports of the same episode pass.
    #[serde(default)]
    passed_id: HashMap<String, String>,
    /// Input → the newest event time seen from it.
    #[serde(default)]
    watermarks: HashMap<String, Timestamp>,
    /// The newest event time seen from any input (for keys saved before inputs were).
    watermark: Option<Timestamp>,
    /// Events passed.
    passed: u64,
    /// Events suppressed.
    suppressed: u64,
    /// Keys forgotten before their period ended (`max_keys`).
    evicted: u64,
}

impl CooldownStage {
    /// A stage keyed by `key` (empty: see [`super::CooldownConfig`]).
    pub fn new(key: Vec<FieldPath>, period: chrono::Duration, max_keys: usize) -> CooldownStage {
        CooldownStage {
            key,
            period,
            max_keys,
            state: State::default(),
            counters: std::sync::Arc::default(),
            id: "".into(),
        }
    }

    /// Reports what the stage suppresses and evicts as node `id`, counted in `counters`
    /// (the node's).
    pub fn counting_into(
        mut self,
        id: std::sync::Arc<str>,
        counters: std::sync::Arc<crate::node::NodeCounters>,
    ) -> Self {
        self.id = id;
        self.counters = counters;
        self
    }

    fn shape(&self) -> Value {
        let key: Vec<&str> = self.key.iter().map(FieldPath::as_str).collect();
        json!({ "key": key })
    }

    /// Restores what [`Stage::snapshot`] saved, if it was made with the same key.
    pub fn restore(&mut self, node: &str, saved: &str) {
        if let Some(state) = stage_state::load(node, saved, &self.shape()) {
            self.state = state;
        }
    }

    /// Events suppressed so far.
    pub fn suppressed(&self) -> u64 {
        self.state.suppressed
    }

    fn key(&self, event: &Event) -> String {
        if !self.key.is_empty() {
            return stage_state::key_of(event, &self.key);
        }
        match event.alert() {
            Some(a) => format!("{}\u{1f}{}\u{1f}{}", a.pipeline, a.stage, a.group_key),
            None => String::new(),
        }
    }

    /// Forgets the keys whose period has ended, each measured on the event time of the
    /// input it passed from (inputs' clocks can differ by minutes).
    fn evict(&mut self) {
        let st = &mut self.state;
        let period = self.period;
        st.passed_at.retain(|key, t| {
            let wm = st
                .input_of
                .get(key)
                .and_then(|input| st.watermarks.get(input))
                .copied()
                .or(st.watermark);
            match wm {
                Some(wm) => t.checked_add_signed(period).is_none_or(|end| end > wm),
                None => true,
            }
        });
        self.forget_detached();
    }

    /// Drops what is kept beside keys that are gone.
    fn forget_detached(&mut self) {
        let st = &mut self.state;
        st.input_of.retain(|k, _| st.passed_at.contains_key(k));
        st.passed_id.retain(|k, _| st.passed_at.contains_key(k));
    }

    fn make_room(&mut self) {
        if self.state.passed_at.len() < self.max_keys {
            return;
        }
        self.evict();
        let forgot = stage_state::forget_oldest(
            &mut self.state.passed_at,
            self.max_keys,
            |t| *t,
            &mut self.state.evicted,
        );
        KeysEvicted {
            stage: &self.id,
            keys: forgot,
            max_keys: self.max_keys,
            warning: "cooldown holds `max_keys` keys: forgetting the oldest early",
        }
        .emit(&self.counters);
        self.forget_detached();
    }
}

impl Stage for CooldownStage {
    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
        let t = event.meta.time;
        self.state.watermark = Some(self.state.watermark.map_or(t, |w| w.max(t)));
        let input = event.meta.source.as_ref();
        match self.state.watermarks.get_mut(input) {
            Some(w) => *w = (*w).max(t),
            None => {
                self.state.watermarks.insert(input.to_string(), t);
            }
        }
        let key = self.key(&event);
        if event
            .alert()
            .is_some_and(|a| a.status == AlertStatus::Resolved)
        {
            self.state.passed_at.remove(&key);
            self.forget_detached();
            self.state.passed += 1;
            out.push(event);
            return;
        }
        // A later report of the episode that passed is the same alert, not a new one.
        if let Some(a) = event.alert()
            && self.state.passed_id.get(&key) == Some(&a.id)
        {
            self.state.passed += 1;
            out.push(event);
            return;
        }
        match self.state.passed_at.get(&key) {
            Some(last)
                if last
                    .checked_add_signed(self.period)
                    .is_none_or(|end| t < end) =>
            {
                self.state.suppressed += 1;
                CooldownSuppressed {
                    stage: &self.id,
                    key: &key,
                }
                .emit(&self.counters);
                return;
            }
            Some(_) => {}
            None => self.make_room(),
        }
        if let Some(a) = event.alert() {
            self.state.passed_id.insert(key.clone(), a.id.clone());
        }
        self.state.input_of.insert(key.clone(), input.to_string());
        self.state.passed_at.insert(key, t);
        self.state.passed += 1;
        out.push(event);
    }

    fn tick(&mut self, _now: Timestamp, _out: &mut Vec<Arc<Event>>) {
        self.evict();
    }

    fn snapshot(&self, max_bytes: u64) -> Option<Snapshot> {
        stage_state::save(&self.shape(), &self.state, max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Alert, AlertWindow, Severity};
    use chrono::{TimeZone, Utc};

    fn t(s: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap() + chrono::Duration::seconds(s)
    }

    fn ev(v: Value, s: i64) -> Arc<Event> {
        Arc::new(Event::from_record(v, "p.in".into(), t(s)))
    }

    fn alert(stage: &str, group_key: &str, status: AlertStatus, s: i64) -> Arc<Event> {
        let a = Alert {
            id: format!("{stage}-{group_key}-{s}"),
            status,
            pipeline: "p".into(),
            stage: stage.into(),
            severity: Severity::High,
            title: "t".into(),
            summary: String::new(),
            group: json!({}),
            group_key: group_key.into(),
            value: 1.0,
            threshold: 1.0,
            unit: None,
            estimate: None,
            window: AlertWindow {
                start: t(s),
                end: t(s),
            },
            first_seen: Default::default(),

            last_seen: Default::default(),

            updates: 0,

            episode: false,

            samples: vec![],
            top: None,
            fields: Default::default(),
        };
        Arc::new(Event::from_alert(a, format!("p.{stage}").into(), t(s)))
    }

    fn stage(key: &[&str], period: i64) -> CooldownStage {
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        CooldownStage::new(
            crate::stages::alerting::GroupBy::parse(&key).unwrap().0,
            chrono::Duration::seconds(period),
            100,
        )
    }

    fn run(s: &mut CooldownStage, events: Vec<Arc<Event>>) -> Vec<i64> {
        let mut out = Vec::new();
        for e in events {
            s.process(e, &mut out);
        }
        out.iter()
            .map(|e| (e.meta.time - t(0)).num_seconds())
            .collect()
    }

    #[test]
    fn empty_and_missing_keys_cool_down_separately() {
        let mut s = stage(&["user"], 60);
        let passed = run(
            &mut s,
            vec![
                ev(json!({"user": ""}), 0),
                ev(json!({}), 1),
                ev(json!({"user": null}), 2),
                ev(json!({"user": ""}), 3),
                ev(json!({}), 4),
                ev(json!({"user": "bob"}), 5),
            ],
        );
        assert_eq!(passed, vec![0, 1, 2, 5]);
        assert_eq!(s.suppressed(), 2);
    }

    #[test]
    fn a_key_passes_again_exactly_one_period_after_the_one_that_passed() {
        let mut s = stage(&[], 60);
        let passed = run(
            &mut s,
            vec![
                ev(json!({}), 0),
                ev(json!({}), 59),
                ev(json!({}), 60),
                ev(json!({}), 61),
                ev(json!({}), 119),
                ev(json!({}), 120),
            ],
        );
        assert_eq!(passed, vec![0, 60, 120]);
        assert_eq!(s.suppressed(), 3);
    }

    #[test]
    fn alerts_cool_down_per_rule_and_group_and_resolved_resets() {
        let mut s = stage(&[], 600);
        let mut out = Vec::new();
        for e in [
            alert("burst", "src.ip=10.0.0.1", AlertStatus::Firing, 0),
            alert("burst", "src.ip=10.0.0.2", AlertStatus::Firing, 10),
            alert("scan", "src.ip=10.0.0.1", AlertStatus::Firing, 20),
            alert("burst", "src.ip=10.0.0.1", AlertStatus::Firing, 30),
            alert("burst", "src.ip=10.0.0.1", AlertStatus::Resolved, 40),
            alert("burst", "src.ip=10.0.0.1", AlertStatus::Firing, 50),
            alert("burst", "src.ip=10.0.0.1", AlertStatus::Firing, 60),
        ] {
            s.process(e, &mut out);
        }
        let got: Vec<(String, AlertStatus, i64)> = out
            .iter()
            .map(|e| {
                let a = e.alert().unwrap();
                (
                    format!("{} {}", a.stage, a.group_key),
                    a.status,
                    (a.window.end - t(0)).num_seconds(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("burst src.ip=10.0.0.1".into(), AlertStatus::Firing, 0),
                ("burst src.ip=10.0.0.2".into(), AlertStatus::Firing, 10),
                ("scan src.ip=10.0.0.1".into(), AlertStatus::Firing, 20),
                ("burst src.ip=10.0.0.1".into(), AlertStatus::Resolved, 40),
                ("burst src.ip=10.0.0.1".into(), AlertStatus::Firing, 50),
            ]
        );
        assert_eq!(s.suppressed(), 2);
    }

    #[test]
    fn cooldowns_survive_a_restart_unless_the_key_changes() {
        let mut s = stage(&["k"], 60);
        run(
            &mut s,
            vec![ev(json!({"k": ""}), 0), ev(json!({"k": ""}), 1)],
        );
        let saved = crate::node::snapshot_text(&s).unwrap();

        let mut again = stage(&["k"], 60);
        again.restore("p.c", &saved);
        assert_eq!(again.suppressed(), 1);
        let passed = run(
            &mut again,
            vec![
                ev(json!({"k": ""}), 59),
                ev(json!({}), 59),
                ev(json!({"k": ""}), 60),
            ],
        );
        assert_eq!(passed, vec![59, 60]);

        let mut other = stage(&["j"], 60);
        other.restore("p.c", &saved);
        assert_eq!(other.suppressed(), 0);
        assert_eq!(run(&mut other, vec![ev(json!({"k": ""}), 30)]), vec![30]);
    }

    /// Regression (issue 12): fed by two rules whose event times differ by minutes, a key
    /// of the rule that lags expired against the other rule's newer time and its next
    /// alert went out early.
    #[test]
    fn a_key_expires_on_the_event_time_of_its_own_input() {
        let mut s = stage(&[], 600);
        let mut out = Vec::new();
        let from = |stage: &str, s: i64| {
            let mut e = (*alert(stage, "src.ip=10.0.0.1", AlertStatus::Firing, s)).clone();
            e.meta.source = format!("p.{stage}").into();
            Arc::new(e)
        };
        // `slow` passes at 0; `fast` runs five minutes ahead of it.
        s.process(from("slow", 0), &mut out);
        s.process(from("fast", 300), &mut out);
        // `fast` reaches 900 s: 300 s past the end of slow's period in fast's time, but
        // slow's own time is at 595 s.
        s.process(from("fast", 900), &mut out);
        s.tick(t(900), &mut out);
        s.process(from("slow", 595), &mut out);
        let passed: Vec<(String, i64)> = out
            .iter()
            .map(|e| {
                let a = e.alert().unwrap();
                (a.stage.clone(), (a.window.end - t(0)).num_seconds())
            })
            .collect();
        assert_eq!(
            passed,
            vec![
                ("slow".into(), 0),
                ("fast".into(), 300),
                ("fast".into(), 900)
            ],
            "slow's alert at 595 s is inside its period"
        );
        assert_eq!(s.suppressed(), 1);
        // At 600 s of its own time, slow's period is over.
        out.clear();
        s.process(from("slow", 600), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn reports_of_an_episode_that_passed_pass_too() {
        let mut s = stage(&[], 600);
        let mut out = Vec::new();
        let first = alert("burst", "src.ip=10.0.0.1", AlertStatus::Firing, 0);
        let mut update = (*first).clone();
        let mut a = update.alert().unwrap().clone();
        a.updates = 7;
        a.window.end = t(60);
        update.set_alert(a);
        s.process(first, &mut out);
        s.process(Arc::new(update), &mut out);
        s.process(
            alert("burst", "src.ip=10.0.0.1", AlertStatus::Firing, 120),
            &mut out,
        );
        assert_eq!(
            out.len(),
            2,
            "the update passes, another episode is held back"
        );
        assert_eq!(s.suppressed(), 1);
    }

    #[test]
    fn expired_keys_are_forgotten_at_the_watermark() {
        let mut s = stage(&["k"], 10);
        run(&mut s, vec![ev(json!({"k": 1}), 0), ev(json!({"k": 2}), 5)]);
        run(&mut s, vec![ev(json!({"k": 3}), 10)]);
        s.tick(t(10), &mut Vec::new());
        assert_eq!(s.state.passed_at.len(), 2);
    }
}
