//! `nftables_ban`: the sink's configuration, its checks, and `build`.

use std::net::IpAddr;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::event::FieldPath;
use crate::node::{BuildContext, NodeError, Sink};
use crate::sinks::delivery::{DeliveryConfig, RetryConfig};
use crate::time::Duration;

/// The longest `ttl` (a year): longer bans are better written into the firewall's own
/// configuration.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

const IP_LIST_PREFIX: &str = "ip_list:";

/// Bans the address an alert names: adds it, with a timeout, to a set of the
/// vigil-owned nftables table `inet vigil`, whose input chain drops what the set holds.
/// `dry_run: true` (the default) changes nothing and records the JSON it would apply.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct NftablesBanSinkConfig {
    /// The stages this sink reads (alerts; each firing alert is a ban).
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// How long a ban lasts: the kernel removes the address when it passes. A second
    /// ban of a banned address keeps the longer of the two. At most `365d`. Default: `1h`.
    #[serde(default = "default_ttl")]
    pub ttl: Duration,
    /// The path of the address to ban in the alert (`group.src.ip`, `fields.client`).
    /// Default: the one IP address among the alert's group values (an alert grouped by
    /// `src.ip` bans that address); an alert whose group holds none, or several, is not
    /// banned and its delivery says why.
    #[serde(default)]
    pub ip_field: Option<String>,
    /// Addresses never banned: CIDRs (`10.0.0.0/8`), single addresses, and PCE IP lists
    /// (`ip_list:Trusted`, read from the PCE connections). The PCE's own address (each
    /// connection's, resolved from its URL) is never banned either. A ban refused here is
    /// recorded on the alert's delivery (`refused: … in the allow list`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// The most bans active at once (counted in the live sets); further ones are
    /// refused, recorded and counted (`vigil_node_dropped_total{reason="max_bans"}`).
    /// Default: `1000`.
    #[serde(default = "default_max_bans")]
    #[schemars(range(min = 1))]
    pub max_bans: u32,
    /// Change nothing: log and record the exact JSON each ban would apply (`dry run:
    /// would apply {…}`), without running `nft`. Set `false` to ban; vigil then needs
    /// CAP_NET_ADMIN. Default: `true`.
    #[serde(default = "default_true")]
    pub dry_run: bool,
    /// The `nft` program (a path, or a name looked up in `PATH`). Default: `nft`.
    #[serde(default = "default_nft")]
    pub nft: String,
    /// Alerts below this severity are not banned (`info`, `low`, `medium`, `high`,
    /// `critical`). Default: `info` (every alert).
    #[serde(default = "crate::sinks::delivery::default_min_severity")]
    pub min_severity: crate::event::Severity,
    /// How failed bans (`nft` missing or refusing, no CAP_NET_ADMIN) are retried.
    #[serde(default)]
    pub retry: RetryConfig,
    /// How long one ban may take before it counts as failed (and is retried). Default:
    /// `30s`.
    #[serde(default = "crate::sinks::delivery::default_timeout")]
    pub timeout: Duration,
    /// When vigil stops or the sink is reloaded, how long bans still waiting may be
    /// made; the rest stay in the outbox for the next start. Default: `30s`.
    #[serde(default = "crate::sinks::delivery::default_drain_timeout")]
    pub drain_timeout: Duration,
}

fn default_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_bans() -> u32 {
    1000
}
fn default_true() -> bool {
    true
}
fn default_nft() -> String {
    "nft".into()
}

fn example() -> serde_json::Value {
    serde_json::json!({
        "inputs": ["brute_force"],
        "ttl": "1h",
        "allow": ["10.0.0.0/8", "ip_list:Trusted"],
        "dry_run": false
    })
}

/// One entry of `allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// A network (a single address is a /32 or /128).
    Net(IpNet),
    /// A PCE IP list, by name.
    IpList(String),
}

impl std::fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowEntry::Net(n) => write!(f, "{n}"),
            AllowEntry::IpList(name) => write!(f, "{IP_LIST_PREFIX}{name}"),
        }
    }
}

/// Reads one `allow` entry.
pub fn parse_allow(text: &str) -> Result<AllowEntry, String> {
    let text = text.trim();
    if let Some(name) = text.strip_prefix(IP_LIST_PREFIX) {
        let name = name.trim();
        if name.is_empty() {
            return Err("`ip_list:` needs the IP list's name (`ip_list:Trusted`)".into());
        }
        return Ok(AllowEntry::IpList(name.to_string()));
    }
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(AllowEntry::Net(net.trunc()));
    }
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(AllowEntry::Net(IpNet::from(addr)));
    }
    Err(format!(
        "`{text}` is not an address, a CIDR (`10.0.0.0/8`) or `ip_list:NAME`"
    ))
}

impl NftablesBanSinkConfig {
    /// The delivery options: every alert is a notification group of its own (`group_by:
    /// [id]`), taken at once, never reminded and not told when it resolves: one ban per
    /// alert episode.
    pub fn delivery(&self) -> DeliveryConfig {
        let never = Duration::from_secs(10 * 365 * 24 * 3600);
        DeliveryConfig {
            min_severity: self.min_severity,
            cooldown: None,
            group_wait: Duration::from_secs(0),
            group_by: vec!["id".into()],
            group_interval: Duration::from_secs(60),
            repeat_interval: never,
            repeat_backoff: 1.0,
            max_repeat_interval: never,
            send_resolved: false,
            retry: self.retry.clone(),
            timeout: self.timeout,
            drain_timeout: self.drain_timeout,
        }
    }

