//! Alert episodes: one alert per rule and group key while its condition holds.
//!
//! A detection stage (`window_count`, `bandwidth`, `metric`, `ratio`, `spike`) keeps,
//! beside each key's window, the key's open [`Episode`]. The first time the window reaches the threshold the episode
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
//! transitions over any window type that implements [`EpisodeWindow`]: on events
//! ([`Reporter::after_event`], [`Reporter::before_event`]) and ticks
//! ([`Reporter::on_tick`]) for a window whose condition changes only as events come and
//! go. A stage whose condition also moves with time alone (`spike`: a drop to silence)
//! drives the steps itself — [`Reporter::open`], [`Reporter::update`],
//! [`Reporter::close`], [`Reporter::report_changed`] — and its window may state a
//! threshold and values of its own ([`EpisodeWindow::report_threshold`],
//! [`EpisodeWindow::fields`]).

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
    /// What the window adds to its alerts' `fields` (template variables too: `fields.x`,
    /// and `x` where no common variable has the name), e.g. `ratio`'s `matched` and
    /// `total`. None by default.
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
    /// The threshold a report of the window states, given the stage's: the stage's own,
    /// unless the window's condition sets one that moves (`spike`: the reference × its
    /// ratio).
    fn report_threshold(&self, stage: f64) -> f64 {
        stage
    }
}

/// A window measured for a report: what the alert states.
#[derive(Debug, Clone)]
pub struct Measure {
    /// The value, in the window's base unit.
    pub value: f64,
    /// The threshold it is measured against, in the same unit.
    pub threshold: f64,
    /// Whether the value is an estimate, and of what kind
    /// ([`super::alerting::LOWER_BOUND`], [`super::alerting::APPROXIMATE`]).
    pub estimate: Option<&'static str>,
    /// The stage's own values ([`EpisodeWindow::alert_fields`]).
    pub fields: serde_json::Map<String, serde_json::Value>,
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

/// What opening an episode needs besides the window (see [`Reporter::open`]).
#[derive(Debug)]
pub struct Opening<'a> {
    /// The end of the window measured: `(end − window, end]`.
    pub end: Timestamp,
    /// Event time at which the condition began to hold.
    pub first_seen: Timestamp,
    /// Engine time.
    pub now: Timestamp,
    /// The key's group.
    pub group: Group,
    /// The event with which it began to hold, if one did (not a tick).
    pub opener: Option<&'a Event>,
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
    /// What a report of `w` states now.
    pub fn measure<W: EpisodeWindow>(&self, w: &W) -> Measure {
        Measure {
            value: w.total(),
            threshold: w.report_threshold(self.threshold),
            estimate: w.estimate(),
            fields: w.alert_fields(),
        }
    }

    /// The alert of a report on `w`'s episode, measured over `(end − window, end]`.
    fn report(&self, ep: &Episode, m: Measure, end: Timestamp, status: AlertStatus) -> Arc<Event> {
        let alert = self.templates.alert(Finding {
            id: Some(ep.id.clone()),
            group: stage_state::load_group(ep.group.clone()),
            value: m.value / self.scale,
            threshold: m.threshold / self.scale,
            unit: self.unit.clone(),
            estimate: m.estimate.map(str::to_string),
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
            fields: m.fields,
        });
        self.templates.event(alert)
    }

