//! What stages report: events they set aside (late, suppressed, repeated, not
//! measurable, without the field counted or watched), keys and values they forget to stay
//! within their bounds, and failed scripts.
//!
//! These can happen for every event, so they log at `debug`, except the first eviction
//! of a node (a bound was reached: `warn`) and script failures (the first and then one in
//! [`ScriptFailed::LOG_EVERY`]).

use std::fmt::Display;

use super::{DropReason, ErrorReason, InternalEvent};
use crate::event::Timestamp;
use crate::node::NodeCounters;

/// Why an event came too late to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lateness {
    /// Older than the stage's window behind its watermark.
    BehindWatermark,
    /// Its window already alerted.
    WindowAlerted,
    /// Older than `top_n`'s `retain` behind the newest event.
    PastRetain,
    /// `top_n` already reported its window (`report`: its period, or the period ended
    /// `grace` before the clock).
    WindowReported,
}

impl Lateness {
    fn as_str(self) -> &'static str {
        match self {
            Lateness::BehindWatermark => "older than the window behind the watermark",
            Lateness::WindowAlerted => "its window already alerted",
            Lateness::PastRetain => "older than retain behind the newest event",
            Lateness::WindowReported => "its window was already reported",
        }
    }
}

/// An event too late to count: set aside.
#[derive(Debug)]
pub struct LateEvent<'a> {
    /// The stage, `pipeline.node`.
    pub stage: &'a str,
    /// The event's time.
    pub time: Timestamp,
    /// Its group key, when the stage had worked it out.
    pub key: Option<&'a str>,
    /// Why it is late.
    pub why: Lateness,
}

impl InternalEvent for LateEvent<'_> {
    fn emit(self, counters: &NodeCounters) {
        match self.key {
            Some(key) => {
                tracing::debug!(stage = %self.stage, time = %self.time, key = %key, "late event: {}", self.why.as_str());
            }
            None => {
                tracing::debug!(stage = %self.stage, time = %self.time, "late event: {}", self.why.as_str());
            }
        }
        counters.add_dropped(DropReason::Late, 1);
    }
}

/// Why `bandwidth` could not measure a flow record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmeasurable {
    /// Both its byte counters are 0 or absent.
    NoBytes,
    /// It is older than the flow's previous observation.
    Stale,
    /// It is the same observation as the flow's previous one.
    Duplicate,
}

impl Unmeasurable {
    fn reason(self) -> DropReason {
        match self {
            Unmeasurable::NoBytes => DropReason::Unmeasured,
            Unmeasurable::Stale => DropReason::Stale,
            Unmeasurable::Duplicate => DropReason::Duplicate,
        }
    }
}

/// A flow record `bandwidth` cannot measure: set aside.
#[derive(Debug)]
pub struct FlowNotMeasured<'a> {
    /// The stage.
    pub stage: &'a str,
    /// Why.
    pub why: Unmeasurable,
}

impl InternalEvent for FlowNotMeasured<'_> {
    fn emit(self, counters: &NodeCounters) {
        let reason = self.why.reason();
        tracing::debug!(stage = %self.stage, reason = %reason, "flow not measured");
        counters.add_dropped(reason, 1);
    }
}

/// An event without the field `distinct_count` counts (missing or null; for a tuple, any
/// of its fields): set aside, counted as `unmeasured`. Logged at `debug` (it can happen
/// for every event).
#[derive(Debug)]
pub struct DistinctFieldMissing<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The event's time.
    pub time: Timestamp,
}

impl InternalEvent for DistinctFieldMissing<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::debug!(stage = %self.stage, time = %self.time, "event without the field counted: not counted");
        counters.add_dropped(DropReason::Unmeasured, 1);
    }
}

/// An event without the field `new_term` watches (missing or null; for a tuple, any of
/// its fields): no value to learn or alert on, counted as `unmeasured`. Logged at
/// `debug` (it can happen for every event).
#[derive(Debug)]
pub struct TermFieldMissing<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The event's time.
    pub time: Timestamp,
}

impl InternalEvent for TermFieldMissing<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::debug!(stage = %self.stage, time = %self.time, "event without the watched field: no value");
        counters.add_dropped(DropReason::Unmeasured, 1);
    }
}

/// Values `new_term` forgot early to stay within a bound (`max_terms` of a key, or
/// `max_total_terms` over all): each alerts again as new when it is next seen. The
/// stage's first eviction under each bound is a warning (raise the bound, or group by
/// less); the later ones are logged at `debug`.
#[derive(Debug)]
pub struct TermsEvicted<'a> {
    /// The stage.
    pub stage: &'a str,
    /// How many values were forgotten.
    pub terms: u64,
    /// The bound's option: `max_terms` or `max_total_terms`.
    pub bound: &'static str,
    /// Its value.
    pub limit: usize,
    /// Whether this is the first eviction under this bound since the stage started.
    pub first: bool,
}

