//! The running `dedupe` stage.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::event::{Event, FieldPath, Timestamp};
use crate::node::internal_event::{InternalEvent, KeysEvicted, RepeatDropped};
use crate::node::{NodeCounters, Snapshot, Stage};
use crate::stages::stage_state;

/// Drops repeats within a window; see [`super::DedupeConfig`].
#[derive(Debug)]
pub struct DedupeStage {
    key: Vec<FieldPath>,
    window: chrono::Duration,
    max_keys: usize,
    state: State,
    /// Where dropped repeats and evicted keys are counted.
    counters: Arc<NodeCounters>,
    /// The node's id, `pipeline.node`, for the log.
    id: Arc<str>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Key → time of the occurrence that passed (the window's start).
    first: HashMap<String, Timestamp>,
    /// The newest event time seen.
    watermark: Option<Timestamp>,
    /// Events passed.
    passed: u64,
    /// Repeats dropped.
    dropped: u64,
    /// Keys forgotten before their window ended (`max_keys`).
    evicted: u64,
}

impl DedupeStage {
    /// A stage keyed by `key` (empty: alert id, else the whole record).
    pub fn new(key: Vec<FieldPath>, window: chrono::Duration, max_keys: usize) -> DedupeStage {
        DedupeStage {
            key,
            window,
            max_keys,
            state: State::default(),
            counters: Arc::default(),
            id: "".into(),
        }
    }

    /// Reports what the stage drops and evicts as node `id`, counted in `counters` (the
    /// node's).
    pub fn counting_into(mut self, id: Arc<str>, counters: Arc<NodeCounters>) -> Self {
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

    /// Repeats dropped so far.
    pub fn dropped(&self) -> u64 {
        self.state.dropped
    }

    fn key(&self, event: &Event) -> String {
        if !self.key.is_empty() {
            return stage_state::key_of(event, &self.key);
        }
        if let Some(alert) = event.alert() {
            return format!("alert:{}", alert.id);
        }
        let text = serde_json::to_vec(&event.record()).unwrap_or_default();
        format!("record:{}", hex::encode(&Sha256::digest(&text)[..16]))
    }

    /// Forgets keys whose window has ended at the watermark.
    fn evict(&mut self) {
        stage_state::forget_ended(&mut self.state.first, self.state.watermark, self.window);
    }

    fn make_room(&mut self) {
        if self.state.first.len() < self.max_keys {
            return;
        }
        self.evict();
        let forgot = stage_state::forget_oldest(
            &mut self.state.first,
            self.max_keys,
            |t| *t,
            &mut self.state.evicted,
        );
        KeysEvicted {
            stage: &self.id,
            keys: forgot,
            max_keys: self.max_keys,
            warning: "dedupe holds `max_keys` keys: forgetting the oldest early",
        }
        .emit(&self.counters);
    }
}

impl Stage for DedupeStage {
    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
        let t = event.meta.time;
        self.state.watermark = Some(self.state.watermark.map_or(t, |w| w.max(t)));
        let key = self.key(&event);
        if let Some(first) = self.state.first.get(&key) {
            let within = first
                .checked_add_signed(self.window)
                .is_none_or(|end| t < end);
            if within {
                self.state.dropped += 1;
                RepeatDropped {
                    stage: &self.id,
                    key: &key,
                }
                .emit(&self.counters);
                return;
            }
        } else {
            self.make_room();
        }
        self.state.first.insert(key, t);
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
    use crate::event::{Alert, AlertStatus, AlertWindow, Severity};
    use chrono::{TimeZone, Utc};

    fn t(s: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap() + chrono::Duration::seconds(s)
    }

    fn ev(v: Value, s: i64) -> Arc<Event> {
        Arc::new(Event::from_record(v, "p.in".into(), t(s)))
    }

    fn stage(key: &[&str], window: i64) -> DedupeStage {
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        DedupeStage::new(
            crate::stages::alerting::GroupBy::parse(&key).unwrap().0,
            chrono::Duration::seconds(window),
            100,
        )
    }

    fn run(s: &mut DedupeStage, events: Vec<Arc<Event>>) -> Vec<i64> {
        let mut out = Vec::new();
        for e in events {
            s.process(e, &mut out);
        }
        out.iter()
            .map(|e| (e.meta.time - t(0)).num_seconds())
            .collect()
    }

    #[test]
    fn repeats_within_the_window_are_dropped_and_the_boundary_passes() {
        let mut s = stage(&["src.ip"], 60);
        let ip = |ip: &str, at: i64| ev(json!({"src": {"ip": ip}}), at);
        let passed = run(
            &mut s,
            vec![
                ip("10.0.0.1", 0),
                ip("10.0.0.1", 30),
                ip("10.0.0.2", 31),
                ip("10.0.0.1", 59),
                // Exactly `window` after the first: a new window.
                ip("10.0.0.1", 60),
                ip("10.0.0.1", 119),
                ip("10.0.0.1", 120),
            ],
        );
        assert_eq!(passed, vec![0, 31, 60, 120]);
        assert_eq!(s.dropped(), 3);
    }

