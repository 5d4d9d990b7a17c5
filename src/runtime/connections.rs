//! Clients of the systems named under `connections:` in the settings, built once per run
//! and shared: every pipeline that reads a PCE uses the same client, so one request budget
//! covers them all.
//!
//! Besides the clients, [`Connections`] holds per-run shared helpers keyed by name (see
//! [`Connections::shared`]), e.g. the one traffic coordinator of a PCE connection that all
//! `pce_traffic` sources reading it subscribe to, and tasks to start once every node is
//! built ([`Connections::after_build`]).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::SettingsConfig;
use crate::pce::client::{PceClient, PceError};

use crate::time::SharedClock;

/// Something to start once every node of the topology is built; given the run's shutdown,
/// it returns the task it spawned (the topology waits for it).
type Starter = Box<dyn FnOnce(CancellationToken) -> JoinHandle<()> + Send>;

/// The clients of every configured connection, by name.
#[derive(Clone)]
pub struct Connections {
    pce: HashMap<String, PceClient>,
    internal: tokio::sync::broadcast::Sender<crate::event::Alert>,
    inhibitor: Arc<crate::sinks::delivery::inhibit::Inhibitor>,
    tap: Arc<super::Tap>,
    delivery: Arc<crate::config::model::ConnectionsConfig>,
    clock: Option<SharedClock>,
    shared: Arc<Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>>,
    starters: Arc<Mutex<Vec<Starter>>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("pce", &self.pce)
            .finish_non_exhaustive()
    }
}

/// A connection could not be set up (a secret file unreadable, a bad CA file, ...).
#[derive(Debug, thiserror::Error)]
#[error("connection `{name}`: {source}")]
pub struct ConnectionError {
    /// The connection's name.
    pub name: String,
    /// Why.
    pub source: Box<PceError>,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            pce: HashMap::new(),
            internal: tokio::sync::broadcast::channel(64).0,
            inhibitor: Arc::default(),
            tap: Arc::default(),
            delivery: Arc::default(),
            clock: None,
            shared: Arc::default(),
            starters: Arc::default(),
        }
    }
}

impl Connections {
    /// Builds a client for every connection of `settings`, waiting on `clock`.
    pub fn build(
        settings: &SettingsConfig,
        clock: &SharedClock,
    ) -> Result<Connections, ConnectionError> {
        let mut pce = HashMap::new();
        for (name, cfg) in &settings.connections.pce {
            let client = PceClient::new(cfg, clock.clone()).map_err(|source| ConnectionError {
                name: name.clone(),
                source: Box::new(source),
            })?;
            pce.insert(name.clone(), client);
        }
        Ok(Connections {
            pce,
            inhibitor: Arc::new(crate::sinks::delivery::inhibit::Inhibitor::new(
                &settings.inhibit,
            )),
            delivery: Arc::new(crate::config::model::ConnectionsConfig {
                pce: Default::default(),
                ..settings.connections.clone()
            }),
            clock: Some(clock.clone()),
            ..Connections::default()
        })
    }

    /// What the API sees of the traffic (recent events, the live stream).
    pub fn tap(&self) -> &Arc<super::Tap> {
        &self.tap
    }

    /// The engine's inhibition rules and their firing source alerts.
    pub fn inhibitor(&self) -> &Arc<crate::sinks::delivery::inhibit::Inhibitor> {
        &self.inhibitor
    }

    /// Where vigil's own alerts are published; `internal` sources subscribe.
    pub fn internal_alerts(&self) -> &tokio::sync::broadcast::Sender<crate::event::Alert> {
        &self.internal
    }

    /// Only the delivery connections (SMTP, LINE, webhook) of `settings`, without PCE
    /// clients: for `vigil send-test`, which must not need the PCE's credentials.
    pub fn for_delivery(settings: &SettingsConfig, clock: &SharedClock) -> Connections {
        Connections {
            delivery: Arc::new(crate::config::model::ConnectionsConfig {
                pce: Default::default(),
                ..settings.connections.clone()
            }),
            clock: Some(clock.clone()),
            ..Connections::default()
        }
    }

    /// The client of PCE connection `name`, for a node being built (the loader has
    /// already checked that it exists; this is the runtime's own guard).
    pub fn pce_client(&self, name: &str) -> Result<PceClient, super::NodeError> {
        self.pce(name)
            .cloned()
            .ok_or_else(|| format!("no PCE connection `{name}` in the settings").into())
    }

    /// The client of PCE connection `name`.
    pub fn pce(&self, name: &str) -> Option<&PceClient> {
        self.pce.get(name)
    }

    /// The settings of SMTP connection `name`.
    pub fn smtp(&self, name: &str) -> Option<&crate::sinks::mail::SmtpConnectionConfig> {
        self.delivery.smtp.get(name)
    }

    /// The settings of LINE connection `name`.
    pub fn line(&self, name: &str) -> Option<&crate::sinks::line::LineConnectionConfig> {
        self.delivery.line.get(name)
    }

    /// The settings of webhook connection `name`.
    pub fn webhook(&self, name: &str) -> Option<&crate::sinks::webhook::WebhookConnectionConfig> {
        self.delivery.webhook.get(name)
    }

    /// The names of the PCE connections.
    pub fn pce_names(&self) -> impl Iterator<Item = &str> {
        self.pce.keys().map(String::as_str)
    }

    /// The clock the run waits on (the wall clock when built without one).
    pub fn clock(&self) -> SharedClock {
        self.clock
            .clone()
            .unwrap_or_else(|| Arc::new(crate::time::WallClock))
    }

    /// The helper of type `T` shared under `key` for this run, created by `init` on first
    /// use. `None` when `key` already holds a helper of another type.
    pub fn shared<T: Any + Send + Sync>(
        &self,
        key: &str,
        init: impl FnOnce() -> T,
    ) -> Option<Arc<T>> {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let entry = shared
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(init()) as Arc<dyn Any + Send + Sync>)
            .clone();
        entry.downcast::<T>().ok()
    }

    /// The helper of type `T` shared under `key`, if one was made.
    pub fn existing<T: Any + Send + Sync>(&self, key: &str) -> Option<Arc<T>> {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.get(key).cloned()?.downcast::<T>().ok()
    }

    /// Runs `f` once every node of the topology is built (so every subscriber of a shared
    /// helper is known), with the run's shutdown token. The task `f` spawns must end on
    /// that shutdown: [`super::RunningTopology::wait`] waits for it after the nodes.
    pub fn after_build(
        &self,
        f: impl FnOnce(CancellationToken) -> JoinHandle<()> + Send + 'static,
    ) {
        self.starters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(f));
    }

    /// Starts (once) everything registered with [`Connections::after_build`].
    pub(crate) fn start_after_build(&self, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
        let starters =
            std::mem::take(&mut *self.starters.lock().unwrap_or_else(|e| e.into_inner()));
        starters.into_iter().map(|f| f(shutdown.clone())).collect()
    }
}
