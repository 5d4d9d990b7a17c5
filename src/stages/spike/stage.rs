//! The running `spike` stage.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::config::{Measure, SpikeConfig};
use crate::event::{AlertWindow, Event, FieldPath, Sample, Timestamp};
use crate::node::internal_event::{
    InternalEvent, KeysEvicted, LateEvent, Lateness, PointsCoarsened,
};
use crate::node::{NodeCounters, NodeError, Snapshot, Stage};
use crate::stages::alerting::{AlertTemplates, GroupBy, SampleBudget, SampleSet};
use crate::stages::episode::{
    AlertMode, Book, Episode, EpisodeCounts, EpisodeWindow, Opening, Reporter, open_keys,
};
use crate::stages::keys::KeyMap;
use crate::stages::series::Series;
use crate::stages::stage_state::{self, SavedField};
use crate::stages::window::{Fired, minus, number, write_key};

/// Relative slack of the ratio comparisons, for sums that are not whole numbers.
const SLACK: f64 = 1e-9;

/// Which way a key spikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Spike {
    /// current ≥ ratio × reference.
    Up,
    /// current ≤ reference / ratio.
    Down,
}

impl Spike {
    fn name(self) -> &'static str {
        match self {
            Spike::Up => "up",
            Spike::Down => "down",
        }
    }
}

/// What decides whether a key spikes: shared by the stage and its windows.
#[derive(Debug)]
pub(super) struct Rule {
    /// The length of each window.
    pub(super) window: chrono::Duration,
    pub(super) ratio: f64,
    pub(super) up: bool,
    pub(super) down: bool,
    pub(super) min_reference: f64,
    pub(super) min_current: f64,
}

impl Rule {
    /// The spike `current` against `reference` makes, if one that alerts.
    pub(super) fn spike(&self, current: f64, reference: f64) -> Option<Spike> {
        if reference < self.min_reference {
            return None;
        }
        if self.up
            && current > 0.0
            && current >= self.min_current
            && current >= self.ratio * reference * (1.0 - SLACK)
        {
            return Some(Spike::Up);
        }
        if self.down && reference > 0.0 && current <= reference / self.ratio * (1.0 + SLACK) {
            return Some(Spike::Down);
        }
        None
    }

    /// The threshold of a spike against `reference`.
    fn threshold(&self, spike: Spike, reference: f64) -> f64 {
        match spike {
            Spike::Up => reference * self.ratio,
            Spike::Down => reference / self.ratio,
        }
    }
}

/// One key's two windows: its points over `(at − 2·window, at]`, the reference window's
/// first (`points[..split]`, at or before `at − window`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct SpikeWindow {
    points: Series<f64>,
    /// The end the key was measured at last.
    at: Timestamp,
    /// While the key warms up: the time from which its history is known (its windows
    /// are measured from `since + 2·window` on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<Timestamp>,
    /// The key's newest event time.
    newest: Option<Timestamp>,
    /// The key's group, for an episode opened at a tick.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    group: Vec<SavedField>,
    /// Samples of the current window.
    samples: SampleSet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    episode: Option<Box<Episode>>,
    /// The spike of the open episode (set just before it opens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spike: Option<Spike>,
    /// Points in the reference window.
    #[serde(skip)]
    split: usize,
    /// The reference window's count or sum.
    #[serde(skip)]
    reference: f64,
    /// The current window's count or sum.
    #[serde(skip)]
    current: f64,
    /// The stage's rule (set when the window is made or restored).
    #[serde(skip)]
    rule: Option<Arc<Rule>>,
}

impl SpikeWindow {
    fn window(&self) -> chrono::Duration {
        self.rule
            .as_ref()
            .map_or_else(chrono::Duration::zero, |r| r.window)
    }

    /// Sorts out the split and both sums from the points and `at` (after a restore or a
    /// coarsening); drops points that can count no more.
    fn recompute(&mut self) {
        let w = self.window();
        let gone = minus(self.at, w + w);
        while self.points.front().is_some_and(|p| p.t <= gone) {
            self.points.pop_front();
        }
        let boundary = minus(self.at, w);
        self.split = self.points.iter().take_while(|p| p.t <= boundary).count();
        self.reference = self.points.iter().take(self.split).map(|p| p.v).sum();
        self.current = self.points.from(self.split).map(|p| p.v).sum();
    }