    /// What dedupe drops shows in `/metrics` under its node: repeats as `duplicate`, keys
    /// forgotten past `max_keys` as `evicted`; the node's first eviction is a warning.
    #[test]
    fn repeats_and_evicted_keys_are_counted_for_the_node() {
        use crate::node::internal_event::{DropReason, capture};
        let counters = Arc::new(NodeCounters::default());
        let mut s = DedupeStage::new(
            crate::stages::alerting::GroupBy::parse(&["user".to_string()])
                .unwrap()
                .0,
            chrono::Duration::seconds(60),
            2,
        )
        .counting_into("p.dedupe".into(), counters.clone());
        let user = |u: &str, at: i64| ev(json!({"user": u}), at);
        let logs = capture::logs(|| {
            let passed = run(
                &mut s,
                vec![
                    user("a", 0),
                    user("a", 1),
                    user("b", 2),
                    user("c", 3),
                    user("d", 4),
                ],
            );
            assert_eq!(passed, vec![0, 2, 3, 4]);
        });
        assert_eq!(counters.dropped_for(DropReason::Duplicate), 1);
        assert_eq!(counters.dropped_for(DropReason::Evicted), 2);
        let warnings: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("dedupe holds `max_keys` keys"))
            .collect();
        assert_eq!(warnings.len(), 1, "{logs}");
        assert!(warnings[0].contains("stage=p.dedupe"), "{logs}");
        assert!(logs.contains("dedupe: repeat dropped"), "{logs}");
    }

    #[test]
    fn empty_and_missing_keys_are_different() {
        let mut s = stage(&["user"], 60);
        let passed = run(
            &mut s,
            vec![
                ev(json!({"user": ""}), 0),
                ev(json!({}), 1),
                ev(json!({"user": ""}), 2),
                ev(json!({}), 3),
            ],
        );
        assert_eq!(passed, vec![0, 1]);
    }

    #[test]
    fn default_keys_are_the_alert_id_or_the_whole_record() {
        let mut s = stage(&[], 60);
        let alert = |id: &str, at: i64| {
            let a = Alert {
                id: id.into(),
                status: AlertStatus::Firing,
                pipeline: "p".into(),
                stage: "burst".into(),
                severity: Severity::High,
                title: "t".into(),
                summary: String::new(),
                group: json!({}),
                group_key: String::new(),
                value: 1.0,
                threshold: 1.0,
                unit: None,
                estimate: None,
                window: AlertWindow {
                    start: t(at),
                    end: t(at),
                },
                first_seen: Default::default(),

                last_seen: Default::default(),

                updates: 0,

                episode: false,

                samples: vec![],
                top: None,
                fields: Default::default(),
            };
            Arc::new(Event::from_alert(a, "p.burst".into(), t(at)))
        };
        let passed = run(
            &mut s,
            vec![
                alert("a", 0),
                alert("a", 10),
                alert("b", 11),
                ev(json!({"x": 1}), 12),
                ev(json!({"x": 1}), 13),
                ev(json!({"x": 2}), 14),
            ],
        );
        assert_eq!(passed, vec![0, 11, 12, 14]);
        assert_eq!(s.dropped(), 2);
    }

    #[test]
    fn keys_are_forgotten_behind_the_watermark_and_capped() {
        let mut s = stage(&["k"], 10);
        run(&mut s, vec![ev(json!({"k": 1}), 0), ev(json!({"k": 2}), 5)]);
        run(&mut s, vec![ev(json!({"k": 3}), 10)]);
        s.tick(t(10), &mut Vec::new());
        assert_eq!(s.state.first.len(), 2, "k=1 ended at 10");

        let mut capped = DedupeStage::new(
            crate::stages::alerting::GroupBy::parse(&["k".into()])
                .unwrap()
                .0,
            chrono::Duration::seconds(100),
            2,
        );
        let passed = run(
            &mut capped,
            vec![
                ev(json!({"k": 1}), 0),
                ev(json!({"k": 2}), 1),
                ev(json!({"k": 3}), 2),
                // k=1 was forgotten early to make room: it passes again.
                ev(json!({"k": 1}), 3),
            ],
        );
        assert_eq!(passed, vec![0, 1, 2, 3]);
        assert_eq!(capped.state.evicted, 2);
    }

    #[test]
    fn state_survives_a_restart_unless_the_key_changes() {
        let mut s = stage(&["k"], 60);
        run(&mut s, vec![ev(json!({"k": 1}), 0), ev(json!({"k": 1}), 1)]);
        let saved = crate::node::snapshot_text(&s).unwrap();

        let mut again = stage(&["k"], 60);
        again.restore("p.d", &saved);
        assert_eq!(again.dropped(), 1);
        assert_eq!(
            run(&mut again, vec![ev(json!({"k": 1}), 30)]),
            Vec::<i64>::new()
        );

        let mut other = stage(&["j"], 60);
        other.restore("p.d", &saved);
        assert_eq!(other.dropped(), 0);
        assert_eq!(run(&mut other, vec![ev(json!({"k": 1}), 30)]), vec![30]);
    }
}