    /// The `allow` entries (those that read).
    pub fn allow_entries(&self) -> Vec<AllowEntry> {
        self.allow
            .iter()
            .filter_map(|a| parse_allow(a).ok())
            .collect()
    }

    /// Structural checks.
    pub fn check(&self, p: &mut Problems) {
        p.positive_duration("/ttl", "ttl", &self.ttl);
        if self.ttl.get() > MAX_TTL.get() {
            p.error(
                "/ttl",
                codes::INVALID_VALUE,
                "ttl is at most 365d: a longer ban belongs in the firewall's own configuration",
            );
        }
        if self.ttl.is_positive() && self.ttl.get().as_secs() == 0 {
            p.error(
                "/ttl",
                codes::INVALID_VALUE,
                "ttl is at least 1s (nftables counts timeouts in seconds)",
            );
        }
        p.positive_duration("/timeout", "timeout", &self.timeout);
        self.retry.check(p);
        if let Some(path) = &self.ip_field
            && let Err(e) = FieldPath::parse(path)
        {
            p.error("/ip_field", codes::INVALID_VALUE, e.to_string());
        }
        for (i, entry) in self.allow.iter().enumerate() {
            if let Err(e) = parse_allow(entry) {
                p.error(format!("/allow/{i}"), codes::INVALID_VALUE, e);
            }
        }
        if self.max_bans == 0 {
            p.error("/max_bans", codes::INVALID_VALUE, "max_bans is at least 1");
        }
        if self.nft.trim().is_empty() {
            p.error(
                "/nft",
                codes::INVALID_VALUE,
                "`nft` is empty: give the nft program (`nft`, `/usr/sbin/nft`)",
            );
        }
    }

    /// Builds the running sink.
    pub fn build(
        &self,
        cx: &BuildContext,
        services: &super::BanServices,
        delivery: &crate::sinks::DeliveryServices,
    ) -> Result<Box<dyn Sink>, NodeError> {
        let mut allow = Vec::new();
        for (i, entry) in self.allow.iter().enumerate() {
            allow.push(parse_allow(entry).map_err(|e| format!("allow[{i}]: {e}"))?);
        }
        let ip_field = self
            .ip_field
            .as_deref()
            .map(FieldPath::parse)
            .transpose()
            .map_err(|e| e.to_string())?;
        let banner = super::banner::Banner::new(
            super::banner::BanSettings {
                ttl: self.ttl.get(),
                ip_field,
                allow,
                max_bans: self.max_bans,
                dry_run: self.dry_run,
                nft: self.nft.clone(),
            },
            cx,
            services,
        );
        Ok(Box::new(super::banner::NftablesBanSink::new(
            banner,
            &self.delivery(),
            cx,
            delivery,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_entries_are_networks_addresses_or_ip_lists() {
        assert_eq!(
            parse_allow("10.1.2.3/8"),
            Ok(AllowEntry::Net("10.0.0.0/8".parse().unwrap()))
        );
        assert_eq!(
            parse_allow("192.0.2.1"),
            Ok(AllowEntry::Net("192.0.2.1/32".parse().unwrap()))
        );
        assert_eq!(
            parse_allow("2001:db8::/32"),
            Ok(AllowEntry::Net("2001:db8::/32".parse().unwrap()))
        );
        assert_eq!(
            parse_allow("ip_list:Trusted Hosts"),
            Ok(AllowEntry::IpList("Trusted Hosts".into()))
        );
        assert!(parse_allow("ip_list:").is_err());
        assert!(
            parse_allow("10.0.0.300")
                .unwrap_err()
                .contains("not an address")
        );
    }

    fn check(yaml: serde_json::Value) -> Vec<String> {
        let cfg: NftablesBanSinkConfig = serde_json::from_value(yaml).unwrap();
        let mut p = Problems::in_dir(".");
        cfg.check(&mut p);
        p.items
            .iter()
            .map(|i| format!("{} {}", i.pointer, i.message))
            .collect()
    }

    #[test]
    fn checks_name_the_field_at_fault() {
        let cfg: NftablesBanSinkConfig =
            serde_json::from_value(serde_json::json!({"inputs": ["x"]})).unwrap();
        assert!(cfg.dry_run, "dry run by default");
        assert_eq!(cfg.ttl.get().as_secs(), 3600);
        assert_eq!(cfg.max_bans, 1000);
        assert!(check(serde_json::json!({"inputs": ["x"]})).is_empty());
        let found = check(serde_json::json!({"inputs": ["x"], "ttl": "400d",
            "allow": ["10.0.0.0/8", "nope"], "ip_field": "group..ip", "max_bans": 0}));
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found.iter().any(|f| f.starts_with("/ttl ")), "{found:?}");
        assert!(
            found.iter().any(|f| f.starts_with("/allow/1 ")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|f| f.starts_with("/ip_field ")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|f| f.starts_with("/max_bans ")),
            "{found:?}"
        );
    }
}