    /// The next instant after `at` at which the windows change with no event: a point
    /// moves to the reference window, one leaves it, or the key's warm-up ends.
    fn next_change(&self) -> Option<Timestamp> {
        let w = self.window();
        let moves = self.points.get(self.split).map(|p| p.t + w);
        let leaves = (self.split > 0)
            .then(|| self.points.front().map(|p| p.t + w + w))
            .flatten();
        let warm = self.since.map(|s| s + w + w).filter(|t| *t > self.at);
        [moves, leaves, warm].into_iter().flatten().min()
    }

    /// Moves the windows to the next instant at or before `to` at which they change and
    /// returns it; with none left, moves them to `to` (when later) and returns `None`.
    fn step(&mut self, to: Timestamp) -> Option<Timestamp> {
        let w = self.window();
        let Some(instant) = self.next_change().filter(|c| *c <= to) else {
            if to > self.at {
                self.at = to;
                self.samples.evict_through(minus(to, w));
            }
            return None;
        };
        self.at = instant;
        let boundary = minus(instant, w);
        while let Some(p) = self.points.get(self.split).filter(|p| p.t <= boundary) {
            self.current -= p.v;
            self.reference += p.v;
            self.split += 1;
        }
        let gone = minus(boundary, w);
        while self.split > 0 && self.points.front().is_some_and(|p| p.t <= gone) {
            if let Some(p) = self.points.pop_front() {
                self.reference -= p.v;
            }
            self.split -= 1;
        }
        // Sums of fractions leave traces: an empty window is exactly 0.
        if self.split == 0 {
            self.reference = 0.0;
        }
        if self.split == self.points.len() {
            self.current = 0.0;
        }
        // Warm: the reference window lies wholly in the known history.
        if self.since.is_some_and(|s| s <= gone) {
            self.since = None;
        }
        self.samples.evict_through(boundary);
        Some(instant)
    }

    /// The spike that holds at `at`, if the key is warm and one does.
    fn holds(&self) -> Option<Spike> {
        let w = self.window();
        if self.since.is_some_and(|s| minus(self.at, w + w) < s) {
            return None;
        }
        self.rule.as_ref()?.spike(self.current, self.reference)
    }

    /// Counts `v` at `t` (inside the two windows: after `at − 2·window`).
    fn add(&mut self, t: Timestamp, v: f64) {
        let before = self.points.len();
        self.points.add(t, v);
        if t <= minus(self.at, self.window()) {
            self.reference += v;
            if self.points.len() > before {
                self.split += 1;
            }
        } else {
            self.current += v;
        }
        if self.newest.is_none_or(|n| t > n) {
            self.newest = Some(t);
        }
    }

    /// Coarsens the points if there are too many; how many were merged away.
    fn bound(&mut self) -> usize {
        if !self.points.too_long() {
            return 0;
        }
        let w = self.window();
        let merged = self.points.coarsen(minus(self.at, w), w + w);
        self.recompute();
        merged
    }

    /// Whether nothing of the key can count any more and it has no episode.
    fn spent(&self) -> bool {
        self.points.is_empty() && self.episode.is_none()
    }
}

impl EpisodeWindow for SpikeWindow {
    fn episode_mut(&mut self) -> &mut Option<Box<Episode>> {
        &mut self.episode
    }

    fn episode(&self) -> Option<&Episode> {
        self.episode.as_deref()
    }

    /// The current window's count or sum.
    fn total(&self) -> f64 {
        self.current
    }

    /// Whether a spike that alerts holds (the threshold is not used: it follows the
    /// reference).
    fn reached(&mut self, _threshold: f64) -> bool {
        self.holds().is_some()
    }

    /// Moves the windows on to end at `cutoff + window` (the stage evaluates each
    /// instant on the way itself: this only moves them).
    fn slide_to(&mut self, cutoff: Timestamp) {
        let to = cutoff + self.window();
        while self.step(to).is_some() {}
    }

    fn newest(&self) -> Option<Timestamp> {
        self.newest
    }

