//! `vigil demo` end to end: on its own (no PCE, no mail server, nothing configured) it
//! produces alert mails through the real mail sink within a minute, and the API shows
//! the deliveries.

mod common;

use std::time::Duration;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_mails_an_alert_within_a_minute_and_the_api_shows_it() {
    let out = tempfile::tempdir().expect("temp");
    let (_demo, logs) = common::cli::spawn_demo(out.path());
    let mail_dir = out.path().join("mail");
    let started = std::time::Instant::now();
    let first = tokio::task::spawn_blocking(move || {
        common::cli::first_mail(&mail_dir, Duration::from_secs(60))
    })
    .await
    .expect("wait");
    let took = started.elapsed();
    let raw = std::fs::read(&first).expect("read the mail");
    let mail = mail_parser::MessageParser::default()
        .parse(&raw[..])
        .expect("a parsable mail");
    let subject = mail.subject().unwrap_or_default().to_string();
    assert!(subject.starts_with("[vigil] ["), "{subject}");
    assert!(mail.body_text(0).is_some() && mail.body_html(0).is_some());
    assert!(
        took < Duration::from_secs(60),
        "the first mail took {took:?}"
    );

    // The API shows the deliveries.
    let addr = common::cli::web_address(&logs.lock().unwrap()).expect("the API listens");
    let stats: Value = reqwest::get(format!("http://{addr}/api/v1/stats"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("JSON");
    assert!(stats["pipelines"].as_u64().unwrap() >= 10, "{stats}");
    assert!(
        stats["outbox"]["sent"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("vigil_outbox_messages{state=\"sent\"}"),
        "{metrics}"
    );
    // The PCE requests, by endpoint, parse as Prometheus text with their latencies.
    let scrape = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format");
    let events_ok: f64 = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "vigil_pce_requests_total"
                && s.labels.get("endpoint") == Some("/orgs/:org/events")
                && s.labels.get("status") == Some("200")
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(events_ok >= 1.0, "{metrics}");
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "vigil_pce_request_duration_seconds_count"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_pce_traffic_slices_total{connection=\"pce\"}"),
        "{metrics}"
    );
}
