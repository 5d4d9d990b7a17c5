//! The running `flatline` stage.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::event::{AlertStatus, AlertWindow, Event, FieldPath, Sample, Timestamp};
use crate::node::internal_event::{InternalEvent, KeysEvicted};
use crate::node::{NodeCounters, Snapshot, Stage};
use crate::stages::alerting::{AlertTemplates, Finding, GroupBy};
use crate::stages::stage_state::{self, SavedField};

/// Watches keys for quiet; see [`super::FlatlineConfig`].
#[derive(Debug)]
pub struct FlatlineStage {
    group_by: GroupBy,
    after: chrono::Duration,
    templates: AlertTemplates,
    max_keys: usize,
    state: State,
    /// Resolutions of episodes left open by a state this stage did not restore.
    orphans: Vec<Arc<Event>>,
    /// Where evicted keys are counted.
    counters: Arc<NodeCounters>,
    /// The node's id, `pipeline.node`, for the log.
    id: Arc<str>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Group key → what is known of it.
    keys: HashMap<String, Watched>,
    /// Firing alerts raised.
    fired: u64,
    /// Resolved alerts raised.
    resolved: u64,
    /// Keys forgotten to stay under `max_keys`.
    evicted: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Watched {
    group: Vec<SavedField>,
    /// Arrival time of its last event (or the first tick, for the whole input).
    last_seen: Timestamp,
    /// Its last event.
    sample: Option<SavedSample>,
    /// Whether a firing alert was raised for the current quiet period.
    firing: bool,
    /// The firing alert's id and time, so the `resolved` one closes the same episode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    episode: Option<(String, Timestamp)>,
}

/// A [`Sample`] as saved (its record as a JSON value).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedSample {
    time: Timestamp,
    source: String,
    record: Value,
}

impl SavedSample {
    fn of(event: &Event) -> SavedSample {
        let s = Sample::of(event);
        SavedSample {
            record: s.value(),
            time: s.time,
            source: s.source.to_string(),
        }
    }

    fn sample(&self) -> Option<Sample> {
        Some(Sample {
            time: self.time,
            source: self.source.as_str().into(),
            record: serde_json::value::to_raw_value(&self.record).ok()?.into(),
        })
    }
}

impl FlatlineStage {
    /// A stage raising alerts after `after` of quiet per `group_by` key.
    pub fn new(
        group_by: GroupBy,
        after: chrono::Duration,
        templates: AlertTemplates,
        max_keys: usize,
    ) -> FlatlineStage {
        FlatlineStage {
            group_by,
            after,
            id: templates.node_id(),
            templates,
            max_keys,
            state: State::default(),
            orphans: Vec::new(),
            counters: Arc::default(),
        }
    }

    /// Counts what the stage evicts into `counters` (the node's).
    pub fn counting_into(mut self, counters: Arc<NodeCounters>) -> Self {
        self.counters = counters;
        self
    }

    fn shape(&self) -> Value {
        let g: Vec<&str> = self.group_by.0.iter().map(FieldPath::as_str).collect();
        json!({ "group_by": g })
    }

    /// Restores what [`Stage::snapshot`] saved, if it was made with the same `group_by`.
    pub fn restore(&mut self, node: &str, saved: &str) -> bool {
        match stage_state::load(node, saved, &self.shape()) {
            Some(state) => {
                self.state = state;
                true
            }
            None => false,
        }
    }

    /// Resolutions to hand on at the first tick (see [`crate::stages::episode::orphaned`]).
    pub fn close_at_start(&mut self, orphans: Vec<Arc<Event>>) {
        self.orphans = orphans;
    }

    /// The alert of `w`'s quiet period at `now`: `firing` opens the episode (its id is
    /// kept in `w`), `resolved` closes it with the same id.
    fn alert(&self, w: &Watched, now: Timestamp, status: AlertStatus) -> Arc<Event> {
        let quiet = (now - w.last_seen).max(chrono::Duration::zero());
        let samples = if self.templates.samples > 0 {
            w.sample.iter().filter_map(SavedSample::sample).collect()
        } else {
            Vec::new()
        };
        let window = AlertWindow {
            start: w.last_seen,
            end: now,
        };
        let (id, first_seen) = match &w.episode {
            Some((id, at)) => (Some(id.clone()), *at),
            None => (None, now),
        };
        let alert = self.templates.alert(Finding {
            unit: Some("s".into()),
            id,
            first_seen,
            last_seen: w.last_seen,
            episode: true,
            ..Finding::once(
                stage_state::load_group(w.group.clone()),
                quiet.num_milliseconds() as f64 / 1000.0,
                self.after.num_milliseconds() as f64 / 1000.0,
                window,
                samples,
                status,
            )
        });
        self.templates.event(alert)
    }

