//! Traffic flows: generated per minute from the seed and the scenario, filtered like an
//! async Explorer query and rendered as the download's JSON array.
//!
//! The simulator answers like a real PCE returning **lifetime rows** (see
//! `shared/pce-api.md`: REST rows carry lifetime counters, and one connection can appear in
//! several rows). A flow is generated once, in the minute it is first detected, with its
//! whole life (`first`..`last`) and its totals. A query over `[start, end)` returns the
//! flows *detected in that range*: `first < end` and `last ≥ start` (`last` clipped to the
//! simulator's now). A long-lived flow therefore comes back in every slice it overlaps, as
//! a lifetime row: `first_detected` is its real first detection (the same in every slice),
//! `last_detected` is `min(last, end − 1 s, now)`, and `num_connections`, `dst_bi` and
//! `dst_bo` are cumulative as of `last_detected` (growing linearly from at least one
//! connection at `first` to the totals at `last`; unmeasured flows stay 0/0); a row cut
//! short of the flow's end says `state: active`. A flow that ended before a slice does not
//! come back in it. This is what a consumer must cope with — summing such rows naively
//! over-counts — and everything stays a pure function of the seed, the scenario, the
//! density and the query, so the same question always gets the same answer.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use chrono::{DateTime, NaiveDate, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::estate::{Estate, stream_rng};
use super::scenario::{Scenario, in_phase, minute_of};

const STREAM_FLOWS: u64 = 0xF10E;
/// Background flows per minute by default.
pub(crate) const DEFAULT_FLOWS_PER_MINUTE: u32 = 20;
/// The addresses of the client pool (`10.200.0.1` ..= `10.200.255.254`) that unmanaged
/// sources also come from when the density is above the default.
const CLIENT_POOL: u32 = 65_534;
/// The longest a flow lasts; queries look back this far for overlapping flows.
pub(crate) const MAX_FLOW_SECS: i64 = 600;
/// Flows older than this (before the query's creation) are gone, as on a real PCE.
const RETENTION_SECS: i64 = 30 * 24 * 3600;
/// The largest `max_results` a query may ask for.
pub(crate) const MAX_RESULTS: usize = 200_000;

/// One end of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ep {
    /// A workload, by index.
    Workload(u32),
    /// An internet destination, by index.
    Internet(u32),
    /// An unmanaged address, by index.
    Unmanaged(u32),
    /// A scanner, by index.
    Scanner(u32),
    /// An unmanaged client of the pool (dense simulations only), by index.
    Client(u32),
}

/// A policy decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Allowed,
    PotentiallyBlocked,
    Blocked,
    Unknown,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::PotentiallyBlocked => "potentially_blocked",
            Decision::Blocked => "blocked",
            Decision::Unknown => "unknown",
        }
    }

    /// Parses an API name.
    pub(crate) fn parse(s: &str) -> Option<Decision> {
        Some(match s {
            "allowed" => Decision::Allowed,
            "potentially_blocked" => Decision::PotentiallyBlocked,
            "blocked" => Decision::Blocked,
            "unknown" => Decision::Unknown,
            _ => return None,
        })
    }
}

/// One flow record, compact; rendered to JSON on download.
#[derive(Debug, Clone)]
pub(crate) struct Flow {
    pub(crate) src: Ep,
    pub(crate) dst: Ep,
    /// `None` for ICMP.
    pub(crate) port: Option<u16>,
    pub(crate) proto: u8,
    pub(crate) process: Option<(&'static str, &'static str)>,
    pub(crate) num_connections: u32,
    pub(crate) decision: Decision,
    pub(crate) state: &'static str,
    pub(crate) inbound: bool,
    pub(crate) dst_bi: u64,
    pub(crate) dst_bo: u64,
    pub(crate) first: i64,
    pub(crate) last: i64,
    pub(crate) seq_id: u32,
    pub(crate) network: u8,
    /// ICMP flows: whether the service says `"port": "All"`.
    pub(crate) port_all: bool,
}

/// Services by role index (see `estate::ROLES`).
/// A service a role listens on: port, protocol, optional (process, user).
type RoleService = (u16, u8, Option<(&'static str, &'static str)>);

