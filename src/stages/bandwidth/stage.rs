//! The running `bandwidth` stage.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::{BandwidthConfig, Mode};
use super::measure::{Counters, Measured, Measurer};
use crate::event::flow_id::{FlowId, FlowMap};
use crate::event::{AlertWindow, Event, Timestamp};
use crate::node::internal_event::{
    FlowNotMeasured, InternalEvent, KeysEvicted, LateEvent, Lateness, Unmeasurable,
};
use crate::node::{NodeCounters, NodeError, Snapshot, Stage};
use crate::stages::alerting::{AlertTemplates, GroupBy, SampleBudget, SampleSet};
use crate::stages::episode::{Book, Episode, EpisodeCounts, Reporter, open_keys};
use crate::stages::keys::KeyMap;
use crate::stages::window::{Fired, KeyWindow, Watermark, minus, write_key};

/// Bytes in a MiB.
pub const MIB: f64 = 1_048_576.0;
/// Bits per second in a Mbps.
pub const MBPS: f64 = 1_000_000.0;

/// One flow's latest rate in a group's window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct FlowRate {
    t: Timestamp,
    bps: f64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    e: bool,
    #[serde(skip)]
    seq: u64,
}

/// A group's flows with their latest rates in `(newest - W, newest]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "SavedRateWindow")]
struct RateWindow {
    #[serde(rename = "flow_ids")]
    flows: FlowMap<FlowRate>,
    #[serde(skip)]
    order: BTreeMap<(Timestamp, u64), FlowId>,
    #[serde(skip)]
    seq: u64,
    #[serde(skip)]
    sum: f64,
    #[serde(skip)]
    estimates: usize,
    newest: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fired: Option<Timestamp>,
    samples: SampleSet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    episode: Option<Box<Episode>>,
}

/// A [`RateWindow`] as saved: its flows by id (`flow_ids`), or as vigil saved them before
/// flow ids, by flow key (`flows`; each key read as its id).
#[derive(Deserialize)]
struct SavedRateWindow {
    #[serde(default)]
    flow_ids: FlowMap<FlowRate>,
    #[serde(default)]
    flows: HashMap<String, FlowRate>,
    newest: Option<Timestamp>,
    #[serde(default)]
    fired: Option<Timestamp>,
    samples: SampleSet,
    #[serde(default)]
    episode: Option<Box<Episode>>,
}

impl From<SavedRateWindow> for RateWindow {
    fn from(s: SavedRateWindow) -> RateWindow {
        RateWindow {
            flows: with_keys_as_ids(s.flow_ids, s.flows),
            newest: s.newest,
            fired: s.fired,
            samples: s.samples,
            episode: s.episode,
            ..RateWindow::default()
        }
    }
}

/// `by_id` with the entries of `by_key` (flows saved by key) added under their ids.
fn with_keys_as_ids<V>(mut by_id: FlowMap<V>, by_key: HashMap<String, V>) -> FlowMap<V> {
    by_id.reserve(by_key.len());
    by_id.extend(by_key.into_iter().map(|(k, v)| (FlowId::of(&k), v)));
    by_id
}

crate::stages::episode::episode_window!(RateWindow, |w| {
    w.order
        .iter()
        .map(|((t, _), k)| (*t, w.flows.get(k).map_or(0.0, |f| f.bps)))
});

impl RateWindow {
    fn recompute(&mut self) {
        self.order.clear();
        self.sum = 0.0;
        self.estimates = 0;
        self.seq = 0;
        for (k, f) in &mut self.flows {
            self.seq += 1;
            f.seq = self.seq;
            self.order.insert((f.t, f.seq), *k);
            self.sum += f.bps;
            self.estimates += usize::from(f.e);
        }
    }

    fn late_for_key(&self, t: Timestamp) -> bool {
        self.fired.is_some_and(|f| t < f)
    }

    fn expired(&self, cutoff: Timestamp) -> bool {
        self.newest.is_none_or(|n| n <= cutoff)
    }