impl InternalEvent for TermsEvicted<'_> {
    fn emit(self, counters: &NodeCounters) {
        if self.terms == 0 {
            return;
        }
        counters.add_dropped(DropReason::Evicted, self.terms);
        if self.first {
            tracing::warn!(stage = %self.stage, bound = self.bound, limit = self.limit, evicted = self.terms, "new_term holds as many values as `{}` allows: forgetting the least recently seen (they alert again as new when seen)", self.bound);
        } else {
            tracing::debug!(stage = %self.stage, bound = self.bound, limit = self.limit, evicted = self.terms, "new_term: values evicted");
        }
    }
}

/// A filter's `ip_list:Name` operand names no IP list of the PCE (the name caches of
/// every connection are loaded and none has it): the operand matches only the name
/// itself. Reported once per name and stage (a warning and one error), never per event.
#[derive(Debug)]
pub struct IpListUnknown<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The IP list name as written.
    pub name: &'a str,
    /// The closest name the PCE has, if one is close.
    pub closest: Option<&'a str>,
}

impl InternalEvent for IpListUnknown<'_> {
    fn emit(self, counters: &NodeCounters) {
        let hint = self
            .closest
            .map(|c| format!("; did you mean `ip_list:{c}`?"))
            .unwrap_or_default();
        tracing::warn!(
            stage = %self.stage,
            ip_list = %self.name,
            "`ip_list:{}` names no IP list of the PCE: it matches only values equal to the name{hint}",
            self.name
        );
        counters.add_errors(ErrorReason::UnknownIpList, 1);
    }
}

/// An event without a usable number at `top_n`'s `sum`: skipped.
#[derive(Debug)]
pub struct NothingToSum<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The `sum` field.
    pub field: &'a str,
}

impl InternalEvent for NothingToSum<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::debug!(stage = %self.stage, field = %self.field, "top_n: event skipped, no usable number to sum");
        counters.add_dropped(DropReason::Unmeasured, 1);
    }
}

/// An event of a new key when its period already holds `max_keys` keys (`report`): not
/// counted, and counted as `evicted`. The first of each period is a warning (raise
/// `max_keys`, or group by less); the later ones are logged at `debug`.
#[derive(Debug)]
pub struct KeyNotCounted<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The period (`2026-03`).
    pub period: &'a str,
    /// The bound.
    pub max_keys: usize,
    /// Whether it is the period's first.
    pub first: bool,
}

impl InternalEvent for KeyNotCounted<'_> {
    fn emit(self, counters: &NodeCounters) {
        counters.add_dropped(DropReason::Evicted, 1);
        if self.first {
            tracing::warn!(stage = %self.stage, period = %self.period, max_keys = self.max_keys, "report: the period holds `max_keys` keys; events of further keys are not counted (counted as evicted)");
        } else {
            tracing::debug!(stage = %self.stage, period = %self.period, max_keys = self.max_keys, "report: event of a key past max_keys not counted");
        }
    }
}

/// Group keys forgotten early to stay under `max_keys`. The node's first eviction is a
/// warning (the bound was reached: raise it, or group by less); the later ones are
/// logged at `debug`.
#[derive(Debug)]
pub struct KeysEvicted<'a> {
    /// The stage.
    pub stage: &'a str,
    /// How many keys were forgotten.
    pub keys: u64,
    /// The bound.
    pub max_keys: usize,
    /// What the warning says, e.g. "dedupe holds `max_keys` keys: forgetting the oldest
    /// early".
    pub warning: &'static str,
}

impl InternalEvent for KeysEvicted<'_> {
    fn emit(self, counters: &NodeCounters) {
        if self.keys == 0 {
            return;
        }
        let total = counters.add_dropped(DropReason::Evicted, self.keys);
        if total == self.keys {
            tracing::warn!(stage = %self.stage, max_keys = self.max_keys, evicted = self.keys, "{}", self.warning);
        } else {
            tracing::debug!(stage = %self.stage, max_keys = self.max_keys, evicted = self.keys, "{}", self.warning);
        }
    }
}

/// A key's window holds the most values it may (`metric`'s `max_values`): its oldest
/// value leaves early. The node's first is a warning, the later ones are logged at
/// `debug`.
#[derive(Debug)]
pub struct ValueDroppedEarly<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The group key.
    pub key: &'a str,
    /// The bound.
    pub max_values: usize,
}

