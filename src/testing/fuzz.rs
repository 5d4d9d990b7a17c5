//! Fuzz targets: every parser that reads input from outside the process, each as one
//! function of bytes, with the seeds its mutations start from.
//!
//! `tests/hostile.rs` feeds every target arbitrary and mutated inputs with proptest in CI
//! (no panic, bounded time); `cargo bench --bench fuzz` runs each for a while with random
//! mutations and prints executions and findings. A target must never panic, whatever its
//! input: a panic is a finding.

use std::path::PathBuf;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::config::{Env, LoadOptions, load_sources};
use crate::event::Tape;
use crate::pce::client::{BodyReader, Records, Step, is_gzip, parse_records};
use crate::sinks::delivery::render::{Origin, Templates};
use crate::stages::filter::{CompiledFilter, FilterConfig, WhereExpr};

/// One parser under test.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its name (`pipeline-yaml`, `where`, ...).
    pub name: &'static str,
    /// Feeds it one input.
    pub run: fn(&[u8]),
    /// Inputs its mutations start from.
    pub seeds: &'static [&'static str],
}

/// Every target, in one place.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "pipeline-yaml",
            run: pipeline_yaml,
            seeds: PIPELINE_SEEDS,
        },
        Target {
            name: "filter",
            run: filter,
            seeds: FILTER_SEEDS,
        },
        Target {
            name: "where",
            run: where_expr,
            seeds: WHERE_SEEDS,
        },
        Target {
            name: "template",
            run: template,
            seeds: TEMPLATE_SEEDS,
        },
        Target {
            name: "pce-body",
            run: pce_body,
            seeds: BODY_SEEDS,
        },
        Target {
            name: "pce-download",
            run: pce_download,
            seeds: BODY_SEEDS,
        },
        Target {
            name: "tape",
            run: tape,
            seeds: BODY_SEEDS,
        },
    ]
}

/// Applies `ops` to `input`: each `(kind, at, len)` overwrites, inserts, deletes,
/// duplicates or splices a piece (positions taken modulo the current length), the way a
/// mutation fuzzer does. Deterministic: the same ops give the same output.
pub fn mutate(input: &[u8], ops: &[(u8, u32, u32)], dictionary: &[&[u8]]) -> Vec<u8> {
    const MAX_LEN: usize = 64 * 1024;
    let mut out = input.to_vec();
    for &(kind, at, len) in ops {
        let n = out.len();
        let at = if n == 0 { 0 } else { at as usize % (n + 1) };
        let len = (len as usize % 64).max(1);
        match kind % 6 {
            0 if at < n => out[at] ^= (len as u8).wrapping_mul(37),
            1 => {
                let byte = INTERESTING[len % INTERESTING.len()];
                out.insert(at, byte);
            }
            2 => {
                let end = (at + len).min(n);
                out.drain(at..end);
            }
            3 => {
                let end = (at + len).min(n);
                let piece = out[at..end].to_vec();
                let again = (at + piece.len()).min(out.len());
                out.splice(
                    again..again,
                    piece.iter().copied().cycle().take(piece.len() * 4),
                );
            }
            4 if !dictionary.is_empty() => {
                let word = dictionary[len % dictionary.len()];
                out.splice(at..at, word.iter().copied());
            }
            _ => out.reverse(),
        }
        out.truncate(MAX_LEN);
    }
    out
}

/// Bytes that matter to the parsers under test.
const INTERESTING: &[u8] = b"{}[]:,\"'\\\n\r\t -$&*!|>#%@`0\x00\x1b\xff";

/// Words that matter to the parsers under test (spliced in by [`mutate`]).
pub const DICTIONARY: &[&[u8]] = &[
    b"${",
    b"${A:-x}",
    b"&a ",
    b"*a",
    b"<<: ",
    b"---\n",
    b"!!str ",
    b"- ",
    b"{{",
    b"}}",
    b"{{#each x}}",
    b"{{/each}}",
    b"\"\\u0000\"",
    b"1e999",
    b"-9223372036854775809",
    b"1000000y",
    b"0.0.0.0/0",
    b"::/0",
    b"fn ",
    b"while true {}",
    b"\x1f\x8b\x08\x00",
];

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

