//! The typed configuration: `kind: settings` and `kind: pipeline` documents.
//!
//! Every struct denies unknown fields and documents every field; the JSON Schema in
//! `schemas/` is generated from these types (see [`super::schema`]).

use std::path::PathBuf;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::components::{SinkConfig, SourceConfig, StageConfig};
use crate::pce::client::PceConnectionConfig;
use crate::time::Duration;

/// One YAML document of a pipeline file, told apart by `kind`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // one per file, read once: boxing buys nothing
pub enum Document {
    /// Engine-wide settings: where state lives, buffer sizes. At most one per directory.
    Settings(SettingsConfig),
    /// A pipeline: sources → stages → sinks.
    Pipeline(PipelineConfig),
}

/// `kind: settings`: engine-wide settings. At most one such document across all files.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsConfig {
    /// Directory for vigil's state: checkpoints, stage snapshots, set-aside records.
    /// Relative paths are relative to the directory vigil runs in. It and what vigil
    /// writes there are vigil's user's only (directories 0700, files 0600; a looser one
    /// is tightened at start, logged — a directory only when it is empty or holds
    /// vigil's database, else a warning says so). Default: `var`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// How many messages each edge of the graph buffers before the upstream node waits
    /// (backpressure). A message is a batch of up to `batch_size` events. Default: 64.
    #[serde(default = "default_buffer")]
    #[schemars(range(min = 1))]
    pub buffer: usize,
    /// The most events a source hands on in one message. Default: 256.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1))]
    pub batch_size: usize,
    /// How often the clock ticks through the graph (time-based stages act on ticks).
    /// Default: `1s`.
    #[serde(default = "default_tick_interval")]
    pub tick_interval: Duration,
    /// How often stateful stages (windows, cooldowns, script state) save their state under
    /// `state_dir`; they also save it when they stop, and restore it at start. Default: `30s`.
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval: Duration,
    /// The largest state a stage saves, in bytes of JSON. A larger one is not saved (the
    /// one saved before is removed, so a restart starts the stage empty rather than from
    /// an old state), logged, and counted as `vigil_node_dropped_total{reason="snapshot_too_large"}`;
    /// bound the stage's keys (`max_keys`) instead. Default: 268435456 (256 MiB).
    #[serde(default = "default_snapshot_max_bytes")]
    #[schemars(range(min = 1024))]
    pub snapshot_max_bytes: u64,
    /// Whether stages keep their state across restarts (saved under `state_dir`), and
    /// `file` sources their position in the file. `false` starts every run from empty
    /// windows and reads files as new: for replaying a fixed file, where a second run
    /// reads the same records again. Default: true.
    #[serde(default = "default_true")]
    pub keep_state: bool,
    /// How often an open alert episode that changed (its key stayed over the threshold
    /// and more events came) is reported again: its row in the alert history is updated
    /// and the sinks get its current value. Opening and resolving are always reported at
    /// once. Default: `1m`.
    #[serde(default = "default_history_interval")]
    pub history_interval: Duration,
    /// How long a reload waits for a node it replaces or removes to finish what it holds
    /// (a sink's send under way, a stage's last events). A node still busy then is
    /// stopped: a delivering sink's unsent messages stay in its outbox for the new one,
    /// and the reload completes. A send under way is not cut off (the peer may have the
    /// message already): it finishes within the sink's `timeout` and the new sink does
    /// not send that message again. Default: `60s`.
    #[serde(default = "default_handover_timeout")]
    pub handover_timeout: Duration,
    /// How much of the alert history is kept (in `state_dir`), pruned hourly.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// What happens when a node fails (a sink cannot write, a listener cannot bind, a
    /// script panics): it is restarted after a growing wait; after too many failures in a
    /// row its pipeline is stopped and reported failed. Other pipelines never notice.
    #[serde(default)]
    pub restarts: RestartsConfig,
    /// Inhibition rules: while an alert matching a rule's `source` fires, the delivering
    /// sinks do not notify alerts matching its `target` (with equal values at its `equal`
    /// paths); when the source resolves, the targets are notified at their group's next
    /// look. Example: `{source: {pipeline: pce-health, group.status: [unreachable,
    /// unauthorized, forbidden]}, target: {pipeline: blocked-traffic}}`. Default: none.
    #[serde(default)]
    pub inhibit: Vec<crate::sinks::delivery::inhibit::InhibitRuleConfig>,
    /// The HTTP API, `/metrics` and health checks.
    #[serde(default)]
    pub web: WebConfig,
    /// The address people open vigil's dashboard at, for the links in notifications
    /// (`https://vigil.example.com`). Default: `http://127.0.0.1:5001`.
    #[serde(default = "default_public_url")]
    pub public_url: String,
    /// The systems sources read from and sinks deliver to, by kind and name. Secrets in
    /// here come from the environment (`${PCE_API_SECRET}`) or from files, never literally.
    #[serde(default)]
    pub connections: ConnectionsConfig,
}