impl InternalEvent for ValueDroppedEarly<'_> {
    fn emit(self, counters: &NodeCounters) {
        if counters.add_dropped(DropReason::Evicted, 1) == 1 {
            tracing::warn!(stage = %self.stage, key = %self.key, max_values = self.max_values, "a window holds `max_values` values: its oldest leaves early and the aggregate is marked an estimate");
        } else {
            tracing::debug!(stage = %self.stage, key = %self.key, max_values = self.max_values, "value dropped early");
        }
    }
}

/// A key's window holds more distinct event times than it may (`spike`, `ratio`): its
/// points were merged into coarser slots. Nothing is dropped — every event still counts
/// — but merged events leave their window a little later. The stage's first is a
/// warning, the later ones are logged at `debug`.
#[derive(Debug)]
pub struct PointsCoarsened<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The group key.
    pub key: &'a str,
    /// How many points were merged away.
    pub merged: usize,
    /// Whether it is the stage's first.
    pub first: bool,
}

impl InternalEvent for PointsCoarsened<'_> {
    fn emit(self, _counters: &NodeCounters) {
        if self.first {
            tracing::warn!(stage = %self.stage, key = %self.key, merged = self.merged, "a key's window holds more distinct event times than it may: its times are merged into coarser slots (every event still counts; counted as `coarsened` in the stage's state)");
        } else {
            tracing::debug!(stage = %self.stage, key = %self.key, merged = self.merged, "window times coarsened");
        }
    }
}

/// `top_n` holds `max_events` events: the oldest is dropped from its tables. The
/// node's first is a warning, the later ones are logged at `debug`.
#[derive(Debug)]
pub struct OldestEventDropped<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The bound.
    pub max_events: usize,
}

impl InternalEvent for OldestEventDropped<'_> {
    fn emit(self, counters: &NodeCounters) {
        if counters.add_dropped(DropReason::Evicted, 1) == 1 {
            tracing::warn!(stage = %self.stage, max_events = self.max_events, "top_n holds `max_events` events: dropping the oldest");
        } else {
            tracing::debug!(stage = %self.stage, max_events = self.max_events, "top_n holds `max_events` events: dropping the oldest");
        }
    }
}

/// An event whose key passed within the `cooldown` stage's period: suppressed.
#[derive(Debug)]
pub struct CooldownSuppressed<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The event's key.
    pub key: &'a str,
}

impl InternalEvent for CooldownSuppressed<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::debug!(stage = %self.stage, key = %self.key, "cooldown: suppressed");
        counters.add_dropped(DropReason::Cooldown, 1);
    }
}

/// A repeat within `dedupe`'s window: dropped.
#[derive(Debug)]
pub struct RepeatDropped<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The event's key.
    pub key: &'a str,
}

impl InternalEvent for RepeatDropped<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::debug!(stage = %self.stage, key = %self.key, "dedupe: repeat dropped");
        counters.add_dropped(DropReason::Duplicate, 1);
    }
}

/// What a failed script was doing, which decides how its failure counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScriptRole {
    /// A `where:` expression: its event is dropped (`where_error`).
    Where,
    /// A `script` stage's script: its event is passed on, the failure is an error.
    #[default]
    Script,
}

/// A script or `where:` run failed. Logged the first time and then once per
/// [`ScriptFailed::LOG_EVERY`] failures of the stage, so a script failing on every event
/// does not flood the log.
pub struct ScriptFailed<'a> {
    /// The stage.
    pub stage: &'a str,
    /// The script: `where` or its path.
    pub script: &'a str,
    /// The stage's failures so far, this one included.
    pub failures: u64,
    /// Where and why it failed.
    pub error: &'a dyn Display,
    /// How the failure counts.
    pub role: ScriptRole,
}

impl ScriptFailed<'_> {
    /// Failures between two log lines.
    pub const LOG_EVERY: u64 = 1000;
}

impl InternalEvent for ScriptFailed<'_> {
    fn emit(self, counters: &NodeCounters) {
        if self.failures == 1 || self.failures % Self::LOG_EVERY == 0 {
            tracing::warn!(
                stage = %self.stage,
                script = %self.script,
                errors = self.failures,
                "script error at {} (counted; logged once per {} errors)",
                self.error,
                Self::LOG_EVERY
            );
        }
        match self.role {
            ScriptRole::Where => {
                counters.add_dropped(DropReason::WhereError, 1);
            }
            ScriptRole::Script => counters.add_errors(ErrorReason::Script, 1),
        }
    }
}
