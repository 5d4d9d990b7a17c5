//! The `pce_traffic` source's configuration.

use schemars::JsonSchema;
use serde::Deserialize;

use super::source::PceTrafficSource;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::node::{BuildContext, NodeError, Source};
use crate::pce::client::{MAX_TRAFFIC_RESULTS, PolicyDecision};
use crate::sources::PceServices;
use crate::stages::filter::FilterConfig;
use crate::time::Duration;

/// Traffic flows of a PCE, from async Explorer queries over consecutive time slices.
///
/// Every `pce_traffic` source of one connection shares ONE query per cycle (asking for the
/// union of what they need); each source then keeps only its own `policy_decisions`. The
/// slice `[t − interval − settle, t − settle)` is queried once it is older than `settle`
/// (VENs report late); slices never overlap and the position (`pce_traffic:<connection>`
/// in the state database) survives restarts. A query refused or failed after the
/// connection's retries (which wait out a rate limit: at least a minute in all without
/// `Retry-After`, never longer than an interval) is tried again for the same slice a
/// minute later, then 2, 4, ... minutes while it keeps failing, at most `interval`.
///
/// Event fields: the PCE's flow record, plus `src.labels` / `dst.labels` (label key →
/// value, so filters can say `dst.labels.role: db`; the raw list stays at
/// `src.workload.labels`, and the map is also at `src.workload.labels_by_key`),
/// `src.ip_list_names` / `dst.ip_list_names` (names of the endpoint's IP lists, resolved
/// through the name cache when the PCE sent hrefs only) and `vigil`: `{source_type:
/// "pce_traffic", connection, slice: {start, end}, truncated}` — `truncated: true` means
/// more flows matched than the result holds: this is NOT all the traffic of the slice.
///
/// How rows are counted: the PCE's rows carry lifetime counters, and a flow comes back in
/// every slice it was detected in. A row is counted in the slice where it was last
/// detected, and a continuing flow's connections once: the first sighting of a flow
/// (`src.ip`, `dst.ip`, `service.port`, `service.proto`, `flow_direction`,
/// `first_detected`) counts whole; a later sighting's `num_connections` is the increase
/// over the previous one (the PCE's value is kept as `vigil.num_connections_total`); a
/// row already counted (no later `last_detected`) is dropped and counted as a repeat.
/// Bytes (`dst_bi`/`dst_bo`) stay lifetime counters (the `bandwidth` stage takes their
/// difference). The flows seen are remembered for `flow_memory` (at most `max_flows`),
/// in the state database too (`pce_traffic_flows:<connection>`), so `sum:
/// num_connections` counts each connection once, across restarts.
///
/// The flows of a slice are turned into events once per connection and shared by every
/// source reading it (their origin is `pce_traffic:<connection>`). Delivery is
/// at-least-once: a slice interrupted by a failure or a shutdown is queried again whole
/// (and counted as the first time).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct PceTrafficConfig {
    /// The PCE to read: a name under `connections: pce:` in the settings.
    pub connection: String,
    /// The length of a time slice and the period of the cycle. Default: `5m`. When
    /// sources of one connection differ, the shortest is used.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// How long to wait after a slice ends before querying it (VEN reporting lag).
    /// Default: `2m`. When sources of one connection differ, the longest is used.
    #[serde(default = "default_settle")]
    pub settle: Duration,
    /// Keep only these policy decisions. Default: all.
    #[serde(default)]
    pub policy_decisions: Option<Vec<Decision>>,
    /// Ask the PCE only for the flows this pipeline can keep: when every stage reading
    /// this source is a `filter`, the connection's query is narrowed to what their
    /// conditions certainly require — destination ports (`service.port`), protocols
    /// (`service.proto`), source and destination labels (`dst.labels.role: DB`) and IP
    /// lists (`src.ip: ip_list:Corporate`; only when the settings have one PCE
    /// connection, as filters look list names up in every connection's) — and leaves out
    /// the labels and addresses every filter excludes. A dimension is narrowed only when
    /// every source of the connection restricts it (the query asks for the union); a label
    /// value or IP list name the connection's name cache does not know narrows nothing.
    /// With `narrow`, the source is also handed only the flows those filters can keep
    /// (tested as the flows arrive; the filters still decide). Default: `true`; `false`
    /// always asks for, and hands on, every flow (of `policy_decisions`).
    #[serde(default = "default_true")]
    pub narrow: bool,
    /// At most this many flows per slice (1..=200000); more matches mark the flows
    /// `vigil.truncated`. Default: `200000`. The largest of a connection's sources is used.
    #[serde(default = "default_max_results")]
    pub max_results: u32,
    /// Where the first run starts (when no position is stored): `now`, or a lookback such
    /// as `1h`, counted back from the newest settled time (`now − settle`). `now`, or a
    /// lookback shorter than `interval`, reads the last settled slice; `1h` with
    /// `interval: 12m` reads five slices at once. Default: `now`.
    #[serde(default = "default_start_at")]
    pub start_at: String,
    /// How often to refresh the names of labels, IP lists and workloads. Default: `10m`.
    #[serde(default = "default_names_refresh")]
    pub names_refresh: Duration,
    /// How long a flow is remembered (in slice time) after it was last seen, so a later
    /// row of it counts only its new connections. A flow seen again after longer counts
    /// whole again. Default: `1h`. The longest of a connection's sources is used.
    #[serde(default = "default_flow_memory")]
    pub flow_memory: Duration,
    /// At most this many flows are remembered; beyond, the least recently seen are
    /// forgotten first (counted, and logged once). Default: `200000`. The largest of a
    /// connection's sources is used.
    #[serde(default = "default_max_flows")]
    pub max_flows: u32,
}

