//! Audit events: generated per minute from the seed and the scenario, plus the events the
//! API's writes record ([`Recorded`]), queried like `GET /orgs/{org}/events`.

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rand::seq::SliceRandom as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::estate::{Estate, det_uuid, mix, stream_rng};
use super::scenario::{Health, Scenario, health_at, in_phase, minute_of};

/// Default and maximum `max_results`.
const DEFAULT_MAX: usize = 100;
const MAX_MAX: usize = 10_000;
/// How far back a query without `timestamp[gte]` looks.
const DEFAULT_LOOKBACK_MINUTES: i64 = 24 * 60;
/// How far back any query looks.
const MAX_LOOKBACK_MINUTES: i64 = 31 * 24 * 60;
const STREAM_EVENTS: u64 = 0xE7E7;

/// One generated event.
#[derive(Debug, Clone)]
pub(crate) struct SimEvent {
    pub(crate) at: DateTime<Utc>,
    pub(crate) json: Value,
}

/// A bad events query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QueryError {
    /// A bare date where a timestamp was expected (real PCEs answer 406).
    #[error("{0}: a bare date is not accepted, use an RFC 3339 timestamp")]
    BareDate(String),
    /// A parameter that does not parse.
    #[error("invalid value for {0}: {1:?}")]
    Invalid(&'static str, String),
}

/// The parsed query of `GET /events`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EventQuery {
    pub(crate) gte: Option<DateTime<Utc>>,
    pub(crate) lte: Option<DateTime<Utc>>,
    pub(crate) event_type: Option<String>,
    pub(crate) severity: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) max_results: usize,
}

/// Parses a timestamp parameter: RFC 3339, or a 406-worthy bare date.
fn parse_ts(name: &'static str, v: &str) -> Result<DateTime<Utc>, QueryError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    if NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok() {
        return Err(QueryError::BareDate(name.to_string()));
    }
    Err(QueryError::Invalid(name, v.to_string()))
}

impl EventQuery {
    /// Parses the query pairs.
    pub(crate) fn parse(pairs: &[(String, String)]) -> Result<EventQuery, QueryError> {
        let mut q = EventQuery {
            max_results: DEFAULT_MAX,
            ..EventQuery::default()
        };
        for (k, v) in pairs {
            match k.as_str() {
                "timestamp[gte]" => q.gte = Some(parse_ts("timestamp[gte]", v)?),
                "timestamp[lte]" => q.lte = Some(parse_ts("timestamp[lte]", v)?),
                "event_type" => q.event_type = Some(v.clone()),
                "severity" => q.severity = Some(v.clone()),
                "status" => q.status = Some(v.clone()),
                "max_results" => {
                    let n: usize = v
                        .parse()
                        .map_err(|_| QueryError::Invalid("max_results", v.clone()))?;
                    q.max_results = n.clamp(1, MAX_MAX);
                }
                _ => {}
            }
        }
        Ok(q)
    }

    fn matches(&self, e: &SimEvent) -> bool {
        let field = |name: &str| e.json.get(name).and_then(Value::as_str);
        let eq = |want: &Option<String>, name: &str| {
            want.as_deref()
                .is_none_or(|w| w.split(',').any(|w| Some(w) == field(name)))
        };
        self.gte.is_none_or(|t| e.at >= t)
            && self.lte.is_none_or(|t| e.at <= t)
            && eq(&self.event_type, "event_type")
            && eq(&self.severity, "severity")
            && eq(&self.status, "status")
    }
}

