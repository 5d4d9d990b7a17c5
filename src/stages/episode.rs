//! Alert episodes: one alert per rule and group key while its condition holds.
//!
//! A detection stage (`window_count`, `bandwidth`) keeps, beside each key's window, the
//! key's open [`Episode`]. The first time the window reaches the threshold the episode
//! opens and a `firing` alert is reported; while the window stays at or over the
//! threshold the episode is updated in place (its newest time, its count of updates, its
//! samples up to the limit) — no alert is made, nothing is serialised or written; when
//! the window falls below the threshold, or nothing arrived for `resolve_after`, a
//! `resolved` alert closes it. All reports of an episode carry the same alert id.
//!
//! An open episode that changed is reported again (an update: `status: firing`,
//! `updates > 0`, the window's current total as its value) at most once per
//! `history_interval` of the engine's clock, on a tick: that is what keeps the alert
//! history and the sinks' view of it current without a report per event.
//!
//! [`Reporter`] holds what every report needs (templates, threshold, unit) and drives the
//! transitions over any window type that implements [`EpisodeWindow`].

use std::collections::BTreeSet;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::alerting::{AlertTemplates, Finding};
use super::keys::KeyMap;
use super::stage_state::{self, SavedField};
use crate::event::{AlertStatus, AlertWindow, Event, Group, Sample, Timestamp};

/// How a detection stage reports a key that stays over its threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertMode {
    /// One alert per episode: `firing` at the first crossing, updated in place while the
    /// key stays at or over the threshold (reported again at most once per
    /// `history_interval`), `resolved` when its window falls below the threshold or
    /// nothing arrived for `resolve_after`.
    #[default]
    Episode,
    /// ElastAlert's frequency rule: an alert at every crossing, the key's window starting
    /// again empty after each. On busy traffic a low threshold fires again and again —
    /// every alert is made, stored and handed on — so use it only where each crossing is
    /// news.
    EachCrossing,
}

/// The episode of a key whose window is at or over the threshold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Episode {
    /// The alert id, fixed when the episode opened.
    pub id: String,
    /// The group, for reports made on a tick (no event at hand).
    pub group: Vec<SavedField>,
    /// Event time of the crossing.
    pub first_seen: Timestamp,
    /// Newest event time counted while it is open.
    pub last_seen: Timestamp,
    /// In-place updates since it opened.
    pub updates: u64,
    /// Changed since it was last reported.
    #[serde(default)]
    pub dirty: bool,
    /// Engine time of its last report.
    pub reported_at: Timestamp,
    /// Engine time the key's last event arrived (for `resolve_after`).
    pub arrived_at: Timestamp,
    /// The raw events that caused it: those of the window at the crossing, topped up
    /// with later ones to the stage's `alert.samples`.
    #[serde(default)]
    pub samples: Vec<Sample>,
}

/// What a window type offers the episode logic.
pub trait EpisodeWindow {
    /// The key's open episode.
    fn episode_mut(&mut self) -> &mut Option<Box<Episode>>;
    /// The key's open episode, to read.
    fn episode(&self) -> Option<&Episode>;
    /// The window's current total (in the stage's base unit: events, bytes, bits/s).
    fn total(&self) -> f64;
    /// Whether the total reached `threshold` (exactly, near the threshold).
    fn reached(&mut self, threshold: f64) -> bool;
    /// Drops what is at or before `cutoff` (the stage's watermark − window).
    fn slide_to(&mut self, cutoff: Timestamp);
    /// The newest event time of the key.
    fn newest(&self) -> Option<Timestamp>;
    /// Whether the total is an estimate, and of what kind
    /// ([`super::alerting::LOWER_BOUND`], [`super::alerting::APPROXIMATE`]).
    fn estimate(&self) -> Option<&'static str>;
    /// What the window adds to its alerts' `fields` (none unless it says).
    fn alert_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
    /// Copies of up to `n` samples of the events in the window.
    fn samples(&self, n: usize) -> Vec<Sample>;
    /// `each_crossing`: reports the window and starts it again empty.
    fn fire(&mut self, window: chrono::Duration) -> super::window::Fired;
    /// Sliding on to `cutoff + window` with nothing added, the time at which the total
    /// first falls below `threshold`, if it does by then: an entry at `t` leaves the
    /// window at `t + window`.
    fn ended_by(
        &mut self,
        cutoff: Timestamp,
        threshold: f64,
        window: chrono::Duration,
    ) -> Option<Timestamp>;
}

