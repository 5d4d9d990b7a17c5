//! When and how long to wait before sending a request again.

use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::event::Timestamp;

/// The longest `Retry-After` vigil honours; longer values are cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// The first wait after a 429 without `Retry-After` is between half this and this; it
/// doubles with every retry (up to the policy's `max`). A PCE counts requests per minute
/// (125 per user, 500 per org): the waits add up to more than a minute by the fourth
/// retry at the least (7.5 + 15 + 30 + 30 s with the default `max` of 60 s), so the
/// window that refused the request has passed.
pub(crate) const RATE_LIMIT_FIRST_WAIT: Duration = Duration::from_secs(15);

/// Bounded exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// How many times a request is sent again before giving up.
    pub max_retries: u32,
    /// The first wait's upper bound; it doubles with every attempt.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl RetryPolicy {
    /// The upper bound of the wait before retry number `attempt` (0-based).
    pub fn cap(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(20));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry number `attempt` (0-based) of a request refused with 429
    /// and no `Retry-After`: exponential from [`RATE_LIMIT_FIRST_WAIT`], at most `max`,
    /// with "equal jitter" — a random wait in `[cap / 2, cap]` — so that clients refused
    /// together spread out, yet every wait is long enough to matter.
    pub fn rate_limit_backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(20));
        let cap = RATE_LIMIT_FIRST_WAIT.saturating_mul(factor).min(self.max);
        let cap = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        if cap == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(rand::rng().random_range(cap / 2..=cap))
    }

    /// A random wait in `[0, cap(attempt)]` (full jitter).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.cap(attempt).as_millis();
        let cap = u64::try_from(cap).unwrap_or(u64::MAX);
        if cap == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(rand::rng().random_range(0..=cap))
    }
}

/// The wait a `Retry-After` header asks for: delay-seconds or an HTTP date (relative to
/// `now`). `None` when absent or unreadable.
pub fn retry_after(headers: &HeaderMap, now: Timestamp) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        (when.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or_default()
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use reqwest::header::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn rate_limit_waits_outlast_a_minute_window_within_the_bound() {
        let policy = RetryPolicy {
            max_retries: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        for _ in 0..200 {
            let waits: Vec<Duration> = (0..5).map(|a| policy.rate_limit_backoff(a)).collect();
            let bounds = [15, 30, 60, 60, 60];
            for (w, cap) in waits.iter().zip(bounds) {
                assert!(*w <= Duration::from_secs(cap), "{waits:?}");
                assert!(*w >= Duration::from_secs(cap) / 2, "{waits:?}");
            }
            let first_four: Duration = waits[..4].iter().sum();
            assert!(first_four > Duration::from_secs(60), "{waits:?}");
        }
        let short = RetryPolicy {
            max: Duration::from_secs(4),
            ..policy
        };
        assert!(short.rate_limit_backoff(3) <= Duration::from_secs(4));
    }

    #[test]
    fn parses_seconds_and_dates() {
        let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers("Thu, 01 Jan 2026 00:00:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&headers("Wed, 31 Dec 2025 00:00:30 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&headers("99999"), now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy {
            max_retries: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        assert_eq!(p.cap(0), Duration::from_secs(1));
        assert_eq!(p.cap(3), Duration::from_secs(8));
        assert_eq!(p.cap(30), Duration::from_secs(10));
        for a in 0..10 {
            assert!(p.backoff(a) <= p.cap(a));
        }
    }
}
