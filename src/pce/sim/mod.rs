//! The PCE simulator: the real endpoints over HTTP, a deterministic estate from a seed.
//!
//! [`PceSim::start`] serves the Illumio REST API subset vigil uses (events, async traffic
//! queries, labels, IP lists, workloads with async jobs, health) on a local address. The
//! estate and all events and flows derive from [`SimConfig::seed`]; time comes from the
//! caller's [`SharedClock`], so tests drive it with a virtual clock. [`Faults`] reproduce
//! the quirks of real PCEs (rate-limit storms, 5xx, gzip and empty downloads, truncated
//! results, a lagging event index, a read-only API key) and can be changed while running.
//!
//! It also takes the writes a real PCE takes (the `writes` module): `PUT` of a workload
//! (labels, enforcement mode), `POST` of a label, raising workloads' flow reporting
//! frequency. Later reads, flows and events see their effect, each records the audit
//! event a PCE records, and [`RunningSim::request_log`] shows every request with its body.

pub mod estate;
mod events;
mod faults;
mod jobs;
mod log;
mod scenario;
mod server;
mod syslog;
mod traffic;
mod writes;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::time::SharedClock;

pub use estate::Estate;
pub use faults::{Faults, RateLimitStorm};
pub use log::{LOG_CAPACITY, LoggedRequest, MAX_LOGGED_BODY};
pub use scenario::{Scenario, UnknownScenario};
pub use syslog::{ExportCounters, SyslogExport, SyslogMode, TICK_SECS as SYSLOG_TICK_SECS};
pub use writes::MAX_FLOW_REPORTING_WORKLOADS;

use scenario::SimClock;
use server::SimState;

/// The densest simulation served: a million background flows a minute.
pub const MAX_FLOWS_PER_MINUTE: u32 = 1_000_000;

/// How to run a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// What the estate goes through.
    pub scenario: Scenario,
    /// Seeds the estate, events and flows.
    pub seed: u64,
    /// The org id the API answers for (others get 403).
    pub org: u64,
    /// The API key id (HTTP Basic user).
    pub api_key: String,
    /// The API key secret (HTTP Basic password).
    pub api_secret: String,
    /// Faults to inject from the start.
    pub faults: Faults,
    /// 1.0 = real time; 60.0 plays an hour of scenario in a minute.
    pub time_scale: f64,
    /// Background flows first detected per minute (default 20). Above the default,
    /// unmanaged sources also come from a pool of 65,534 client addresses
    /// (`10.200.0.0/16`), so a dense slice has thousands of distinct sources.
    pub flows_per_minute: u32,
    /// Also send the events and flows, as they happen, to a syslog receiver (as a PCE's
    /// syslog export does; see the `syslog` module).
    pub syslog: Option<SyslogExport>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            scenario: Scenario::Quiet,
            seed: 1,
            org: 1,
            api_key: "api_sim".to_string(),
            api_secret: "sim-secret".to_string(),
            faults: Faults::default(),
            time_scale: 1.0,
            flows_per_minute: traffic::DEFAULT_FLOWS_PER_MINUTE,
            syslog: None,
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid simulator configuration: {0}")]
    InvalidConfig(String),
}

/// Starts simulators.
#[derive(Debug)]
pub struct PceSim;

impl PceSim {
    /// Binds `listen` (port 0 picks a free port) and serves the simulated PCE.
    pub async fn start(
        cfg: SimConfig,
        clock: SharedClock,
        listen: SocketAddr,
    ) -> Result<RunningSim, SimError> {
        if !(cfg.time_scale.is_finite() && cfg.time_scale > 0.0) {
            return Err(SimError::InvalidConfig(format!(
                "time_scale must be positive, got {}",
                cfg.time_scale
            )));
        }
        if cfg.flows_per_minute > MAX_FLOWS_PER_MINUTE {
            return Err(SimError::InvalidConfig(format!(
                "flows_per_minute must be at most {MAX_FLOWS_PER_MINUTE}, got {}",
                cfg.flows_per_minute
            )));
        }
        if cfg.api_key.is_empty() {
            return Err(SimError::InvalidConfig("api_key is empty".into()));
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: listen,
            source,
        })?;
        let state = Arc::new(SimState::new(&cfg, SimClock::new(clock, cfg.time_scale)));
        let app = server::router(state.clone());
        let export_counters = Arc::new(ExportCounters::default());
        let exporter = cfg.syslog.map(|export| {
            let from = syslog::first_second(&state);
            tracing::debug!(to = %export.to, mode = ?export.mode, "PCE simulator: sending its syslog export");
            tokio::spawn(syslog::run(
                state.clone(),
                export,
                from,
                export_counters.clone(),
            ))
        });
        let (stop, stopped) = oneshot::channel::<()>();
        // The client's address goes into the events writes record (`action.src_ip`).
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "PCE simulator stopped with an error");
            }
        });
        tracing::debug!(%addr, scenario = %cfg.scenario, seed = cfg.seed, "PCE simulator listening");
        Ok(RunningSim {
            addr,
            state,
            stop: Some(stop),
            task,
            exporter,
            export_counters,
        })
    }
}

/// A simulator serving requests; stop it with [`RunningSim::shutdown`].
#[derive(Debug)]
pub struct RunningSim {
    addr: SocketAddr,
    state: Arc<SimState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// The syslog export, when configured.
    exporter: Option<JoinHandle<()>>,
    export_counters: Arc<ExportCounters>,
}

impl std::fmt::Debug for SimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimState")
            .field("scenario", &self.scenario)
            .field("seed", &self.seed)
            .field("org", &self.org)
            .finish_non_exhaustive()
    }
}

impl RunningSim {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `http://addr` (the API lives under `/api/v2`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests answered so far, oldest first: all of them, or the newest
    /// [`LOG_CAPACITY`] when more were made (see [`RunningSim::requests_dropped`]).
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.state.log.snapshot()
    }

    /// How many requests the bounded log let go (the oldest first).
    pub fn requests_dropped(&self) -> u64 {
        self.state.log.dropped()
    }

    /// The audit events the API's writes recorded so far (the newest 10,000), oldest
    /// first, as `GET /events` serves them.
    pub fn recorded_events(&self) -> Vec<serde_json::Value> {
        self.state
            .recorded
            .snapshot()
            .into_iter()
            .map(|e| e.json)
            .collect()
    }

    /// How many recorded events the bound let go.
    pub fn recorded_events_dropped(&self) -> u64 {
        self.state.recorded.dropped()
    }

    /// Forgets the logged requests.
    pub fn clear_log(&self) {
        self.state.log.clear();
    }

    /// Replaces the faults; their counters (storm, server errors) start afresh.
    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.lock().unwrap_or_else(|e| e.into_inner()) =
            faults::FaultState::new(faults);
    }

    /// What the syslog export has done (all 0 without `syslog`).
    pub fn syslog_counters(&self) -> &ExportCounters {
        &self.export_counters
    }

    /// The estate as it is now (writes included); a snapshot later writes do not change.
    pub fn estate(&self) -> Arc<Estate> {
        self.state.estate()
    }

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(exporter) = self.exporter.take() {
            exporter.abort();
            let _ = exporter.await;
        }
        let _ = (&mut self.task).await;
    }
}