/// Implements [`EpisodeWindow`] for a window type with the fields `episode`, `sum`,
/// `estimates` (of entries that are lower bounds), `newest` and `samples` and the methods
/// `reached(threshold)` and `evict_through(cutoff)`, given an expression of its
/// `(time, weight)` entries in time order (over `$w`, the window).
macro_rules! episode_window {
    ($ty:ty, |$w:ident| $entries:expr) => {
        impl $crate::stages::episode::EpisodeWindow for $ty {
            fn episode_mut(&mut self) -> &mut Option<Box<$crate::stages::episode::Episode>> {
                &mut self.episode
            }
            fn episode(&self) -> Option<&$crate::stages::episode::Episode> {
                self.episode.as_deref()
            }
            fn total(&self) -> f64 {
                self.sum
            }
            fn reached(&mut self, threshold: f64) -> bool {
                <$ty>::reached(self, threshold)
            }
            fn slide_to(&mut self, cutoff: $crate::event::Timestamp) {
                self.evict_through(cutoff);
            }
            fn newest(&self) -> Option<$crate::event::Timestamp> {
                self.newest
            }
            fn estimate(&self) -> Option<&'static str> {
                (self.estimates > 0).then_some($crate::stages::alerting::LOWER_BOUND)
            }
            fn samples(&self, n: usize) -> Vec<$crate::event::Sample> {
                self.samples.copies(n)
            }
            fn fire(&mut self, window: chrono::Duration) -> $crate::stages::window::Fired {
                <$ty>::fire(self, window)
            }
            fn ended_by(
                &mut self,
                cutoff: $crate::event::Timestamp,
                threshold: f64,
                window: chrono::Duration,
            ) -> Option<$crate::event::Timestamp> {
                let $w = self;
                $crate::stages::episode::ended_by($entries, cutoff, threshold, window)
            }
        }
    };
}
pub(crate) use episode_window;

/// [`EpisodeWindow::ended_by`] over `(time, weight)` entries in time order.
pub fn ended_by<I>(
    entries: I,
    cutoff: Timestamp,
    threshold: f64,
    window: chrono::Duration,
) -> Option<Timestamp>
where
    I: Iterator<Item = (Timestamp, f64)> + Clone,
{
    let mut left: f64 = entries.clone().map(|(_, w)| w).sum();
    let mut entries = entries.peekable();
    while let Some((t, w)) = entries.next() {
        if t > cutoff {
            return None;
        }
        left -= w;
        // Entries at the same time leave together.
        if entries.peek().is_some_and(|(next, _)| *next == t) {
            continue;
        }
        if left < threshold * (1.0 - 1e-9) {
            return Some(t + window);
        }
    }
    None
}

/// Everything a stage's reports have in common, and the transitions of its episodes.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// The alert templates.
    pub templates: AlertTemplates,
    /// The threshold in the window's base unit.
    pub threshold: f64,
    /// Divides totals into the unit reported (`MiB`: 1,048,576).
    pub scale: f64,
    /// The unit reported, if not a count.
    pub unit: Option<String>,
    /// The window length.
    pub window: chrono::Duration,
    /// Episode or each crossing.
    pub mode: AlertMode,
    /// Resolve an episode after this long (engine time) without an event of its key.
    pub resolve_after: chrono::Duration,
    /// Report an open, changed episode at most this often (engine time).
    pub history_interval: chrono::Duration,
}

