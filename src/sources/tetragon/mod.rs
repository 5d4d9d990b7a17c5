//! Cilium Tetragon's events as JSON lines (its export file, `tetra getevents -o json`):
//! protojson with snake_case names and zero values left out, one object a line keyed by
//! the event's type (`{"process_exec": {...}, "node_name": "...", "time": "..."}`).
//!
//! [`normalize`] turns one such record into the fields vigil's rules read (see the field
//! catalogue, `tetragon`): `event.type`, `process.*` and `parent.*` as Tetragon names them
//! (with `process.pod.container.image` as the image's name), `kprobe.{function, policy,
//! action, return}`, each argument flattened to a named field by its kind (`arg.file.path`,
//! `arg.cap.name`, `arg.sock.daddr`; a second argument of a kind is `arg.<kind>_2`), the
//! arguments as Tetragon wrote them in `args`, `throttle.{type, cgroup}`, a network
//! event's `sock.{saddr, sport, daddr, dport, protocol}`, `node_name` and
//! `time` (the event time). A record of a type this decoder does not know is passed on
//! with its `event.type` and its body under `body`, and said so ([`Normalized::known`]).

mod dropping;

pub use dropping::alert_of as dropping_alert;
pub(crate) use dropping::report as report_dropping;

use serde_json::{Map, Value};

/// The event types this decoder knows.
pub const KNOWN_TYPES: &[&str] = &[
    "process_exec",
    "process_exit",
    "process_kprobe",
    "process_tracepoint",
    "process_uprobe",
    "process_lsm",
    "process_loader",
    "process_throttle",
    "rate_limit_info",
    "process_connect",
    "process_close",
    "process_listen",
];

/// A normalised record.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// The fields (see the module docs).
    pub data: Value,
    /// Whether the event's type is one of [`KNOWN_TYPES`].
    pub known: bool,
}

/// Why a line is not a Tetragon event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAnEvent {
    /// Not a JSON object.
    #[error("not a JSON object")]
    NotObject,
    /// No member holds the event (an object keyed by its type).
    #[error(
        "no event in it: a Tetragon event is an object keyed by its type (`process_exec`, ...)"
    )]
    NoEvent,
}

/// The members of a line that are not the event itself.
const ENVELOPE: &[&str] = &["node_name", "time", "aggregation_info", "cluster_name"];

/// Normalises one record of Tetragon's JSON output.
pub fn normalize(record: &Value) -> Result<Normalized, NotAnEvent> {
    let obj = record.as_object().ok_or(NotAnEvent::NotObject)?;
    let (kind, body) = obj
        .iter()
        .find(|(k, v)| !ENVELOPE.contains(&k.as_str()) && v.is_object())
        .ok_or(NotAnEvent::NoEvent)?;
    let known = KNOWN_TYPES.contains(&kind.as_str());
    let mut out = Map::new();
    out.insert(
        "event".into(),
        json_obj([("type", Value::from(kind.as_str()))]),
    );
    for k in ENVELOPE {
        if let Some(v) = obj.get(*k) {
            out.insert((*k).to_string(), v.clone());
        }
    }
    if !known {
        out.insert("body".into(), body.clone());
        return Ok(Normalized {
            data: Value::Object(out),
            known,
        });
    }
    for side in ["process", "parent"] {
        if let Some(p) = body.get(side).filter(|p| p.is_object()) {
            out.insert(side.into(), process(p));
        }
    }
    match kind.as_str() {
        "process_kprobe" | "process_tracepoint" | "process_uprobe" | "process_lsm" => {
            let mut probe = Map::new();
            let text = |k: &str| body.get(k).filter(|v| !v.is_null()).cloned();
            for (from, to) in [
                ("function_name", "function"),
                ("policy_name", "policy"),
                ("action", "action"),
                ("return_action", "return_action"),
                ("subsys", "subsys"),
                ("event", "event"),
                ("symbol", "symbol"),
                ("path", "path"),
            ] {
                if let Some(v) = text(from) {
                    probe.insert(to.into(), v);
                }
            }
            if let Some(r) = body.get("return").and_then(scalar_of) {
                probe.insert("return".into(), r);
            }
            let key = if kind == "process_kprobe" {
                "kprobe".to_string()
            } else {
                kind.trim_start_matches("process_").to_string()
            };
            out.insert(key, Value::Object(probe));
            if let Some(args) = body.get("args").and_then(Value::as_array) {
                out.insert("arg".into(), flatten_args(args));
                out.insert("args".into(), Value::Array(args.clone()));
            }
        }
        "process_throttle" => {
            let mut t = Map::new();
            for k in ["type", "cgroup"] {
                if let Some(v) = body.get(k) {
                    t.insert(k.into(), v.clone());
                }
            }
            out.insert("throttle".into(), Value::Object(t));
        }
        // Network events of Isovalent's builds: the socket's ends as `sock.*`.
        "process_connect" | "process_close" | "process_listen" => {
            let mut sock = Map::new();
            for (from, to) in [
                ("source_ip", "saddr"),
                ("source_port", "sport"),
                ("destination_ip", "daddr"),
                ("destination_port", "dport"),
                ("ip", "saddr"),
                ("port", "sport"),
                ("protocol", "protocol"),
                ("stats", "stats"),
            ] {
                if let Some(v) = body.get(from) {
                    sock.insert(to.into(), v.clone());
                }
            }
            out.insert("sock".into(), Value::Object(sock));
        }
        "rate_limit_info" => {
            out.insert("rate_limit".into(), body.clone());
        }
        "process_exit" => {
            for k in ["signal", "status", "time"] {
                if let Some(v) = body.get(k) {
                    out.insert(format!("exit_{k}"), v.clone());
                }
            }
        }
        _ => {}
    }
    Ok(Normalized {
        data: Value::Object(out),
        known,
    })
}

fn json_obj<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// A process as Tetragon writes it, with the container image's name as
/// `pod.container.image` (its id as `pod.container.image_id`).
fn process(p: &Value) -> Value {
    let mut p = p.clone();
    if let Some(container) = p
        .get_mut("pod")
        .and_then(|pod| pod.get_mut("container"))
        .and_then(Value::as_object_mut)
        && let Some(Value::Object(image)) = container.remove("image")
    {
        if let Some(name) = image.get("name") {
            container.insert("image".into(), name.clone());
        }
        if let Some(id) = image.get("id") {
            container.insert("image_id".into(), id.clone());
        }
    }
    p
}

/// A kprobe return value (`{"int_arg": 0}`) as its scalar.
fn scalar_of(v: &Value) -> Option<Value> {
    let obj = v.as_object()?;
    obj.values().next().cloned()
}

/// Tetragon's `args` (`[{"file_arg": {...}}, {"int_arg": 2}]`) as named fields: each by
/// its kind without `_arg` (a few shortened: `cap`, `creds`, `sock`), a second of a kind
/// as `<kind>_2`, and so on.
fn flatten_args(args: &[Value]) -> Value {
    let mut out = Map::new();
    for a in args {
        let Some((kind, value)) = a.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        let name = short_kind(kind);
        let mut key = name.to_string();
        let mut n = 1;
        while out.contains_key(&key) {
            n += 1;
            key = format!("{name}_{n}");
        }
        out.insert(key, value.clone());
    }
    Value::Object(out)
}

fn short_kind(kind: &str) -> &str {
    match kind {
        "capability_arg" => "cap",
        "process_credentials_arg" => "creds",
        "sock_arg" | "sockaddr_arg" => "sock",
        k => k.strip_suffix("_arg").unwrap_or(k),
    }
}

#[cfg(test)]
mod tests;
