//! Scenarios: what the simulated estate is going through, as a function of time.
//!
//! Scenario activity repeats in fixed periods of absolute (scenario) minutes, so the same
//! time range always yields the same data, whenever the simulator was started.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::time::SharedClock;

/// What the simulated PCE sees happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scenario {
    /// Background noise only: sign-ins, sessions, policy changes, agent updates.
    #[default]
    Quiet,
    /// One source probing many ports and hosts, mostly blocked.
    PortScan,
    /// Bursts of failed logins and API-key authentication failures.
    BruteForce,
    /// A database workload sending large volumes to an internet FQDN.
    Exfiltration,
    /// VEN tampering, suspension, missed heartbeats and offline agents.
    VenTampering,
    /// The PCE's health degrades to warning and critical, with some 5xx replies.
    DegradedPce,
}

impl Scenario {
    /// Every scenario, in order.
    pub const ALL: [Scenario; 6] = [
        Scenario::Quiet,
        Scenario::PortScan,
        Scenario::BruteForce,
        Scenario::Exfiltration,
        Scenario::VenTampering,
        Scenario::DegradedPce,
    ];

    /// The command-line name, e.g. `port-scan`.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Quiet => "quiet",
            Scenario::PortScan => "port-scan",
            Scenario::BruteForce => "brute-force",
            Scenario::Exfiltration => "exfiltration",
            Scenario::VenTampering => "ven-tampering",
            Scenario::DegradedPce => "degraded-pce",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown scenario name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scenario {0:?} (expected one of: quiet, port-scan, brute-force, exfiltration, ven-tampering, degraded-pce)"
)]
pub struct UnknownScenario(pub String);

impl FromStr for Scenario {
    type Err = UnknownScenario;

    fn from_str(s: &str) -> Result<Scenario, UnknownScenario> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| UnknownScenario(s.to_string()))
    }
}

/// The minute index (minutes since the Unix epoch) of `t`.
pub(crate) fn minute_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

/// True when minute `m` lies in the active part of a repeating attack: the first `len`
/// minutes of every `period`.
pub(crate) fn in_phase(m: i64, period: i64, len: i64) -> bool {
    m.rem_euclid(period) < len
}

/// Health of the PCE cluster at minute `m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    Normal,
    Warning,
    Critical,
}

impl Health {
    /// The `status` string.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Health::Normal => "normal",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }
}

/// The cluster health `scenario` shows at minute `m`: degraded-pce cycles every
/// 30 minutes through 10 normal, 10 warning and 10 critical minutes.
pub(crate) fn health_at(scenario: Scenario, m: i64) -> Health {
    if scenario != Scenario::DegradedPce {
        return Health::Normal;
    }
    match m.rem_euclid(30) {
        0..10 => Health::Normal,
        10..20 => Health::Warning,
        _ => Health::Critical,
    }
}

/// The simulator's view of time: the caller's clock, optionally sped up by `time_scale`
/// around the moment the simulator started.
#[derive(Clone)]
pub(crate) struct SimClock {
    inner: SharedClock,
    start: DateTime<Utc>,
    scale: f64,
}

impl SimClock {
    /// Wraps `inner`; `scale` 1.0 is real time.
    pub(crate) fn new(inner: SharedClock, scale: f64) -> SimClock {
        let start = inner.now();
        SimClock {
            inner,
            start,
            scale,
        }
    }

    /// Scenario time now.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        let now = self.inner.now();
        if self.scale == 1.0 {
            return now;
        }
        let elapsed = (now - self.start).num_milliseconds() as f64 * self.scale;
        self.start + chrono::Duration::milliseconds(elapsed as i64)
    }

    /// Waits until scenario time reaches `t` (on the caller's clock, scaled back).
    pub(crate) async fn sleep_until(&self, t: DateTime<Utc>) {
        let deadline = if self.scale == 1.0 {
            t
        } else {
            let ms = (t - self.start).num_milliseconds() as f64 / self.scale;
            self.start + chrono::Duration::milliseconds(ms.ceil() as i64)
        };
        self.inner.sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_scale_speeds_up_the_clock() {
        let start = Utc::now();
        let inner = crate::time::VirtualClock::new(start);
        let clock = SimClock::new(std::sync::Arc::new(inner.clone()), 60.0);
        inner.advance(std::time::Duration::from_secs(60));
        assert_eq!(clock.now() - start, chrono::Duration::hours(1));
    }

    #[test]
    fn names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(s.to_string().parse::<Scenario>(), Ok(s));
        }
        assert!("nope".parse::<Scenario>().is_err());
    }
}