/// What a report says of a window: its total, whether that is an estimate, its fields.
struct Measured {
    total: f64,
    estimate: Option<&'static str>,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Measured {
    fn of<W: EpisodeWindow>(w: &W) -> Measured {
        Measured {
            total: w.total(),
            estimate: w.estimate(),
            fields: w.alert_fields(),
        }
    }
}

/// A stage's open episodes (the keys that have one) and its counters.
#[derive(Debug, Clone, Default)]
pub struct Book {
    /// The keys with an open episode.
    pub open: BTreeSet<String>,
    /// What the episodes did so far.
    pub counts: EpisodeCounts,
}

/// Counters of a stage's episodes (kept in its snapshot).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct EpisodeCounts {
    /// Episodes opened (`firing` reports).
    pub opened: u64,
    /// Reports of open episodes (updates).
    pub reported: u64,
    /// Episodes closed (`resolved` reports).
    pub resolved: u64,
    /// In-place updates that made no report.
    pub updated: u64,
}

impl Reporter {
    /// The alert of a report on `w`'s episode, measured over `(end − window, end]`.
    fn report(
        &self,
        ep: &Episode,
        measured: Measured,
        end: Timestamp,
        status: AlertStatus,
    ) -> Arc<Event> {
        let alert = self.templates.alert(Finding {
            id: Some(ep.id.clone()),
            group: stage_state::load_group(ep.group.clone()),
            value: measured.total / self.scale,
            threshold: self.threshold / self.scale,
            unit: self.unit.clone(),
            estimate: measured.estimate.map(str::to_string),
            fields: measured.fields,
            window: AlertWindow {
                start: super::window::minus(end, self.window),
                end,
            },
            samples: ep.samples.clone(),
            status,
            first_seen: ep.first_seen,
            last_seen: ep.last_seen,
            updates: ep.updates,
            episode: true,
        });
        self.templates.event(alert)
    }

    /// The one-off alert of an `each_crossing` window that fired.
    fn once(&self, fired: super::window::Fired, group: Group) -> Arc<Event> {
        let alert = self.templates.alert(Finding {
            unit: self.unit.clone(),
            estimate: fired.estimate.map(str::to_string),
            fields: fired.fields,
            ..Finding::once(
                group,
                fired.sum / self.scale,
                self.threshold / self.scale,
                fired.window,
                fired.samples,
                AlertStatus::Firing,
            )
        });
        self.templates.event(alert)
    }

    /// After `event` (of group `group`, key `key`) changed `w`: opens, updates or closes
    /// the key's episode — or, in `each_crossing` mode, alerts if the window reached the
    /// threshold and starts it again.
    pub fn after_event<W: EpisodeWindow>(
        &self,
        key: &str,
        w: &mut W,
        event: &Event,
        group: impl FnOnce() -> Group,
        book: &mut Book,
        out: &mut Vec<Arc<Event>>,
    ) {
        if self.mode == AlertMode::EachCrossing {
            if w.reached(self.threshold) {
                let fired = w.fire(self.window);
                out.push(self.once(fired, group()));
            }
            return;
        }
        let t = event.meta.time;
        let now = event.meta.ingest;
        let over = w.reached(self.threshold);
        let samples = self.templates.samples;
        match (w.episode_mut(), over) {
            (Some(ep), true) => {
                ep.last_seen = ep.last_seen.max(t);
                ep.updates += 1;
                ep.dirty = true;
                ep.arrived_at = ep.arrived_at.max(now);
                if ep.samples.len() < samples {
                    let s = Sample::of(event);
                    if !ep.samples.contains(&s) {
                        let at = ep.samples.partition_point(|x| x.time <= s.time);
                        ep.samples.insert(at, s);
                    }
                }
                book.counts.updated += 1;
            }
            (None, true) => {
                let end = w.newest().unwrap_or(t);
                let window = AlertWindow {
                    start: super::window::minus(end, self.window),
                    end,
                };
                let ep = Episode {
                    id: self.templates.alert_id(key, &window),
                    group: stage_state::save_group(&group()),
                    first_seen: t,
                    last_seen: t,
                    updates: 0,
                    dirty: false,
                    reported_at: now,
                    arrived_at: now,
                    samples: {
                        let mut kept = w.samples(samples);
                        // The window kept none (the stage's sample budget was spent): the
                        // event that opened the episode, at least.
                        if kept.is_empty() && samples > 0 {
                            kept.push(Sample::of(event));
                        }
                        kept
                    },
                };
                let measured = Measured::of(w);
                out.push(self.report(&ep, measured, end, AlertStatus::Firing));
                *w.episode_mut() = Some(Box::new(ep));
                book.open.insert(key.to_string());
                book.counts.opened += 1;
            }
            (Some(_), false) => {
                let end = w.newest().unwrap_or(t);
                self.close(key, w, end, book, out);
            }
            (None, false) => {}
        }
    }