    fn estimate(&self) -> Option<&'static str> {
        None
    }

    fn samples(&self, n: usize) -> Vec<Sample> {
        self.samples.copies(n)
    }

    /// A one-off report of the current window (the windows are kept: `spike` has no
    /// `each_crossing` mode).
    fn fire(&mut self, window: chrono::Duration) -> Fired {
        Fired {
            sum: self.current,
            window: AlertWindow {
                start: minus(self.at, window),
                end: self.at,
            },
            samples: self.samples.copies(usize::MAX),
            estimate: None,
        }
    }

    /// Moving on to `cutoff + window`, the first instant at which no spike holds.
    fn ended_by(
        &mut self,
        cutoff: Timestamp,
        _threshold: f64,
        window: chrono::Duration,
    ) -> Option<Timestamp> {
        let to = cutoff + window;
        while let Some(instant) = self.step(to) {
            if self.holds().is_none() {
                return Some(instant);
            }
        }
        None
    }

    /// The reference × ratio of an up-spike, the reference / ratio of a down-spike.
    fn report_threshold(&self, stage: f64) -> f64 {
        match (self.spike, &self.rule) {
            (Some(s), Some(rule)) => rule.threshold(s, self.reference),
            _ => stage,
        }
    }

    /// `direction` and `reference`.
    fn alert_fields(&self) -> Map<String, Value> {
        let mut f = Map::new();
        if let Some(s) = self.spike {
            f.insert("direction".into(), json!(s.name()));
        }
        f.insert("reference".into(), json!(self.reference));
        f
    }
}

/// The stage's clock: the end every key is measured up to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Clock {
    /// Where the clock is (it never goes back).
    at: Option<Timestamp>,
    /// The newest event time seen (the watermark).
    newest: Option<Timestamp>,
    /// Engine time at which `newest` last moved (not saved: after a restart it counts
    /// from the first tick).
    #[serde(skip)]
    seen_at: Option<Timestamp>,
    /// The first event time counted: the stage's history is known from it.
    since: Option<Timestamp>,
    /// The newest event time of the keys forgotten past `max_keys`: keys made later know
    /// their history only from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    forgotten: Option<Timestamp>,
    /// Late events seen.
    late: u64,
    /// When keys were last swept.
    #[serde(skip)]
    last_sweep: Option<Timestamp>,
}

/// Compares each key's current window with the one before it; see [`SpikeConfig`].
pub struct SpikeStage {
    window: chrono::Duration,
    sum: Option<FieldPath>,
    rule: Arc<Rule>,
    grace: chrono::Duration,
    group_by: GroupBy,
    reporter: Reporter,
    shape: Value,
    keys: KeyMap<SpikeWindow>,
    book: Book,
    budget: SampleBudget,
    orphans: Vec<Arc<Event>>,
    clock: Clock,
    /// The earliest instant at which some key's windows change with no event (its
    /// [`SpikeWindow::next_change`]), or earlier: ticks before it need not look at the
    /// keys. `MIN_UTC`: unknown.
    due: Timestamp,
    skipped: u64,
    coarsened: u64,
    key_buf: String,
    max_keys: usize,
    counters: Arc<NodeCounters>,
    id: Arc<str>,
}

/// What [`SpikeStage::snapshot`] saves (borrowed form).
#[derive(Serialize)]
struct SavedRef<'a> {
    shape: &'a Value,
    clock: &'a Clock,
    skipped: u64,
    coarsened: u64,
    episodes: &'a EpisodeCounts,
    keys: &'a KeyMap<SpikeWindow>,
}

/// What [`SpikeStage::snapshot`] saved.
#[derive(Deserialize)]
struct Saved {
    shape: Value,
    clock: Clock,
    #[serde(default)]
    skipped: u64,
    #[serde(default)]
    coarsened: u64,
    #[serde(default)]
    episodes: EpisodeCounts,
    keys: KeyMap<SpikeWindow>,
}

/// Moves `w` (of `key`) on to `to`, settling its episode at each instant its windows
/// change on the way (engine time `now`).
fn catch_up(
    reporter: &Reporter,
    key: &str,
    w: &mut SpikeWindow,
    to: Timestamp,
    now: Timestamp,
    book: &mut Book,
    out: &mut Vec<Arc<Event>>,
) {
    while w.step(to).is_some() {
        settle(reporter, key, w, now, None, book, out);
    }
}