/// Runs `q` against the events visible at `visible_until`, generated and `recorded`: the
/// newest `max_results` matches, in a deterministic but unsorted order.
pub(crate) fn query(
    estate: &Estate,
    seed: u64,
    scenario: Scenario,
    q: &EventQuery,
    visible_until: DateTime<Utc>,
    recorded: &[SimEvent],
) -> Vec<Value> {
    let upper = q.lte.map_or(visible_until, |t| t.min(visible_until));
    let last = minute_of(upper);
    let first = q
        .gte
        .map_or(last - DEFAULT_LOOKBACK_MINUTES, minute_of)
        .max(last - MAX_LOOKBACK_MINUTES);
    let mut found: Vec<SimEvent> = Vec::new();
    let mut m = last;
    // Minutes are read newest first until `max_results` generated events are found: every
    // unread minute is older than all of them, so none of its events can be among the
    // newest `max_results`, recorded events included.
    while m >= first && found.len() < q.max_results {
        found.extend(
            events_in_minute(estate, seed, scenario, m)
                .into_iter()
                .filter(|e| e.at <= upper && q.matches(e)),
        );
        m -= 1;
    }
    found.extend(
        recorded
            .iter()
            .filter(|e| e.at <= upper && minute_of(e.at) >= first && q.matches(e))
            .cloned(),
    );
    found.sort_by_key(|e| std::cmp::Reverse(e.at));
    found.truncate(q.max_results);
    let mut out: Vec<Value> = found.into_iter().map(|e| e.json).collect();
    let shuffle_seed = mix(seed, (upper.timestamp_millis() as u64) ^ out.len() as u64);
    out.shuffle(&mut ChaCha8Rng::seed_from_u64(shuffle_seed));
    out
}

/// Every event of minute `m` (minutes since the epoch), in time order.
pub(crate) fn events_in_minute(
    estate: &Estate,
    seed: u64,
    scenario: Scenario,
    m: i64,
) -> Vec<SimEvent> {
    let mut rng = stream_rng(seed, STREAM_EVENTS, m);
    let mut out = Vec::new();
    let background = [0, 0, 1, 1, 1, 2, 2, 3][rng.random_range(0..8)];
    for _ in 0..background {
        let at = at_in_minute(&mut rng, m);
        let kind = rng.random_range(0..BACKGROUND_KINDS);
        out.push(background_event(&mut Gen::new(&mut rng, estate, at), kind));
    }
    scenario_events(&mut rng, estate, scenario, m, &mut out);
    out.sort_by_key(|e| e.at);
    out
}

fn at_in_minute(rng: &mut ChaCha8Rng, m: i64) -> DateTime<Utc> {
    let ms = m * 60_000 + rng.random_range(0..60_000);
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// What an event generator needs.
struct Gen<'a> {
    rng: &'a mut ChaCha8Rng,
    estate: &'a Estate,
    at: DateTime<Utc>,
}

/// Where an event's href lives.
#[derive(Clone, Copy)]
enum HrefKind {
    Org,
    System,
}

impl<'a> Gen<'a> {
    fn new(rng: &'a mut ChaCha8Rng, estate: &'a Estate, at: DateTime<Utc>) -> Gen<'a> {
        Gen { rng, estate, at }
    }

    fn uuid(&mut self) -> String {
        det_uuid(self.rng).to_string()
    }

    fn user(&mut self) -> Value {
        let u = &self.estate.users[self.rng.random_range(0..self.estate.users.len())];
        json!({"href": u.href, "username": u.username})
    }

    fn workload(&mut self) -> &'a super::estate::Workload {
        let n = self.estate.managed_workloads().count().max(1);
        &self.estate.workloads[self.rng.random_range(0..n)]
    }

    fn agent(&mut self) -> Value {
        let w = self.workload();
        let name = w.hostname.clone().unwrap_or_default();
        json!({"agent": {"href": w.agent_href, "hostname": name},
               "ven": {"href": w.ven_href, "hostname": name}})
    }

    fn src_ip(&mut self) -> Value {
        if self.rng.random_bool(0.3) {
            json!("FILTERED")
        } else {
            json!(format!(
                "192.168.{}.{}",
                self.rng.random_range(1..40),
                self.rng.random_range(2..254)
            ))
        }
    }

    fn action(&mut self, endpoint: &str, method: &str, code: u16) -> Value {
        let uuid = self.uuid();
        let endpoint = if self.rng.random_bool(0.1) {
            "FILTERED"
        } else {
            endpoint
        };
        let src_ip = self.src_ip();
        json!({"uuid": uuid, "api_endpoint": endpoint, "api_method": method,
               "http_status_code": code, "src_ip": src_ip})
    }

    /// The action of a PCE-internal task: no API call, the source address filtered.
    fn system_action(&mut self) -> Value {
        json!({"uuid": self.uuid(), "api_endpoint": null, "api_method": null,
               "http_status_code": null, "src_ip": "FILTERED"})
    }

    fn notification(&mut self, kind: &str, info: Value) -> Value {
        json!({"uuid": self.uuid(), "notification_type": kind, "info": info})
    }

    /// Assembles an event in the field order of real PCE output.
    fn event(&mut self, spec: Spec<'_>) -> SimEvent {
        let uuid = self.uuid();
        let href = match spec.href {
            HrefKind::Org => format!("/orgs/{}/events/{uuid}", self.estate.org),
            HrefKind::System => format!("/system_events/{uuid}"),
        };
        let mut v = json!({
            "href": href,
            "timestamp": self.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "pce_fqdn": self.estate.pce_fqdn,
            "created_by": spec.created_by,
            "event_type": spec.event_type,
            "status": spec.status,
            "severity": spec.severity,
            "action": spec.action,
            "resource_changes": spec.resource_changes,
            "notifications": spec.notifications,
        });
        if self.rng.random_bool(0.5) {
            if let Some(o) = v.as_object_mut() {
                o.insert("version".into(), json!(2));
            }
        }
        SimEvent {
            at: self.at,
            json: v,
        }
    }
}