/// `retention:` of the settings: how much history is kept.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Alerts whose latest report is older than this leave the history. Default: `90d`.
    #[serde(default = "default_history_max_age")]
    pub history_max_age: Duration,
    /// The most alerts the history keeps; the oldest leave first. Default: 1000000.
    #[serde(default = "default_history_max_rows")]
    #[schemars(range(min = 1))]
    pub history_max_rows: usize,
    /// The size at which a source's file of set-aside records
    /// (`<state_dir>/rejected/<pipeline.node>.jsonl`) is rotated: it becomes
    /// `<…>.jsonl.1` (replacing the one before) and a new file starts, so each source keeps
    /// at most twice this. Default: 16777216 (16 MiB).
    #[serde(default = "default_rejected_max_bytes")]
    #[schemars(range(min = 4096))]
    pub rejected_max_bytes: u64,
    /// How long the outbox keeps messages that were sent (for the alert history's delivery
    /// status and `vigil outbox list --state sent`), and the delivering sinks remember
    /// the alerts they have notified the end of (the same alert raised again within this
    /// time, by a replay or a re-read, is not notified twice) and their ended cooldowns.
    /// Pruned hourly. Default: `7d`.
    #[serde(default = "default_sent_max_age")]
    pub sent_max_age: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            history_max_age: default_history_max_age(),
            history_max_rows: default_history_max_rows(),
            rejected_max_bytes: default_rejected_max_bytes(),
            sent_max_age: default_sent_max_age(),
        }
    }
}

fn default_history_max_age() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}
fn default_history_max_rows() -> usize {
    1_000_000
}
fn default_sent_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_rejected_max_bytes() -> u64 {
    16 * 1024 * 1024
}

/// `restarts:` of the settings: how failing nodes are restarted.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartsConfig {
    /// The most failures of one node within `within`; one more stops its pipeline (it
    /// is reported failed until a reload changes it or vigil restarts). Default: 5.
    #[serde(default = "default_max_failures")]
    #[schemars(range(min = 1))]
    pub max_failures: u32,
    /// The span over which failures are counted. Default: `10m`.
    #[serde(default = "default_restart_within")]
    pub within: Duration,
    /// The wait before the first restart; each further failure within `within` doubles
    /// it. Default: `1s`.
    #[serde(default = "default_restart_backoff")]
    pub backoff: Duration,
    /// The longest wait between restarts. Default: `1m`.
    #[serde(default = "default_restart_max_backoff")]
    pub max_backoff: Duration,
}

impl Default for RestartsConfig {
    fn default() -> Self {
        RestartsConfig {
            max_failures: default_max_failures(),
            within: default_restart_within(),
            backoff: default_restart_backoff(),
            max_backoff: default_restart_max_backoff(),
        }
    }
}

fn default_max_failures() -> u32 {
    5
}
fn default_restart_within() -> Duration {
    Duration::from_secs(600)
}
fn default_restart_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_restart_max_backoff() -> Duration {
    Duration::from_secs(60)
}

