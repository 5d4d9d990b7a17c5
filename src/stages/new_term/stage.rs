//! The running `new_term` stage.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::NewTermConfig;
use super::terms::{Evicted, Millis, Sighting, TermStore};
use super::warm_up::{HistoryFeed, HistoryMsg, Malformed, WarmUpError, WarmUpMark, read_records};
use crate::event::{AlertStatus, AlertWindow, Event, FieldPath, Sample, Timestamp};
use crate::node::internal_event::{
    InternalEvent, KeysEvicted, RecordSetAside, RejectedRotated, TermFieldMissing, TermsEvicted,
};
use crate::node::{NodeCounters, NodeError, Snapshot, Stage};
use crate::stages::alerting::{AlertTemplates, Finding, GroupBy};
use crate::stages::keys::KeyMap;
use crate::stages::values::{PART_SEPARATOR, ValueHasher, shown_value};
use crate::stages::window::write_key;
use crate::store::rejected::{RejectedLog, RejectedRecord};

/// Alerts on values new for their key; see [`NewTermConfig`].
pub struct NewTermStage {
    field: Vec<FieldPath>,
    tuple: bool,
    group_by: GroupBy,
    learn: chrono::Duration,
    forget_after: Option<chrono::Duration>,
    max_terms: usize,
    max_total_terms: usize,
    max_keys: usize,
    templates: AlertTemplates,
    /// What the state means: `field` and `group_by`.
    shape: Value,
    hasher: ValueHasher,
    store: TermStore,
    /// Event time of the first event seen: the learn period's start.
    learn_start: Option<Timestamp>,
    /// The newest event time seen.
    newest: Option<Timestamp>,
    /// The earliest time values were learned from (the first event, or an older warm-up
    /// record).
    since: Option<Timestamp>,
    /// The warm-up file the state holds.
    warmed: Option<WarmUpMark>,
    /// The PCE history the state holds ([`super::PceWarmUp`]'s mark).
    pce_warmed: Option<String>,
    /// The PCE history being read, and its mark: until it is read, values are learned and
    /// none alerts.
    history: Option<(HistoryFeed, String)>,
    counts: Counts,
    /// The newest event time at the last sweep of forgotten values.
    last_sweep: Option<Timestamp>,
    /// Bounds that evicted since the stage started (for the first warning of each).
    evicted_under_max_terms: bool,
    evicted_under_max_total: bool,
    key_buf: String,
    value_buf: String,
    counters: Arc<NodeCounters>,
    /// The node's id, `pipeline.node`, for the log.
    id: Arc<str>,
}

/// What the stage did so far (kept in its state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// New values alerted on.
    #[serde(default)]
    pub alerted: u64,
    /// New values learned silently in the learn period.
    #[serde(default)]
    pub learned: u64,
    /// New values learned from warm-up files and the PCE's history.
    #[serde(default)]
    pub warmed: u64,
    /// Events without the field (missing or null).
    #[serde(default)]
    pub missing: u64,
    /// Values forgotten after `forget_after`.
    #[serde(default)]
    pub forgotten: u64,
    /// Values evicted to keep the bounds (those of evicted keys included).
    #[serde(default)]
    pub evicted: u64,
}

/// What [`NewTermStage::snapshot`] saves (borrowed form).
#[derive(Serialize)]
struct SavedRef<'a> {
    shape: &'a Value,
    hasher: &'a ValueHasher,
    learn_start: Option<Timestamp>,
    newest: Option<Timestamp>,
    since: Option<Timestamp>,
    warmed: &'a Option<WarmUpMark>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pce_warmed: &'a Option<String>,
    counts: &'a Counts,
    keys: &'a KeyMap<super::terms::TermKey>,
}

/// What [`NewTermStage::snapshot`] saved.
#[derive(Deserialize)]
struct Saved {
    shape: Value,
    hasher: ValueHasher,
    #[serde(default)]
    learn_start: Option<Timestamp>,
    #[serde(default)]
    newest: Option<Timestamp>,
    #[serde(default)]
    since: Option<Timestamp>,
    #[serde(default)]
    warmed: Option<WarmUpMark>,
    #[serde(default)]
    pce_warmed: Option<String>,
    #[serde(default)]
    counts: Counts,
    keys: KeyMap<super::terms::TermKey>,
}

/// What a warm-up learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmUpSummary {
    /// Records read.
    pub records: u64,
    /// Values new to the stage.
    pub learned: u64,
    /// Records without the field.
    pub missing: u64,
    /// Lines or items that were not records (set aside).
    pub malformed: u64,
}

fn millis(t: Timestamp) -> Millis {
    t.timestamp_millis()
}

fn minus(t: Timestamp, d: chrono::Duration) -> Timestamp {
    t.checked_sub_signed(d).unwrap_or(Timestamp::MIN_UTC)
}