/// How many recorded events the simulator keeps (the oldest go first).
pub(crate) const RECORDED_CAPACITY: usize = 10_000;

/// The events the API's writes recorded, oldest first; bounded, counting what it let go.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    inner: Mutex<RecordedInner>,
}

#[derive(Debug, Default)]
struct RecordedInner {
    events: VecDeque<SimEvent>,
    dropped: u64,
}

impl Recorded {
    fn inner(&self) -> std::sync::MutexGuard<'_, RecordedInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one event.
    pub(crate) fn push(&self, e: SimEvent) {
        let mut inner = self.inner();
        if inner.events.len() == RECORDED_CAPACITY {
            inner.events.pop_front();
            inner.dropped += 1;
        }
        inner.events.push_back(e);
    }

    /// A copy of every event kept.
    pub(crate) fn snapshot(&self) -> Vec<SimEvent> {
        self.inner().events.iter().cloned().collect()
    }

    /// The events with `from <= at < until`, oldest first.
    pub(crate) fn between(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<SimEvent> {
        self.inner()
            .events
            .iter()
            .filter(|e| e.at >= from && e.at < until)
            .cloned()
            .collect()
    }

    /// How many events the bound let go since the start.
    pub(crate) fn dropped(&self) -> u64 {
        self.inner().dropped
    }
}

/// An event the API records at `at` (not generated from the seed): an org event with
/// href `/orgs/{org}/events/{uuid}`, in the field order of real PCE output.
pub(crate) fn recorded_event(
    estate: &Estate,
    at: DateTime<Utc>,
    uuid: &str,
    spec: Spec<'_>,
) -> SimEvent {
    let json = json!({
        "href": format!("/orgs/{}/events/{uuid}", estate.org),
        "timestamp": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "pce_fqdn": estate.pce_fqdn,
        "created_by": spec.created_by,
        "event_type": spec.event_type,
        "status": spec.status,
        "severity": spec.severity,
        "action": spec.action,
        "resource_changes": spec.resource_changes,
        "notifications": spec.notifications,
    });
    SimEvent { at, json }
}

/// What varies between events; `action` defaults to null, the lists to empty.
pub(crate) struct Spec<'s> {
    href: HrefKind,
    event_type: &'s str,
    status: Option<&'s str>,
    severity: &'s str,
    created_by: Value,
    action: Value,
    resource_changes: Value,
    notifications: Value,
}

impl<'s> Spec<'s> {
    /// An event under `/orgs/{org}/events/`.
    pub(crate) fn org(
        event_type: &'s str,
        status: Option<&'s str>,
        severity: &'s str,
        created_by: Value,
    ) -> Spec<'s> {
        Spec {
            href: HrefKind::Org,
            event_type,
            status,
            severity,
            created_by,
            action: Value::Null,
            resource_changes: json!([]),
            notifications: json!([]),
        }
    }

    /// An event under `/system_events/`.
    fn system(
        event_type: &'s str,
        status: Option<&'s str>,
        severity: &'s str,
        created_by: Value,
    ) -> Spec<'s> {
        Spec {
            href: HrefKind::System,
            ..Spec::org(event_type, status, severity, created_by)
        }
    }

    pub(crate) fn action(self, action: Value) -> Spec<'s> {
        Spec { action, ..self }
    }

    pub(crate) fn changes(self, resource_changes: Value) -> Spec<'s> {
        Spec {
            resource_changes,
            ..self
        }
    }

    pub(crate) fn notes(self, notifications: Value) -> Spec<'s> {
        Spec {
            notifications,
            ..self
        }
    }
}

