//! `pce_health`: the PCE's own health, from `GET /api/v2/health`.

mod config;
mod source;

pub use config::PceHealthConfig;
pub use source::{HealthStatus, PceHealthSource};
