//! What the kernel counts, and how to make it count: vigil's nftables table (text for
//! `nft -f -`, read back with `nft -j list table`) or its iptables chains (read with
//! `-L -x -v -n`), and the readings both give.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{PortCountersConfig, Protocol};

/// A direction of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Direction {
    /// To the port, on this host (input).
    In,
    /// From the port (output).
    Out,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One counter: a direction, a protocol (`tcp`, `udp`, or another the set met) and a
/// port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(super) struct Key {
    pub(super) dir: Direction,
    pub(super) proto: String,
    pub(super) port: u16,
}

/// Bytes and packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Count {
    pub(super) bytes: u64,
    pub(super) packets: u64,
}

/// Every counter's value at one reading.
pub(super) type Readings = BTreeMap<Key, Count>;

/// The name of the named counter of a listed port.
fn counter_name(dir: Direction, proto: Protocol, port: u16) -> String {
    format!("{}_{}_{port}", dir.as_str(), proto.as_str())
}

/// The names of the counters (or sets) the table holds when it is as `cfg` wants.
pub(super) fn expected_objects(cfg: &PortCountersConfig) -> BTreeSet<String> {
    if cfg.ports.is_empty() {
        return ["set:ports_in", "set:ports_out"].map(String::from).into();
    }
    let mut out = BTreeSet::new();
    for &port in &cfg.ports {
        for &proto in &cfg.protocols {
            for dir in [Direction::In, Direction::Out] {
                out.insert(format!("counter:{}", counter_name(dir, proto, port)));
            }
        }
    }
    out
}

/// The nft script (for `nft -f -`, one transaction) that makes vigil's table as `cfg`
/// wants it, replacing one that was there.
pub(super) fn nft_script(cfg: &PortCountersConfig) -> String {
    let t = &cfg.table;
    let mut s = format!("add table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n");
    let (mut input, mut output) = (String::new(), String::new());
    if cfg.ports.is_empty() {
        for set in ["ports_in", "ports_out"] {
            s.push_str(&format!(
                "  set {set} {{ type inet_proto . inet_service; flags dynamic; size 65536; counter; }}\n"
            ));
        }
        let below = cfg.below;
        input.push_str(&format!(
            "    meta l4proto {{ tcp, udp }} th dport < {below} update @ports_in {{ meta l4proto . th dport }}\n"
        ));
        output.push_str(&format!(
            "    meta l4proto {{ tcp, udp }} th sport < {below} update @ports_out {{ meta l4proto . th sport }}\n"
        ));
    } else {
        for &port in &cfg.ports {
            for &proto in &cfg.protocols {
                let p = proto.as_str();
                for dir in [Direction::In, Direction::Out] {
                    s.push_str(&format!(
                        "  counter {} {{ }}\n",
                        counter_name(dir, proto, port)
                    ));
                }
                input.push_str(&format!(
                    "    {p} dport {port} counter name \"{}\"\n",
                    counter_name(Direction::In, proto, port)
                ));
                output.push_str(&format!(
                    "    {p} sport {port} counter name \"{}\"\n",
                    counter_name(Direction::Out, proto, port)
                ));
            }
        }
    }
    // Before the filter chains (priority 0), so what they drop is counted too.
    s.push_str(&format!(
        "  chain input {{\n    type filter hook input priority -150; policy accept;\n{input}  }}\n  chain output {{\n    type filter hook output priority -150; policy accept;\n{output}  }}\n}}\n"
    ));
    s
}

/// Why a listing does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAListing(pub String);