    /// Sets `flow`'s latest rate (unless the flow already has a later one) and evicts
    /// flows whose latest rate slid out of the window.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        flow: FlowId,
        t: Timestamp,
        bps: f64,
        estimate: bool,
        w: chrono::Duration,
        event: &Event,
        samples: &mut SampleBudget,
    ) {
        if self.newest.is_none_or(|n| t > n) {
            self.newest = Some(t);
        }
        self.seq += 1;
        let seq = self.seq;
        let fresh = FlowRate {
            t,
            bps,
            e: estimate,
            seq,
        };
        match self.flows.get_mut(&flow) {
            Some(f) if t < f.t => return,
            Some(f) => {
                self.order.remove(&(f.t, f.seq));
                self.sum -= f.bps;
                self.estimates -= usize::from(f.e);
                *f = fresh;
            }
            None => {
                self.flows.insert(flow, fresh);
            }
        }
        self.order.insert((t, seq), flow);
        self.sum += bps;
        self.estimates += usize::from(estimate);
        self.samples.offer(event, samples);
        self.evict(w);
    }

    fn evict(&mut self, w: chrono::Duration) {
        let Some(n) = self.newest else { return };
        self.evict_through(minus(n, w));
    }

    fn evict_through(&mut self, cutoff: Timestamp) {
        while let Some(entry) = self.order.first_entry() {
            if entry.key().0 > cutoff {
                break;
            }
            let key = entry.remove();
            if let Some(f) = self.flows.remove(&key) {
                self.sum -= f.bps;
                self.estimates -= usize::from(f.e);
            }
        }
        self.samples.evict_through(cutoff);
        if self.flows.is_empty() {
            self.sum = 0.0;
        }
    }

    fn reached(&mut self, threshold: f64) -> bool {
        if self.sum >= threshold * (1.0 + 1e-9) {
            return true;
        }
        if self.sum < threshold * (1.0 - 1e-9) {
            return false;
        }
        self.sum = self.flows.values().map(|f| f.bps).sum();
        self.sum >= threshold
    }

    fn fire(&mut self, w: chrono::Duration) -> Fired {
        let end = self.newest.unwrap_or(Timestamp::MIN_UTC);
        let fired = Fired {
            sum: self.flows.values().map(|f| f.bps).sum(),
            window: AlertWindow {
                start: minus(end, w),
                end,
            },
            samples: self.samples.take(),
            estimate: (self.estimates > 0).then_some(crate::stages::alerting::LOWER_BOUND),
        };
        self.flows.clear();
        self.order.clear();
        self.sum = 0.0;
        self.estimates = 0;
        self.fired = Some(end);
        fired
    }
}

/// Counters of what the stage skipped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Skipped {
    /// Records whose byte counters were both 0 or absent.
    pub unmeasured: u64,
    /// Lifetime observations older than the flow's previous one.
    pub stale: u64,
    /// Lifetime observations identical to the flow's previous one.
    pub duplicates: u64,
}

/// See [`BandwidthConfig`].
pub struct BandwidthStage {
    mode: Mode,
    window: chrono::Duration,
    group_by: GroupBy,
    reporter: Reporter,
    shape: Value,
    measurer: Measurer,
    volume: KeyMap<KeyWindow>,
    rate: KeyMap<RateWindow>,
    /// Open episodes and their counters.
    book: Book,
    /// Samples the windows keep.
    budget: SampleBudget,
    /// Resolutions of episodes left open by a state this stage did not restore.
    orphans: Vec<Arc<Event>>,
    watermark: Watermark,
    skipped: Skipped,
    key_buf: String,
    /// The flow key of the event at hand (reused), hashed into its [`FlowId`].
    flow_buf: String,
    max_keys: usize,
    /// Where what is set aside (late events, evicted keys) is counted.
    counters: Arc<NodeCounters>,
    /// The node's id, `pipeline.node`, for the log.
    id: Arc<str>,
}

/// What [`BandwidthStage::snapshot`] saves (borrowed form).
#[derive(Serialize)]
struct SavedRef<'a> {
    shape: &'a Value,
    watermark: &'a Watermark,
    skipped: &'a Skipped,
    episodes: &'a EpisodeCounts,
    flow_ids: &'a FlowMap<Counters>,
    volume: &'a KeyMap<KeyWindow>,
    rate: &'a KeyMap<RateWindow>,
}

/// What [`BandwidthStage::snapshot`] saved.
#[derive(Deserialize)]
struct Saved {
    shape: Value,
    watermark: Watermark,
    #[serde(default)]
    skipped: Skipped,
    #[serde(default)]
    episodes: EpisodeCounts,
    /// Last counters by flow id.
    #[serde(default)]
    flow_ids: FlowMap<Counters>,
    /// Last counters by flow key, as vigil saved them before flow ids (read, never
    /// written).
    #[serde(default)]
    flows: HashMap<String, Counters>,
    #[serde(default)]
    volume: KeyMap<KeyWindow>,
    #[serde(default)]
    rate: KeyMap<RateWindow>,
}

