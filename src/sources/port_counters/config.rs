//! The `port_counters` source's configuration.

use schemars::JsonSchema;
use serde::Deserialize;

use super::source::PortCountersSource;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::node::{BuildContext, NodeError, Source};
use crate::time::Duration;

/// Bytes and packets per port and direction, counted by the kernel (nftables, or
/// iptables), read every `interval`: one event per port and protocol with what passed
/// since the reading before — `port`, `proto`, `in_bytes`, `out_bytes`, `in_packets`,
/// `out_packets`, `interval_seconds`, dated at the start of the interval it measured
/// (`timestamp`; `interval_end` its end: a report counts a reading in the period it began
/// in). `in` is traffic to the port on this host (input), `out` its answers (output, from
/// the port).
///
/// vigil owns one table (`table`, default `inet vigil_ports`): listed `ports` get a named
/// counter per direction and protocol; without `ports` a dynamic set counts every port
/// below `below` (`update @ports_in { meta l4proto . th dport }`). The table is created
/// at the first start and left in place when vigil stops, so the kernel keeps counting:
/// the last readings are saved, and the next start hands on what passed meanwhile. A
/// counter that went backwards (the table was recreated, the host rebooted) counts from
/// zero. Changing `ports` recreates the table. Reading and changing nftables needs
/// CAP_NET_ADMIN (see the README). `mode: iptables` uses two chains of its own
/// (`VIGIL_PORTS_IN`, `VIGIL_PORTS_OUT`, jumped to from INPUT and OUTPUT) with
/// `iptables -L -x -v -n`, for hosts without nftables; it needs listed `ports`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct PortCountersConfig {
    /// How often to read the counters. Default: `1m`.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// The ports to count. Default: every port below `below` (nftables only).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// The protocols counted for listed ports. Default: `[tcp, udp]`.
    #[serde(default = "default_protocols")]
    pub protocols: Vec<Protocol>,
    /// Without `ports`: count the ports below this one (the ephemeral ports above it are
    /// clients' ends of connections, not services). Default: 32768.
    #[serde(default = "default_below")]
    pub below: u16,
    /// `nftables` (the default) or `iptables`.
    #[serde(default)]
    pub mode: CounterMode,
    /// The table vigil owns (family `inet`), or the chain-name prefix with iptables.
    /// Default: `vigil_ports`.
    #[serde(default = "default_table")]
    pub table: String,
    /// The `nft` program (`iptables` and `ip6tables` with `mode: iptables`). Default:
    /// `nft`, looked up in PATH.
    #[serde(default)]
    pub program: Option<String>,
}

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Its name in nftables and iptables.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// How the kernel counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CounterMode {
    /// nftables (`nft -j`).
    #[default]
    Nftables,
    /// iptables and ip6tables (`-L -x -v -n`).
    Iptables,
}

fn example() -> serde_json::Value {
    serde_json::json!({"interval": "1h", "ports": [8388, 8389]})
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_protocols() -> Vec<Protocol> {
    vec![Protocol::Tcp, Protocol::Udp]
}
fn default_below() -> u16 {
    32768
}
fn default_table() -> String {
    "vigil_ports".into()
}

impl PortCountersConfig {
    /// The program run.
    pub(super) fn program(&self) -> &str {
        match (&self.program, self.mode) {
            (Some(p), _) => p,
            (None, CounterMode::Nftables) => "nft",
            (None, CounterMode::Iptables) => "iptables",
        }
    }

    /// Structural checks.
    pub fn check(&self, problems: &mut Problems) {
        problems.positive_duration("/interval", "interval", &self.interval);
        if self.protocols.is_empty() {
            problems.error(
                "/protocols",
                codes::INVALID_VALUE,
                "list at least one protocol",
            );
        }
        if self.ports.contains(&0) {
            problems.error("/ports", codes::INVALID_VALUE, "port 0 is not a port");
        }
        if self.mode == CounterMode::Iptables && self.ports.is_empty() {
            problems.error(
                "/ports",
                codes::MISSING_KEY,
                "`mode: iptables` counts listed ports only: list them in `ports`",
            );
        }
        let valid_name = !self.table.is_empty()
            && self.table.len() <= 20
            && self
                .table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            problems.error(
                "/table",
                codes::INVALID_VALUE,
                "a table name is 1 to 20 letters, digits or `_`",
            );
        }
    }

    /// Builds the running source.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Source>, NodeError> {
        Ok(Box::new(PortCountersSource::new(self.clone(), cx)))
    }
}
