//! The running `ratio` stage.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::config::RatioConfig;
use crate::event::{AlertWindow, Event, Sample, Timestamp};
use crate::node::internal_event::{InternalEvent, PointsCoarsened};
use crate::node::{NodeCounters, NodeError, Snapshot, Stage};
use crate::stages::alerting::{AlertTemplates, GroupBy, SampleBudget, SampleSet};
use crate::stages::episode::{Episode, EpisodeCounts, EpisodeWindow, Reporter};
use crate::stages::filter::{CompiledFilter, IpListWatch};
use crate::stages::keyed::{Keyed, KeyedWindow};
use crate::stages::series::{Series, Tally};
use crate::stages::window::{Fired, minus};

/// What decides whether a window's share alerts: shared by the stage and its windows.
#[derive(Debug)]
pub(super) struct Rule {
    pub(super) threshold: f64,
    pub(super) min_count: u64,
}

impl Rule {
    /// Whether `c` alerts: enough events, and a share at or over the threshold.
    pub(super) fn reached(&self, c: Counts) -> bool {
        c.total > 0
            && c.total >= self.min_count
            && c.matched as f64 >= self.threshold * c.total as f64 * (1.0 - 1e-12)
    }
}

/// Matched and all events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Counts {
    /// Events that matched.
    #[serde(rename = "m")]
    pub(super) matched: u64,
    /// All events.
    #[serde(rename = "n")]
    pub(super) total: u64,
}

impl Counts {
    fn share(self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.matched as f64 / self.total as f64
        }
    }

    fn less(self, other: Counts) -> Counts {
        Counts {
            matched: self.matched.saturating_sub(other.matched),
            total: self.total.saturating_sub(other.total),
        }
    }
}

impl Tally for Counts {
    fn add(&mut self, other: Counts) {
        self.matched = self.matched.saturating_add(other.matched);
        self.total = self.total.saturating_add(other.total);
    }
}

/// One key's window: its events' counts by time.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct RatioWindow {
    points: Series<Counts>,
    newest: Option<Timestamp>,
    /// Time of the window end of the key's last alert: earlier events are late for it
    /// (`each_crossing` mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fired: Option<Timestamp>,
    /// Samples of the matched events.
    samples: SampleSet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    episode: Option<Box<Episode>>,
    /// The window's counts (kept with the points).
    #[serde(skip)]
    counts: Counts,
    /// The stage's rule (set when the window is made or restored).
    #[serde(skip)]
    rule: Option<Arc<Rule>>,
}

impl RatioWindow {
    /// Sums the counts up from the points (after a restore or a coarsening).
    fn recompute(&mut self) {
        let mut c = Counts::default();
        for p in self.points.iter() {
            c.add(p.v);
        }
        self.counts = c;
    }

    /// Counts an event at `t` (matched or not), offers it as a sample if it matched, and
    /// slides the window to `(newest − w, newest]`; how many points were merged away to
    /// stay within their bound.
    fn add(
        &mut self,
        t: Timestamp,
        matched: bool,
        w: chrono::Duration,
        event: &Event,
        budget: &mut SampleBudget,
    ) -> usize {
        if self.newest.is_none_or(|n| t > n) {
            self.newest = Some(t);
        }
        let c = Counts {
            matched: u64::from(matched),
            total: 1,
        };
        self.points.add(t, c);
        self.counts.add(c);
        if matched {
            self.samples.offer(event, budget);
        }
        let mut merged = 0;
        if let Some(n) = self.newest {
            self.evict_through(minus(n, w));
            if self.points.too_long() {
                merged = self.points.coarsen(minus(n, w), w);
            }
        }
        merged
    }

    /// Drops the events at or before `cutoff`.
    fn evict_through(&mut self, cutoff: Timestamp) {
        let mut dropped = false;
        while self.points.front().is_some_and(|p| p.t <= cutoff) {
            if let Some(p) = self.points.pop_front() {
                self.counts = self.counts.less(p.v);
                dropped = true;
            }
        }
        if dropped {
            self.samples.evict_through(cutoff);
        }
    }