const BACKGROUND_KINDS: u32 = 13;

/// One background (noise or routine policy work) event.
fn background_event(g: &mut Gen<'_>, kind: u32) -> SimEvent {
    match kind {
        0 => session_created(g),
        1 => session_terminated(g),
        2 => sign_in(g),
        3 => sign_out(g),
        4 => system_logout(g),
        5 => sec_policy_create(g),
        6 => rule_set_change(g),
        7 => sec_rule_change(g),
        8 => expire_keys(g),
        9 => cluster_policy_applied(g),
        10 => interfaces_update(g),
        11 => agent_heartbeat_task(g),
        _ => admin_action(g),
    }
}

fn session_created(g: &mut Gen<'_>) -> SimEvent {
    let mut action = g.action("/api/v2/users/create_session", "POST", 201);
    action["src_ip"] = json!("FILTERED");
    let user = g.user();
    let n = vec![g.notification("user.pce_session_created", json!({"user": user}))];
    let sys = json!({"system": {}});
    g.event(
        Spec::org("user.create_session", Some("success"), "info", sys)
            .action(action)
            .notes(json!(n)),
    )
}

fn session_terminated(g: &mut Gen<'_>) -> SimEvent {
    let user = g.user();
    let n = vec![g.notification(
        "user.pce_session_terminated",
        json!({"reason": "timeout", "user": user}),
    )];
    let sys = json!({"system": {}});
    g.event(Spec::org("user.pce_session_terminated", None, "info", sys).notes(json!(n)))
}

fn sign_in(g: &mut Gen<'_>) -> SimEvent {
    let user = g.user();
    let action = g.action("/login/users/sign_in", "POST", 302);
    let count = g.rng.random_range(1..200);
    let rc = vec![json!({"uuid": g.uuid(), "resource": {"user": user},
        "changes": {"sign_in_attempts_count": {"before": count, "after": count + 1}},
        "change_type": "update"})];
    let n = vec![g.notification("user.login_session_created", json!({"user": user}))];
    let ty = if g.rng.random_bool(0.5) {
        "user.sign_in"
    } else {
        "user.login"
    };
    g.event(
        Spec::org(ty, Some("success"), "info", json!({"user": user}))
            .action(action)
            .changes(json!(rc))
            .notes(json!(n)),
    )
}

fn sign_out(g: &mut Gen<'_>) -> SimEvent {
    let user = g.user();
    let action = g.action("/login/logout", "GET", 302);
    g.event(
        Spec::org(
            "user.sign_out",
            Some("success"),
            "info",
            json!({"user": user}),
        )
        .action(action),
    )
}

fn system_logout(g: &mut Gen<'_>) -> SimEvent {
    let user = g.user();
    let action = g.action("/api/v2/users/logout_from_jwt", "POST", 204);
    let n = vec![
        g.notification(
            "user.pce_session_terminated",
            json!({"reason": "user_logout", "user": user}),
        ),
        g.notification("user.logout", json!({"user": user})),
        g.notification(
            "request.authentication_failed",
            json!({"api_endpoint": "/api/v2/users/logout_from_jwt", "api_method": "POST"}),
        ),
    ];
    g.event(
        Spec::system(
            "user.logout",
            Some("success"),
            "info",
            json!({"system": {}}),
        )
        .action(action)
        .notes(json!(n)),
    )
}

