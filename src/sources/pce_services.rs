//! What the `pce_*` sources of one PCE connection share for a run: its client (one
//! request budget for every pipeline), its name cache, and its traffic hub (one query per
//! cycle for every `pce_traffic` source).

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::node::{BuildContext, NodeError};
use crate::pce::client::PceClient;
use crate::pce::names::NameCache;
use crate::sources::pce_traffic::{TrafficCounters, TrafficHub};

/// The services of one PCE connection; see the module docs.
pub struct PceServices {
    name: String,
    client: PceClient,
    names: Arc<NameCache>,
    traffic: Mutex<Traffic>,
}

/// The traffic hub of a connection: made when the first `pce_traffic` source reading the
/// connection is built, started once every node is built.
#[derive(Default)]
struct Traffic {
    hub: Option<Arc<TrafficHub>>,
    started: bool,
}

impl std::fmt::Debug for PceServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PceServices")
            .field("name", &self.name)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl PceServices {
    /// The services of connection `name`, talking through `client`.
    pub fn new(name: &str, client: PceClient) -> PceServices {
        PceServices {
            name: name.to_string(),
            client,
            names: Arc::default(),
            traffic: Mutex::default(),
        }
    }

    /// The connection's name under `connections: pce:`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connection's client.
    pub fn client(&self) -> &PceClient {
        &self.client
    }

    /// The connection's name cache (labels, IP lists, workloads), refreshed by its traffic
    /// hub and read by filters resolving `ip_list:Name`.
    pub fn names(&self) -> &Arc<NameCache> {
        &self.names
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Traffic> {
        self.traffic
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection's traffic hub, made on first use by the node being built in `cx`.
    pub(crate) fn traffic_hub(&self, cx: &BuildContext) -> Result<Arc<TrafficHub>, NodeError> {
        let mut traffic = self.lock();
        if let Some(hub) = &traffic.hub {
            return Ok(hub.clone());
        }
        let hub = Arc::new(TrafficHub::new(
            cx,
            &self.name,
            self.client.clone(),
            self.names.clone(),
        ));
        traffic.hub = Some(hub.clone());
        Ok(hub)
    }

    /// Starts the traffic hub if one was made and has not started yet; the task ends on
    /// `shutdown`.
    pub fn start(&self, shutdown: &CancellationToken) -> Option<JoinHandle<()>> {
        let mut traffic = self.lock();
        if traffic.started {
            return None;
        }
        let hub = traffic.hub.clone()?;
        traffic.started = true;
        Some(hub.start(shutdown.clone()))
    }

    /// The traffic counters, if a `pce_traffic` source reads this connection.
    pub fn traffic_counters(&self) -> Option<TrafficCounters> {
        let hub = self.lock().hub.clone()?;
        Some(hub.counters())
    }
}