const ROLE_SERVICES: [&[RoleService]; 8] = [
    &[(443, 6, Some(("nginx", "www-data"))), (80, 6, None)],
    &[(8080, 6, Some(("java", "app"))), (8443, 6, None)],
    &[
        (5432, 6, Some(("postgres", "postgres"))),
        (3306, 6, Some(("mysqld", "mysql"))),
    ],
    &[(6379, 6, Some(("redis-server", "redis")))],
    &[
        (53, 17, Some(("dns.exe", "NT AUTHORITY\\SYSTEM"))),
        (389, 6, None),
        (445, 6, None),
        (88, 17, None),
    ],
    &[
        (
            3389,
            6,
            Some(("svchost.exe", "NT AUTHORITY\\NETWORK SERVICE")),
        ),
        (5985, 6, None),
        (22, 6, None),
    ],
    &[(443, 6, None), (80, 6, None)],
    &[(5672, 6, Some(("beam.smp", "rabbitmq"))), (9092, 6, None)],
];
const STATES: [&str; 5] = ["active", "closed", "timed out", "snapshot", "new"];
const SCAN_PORTS: [u16; 16] = [
    21, 22, 23, 25, 80, 110, 135, 139, 443, 445, 1433, 3306, 3389, 5432, 5985, 8080,
];

fn pick_decision(rng: &mut ChaCha8Rng) -> Decision {
    match rng.random_range(0..100) {
        0..45 => Decision::Allowed,
        45..85 => Decision::PotentiallyBlocked,
        85..93 => Decision::Blocked,
        _ => Decision::Unknown,
    }
}

fn pick_bytes(rng: &mut ChaCha8Rng) -> (u64, u64) {
    match rng.random_range(0..100) {
        0..80 => (0, 0),
        80..95 => (rng.random_range(60..50_000), rng.random_range(60..50_000)),
        _ => (
            rng.random_range(1 << 30..1 << 41),
            rng.random_range(1 << 30..1 << 41),
        ),
    }
}

/// What flows derive from: the estate, the seed, the scenario and the density.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Generator<'a> {
    /// The estate flows run between.
    pub(crate) estate: &'a Estate,
    /// Seeds every minute's flows.
    pub(crate) seed: u64,
    /// Adds the scenario's flows to the background.
    pub(crate) scenario: Scenario,
    /// Background flows first detected per minute.
    pub(crate) per_minute: u32,
}

/// The sizes background flows draw endpoints from, counted once per minute.
#[derive(Debug, Clone, Copy)]
struct Pools {
    managed: u32,
    k8s: u32,
    unmanaged: u32,
    clients: u32,
}

impl Generator<'_> {
    /// Every flow first detected in minute `m`, in a fixed order.
    pub(crate) fn minute(&self, m: i64) -> Vec<Flow> {
        let estate = self.estate;
        let mut rng = stream_rng(self.seed, STREAM_FLOWS, m);
        let per_minute = self.per_minute as usize;
        let mut out = Vec::with_capacity(per_minute + 8);
        let managed = estate.managed_workloads().count().max(1) as u32;
        let pools = Pools {
            managed,
            k8s: (estate.workloads.len() as u32).saturating_sub(managed),
            unmanaged: estate.unmanaged.len() as u32,
            // At the default density the estate's own clients are realistic; a dense
            // simulation (a benchmark's 200,000-flow slice) needs thousands of sources.
            clients: if self.per_minute > DEFAULT_FLOWS_PER_MINUTE {
                CLIENT_POOL
            } else {
                0
            },
        };
        for _ in 0..per_minute {
            out.push(background_flow(&mut rng, estate, pools, m));
        }
        match self.scenario {
            Scenario::PortScan if in_phase(m, 10, 3) => port_scan(&mut rng, estate, m, &mut out),
            Scenario::Exfiltration if in_phase(m, 20, 5) => {
                out.push(exfiltration(&mut rng, estate, m))
            }
            _ => {}
        }
        out
    }
}

fn base_flow(rng: &mut ChaCha8Rng, m: i64, src: Ep, dst: Ep) -> Flow {
    let first = m * 60 + rng.random_range(0..60);
    let duration = if rng.random_bool(0.6) {
        0
    } else {
        rng.random_range(1..MAX_FLOW_SECS)
    };
    let (dst_bi, dst_bo) = pick_bytes(rng);
    Flow {
        src,
        dst,
        port: Some(443),
        proto: 6,
        process: None,
        num_connections: if rng.random_bool(0.7) {
            rng.random_range(1..5)
        } else {
            rng.random_range(5..4000)
        },
        decision: pick_decision(rng),
        state: STATES[rng.random_range(0..STATES.len())],
        inbound: rng.random_bool(0.5),
        dst_bi,
        dst_bo,
        first,
        last: first + duration,
        seq_id: rng.random_range(1..1000),
        network: 0,
        port_all: false,
    }
}

