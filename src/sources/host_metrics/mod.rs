//! `host_metrics`: the host vigil runs on, from `/proc` — CPU, memory, disks, network,
//! load and the busiest processes — one event per scrape, counters turned into rates.

mod config;
mod scrape;
mod source;
#[cfg(test)]
mod tests;

pub use config::HostMetricsConfig;
pub use scrape::ScrapeError;
pub use source::HostMetricsSource;