impl NewTermStage {
    /// A stage that knows no value yet.
    pub fn new(cfg: &NewTermConfig, templates: AlertTemplates) -> Result<Self, NodeError> {
        let field = cfg.field.parse().map_err(NodeError::from)?;
        let group_by = GroupBy::parse(&cfg.group_by).map_err(NodeError::from)?;
        let id = templates.node_id();
        Ok(NewTermStage {
            field,
            tuple: cfg.field.is_tuple(),
            group_by,
            learn: cfg.learn.span(),
            forget_after: cfg
                .forget_after
                .as_ref()
                .map(crate::time::Duration::span)
                .filter(|d| *d > chrono::Duration::zero()),
            max_terms: cfg.max_terms.max(1),
            max_total_terms: cfg.max_total_terms.max(1),
            max_keys: cfg.max_keys.max(1),
            templates,
            shape: json!({
                "field": cfg.field.paths(),
                "tuple": cfg.field.is_tuple(),
                "group_by": cfg.group_by,
            }),
            hasher: ValueHasher::random(),
            store: TermStore::default(),
            learn_start: None,
            newest: None,
            since: None,
            warmed: None,
            pce_warmed: None,
            history: None,
            counts: Counts::default(),
            last_sweep: None,
            evicted_under_max_terms: false,
            evicted_under_max_total: false,
            key_buf: String::new(),
            value_buf: String::new(),
            counters: Arc::default(),
            id,
        })
    }