fn background_flow(rng: &mut ChaCha8Rng, estate: &Estate, pools: Pools, m: i64) -> Flow {
    let Pools {
        managed,
        k8s,
        unmanaged,
        clients,
    } = pools;
    let any_wl = |rng: &mut ChaCha8Rng| Ep::Workload(rng.random_range(0..managed));
    match rng.random_range(0..100) {
        0..55 => {
            let (src, dst) = (any_wl(rng), any_wl(rng));
            let mut f = base_flow(rng, m, src, dst);
            apply_role_service(rng, estate, &mut f);
            f
        }
        55..75 => {
            // Never the exfiltration destination in the background.
            let n = estate.internet.len().saturating_sub(1).max(1) as u32;
            let dst = Ep::Internet(rng.random_range(0..n));
            let src = any_wl(rng);
            let mut f = base_flow(rng, m, src, dst);
            f.port = Some(if rng.random_bool(0.8) { 443 } else { 80 });
            f.inbound = false;
            f.network = 1;
            f
        }
        75..85 => {
            let i = rng.random_range(0..unmanaged + clients);
            let src = if i < unmanaged {
                Ep::Unmanaged(i)
            } else {
                Ep::Client(i - unmanaged)
            };
            let dst = any_wl(rng);
            let mut f = base_flow(rng, m, src, dst);
            apply_role_service(rng, estate, &mut f);
            f.inbound = true;
            f
        }
        85..90 => {
            let (src, dst) = (any_wl(rng), any_wl(rng));
            let mut f = base_flow(rng, m, src, dst);
            f.port = None;
            f.proto = 1;
            f.port_all = rng.random_bool(0.5);
            f
        }
        _ if k8s > 0 => {
            let src = Ep::Workload(managed + rng.random_range(0..k8s));
            let dst = Ep::Workload(managed + rng.random_range(0..k8s));
            let mut f = base_flow(rng, m, src, dst);
            f.port = Some([80, 8080, 50051, 6379, 7070][rng.random_range(0..5)]);
            f.network = 2;
            f
        }
        _ => {
            let (src, dst) = (any_wl(rng), any_wl(rng));
            base_flow(rng, m, src, dst)
        }
    }
}

fn apply_role_service(rng: &mut ChaCha8Rng, estate: &Estate, f: &mut Flow) {
    let Ep::Workload(d) = f.dst else { return };
    let role = estate.workloads[d as usize].role;
    let services = ROLE_SERVICES[role % ROLE_SERVICES.len()];
    let (port, proto, process) = services[rng.random_range(0..services.len())];
    f.port = Some(port);
    f.proto = proto;
    f.process = process;
}

fn port_scan(rng: &mut ChaCha8Rng, estate: &Estate, m: i64, out: &mut Vec<Flow>) {
    let managed = estate.managed_workloads().count().max(1) as u32;
    let scanner = Ep::Scanner((m.rem_euclid(30) / 10) as u32 % estate.scanners.len().max(1) as u32);
    for _ in 0..rng.random_range(60..120) {
        let dst = Ep::Workload(rng.random_range(0..managed));
        let mut f = base_flow(rng, m, scanner, dst);
        f.port = Some(if rng.random_bool(0.5) {
            SCAN_PORTS[rng.random_range(0..SCAN_PORTS.len())]
        } else {
            rng.random_range(1..1025)
        });
        f.decision = if rng.random_bool(0.9) {
            [Decision::Blocked, Decision::PotentiallyBlocked][rng.random_range(0..2)]
        } else {
            Decision::Allowed
        };
        f.state = if rng.random_bool(0.5) {
            "closed"
        } else {
            "timed out"
        };
        f.num_connections = 1;
        (f.dst_bi, f.dst_bo) = (0, 0);
        f.last = f.first;
        f.inbound = true;
        f.network = 1;
        out.push(f);
    }
}