    fn make_room(&mut self) {
        let forgot = stage_state::forget_oldest(
            &mut self.state.keys,
            self.max_keys,
            |w| w.last_seen,
            &mut self.state.evicted,
        );
        KeysEvicted {
            stage: &self.id,
            keys: forgot,
            max_keys: self.max_keys,
            warning: "flatline watches `max_keys` keys: forgetting the one seen longest ago",
        }
        .emit(&self.counters);
    }
}

impl Stage for FlatlineStage {
    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
        let now = event.meta.ingest;
        let group = self.group_by.group(event.data());
        let key = group.key();
        if !self.state.keys.contains_key(&key) {
            self.make_room();
        }
        let resolved = match self.state.keys.get(&key) {
            Some(w) if w.firing => Some(self.alert(w, now, AlertStatus::Resolved)),
            _ => None,
        };
        let w = self.state.keys.entry(key).or_insert_with(|| Watched {
            group: stage_state::save_group(&group),
            last_seen: now,
            sample: None,
            firing: false,
            episode: None,
        });
        w.last_seen = w.last_seen.max(now);
        w.sample = Some(SavedSample::of(&event));
        w.firing = false;
        w.episode = None;
        if let Some(a) = resolved {
            self.state.resolved += 1;
            out.push(a);
        }
    }

    fn tick(&mut self, now: Timestamp, out: &mut Vec<Arc<Event>>) {
        out.append(&mut self.orphans);
        if self.group_by.0.is_empty() && self.state.keys.is_empty() {
            self.state.keys.insert(
                String::new(),
                Watched {
                    group: Vec::new(),
                    last_seen: now,
                    sample: None,
                    firing: false,
                    episode: None,
                },
            );
        }
        let mut due: Vec<&String> = self
            .state
            .keys
            .iter()
            .filter(|(_, w)| !w.firing && now - w.last_seen >= self.after)
            .map(|(k, _)| k)
            .collect();
        due.sort();
        let due: Vec<String> = due.into_iter().cloned().collect();
        for key in due {
            let Some(w) = self.state.keys.get(&key) else {
                continue;
            };
            let alert = self.alert(w, now, AlertStatus::Firing);
            let id = alert.alert().map(|a| a.id.clone()).unwrap_or_default();
            out.push(alert);
            self.state.fired += 1;
            if let Some(w) = self.state.keys.get_mut(&key) {
                w.firing = true;
                w.episode = Some((id, now));
            }
        }
    }

    fn snapshot(&self, max_bytes: u64) -> Option<Snapshot> {
        stage_state::save(&self.shape(), &self.state, max_bytes)
    }
}

impl crate::stages::episode::Resumable for FlatlineStage {
    fn restore(&mut self, saved: &str, id: &str) -> bool {
        FlatlineStage::restore(self, id, saved)
    }

