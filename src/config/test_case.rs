//! The test-case format: a `tests:` section of a pipeline, or a `kind: test` document in a
//! `*.test.yaml` file beside the pipeline file.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::diagnostic::{Problems, codes};
use crate::time::Duration;

/// One test case: events fed to named sources at times relative to `start`, on a
/// virtual clock, and what must come out of named stages or sinks.
///
/// ```yaml
/// tests:
///   - name: five failed logins from one user fire once
///     input:
///       - source: events
///         at: 0s            # relative to `start`; the event's time
///         repeat: 5         # the same record 5 times ...
///         every: 1m         # ... one minute apart
///         event: { event_type: user.sign_in, status: failure }
///     expect:
///       - node: by_user     # a stage (what it emits) or a sink (what it receives)
///         count: 1          # alerts; `count: 0` = must not fire
///         alerts:
///           - { severity: high, value: 5, group.user: alice@example.com }
/// ```
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// What the case shows; printed by `vigil test`.
    pub name: String,
    /// The virtual time the case starts at (RFC 3339). Default: `2026-01-01T00:00:00Z`.
    #[serde(default)]
    pub start: Option<String>,
    /// What the PCE knows while the case runs: IP lists, labels and workloads, so an
    /// `ip_list:` condition is tested as written and flows of a `pce_traffic` source
    /// gain the labels and IP-list names the source would add.
    #[serde(default)]
    pub context: Option<TestContext>,
    /// The events to feed, in any order (they are fed in arrival order, `at`; equal
    /// times in the order written).
    #[serde(default)]
    pub input: Vec<TestInput>,
    /// How long the clock keeps running after the last input (ticks included), e.g. to
    /// let a `flatline` fire. Default: `0s`.
    #[serde(default)]
    pub run_for: Option<Duration>,
    /// What must come out.
    pub expect: Vec<Expectation>,
}

/// Events for one source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestInput {
    /// The source (by name) the events come from.
    pub source: String,
    /// When it arrives, relative to the case's `start` (and, without `time`, the event's
    /// time too). Default: `0s`.
    #[serde(default)]
    pub at: Option<Duration>,
    /// The event's own time, relative to the case's `start`, when it is not its arrival:
    /// `at: 10m` with `time: 2m` is an event of minute 2 arriving at minute 10 (late, or
    /// out of order after one of minute 5). Copies (`repeat`) keep the same distance
    /// from `at`.
    #[serde(default)]
    pub time: Option<Duration>,
    /// How many copies of the record to feed: at most 10000 (a case feeds at most
    /// 1000000 events in all). Default: 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub repeat: usize,
    /// The time between copies when `repeat` > 1. Default: `0s` (all at `at`).
    #[serde(default)]
    pub every: Option<Duration>,
    /// The record, as the source would read it.
    pub event: Value,
}

fn one() -> usize {
    1
}

/// What the PCE knows during a test case (`context:`), in place of its name cache.
///
/// ```yaml
/// context:
///   ip_lists:
///     Scanners: [203.0.113.0/24, "!203.0.113.128/25"]   # `!`: an exclusion
///   labels:
///     /orgs/1/labels/7: { key: role, value: db }
///   workloads:
///     /orgs/1/workloads/db-01: { role: db, env: prod }
/// ```
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestContext {
    /// IP lists by name: the networks and addresses each holds; one written with a
    /// leading `!` is an exclusion.
    #[serde(default)]
    pub ip_lists: IndexMap<String, Vec<String>>,
    /// Labels by href (`/orgs/1/labels/7`): what a flow's label hrefs stand for.
    #[serde(default)]
    pub labels: IndexMap<String, TestLabel>,
    /// Workloads by href: their labels, key → value (for flows whose workload lists no
    /// labels).
    #[serde(default)]
    pub workloads: IndexMap<String, IndexMap<String, String>>,
}

/// A label: key and value.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestLabel {
    /// The label's key (`role`).
    pub key: String,
    /// Its value (`db`).
    pub value: String,
}

impl TestContext {
    /// The networks of IP list `name`: (included, excluded); an entry that is not a
    /// network or address is left out (reported by [`TestCase::check`]).
    pub fn ip_list(&self, name: &str) -> Option<(Vec<ipnet::IpNet>, Vec<ipnet::IpNet>)> {
        let entries = self.ip_lists.get(name)?;
        let mut include = Vec::new();
        let mut exclude = Vec::new();
        for e in entries {
            let (excluded, text) = match e.trim().strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, e.trim()),
            };
            if let Some(net) = network(text) {
                if excluded {
                    exclude.push(net);
                } else {
                    include.push(net);
                }
            }
        }
        Some((include, exclude))
    }
}

/// `text` as a network (an address is a network of one).
fn network(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}

/// The most copies of a record one input may ask for (`repeat`).
pub const MAX_REPEAT: usize = 10_000;

/// The most events one test case may feed, repeats included: each is held in memory
/// until the case has run.
pub const MAX_CASE_EVENTS: usize = 1_000_000;

