//! The name cache of a PCE connection: labels, IP lists (with their ranges) and workloads,
//! refreshed on a schedule by the connection's traffic hub.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};
use serde_json::Value;

use crate::event::Timestamp;
use crate::pce::client::{PceClient, PceError, PolicyVersion, WorkloadQuery};

/// One IP list: its name and ranges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IpListEntry {
    /// The list's name.
    pub name: String,
    /// The ranges it includes.
    pub include: Vec<IpNet>,
    /// The ranges it excludes (`exclusion: true`).
    pub exclude: Vec<IpNet>,
}

impl IpListEntry {
    /// Whether `ip` is in the list (in an included range and no excluded one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.include.iter().any(|n| n.contains(&ip))
            && !self.exclude.iter().any(|n| n.contains(&ip))
    }
}

/// One snapshot of the names.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Label href → (key, value).
    pub labels: HashMap<String, (String, String)>,
    /// IP list href → the list.
    pub ip_lists: HashMap<String, Arc<IpListEntry>>,
    /// IP list name → the list.
    pub ip_lists_by_name: HashMap<String, Arc<IpListEntry>>,
    /// Workload href → its labels as (key, value).
    pub workloads: HashMap<String, Vec<(String, String)>>,
    /// When this snapshot was read (`None`: never).
    pub refreshed_at: Option<Timestamp>,
}

/// The shared, refreshable names of one connection.
#[derive(Debug, Default)]
pub struct NameCache {
    current: RwLock<Arc<Names>>,
    /// How many times the snapshot was replaced: a reader that only wants to know whether
    /// it changed looks at this (one atomic load) instead of the snapshot.
    generation: std::sync::atomic::AtomicU64,
}

impl NameCache {
    /// How many times the snapshot was replaced so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Names> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the snapshot.
    pub fn replace(&self, names: Names) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(names);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// The included ranges of the IP list called `name` (for an `ip_list:Name` operand).
    pub fn ip_list_ranges(&self, name: &str) -> Option<Vec<IpNet>> {
        self.snapshot()
            .ip_lists_by_name
            .get(name)
            .map(|l| l.include.clone())
    }

    /// Whether `ip` is in the IP list called `name` (exclusions honoured); `None` when no
    /// list has that name.
    pub fn ip_list_contains(&self, name: &str, ip: IpAddr) -> Option<bool> {
        self.snapshot()
            .ip_lists_by_name
            .get(name)
            .map(|l| l.contains(ip))
    }

    /// Reads every name from the PCE (three collections) and replaces the snapshot. On an
    /// error the previous snapshot stays.
    pub async fn refresh(&self, client: &PceClient, now: Timestamp) -> Result<(), PceError> {
        let labels = client.labels(None, None).await?;
        let ip_lists = client.ip_lists(PolicyVersion::Active).await?;
        let workloads = client.workloads(&WorkloadQuery::default()).await?;
        let mut names = Names {
            refreshed_at: Some(now),
            ..Names::default()
        };
        for l in &labels {
            if let (Some(href), Some(key), Some(value)) =
                (str_of(l, "href"), str_of(l, "key"), str_of(l, "value"))
            {
                names
                    .labels
                    .insert(href.to_string(), (key.to_string(), value.to_string()));
            }
        }
        for l in &ip_lists {
            let (Some(href), Some(name)) = (str_of(l, "href"), str_of(l, "name")) else {
                continue;
            };
            let mut entry = IpListEntry {
                name: name.to_string(),
                ..IpListEntry::default()
            };
            for r in l
                .get("ip_ranges")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let nets = range_nets(str_of(r, "from_ip"), str_of(r, "to_ip"));
                if r.get("exclusion").and_then(Value::as_bool).unwrap_or(false) {
                    entry.exclude.extend(nets);
                } else {
                    entry.include.extend(nets);
                }
            }
            let entry = Arc::new(entry);
            names.ip_lists.insert(href.to_string(), entry.clone());
            names.ip_lists_by_name.insert(name.to_string(), entry);
        }
        for w in &workloads {
            let Some(href) = str_of(w, "href") else {
                continue;
            };
            let labels = w
                .get("labels")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|l| label_pair(l, &names.labels))
                .collect();
            names.workloads.insert(href.to_string(), labels);
        }
        self.replace(names);
        Ok(())
    }
}

fn str_of<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// A label object's (key, value): from the object, else from the cache by href.
pub(crate) fn label_pair(
    l: &Value,
    labels: &HashMap<String, (String, String)>,
) -> Option<(String, String)> {
    match (str_of(l, "key"), str_of(l, "value")) {
        (Some(k), Some(v)) => Some((k.to_string(), v.to_string())),
        _ => str_of(l, "href").and_then(|h| labels.get(h).cloned()),
    }
}

/// The networks of an IP list range: `from_ip` as a CIDR or address, up to `to_ip`.
fn range_nets(from: Option<&str>, to: Option<&str>) -> Vec<IpNet> {
    let Some(from) = from.map(str::trim) else {
        return Vec::new();
    };
    if let Ok(net) = from.parse::<IpNet>() {
        return vec![net.trunc()];
    }
    let Ok(start) = from.parse::<IpAddr>() else {
        return Vec::new();
    };
    let end = to.and_then(|t| t.trim().parse::<IpAddr>().ok());
    match (start, end) {
        (IpAddr::V4(a), Some(IpAddr::V4(b))) if a <= b => {
            Ipv4Subnets::new(a, b, 0).map(IpNet::V4).collect()
        }
        (IpAddr::V6(a), Some(IpAddr::V6(b))) if a <= b => {
            Ipv6Subnets::new(a, b, 0).map(IpNet::V6).collect()
        }
        (ip, _) => vec![IpNet::from(ip)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_become_networks() {
        assert_eq!(
            range_nets(Some("10.0.0.0/8"), None),
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            range_nets(Some("10.0.0.0"), Some("10.0.0.255")),
            vec!["10.0.0.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            range_nets(Some("192.0.2.1"), None),
            vec!["192.0.2.1/32".parse::<IpNet>().unwrap()]
        );
        assert!(range_nets(Some("bogus"), None).is_empty());
        let list = IpListEntry {
            name: "x".into(),
            include: range_nets(Some("10.0.0.0/8"), None),
            exclude: range_nets(Some("10.1.0.0/16"), None),
        };
        assert!(list.contains("10.2.0.1".parse().unwrap()));
        assert!(!list.contains("10.1.0.1".parse().unwrap()));
    }
}