fn exfiltration(rng: &mut ChaCha8Rng, estate: &Estate, m: i64) -> Flow {
    let src = Ep::Workload(estate.exfil_source as u32);
    let dst = Ep::Internet(estate.exfil_destination as u32);
    let mut f = base_flow(rng, m, src, dst);
    f.port = Some(443);
    f.proto = 6;
    f.process = Some(("curl", "postgres"));
    f.decision = Decision::Allowed;
    f.state = "active";
    f.inbound = false;
    f.network = 1;
    f.num_connections = rng.random_range(1..4);
    f.dst_bi = rng.random_range(10_000_000..50_000_000);
    f.dst_bo = rng.random_range(2_000_000_000..9_000_000_000);
    f.last = f.first + rng.random_range(30..MAX_FLOW_SECS);
    f
}

/// An actor of a traffic query.
#[derive(Debug, Clone, PartialEq)]
enum Actor {
    Label(Option<usize>),
    Workload(String),
    IpList(Option<usize>),
    Ip(String),
    AllManaged,
    Never,
}

/// `{include: [[actor]], exclude: [actor]}`.
#[derive(Debug, Clone, Default, PartialEq)]
struct ActorFilter {
    include: Vec<Vec<Actor>>,
    exclude: Vec<Actor>,
}

/// A service constraint.
#[derive(Debug, Clone, PartialEq)]
struct ServiceFilter {
    port: Option<u16>,
    to_port: Option<u16>,
    proto: Option<u8>,
}

/// A parsed async traffic query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TrafficQuery {
    start: i64,
    end: i64,
    decisions: Vec<Decision>,
    /// The maximum number of flows returned.
    pub(crate) max_results: usize,
    sources: ActorFilter,
    destinations: ActorFilter,
    services_include: Vec<ServiceFilter>,
    services_exclude: Vec<ServiceFilter>,
    either: bool,
    exclude_workloads_from_ip_lists: bool,
}

/// A query body the simulator rejects (406, like a real PCE).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traffic query: {0}")]
pub(crate) struct InvalidQuery(pub(crate) String);

fn bad(msg: impl Into<String>) -> InvalidQuery {
    InvalidQuery(msg.into())
}

fn parse_date(v: Option<&Value>, name: &str, end_of_day: bool) -> Result<i64, InvalidQuery> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{name} is required")))?;
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| bad(format!("{name}: {s:?} is not a date")))?;
    // The range is half-open: a bare end date includes the whole day.
    let d = if end_of_day {
        d.succ_opt().unwrap_or(d)
    } else {
        d
    };
    Ok(d.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp()))
}

fn href_of<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key)?.get("href")?.as_str()
}

fn parse_actor(estate: &Estate, v: &Value) -> Result<Actor, InvalidQuery> {
    if let Some(h) = href_of(v, "label") {
        return Ok(Actor::Label(estate.labels.iter().position(|l| l.href == h)));
    }
    if let Some(h) = href_of(v, "workload") {
        return Ok(Actor::Workload(h.to_string()));
    }
    if let Some(h) = href_of(v, "ip_list") {
        let id: Option<u64> = h.rsplit('/').next().and_then(|s| s.parse().ok());
        return Ok(Actor::IpList(
            id.and_then(|id| estate.ip_lists.iter().position(|l| l.id == id)),
        ));
    }
    if href_of(v, "label_group").is_some() {
        return Ok(Actor::Never);
    }
    if let Some(ip) = v.get("ip_address").and_then(Value::as_str) {
        return Ok(Actor::Ip(ip.to_string()));
    }
    if v.get("actors").and_then(Value::as_str) == Some("ams") {
        return Ok(Actor::AllManaged);
    }
    Err(bad(format!("unsupported actor {v}")))
}

fn parse_actors(estate: &Estate, v: Option<&Value>) -> Result<ActorFilter, InvalidQuery> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(ActorFilter::default());
    };
    let list = |k: &str| {
        v.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let include = list("include")
        .iter()
        .map(|group| match group {
            Value::Array(g) => g.iter().map(|a| parse_actor(estate, a)).collect(),
            single => Ok(vec![parse_actor(estate, single)?]),
        })
        .collect::<Result<Vec<Vec<Actor>>, InvalidQuery>>()?
        .into_iter()
        .filter(|g| !g.is_empty())
        .collect();
    let exclude = list("exclude")
        .iter()
        .map(|a| parse_actor(estate, a))
        .collect::<Result<_, _>>()?;
    Ok(ActorFilter { include, exclude })
}