impl TestCase {
    /// The bounds of a case: `repeat` at most [`MAX_REPEAT`], at most
    /// [`MAX_CASE_EVENTS`] events in all. Pointers are relative to the case.
    pub fn check(&self, p: &mut Problems) {
        if self.expect.is_empty() {
            p.error(
                "/expect",
                codes::INVALID_VALUE,
                "the case expects nothing, so it cannot fail: name a node and what it must emit (`count`, `alerts`, `resolved`, `updates`, `events` or `notifications`)",
            );
        }
        for (j, exp) in self.expect.iter().enumerate() {
            if exp.checks_nothing() {
                p.error(
                    format!("/expect/{j}"),
                    codes::INVALID_VALUE,
                    format!(
                        "this expectation of node `{}` checks nothing: give `count`, `alerts`, `resolved`, `updates`, `events` or `notifications` (`count: 0`: must not fire)",
                        exp.node
                    ),
                );
            }
        }
        if let Some(cx) = &self.context {
            for (name, entries) in &cx.ip_lists {
                for (k, e) in entries.iter().enumerate() {
                    let text = e.trim().strip_prefix('!').unwrap_or(e.trim()).trim();
                    if network(text).is_none() {
                        p.error(
                            crate::diagnostic::to_pointer([
                                "context",
                                "ip_lists",
                                name.as_str(),
                                k.to_string().as_str(),
                            ]),
                            codes::INVALID_VALUE,
                            format!(
                                "`{e}` is not an IP network or address (write e.g. `10.0.0.0/8`, `192.0.2.7`, or `!10.0.5.0/24` to exclude)"
                            ),
                        );
                    }
                }
            }
        }
        let mut total: usize = 0;
        let mut reported = false;
        for (j, input) in self.input.iter().enumerate() {
            if input.repeat > MAX_REPEAT {
                p.error(
                    format!("/input/{j}/repeat"),
                    codes::INVALID_VALUE,
                    format!(
                        "`repeat: {}` is over the bound of {MAX_REPEAT} copies: use a smaller `repeat` (with a longer `every`) or several inputs",
                        input.repeat
                    ),
                );
            }
            total = total.saturating_add(input.repeat);
            if total > MAX_CASE_EVENTS && !reported {
                reported = true;
                p.error(
                    format!("/input/{j}"),
                    codes::INVALID_VALUE,
                    format!(
                        "with this input the case feeds more than {MAX_CASE_EVENTS} events (repeats included), the bound of one case: split it into several cases"
                    ),
                );
            }
        }
    }

    /// How many events the case feeds, repeats included (saturating).
    pub fn event_count(&self) -> usize {
        self.input
            .iter()
            .fold(0usize, |n, i| n.saturating_add(i.repeat))
    }
}

/// What one stage emits, or one sink receives, over the whole case.
///
/// An alert episode shows as its `firing` alert, its update reports (same id, more than
/// zero `updates`) and its `resolved` alert. `count` and `alerts` see the firing and
/// resolved alerts, not the updates (`updates` counts those).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The stage or sink, by name.
    pub node: String,
    /// How many firing alerts (episodes opened, and one-off alerts; not their updates nor
    /// their resolutions). `0` means the node must not fire.
    #[serde(default)]
    pub count: Option<usize>,
    /// How many `resolved` alerts.
    #[serde(default)]
    pub resolved: Option<usize>,
    /// How many update reports of open episodes.
    #[serde(default)]
    pub updates: Option<usize>,
    /// Field values the alerts must have, in order — the firing and resolved alerts, not
    /// the updates: the first mapping is checked against the first alert, and so on. Keys
    /// are field paths of the alert (`status`, `severity`, `group.src.ip`, `value`,
    /// `updates`, `samples.0.record.event_type`).
    #[serde(default)]
    pub alerts: Vec<IndexMap<String, Value>>,
    /// How many events that are not alerts.
    #[serde(default)]
    pub events: Option<usize>,
    /// A delivering sink (mail, LINE, webhook) only: every notification it would send,
    /// in order, with when — grouping, reminders, resolutions and inhibition as the sink
    /// would apply them on the case's clock.
    #[serde(default)]
    pub notifications: Option<Vec<NotificationExpectation>>,
}

impl Expectation {
    /// Whether it checks nothing (only `node`, or empty lists).
    pub fn checks_nothing(&self) -> bool {
        self.count.is_none()
            && self.resolved.is_none()
            && self.updates.is_none()
            && self.events.is_none()
            && self.notifications.is_none()
            && self.alerts.is_empty()
    }
}

/// One notification a delivering sink would send.
///
/// ```yaml
/// notifications:
///   - { at: 30s, new: 2 }
///   - { at: 20m30s, reminder: true, firing: 2 }
///   - at: 1h5m
///     resolved: 2
///     alerts: [{ change: resolved, group.src.ip: 10.0.0.1 }]
/// ```
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationExpectation {
    /// When it goes out, relative to the case's `start`.
    #[serde(default)]
    pub at: Option<Duration>,
    /// How many new alerts it lists.
    #[serde(default)]
    pub new: Option<usize>,
    /// How many alerts still firing (listed before) it lists.
    #[serde(default)]
    pub firing: Option<usize>,
    /// How many resolved alerts it lists.
    #[serde(default)]
    pub resolved: Option<usize>,
    /// Whether it is a reminder (nothing changed since the group's last one).
    #[serde(default)]
    pub reminder: Option<bool>,
    /// Field values of its alerts, in its order (new, still firing, resolved); `change`
    /// is `new`, `firing` or `resolved`.
    #[serde(default)]
    pub alerts: Vec<IndexMap<String, Value>>,
}

/// `kind: test`: test cases for a pipeline defined in another file, kept in a
/// `*.test.yaml` file beside it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// Always `test`.
    pub kind: TestKind,
    /// The pipeline the cases run against, by name.
    pub pipeline: String,
    /// What the PCE knows, for every case of the file that has no `context` of its own.
    #[serde(default)]
    pub context: Option<TestContext>,
    /// The cases.
    pub tests: Vec<TestCase>,
}

/// The `kind` of a test file.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TestKind {
    /// A test file.
    Test,
}
