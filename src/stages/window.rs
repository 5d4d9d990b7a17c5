//! Sliding event-time windows shared by `window_count` and `bandwidth`.
//!
//! A [`KeyWindow`] holds one group key's weighted entries in time order; a [`Watermark`]
//! is the stage-wide "newest event time seen" that decides which events are late.
//! Windows are half-open: with length `W` and newest entry time `n`, the window is
//! `(n - W, n]`, so an entry exactly `W` older than the newest is out.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::alerting::{SampleBudget, SampleSet};
use super::episode::Episode;
use crate::event::{
    AlertWindow, Event, Field, FieldPath, Fields, Sample, Scalar, Timestamp, push_key_field,
};

/// `t - w`, saturating at the earliest representable time.
pub fn minus(t: Timestamp, w: chrono::Duration) -> Timestamp {
    t.checked_sub_signed(w).unwrap_or(Timestamp::MIN_UTC)
}

/// Writes the group key of `data` for `paths` into `buf` (cleared first), in the format
/// of [`crate::event::group_key`]: missing reads `<missing>`, empty `""`. No allocation
/// once `buf` has grown.
pub fn write_key(buf: &mut String, paths: &[FieldPath], data: &(impl Fields + ?Sized)) {
    buf.clear();
    for (i, path) in paths.iter().enumerate() {
        push_key_field(buf, i, path.as_str(), data.field(path));
    }
}

/// A non-negative finite number from a JSON number or numeric string.
pub fn number(v: Field<'_>) -> Option<f64> {
    let n = match v.scalar() {
        Scalar::Num(n) => n.as_f64()?,
        Scalar::Str(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (n.is_finite() && n >= 0.0).then_some(n)
}

/// The stage-wide watermark: the newest event time seen. An event at or before
/// `watermark - W` is late.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Watermark {
    /// The newest event time seen.
    pub newest: Option<Timestamp>,
    /// Late events seen (older than the window behind the watermark, or before a key's
    /// last alert).
    pub late: u64,
    /// When keys were last swept for expiry.
    #[serde(skip)]
    pub last_sweep: Option<Timestamp>,
}

impl Watermark {
    /// Advances the watermark with `t`; `true` if `t` is late (`t <= newest - w`).
    /// Late events do not move the watermark.
    pub fn observe(&mut self, t: Timestamp, w: chrono::Duration) -> bool {
        match self.newest {
            Some(n) if t <= minus(n, w) => true,
            Some(n) if t <= n => false,
            _ => {
                self.newest = Some(t);
                false
            }
        }
    }

    /// The expiry cutoff: anything at or before it can no longer count.
    pub fn cutoff(&self, w: chrono::Duration) -> Option<Timestamp> {
        self.newest.map(|n| minus(n, w))
    }

    /// Whether a sweep of expired keys is due: the watermark moved by at least `w` since
    /// the last one (so sweeps cost O(keys) at most once per window length of event time).
    pub fn sweep_due(&mut self, w: chrono::Duration) -> Option<Timestamp> {
        let n = self.newest?;
        match self.last_sweep {
            Some(last) if n < last.checked_add_signed(w).unwrap_or(Timestamp::MAX_UTC) => None,
            _ => {
                self.last_sweep = Some(n);
                Some(minus(n, w))
            }
        }
    }
}

/// One weighted entry of a window.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Entry {
    /// Event time.
    pub t: Timestamp,
    /// Weight (1 per event when counting, the summed value otherwise).
    pub w: f64,
    /// The weight is an estimate (a lower bound).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub e: bool,
}

/// What a window reports when it reaches its threshold.
#[derive(Debug, Clone)]
pub struct Fired {
    /// The sum of the weights in the window.
    pub sum: f64,
    /// The window: `(newest - W, newest]`.
    pub window: AlertWindow,
    /// Samples of the events in the window.
    pub samples: Vec<Sample>,
    /// Whether the sum is an estimate, and of what kind (see
    /// [`super::episode::EpisodeWindow::estimate`]).
    pub estimate: Option<&'static str>,
}

