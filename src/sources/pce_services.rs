//! What the `pce_*` sources of one PCE connection share for a run: its client (one
//! request budget for every pipeline), its name cache, and its traffic hub (one query per
//! cycle for every `pce_traffic` source).

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::node::BuildContext;
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
    pub(crate) fn traffic_hub(&self, cx: &BuildContext) -> Arc<TrafficHub> {
        let mut traffic = self.lock();
        if let Some(hub) = &traffic.hub {
            return hub.clone();
        }
        let hub = Arc::new(TrafficHub::new(
            cx,
            &self.name,
            self.client.clone(),
            self.names.clone(),
        ));
        traffic.hub = Some(hub.clone());
        hub
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::SourceConfig;
    use crate::node::Source;
    use crate::pce::client::PceConnectionConfig;
    use crate::secret::Secret;

    /// Building a `pce_traffic` source joins nothing (a reload may drop what it built);
    /// attaching it subscribes it to its connection's hub, once, and a rebuilt source of
    /// the same id takes the old one's place.
    #[test]
    fn a_traffic_source_joins_its_hub_when_attached_not_when_built() {
        let clock: crate::time::SharedClock = Arc::new(crate::time::WallClock);
        let cfg =
            PceConnectionConfig::new("https://pce.test:8443", Secret::new("k"), Secret::new("s"));
        let pce = PceServices::new("lab", PceClient::new(&cfg, clock.clone()).unwrap());
        let services = crate::components::Services {
            pce: [("lab".to_string(), Arc::new(pce))].into(),
            ..Default::default()
        };
        let source: SourceConfig =
            serde_json::from_value(serde_json::json!({"type": "pce_traffic", "connection": "lab"}))
                .unwrap();
        let cx = BuildContext {
            id: "p.flows".into(),
            pipeline: "p".into(),
            node: "flows".into(),
            base_dir: Default::default(),
            state_dir: Default::default(),
            rejected_max_bytes: 1 << 24,
            clock,
            store: Arc::new(crate::store::Store::in_memory().unwrap()),
            keep_state: false,
            public_url: "http://vigil".into(),
            history_interval: chrono::Duration::minutes(1),
            rebuilt: false,
            counters: Default::default(),
        };
        let mut built: Box<dyn Source> = source.build(&cx, &services, None).unwrap();
        let hub = services.pce["lab"].traffic_hub(&cx);
        assert!(hub.subscribers().is_empty(), "built, not attached");
        built.attach();
        built.attach();
        assert_eq!(hub.subscribers(), vec![Arc::from("p.flows")]);
        let mut again = source.build(&cx, &services, None).unwrap();
        again.attach();
        assert_eq!(
            hub.subscribers().len(),
            1,
            "the rebuilt source took its place"
        );
    }
}
