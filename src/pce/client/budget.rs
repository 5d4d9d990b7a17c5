//! The shared request budget: a token bucket every request passes through.

use std::sync::Mutex;
use std::time::Duration;

use crate::event::Timestamp;
use crate::time::SharedClock;

/// A token bucket refilled at `requests_per_minute / 60` per second, holding at most a
/// tenth of a minute's requests. In any 60 s window at most `rpm + rpm/10` requests pass,
/// which stays under the PCE's 500/min for the default 400.
///
/// Waiters reserve their token up front (the count may go negative), so they are served
/// in arrival order and never spin.
#[derive(Debug)]
pub(crate) struct Budget {
    rate_per_sec: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    updated: Option<Timestamp>,
    /// After a 429 with `Retry-After`, nobody sends before this.
    held_until: Option<Timestamp>,
}

impl Budget {
    pub(crate) fn new(requests_per_minute: u32) -> Budget {
        let rpm = f64::from(requests_per_minute.max(1));
        let burst = (rpm / 10.0).floor().max(1.0);
        Budget {
            rate_per_sec: rpm / 60.0,
            burst,
            state: Mutex::new(State {
                tokens: burst,
                updated: None,
                held_until: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Holds every request (of every clone of the client) until `until`: the PCE said
    /// so with a 429's `Retry-After`.
    pub(crate) fn hold_until(&self, until: Timestamp) {
        let mut state = self.state();
        if state.held_until.is_none_or(|held| held < until) {
            state.held_until = Some(until);
        }
    }

    /// Takes one token; how long to wait before using it.
    fn reserve(&self, now: Timestamp) -> Duration {
        let token_wait = self.reserve_token(now);
        let held = self
            .state()
            .held_until
            .and_then(|until| (until - now).to_std().ok())
            .unwrap_or_default();
        token_wait.max(held)
    }

    fn reserve_token(&self, now: Timestamp) -> Duration {
        let mut state = self.state();
        if let Some(updated) = state.updated {
            let elapsed = (now - updated).to_std().unwrap_or_default().as_secs_f64();
            state.tokens = (state.tokens + elapsed * self.rate_per_sec).min(self.burst);
        }
        state.updated = Some(now);
        state.tokens -= 1.0;
        if state.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.tokens / self.rate_per_sec)
        }
    }

    /// Waits (on `clock`) until a request may be sent.
    pub(crate) async fn acquire(&self, clock: &SharedClock) {
        let now = clock.now();
        let wait = self.reserve(now);
        if !wait.is_zero() {
            tracing::debug!(wait = ?wait, "PCE request budget: waiting");
            clock.sleep_until(crate::time::later(now, wait)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn burst_then_spaced() {
        let budget = Budget::new(60);
        let t0 = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        for _ in 0..6 {
            assert_eq!(budget.reserve(t0), Duration::ZERO);
        }
        assert_eq!(budget.reserve(t0), Duration::from_secs(1));
        assert_eq!(budget.reserve(t0), Duration::from_secs(2));
    }

    #[test]
    fn a_hold_delays_everyone() {
        let budget = Budget::new(400);
        let t0 = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        budget.hold_until(t0 + chrono::Duration::seconds(10));
        budget.hold_until(t0 + chrono::Duration::seconds(5));
        assert_eq!(budget.reserve(t0), Duration::from_secs(10));
        assert_eq!(
            budget.reserve(t0 + chrono::Duration::seconds(4)),
            Duration::from_secs(6)
        );
        assert_eq!(
            budget.reserve(t0 + chrono::Duration::seconds(10)),
            Duration::ZERO
        );
    }
}