    /// Before an event at `t` is added to `w`: closes the key's episode if its window
    /// fell below the threshold before `t`, dated when it did — so the episodes of a
    /// replay are those of the live run, however seldom the clock ticked meanwhile.
    pub fn before_event<W: EpisodeWindow>(
        &self,
        key: &str,
        w: &mut W,
        t: Timestamp,
        book: &mut Book,
        out: &mut Vec<Arc<Event>>,
    ) {
        if self.mode == AlertMode::EachCrossing || w.episode().is_none() {
            return;
        }
        let cutoff = super::window::minus(t, self.window);
        if let Some(end) = w.ended_by(cutoff, self.threshold, self.window) {
            w.slide_to(super::window::minus(end, self.window));
            self.close(key, w, end, book, out);
        }
    }

    /// Closes `w`'s episode with a `resolved` report measured at `end`.
    fn close<W: EpisodeWindow>(
        &self,
        key: &str,
        w: &mut W,
        end: Timestamp,
        book: &mut Book,
        out: &mut Vec<Arc<Event>>,
    ) {
        let measured = Measured::of(w);
        if let Some(ep) = w.episode_mut().take() {
            out.push(self.report(&ep, measured, end, AlertStatus::Resolved));
            book.counts.resolved += 1;
        }
        book.open.remove(key);
    }

    /// A tick at engine time `now` with the stage's event-time `cutoff` (watermark −
    /// window): every open episode whose window fell below the threshold, or whose key was
    /// quiet for `resolve_after`, is resolved; every other one that changed is reported if
    /// its last report is `history_interval` old.
    pub fn on_tick<W: EpisodeWindow>(
        &self,
        now: Timestamp,
        cutoff: Option<Timestamp>,
        keys: &mut KeyMap<W>,
        book: &mut Book,
        out: &mut Vec<Arc<Event>>,
    ) {
        let watching: Vec<String> = book.open.iter().cloned().collect();
        for key in watching {
            let Some(w) = keys.get_mut(&key) else {
                book.open.remove(&key);
                continue;
            };
            if let Some(c) = cutoff {
                if let Some(end) = w.ended_by(c, self.threshold, self.window) {
                    w.slide_to(super::window::minus(end, self.window));
                    self.close(&key, w, end, book, out);
                    continue;
                }
                w.slide_to(c);
            }
            // The window measured: `(cutoff, watermark]`.
            let end = cutoff
                .map(|c| c + self.window)
                .or_else(|| w.newest())
                .unwrap_or(now);
            let Some(ep) = w.episode() else {
                book.open.remove(&key);
                continue;
            };
            if now - ep.arrived_at >= self.resolve_after || !w.reached(self.threshold) {
                self.close(&key, w, end, book, out);
                continue;
            }
            let due = w
                .episode()
                .is_some_and(|ep| ep.dirty && now - ep.reported_at >= self.history_interval);
            if !due {
                continue;
            }
            let measured = Measured::of(w);
            if let Some(ep) = w.episode_mut() {
                ep.dirty = false;
                ep.reported_at = now;
                out.push(self.report(ep, measured, end, AlertStatus::Firing));
                book.counts.reported += 1;
            }
        }
    }