    fn reached_now(&self) -> bool {
        self.rule.as_ref().is_some_and(|r| r.reached(self.counts))
    }
}

impl EpisodeWindow for RatioWindow {
    fn episode_mut(&mut self) -> &mut Option<Box<Episode>> {
        &mut self.episode
    }

    fn episode(&self) -> Option<&Episode> {
        self.episode.as_deref()
    }

    /// The share matched ÷ total (0 for an empty window).
    fn total(&self) -> f64 {
        self.counts.share()
    }

    /// Whether the window holds `min_count` events and its share is at or over the
    /// threshold (the window's rule holds both).
    fn reached(&mut self, _threshold: f64) -> bool {
        self.reached_now()
    }

    fn slide_to(&mut self, cutoff: Timestamp) {
        self.evict_through(cutoff);
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

    fn fire(&mut self, window: chrono::Duration) -> Fired {
        let end = self.newest.unwrap_or(Timestamp::MIN_UTC);
        let start = match self.fired {
            Some(previous) => minus(end, window).max(previous),
            None => minus(end, window),
        };
        let fired = Fired {
            sum: self.counts.share(),
            window: AlertWindow { start, end },
            samples: self.samples.take(),
            estimate: None,
        };
        self.points.clear();
        self.counts = Counts::default();
        self.fired = Some(end);
        fired
    }

    /// The first time, sliding on to `cutoff + window`, at which the events left no
    /// longer alert (a share under the threshold, or too few events).
    fn ended_by(
        &mut self,
        cutoff: Timestamp,
        _threshold: f64,
        window: chrono::Duration,
    ) -> Option<Timestamp> {
        let rule = self.rule.clone()?;
        let mut left = self.counts;
        for p in self.points.iter() {
            if p.t > cutoff {
                return None;
            }
            // Points hold every event of their time: they leave together.
            left = left.less(p.v);
            if !rule.reached(left) {
                return Some(p.t + window);
            }
        }
        None
    }

    /// `matched` and `total`.
    fn alert_fields(&self) -> Map<String, Value> {
        let mut f = Map::new();
        f.insert("matched".into(), json!(self.counts.matched));
        f.insert("total".into(), json!(self.counts.total));
        f
    }
}

impl KeyedWindow for RatioWindow {
    fn fired(&self) -> Option<Timestamp> {
        self.fired
    }

    fn sample_bytes(&self) -> usize {
        self.samples.bytes()
    }
}

/// What the stage saves of its own beside its windows.
#[derive(Serialize, Deserialize)]
struct Coarsened {
    /// Points merged away to keep keys within their bound.
    #[serde(default)]
    coarsened: u64,
}

/// Shares of matching events per group key in sliding event-time windows; see
/// [`RatioConfig`].
pub struct RatioStage {
    matcher: CompiledFilter,
    ip_lists: Option<IpListWatch>,
    rule: Arc<Rule>,
    group_by: GroupBy,
    reporter: Reporter,
    shape: Value,
    keyed: Keyed<RatioWindow>,
    coarsened: u64,
}

impl RatioStage {
    /// A stage with empty windows, counting as matched the events `matcher` keeps.
    pub fn new(
        cfg: &RatioConfig,
        matcher: CompiledFilter,
        templates: AlertTemplates,
        history_interval: chrono::Duration,
    ) -> Result<Self, NodeError> {
        if !(cfg.threshold > 0.0 && cfg.threshold <= 1.0) {
            return Err(NodeError::from(format!(
                "`threshold` must be a share over 0 and at most 1, not {}",
                cfg.threshold
            )));
        }
        let group_by = GroupBy::parse(&cfg.group_by).map_err(NodeError::from)?;
        let window = cfg.window.span();
        let keyed = Keyed::new(window, cfg.max_keys, templates.samples, templates.node_id());
        Ok(RatioStage {
            matcher,
            ip_lists: None,
            rule: Arc::new(Rule {
                threshold: cfg.threshold,
                min_count: cfg.min_count.max(1),
            }),
            group_by,
            reporter: Reporter {
                templates,
                threshold: cfg.threshold,
                scale: 1.0,
                unit: None,
                window,
                mode: cfg.alert.mode,
                resolve_after: cfg.alert.resolve_after.map_or(window, |d| d.span()),
                history_interval,
            },
            shape: json!({
                "match": cfg.match_shape(),
                "group_by": cfg.group_by,
                "mode": cfg.alert.mode,
            }),
            keyed,
            coarsened: 0,
        })
    }