/// After `w`'s windows changed at `w.at` (by `event`, when one did): opens, updates,
/// turns or closes the key's episode.
fn settle(
    reporter: &Reporter,
    key: &str,
    w: &mut SpikeWindow,
    now: Timestamp,
    event: Option<&Event>,
    book: &mut Book,
    out: &mut Vec<Arc<Event>>,
) {
    let holds = w.holds();
    let open = w.episode.is_some().then_some(w.spike).flatten();
    match (open, holds) {
        (None, None) => {}
        (Some(was), Some(is)) if was == is => {
            if let Some(e) = event {
                reporter.update(w, e, book);
            }
        }
        (open, holds) => {
            if open.is_some() {
                let end = w.at;
                reporter.close(key, w, end, book, out);
            }
            w.spike = holds;
            if holds.is_some() {
                let opening = Opening {
                    end: w.at,
                    first_seen: w.at,
                    now,
                    group: stage_state::load_group(w.group.clone()),
                    opener: event,
                };
                reporter.open(key, w, opening, book, out);
            }
        }
    }
}

/// Puts alerts made while looking at many keys in time order (key order at one time),
/// so the output does not follow the order of a hash table.
fn in_order(mut made: Vec<Arc<Event>>, out: &mut Vec<Arc<Event>>) {
    made.sort_by(|a, b| {
        let key = |e: &Event| e.alert().map(|a| a.group_key.clone()).unwrap_or_default();
        a.meta
            .time
            .cmp(&b.meta.time)
            .then_with(|| key(a).cmp(&key(b)))
    });
    out.append(&mut made);
}

