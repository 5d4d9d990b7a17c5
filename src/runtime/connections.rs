//! Clients of the systems named under `connections:` in the settings, built once per run
//! and shared: every pipeline that reads a PCE uses the same client, so one request budget
//! covers them all.

use std::collections::HashMap;

use crate::config::SettingsConfig;
use crate::pce::client::{PceClient, PceError};

use super::SharedClock;

/// The clients of every configured connection, by name.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    pce: HashMap<String, PceClient>,
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
        Ok(Connections { pce })
    }

    /// The client of PCE connection `name`.
    pub fn pce(&self, name: &str) -> Option<&PceClient> {
        self.pce.get(name)
    }
}