/// A window's entries in time order. Most keys hold one (one event, or events at one
/// time): it is held inline; more go to a [`Queue`] of their own. Saved as a JSON array.
#[derive(Debug, Clone, Default)]
enum Entries {
    #[default]
    Empty,
    One(Entry),
    Many(Box<Queue>),
}

/// The entries of a key that has more than one: those that came in time order, then
/// those that came out of it, appended as they came and put in order (and merged) only
/// when something needs the order — the window's start sliding past one of them, a save,
/// an episode's end — or when they are as many as the ordered ones. An event out of order
/// costs an append instead of a search and an insertion in the middle.
///
/// Put in order, the entries are exactly those [`Entries::add`] would have made by
/// inserting each in place: entries at one time keep their order of arrival, and one
/// merges into the entry before it when that one has the same time and estimate flag.
#[derive(Debug, Clone)]
struct Queue {
    q: VecDeque<Entry>,
    /// The first `ordered` entries are in time order; the rest are not (yet).
    ordered: usize,
    /// The earliest time of the entries not in order yet (when there are some).
    earliest_unordered: Timestamp,
}

/// Entries out of order held before they are put in order, at least (at most as many as
/// the ordered ones otherwise).
const UNORDERED_MIN: usize = 16;

impl Queue {
    fn of(entries: impl IntoIterator<Item = Entry>) -> Queue {
        let q: VecDeque<Entry> = entries.into_iter().collect();
        Queue {
            ordered: q.len(),
            q,
            earliest_unordered: Timestamp::MIN_UTC,
        }
    }

    fn unordered(&self) -> usize {
        self.q.len() - self.ordered
    }

    /// Puts every entry in order, merging as [`Entries::add`] does; how many estimate
    /// entries were merged away.
    fn order(&mut self) -> u32 {
        if self.unordered() == 0 {
            return 0;
        }
        // A stable sort: entries at one time keep their order of arrival. The ordered
        // part is one run already.
        let all = self.q.make_contiguous();
        all.sort_by_key(|e| e.t);
        // Merged in place: `kept` entries stay, each run of one time and flag in one.
        let mut merged = 0;
        let mut kept: usize = 0;
        for i in 0..all.len() {
            let e = all[i];
            match kept.checked_sub(1).map(|k| &mut all[k]) {
                Some(prev) if prev.t == e.t && prev.e == e.e => {
                    prev.w += e.w;
                    merged += u32::from(e.e);
                }
                _ => {
                    all[kept] = e;
                    kept += 1;
                }
            }
        }
        self.q.truncate(kept);
        self.ordered = kept;
        merged
    }

    /// Adds `new`: whether it made an entry (not merged into the last one), and how many
    /// estimate entries putting the entries in order merged away.
    fn add(&mut self, new: Entry) -> (bool, u32) {
        if let Some(last) = self.q.back_mut()
            && last.t == new.t
            && last.e == new.e
        {
            last.w += new.w;
            return (false, 0);
        }
        let in_order = self.unordered() == 0 && self.q.back().is_none_or(|b| b.t <= new.t);
        self.q.push_back(new);
        if in_order {
            self.ordered = self.q.len();
            return (true, 0);
        }
        self.earliest_unordered = if self.unordered() == 1 {
            new.t
        } else {
            self.earliest_unordered.min(new.t)
        };
        if self.unordered() > self.ordered.max(UNORDERED_MIN) {
            return (true, self.order());
        }
        (true, 0)
    }
}

impl Entries {
    /// The entries in no particular order (in time order when [`Entries::order`] was
    /// called since the last add).
    fn iter(&self) -> impl Iterator<Item = &Entry> + Clone {
        let (a, b) = match self {
            Entries::Empty => (&[][..], &[][..]),
            Entries::One(e) => (std::slice::from_ref(e), &[][..]),
            Entries::Many(q) => q.q.as_slices(),
        };
        a.iter().chain(b)
    }