fn parse_services(v: Option<&Value>, key: &str) -> Vec<ServiceFilter> {
    let num = |s: &Value, k: &str| s.get(k).and_then(Value::as_u64);
    v.and_then(|v| v.get(key))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| ServiceFilter {
                    port: num(s, "port").and_then(|p| u16::try_from(p).ok()),
                    to_port: num(s, "to_port").and_then(|p| u16::try_from(p).ok()),
                    proto: num(s, "proto").and_then(|p| u8::try_from(p).ok()),
                })
                .collect()
        })
        .unwrap_or_default()
}

impl TrafficQuery {
    /// Parses a request body.
    pub(crate) fn parse(estate: &Estate, body: &Value) -> Result<TrafficQuery, InvalidQuery> {
        if !body.is_object() {
            return Err(bad("the body must be a JSON object"));
        }
        let start = parse_date(body.get("start_date"), "start_date", false)?;
        let end = parse_date(body.get("end_date"), "end_date", true)?;
        let decisions = body
            .get("policy_decisions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|d| {
                        d.as_str()
                            .and_then(Decision::parse)
                            .ok_or_else(|| bad(format!("unknown policy decision {d}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let max_results = match body.get("max_results") {
            None | Some(Value::Null) => 100_000,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| bad("max_results must be a number"))?
                .clamp(1, MAX_RESULTS as u64) as usize,
        };
        Ok(TrafficQuery {
            start,
            end,
            decisions,
            max_results,
            sources: parse_actors(estate, body.get("sources"))?,
            destinations: parse_actors(estate, body.get("destinations"))?,
            services_include: parse_services(body.get("services"), "include"),
            services_exclude: parse_services(body.get("services"), "exclude"),
            either: body
                .get("sources_destinations_query_op")
                .and_then(Value::as_str)
                == Some("or"),
            exclude_workloads_from_ip_lists: body
                .get("exclude_workloads_from_ip_list_query")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        })
    }

    fn actor_matches(&self, estate: &Estate, a: &Actor, ep: Ep) -> bool {
        let ip = ep_ip(estate, ep);
        match (a, ep) {
            (Actor::Label(Some(l)), Ep::Workload(w)) => {
                estate.workloads[w as usize].labels.contains(l)
            }
            (Actor::Workload(h), Ep::Workload(w)) => &estate.workloads[w as usize].href == h,
            (Actor::AllManaged, Ep::Workload(w)) => !estate.workloads[w as usize].kubernetes,
            (Actor::IpList(Some(l)), Ep::Workload(_)) => {
                !self.exclude_workloads_from_ip_lists && estate.ip_lists[*l].contains(ip)
            }
            (Actor::IpList(Some(l)), _) => estate.ip_lists[*l].contains(ip),
            (Actor::Ip(s), _) => s.parse::<Ipv4Addr>().is_ok_and(|a| a == ip),
            _ => false,
        }
    }

    fn side_matches(&self, estate: &Estate, f: &ActorFilter, ep: Ep) -> bool {
        let included = f.include.is_empty()
            || f.include
                .iter()
                .any(|g| g.iter().all(|a| self.actor_matches(estate, a, ep)));
        included && !f.exclude.iter().any(|a| self.actor_matches(estate, a, ep))
    }

    fn service_matches(flow: &Flow, s: &ServiceFilter) -> bool {
        let port_ok = match (s.port, flow.port) {
            (None, _) => true,
            (Some(p), Some(fp)) => fp >= p && fp <= s.to_port.unwrap_or(p),
            (Some(_), None) => false,
        };
        port_ok && s.proto.is_none_or(|p| p == flow.proto)
    }

    /// True when `flow` (a row already inside the query's time range) answers the query's
    /// decisions, services and actors.
    pub(crate) fn matches(&self, estate: &Estate, flow: &Flow) -> bool {
        if !self.decisions.is_empty() && !self.decisions.contains(&flow.decision) {
            return false;
        }
        let services_ok = (self.services_include.is_empty()
            || self
                .services_include
                .iter()
                .any(|s| Self::service_matches(flow, s)))
            && !self
                .services_exclude
                .iter()
                .any(|s| Self::service_matches(flow, s));
        if !services_ok {
            return false;
        }
        let src = self.side_matches(estate, &self.sources, flow.src);
        let dst = self.side_matches(estate, &self.destinations, flow.dst);
        if self.either && !(self.sources.include.is_empty() && self.destinations.include.is_empty())
        {
            let src_named = !self.sources.include.is_empty() && src;
            let dst_named = !self.destinations.include.is_empty() && dst;
            (src_named || dst_named) && !self.excluded(estate, flow)
        } else {
            src && dst
        }
    }

    fn excluded(&self, estate: &Estate, flow: &Flow) -> bool {
        self.sources
            .exclude
            .iter()
            .any(|a| self.actor_matches(estate, a, flow.src))
            || self
                .destinations
                .exclude
                .iter()
                .any(|a| self.actor_matches(estate, a, flow.dst))
    }
}

fn ep_ip(estate: &Estate, ep: Ep) -> Ipv4Addr {
    match ep {
        Ep::Workload(i) => estate.workloads[i as usize].ip,
        Ep::Internet(i) => estate.internet[i as usize].ip,
        Ep::Unmanaged(i) => estate.unmanaged[i as usize].ip,
        Ep::Scanner(i) => estate.scanners[i as usize].ip,
        Ep::Client(i) => client_ip(i),
    }
}

/// The address of pool client `i`: `10.200.0.1` onwards.
fn client_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 1)) + i % CLIENT_POOL)
}

