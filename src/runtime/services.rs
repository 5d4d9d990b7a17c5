//! The services of a run ([`Services`]), built from the settings before any node.

use std::sync::Arc;

use crate::components::Services;
use crate::config::SettingsConfig;
use crate::pce::client::{PceClient, PceError};
use crate::sinks::DeliveryServices;
use crate::sinks::delivery::inhibit::Inhibitor;
use crate::sources::PceServices;
use crate::time::SharedClock;

/// A connection could not be set up (a secret file unreadable, a bad CA file, ...).
#[derive(Debug, thiserror::Error)]
#[error("connection `{name}`: {source}")]
pub struct ConnectionError {
    /// The connection's name.
    pub name: String,
    /// Why.
    pub source: Box<PceError>,
}

/// Builds a client for every PCE connection of `settings` (waiting on `clock`), and the
/// delivery connections and inhibition rules.
pub fn build_services(
    settings: &SettingsConfig,
    clock: &SharedClock,
) -> Result<Services, ConnectionError> {
    let mut pce = std::collections::BTreeMap::new();
    for (name, cfg) in &settings.connections.pce {
        let client = PceClient::new(cfg, clock.clone()).map_err(|source| ConnectionError {
            name: name.clone(),
            source: Box::new(source),
        })?;
        pce.insert(name.clone(), Arc::new(PceServices::new(name, client)));
    }
    Ok(Services {
        pce,
        delivery: Arc::new(delivery_services(settings)),
        ..Services::default()
    })
}

/// Only the delivery connections (SMTP, LINE, webhook) and inhibition rules of
/// `settings`, without PCE clients: for `vigil send-test`, which must not need the PCE's
/// credentials.
pub fn delivery_services(settings: &SettingsConfig) -> DeliveryServices {
    DeliveryServices {
        smtp: settings.connections.smtp.clone(),
        line: settings.connections.line.clone(),
        webhook: settings.connections.webhook.clone(),
        inhibitor: Arc::new(Inhibitor::new(&settings.inhibit)),
    }
}