    fn len(&self) -> usize {
        match self {
            Entries::Empty => 0,
            Entries::One(_) => 1,
            Entries::Many(q) => q.q.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts the entries in order if any entry at or before `cutoff` is not; how many
    /// estimate entries were merged away.
    fn order_through(&mut self, cutoff: Timestamp) -> u32 {
        match self {
            Entries::Many(q) if q.unordered() > 0 && q.earliest_unordered <= cutoff => q.order(),
            _ => 0,
        }
    }

    /// Puts every entry in order; how many estimate entries were merged away.
    fn order(&mut self) -> u32 {
        match self {
            Entries::Many(q) => q.order(),
            _ => 0,
        }
    }

    /// The oldest ordered entry (after [`Entries::order_through`] for the cutoff it is
    /// compared with, older than any entry not in order).
    fn front(&self) -> Option<&Entry> {
        match self {
            Entries::Empty => None,
            Entries::One(e) => Some(e),
            Entries::Many(q) if q.ordered > 0 => q.q.front(),
            Entries::Many(_) => None,
        }
    }

    /// Removes the oldest ordered entry; the queue is freed once empty.
    fn pop_front(&mut self) -> Option<Entry> {
        match std::mem::take(self) {
            Entries::Empty => None,
            Entries::One(e) => Some(e),
            Entries::Many(mut q) => {
                let e = if q.ordered > 0 {
                    q.ordered -= 1;
                    q.q.pop_front()
                } else {
                    None
                };
                if !q.q.is_empty() {
                    *self = Entries::Many(q);
                }
                e
            }
        }
    }

    /// Adds `new` (see [`Queue`]): whether it made an entry, and how many estimate
    /// entries were merged away meanwhile.
    fn add(&mut self, new: Entry) -> (bool, u32) {
        let mergeable = |prev: &Entry| prev.t == new.t && prev.e == new.e;
        match self {
            Entries::Empty => {
                *self = Entries::One(new);
                (true, 0)
            }
            Entries::One(prev) if mergeable(prev) => {
                prev.w += new.w;
                (false, 0)
            }
            Entries::One(prev) => {
                let pair = if prev.t <= new.t {
                    [*prev, new]
                } else {
                    [new, *prev]
                };
                *self = Entries::Many(Box::new(Queue::of(pair)));
                (true, 0)
            }
            Entries::Many(q) => q.add(new),
        }
    }

    /// The entries in time order, without changing them (a copy when some are not).
    fn in_order(&self) -> std::borrow::Cow<'_, Entries> {
        match self {
            Entries::Many(q) if q.unordered() > 0 => {
                let mut copy = Queue::clone(q);
                copy.order();
                std::borrow::Cow::Owned(Entries::Many(Box::new(copy)))
            }
            _ => std::borrow::Cow::Borrowed(self),
        }
    }
}

impl Serialize for Entries {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.in_order().iter())
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut entries = Vec::<Entry>::deserialize(deserializer)?;
        Ok(match entries.len() {
            0 => Entries::Empty,
            1 => Entries::One(entries.remove(0)),
            // Saved in order: checked, so a hand-edited state is put in order too.
            _ => {
                let mut q = Queue::of(entries);
                if q.q.iter().zip(q.q.iter().skip(1)).any(|(a, b)| a.t > b.t) {
                    q.ordered = 0;
                    q.earliest_unordered =
                        q.q.iter().map(|e| e.t).min().unwrap_or(Timestamp::MIN_UTC);
                    q.order();
                }
                Entries::Many(Box::new(q))
            }
        })
    }
}

/// One key's sliding window: entries in time order with their running sum.
///
/// Kept small (80 bytes): a stage may hold a million of them (see
/// [`super::keys::KeyMap`]). The entries of a key seen at one time only are held inline,
/// and its samples take no allocation until it has some.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyWindow {
    entries: Entries,
    #[serde(skip)]
    sum: f64,
    #[serde(skip)]
    estimates: u32,
    /// The newest event time of the key (kept across a firing).
    pub newest: Option<Timestamp>,
    /// Time of the window end of the key's last alert: earlier events are late for it
    /// (`each_crossing` mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired: Option<Timestamp>,
    samples: SampleSet,
    /// The key's open alert episode (`episode` mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode: Option<Box<Episode>>,
}