/// `web:` of the settings: vigil's HTTP server (JSON API, `/metrics`, `/healthz`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Serve at all. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The address to listen on. Anything but a loopback address needs `token`.
    /// Default: `127.0.0.1:5001`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The bearer token clients must send (`Authorization: Bearer …`), from the
    /// environment (`${VIGIL_WEB_TOKEN}`). Use this or `token_file`. `/healthz` and
    /// `/readyz` need none. Without one (loopback only), a request that changes something
    /// (`POST`, `DELETE`) sent by a web page of another origin (its `Origin` or
    /// `Sec-Fetch-Site` says so) is refused with 403; tools that send no `Origin` (curl)
    /// are served.
    #[serde(default)]
    pub token: Option<crate::pce::client::Secret>,
    /// A file holding the bearer token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// More names the server answers to, besides `listen` and `public_url`: a request whose
    /// `Host` is none of them gets 421 (a web page on another name cannot read the API
    /// through DNS rebinding). `vigil.example.com` allows any port, `vigil.example.com:8080`
    /// that port only, `[fd00::5]:5001` an IPv6 address; `*` allows any `Host` (and gives
    /// up that protection). A loopback `listen` always answers to `localhost`, `127.0.0.1`
    /// and `[::1]` with its port; a `listen` on every address (`0.0.0.0`) to any IP address
    /// with its port. Default: none.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// The most connections open at once; one more is closed at once and counted as
    /// `vigil_web_refused_total{reason="max_connections"}`. vigil raises its soft
    /// open-file limit to make room for them, and serves fewer when the hard limit is too
    /// low (a warning says so). Default: 1024.
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1))]
    pub max_connections: usize,
    /// How long a client has to send a request's line and headers, from the moment it
    /// connects or its previous answer was sent: a slow or idle client is disconnected
    /// after it (so this is also how long a kept-alive connection may wait between
    /// requests). Default: `10s`.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// How long a request may take, from its headers to its answer, reading its body
    /// included: 408 after it. The live stream (`/api/v1/stream`) is not cut. Default:
    /// `30s`.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// A connection with no byte going either way for this long is closed (a client that
    /// stopped reading its answer or sending its body). Keep it above `request_timeout`
    /// (a slow request then gets its 408) and above 15 seconds (the live stream sends a
    /// comment that often). Default: `60s`.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// The largest request body, in bytes: 413 beyond it. Default: 65536 (64 KiB).
    #[serde(default = "default_max_body_bytes")]
    #[schemars(range(min = 1))]
    pub max_body_bytes: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: true,
            listen: default_listen(),
            token: None,
            token_file: None,
            allowed_hosts: Vec::new(),
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
            request_timeout: default_request_timeout(),
            idle_timeout: default_idle_timeout(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:5001".into()
}
fn default_max_connections() -> usize {
    1024
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_body_bytes() -> usize {
    64 * 1024
}

pub use crate::sinks::delivery::DEFAULT_PUBLIC_URL;

fn default_public_url() -> String {
    DEFAULT_PUBLIC_URL.into()
}

/// `connections:` of the settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Illumio PCEs, by name; `pce_*` sources name one in `connection`.
    #[serde(default)]
    pub pce: IndexMap<String, PceConnectionConfig>,
    /// SMTP servers, by name; `mail` sinks name one in `connection`.
    #[serde(default)]
    pub smtp: IndexMap<String, crate::sinks::mail::SmtpConnectionConfig>,
    /// LINE Messaging API channels, by name; `line` sinks name one in `connection`.
    #[serde(default)]
    pub line: IndexMap<String, crate::sinks::line::LineConnectionConfig>,
    /// HTTP endpoints, by name; `webhook` sinks name one in `connection`.
    #[serde(default)]
    pub webhook: IndexMap<String, crate::sinks::webhook::WebhookConnectionConfig>,
}

impl Default for SettingsConfig {
    fn default() -> Self {
        SettingsConfig {
            state_dir: default_state_dir(),
            buffer: default_buffer(),
            batch_size: default_batch_size(),
            tick_interval: default_tick_interval(),
            snapshot_interval: default_snapshot_interval(),
            snapshot_max_bytes: default_snapshot_max_bytes(),
            keep_state: true,
            history_interval: default_history_interval(),
            restarts: RestartsConfig::default(),
            retention: RetentionConfig::default(),
            handover_timeout: default_handover_timeout(),
            inhibit: Vec::new(),
            public_url: default_public_url(),
            web: WebConfig::default(),
            connections: ConnectionsConfig::default(),
        }
    }
}

fn default_handover_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("var")
}
fn default_buffer() -> usize {
    64
}
fn default_batch_size() -> usize {
    256
}
fn default_snapshot_max_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_tick_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_history_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_true() -> bool {
    true
}
fn default_snapshot_interval() -> Duration {
    Duration::from_secs(30)
}

/// `kind: pipeline`: sources feed stages, stages feed stages and sinks; `inputs` wire them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The pipeline's name, unique across all files; used in node ids (`name.node`),
    /// logs and metrics. Letters, digits, `_` and `-`.
    pub name: String,
    /// What the pipeline is for, shown in `vigil graph` and the dashboard.
    #[serde(default)]
    pub description: Option<String>,
    /// Where events come from, by name. Names are unique within the pipeline.
    #[serde(default)]
    pub sources: IndexMap<String, SourceConfig>,
    /// What happens to events, by name. Each stage reads the nodes listed in its `inputs`.
    #[serde(default)]
    pub stages: IndexMap<String, StageConfig>,
    /// Where results go, by name. Each sink reads the nodes listed in its `inputs`.
    #[serde(default)]
    pub sinks: IndexMap<String, SinkConfig>,
    /// Test cases run by `vigil test` (ignored by `vigil run`): records fed to the
    /// sources on a virtual clock and the alerts that must (or must not) come out.
    #[serde(default)]
    pub tests: Vec<super::test_case::TestCase>,
}

impl PipelineConfig {
    /// The `filter` stages reading node `name`, when every node reading it is one
    /// (`None` otherwise): a source may then ask its peer only for what they keep.
    pub fn filter_readers(&self, name: &str) -> Option<Vec<crate::stages::filter::FilterConfig>> {
        let reads = |inputs: &[String]| inputs.iter().any(|i| i == name);
        if self.sinks.values().any(|s| reads(s.inputs())) {
            return None;
        }
        let mut filters = Vec::new();
        for stage in self.stages.values().filter(|s| reads(s.inputs())) {
            match stage {
                crate::components::StageConfig::Filter(f) => filters.push(f.clone()),
                _ => return None,
            }
        }
        (!filters.is_empty()).then_some(filters)
    }
}
