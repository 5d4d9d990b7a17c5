//! When and how long to wait before sending a request again.

use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::event::Timestamp;

/// The longest `Retry-After` vigil honours; longer values are cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

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