fn sec_policy_create(g: &mut Gen<'_>) -> SimEvent {
    let user = g.user();
    let version = g.rng.random_range(100..2000);
    let action = g.action(
        &format!("/api/v2/orgs/{}/sec_policy", g.estate.org),
        "POST",
        201,
    );
    let affected = if g.rng.random_bool(0.3) {
        g.rng.random_range(20..60)
    } else {
        1
    };
    let notifications: Vec<Value> = (0..affected)
        .map(|_| {
            let w = g.workload();
            let info = json!({"workload": {"href": w.href, "hostname": w.hostname}});
            g.notification("sec_policy.workload_policy_changed", info)
        })
        .collect();
    let rc = vec![json!({"uuid": g.uuid(),
        "resource": {"sec_policy": {"href": format!("/orgs/{}/sec_policy/{version}", g.estate.org), "version": version}},
        "changes": {"commit_message": {"before": null, "after": "scheduled provision"},
                    "workloads_affected": {"before": null, "after": affected}},
        "change_type": "create"})];
    g.event(
        Spec::org(
            "sec_policy.create",
            Some("success"),
            "info",
            json!({"user": user}),
        )
        .action(action)
        .changes(json!(rc))
        .notes(json!(notifications)),
    )
}

fn rule_set_change(g: &mut Gen<'_>) -> SimEvent {
    let user = g.user();
    let id = g.rng.random_range(1..300);
    let href = format!("/orgs/{}/sec_policy/draft/rule_sets/{id}", g.estate.org);
    // The delete event type is plural on real PCEs.
    let (ty, method, code, change) = match g.rng.random_range(0..10) {
        0..3 => ("rule_set.create", "POST", 201, "create"),
        3 => ("rule_sets.delete", "DELETE", 204, "delete"),
        _ => ("rule_set.update", "PUT", 204, "update"),
    };
    let action = g.action(&format!("/api/v2{href}"), method, code);
    let rc = vec![
        json!({"uuid": g.uuid(), "resource": {"rule_set": {"href": href, "name": format!("RS-{id}")}},
        "changes": {"enabled": {"before": null, "after": true}}, "change_type": change}),
    ];
    g.event(
        Spec::org(ty, Some("success"), "info", json!({"user": user}))
            .action(action)
            .changes(json!(rc)),
    )
}

/// Rarer administrative changes people also watch.
fn admin_action(g: &mut Gen<'_>) -> SimEvent {
    let org = g.estate.org;
    let (ty, endpoint, method, code) = match g.rng.random_range(0..4) {
        0 => (
            "api_key.create",
            "/api/v2/users/11/api_keys".to_string(),
            "POST",
            201,
        ),
        1 => (
            "api_key.delete",
            format!("/api/v2/users/11/api_keys/{:x}", g.rng.random::<u32>()),
            "DELETE",
            204,
        ),
        2 => (
            "authentication_settings.update",
            format!("/api/v2/orgs/{org}/authentication_settings"),
            "PUT",
            204,
        ),
        _ => (
            "workloads.unpair",
            format!("/api/v2/orgs/{org}/workloads/unpair"),
            "PUT",
            204,
        ),
    };
    let user = g.user();
    let action = g.action(&endpoint, method, code);
    g.event(Spec::org(ty, Some("success"), "info", json!({"user": user})).action(action))
}

fn sec_rule_change(g: &mut Gen<'_>) -> SimEvent {
    let user = g.user();
    let rs = g.rng.random_range(1..300);
    let id = g.rng.random_range(1..3000);
    let href = format!(
        "/orgs/{}/sec_policy/draft/rule_sets/{rs}/sec_rules/{id}",
        g.estate.org
    );
    let (ty, method, code, change) = match g.rng.random_range(0..3) {
        0 => ("sec_rule.create", "POST", 201, "create"),
        1 => ("sec_rule.update", "PUT", 204, "update"),
        _ => ("sec_rule.delete", "DELETE", 204, "delete"),
    };
    let action = g.action(&format!("/api/v2{href}"), method, code);
    let rc = vec![
        json!({"uuid": g.uuid(), "resource": {"sec_rule": {"href": href}},
        "changes": {"ingress_services": {"before": [], "after": [{"port": 443, "proto": 6}]}}, "change_type": change}),
    ];
    g.event(
        Spec::org(ty, Some("success"), "info", json!({"user": user}))
            .action(action)
            .changes(json!(rc)),
    )
}

fn expire_keys(g: &mut Gen<'_>) -> SimEvent {
    let action = g.system_action();
    g.event(
        Spec::org(
            "system_task.expire_service_account_api_keys",
            Some("success"),
            "info",
            json!({"system": {}}),
        )
        .action(action),
    )
}