    fn close_at_start(&mut self, orphans: Vec<Arc<Event>>) {
        FlatlineStage::close_at_start(self, orphans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Alert;
    use crate::stages::alerting::AlertConfig;
    use crate::stages::flatline::config::{DEFAULT_SUMMARY, DEFAULT_TITLE};
    use chrono::{TimeZone, Utc};

    fn t(s: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap() + chrono::Duration::seconds(s)
    }

    /// An event that arrives at `s` (its record time is far older: arrival is what counts).
    fn ev(v: Value, s: i64) -> Arc<Event> {
        let mut e = Event::from_record(v, "p.in".into(), t(s));
        e.meta.time = t(-86_400);
        Arc::new(e)
    }

    fn stage(group_by: &[&str], after: i64) -> FlatlineStage {
        let g: Vec<String> = group_by.iter().map(|k| k.to_string()).collect();
        let templates = AlertTemplates::compile(
            &AlertConfig::default(),
            DEFAULT_TITLE,
            DEFAULT_SUMMARY,
            "p",
            "quiet",
        )
        .unwrap();
        FlatlineStage::new(
            GroupBy::parse(&g).unwrap(),
            chrono::Duration::seconds(after),
            templates,
            100,
        )
    }

    fn alerts(out: &[Arc<Event>]) -> Vec<Alert> {
        out.iter().map(|e| e.alert().unwrap().clone()).collect()
    }

    #[test]
    fn a_key_fires_after_exactly_after_and_resolves_when_it_comes_back() {
        let mut s = stage(&["host"], 60);
        let mut out = Vec::new();
        s.process(ev(json!({"host": "a"}), 0), &mut out);
        s.process(ev(json!({"host": "b"}), 30), &mut out);
        assert!(out.is_empty(), "watched events are not handed on");
        s.tick(t(59), &mut out);
        assert!(out.is_empty());
        s.tick(t(60), &mut out);
        let got = alerts(&out);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status, AlertStatus::Firing);
        assert_eq!(got[0].group_key, "host=a");
        assert_eq!(got[0].group, json!({"host": "a"}));
        assert_eq!(got[0].value, 60.0);
        assert_eq!(got[0].threshold, 60.0);
        assert_eq!(got[0].unit.as_deref(), Some("s"));
        assert_eq!(
            got[0].window,
            AlertWindow {
                start: t(0),
                end: t(60)
            }
        );
        assert_eq!(got[0].samples.len(), 1);
        assert_eq!(got[0].samples[0].value(), json!({"host": "a"}));
        assert_eq!(got[0].title, "No events from host=a for 1m");
        assert_eq!(out[0].meta.time, t(60));
        let firing_id = got[0].id.clone();

        // Still quiet: no repeat. `b` reaches its `after`.
        out.clear();
        s.tick(t(90), &mut out);
        s.tick(t(500), &mut out);
        let got = alerts(&out);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].group_key.as_str(), got[0].status),
            ("host=b", AlertStatus::Firing)
        );

        // `a` comes back: resolved, then watched again.
        out.clear();
        s.process(ev(json!({"host": "a", "n": 2}), 600), &mut out);
        let got = alerts(&out);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status, AlertStatus::Resolved);
        assert_eq!(got[0].group_key, "host=a");
        assert_eq!(
            got[0].window,
            AlertWindow {
                start: t(0),
                end: t(600)
            }
        );
        assert_eq!(got[0].value, 600.0);
        assert_eq!(got[0].title, "Events again from host=a after 10m quiet");
        assert_eq!(
            got[0].id, firing_id,
            "the resolution closes the episode the firing alert opened"
        );

        out.clear();
        s.process(ev(json!({"host": "a"}), 610), &mut out);
        assert!(out.is_empty(), "no second resolve");
        s.tick(t(669), &mut out);
        assert!(out.is_empty());
        s.tick(t(670), &mut out);
        let got = alerts(&out);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].group_key.as_str(), got[0].status),
            ("host=a", AlertStatus::Firing)
        );
        assert_eq!((s.state.fired, s.state.resolved), (3, 1));
    }

    #[test]
    fn a_whole_input_that_never_sends_fires_from_the_first_tick() {
        let mut s = stage(&[], 300);
        let mut out = Vec::new();
        s.tick(t(100), &mut out);
        s.tick(t(399), &mut out);
        assert!(out.is_empty());
        s.tick(t(400), &mut out);
        let got = alerts(&out);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status, AlertStatus::Firing);
        assert_eq!(got[0].group_key, "");
        assert_eq!(
            got[0].window,
            AlertWindow {
                start: t(100),
                end: t(400)
            }
        );
        assert!(got[0].samples.is_empty());
        assert_eq!(got[0].title, "No events for 5m");

        out.clear();
        s.process(ev(json!({"x": 1}), 450), &mut out);
        s.process(ev(json!({"x": 2}), 460), &mut out);
        let got = alerts(&out);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status, AlertStatus::Resolved);
        assert_eq!(got[0].value, 350.0);
    }

    #[test]
    fn missing_and_empty_keys_are_watched_apart() {
        let mut s = stage(&["host"], 10);
        let mut out = Vec::new();
        s.process(ev(json!({"host": ""}), 0), &mut out);
        s.process(ev(json!({}), 5), &mut out);
        s.tick(t(10), &mut out);
        let keys: Vec<String> = alerts(&out).into_iter().map(|a| a.group_key).collect();
        assert_eq!(keys, vec!["host=\"\""]);
        out.clear();
        s.tick(t(15), &mut out);
        let keys: Vec<String> = alerts(&out).into_iter().map(|a| a.group_key).collect();
        assert_eq!(keys, vec!["host=<missing>"]);
    }

    #[test]
    fn last_seen_and_firing_survive_a_restart() {
        let mut s = stage(&["host"], 60);
        let mut out = Vec::new();
        s.process(ev(json!({"host": "a"}), 0), &mut out);
        s.process(ev(json!({"host": "b"}), 50), &mut out);
        s.tick(t(60), &mut out);
        assert_eq!(out.len(), 1);
        let saved = crate::node::snapshot_text(&s).unwrap();

        let mut again = stage(&["host"], 60);
        again.restore("p.quiet", &saved);
        out.clear();
        again.tick(t(110), &mut out);
        let got = alerts(&out);
        assert_eq!(got.len(), 1, "a already fired; b fires now");
        assert_eq!(got[0].group_key, "host=b");
        assert_eq!(got[0].samples[0].value(), json!({"host": "b"}));
        out.clear();
        again.process(ev(json!({"host": "a"}), 120), &mut out);
        assert_eq!(alerts(&out)[0].status, AlertStatus::Resolved);

        let mut other = stage(&["site"], 60);
        other.restore("p.quiet", &saved);
        out.clear();
        other.tick(t(1000), &mut out);
        assert!(out.is_empty(), "state reset: nothing watched");
    }
}
