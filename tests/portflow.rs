//! The Portflow pipeline (`examples/portflow/`) over a month of hourly port counters,
//! through the binary (`vigil replay --out`): one report per port with the month's exact
//! totals, and one mail per port owner — both of Alice's ports in hers, Bob's in his —
//! plus the month's busiest ports to the operators.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Hourly readings of March 2026 in Shanghai (UTC+8) for ports 8388, 8389 and 8390, each
/// dated at the start of its hour; what each port's month adds up to.
fn month(file: &Path) -> BTreeMap<u16, (u64, u64)> {
    let start: chrono::DateTime<chrono::Utc> = "2026-02-28T16:00:00Z".parse().unwrap();
    let mut lines = String::new();
    let mut totals = BTreeMap::new();
    for hour in 0..744u64 {
        let at = start + chrono::Duration::hours(hour as i64);
        for (port, base) in [(8388u16, 1_000_000u64), (8389, 300_000), (8390, 50_000)] {
            // Busier in the day, different each hour.
            let in_bytes = base + (hour % 24) * 1_000 + hour;
            let out_bytes = base / 10 + hour % 7;
            let t = totals.entry(port).or_insert((0, 0));
            t.0 += in_bytes;
            t.1 += out_bytes;
            lines.push_str(
                &json!({
                    "timestamp": at.to_rfc3339(),
                    "source_type": "port_counters",
                    "port": port,
                    "proto": "tcp",
                    "in_bytes": in_bytes,
                    "out_bytes": out_bytes,
                    "in_packets": in_bytes / 1000,
                    "out_packets": out_bytes / 100,
                    "interval_seconds": 3600.0,
                })
                .to_string(),
            );
            lines.push('\n');
        }
    }
    std::fs::write(file, lines).unwrap();
    totals
}

#[test]
fn a_month_of_counters_is_one_mail_per_port_owner_with_the_right_totals() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("month.jsonl");
    let totals = month(&file);
    let out = dir.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["replay", "--format", "json", "--pipelines"])
        .arg(root().join("examples/portflow"))
        .arg("--file")
        .arg(format!("port_counters={}", file.display()))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("vigil runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value = serde_json::from_slice(&run.stdout).expect("a JSON report");
    let alerts = report["pipelines"][0]["alerts"].as_array().expect("alerts");

    // One report per port, March only (its readings end with it), totals exact.
    let mut seen = BTreeMap::new();
    for a in alerts.iter().filter(|a| a["group"]["port"].is_number()) {
        assert_eq!(a["fields"]["period"], "2026-03", "{a}");
        assert_eq!(a["fields"]["count"], 744);
        let port = a["group"]["port"].as_u64().unwrap() as u16;
        let got = (
            a["value"].as_f64().unwrap() as u64,
            a["fields"]["totals"]["out_bytes"].as_u64().unwrap(),
        );
        assert_eq!(a["fields"]["totals"]["in_bytes"].as_u64(), Some(got.0));
        seen.insert(port, got);
    }
    assert_eq!(seen, totals);
    let top: Vec<&Value> = alerts.iter().filter(|a| a["group_key"] == "").collect();
    assert_eq!(top.len(), 1);
    let rows: Vec<u64> = top[0]["top"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"][0].as_u64().unwrap())
        .collect();
    assert_eq!(rows, [8388, 8389, 8390]);

    // The mails: one per owner, each with its owner's ports only.
    let mails: Vec<mail_parser::Message> = {
        let mut files: Vec<PathBuf> = std::fs::read_dir(out.join("portflow/owners"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read(f).unwrap())
            .map(|raw| {
                mail_parser::MessageParser::default()
                    .parse(&raw[..])
                    .unwrap()
                    .into_owned()
            })
            .collect()
    };
    let mut by_owner = BTreeMap::new();
    for m in &mails {
        let to = m
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap()
            .to_string();
        assert_eq!(m.to().map(|a| a.iter().count()), Some(1));
        let text = m.body_text(0).unwrap().into_owned();
        assert!(by_owner.insert(to, text).is_none(), "one mail per owner");
    }
    assert_eq!(
        by_owner.keys().collect::<Vec<_>>(),
        ["alice@example.com", "bob@example.com", "noc@example.com"]
    );
    let size = |bytes: u64| {
        let mib = bytes as f64 / 1_048_576.0;
        format!("{}", (mib * 100.0).round() / 100.0)
    };
    let alice = &by_owner["alice@example.com"];
    assert!(
        alice.contains("Port 8388: ") && alice.contains("Port 8389: "),
        "{alice}"
    );
    assert!(
        alice.contains(&format!("Port 8388: {} MiB in", size(totals[&8388].0))),
        "{alice}"
    );
    assert!(!alice.contains("Port 8390"), "{alice}");
    let bob = &by_owner["bob@example.com"];
    assert!(
        bob.contains(&format!("Port 8390: {} MiB in", size(totals[&8390].0))),
        "{bob}"
    );
    assert!(!bob.contains("Port 8388"), "{bob}");
    assert!(by_owner["noc@example.com"].contains("busiest ports"));
}