    /// Resolves the episodes of the keys about to be forgotten: those with nothing
    /// after `cutoff` (`expired`), dated when their window fell below the threshold.
    pub fn close_expired<W: EpisodeWindow>(
        &self,
        keys: &mut KeyMap<W>,
        cutoff: Timestamp,
        expired: impl Fn(&W) -> bool,
        book: &mut Book,
        out: &mut Vec<Arc<Event>>,
    ) {
        let closing: Vec<String> = book
            .open
            .iter()
            .filter(|k| keys.get(k).is_some_and(&expired))
            .cloned()
            .collect();
        for key in closing {
            if let Some(w) = keys.get_mut(&key) {
                let end = w
                    .ended_by(cutoff, self.threshold, self.window)
                    .or_else(|| w.newest().map(|n| n + self.window))
                    .unwrap_or(cutoff);
                w.slide_to(super::window::minus(end, self.window));
                self.close(&key, w, end, book, out);
            }
        }
    }
}

/// What a detection stage's first eviction warns (see [`Reporter::evict_oldest`]).
pub const EVICTING: &str = "`max_keys` groups held: forgetting the least recently seen tenth (their open episodes resolved)";

impl Reporter {
    /// Keeps at most `max_keys` keys: past it, the least recently seen tenth is evicted
    /// (keys last seen at the same time go together), their open episodes resolved
    /// first. Returns how many keys were evicted.
    pub fn evict_oldest<W: EpisodeWindow>(
        &self,
        keys: &mut KeyMap<W>,
        max_keys: usize,
        book: &mut Book,
        out: &mut Vec<Arc<Event>>,
    ) -> usize {
        if keys.len() <= max_keys {
            return 0;
        }
        // Evicting a tenth at a time keeps the cost per new key constant.
        let keep = max_keys - max_keys / 10;
        let excess = keys.len() - keep;
        let mut seen: Vec<Option<Timestamp>> = keys.values().map(EpisodeWindow::newest).collect();
        let (_, nth, _) = seen.select_nth_unstable(excess - 1);
        let last = *nth;
        let evicted = |w: &W| w.newest() <= last;
        let cutoff = last.unwrap_or(Timestamp::MIN_UTC);
        if !book.open.is_empty() {
            self.close_expired(keys, cutoff, evicted, book, out);
        }
        let before = keys.len();
        keys.retain(|_, w| !evicted(w));
        before - keys.len()
    }
}

/// The most orphaned episodes closed at a stage's start.
const MAX_ORPHANS: usize = 10_000;

/// For a stage that starts without its saved state (a new `group_by`, a lost snapshot):
/// `resolved` reports of the episodes the alert history still shows open for it, so no
/// sink holds, reminds of, or is muted by an episode nothing will ever close. Handed on
/// at the stage's first tick.
pub fn orphaned(cx: &crate::node::BuildContext) -> Vec<Arc<Event>> {
    if !cx.keep_state {
        return Vec::new();
    }
    let open = match cx
        .store
        .open_episodes_of(&cx.pipeline, &cx.node, MAX_ORPHANS)
    {
        Ok(open) => open,
        Err(e) => {
            tracing::warn!(stage = %cx.id, error = %e, "cannot read the stage's open episodes");
            return Vec::new();
        }
    };
    if !open.is_empty() {
        tracing::info!(stage = %cx.id, episodes = open.len(), "the stage starts without its saved state: its open episodes are resolved");
    }
    open.into_iter()
        .map(|mut a| {
            a.status = AlertStatus::Resolved;
            a.fields.insert(
                "closed".into(),
                "the stage started without its saved state".into(),
            );
            let time = a.last_seen;
            Arc::new(Event::from_alert(a, cx.id.clone(), time))
        })
        .collect()
}

/// The keys of `keys` with an open episode (after a restore).
pub fn open_keys<W: EpisodeWindow>(keys: &KeyMap<W>) -> BTreeSet<String> {
    keys.iter()
        .filter(|(_, w)| w.episode().is_some())
        .map(|(k, _)| k.to_string())
        .collect()
}
