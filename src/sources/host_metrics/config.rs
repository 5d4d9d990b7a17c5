//! The `host_metrics` source's configuration.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;

use super::source::HostMetricsSource;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::node::{BuildContext, NodeError, Source};
use crate::time::Duration;

/// The host vigil runs on (Linux, from `/proc`): every `interval`, one event with
/// `cpu.percent` (overall; `cpu.cores` per core), `memory.used_percent`,
/// `memory.available_bytes`, `disk.<device>.{read_bps, write_bps, util_percent}` and
/// `disk_total.{read_bps, write_bps, bps}`, `net.<interface>.{rx_bps, tx_bps}`,
/// `load.{1, 5, 15}`, `host`, and with `top_processes` the busiest processes
/// (`top.cpu`, `top.rss`, `top.io`: lists of `{pid, name, cpu_percent, rss_bytes,
/// io_bps}`). Rates are over the time between two scrapes as the kernel measures it
/// (`/proc/uptime`), so the first event has no rates; a counter that went backwards (a
/// reset, a replaced device) gives no rate that once, never a negative one. Thresholds
/// are ordinary pipelines: see `pipelines/host/`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct HostMetricsConfig {
    /// How often to scrape. Default: `10s`.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// Where `/proc` is (a container reading its host's mounts it elsewhere, e.g.
    /// `/host/proc`; tests read a captured copy). Default: `/proc`.
    #[serde(default = "default_proc_root")]
    pub proc_root: PathBuf,
    /// The block devices to report (names as in `/proc/diskstats`). Default: every whole
    /// disk (no partitions, loop, RAM or optical devices).
    #[serde(default)]
    pub disks: Vec<String>,
    /// The network interfaces to report. Default: every one but `lo`.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// How many of the busiest processes to list by CPU, resident memory and storage I/O
    /// (`top.*`; reading another user's I/O needs root or CAP_SYS_PTRACE, without it those
    /// processes have no `io_bps`). Default: 0 (none).
    #[serde(default)]
    #[schemars(range(max = 100))]
    pub top_processes: usize,
}

fn example() -> serde_json::Value {
    serde_json::json!({"interval": "10s", "top_processes": 5})
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_proc_root() -> PathBuf {
    PathBuf::from("/proc")
}

impl HostMetricsConfig {
    /// Structural checks.
    pub fn check(&self, problems: &mut Problems) {
        problems.positive_duration("/interval", "interval", &self.interval);
        if self.top_processes > 100 {
            problems.error(
                "/top_processes",
                codes::INVALID_VALUE,
                "top_processes is at most 100",
            );
        }
        if self.proc_root.as_os_str().is_empty() {
            problems.error("/proc_root", codes::INVALID_VALUE, "proc_root is empty");
        }
    }

    /// Builds the running source.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Source>, NodeError> {
        Ok(Box::new(HostMetricsSource::new(self.clone(), cx)))
    }
}