/// The row a query over `[start, end)` answered at `now` (seconds) returns for `flow`, if
/// the flow was detected in that range: a lifetime row (see the module documentation).
pub(crate) fn lifetime_row(mut flow: Flow, start: i64, end: i64, now: i64) -> Option<Flow> {
    if flow.first >= end || flow.first > now {
        return None;
    }
    let last = flow.last.min(end - 1).min(now);
    if last < start {
        return None;
    }
    if last < flow.last {
        // Cumulative as of `last`: linear over the flow's life, at least one connection.
        let (lived, life) = (
            (last - flow.first + 1) as u128,
            (flow.last - flow.first + 1) as u128,
        );
        let part = |total: u64| (u128::from(total) * lived / life) as u64;
        flow.num_connections = (part(u64::from(flow.num_connections)) as u32).max(1);
        flow.dst_bi = part(flow.dst_bi);
        flow.dst_bo = part(flow.dst_bo);
        flow.state = "active";
        flow.last = last;
    }
    Some(flow)
}

/// The outcome of running a query.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryResult {
    /// How many flows matched in all.
    pub(crate) matches_count: usize,
    /// The flows kept (at most `max_results`).
    pub(crate) flows: Vec<Flow>,
}

/// Runs `q` at `until` (the simulator's now): the lifetime rows of the flows detected in
/// the query's range, keeping at most `limit` of them.
pub(crate) fn run_query(
    generator: &Generator<'_>,
    q: &TrafficQuery,
    until: DateTime<Utc>,
    limit: usize,
) -> QueryResult {
    let now = until.timestamp();
    let start = q.start.max(now - RETENTION_SECS);
    // Flows first detected before the end and by now.
    let upper = q.end.min(now + 1);
    let mut result = QueryResult::default();
    if upper <= start {
        return result;
    }
    for m in minute_of_secs(start - MAX_FLOW_SECS)..=minute_of_secs(upper - 1) {
        for f in generator.minute(m) {
            let Some(row) = lifetime_row(f, start, q.end, now) else {
                continue;
            };
            if q.matches(generator.estate, &row) {
                result.matches_count += 1;
                if result.flows.len() < limit {
                    result.flows.push(row);
                }
            }
        }
    }
    result
}

fn minute_of_secs(s: i64) -> i64 {
    minute_of(DateTime::from_timestamp(s, 0).unwrap_or_default())
}

/// Appends the JSON of endpoint `ep` to `out`.
fn write_ep(estate: &Estate, ep: Ep, out: &mut String) {
    match ep {
        Ep::Workload(i) => out.push_str(&estate.workloads[i as usize].endpoint_json),
        Ep::Internet(i) => out.push_str(&estate.internet[i as usize].json),
        Ep::Unmanaged(i) => out.push_str(&estate.unmanaged[i as usize].json),
        Ep::Scanner(i) => out.push_str(&estate.scanners[i as usize].json),
        Ep::Client(i) => out.push_str(&estate.client_json(client_ip(i))),
    }
}