    /// Counts what the stage sets aside into `counters` (the node's).
    pub fn counting_into(mut self, counters: Arc<NodeCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Hashes values under a fixed key instead of a random one (tests and benchmarks
    /// that compare runs; a restored state brings its own key).
    pub fn with_hash_key(mut self, k0: u64, k1: u64) -> Self {
        self.hasher = ValueHasher::with_key(k0, k1);
        self
    }

    /// Restores a snapshot (its JSON text) when its shape (`field`, `group_by`) matches
    /// this config; `true` when it did.
    pub fn restore(&mut self, saved: &str, id: &str) -> bool {
        match serde_json::from_str::<Saved>(saved) {
            Ok(s) if s.shape == self.shape => {
                self.hasher = s.hasher;
                self.learn_start = s.learn_start;
                self.newest = s.newest;
                self.since = s.since;
                self.warmed = s.warmed;
                self.pce_warmed = s.pce_warmed;
                self.counts = s.counts;
                self.store.keys = s.keys;
                self.store.recount();
                // Bounds lowered since the state was saved apply at once.
                self.keep_bounds();
                tracing::debug!(stage = %id, keys = self.store.keys(), values = self.store.total(), "state restored");
                true
            }
            Ok(_) => {
                tracing::info!(stage = %id, "field or group_by changed: the values learned are forgotten and the stage learns again");
                false
            }
            Err(e) => {
                tracing::warn!(stage = %id, error = %e, "saved state unreadable: the stage learns again");
                false
            }
        }
    }

    /// The PCE history the state holds, if any.
    pub(super) fn pce_warmed_from(&self) -> Option<&str> {
        self.pce_warmed.as_deref()
    }

    /// Starts learning the PCE history arriving on `feed` (noted as `mark` once read).
    pub fn read_history(&mut self, feed: HistoryFeed, mark: String) {
        tracing::info!(stage = %self.id, history = %mark, "reading the PCE's history: values are learned, none alerts, until it is read");
        self.history = Some((feed, mark));
    }

    /// Whether the PCE history is still being read.
    pub fn reading_history(&self) -> bool {
        self.history.is_some()
    }

    /// Learns what arrived of the PCE history so far.
    fn take_history(&mut self) {
        let Some((feed, _)) = &mut self.history else {
            return;
        };
        let mut batches = Vec::new();
        let end = loop {
            match feed.try_recv() {
                Ok(HistoryMsg::Events(events)) => batches.push(events),
                Ok(HistoryMsg::Done) => break Some(Ok(())),
                Ok(HistoryMsg::Failed(why)) => break Some(Err(why)),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break None,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    break Some(Err("the reader stopped".to_string()));
                }
            }
        };
        for event in batches.iter().flatten() {
            if self.learn_record(event, event.meta.time) == Some(true) {
                self.counts.warmed += 1;
            }
        }
        let Some(end) = end else {
            return;
        };
        let Some((_, mark)) = self.history.take() else {
            return;
        };
        match end {
            Ok(()) => {
                tracing::info!(stage = %self.id, history = %mark, keys = self.store.keys(), values = self.store.total(), "the PCE's history is learned: new values alert from now on");
                self.pce_warmed = Some(mark);
            }
            Err(why) => {
                tracing::warn!(stage = %self.id, history = %mark, error = %why, "cannot read the PCE's history: going on with what was learned (and the learn period); it is read again at the next start");
            }
        }
    }

    /// The warm-up file the state holds, if any.
    pub(super) fn warmed_from(&self) -> Option<&WarmUpMark> {
        self.warmed.as_ref()
    }

    /// Notes that the state holds warm-up file `mark`.
    pub(super) fn set_warmed_from(&mut self, mark: WarmUpMark) {
        self.warmed = Some(mark);
    }

    /// Learns the values of the records in `path` (never alerting), each as seen at its
    /// time (`time_field`, else the first of `timestamp`, `time` and `@timestamp`, else
    /// `now`). Lines that are not records are counted and written to `rejected`.
    pub fn warm_up(
        &mut self,
        path: &Path,
        time_field: Option<&FieldPath>,
        now: Timestamp,
        rejected: &mut RejectedLog,
    ) -> Result<WarmUpSummary, WarmUpError> {
        let mut summary = WarmUpSummary::default();
        let location = path.display().to_string();
        let id = self.id.clone();
        let counters = self.counters.clone();
        let rotations = rejected.rotations();
        let mut set_aside = |m: Malformed| {
            let r = RejectedRecord {
                time: now,
                source: id.to_string(),
                location: Some(location.clone()),
                line: m.line,
                reason: m.reason,
                raw: m.raw,
            };
            RecordSetAside {
                source: &id,
                location: r.location.as_deref(),
                line: r.line,
                reason: &r.reason,
            }
            .emit(&counters);
            rejected.write(&r);
        };
        let source = self.id.clone();
        let counts = read_records(
            path,
            &source,
            now,
            |record| {
                summary.records += 1;
                let time = match time_field {
                    Some(f) => f
                        .first_in(record)
                        .and_then(|v| crate::event::time_from_field(&v))
                        .unwrap_or(now),
                    None => record.meta.time,
                };
                match self.learn_record(record, time) {
                    Some(true) => summary.learned += 1,
                    Some(false) => {}
                    None => summary.missing += 1,
                }
            },
            &mut set_aside,
        )?;
        rejected.flush();
        RejectedRotated {
            path: rejected.path(),
            rotations: rejected.rotations() - rotations,
        }
        .emit(&self.counters);
        summary.malformed = counts.malformed;
        self.counts.warmed += summary.learned;
        tracing::info!(
            stage = %self.id,
            file = %path.display(),
            records = summary.records,
            learned = summary.learned,
            without_field = summary.missing,
            set_aside = summary.malformed,
            keys = self.store.keys(),
            values = self.store.total(),
            "warm-up file learned"
        );
        if summary.records > 0 && summary.missing == summary.records {
            let paths: Vec<&str> = self.field.iter().map(FieldPath::as_str).collect();
            tracing::warn!(
                stage = %self.id,
                file = %path.display(),
                field = %paths.join(", "),
                "no record of the warm-up file has the field (or every part of the tuple): nothing was learned; write the records as the stage's input events look (a `pce_traffic` flow has `src.labels.app` once the source added it)"
            );
        }
        Ok(summary)
    }

    /// Learns the value of a warm-up record seen at `time`: `Some(true)` if it was new,
    /// `None` if the record has no value.
    fn learn_record(&mut self, record: &Event, time: Timestamp) -> Option<bool> {
        let h = self
            .hasher
            .value_of(&self.field, record, &mut self.value_buf)?;
        write_key(&mut self.key_buf, &self.group_by.0, record);
        if self.since.is_none_or(|s| time < s) {
            self.since = Some(time);
        }
        let (new, evicted) = self
            .store
            .learn(&self.key_buf, h, millis(time), self.max_terms);
        self.evicted_terms(evicted);
        self.keep_bounds();
        Some(new)
    }

    /// Values held, over all keys.
    pub fn values(&self) -> usize {
        self.store.total()
    }

    /// Group keys held.
    pub fn keys(&self) -> usize {
        self.store.keys()
    }

    /// Values held by key `key` (`group_key` text).
    pub fn values_of(&self, key: &str) -> Option<usize> {
        self.store.get(key).map(super::terms::TermKey::len)
    }

    /// What the stage did so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The end of the learn period, once the first event set its start.
    fn learn_end(&self) -> Option<Timestamp> {
        self.learn_start.map(|s| {
            s.checked_add_signed(self.learn)
                .unwrap_or(Timestamp::MAX_UTC)
        })
    }

    /// Reports values evicted from one key under `max_terms`.
    fn evicted_terms(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.counts.evicted += n as u64;
        TermsEvicted {
            stage: &self.id,
            terms: n as u64,
            bound: "max_terms",
            limit: self.max_terms,
            first: !std::mem::replace(&mut self.evicted_under_max_terms, true),
        }
        .emit(&self.counters);
    }

    /// Keeps `max_total_terms` and `max_keys`, reporting what they evicted.
    fn keep_bounds(&mut self) {
        let Evicted { terms, .. } = self.store.bound_total(self.max_total_terms);
        if terms > 0 {
            self.counts.evicted += terms as u64;
            TermsEvicted {
                stage: &self.id,
                terms: terms as u64,
                bound: "max_total_terms",
                limit: self.max_total_terms,
                first: !std::mem::replace(&mut self.evicted_under_max_total, true),
            }
            .emit(&self.counters);
        }
        let Evicted { terms, keys } = self.store.bound_keys(self.max_keys);
        if keys > 0 {
            self.counts.evicted += terms as u64;
            KeysEvicted {
                stage: &self.id,
                keys: keys as u64,
                max_keys: self.max_keys,
                warning: "new_term holds `max_keys` keys: forgetting the least recently seen tenth with their values (they alert again when seen)",
            }
            .emit(&self.counters);
        }
    }

    /// Forgets the values not seen for `forget_after`, at most once per eighth of it of
    /// event time (a value past it is treated as forgotten as soon as it is looked up).
    fn sweep(&mut self, newest: Timestamp) {
        let Some(f) = self.forget_after else {
            return;
        };
        let every = (f / 8).max(chrono::Duration::seconds(1));
        if self.last_sweep.is_some_and(|last| {
            newest < last.checked_add_signed(every).unwrap_or(Timestamp::MAX_UTC)
        }) {
            return;
        }
        self.last_sweep = Some(newest);
        let forgot = self.store.forget_through(millis(minus(newest, f)));
        self.counts.forgotten += forgot as u64;
    }

    /// The alert of value `term_text` new for the key of `event`.
    fn alert(&self, event: &Event, out: &mut Vec<Arc<Event>>) {
        let t = event.meta.time;
        let group = self.group_by.group(event.data());
        let window = AlertWindow { start: t, end: t };
        let mut key = group.key();
        key.push(PART_SEPARATOR);
        key.push_str(&self.value_buf);
        let mut fields = serde_json::Map::new();
        fields.insert("term".into(), shown_value(&self.value_buf, self.tuple));
        fields.insert(
            "learning_since".into(),
            json!(
                self.since
                    .unwrap_or(t)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        );
        let samples = if self.templates.samples > 0 {
            vec![Sample::of(event)]
        } else {
            Vec::new()
        };
        let alert = self.templates.alert(Finding {
            id: Some(self.templates.alert_id(&key, &window)),
            fields,
            ..Finding::once(group, 1.0, 1.0, window, samples, AlertStatus::Firing)
        });
        out.push(self.templates.event(alert));
    }
}

impl Stage for NewTermStage {
    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
        self.take_history();
        let t = event.meta.time;
        if self.learn_start.is_none() {
            self.learn_start = Some(t);
        }
        if self.since.is_none_or(|s| t < s) {
            self.since = Some(t);
        }
        let newest = match self.newest {
            Some(n) if n >= t => n,
            _ => {
                self.newest = Some(t);
                t
            }
        };
        let Some(h) = self
            .hasher
            .value_of(&self.field, &*event, &mut self.value_buf)
        else {
            self.counts.missing += 1;
            TermFieldMissing {
                stage: &self.id,
                time: t,
            }
            .emit(&self.counters);
            return;
        };
        write_key(&mut self.key_buf, &self.group_by.0, &*event);
        let forgotten = self.forget_after.map(|f| millis(minus(newest, f)));
        let (sighting, evicted) = self.store.see(
            &self.key_buf,
            h,
            millis(t),
            millis(newest),
            forgotten,
            self.max_terms,
        );
        self.evicted_terms(evicted);
        if sighting.is_news() {
            let learning = self.history.is_some() || self.learn_end().is_some_and(|end| t < end);
            if learning {
                self.counts.learned += 1;
            } else {
                self.counts.alerted += 1;
                self.alert(&event, out);
            }
            if sighting == Sighting::New {
                self.keep_bounds();
            }
        }
        self.sweep(newest);
    }

    fn tick(&mut self, _now: Timestamp, _out: &mut Vec<Arc<Event>>) {
        self.take_history();
    }

    fn snapshot(&self, max_bytes: u64) -> Option<Snapshot> {
        let saved = SavedRef {
            shape: &self.shape,
            hasher: &self.hasher,
            learn_start: self.learn_start,
            newest: self.newest,
            since: self.since,
            warmed: &self.warmed,
            pce_warmed: &self.pce_warmed,
            counts: &self.counts,
            keys: &self.store.keys,
        };
        Snapshot::write(&saved, max_bytes)
    }
}