fn cluster_policy_applied(g: &mut Gen<'_>) -> SimEvent {
    let (href, name) = g.estate.container_cluster.clone();
    let action = g.action(
        &format!("/api/v2{href}/security_policy_applied"),
        "PUT",
        200,
    );
    let by = json!({"container_cluster": {"href": href, "name": name}});
    g.event(
        Spec::org(
            "container_cluster.security_policy_applied",
            Some("success"),
            "info",
            by,
        )
        .action(action),
    )
}

fn interfaces_update(g: &mut Gen<'_>) -> SimEvent {
    let by = g.agent();
    let mut action = g.action("/api/v6/orgs/1/agents/interfaces", "PUT", 200);
    action["api_endpoint"] = json!("FILTERED");
    let w = g.workload();
    let rc = vec![
        json!({"uuid": g.uuid(), "resource": {"workload": {"href": w.href, "hostname": w.hostname, "name": w.name, "labels": g.estate.label_objects(w)}},
        "changes": {"workload_interfaces": {"updated": [{"changes": {"address": {"before": "fe80::1", "after": "fe80::2"}},
            "resource": {"name": "eth1", "address": "fe80::2"}}]}}, "change_type": "update"}),
    ];
    g.event(
        Spec::org("workload_interfaces.update", Some("success"), "info", by)
            .action(action)
            .changes(json!(rc)),
    )
}

fn agent_heartbeat_task(g: &mut Gen<'_>) -> SimEvent {
    let action = g.system_action();
    g.event(
        Spec::org(
            "system_task.agent_missed_heartbeats_check",
            None,
            "info",
            json!({"system": {}}),
        )
        .action(action),
    )
}

/// Adds the scenario's own events for minute `m`.
fn scenario_events(
    rng: &mut ChaCha8Rng,
    estate: &Estate,
    scenario: Scenario,
    m: i64,
    out: &mut Vec<SimEvent>,
) {
    match scenario {
        Scenario::BruteForce if in_phase(m, 10, 3) => {
            for _ in 0..rng.random_range(4..=6) {
                let at = at_in_minute(rng, m);
                out.push(failed_login(&mut Gen::new(rng, estate, at)));
            }
            for _ in 0..rng.random_range(1..=2) {
                let at = at_in_minute(rng, m);
                out.push(api_key_failure(&mut Gen::new(rng, estate, at)));
            }
        }
        Scenario::VenTampering => {
            let victim =
                (m.rem_euclid(150) / 15) as usize % estate.managed_workloads().count().max(1);
            let at = at_in_minute(rng, m);
            let g = &mut Gen::new(rng, estate, at);
            match m.rem_euclid(15) {
                2 => out.push(tampering(g, victim)),
                3 => out.push(agent_event(
                    g,
                    victim,
                    "agent.suspend",
                    "warning",
                    "agent.suspend",
                )),
                6 => out.push(missed_heartbeats(
                    g,
                    victim,
                    "system_task.agent_missed_heartbeats_check",
                    "agent.missed_heartbeats",
                )),
                12 => out.push(missed_heartbeats(
                    g,
                    victim,
                    "system_task.agent_offline_check",
                    "agent.offline",
                )),
                _ => {}
            }
        }
        Scenario::DegradedPce if health_at(scenario, m) == Health::Critical => {
            let at = at_in_minute(rng, m);
            out.push(internal_error(&mut Gen::new(rng, estate, at)));
        }
        _ => {}
    }
}

fn failed_login(g: &mut Gen<'_>) -> SimEvent {
    let supplied = [
        "admin",
        "administrator",
        "root",
        "admin@corp.example",
        "svc-backup",
    ][g.rng.random_range(0..5)];
    let ip = format!("198.51.100.{}", g.rng.random_range(20..30));
    let (ty, endpoint, method) = if g.rng.random_bool(0.5) {
        ("user.sign_in", "/login/users/sign_in", "POST")
    } else {
        ("user.login", "/api/v2/users/login", "GET")
    };
    let action = json!({"uuid": g.uuid(), "api_endpoint": endpoint, "api_method": method, "http_status_code": 401, "src_ip": ip});
    let n = vec![g.notification(
        "user.login_failed",
        json!({"associated_user": {"supplied_username": supplied}, "src_ip": ip}),
    )];
    g.event(
        Spec::system(ty, Some("failure"), "err", json!({"system": {}}))
            .action(action)
            .notes(json!(n)),
    )
}