/// What `nft -j list table inet <table>` printed: the objects it holds (as
/// [`expected_objects`] names them) and every counter's value.
pub(super) fn read_nft(json: &str) -> Result<(BTreeSet<String>, Readings), NotAListing> {
    let v: Value = serde_json::from_str(json).map_err(|e| NotAListing(e.to_string()))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| NotAListing("no `nftables` list".into()))?;
    let mut objects = BTreeSet::new();
    let mut readings = Readings::new();
    let count = |c: &Value| Count {
        bytes: c.get("bytes").and_then(Value::as_u64).unwrap_or(0),
        packets: c.get("packets").and_then(Value::as_u64).unwrap_or(0),
    };
    for item in items {
        if let Some(c) = item.get("counter") {
            let Some(name) = c.get("name").and_then(Value::as_str) else {
                continue;
            };
            objects.insert(format!("counter:{name}"));
            if let Some(key) = parse_counter_name(name) {
                readings.insert(key, count(c));
            }
        } else if let Some(set) = item.get("set") {
            let Some(name) = set.get("name").and_then(Value::as_str) else {
                continue;
            };
            objects.insert(format!("set:{name}"));
            let dir = match name {
                "ports_in" => Direction::In,
                "ports_out" => Direction::Out,
                _ => continue,
            };
            for e in set
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                // {"elem": {"val": {"concat": ["tcp", 9999]}, "counter": {...}}}
                let Some(inner) = e.get("elem") else {
                    continue;
                };
                let concat = inner.pointer("/val/concat").and_then(Value::as_array);
                let (Some(proto), Some(port)) = (
                    concat.and_then(|c| c.first()).and_then(proto_of),
                    concat
                        .and_then(|c| c.get(1))
                        .and_then(Value::as_u64)
                        .and_then(|p| u16::try_from(p).ok()),
                ) else {
                    continue;
                };
                if let Some(c) = inner.get("counter") {
                    readings.insert(Key { dir, proto, port }, count(c));
                }
            }
        }
    }
    Ok((objects, readings))
}

/// A protocol as nft writes it in a set element: its name, or its number.
fn proto_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(match n.as_u64()? {
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            other => other.to_string(),
        }),
        _ => None,
    }
}

/// `in_tcp_8388` → its key.
fn parse_counter_name(name: &str) -> Option<Key> {
    let mut parts = name.splitn(3, '_');
    let dir = match parts.next()? {
        "in" => Direction::In,
        "out" => Direction::Out,
        _ => return None,
    };
    let proto = parts.next()?.to_string();
    let port = parts.next()?.parse().ok()?;
    Some(Key { dir, proto, port })
}

/// The iptables chain of `dir` (`VIGIL_PORTS_IN`).
pub(super) fn iptables_chain(cfg: &PortCountersConfig, dir: Direction) -> String {
    format!(
        "{}_{}",
        cfg.table.to_ascii_uppercase(),
        dir.as_str().to_ascii_uppercase()
    )
}

/// The rules of `dir`'s chain, as `-A` arguments, in order.
pub(super) fn iptables_rules(cfg: &PortCountersConfig, dir: Direction) -> Vec<Vec<String>> {
    let flag = match dir {
        Direction::In => "--dport",
        Direction::Out => "--sport",
    };
    let mut out = Vec::new();
    for &port in &cfg.ports {
        for &proto in &cfg.protocols {
            out.push(
                ["-p", proto.as_str(), flag, &port.to_string()]
                    .map(String::from)
                    .to_vec(),
            );
        }
    }
    out
}

/// What `iptables -L CHAIN -x -v -n` printed for `dir`'s chain: the value of each rule
/// that counts a port (`tcp dpt:8388`, `udp spt:53`), added to `into`; the rules as
/// `(proto, port)` in order.
pub(super) fn read_iptables(
    text: &str,
    dir: Direction,
    into: &mut Readings,
) -> Result<Vec<(String, u16)>, NotAListing> {
    let want = match dir {
        Direction::In => "dpt:",
        Direction::Out => "spt:",
    };
    let mut rules = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(pkts), Some(bytes)) = (
            words.first().and_then(|w| w.parse::<u64>().ok()),
            words.get(1).and_then(|w| w.parse::<u64>().ok()),
        ) else {
            // The chain's header lines.
            continue;
        };
        let proto = words
            .iter()
            .find(|w| matches!(**w, "tcp" | "udp" | "6" | "17"))
            .map(|w| match *w {
                "6" => "tcp",
                "17" => "udp",
                other => other,
            });
        let port = words
            .iter()
            .find_map(|w| w.strip_prefix(want))
            .and_then(|p| p.parse::<u16>().ok());
        let (Some(proto), Some(port)) = (proto, port) else {
            return Err(NotAListing(format!("a rule vigil did not make: {line:?}")));
        };
        let c = into
            .entry(Key {
                dir,
                proto: proto.to_string(),
                port,
            })
            .or_default();
        c.bytes = c.bytes.saturating_add(bytes);
        c.packets = c.packets.saturating_add(pkts);
        rules.push((proto.to_string(), port));
    }
    Ok(rules)
}

/// What passed between two readings: `after − before`, or `after` for a counter that
/// went backwards (it started again from zero).
pub(super) fn delta(before: Option<Count>, after: Count) -> Count {
    match before {
        Some(b) if after.bytes >= b.bytes && after.packets >= b.packets => Count {
            bytes: after.bytes - b.bytes,
            packets: after.packets - b.packets,
        },
        _ => after,
    }
}