super::episode::episode_window!(KeyWindow, |w| w.ordered().iter().map(|e| (e.t, e.w)));

impl KeyWindow {
    /// The entries, in time order.
    fn ordered(&mut self) -> &Entries {
        self.estimates -= self.entries.order();
        &self.entries
    }

    /// Recomputes the derived sums (after a restore).
    pub fn recompute(&mut self) {
        self.sum = self.entries.iter().map(|e| e.w).sum();
        self.estimates = self.entries.iter().filter(|e| e.e).count() as u32;
    }

    /// Whether `t` belongs to a window this key already alerted on.
    pub fn late_for_key(&self, t: Timestamp) -> bool {
        self.fired.is_some_and(|f| t < f)
    }

    /// Whether nothing of this key can count any more (`newest <= cutoff`).
    pub fn expired(&self, cutoff: Timestamp) -> bool {
        self.newest.is_none_or(|n| n <= cutoff)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entries are held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The running sum of the weights.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Adds `weight` at `t` (in time order; entries at the same time with the same
    /// estimate flag merge), offers `event` as a sample and evicts what slid out of
    /// `(newest - w, newest]`.
    pub fn add(
        &mut self,
        t: Timestamp,
        weight: f64,
        estimate: bool,
        w: chrono::Duration,
        event: &Event,
        samples: &mut SampleBudget,
    ) {
        if self.newest.is_none_or(|n| t > n) {
            self.newest = Some(t);
        }
        let new = Entry {
            t,
            w: weight,
            e: estimate,
        };
        let (made, merged) = self.entries.add(new);
        if made && estimate {
            self.estimates += 1;
        }
        self.estimates -= merged;
        self.sum += weight;
        self.samples.offer(event, samples);
        self.evict(w);
    }

    /// Drops entries at or before `newest - w`.
    pub fn evict(&mut self, w: chrono::Duration) {
        let Some(n) = self.newest else { return };
        self.evict_through(minus(n, w));
    }

    /// Drops entries at or before `cutoff`.
    pub fn evict_through(&mut self, cutoff: Timestamp) {
        self.estimates -= self.entries.order_through(cutoff);
        let mut evicted = false;
        while self.entries.front().is_some_and(|e| e.t <= cutoff) {
            if let Some(e) = self.entries.pop_front() {
                self.sum -= e.w;
                if e.e {
                    self.estimates -= 1;
                }
                evicted = true;
            }
        }
        if evicted {
            self.samples.evict_through(cutoff);
            if self.entries.is_empty() {
                self.sum = 0.0;
            }
        }
    }

    /// Bytes of the samples held.
    pub fn sample_bytes(&self) -> usize {
        self.samples.bytes()
    }

    /// Whether the sum reached `threshold`. Near the threshold the sum is recomputed
    /// exactly, so rounding drift of the running sum never decides.
    pub fn reached(&mut self, threshold: f64) -> bool {
        if self.sum >= threshold * (1.0 + 1e-9) {
            return true;
        }
        if self.sum < threshold * (1.0 - 1e-9) {
            return false;
        }
        self.sum = self.entries.iter().map(|e| e.w).sum();
        self.sum >= threshold
    }

    /// Reports the window and restarts it: entries and samples are cleared and events
    /// before the window's end are late for this key from now on. The window reported
    /// starts where the events counted may start: `window` before its end, or where the
    /// key's previous alert ended if that is later.
    pub fn fire(&mut self, w: chrono::Duration) -> Fired {
        let end = self.newest.unwrap_or(Timestamp::MIN_UTC);
        let start = match self.fired {
            Some(previous) => minus(end, w).max(previous),
            None => minus(end, w),
        };
        let fired = Fired {
            sum: self.entries.iter().map(|e| e.w).sum(),
            window: AlertWindow { start, end },
            samples: self.samples.take(),
            estimate: (self.estimates > 0).then_some(super::alerting::LOWER_BOUND),
        };
        self.entries = Entries::Empty;
        self.sum = 0.0;
        self.estimates = 0;
        self.fired = Some(end);
        fired
    }
}

/// How many group keys a windowed stage holds at most unless it says (`max_keys`).
pub fn default_max_keys() -> usize {
    1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FieldPath;
    use serde_json::json;

    #[test]
    fn keys_are_written_like_group_keys() {
        let paths = vec![
            FieldPath::parse("a").unwrap(),
            FieldPath::parse("b.c").unwrap(),
            FieldPath::parse("d").unwrap(),
        ];
        let data = json!({"a": "", "b": {"c": 5}});
        let mut buf = String::new();
        write_key(&mut buf, &paths, &data);
        let g = crate::event::Group::of(&data, &paths);
        assert_eq!(buf, g.key());
        assert_eq!(buf, "a=\"\",b.c=5,d=<missing>");
    }

    #[test]
    fn numbers_reject_negative_and_non_numeric() {
        assert_eq!(number(Field::Value(&json!(5))), Some(5.0));
        assert_eq!(number(Field::Value(&json!("7.5"))), Some(7.5));
        assert_eq!(number(Field::Value(&json!(-1))), None);
        assert_eq!(number(Field::Value(&json!("x"))), None);
        assert_eq!(number(Field::Value(&json!(null))), None);
    }

    fn t(ms: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + chrono::Duration::milliseconds(ms)
    }

    /// The reference: the queue every key had before entries were held inline.
    fn reference_add(q: &mut VecDeque<Entry>, new: Entry) -> bool {
        let at = q.partition_point(|e| e.t <= new.t);
        match q.get_mut(at.wrapping_sub(1)) {
            Some(prev) if prev.t == new.t && prev.e == new.e => {
                prev.w += new.w;
                false
            }
            _ => {
                q.insert(at, new);
                true
            }
        }
    }

    /// Entries added out of order and put in order when needed are exactly the queue of
    /// in-place insertions (the reference), and their count of estimate entries is kept.
    #[test]
    fn entries_keep_time_order_and_merge_like_a_queue() {
        for spread in [16, 3, 400] {
            let mut entries = Entries::default();
            let mut queue: VecDeque<Entry> = VecDeque::new();
            let mut estimates: i64 = 0;
            let mut x: u64 = 7;
            for i in 0..5_000 {
                // A deterministic mix: out-of-order times, repeats, estimates, and pops
                // that empty the window now and then.
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let r = x >> 33;
                if r % 7 == 0 {
                    let pops = (r >> 3) % 4;
                    for _ in 0..pops {
                        // As a window slides: what it drops is put in order first.
                        let cutoff = queue.front().map_or(Timestamp::MIN_UTC, |e| e.t);
                        estimates -= i64::from(entries.order_through(cutoff));
                        let (a, b) = (entries.pop_front(), queue.pop_front());
                        estimates -= a.map_or(0, |e| i64::from(e.e));
                        assert_eq!(a.map(|e| (e.t, e.w, e.e)), b.map(|e| (e.t, e.w, e.e)));
                    }
                } else {
                    let new = Entry {
                        t: t(i64::try_from((r >> 4) % spread).unwrap()),
                        w: f64::from(u32::try_from(r % 5).unwrap()),
                        e: r % 11 == 0,
                    };
                    let (made, merged) = entries.add(new);
                    estimates += i64::from(made && new.e) - i64::from(merged);
                    reference_add(&mut queue, new);
                }
                let mut ordered = entries.clone();
                let merged = i64::from(ordered.order());
                assert_eq!(ordered.len(), queue.len(), "step {i}");
                assert_eq!(ordered.is_empty(), queue.is_empty());
                assert_eq!(ordered.front().map(|e| e.t), queue.front().map(|e| e.t));
                let got: Vec<_> = ordered.iter().map(|e| (e.t, e.w, e.e)).collect();
                let want: Vec<_> = queue.iter().map(|e| (e.t, e.w, e.e)).collect();
                assert_eq!(got, want, "step {i}");
                let want_estimates = queue.iter().filter(|e| e.e).count() as i64;
                assert_eq!(estimates - merged, want_estimates, "step {i}");
                // What a save writes is the ordered form.
                assert_eq!(
                    serde_json::to_value(&entries).unwrap(),
                    serde_json::to_value(&ordered).unwrap()
                );
                // The sum does not depend on the order.
                let sum = |e: &Entries| e.iter().map(|e| e.w).sum::<f64>();
                assert_eq!(sum(&entries), sum(&ordered));
            }
        }
    }

    /// A key whose events come in reverse time order holds no more entries than twice its
    /// distinct times, and slides like a key whose events came in order.
    #[test]
    fn a_key_with_events_out_of_order_slides_like_one_in_order() {
        let event = |ms: i64| Event::from_record(json!({"n": ms}), "p.in".into(), t(ms));
        let w = chrono::Duration::seconds(100);
        let (mut reversed, mut sorted) = (KeyWindow::default(), KeyWindow::default());
        let times: Vec<i64> = (0..1_000).map(|i| (999 - i) * 50).collect();
        for &ms in &times {
            reversed.add(
                t(ms),
                1.0,
                ms % 3 == 0,
                w,
                &event(ms),
                &mut SampleBudget::new(0),
            );
            assert!(reversed.len() <= 2 * 1_000);
        }
        let mut in_order = times.clone();
        in_order.sort_unstable();
        for &ms in &in_order {
            sorted.add(
                t(ms),
                1.0,
                ms % 3 == 0,
                w,
                &event(ms),
                &mut SampleBudget::new(0),
            );
        }
        // The newest is 49.95 s: nothing slid out yet in either.
        assert_eq!(reversed.sum(), 1_000.0);
        assert_eq!(sorted.sum(), 1_000.0);
        for cutoff in [10_000, 25_000, 49_950] {
            reversed.evict_through(t(cutoff));
            sorted.evict_through(t(cutoff));
            assert_eq!(reversed.sum(), sorted.sum(), "through {cutoff}");
            assert_eq!(reversed.len(), sorted.len(), "through {cutoff}");
            assert_eq!(reversed.estimates, sorted.estimates, "through {cutoff}");
            assert_eq!(
                serde_json::to_value(&reversed).unwrap(),
                serde_json::to_value(&sorted).unwrap()
            );
        }
        assert!(reversed.is_empty());
    }

    /// Snapshots of windows read the same before and after windows were made compact.
    #[test]
    fn a_window_is_saved_as_before_and_read_back() {
        let event = |ms: i64| Event::from_record(json!({"n": ms}), "p.in".into(), t(ms));
        let mut budget = SampleBudget::new(2);
        let w = chrono::Duration::seconds(10);
        let mut one = KeyWindow::default();
        one.add(
            t(1_000),
            1.0,
            false,
            w,
            &event(1_000),
            &mut SampleBudget::new(0),
        );
        assert_eq!(
            serde_json::to_value(&one).unwrap(),
            json!({
                "entries": [{"t": "1970-01-01T00:00:01Z", "w": 1.0}],
                "newest": "1970-01-01T00:00:01Z",
                "samples": {"items": []}
            })
        );

        let mut many = KeyWindow::default();
        for ms in [3_000, 1_000, 3_000] {
            many.add(t(ms), 2.0, false, w, &event(ms), &mut budget);
        }
        many.add(t(2_000), 5.0, true, w, &event(2_000), &mut budget);
        let saved = serde_json::to_value(&many).unwrap();
        assert_eq!(
            saved["entries"],
            json!([
                {"t": "1970-01-01T00:00:01Z", "w": 2.0},
                {"t": "1970-01-01T00:00:02Z", "w": 5.0, "e": true},
                {"t": "1970-01-01T00:00:03Z", "w": 4.0}
            ])
        );
        assert_eq!(saved["samples"]["items"].as_array().map(Vec::len), Some(2));

        let mut back: KeyWindow = serde_json::from_value(saved.clone()).unwrap();
        back.recompute();
        assert_eq!(back.sum(), 11.0);
        assert_eq!(back.len(), 3);
        assert_eq!(serde_json::to_value(&back).unwrap(), saved);
        // The oldest entry slides out; its sample goes with it.
        back.evict_through(t(1_000));
        assert_eq!(back.sum(), 9.0);
        assert_eq!(back.samples.len(), 1);
    }
}