/// A policy decision of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Allowed by policy.
    Allowed,
    /// Would be blocked once enforced.
    PotentiallyBlocked,
    /// Blocked.
    Blocked,
    /// Unknown.
    Unknown,
}

impl Decision {
    /// The name in flow records.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::PotentiallyBlocked => "potentially_blocked",
            Decision::Blocked => "blocked",
            Decision::Unknown => "unknown",
        }
    }

    /// The client's form, for a query.
    pub fn to_query(self) -> PolicyDecision {
        match self {
            Decision::Allowed => PolicyDecision::Allowed,
            Decision::PotentiallyBlocked => PolicyDecision::PotentiallyBlocked,
            Decision::Blocked => PolicyDecision::Blocked,
            Decision::Unknown => PolicyDecision::Unknown,
        }
    }
}

fn example() -> serde_json::Value {
    serde_json::json!({
        "connection": "prod", "interval": "5m", "settle": "2m",
        "policy_decisions": ["blocked", "potentially_blocked"], "start_at": "1h"
    })
}

fn default_interval() -> Duration {
    Duration::from_secs(300)
}

fn default_true() -> bool {
    true
}

fn default_settle() -> Duration {
    Duration::from_secs(120)
}

fn default_max_results() -> u32 {
    MAX_TRAFFIC_RESULTS
}

fn default_start_at() -> String {
    "now".to_string()
}

fn default_names_refresh() -> Duration {
    Duration::from_secs(600)
}

fn default_flow_memory() -> Duration {
    Duration::from_secs(3600)
}

fn default_max_flows() -> u32 {
    200_000
}

impl PceTrafficConfig {
    /// The lookback of `start_at` (`now` is zero); `None` when it is neither.
    pub fn lookback(&self) -> Option<std::time::Duration> {
        match self.start_at.trim() {
            "now" => Some(std::time::Duration::ZERO),
            s => crate::time::parse_length(s).ok(),
        }
    }

    /// Structural checks.
    pub fn check(&self, problems: &mut Problems) {
        problems.positive_duration("/interval", "interval", &self.interval);
        problems.positive_duration("/names_refresh", "names_refresh", &self.names_refresh);
        problems.positive_duration("/flow_memory", "flow_memory", &self.flow_memory);
        if self.max_flows == 0 {
            problems.error(
                "/max_flows",
                codes::INVALID_VALUE,
                "max_flows must be at least 1",
            );
        }
        if self.max_results == 0 || self.max_results > MAX_TRAFFIC_RESULTS {
            problems.error(
                "/max_results",
                codes::INVALID_VALUE,
                format!("max_results must be between 1 and {MAX_TRAFFIC_RESULTS}"),
            );
        }
        if self.lookback().is_none() {
            problems.error(
                "/start_at",
                codes::INVALID_VALUE,
                "start_at must be `now` or a lookback such as `1h`",
            );
        }
        if self.policy_decisions.as_ref().is_some_and(Vec::is_empty) {
            problems.error(
                "/policy_decisions",
                codes::INVALID_VALUE,
                "policy_decisions is empty: leave it out for all decisions",
            );
        }
    }

    /// Builds the running source; it joins its connection's traffic hub when attached.
    /// `readers` are the `filter` stages reading it when every reader is one (`None`
    /// otherwise): with `narrow`, the query asks only for what they can keep. `own_lists`:
    /// the filters' `ip_list:Name` operands can only mean this connection's lists (no other
    /// connection's names are looked in); otherwise IP lists narrow nothing, since another
    /// PCE's list of the same name may hold other addresses.
    pub fn build(
        &self,
        cx: &BuildContext,
        pce: &PceServices,
        readers: Option<&[FilterConfig]>,
        own_lists: bool,
    ) -> Result<Box<dyn Source>, NodeError> {
        let hub = pce.traffic_hub(cx);
        Ok(Box::new(PceTrafficSource::new(
            hub,
            cx.id.clone(),
            self.clone(),
            self.restriction(readers, own_lists),
            self.routed_by(readers).map(<[FilterConfig]>::to_vec),
        )))
    }

    /// What the source asks its connection for, read by `readers` (see
    /// [`PceTrafficConfig::build`]).
    pub(crate) fn restriction(
        &self,
        readers: Option<&[FilterConfig]>,
        own_lists: bool,
    ) -> super::narrow::Restriction {
        let mut restriction = if self.narrow {
            super::narrow::source_restriction(readers)
        } else {
            super::narrow::Restriction::everything()
        };
        if !own_lists {
            restriction.src_ip_lists = None;
            restriction.dst_ip_lists = None;
        }
        restriction
    }

    /// The readers whose filters decide which flows the source is handed (with `narrow`).
    pub(crate) fn routed_by<'a>(
        &self,
        readers: Option<&'a [FilterConfig]>,
    ) -> Option<&'a [FilterConfig]> {
        readers.filter(|_| self.narrow)
    }
}