impl BandwidthStage {
    /// A stage with empty windows.
    pub fn new(
        cfg: &BandwidthConfig,
        templates: AlertTemplates,
        history_interval: chrono::Duration,
    ) -> Result<Self, NodeError> {
        let group_by = GroupBy::parse(&cfg.group_by).map_err(NodeError::from)?;
        let scale = match cfg.mode {
            Mode::Volume => MIB,
            Mode::Rate => MBPS,
        };
        let threshold = cfg.threshold * scale;
        let window = cfg.window.span();
        let samples_per_window = templates.samples;
        let id = templates.node_id();
        Ok(BandwidthStage {
            mode: cfg.mode,
            window,
            group_by,
            reporter: Reporter {
                templates,
                threshold,
                scale,
                unit: Some(cfg.unit().to_string()),
                window,
                mode: cfg.alert.mode,
                resolve_after: cfg.alert.resolve_after.map_or(window, |d| d.span()),
                history_interval,
            },
            id,
            book: Book::default(),
            budget: SampleBudget::new(samples_per_window),
            orphans: Vec::new(),
            shape: json!({
                "alert_mode": cfg.alert.mode,
                "mode": cfg.mode,
                "group_by": cfg.group_by,
                "direction": cfg.direction,
                "flow_key": cfg.flow_key,
                "counters": [&cfg.bytes_in, &cfg.bytes_out, &cfg.delta_in, &cfg.delta_out, &cfg.delta_ms],
            }),
            measurer: Measurer::new(cfg)?,
            volume: KeyMap::new(),
            rate: KeyMap::new(),
            watermark: Watermark::default(),
            skipped: Skipped::default(),
            key_buf: String::new(),
            flow_buf: String::new(),
            max_keys: cfg.max_keys.max(1),
            counters: Arc::default(),
        })
    }

