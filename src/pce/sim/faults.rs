//! Faults the simulator can inject: rate-limit storms, server errors, slow replies, the
//! download and indexing quirks of real PCEs, and an API key that may only read.

/// A burst of 429 replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitStorm {
    /// How many requests get 429.
    pub requests: u32,
    /// The `Retry-After` value in seconds; `None` sends no `Retry-After` header.
    pub retry_after_secs: Option<u64>,
}

/// Faults to inject; all off by default.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Faults {
    /// The next requests answer 429.
    pub rate_limit_storm: Option<RateLimitStorm>,
    /// The next N requests answer 500, 502 or 503 (in turn) with a JSON error body.
    pub server_errors: u32,
    /// Every reply is delayed this long (real time).
    pub slow_reply_ms: u64,
    /// Traffic downloads are gzip-compressed with `Content-Encoding: gzip`.
    pub gzip_downloads: bool,
    /// The first download of each traffic query is an empty body, although
    /// `matches_count > 0`.
    pub empty_first_download: bool,
    /// Traffic queries return at most half of their matches, so `matches_count` exceeds
    /// the number of flows returned.
    pub truncate_results: bool,
    /// Events become visible this long after their timestamp.
    pub event_index_lag_secs: u64,
    /// The API key may only read: every write (a PUT, creating a label, raising the flow
    /// reporting frequency) answers 403 with an error body, and the PCE records a
    /// `request.authorization_failed` event. Reads and traffic queries still work.
    pub read_only_key: bool,
}

/// What the gate decides for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injected {
    /// A 429, with this `Retry-After` (if any).
    RateLimited(Option<u64>),
    /// A 5xx with this status.
    ServerError(u16),
}

/// Faults plus the counters that consume them.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    pub(crate) faults: Faults,
    storm_left: u32,
    errors_left: u32,
    errors_sent: u32,
}

impl FaultState {
    /// Fresh counters for `faults`.
    pub(crate) fn new(faults: Faults) -> FaultState {
        FaultState {
            storm_left: faults.rate_limit_storm.map_or(0, |s| s.requests),
            errors_left: faults.server_errors,
            errors_sent: 0,
            faults,
        }
    }

    /// Consumes one request's worth of injected failures.
    pub(crate) fn next_injection(&mut self) -> Option<Injected> {
        if self.storm_left > 0 {
            self.storm_left -= 1;
            let retry = self
                .faults
                .rate_limit_storm
                .and_then(|s| s.retry_after_secs);
            return Some(Injected::RateLimited(retry));
        }
        if self.errors_left > 0 {
            self.errors_left -= 1;
            let status = [500, 502, 503][(self.errors_sent % 3) as usize];
            self.errors_sent += 1;
            return Some(Injected::ServerError(status));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_then_errors_then_nothing() {
        let mut s = FaultState::new(Faults {
            rate_limit_storm: Some(RateLimitStorm {
                requests: 1,
                retry_after_secs: Some(3),
            }),
            server_errors: 2,
            ..Faults::default()
        });
        assert_eq!(s.next_injection(), Some(Injected::RateLimited(Some(3))));
        assert_eq!(s.next_injection(), Some(Injected::ServerError(500)));
        assert_eq!(s.next_injection(), Some(Injected::ServerError(502)));
        assert_eq!(s.next_injection(), None);
    }
}
