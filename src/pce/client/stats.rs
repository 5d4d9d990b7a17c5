//! Request counts and latencies of a PCE client, by endpoint and status, for `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// The upper bounds (seconds) of the latency histogram's buckets.
pub const BUCKETS: [f64; 9] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The requests to one endpoint that ended with one status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointStats {
    /// The path with ids replaced: `/orgs/:org/traffic_flows/async_queries/:id`.
    pub endpoint: String,
    /// The HTTP method.
    pub method: String,
    /// The HTTP status, or `error` when no answer came (timeout, connection error).
    pub status: String,
    /// How many.
    pub count: u64,
    /// Their total duration, seconds.
    pub seconds: f64,
    /// How many took at most each of [`BUCKETS`] (cumulative).
    pub buckets: [u64; BUCKETS.len()],
}

/// A client's statistics.
#[derive(Debug, Default)]
pub(crate) struct RequestStats {
    by: Mutex<BTreeMap<(String, String, String), EndpointStats>>,
}

impl RequestStats {
    /// Records one request to `path` that ended with `status` after `elapsed`.
    pub(crate) fn record(&self, method: &str, path: &str, status: &str, elapsed: Duration) {
        let endpoint = endpoint_of(path);
        let mut by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        let e = by
            .entry((endpoint.clone(), method.to_string(), status.to_string()))
            .or_insert_with(|| EndpointStats {
                endpoint,
                method: method.to_string(),
                status: status.to_string(),
                ..EndpointStats::default()
            });
        let secs = elapsed.as_secs_f64();
        e.count += 1;
        e.seconds += secs;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                e.buckets[i] += 1;
            }
        }
    }

    /// Everything recorded so far.
    pub(crate) fn snapshot(&self) -> Vec<EndpointStats> {
        self.by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// `path` with the org and ids replaced, so an endpoint is one label value:
/// `/orgs/1/events` → `/orgs/:org/events` (no braces: naive parsers of the text
/// format choke on them).
pub fn endpoint_of(path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    let mut out = Vec::new();
    let mut previous = "";
    for seg in path.split('/') {
        let id_like = !seg.is_empty()
            && (seg.chars().all(|c| c.is_ascii_digit())
                || (seg.len() >= 16 && seg.chars().all(|c| c.is_ascii_hexdigit() || c == '-')));
        out.push(match (previous, id_like) {
            ("orgs", true) => ":org",
            (_, true) => ":id",
            _ => seg,
        });
        previous = seg;
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_do_not_carry_ids() {
        assert_eq!(endpoint_of("/orgs/1/events"), "/orgs/:org/events");
        assert_eq!(
            endpoint_of(
                "/orgs/12/traffic_flows/async_queries/3f1c2b5e-1d2e-4c6f-9a1b-2c3d4e5f6a7b/download"
            ),
            "/orgs/:org/traffic_flows/async_queries/:id/download"
        );
        assert_eq!(endpoint_of("/health"), "/health");
        assert_eq!(
            endpoint_of("/orgs/1/labels?max_results=5"),
            "/orgs/:org/labels"
        );
    }

    #[test]
    fn latencies_fall_in_cumulative_buckets() {
        let s = RequestStats::default();
        s.record("GET", "/orgs/1/events", "200", Duration::from_millis(70));
        s.record("GET", "/orgs/1/events", "200", Duration::from_millis(700));
        s.record("GET", "/orgs/1/events", "429", Duration::from_millis(10));
        let snap = s.snapshot();
        let ok = snap.iter().find(|e| e.status == "200").unwrap();
        assert_eq!(ok.count, 2);
        assert_eq!(ok.buckets[0], 0); // ≤ 0.05
        assert_eq!(ok.buckets[1], 1); // ≤ 0.1
        assert_eq!(ok.buckets[4], 2); // ≤ 1
        assert!((ok.seconds - 0.77).abs() < 1e-9);
        assert_eq!(snap.iter().find(|e| e.status == "429").unwrap().count, 1);
    }
}