impl SpikeStage {
    /// A stage with empty windows.
    pub fn new(
        cfg: &SpikeConfig,
        templates: AlertTemplates,
        history_interval: chrono::Duration,
    ) -> Result<Self, NodeError> {
        if !(cfg.ratio.is_finite() && cfg.ratio > 1.0) {
            return Err(NodeError::from(format!(
                "`ratio` must be a number greater than 1, not {}",
                cfg.ratio
            )));
        }
        let sum = match &cfg.measure {
            Measure::Count => None,
            Measure::Sum(field) => Some(
                FieldPath::parse(field)
                    .map_err(|e| NodeError::from(format!("measure.sum: {e}")))?,
            ),
        };
        let group_by = GroupBy::parse(&cfg.group_by).map_err(NodeError::from)?;
        let window = cfg.window.span();
        let samples_per_window = templates.samples;
        let id = templates.node_id();
        let measure = match &cfg.measure {
            Measure::Count => json!("count"),
            Measure::Sum(field) => json!({ "sum": field }),
        };
        Ok(SpikeStage {
            window,
            sum,
            rule: Arc::new(Rule {
                window,
                ratio: cfg.ratio,
                up: cfg.direction.up(),
                down: cfg.direction.down(),
                min_reference: cfg.min_reference.max(0.0),
                min_current: cfg.min_current.max(0.0),
            }),
            grace: cfg.grace.span(),
            group_by,
            reporter: Reporter {
                templates,
                threshold: cfg.ratio,
                scale: 1.0,
                unit: None,
                window,
                mode: AlertMode::Episode,
                resolve_after: window,
                history_interval,
            },
            id,
            shape: json!({
                "window": cfg.window.to_string(),
                "measure": measure,
                "group_by": cfg.group_by,
            }),
            keys: KeyMap::new(),
            book: Book::default(),
            budget: SampleBudget::new(samples_per_window),
            orphans: Vec::new(),
            clock: Clock::default(),
            due: Timestamp::MIN_UTC,
            skipped: 0,
            coarsened: 0,
            key_buf: String::new(),
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

    /// Restores a snapshot (its JSON text) when its shape (`window`, `measure`,
    /// `group_by`) matches this config; `true` when it did.
    pub fn restore(&mut self, saved: &str, id: &str) -> bool {
        match serde_json::from_str::<Saved>(saved) {
            Ok(s) if s.shape == self.shape => {
                self.clock = s.clock;
                self.skipped = s.skipped;
                self.coarsened = s.coarsened;
                self.book.counts = s.episodes;
                self.keys = s.keys;
                for w in self.keys.values_mut() {
                    w.rule = Some(self.rule.clone());
                    // A hand-edited state is put in order too.
                    w.points.normalize();
                    w.recompute();
                    if w.episode.is_none() {
                        w.spike = None;
                    } else if w.spike.is_none() {
                        w.spike = Some(w.holds().unwrap_or(Spike::Up));
                    }
                }
                self.keys.retain(|_, w| !w.spent());
                self.due = Timestamp::MIN_UTC;
                self.book.open = open_keys(&self.keys);
                self.budget.used = self.keys.values().map(|w| w.samples.bytes()).sum();
                tracing::debug!(stage = %id, keys = self.keys.len(), "state restored");
                true
            }
            Ok(_) => {
                tracing::info!(stage = %id, "window, measure or group_by changed: state reset");
                false
            }
            Err(e) => {
                tracing::warn!(stage = %id, error = %e, "saved state unreadable: state reset");
                false
            }
        }
    }

    /// Late events seen so far.
    pub fn late(&self) -> u64 {
        self.clock.late
    }

    /// Events without a usable number at `measure.sum`.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Points merged away to keep keys within their bound.
    pub fn coarsened(&self) -> u64 {
        self.coarsened
    }

    /// Group keys held.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// Where the stage's clock is.
    pub fn clock(&self) -> Option<Timestamp> {
        self.clock.at
    }

    /// What the stage's episodes did so far.
    pub fn episodes(&self) -> EpisodeCounts {
        self.book.counts
    }

    /// Moves every key on to the clock (settling their episodes on the way, at engine
    /// time `now`) and forgets those with nothing left.
    fn catch_up_all(&mut self, now: Timestamp, out: &mut Vec<Arc<Event>>) {
        let Some(at) = self.clock.at else { return };
        let mut made = Vec::new();
        let mut due = Timestamp::MAX_UTC;
        let (reporter, book) = (&self.reporter, &mut self.book);
        self.keys.retain(|key, w| {
            catch_up(reporter, key, w, at, now, book, &mut made);
            if let Some(next) = w.next_change() {
                due = due.min(next);
            }
            !w.spent()
        });
        self.due = due;
        in_order(made, out);
        self.clock.last_sweep = Some(at);
        self.budget.used = self.keys.values().map(|w| w.samples.bytes()).sum();
    }

    /// Keeps at most `max_keys` keys: past it, the least recently seen tenth is forgotten
    /// (keys last seen at the same time go together), their open episodes moved on to
    /// the clock and resolved there (engine time `now`).
    fn evict(&mut self, now: Timestamp, out: &mut Vec<Arc<Event>>) {
        if self.keys.len() <= self.max_keys {
            return;
        }
        let keep = self.max_keys - self.max_keys / 10;
        let excess = self.keys.len() - keep;
        let mut seen: Vec<Option<Timestamp>> = self.keys.values().map(|w| w.newest).collect();
        let (_, nth, _) = seen.select_nth_unstable(excess - 1);
        let last = *nth;
        let at = self.clock.at;
        let mut made = Vec::new();
        let (reporter, book) = (&self.reporter, &mut self.book);
        let before = self.keys.len();
        self.keys.retain(|key, w| {
            if w.newest > last {
                return true;
            }
            if w.episode.is_some() {
                let end = at.unwrap_or(w.at).max(w.at);
                catch_up(reporter, key, w, end, now, book, &mut made);
                if w.episode.is_some() {
                    reporter.close(key, w, end, book, &mut made);
                    w.spike = None;
                }
            }
            false
        });
        in_order(made, out);
        let evicted = before - self.keys.len();
        if let Some(last) = last {
            self.clock.forgotten = Some(self.clock.forgotten.map_or(last, |f| f.max(last)));
        }
        KeysEvicted {
            stage: &self.id,
            keys: evicted as u64,
            max_keys: self.max_keys,
            warning: crate::stages::episode::EVICTING,
        }
        .emit(&self.counters);
        self.budget.used = self.keys.values().map(|w| w.samples.bytes()).sum();
    }
}

impl Stage for SpikeStage {
    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
        let t = event.meta.time;
        let span = self.window + self.window;
        if self.clock.at.is_some_and(|at| t <= minus(at, span)) {
            self.clock.late += 1;
            LateEvent {
                stage: &self.id,
                time: t,
                key: None,
                why: Lateness::BehindWatermark,
            }
            .emit(&self.counters);
            return;
        }
        let v = match &self.sum {
            None => 1.0,
            Some(path) => match path.first_in(&event).and_then(number) {
                Some(v) => v,
                None => {
                    self.skipped += 1;
                    tracing::debug!(stage = %self.id, field = %path.as_str(), "no usable number to sum: skipped");
                    return;
                }
            },
        };
        let now = event.meta.ingest;
        if self.clock.newest.is_none_or(|n| t > n) {
            self.clock.newest = Some(t);
            self.clock.seen_at = Some(now);
        }
        let stage_since = *self.clock.since.get_or_insert(t);
        let at = self.clock.at.map_or(t, |a| a.max(t));
        self.clock.at = Some(at);

        write_key(&mut self.key_buf, &self.group_by.0, &*event);
        let w = self.keys.get_or_default(&self.key_buf);
        if w.rule.is_none() {
            // A new key: its history is known from the stage's, unless keys were
            // forgotten since (it may be one of them).
            w.rule = Some(self.rule.clone());
            w.at = at;
            let since = self
                .clock
                .forgotten
                .map_or(stage_since, |f| f.max(stage_since));
            w.since = (minus(at, span) < since).then_some(since);
            w.group = stage_state::save_group(&self.group_by.group(event.data()));
        }
        let mut made = Vec::new();
        catch_up(
            &self.reporter,
            &self.key_buf,
            w,
            at,
            now,
            &mut self.book,
            &mut made,
        );
        w.add(t, v);
        if t > minus(at, self.window) {
            w.samples.offer(&event, &mut self.budget);
        }
        settle(
            &self.reporter,
            &self.key_buf,
            w,
            now,
            Some(&event),
            &mut self.book,
            &mut made,
        );
        let merged = w.bound();
        if let Some(next) = w.next_change() {
            self.due = self.due.min(next);
        }
        out.append(&mut made);
        if merged > 0 {
            self.coarsened += merged as u64;
            PointsCoarsened {
                stage: &self.id,
                key: &self.key_buf,
                merged,
                first: self.coarsened == merged as u64,
            }
            .emit(&self.counters);
        }
        if self
            .clock
            .last_sweep
            .is_none_or(|s| at >= s.checked_add_signed(span).unwrap_or(Timestamp::MAX_UTC))
        {
            self.catch_up_all(now, out);
        }
        self.evict(now, out);
    }

    fn tick(&mut self, now: Timestamp, out: &mut Vec<Arc<Event>>) {
        out.append(&mut self.orphans);
        let Some(newest) = self.clock.newest else {
            return;
        };
        let seen_at = *self.clock.seen_at.get_or_insert(now);
        let quiet = (now - seen_at - self.grace).max(chrono::Duration::zero());
        let ticked = newest.checked_add_signed(quiet).unwrap_or(newest);
        let at = self.clock.at.map_or(ticked, |a| a.max(ticked));
        let moved = self.clock.at != Some(at);
        self.clock.at = Some(at);
        // Keys are looked at only when one of them changes by now; the others are moved
        // on when they are next looked at (an event, or a change of another key).
        if moved && at >= self.due {
            self.catch_up_all(now, out);
        }
        if !self.book.open.is_empty() {
            let watching: Vec<String> = self.book.open.iter().cloned().collect();
            for key in watching {
                match self.keys.get_mut(&key) {
                    Some(w) => {
                        // Every key's windows are as they were at its `at` up to the
                        // clock (see `due`): measured at the clock.
                        let end = at.max(w.at);
                        self.reporter
                            .report_changed(w, end, now, &mut self.book, out);
                    }
                    None => {
                        self.book.open.remove(&key);
                    }
                }
            }
        }
    }

    fn snapshot(&self, max_bytes: u64) -> Option<Snapshot> {
        let saved = SavedRef {
            shape: &self.shape,
            clock: &self.clock,
            skipped: self.skipped,
            coarsened: self.coarsened,
            episodes: &self.book.counts,
            keys: &self.keys,
        };
        Snapshot::write(&saved, max_bytes)
    }
}

impl crate::stages::episode::Resumable for SpikeStage {
    fn restore(&mut self, saved: &str, id: &str) -> bool {
        SpikeStage::restore(self, saved, id)
    }

    fn close_at_start(&mut self, orphans: Vec<Arc<Event>>) {
        SpikeStage::close_at_start(self, orphans);
    }
}