    /// Counts what the stage sets aside into `counters` (the node's).
    pub fn counting_into(mut self, counters: Arc<NodeCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Resolutions to hand on at the first tick (see [`crate::stages::episode::orphaned`]).
    pub fn close_at_start(&mut self, orphans: Vec<Arc<Event>>) {
        self.orphans = orphans;
    }

    /// Restores a snapshot (its JSON text) when its shape matches this config; `true`
    /// when it did.
    pub fn restore(&mut self, saved: &str, id: &str) -> bool {
        match serde_json::from_str::<Saved>(saved) {
            Ok(s) if s.shape == self.shape => {
                self.watermark = s.watermark;
                self.skipped = s.skipped;
                self.measurer.flows = with_keys_as_ids(s.flow_ids, s.flows);
                self.volume = s.volume;
                self.rate = s.rate;
                self.book.counts = s.episodes;
                self.volume.values_mut().for_each(KeyWindow::recompute);
                self.rate.values_mut().for_each(RateWindow::recompute);
                self.book.open = open_keys(&self.volume);
                self.book.open.extend(open_keys(&self.rate));
                tracing::debug!(stage = %id, "state restored");
                true
            }
            Ok(_) => {
                tracing::info!(
                    stage = %id,
                    "mode, alert.mode, group_by, direction, flow_key or counter fields changed: state reset"
                );
                false
            }
            Err(e) => {
                tracing::warn!(stage = %id, error = %e, "saved state unreadable: state reset");
                false
            }
        }
    }

    /// What was skipped so far.
    pub fn skipped(&self) -> &Skipped {
        &self.skipped
    }

    /// Late events so far.
    pub fn late(&self) -> u64 {
        self.watermark.late
    }

    /// Groups held (windows) and flows whose counters are remembered.
    pub fn held(&self) -> (usize, usize) {
        (
            self.volume.len() + self.rate.len(),
            self.measurer.flows.len(),
        )
    }

    /// What the stage's episodes did so far.
    pub fn episodes(&self) -> EpisodeCounts {
        self.book.counts
    }

    /// Forgets the groups nothing of which can count any more (resolving their
    /// episodes), and the counters of flows not seen since `cutoff`.
    fn sweep(&mut self, cutoff: Timestamp, out: &mut Vec<Arc<Event>>) {
        if !self.book.open.is_empty() {
            let (r, book) = (&self.reporter, &mut self.book);
            let expired = |newest: Option<Timestamp>| newest.is_none_or(|n| n <= cutoff);
            r.close_expired(&mut self.volume, cutoff, |k| expired(k.newest), book, out);
            r.close_expired(&mut self.rate, cutoff, |k| expired(k.newest), book, out);
        }
        self.volume.retain(|_, k| !k.expired(cutoff));
        self.rate.retain(|_, k| !k.expired(cutoff));
        self.measurer.expire(cutoff);
        self.budget.used = self
            .volume
            .values()
            .map(KeyWindow::sample_bytes)
            .sum::<usize>()
            + self.rate.values().map(|r| r.samples.bytes()).sum::<usize>();
    }

    /// Counts and logs a late event: behind the watermark, or (with the key in `key_buf`)
    /// older than its key's window that already alerted.
    fn count_late(&mut self, t: Timestamp, why: Lateness) {
        self.watermark.late += 1;
        let key = matches!(why, Lateness::WindowAlerted).then_some(self.key_buf.as_str());
        LateEvent {
            stage: &self.id,
            time: t,
            key,
            why,
        }
        .emit(&self.counters);
    }

    fn not_measured(&self, why: Unmeasurable) {
        FlowNotMeasured {
            stage: &self.id,
            why,
        }
        .emit(&self.counters);
    }
}

impl Stage for BandwidthStage {
    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
        let t = event.meta.time;
        if self.watermark.observe(t, self.window) {
            self.count_late(t, Lateness::BehindWatermark);
            return;
        }
        let data: &Event = &event;
        let flow = self.measurer.flow_id(&mut self.flow_buf, data);
        let (bytes, span, estimate) = match self.measurer.measure(data, t, flow, self.window) {
            Measured::Bytes {
                bytes,
                span,
                estimate,
            } => (bytes, span, estimate),
            Measured::Unmeasured => {
                self.skipped.unmeasured += 1;
                self.not_measured(Unmeasurable::NoBytes);
                return;
            }
            Measured::Stale => {
                self.skipped.stale += 1;
                self.not_measured(Unmeasurable::Stale);
                return;
            }
            Measured::Duplicate => {
                self.skipped.duplicates += 1;
                self.not_measured(Unmeasurable::Duplicate);
                return;
            }
        };
        write_key(&mut self.key_buf, &self.group_by.0, data);
        let samples = &mut self.budget;
        let group_by = &self.group_by;
        let group = || group_by.group(data.data());
        let (r, book) = (&self.reporter, &mut self.book);
        match self.mode {
            Mode::Volume => {
                let key = self.volume.get_or_default(&self.key_buf);
                if key.late_for_key(t) {
                    self.count_late(t, Lateness::WindowAlerted);
                    return;
                }
                r.before_event(&self.key_buf, key, t, book, out);
                if bytes > 0.0 {
                    key.add(t, bytes, estimate, self.window, &event, samples);
                }
                r.after_event(&self.key_buf, key, &event, group, book, out);
            }
            Mode::Rate => {
                let key = self.rate.get_or_default(&self.key_buf);
                if key.late_for_key(t) {
                    self.count_late(t, Lateness::WindowAlerted);
                    return;
                }
                r.before_event(&self.key_buf, key, t, book, out);
                let bps = Measured::bps(bytes, span);
                key.update(flow, t, bps, estimate, self.window, &event, samples);
                r.after_event(&self.key_buf, key, &event, group, book, out);
            }
        }
        if let Some(cutoff) = self.watermark.sweep_due(self.window) {
            self.sweep(cutoff, out);
        }
        if self.volume.len() + self.rate.len() > self.max_keys {
            let (r, book) = (&self.reporter, &mut self.book);
            let evicted = match self.mode {
                Mode::Volume => r.evict_oldest(&mut self.volume, self.max_keys, book, out),
                Mode::Rate => r.evict_oldest(&mut self.rate, self.max_keys, book, out),
            };
            KeysEvicted {
                stage: &self.id,
                keys: evicted as u64,
                max_keys: self.max_keys,
                warning: crate::stages::episode::EVICTING,
            }
            .emit(&self.counters);
        }
    }

    fn tick(&mut self, now: Timestamp, out: &mut Vec<Arc<Event>>) {
        out.append(&mut self.orphans);
        let cutoff = self.watermark.cutoff(self.window);
        if !self.book.open.is_empty() {
            let (r, book) = (&self.reporter, &mut self.book);
            match self.mode {
                Mode::Volume => r.on_tick(now, cutoff, &mut self.volume, book, out),
                Mode::Rate => r.on_tick(now, cutoff, &mut self.rate, book, out),
            }
        }
        if let Some(cutoff) = cutoff {
            self.sweep(cutoff, out);
        }
    }

    fn snapshot(&self, max_bytes: u64) -> Option<Snapshot> {
        let saved = SavedRef {
            shape: &self.shape,
            watermark: &self.watermark,
            skipped: &self.skipped,
            episodes: &self.book.counts,
            flow_ids: &self.measurer.flows,
            volume: &self.volume,
            rate: &self.rate,
        };
        Snapshot::write(&saved, max_bytes)
    }
}

impl crate::stages::episode::Resumable for BandwidthStage {
    fn restore(&mut self, saved: &str, id: &str) -> bool {
        BandwidthStage::restore(self, saved, id)
    }

    fn close_at_start(&mut self, orphans: Vec<Arc<Event>>) {
        BandwidthStage::close_at_start(self, orphans);
    }
}