    /// Counts what the stage sets aside into `counters` (the node's).
    pub fn counting_into(mut self, counters: Arc<NodeCounters>) -> Self {
        self.keyed.counters = counters;
        self
    }

    /// Reports `ip_list:` operands of `match` that name no IP list of the PCE.
    pub fn with_ip_list_watch(mut self, watch: IpListWatch) -> Self {
        self.ip_lists = Some(watch);
        self
    }

    /// Resolutions to hand on at the first tick (see [`crate::stages::episode::orphaned`]).
    pub fn close_at_start(&mut self, orphans: Vec<Arc<Event>>) {
        self.keyed.orphans = orphans;
    }

    /// Restores a snapshot (its JSON text) when its shape (`match`, `group_by`,
    /// `alert.mode`) matches this config; `true` when it did.
    pub fn restore(&mut self, saved: &str, id: &str) -> bool {
        let rule = self.rule.clone();
        let own: Option<Coarsened> = self.keyed.restore(
            saved,
            id,
            &self.shape,
            "match, group_by or alert.mode",
            |w: &mut RatioWindow| {
                // A hand-edited state is put in order too.
                w.points.normalize();
                w.recompute();
                w.rule = Some(rule.clone());
            },
        );
        own.map(|o| self.coarsened = o.coarsened).is_some()
    }

    /// Late events seen so far.
    pub fn late(&self) -> u64 {
        self.keyed.watermark.late
    }

    /// Points merged away to keep keys within their bound.
    pub fn coarsened(&self) -> u64 {
        self.coarsened
    }

    /// Group keys held.
    pub fn keys(&self) -> usize {
        self.keyed.keys.len()
    }

    /// What the stage's episodes did so far.
    pub fn episodes(&self) -> EpisodeCounts {
        self.keyed.book.counts
    }
}

impl Stage for RatioStage {
    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
        if let Some(w) = &mut self.ip_lists {
            w.check();
        }
        let t = event.meta.time;
        if self.keyed.behind(t) {
            return;
        }
        let matched = self.matcher.matches_event(&event);
        let window = self.keyed.window;
        let Some(at) = self.keyed.at(&self.group_by.0, &*event, t) else {
            return;
        };
        if at.window.rule.is_none() {
            at.window.rule = Some(self.rule.clone());
        }
        self.reporter
            .before_event(at.key, at.window, t, at.book, out);
        let merged = at.window.add(t, matched, window, &event, at.budget);
        let group_by = &self.group_by;
        self.reporter.after_event(
            at.key,
            at.window,
            &event,
            || group_by.group(event.data()),
            at.book,
            out,
        );
        if merged > 0 {
            self.coarsened += merged as u64;
            PointsCoarsened {
                stage: at.id,
                key: at.key,
                merged,
                first: self.coarsened == merged as u64,
            }
            .emit(at.counters);
        }
        self.keyed.settle(&self.reporter, out);
    }

    fn tick(&mut self, now: Timestamp, out: &mut Vec<Arc<Event>>) {
        self.keyed.tick(&self.reporter, now, out);
    }

    fn snapshot(&self, max_bytes: u64) -> Option<Snapshot> {
        let own = Coarsened {
            coarsened: self.coarsened,
        };
        self.keyed.snapshot(&self.shape, &own, max_bytes)
    }
}

impl crate::stages::episode::Resumable for RatioStage {
    fn restore(&mut self, saved: &str, id: &str) -> bool {
        RatioStage::restore(self, saved, id)
    }

    fn close_at_start(&mut self, orphans: Vec<Arc<Event>>) {
        RatioStage::close_at_start(self, orphans);
    }
}