    /// The one-off alert of an `each_crossing` window that fired (`m`: measured just
    /// before it did).
    fn once(&self, fired: super::window::Fired, m: Measure, group: Group) -> Arc<Event> {
        let alert = self.templates.alert(Finding {
            unit: self.unit.clone(),
            estimate: fired.estimate.map(str::to_string),
            fields: m.fields,
            ..Finding::once(
                group,
                fired.sum / self.scale,
                m.threshold / self.scale,
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
                let m = self.measure(w);
                let fired = w.fire(self.window);
                out.push(self.once(fired, m, group()));
            }
            return;
        }
        let t = event.meta.time;
        let over = w.reached(self.threshold);
        match (w.episode().is_some(), over) {
            (true, true) => self.update(w, event, book),
            (false, true) => {
                let end = w.newest().unwrap_or(t);
                let opening = Opening {
                    end,
                    first_seen: t,
                    now: event.meta.ingest,
                    group: group(),
                    opener: Some(event),
                };
                self.open(key, w, opening, book, out);
            }
            (true, false) => {
                let end = w.newest().unwrap_or(t);
                self.close(key, w, end, book, out);
            }
            (false, false) => {}
        }
    }

    /// Opens `w`'s episode (it has none): a `firing` report measured over
    /// `(end − window, end]`, its samples those `w` keeps (at least the event that opened
    /// it, when there is one).
    pub fn open<W: EpisodeWindow>(
        &self,
        key: &str,
        w: &mut W,
        opening: Opening<'_>,
        book: &mut Book,
        out: &mut Vec<Arc<Event>>,
    ) {
        let Opening {
            end,
            first_seen,
            now,
            group,
            opener,
        } = opening;
        let window = AlertWindow {
            start: super::window::minus(end, self.window),
            end,
        };
        let samples = self.templates.samples;
        let ep = Episode {
            id: self.templates.alert_id(key, &window),
            group: stage_state::save_group(&group),
            first_seen,
            last_seen: first_seen,
            updates: 0,
            dirty: false,
            reported_at: now,
            arrived_at: now,
            samples: {
                let mut kept = w.samples(samples);
                // The window kept none (the stage's sample budget was spent): the event
                // that opened the episode, at least.
                if let Some(e) = opener
                    && kept.is_empty()
                    && samples > 0
                {
                    kept.push(Sample::of(e));
                }
                kept
            },
        };
        out.push(self.report(&ep, self.measure(w), end, AlertStatus::Firing));
        *w.episode_mut() = Some(Box::new(ep));
        book.open.insert(key.to_string());
        book.counts.opened += 1;
    }

    /// `event` counted in `w` while its episode is open and its condition holds: the
    /// episode is updated in place (newest time, updates, samples up to the limit); no
    /// report is made.
    pub fn update<W: EpisodeWindow>(&self, w: &mut W, event: &Event, book: &mut Book) {
        let samples = self.templates.samples;
        let Some(ep) = w.episode_mut() else { return };
        ep.last_seen = ep.last_seen.max(event.meta.time);
        ep.updates += 1;
        ep.dirty = true;
        ep.arrived_at = ep.arrived_at.max(event.meta.ingest);
        if ep.samples.len() < samples {
            let s = Sample::of(event);
            if !ep.samples.contains(&s) {
                let at = ep.samples.partition_point(|x| x.time <= s.time);
                ep.samples.insert(at, s);
            }
        }
        book.counts.updated += 1;
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
    pub fn close<W: EpisodeWindow>(
        &self,
        key: &str,
        w: &mut W,
        end: Timestamp,
        book: &mut Book,
        out: &mut Vec<Arc<Event>>,
    ) {
        let m = self.measure(w);
        if let Some(ep) = w.episode_mut().take() {
            out.push(self.report(&ep, m, end, AlertStatus::Resolved));
            book.counts.resolved += 1;
        }
        book.open.remove(key);
    }

    /// Reports `w`'s open episode again, measured at `end`, if it changed since its last
    /// report and that is `history_interval` old at engine time `now`.
    pub fn report_changed<W: EpisodeWindow>(
        &self,
        w: &mut W,
        end: Timestamp,
        now: Timestamp,
        book: &mut Book,
        out: &mut Vec<Arc<Event>>,
    ) {
        let due = w
            .episode()
            .is_some_and(|ep| ep.dirty && now - ep.reported_at >= self.history_interval);
        if !due {
            return;
        }
        let m = self.measure(w);
        if let Some(ep) = w.episode_mut() {
            ep.dirty = false;
            ep.reported_at = now;
            out.push(self.report(ep, m, end, AlertStatus::Firing));
            book.counts.reported += 1;
        }
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
            self.report_changed(w, end, now, book, out);
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

/// A detection stage that starts from its saved state (see [`resume`]).
pub trait Resumable {
    /// Restores the state saved as `saved` (JSON text) if it fits; `true` when it did.
    fn restore(&mut self, saved: &str, id: &str) -> bool;
    /// Resolutions to hand on at the first tick (see [`orphaned`]).
    fn close_at_start(&mut self, orphans: Vec<Arc<Event>>);
}

/// Starts `stage` being built in `cx` from its saved state; when there is none that fits
/// and its episodes are closed by resolutions (`closes`: the `episode` mode), the
/// episodes the alert history still shows open for it are resolved at its first tick.
pub fn resume(stage: &mut impl Resumable, cx: &crate::node::BuildContext, closes: bool) {
    let restored = cx
        .restore()
        .is_some_and(|saved| stage.restore(&saved, &cx.id));
    if !restored && closes {
        stage.close_at_start(orphaned(cx));
    }
}

/// The keys of `keys` with an open episode (after a restore).
pub fn open_keys<W: EpisodeWindow>(keys: &KeyMap<W>) -> BTreeSet<String> {
    keys.iter()
        .filter(|(_, w)| w.episode().is_some())
        .map(|(k, _)| k.to_string())
        .collect()
}
