//! How many bytes one flow record stands for, and over how long.

use serde::{Deserialize, Serialize};

use super::config::{BandwidthConfig, Direction, FLAT_FLOW_KEY, REST_FLOW_KEY};
use crate::event::flow_id::{FlowId, FlowMap};
use crate::event::{FieldPath, Fields, Timestamp, time_from_field};
use crate::node::NodeError;
use crate::stages::window::{number, write_key};

/// The bytes of one record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measured {
    /// Bytes over a span (seconds, always > 0); `estimate` for a first sighting.
    Bytes {
        /// Bytes (of the selected direction).
        bytes: f64,
        /// Seconds the bytes were transferred in (> 0).
        span: f64,
        /// A first sighting: the rate is a lower bound.
        estimate: bool,
    },
    /// Both counters 0 or absent.
    Unmeasured,
    /// Older than the flow's previous observation.
    Stale,
    /// The same observation as the flow's previous one.
    Duplicate,
}

impl Measured {
    /// Bits per second (finite, never NaN).
    pub fn bps(bytes: f64, span: f64) -> f64 {
        let span = if span.is_finite() && span > 0.0 {
            span
        } else {
            1.0
        };
        let v = bytes * 8.0 / span;
        if v.is_finite() { v } else { 0.0 }
    }
}

/// The last lifetime counters of one flow (40 bytes: the times stay chrono's exact
/// 12-byte form, as milliseconds would round the comparisons of sub-millisecond times).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counters {
    /// Bytes in.
    pub bi: f64,
    /// Bytes out.
    pub bo: f64,
    /// When observed: `last_detected`, else the event time.
    pub obs: Timestamp,
    /// Event time of the observation (for expiry).
    pub seen: Timestamp,
}

/// Reads counters and remembers lifetime counters per flow.
pub struct Measurer {
    direction: Direction,
    flow_key: Option<Vec<FieldPath>>,
    rest_key: Vec<FieldPath>,
    flat_key: Vec<FieldPath>,
    bytes_in: FieldPath,
    bytes_out: FieldPath,
    delta_in: FieldPath,
    delta_out: FieldPath,
    delta_ms: FieldPath,
    first: FieldPath,
    last: FieldPath,
    /// `src`: a REST flow has it.
    src: FieldPath,
    /// Last counters by flow id.
    pub flows: FlowMap<Counters>,
}

fn parse(p: &str) -> Result<FieldPath, NodeError> {
    FieldPath::parse(p).map_err(|e| NodeError::from(format!("`{p}`: {e}")))
}

fn parse_all<'a>(ps: impl IntoIterator<Item = &'a str>) -> Result<Vec<FieldPath>, NodeError> {
    ps.into_iter().map(parse).collect()
}

impl Measurer {
    /// From the config.
    pub fn new(cfg: &BandwidthConfig) -> Result<Measurer, NodeError> {
        Ok(Measurer {
            direction: cfg.direction,
            flow_key: cfg
                .flow_key
                .as_ref()
                .map(|k| parse_all(k.iter().map(String::as_str)))
                .transpose()?,
            rest_key: parse_all(REST_FLOW_KEY)?,
            flat_key: parse_all(FLAT_FLOW_KEY)?,
            bytes_in: parse(&cfg.bytes_in)?,
            bytes_out: parse(&cfg.bytes_out)?,
            delta_in: parse(&cfg.delta_in)?,
            delta_out: parse(&cfg.delta_out)?,
            delta_ms: parse(&cfg.delta_ms)?,
            first: parse("timestamp_range.first_detected")?,
            last: parse("timestamp_range.last_detected")?,
            src: parse("src")?,
            flows: FlowMap::default(),
        })
    }

    /// Writes the flow key of `data` into `buf`.
    pub fn flow_key(&self, buf: &mut String, data: &(impl Fields + ?Sized)) {
        let paths = match &self.flow_key {
            Some(k) => k,
            None if data.has(&self.src) => &self.rest_key,
            None => &self.flat_key,
        };
        write_key(buf, paths, data);
    }

    /// Writes the flow key of `data` into `buf` and returns the flow's id.
    pub fn flow_id(&self, buf: &mut String, data: &(impl Fields + ?Sized)) -> FlowId {
        self.flow_key(buf, data);
        FlowId::of(buf)
    }

    fn select(&self, bi: f64, bo: f64) -> f64 {
        match self.direction {
            Direction::In => bi,
            Direction::Out => bo,
            Direction::Both => bi + bo,
        }
    }

    /// Measures one record at event time `t`; `flow` is its id (see
    /// [`Measurer::flow_id`]); `window` is the span assumed for a first sighting without
    /// `timestamp_range`.
    pub fn measure(
        &mut self,
        data: &(impl Fields + ?Sized),
        t: Timestamp,
        flow: FlowId,
        window: chrono::Duration,
    ) -> Measured {
        let di = data.field(&self.delta_in).and_then(number);
        let dout = data.field(&self.delta_out).and_then(number);
        if di.is_some() || dout.is_some() {
            let (bi, bo) = (di.unwrap_or(0.0), dout.unwrap_or(0.0));
            if bi == 0.0 && bo == 0.0 {
                return Measured::Unmeasured;
            }
            let span = data
                .field(&self.delta_ms)
                .and_then(number)
                .filter(|ms| *ms > 0.0)
                .map_or(1.0, |ms| ms / 1000.0);
            return Measured::Bytes {
                bytes: self.select(bi, bo),
                span,
                estimate: false,
            };
        }
        let bi = data.field(&self.bytes_in).and_then(number).unwrap_or(0.0);
        let bo = data.field(&self.bytes_out).and_then(number).unwrap_or(0.0);
        if bi == 0.0 && bo == 0.0 {
            return Measured::Unmeasured;
        }
        let last = data.field(&self.last).and_then(|f| time_from_field(&f));
        let obs = last.unwrap_or(t);
        if let Some(prev) = self.flows.get_mut(&flow) {
            if obs < prev.obs {
                return Measured::Stale;
            }
            if obs == prev.obs && bi == prev.bi && bo == prev.bo {
                prev.seen = prev.seen.max(t);
                return Measured::Duplicate;
            }
            // A counter that went down was reset: it counts from zero again.
            let dbi = if bi >= prev.bi { bi - prev.bi } else { bi };
            let dbo = if bo >= prev.bo { bo - prev.bo } else { bo };
            let span = seconds(obs - prev.obs);
            *prev = Counters {
                bi,
                bo,
                obs,
                seen: prev.seen.max(t),
            };
            return Measured::Bytes {
                bytes: self.select(dbi, dbo),
                span,
                estimate: false,
            };
        }
        self.flows.insert(
            flow,
            Counters {
                bi,
                bo,
                obs,
                seen: t,
            },
        );
        let first = data.field(&self.first).and_then(|f| time_from_field(&f));
        let span = match (first, last) {
            (Some(f), Some(l)) => (l - f).num_milliseconds().max(0) as f64 / 1000.0 + 1.0,
            _ => seconds(window),
        };
        Measured::Bytes {
            bytes: self.select(bi, bo),
            span,
            estimate: true,
        }
    }

    /// Forgets flows last seen at or before `cutoff`.
    pub fn expire(&mut self, cutoff: Timestamp) {
        self.flows.retain(|_, c| c.seen > cutoff);
    }
}

/// A duration in seconds; 1 when not positive.
fn seconds(d: chrono::Duration) -> f64 {
    let s = d.num_milliseconds() as f64 / 1000.0;
    if s > 0.0 { s } else { 1.0 }
}
