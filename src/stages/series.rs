//! Tallies in event-time order, one point per distinct time, for the detection stages
//! that measure a window by more than a sum (`spike`'s two windows, `ratio`'s matched
//! and total counts).
//!
//! Events at one time merge into one point, so a key costs one point per distinct event
//! time in its span. A key that holds more than [`MAX_POINTS`] points is *coarsened*:
//! the points within one slot of `span / (MAX_POINTS / 2)` merge into one at the slot's
//! latest time. Nothing is dropped — every event still counts — but a merged event
//! leaves its window up to one slot later (0.4 % of the span). Memory is thus bounded per
//! key whatever the event rate.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::event::Timestamp;

/// The most points a key holds before it is coarsened.
pub const MAX_POINTS: usize = 1024;

/// What a point adds up: a count or sum (`f64`), matched-of-total counts.
pub trait Tally: Copy + Default {
    /// Adds `other` to this.
    fn add(&mut self, other: Self);
}

impl Tally for f64 {
    fn add(&mut self, other: f64) {
        *self += other;
    }
}

/// The tally of one event time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point<V> {
    /// Event time.
    pub t: Timestamp,
    /// What the events at `t` add up to.
    pub v: V,
}

/// Points in time order, one per distinct time. Saved as a JSON array.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Series<V> {
    points: VecDeque<Point<V>>,
}

impl<V: Tally> Series<V> {
    /// Counts `v` at `t`: into the point at `t` if there is one, else into a new point in
    /// its place. Returns the point's index. Events in time order cost no search.
    pub fn add(&mut self, t: Timestamp, v: V) -> usize {
        let at = match self.points.back() {
            Some(last) if last.t < t => self.points.len(),
            None => 0,
            Some(_) => self.points.partition_point(|p| p.t < t),
        };
        match self.points.get_mut(at) {
            Some(p) if p.t == t => p.v.add(v),
            _ => self.points.insert(at, Point { t, v }),
        }
        at
    }

    /// Points held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The point at index `i` (0: the oldest).
    pub fn get(&self, i: usize) -> Option<&Point<V>> {
        self.points.get(i)
    }

    /// The oldest point.
    pub fn front(&self) -> Option<&Point<V>> {
        self.points.front()
    }

    /// The newest point.
    pub fn back(&self) -> Option<&Point<V>> {
        self.points.back()
    }

    /// Takes the oldest point out.
    pub fn pop_front(&mut self) -> Option<Point<V>> {
        self.points.pop_front()
    }

    /// The points, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Point<V>> + Clone {
        self.points.iter()
    }

    /// The points from index `from` on.
    pub fn from(&self, from: usize) -> impl Iterator<Item = &Point<V>> + Clone {
        self.points.range(from.min(self.points.len())..)
    }

    /// Drops every point.
    pub fn clear(&mut self) {
        self.points.clear();
    }

    /// Puts the points in time order and merges those at one time (a saved state edited
    /// by hand).
    pub fn normalize(&mut self) {
        let mut all: Vec<Point<V>> = self.points.drain(..).collect();
        all.sort_by_key(|p| p.t);
        for p in all {
            self.add(p.t, p.v);
        }
    }

    /// Whether the key holds more than [`MAX_POINTS`] points and should be coarsened.
    pub fn too_long(&self) -> bool {
        self.points.len() > MAX_POINTS
    }

    /// Coarsens the points over `span`: those within one slot of `span / (MAX_POINTS / 2)`
    /// merge into one at the slot's latest time. Slots are counted from `origin` — the
    /// slot `k` is `(origin + (k − 1)·width, origin + k·width]` — so no slot straddles
    /// `origin` (a boundary the caller keeps points on either side of). Returns how many
    /// points were merged away.
    pub fn coarsen(&mut self, origin: Timestamp, span: chrono::Duration) -> usize {
        let slots = i64::try_from(MAX_POINTS / 2).unwrap_or(i64::MAX);
        let width = (span.num_nanoseconds().unwrap_or(i64::MAX) / slots).max(1);
        let slot = |t: Timestamp| -> i64 {
            let d = (t - origin).num_nanoseconds().unwrap_or(if t > origin {
                i64::MAX
            } else {
                i64::MIN
            });
            // ⌈d / width⌉
            d.div_euclid(width) + i64::from(d.rem_euclid(width) != 0)
        };
        let before = self.points.len();
        let mut merged: VecDeque<Point<V>> = VecDeque::with_capacity(MAX_POINTS / 2 + 2);
        let mut last_slot = None;
        for p in self.points.drain(..) {
            let s = slot(p.t);
            match merged.back_mut() {
                Some(m) if last_slot == Some(s) => {
                    m.t = p.t;
                    m.v.add(p.v);
                }
                _ => merged.push_back(p),
            }
            last_slot = Some(s);
        }
        self.points = merged;
        before - self.points.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    fn at(s: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap() + Duration::seconds(s)
    }

    #[test]
    fn events_at_one_time_merge_and_out_of_order_ones_go_in_place() {
        let mut s: Series<f64> = Series::default();
        assert_eq!(s.add(at(10), 1.0), 0);
        assert_eq!(s.add(at(10), 1.0), 0);
        assert_eq!(s.add(at(20), 1.0), 1);
        assert_eq!(s.add(at(15), 2.0), 1);
        assert_eq!(s.add(at(5), 1.0), 0);
        let got: Vec<(i64, f64)> = s
            .iter()
            .map(|p| ((p.t - at(0)).num_seconds(), p.v))
            .collect();
        assert_eq!(got, vec![(5, 1.0), (10, 2.0), (15, 2.0), (20, 1.0)]);
        let text = serde_json::to_string(&s).unwrap();
        let mut back: Series<f64> = serde_json::from_str(&text).unwrap();
        back.normalize();
        assert_eq!(back.len(), 4);
    }

    #[test]
    fn coarsening_merges_within_slots_and_never_across_the_origin() {
        // 2000 points a second apart over a span of 2000 s: slots of 2000 / 512 s.
        let mut s: Series<f64> = Series::default();
        for i in 0..2000 {
            s.add(at(i), 1.0);
        }
        assert!(s.too_long());
        let origin = at(1000);
        let merged = s.coarsen(origin, Duration::seconds(2000));
        assert!(!s.too_long());
        assert_eq!(s.len() + merged, 2000);
        assert!(s.len() <= MAX_POINTS / 2 + 2, "{}", s.len());
        // Every event still counts, and the points at or before the origin hold exactly
        // the events that were.
        assert_eq!(s.iter().map(|p| p.v).sum::<f64>(), 2000.0);
        let before: f64 = s.iter().filter(|p| p.t <= origin).map(|p| p.v).sum();
        assert_eq!(before, 1001.0);
        // Times only move later, by less than a slot.
        assert!(s.iter().any(|p| p.t == origin));
        assert!(s.iter().zip(s.iter().skip(1)).all(|(a, b)| a.t < b.t));
    }
}