/// A pipeline or settings file through the whole of `vigil validate`: YAML within its
/// budget, `${VAR}` interpolation, schema checks, typing, filters, `where:`, templates.
fn pipeline_yaml(input: &[u8]) {
    let env = Env::Map(
        [("A", "1"), ("B", "x y"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let files = [(PathBuf::from("fuzz/p.yaml"), text(input))];
    let _ = load_sources(
        &files,
        &LoadOptions {
            env,
            ..Default::default()
        },
    );
}

/// A flow in the shape filters and scripts see.
fn flow() -> Value {
    json!({
        "src": {"ip": "10.0.0.1", "labels": {"role": "Web"}},
        "dst": {"ip": "203.0.113.9", "port": 443},
        "service": {"port": 443, "proto": 6},
        "policy_decision": "blocked",
        "num_connections": 3,
        "timestamp_range": {"first_detected": "2026-01-01T00:00:00Z"}
    })
}

/// A filter's `match`/`any`/`exclude` conditions (operands, CIDRs, regexes), compiled
/// and tried on a flow.
fn filter(input: &[u8]) {
    let Ok(conditions) = serde_json::from_slice::<Value>(input) else {
        return;
    };
    let mut cfg = json!({"inputs": ["x"]});
    if let (Some(obj), Value::Object(more)) = (cfg.as_object_mut(), conditions) {
        for (k, v) in more {
            obj.insert(k, v);
        }
    }
    let Ok(cfg) = serde_json::from_value::<FilterConfig>(cfg) else {
        return;
    };
    if let Ok(f) = CompiledFilter::compile(&cfg) {
        let _ = f.matches(&flow());
    }
}

/// A Rhai `where:` expression, compiled in the sandbox and run on a flow.
fn where_expr(input: &[u8]) {
    if let Ok(mut w) = WhereExpr::compile(&text(input), "fuzz") {
        let _ = w.holds(&flow());
    }
}

/// A handlebars template, compiled and rendered with an alert-shaped context.
fn template(input: &[u8]) {
    let mut t = Templates::new();
    if t.add_text("t", &text(input), Origin::Inline("/body".into()))
        .is_ok()
    {
        let cx = json!({"alert": {"title": "t", "group": {"src.ip": "10.0.0.1"}}, "count": 2, "alerts": [flow()]});
        let _ = t.render("t", &cx);
    }
}

/// A PCE body read whole: events, health and list pages, traffic downloads (a JSON
/// array, NDJSON or gzip of either).
fn pce_body(input: &[u8]) {
    let _ = parse_records(input);
}

/// A traffic download read as a stream, in uneven pieces, gzip inflated on the way. A
/// plain body must give the records that reading it whole with `serde_json` gives (and
/// fail where that fails).
fn pce_download(input: &[u8]) {
    let mut reader = BodyReader::default();
    let mut pieces = input.chunks(7 + input.len() / 5);
    let mut taken = Vec::new();
    loop {
        match reader.next_tape() {
            Step::Item(t) => {
                taken.push(t.into_value());
                if taken.len() > 100_000 {
                    return;
                }
            }
            Step::Done | Step::Fail(_) if is_gzip(input) => return,
            Step::Done => return same_records(input, taken, false),
            Step::Fail(_) => return same_records(input, taken, true),
            Step::More => {
                match pieces.next() {
                    Some(p) => reader.accept(Bytes::copy_from_slice(p)),
                    None => reader.accept_end(),
                }
                if let Some(work) = reader.take_inflating()
                    && reader.inflated(work.run()).is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Panics unless reading all of `body` with `serde_json` gives `taken`, then fails when
/// `failed`.
fn same_records(body: &[u8], taken: Vec<Value>, failed: bool) {
    let mut want = Vec::new();
    let mut want_failed = false;
    for r in Records::new(Bytes::copy_from_slice(body)) {
        match r {
            Ok((v, _)) => want.push(v),
            Err(_) => {
                want_failed = true;
                break;
            }
        }
    }
    assert_eq!(
        (taken, failed),
        (want, want_failed),
        "the records read in pieces into tapes differ from serde_json's"
    );
}

/// One record read into a tape, as the `file` source and the `json` syslog decoder read
/// one: it must be the value `serde_json` reads, or refused where that refuses it.
fn tape(input: &[u8]) {
    let want = serde_json::from_slice::<Value>(input);
    match (Tape::parse(Bytes::copy_from_slice(input)), want) {
        (Ok(t), Ok(v)) => assert_eq!(t.value(), &v, "the tape differs from serde_json's value"),
        (Err(_), Err(_)) => {}
        (got, want) => panic!(
            "the tape parser {} where serde_json {}",
            if got.is_ok() { "accepts" } else { "refuses" },
            if want.is_ok() { "accepts" } else { "refuses" }
        ),
    }
}

const PIPELINE_SEEDS: &[&str] = &[
    "kind: pipeline\nname: burst\nsources:\n  in: {type: stdin}\nstages:\n  keep:\n    type: filter\n    inputs: [in]\n    match: {dst.ip: {cidr: [10.0.0.0/8]}, port: [22, 3389]}\n    where: 'event.num_connections > 2'\n  rule:\n    type: window_count\n    inputs: [keep]\n    window: 10m\n    threshold: ${A}\n    group_by: [src.ip]\nsinks:\n  out: {type: stdout, inputs: [rule]}\n",
    "kind: settings\nstate_dir: ${B:-var}\nconnections:\n  smtp:\n    relay: {host: smtp.example.com, port: 587, tls: starttls, from: v@example.com}\n  webhook:\n    hook: {url: 'https://soc.example.com/in'}\n---\nkind: pipeline\nname: p\nbase: &b {type: stdin}\nsources:\n  in: *b\nsinks:\n  m: {type: mail, inputs: [in], connection: relay, to: [a@example.com], subject: '{{alert.title}}'}\n  w: {type: webhook, inputs: [in], connection: hook, preset: custom, body: '{\"t\": \"{{alert.title}}\"}'}\n",
    "kind: pipeline\nname: top\nsources:\n  f: {type: file, path: /tmp/x.jsonl, poll_interval: 250ms}\nstages:\n  s:\n    type: script\n    inputs: [f]\n    source: |\n      if event.x > 1 { emit(event) }\n  t: {type: top_n, inputs: [s], n: 5, window: 1h, by: bytes, group_by: [src.ip]}\nsinks:\n  o: {type: file, inputs: [t], path: /tmp/o.jsonl}\ntests:\n  - name: t\n    input: [{x: 2}]\n    expect: []\n",
];

const FILTER_SEEDS: &[&str] = &[
    r#"{"match": {"dst.ip": {"cidr": ["10.0.0.0/8", "::1/128"]}, "service.port": [22, "3389"]}}"#,
    r#"{"any": [{"policy_decision": "blocked"}, {"src.labels.role": {"regex": "^W.b$"}}], "exclude": {"src.ip": {"not_cidr": ["192.168.0.0/16"]}}}"#,
    r#"{"match": {"num_connections": {"gte": 2, "lt": 1e3}, "x": null, "y": true}, "where": "event.num_connections > 1"}"#,
];

const WHERE_SEEDS: &[&str] = &[
    "event.num_connections > 2 && event.service.port == 443",
    "let x = event.src.ip; x.starts_with(\"10.\") || event.policy_decision in [\"blocked\"]",
    "event.src.labels.role == \"Web\" && !(event.dst.port < 1024)",
];

const TEMPLATE_SEEDS: &[&str] = &[
    "{{alert.title}} from {{alert.group.src.ip}} ({{count}})",
    "{{#each alerts}}{{this.src.ip}} {{#if this.num_connections}}{{this.num_connections}}{{/if}}\n{{/each}}",
    "{\"text\": {{json alert.title}}, \"n\": {{count}}}",
];

const BODY_SEEDS: &[&str] = &[
    r#"[{"src": {"ip": "10.0.0.1"}, "dst": {"ip": "10.0.1.1"}, "service": {"port": 22, "proto": 6}, "policy_decision": "blocked", "num_connections": 3}, {"href": "/orgs/1/events/1", "event_type": "user.login", "timestamp": "2026-01-01T00:00:00Z", "severity": "info"}]"#,
    "{\"a\": 1}\n{\"b\": [1, 2, {\"c\": \"\\u00e9\"}]}\n\n{\"d\": null}\n",
    r#"[{"status": "normal", "nodes": [{"hostname": "core0", "services": {"running": ["agent"]}}]}]"#,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_takes_its_seeds_and_mutations_of_them() {
        for t in targets() {
            for seed in t.seeds {
                (t.run)(seed.as_bytes());
                for i in 0..20u32 {
                    let ops: Vec<(u8, u32, u32)> = (0..4)
                        .map(|j| ((i + j) as u8, i * 7919 + j, i + j))
                        .collect();
                    (t.run)(&mutate(seed.as_bytes(), &ops, DICTIONARY));
                }
            }
        }
    }

    #[test]
    fn mutations_are_deterministic_and_bounded() {
        let ops = [(1, 3, 5), (3, 0, 63), (4, 9, 2), (2, 1, 1)];
        let a = mutate(b"hello world", &ops, DICTIONARY);
        assert_eq!(a, mutate(b"hello world", &ops, DICTIONARY));
        assert_ne!(a, b"hello world");
        let big = mutate(&[b'x'; 70_000], &[(3, 0, 63)], DICTIONARY);
        assert!(big.len() <= 64 * 1024);
    }
}