fn ts(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Appends one flow's JSON object to `out`.
pub(crate) fn write_flow(estate: &Estate, f: &Flow, out: &mut String) {
    out.push_str("{\"src\":");
    write_ep(estate, f.src, out);
    out.push_str(",\"dst\":");
    write_ep(estate, f.dst, out);
    out.push_str(",\"service\":{");
    match f.port {
        Some(p) => {
            let _ = write!(out, "\"port\":{p},\"proto\":{}", f.proto);
        }
        None if f.port_all => {
            let _ = write!(out, "\"port\":\"All\",\"proto\":{}", f.proto);
        }
        None => {
            let _ = write!(out, "\"proto\":{}", f.proto);
        }
    }
    if let Some((process, user)) = f.process {
        let _ = write!(
            out,
            ",\"process_name\":{},\"user_name\":{}",
            Value::from(process),
            Value::from(user)
        );
    }
    let network = &estate.networks[f.network as usize % estate.networks.len()];
    let _ = write!(
        out,
        "}},\"num_connections\":{},\"policy_decision\":\"{}\",\"state\":\"{}\",\"flow_direction\":\"{}\",\"dst_bi\":{},\"dst_bo\":{},\"timestamp_range\":{{\"first_detected\":\"{}\",\"last_detected\":\"{}\"}},\"network\":{{\"href\":\"{}\",\"name\":\"{}\"}}",
        f.num_connections,
        f.decision.as_str(),
        f.state,
        if f.inbound { "inbound" } else { "outbound" },
        f.dst_bi,
        f.dst_bo,
        ts(f.first),
        ts(f.last),
        network.href,
        network.name,
    );
    // Real PCEs send `boundary_decision` and zero ICMP fields on snapshot rows too.
    if f.state == "snapshot" {
        out.push_str(",\"boundary_decision\":null");
    }
    if f.proto == 1 {
        out.push_str(",\"icmp_type\":8,\"icmp_code\":0");
    } else if f.state == "snapshot" {
        out.push_str(",\"icmp_type\":0,\"icmp_code\":0");
    }
    let client = if matches!(f.src, Ep::Unmanaged(_)) {
        "endpoint"
    } else {
        "server"
    };
    let _ = write!(
        out,
        ",\"seq_id\":{},\"client_type\":\"{client}\",\"caps\":[\"write\"]}}",
        f.seq_id
    );
}

/// The download body: a JSON array of `flows`.
pub(crate) fn render(estate: &Estate, flows: &[Flow]) -> String {
    let mut out = String::with_capacity(flows.len() * 900 + 2);
    out.push('[');
    for (i, f) in flows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_flow(estate, f, &mut out);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn generator(estate: &Estate, per_minute: u32) -> Generator<'_> {
        Generator {
            estate,
            seed: 3,
            scenario: Scenario::PortScan,
            per_minute,
        }
    }

    #[test]
    fn rendered_flows_are_json() {
        let e = Estate::generate(3, 1);
        let flows = generator(&e, DEFAULT_FLOWS_PER_MINUTE).minute(29_000_000);
        let v: Value = serde_json::from_str(&render(&e, &flows)).expect("valid JSON");
        assert_eq!(v.as_array().map(Vec::len), Some(flows.len()));
    }

    /// A flow's identity across rows.
    fn same_flow(a: &Flow, b: &Flow) -> bool {
        (a.src, a.dst, a.port, a.proto, a.inbound, a.first, a.seq_id)
            == (b.src, b.dst, b.port, b.proto, b.inbound, b.first, b.seq_id)
    }

    fn stamp(secs: i64) -> String {
        ts(secs)
    }

    /// The rows of `[start, end)` asked at `now`.
    fn slice(g: &Generator<'_>, start: i64, end: i64, now: i64) -> Vec<Flow> {
        let body = serde_json::json!({"start_date": stamp(start), "end_date": stamp(end)});
        let q = TrafficQuery::parse(g.estate, &body).expect("a valid query");
        let now = DateTime::from_timestamp(now, 0).expect("a time");
        run_query(g, &q, now, MAX_RESULTS).flows
    }

    #[test]
    fn a_long_lived_flow_comes_back_in_every_slice_as_a_lifetime_row() {
        let e = Estate::generate(3, 1);
        let g = generator(&e, DEFAULT_FLOWS_PER_MINUTE);
        let m = 29_000_000;
        // A flow of many connections that lives over three one-minute slices.
        let flow = (m..m + 30)
            .flat_map(|m| g.minute(m))
            .find(|f| f.num_connections >= 100 && f.last - f.first >= 200)
            .expect("a long flow with many connections");
        let a = flow.first - flow.first.rem_euclid(60);
        let now = flow.last + 3600;
        let rows: Vec<Flow> = (0..3)
            .map(|k| {
                let rows = slice(&g, a + 60 * k, a + 60 * (k + 1), now);
                let found: Vec<&Flow> = rows.iter().filter(|r| same_flow(r, &flow)).collect();
                assert_eq!(found.len(), 1, "slice {k}: once");
                found[0].clone()
            })
            .collect();
        for (k, r) in rows.iter().enumerate() {
            assert_eq!(r.first, flow.first, "the real first detection");
            assert_eq!(
                r.last,
                a + 60 * (k as i64 + 1) - 1,
                "clipped to the slice's end"
            );
            assert_eq!(r.state, "active");
            assert!(r.num_connections >= 1);
        }
        for w in rows.windows(2) {
            assert!(w[1].last > w[0].last);
            assert!(w[1].num_connections > w[0].num_connections, "{rows:?}");
            assert!(w[1].dst_bo >= w[0].dst_bo && w[1].dst_bi >= w[0].dst_bi);
        }
        assert!(rows[2].num_connections < flow.num_connections);
        // The slice holding its end carries the totals, as does one query over its life.
        let end = flow.last - flow.last.rem_euclid(60);
        let last = slice(&g, end, end + 60, now);
        let last = last
            .iter()
            .find(|r| same_flow(r, &flow))
            .expect("in its last slice");
        assert_eq!(
            (
                last.last,
                last.num_connections,
                last.dst_bi,
                last.dst_bo,
                last.state
            ),
            (
                flow.last,
                flow.num_connections,
                flow.dst_bi,
                flow.dst_bo,
                flow.state
            )
        );
        let whole = slice(&g, a, end + 60, now);
        let whole = whole
            .iter()
            .find(|r| same_flow(r, &flow))
            .expect("in the whole range");
        assert_eq!(whole.num_connections, flow.num_connections);
        // It is gone from the slice after its end.
        let after = slice(&g, end + 60, end + 120, now);
        assert!(!after.iter().any(|r| same_flow(r, &flow)));
        // Asked while it is still going, the row stops at now.
        let early = slice(&g, a, a + 600, a + 90);
        let early = early
            .iter()
            .find(|r| same_flow(r, &flow))
            .expect("already detected");
        assert_eq!(early.last, (a + 90).min(flow.last));
    }

    #[test]
    fn a_flow_that_ended_before_a_slice_is_not_in_it() {
        let e = Estate::generate(3, 1);
        let g = generator(&e, DEFAULT_FLOWS_PER_MINUTE);
        let m = 29_000_000;
        let start = (m + 15) * 60;
        let rows = slice(&g, start, start + 60, start + 3600);
        assert!(!rows.is_empty());
        assert!(rows.iter().all(|r| r.first < start + 60 && r.last >= start));
        // Flows that ended earlier exist, and none of them is in the slice.
        let ended: Vec<Flow> = (m + 5..m + 15)
            .flat_map(|m| g.minute(m))
            .filter(|f| f.last < start)
            .collect();
        assert!(!ended.is_empty());
        assert!(!rows.iter().any(|r| ended.iter().any(|f| same_flow(r, f))));
        // A flow that began before the slice and runs into it is.
        assert!(rows.iter().any(|r| r.first < start));
    }

    #[test]
    fn dense_minutes_come_from_thousands_of_sources_and_the_default_from_the_estate() {
        let e = Estate::generate(3, 1);
        let dense = generator(&e, 16_667).minute(29_000_000);
        assert!(dense.len() >= 16_667);
        let sources: std::collections::HashSet<Ipv4Addr> =
            dense.iter().map(|f| ep_ip(&e, f.src)).collect();
        assert!(sources.len() > 1000, "{} distinct sources", sources.len());
        let v: Value = serde_json::from_str(&render(&e, &dense[..200])).expect("valid JSON");
        assert!(v.as_array().is_some_and(|a| a.len() == 200));
        let quiet = generator(&e, DEFAULT_FLOWS_PER_MINUTE);
        assert!(
            (29_000_000..29_000_060)
                .flat_map(|m| quiet.minute(m))
                .all(|f| !matches!(f.src, Ep::Client(_)))
        );
    }

    #[test]
    fn bad_bodies_are_rejected() {
        let e = Estate::generate(3, 1);
        assert!(TrafficQuery::parse(&e, &json!({"start_date": "2026-01-01T00:00:00Z"})).is_err());
        let q = json!({"start_date": "2026-01-01", "end_date": "2026-01-02", "policy_decisions": ["maybe"]});
        assert!(TrafficQuery::parse(&e, &q).is_err());
    }
}