fn api_key_failure(g: &mut Gen<'_>) -> SimEvent {
    let ip = format!("198.51.100.{}", g.rng.random_range(20..30));
    let key: u64 = g.rng.random();
    let info = json!({"api_endpoint": "/api/v2/orgs/1/workloads", "api_method": "GET", "src_ip": ip, "api_key_id": format!("{key:x}")});
    let n = vec![g.notification("request.authentication_failed", info)];
    g.event(
        Spec::system(
            "request.authentication_failed",
            Some("failure"),
            "err",
            json!({"system": {}}),
        )
        .notes(json!(n)),
    )
}

fn agent_by(estate: &Estate, victim: usize) -> Value {
    let w = &estate.workloads[victim];
    let name = w.hostname.clone().unwrap_or_default();
    json!({"agent": {"href": w.agent_href, "hostname": name}, "ven": {"href": w.ven_href, "hostname": name}})
}

fn tampering(g: &mut Gen<'_>, victim: usize) -> SimEvent {
    let by = agent_by(g.estate, victim);
    let action = g.action("FILTERED", "PUT", 204);
    let ts = g.at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let info = json!({"event_classification": "signal", "events": [{"timestamp": ts, "tamper_type": "firewall",
        "process_id": g.rng.random_range(1000..4_000_000), "process_name": "iptables",
        "kernel_functions": ["nfnetlink_rcv_batch,nf_tables_newrule"]}]});
    let n = vec![g.notification("workload.oob_policy_changes", info)];
    g.event(
        Spec::org("agent.tampering", Some("success"), "warning", by)
            .action(action)
            .notes(json!(n)),
    )
}

fn agent_event(g: &mut Gen<'_>, victim: usize, ty: &str, severity: &str, note: &str) -> SimEvent {
    let by = agent_by(g.estate, victim);
    let action = g.action("/api/v6/orgs/1/agents/suspend", "PUT", 204);
    let w = &g.estate.workloads[victim];
    let info = json!({"workload": {"href": w.href, "hostname": w.hostname}});
    let n = vec![g.notification(note, info)];
    g.event(
        Spec::org(ty, Some("success"), severity, by)
            .action(action)
            .notes(json!(n)),
    )
}

fn missed_heartbeats(g: &mut Gen<'_>, victim: usize, ty: &str, note: &str) -> SimEvent {
    let w = &g.estate.workloads[victim];
    let info = json!({"agents": [{"href": w.agent_href, "hostname": w.hostname, "workload": {"href": w.href}}]});
    let n = vec![g.notification(note, info)];
    g.event(Spec::org(ty, Some("success"), "warning", json!({"system": {}})).notes(json!(n)))
}

fn internal_error(g: &mut Gen<'_>) -> SimEvent {
    let user = g.user();
    let action = g.action("/api/v2/orgs/1/traffic_flows/async_queries", "POST", 500);
    let n = vec![g.notification(
        "request.internal_server_error",
        json!({"api_endpoint": "/api/v2/orgs/1/traffic_flows/async_queries", "api_method": "POST"}),
    )];
    g.event(
        Spec::org(
            "request.internal_server_error",
            Some("failure"),
            "err",
            json!({"user": user}),
        )
        .action(action)
        .notes(json!(n)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_date_is_its_own_error() {
        let q = [("timestamp[gte]".to_string(), "2026-01-01".to_string())];
        assert!(matches!(
            EventQuery::parse(&q),
            Err(QueryError::BareDate(_))
        ));
        let q = [("timestamp[gte]".to_string(), "yesterday".to_string())];
        assert!(matches!(
            EventQuery::parse(&q),
            Err(QueryError::Invalid(..))
        ));
    }

    #[test]
    fn minutes_are_deterministic() {
        let e = Estate::generate(7, 1);
        let a = events_in_minute(&e, 7, Scenario::BruteForce, 29_000_000);
        let b = events_in_minute(&e, 7, Scenario::BruteForce, 29_000_000);
        let j = |v: &[SimEvent]| v.iter().map(|e| e.json.to_string()).collect::<Vec<_>>();
        assert_eq!(j(&a), j(&b));
    }
}
