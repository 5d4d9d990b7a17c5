//! End-to-end tests of the `line` and `webhook` sinks: the `vigil` binary runs as a child
//! process and delivers to real HTTP receivers (wiremock) on loopback, in the test's
//! tokio runtime. Blocking waits on the child run in `spawn_blocking`, so the receivers
//! keep serving meanwhile.

mod common;

use std::io::Write as _;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cli::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use vigil::sinks::line::{CUT_MARKER, MAX_MESSAGES, MAX_TEXT};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// How long one `vigil run` may take.
const RUN_LIMIT: Duration = Duration::from_secs(15);
/// The LINE channel token (from the environment).
const TOKEN: &str = "line-token-7f3a9c";
/// The webhook signing secret (from the environment); never in any output.
const SECRET: &str = "hook-secret-5d1e8b-never-logged";
/// The LINE recipient.
const TO: &str = "U0123456789abcdef0123456789abcdef";
/// The LINE push endpoint.
const PUSH: &str = "/v2/bot/message/push";

/// One stdin record → one `high` alert (`window_count`, threshold 1, per `src.ip`), read
/// by the sinks `SINKS`.
const PIPELINE: &str = r#"kind: pipeline
name: p
sources:
  in: {type: stdin}
stages:
  burst:
    type: window_count
    inputs: [in]
    window: 1m
    threshold: 1
    group_by: [src.ip]
    alert: {severity: high, title: "Burst from {{group.src.ip}}"}
sinks:
SINKS"#;

fn pipeline(sinks: &str) -> String {
    PIPELINE.replace("SINKS", sinks)
}

/// A LINE sink `name` on connection `ops`, quick retries; `extra` adds lines.
fn line_sink(name: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    type: line\n    inputs: [burst]\n    connection: ops\n    to: {TO}\n    retry: {{initial: 100ms, max: 1s}}\n    drain_timeout: 10s\n{extra}"
    )
}

/// A webhook sink `name` on connection `conn`, quick retries; `extra` adds lines.
fn hook_sink(name: &str, conn: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    type: webhook\n    inputs: [burst]\n    connection: {conn}\n    retry: {{initial: 100ms, max: 1s}}\n    drain_timeout: 10s\n{extra}"
    )
}

/// Settings with the LINE connection `ops` at `base_url`.
fn line_settings(base_url: &str) -> String {
    format!(
        "connections:\n  line:\n    ops:\n      base_url: {base_url}\n      token: ${{LINE_TOKEN}}\n"
    )
}

/// Settings with the webhook connection `soc`: URL from `HOOK_URL`, signed with
/// `HOOK_SECRET`.
fn hook_settings() -> String {
    "connections:\n  webhook:\n    soc:\n      url: ${HOOK_URL}\n      signing_secret: ${HOOK_SECRET}\n"
        .to_string()
}

/// The raw event of address `ip`.
fn record(ip: &str) -> Value {
    json!({
        "timestamp": "2026-11-21T10:00:00Z",
        "src": {"ip": ip},
        "user": "mallory",
        "action": "ssh-login-failed",
        "attempts": 17,
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// `vigil run` fed `records` (stdin closed after them): it delivers, drains and exits.
async fn run(p: &Arc<Project>, records: &[Value]) -> Output {
    let p = p.clone();
    let input = jsonl(records);
    let out = blocking(move || p.run_with_input(&input, RUN_LIMIT)).await;
    assert!(
        out.status.success(),
        "vigil run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The outbox (all states), read by `vigil outbox list --format json`.
async fn outbox(p: &Arc<Project>) -> Vec<Value> {
    let p = p.clone();
    blocking(move || p.outbox()).await
}

/// `vigil ARGS -p <pipelines>` in the project.
async fn vigil(p: &Arc<Project>, args: &[&str]) -> Output {
    let p = p.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        p.command(&args)
            .arg("--pipelines")
            .arg(p.pipelines())
            .output()
            .expect("vigil runs")
    })
    .await
}

/// The requests `server` received; waits (with a deadline) until there are at least `n`.
async fn requests(server: &MockServer, n: usize, limit: Duration) -> Vec<Request> {
    let start = Instant::now();
    loop {
        let got = server.received_requests().await.expect("recording is on");
        if got.len() >= n {
            return got;
        }
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {n} request(s); got {}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn header<'a>(r: &'a Request, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("ASCII header")
}

fn body(r: &Request) -> Value {
    serde_json::from_slice(&r.body).expect("JSON body")
}

/// The texts of a LINE push body's messages (each must be `type: text`).
fn texts(push: &Value) -> Vec<String> {
    push["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            assert_eq!(m["type"], "text", "{m}");
            m["text"].as_str().expect("text").to_string()
        })
        .collect()
}

fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

async fn mock(server: &MockServer, at: &str, answer: ResponseTemplate, times: Option<u64>) {
    let m = Mock::given(method("POST"))
        .and(path(at))
        .respond_with(answer);
    match times {
        Some(n) => m.up_to_n_times(n).mount(server).await,
        None => m.mount(server).await,
    }
}

fn line_project(server: &MockServer, sinks: &str) -> Arc<Project> {
    Arc::new(Project::new(&line_settings(&server.uri()), &pipeline(sinks)).env("LINE_TOKEN", TOKEN))
}

fn hook_project(server: &MockServer, sinks: &str) -> Arc<Project> {
    Arc::new(
        Project::new(&hook_settings(), &pipeline(sinks))
            .env("HOOK_URL", &format!("{}/hook", server.uri()))
            .env("HOOK_SECRET", SECRET),
    )
}

/// The only message of `sink` in the outbox.
fn only_message<'a>(outbox: &'a [Value], sink: &str) -> &'a Value {
    let mine: Vec<&Value> = outbox.iter().filter(|m| m["sink"] == sink).collect();
    assert_eq!(mine.len(), 1, "one message of {sink}: {outbox:#?}");
    mine[0]
}

// ---------------------------------------------------------------------------------------
// LINE
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn line_push_has_the_exact_request_shape() {
    let server = MockServer::start().await;
    mock(
        &server,
        PUSH,
        ResponseTemplate::new(200).set_body_string("{}"),
        None,
    )
    .await;
    let p = line_project(&server, &line_sink("push", ""));
    let rec = record("10.0.0.1");
    run(&p, std::slice::from_ref(&rec)).await;

    let got = server.received_requests().await.expect("recording");
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.method.as_str(), "POST");
    assert_eq!(r.url.path(), PUSH);
    assert_eq!(header(r, "authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(header(r, "content-type"), "application/json");
    let key = header(r, "x-line-retry-key");
    let uuid = uuid::Uuid::parse_str(key).expect("the retry key is a UUID");
    assert_eq!(uuid.hyphenated().to_string(), key, "canonical form");

    let push = body(r);
    let keys: Vec<&str> = push
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["to", "messages"]);
    assert_eq!(push["to"], TO);
    let texts = texts(&push);
    assert_eq!(texts.len(), 1);
    let text = &texts[0];
    assert!(text.starts_with("[HIGH] Burst from 10.0.0.1\n"), "{text}");
    assert!(text.contains("Value 1 / threshold 1"), "{text}");
    assert!(
        text.contains(&format!("2026-11-21T10:00:00Z {rec}")),
        "the raw event, as sent: {text}"
    );

    let outbox = outbox(&p).await;
    let m = only_message(&outbox, "p.push");
    assert_eq!(m["state"], "sent");
    assert_eq!(m["attempts"], 1);
    assert_eq!(m["id"], key, "the retry key is the message id");
    assert!(
        text.ends_with(&format!(
            "http://127.0.0.1:5001/#/alerts/{}",
            m["alerts"][0]["id"].as_str().expect("alert id")
        )),
        "ends with the dashboard link: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn line_500_then_200_delivers_once_with_the_same_retry_key() {
    let server = MockServer::start().await;
    mock(
        &server,
        PUSH,
        ResponseTemplate::new(500).set_body_string("try later"),
        Some(1),
    )
    .await;
    mock(
        &server,
        PUSH,
        ResponseTemplate::new(200).set_body_string("{}"),
        None,
    )
    .await;
    let p = line_project(&server, &line_sink("push", ""));
    run(&p, &[record("10.0.0.1")]).await;

    let got = server.received_requests().await.expect("recording");
    assert_eq!(got.len(), 2, "one failed attempt, one delivery");
    assert_eq!(
        header(&got[0], "x-line-retry-key"),
        header(&got[1], "x-line-retry-key")
    );
    assert_eq!(got[0].body, got[1].body, "the same push, byte for byte");

    let outbox = outbox(&p).await;
    let m = only_message(&outbox, "p.push");
    assert_eq!(m["state"], "sent");
    assert_eq!(m["attempts"], 2);
    assert_eq!(m["id"], header(&got[0], "x-line-retry-key"));
    assert_eq!(m["answer"], "HTTP 200 OK: {}");
}

#[tokio::test(flavor = "multi_thread")]
async fn line_400_is_a_dead_letter_with_the_reason() {
    let server = MockServer::start().await;
    let refusal = r#"{"message":"The request body has 1 error(s)"}"#;
    mock(
        &server,
        PUSH,
        ResponseTemplate::new(400).set_body_raw(refusal, "application/json"),
        None,
    )
    .await;
    let p = line_project(&server, &line_sink("push", ""));
    run(&p, &[record("10.0.0.1")]).await;

    assert_eq!(
        server.received_requests().await.expect("recording").len(),
        1,
        "a 400 is not retried"
    );
    let outbox = outbox(&p).await;
    let m = only_message(&outbox, "p.push");
    assert_eq!(m["state"], "dead");
    assert_eq!(m["attempts"], 1);
    let reason = format!("HTTP 400 Bad Request: {refusal}");
    assert_eq!(m["last_error"], reason.as_str());

    // The text listing, as an operator reads it.
    let out = vigil(&p, &["outbox", "list", "--state", "dead"]).await;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let id = m["id"].as_str().expect("id");
    assert!(
        text.contains(&format!("{id}  dead  p.push  1 alert(s)  1 attempt(s)")),
        "{text}"
    );
    assert!(text.contains("    [high] Burst from 10.0.0.1\n"), "{text}");
    assert!(text.contains(&format!("    reason: {reason}\n")), "{text}");
    assert!(text.ends_with("1 message(s)\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn line_409_counts_as_delivered() {
    let server = MockServer::start().await;
    mock(
        &server,
        PUSH,
        ResponseTemplate::new(409)
            .set_body_string(r#"{"message":"The retry key is already accepted"}"#),
        None,
    )
    .await;
    let p = line_project(&server, &line_sink("push", ""));
    run(&p, &[record("10.0.0.1")]).await;

    assert_eq!(
        server.received_requests().await.expect("recording").len(),
        1
    );
    let outbox = outbox(&p).await;
    let m = only_message(&outbox, "p.push");
    assert_eq!(m["state"], "sent");
    assert_eq!(m["attempts"], 1);
    assert_eq!(
        m["answer"],
        "HTTP 409: already accepted under this retry key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn line_long_text_is_split_in_utf16_units() {
    // The raw event carries 3000 characters outside the BMP: 6000 UTF-16 units, which is
    // how LINE counts, in 3000 Rust chars.
    let server = MockServer::start().await;
    mock(&server, PUSH, ResponseTemplate::new(200), None).await;
    let p = line_project(&server, &line_sink("push", ""));
    let mut rec = record("10.0.0.1");
    let blob = "😀".repeat(3000);
    rec["note"] = blob.clone().into();
    run(&p, std::slice::from_ref(&rec)).await;

    let got = server.received_requests().await.expect("recording");
    assert_eq!(got.len(), 1, "one push");
    let texts = texts(&body(&got[0]));
    assert_eq!(
        texts.len(),
        2,
        "{:?}",
        texts.iter().map(|t| units(t)).collect::<Vec<_>>()
    );
    for t in &texts {
        assert!(units(t) <= MAX_TEXT, "{} units", units(t));
    }
    // The first is filled up: one more character (an emoji, or the end of the ASCII
    // header when its length is odd) would not fit.
    let next = texts[1].chars().next().expect("a character");
    assert!(
        units(&texts[0]) + next.len_utf16() > MAX_TEXT,
        "{} units, then {next:?}",
        units(&texts[0])
    );
    let whole = texts.concat();
    assert!(whole.starts_with("[HIGH] Burst from 10.0.0.1\n"), "{whole}");
    assert!(
        whole.contains(&rec.to_string()),
        "nothing is lost when it fits"
    );
    assert!(!whole.contains(CUT_MARKER));
}

#[tokio::test(flavor = "multi_thread")]
async fn line_text_beyond_five_messages_is_cut_with_the_marker() {
    let server = MockServer::start().await;
    mock(&server, PUSH, ResponseTemplate::new(200), None).await;
    let p = line_project(&server, &line_sink("push", "    template: long\n"));
    // A template that repeats a line of the alert 400 times: ~40000 characters.
    let line = "{{alert.title}}: {{json alert.samples.0.record}}\n";
    std::fs::create_dir(p.pipelines().join("templates")).expect("mkdir");
    std::fs::write(
        p.pipelines().join("templates/long.text.hbs"),
        line.repeat(400),
    )
    .expect("write");
    let rec = record("10.0.0.1");
    run(&p, std::slice::from_ref(&rec)).await;

    let got = server.received_requests().await.expect("recording");
    assert_eq!(got.len(), 1, "one push");
    let texts = texts(&body(&got[0]));
    assert_eq!(texts.len(), MAX_MESSAGES);
    for t in &texts {
        assert!(units(t) <= MAX_TEXT, "{} units", units(t));
    }
    let expected_line = format!("Burst from 10.0.0.1: {rec}");
    for t in &texts[..MAX_MESSAGES - 1] {
        // Cut at line ends: every message is whole lines of the template.
        assert!(
            t.lines().all(|l| l == expected_line),
            "whole lines only: {t}"
        );
    }
    let last = &texts[MAX_MESSAGES - 1];
    let kept = last
        .strip_suffix(CUT_MARKER)
        .expect("the last ends with the marker");
    let (whole, partial) = kept.rsplit_once('\n').expect("several lines");
    assert!(whole.lines().all(|l| l == expected_line), "{kept}");
    assert!(
        expected_line.starts_with(partial),
        "the rest is a line's start: {partial}"
    );
}

// ---------------------------------------------------------------------------------------
// Webhook
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn webhook_generic_body_and_signature() {
    let server = MockServer::start().await;
    mock(&server, "/hook", ResponseTemplate::new(204), None).await;
    let p = hook_project(&server, &hook_sink("hook", "soc", ""));
    let rec = record("10.0.0.1");
    let before = chrono::Utc::now().timestamp();
    let out = run(&p, std::slice::from_ref(&rec)).await;
    let after = chrono::Utc::now().timestamp();

    let got = server.received_requests().await.expect("recording");
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.url.path(), "/hook");
    assert_eq!(header(r, "content-type"), "application/json");
    let delivery = header(r, "x-vigil-delivery");
    uuid::Uuid::parse_str(delivery).expect("the delivery id is a UUID");

    // The signature: HMAC-SHA256 of "<timestamp>.<body>" under the secret.
    let ts: i64 = header(r, "x-vigil-timestamp")
        .parse()
        .expect("unix seconds");
    assert!(
        (before..=after).contains(&ts),
        "{before} <= {ts} <= {after}"
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(header(r, "x-vigil-signature"), expected);

    let b = body(r);
    let outbox = outbox(&p).await;
    let m = only_message(&outbox, "p.hook");
    assert_eq!(m["state"], "sent");
    assert_eq!(m["answer"], "HTTP 204 No Content");
    let alert_id = m["alerts"][0]["id"].as_str().expect("alert id");
    let keys: Vec<&str> = b
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "version", "id", "sink", "severity", "count", "new", "firing", "resolved", "omitted",
            "reminder", "group", "alerts"
        ]
    );
    assert_eq!(b["version"], 1);
    assert_eq!(
        (
            b["new"].as_u64(),
            b["firing"].as_u64(),
            b["resolved"].as_u64()
        ),
        (Some(1), Some(0), Some(0))
    );
    assert_eq!(b["reminder"], false);
    assert_eq!(b["group"], json!({"pipeline": "p", "stage": "burst"}));
    assert_eq!(b["id"], delivery);
    assert_eq!(m["id"], delivery, "the delivery id is the message id");
    assert_eq!(b["sink"], "p.hook");
    assert_eq!(b["severity"], "high");
    assert_eq!(b["count"], 1);
    let alerts = b["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a["id"], alert_id);
    assert_eq!(a["status"], "firing");
    assert_eq!(a["change"], "new");
    assert_eq!(a["pipeline"], "p");
    assert_eq!(a["stage"], "burst");
    assert_eq!(a["severity"], "high");
    assert_eq!(a["title"], "Burst from 10.0.0.1");
    assert_eq!(a["group"], json!({"src": {"ip": "10.0.0.1"}}));
    assert_eq!(a["group_key"], "src.ip=10.0.0.1");
    assert_eq!(a["value"], json!(1.0));
    assert_eq!(a["threshold"], json!(1.0));
    assert_eq!(
        a["window"],
        json!({"start": "2026-11-21T09:59:00Z", "end": "2026-11-21T10:00:00Z"})
    );
    assert_eq!(a["samples"].as_array().expect("samples").len(), 1);
    assert_eq!(a["samples"][0]["record"], rec, "the raw event, as it came");
    assert_eq!(a["samples"][0]["time"], "2026-11-21T10:00:00Z");
    assert_eq!(a["samples"][0]["source"], "p.in");
    assert_eq!(
        a["url"],
        format!("http://127.0.0.1:5001/#/alerts/{alert_id}")
    );

    // The secret is in no output.
    for text in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(text).contains(SECRET));
    }
    let listed = vigil(&p, &["outbox", "list", "--state", "all"]).await;
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(SECRET));
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_429_waits_out_retry_after() {
    let server = MockServer::start().await;
    // Records when each request arrives: 429 with Retry-After: 1 first, then 200.
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = arrivals.clone();
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(move |_: &Request| {
            let mut seen = seen.lock().expect("lock");
            seen.push(Instant::now());
            if seen.len() == 1 {
                ResponseTemplate::new(429).insert_header("Retry-After", "1")
            } else {
                ResponseTemplate::new(200)
            }
        })
        .mount(&server)
        .await;
    let p = hook_project(&server, &hook_sink("hook", "soc", ""));
    run(&p, &[record("10.0.0.1")]).await;

    let arrivals = arrivals.lock().expect("lock").clone();
    assert_eq!(arrivals.len(), 2, "one 429, one delivery");
    let gap = arrivals[1] - arrivals[0];
    // Without Retry-After the retry would come after 50–100 ms (retry.initial: 100ms).
    // The outbox keeps due times in whole milliseconds, hence the small allowance.
    assert!(
        gap >= Duration::from_millis(995),
        "the retry came {gap:?} after the 429"
    );
    let outbox = outbox(&p).await;
    let m = only_message(&outbox, "p.hook");
    assert_eq!(m["state"], "sent");
    assert_eq!(m["attempts"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_400_is_a_dead_letter_with_the_reason() {
    let server = MockServer::start().await;
    mock(
        &server,
        "/hook",
        ResponseTemplate::new(400).set_body_string("invalid_payload\n"),
        None,
    )
    .await;
    let p = hook_project(&server, &hook_sink("hook", "soc", ""));
    run(&p, &[record("10.0.0.1")]).await;

    assert_eq!(
        server.received_requests().await.expect("recording").len(),
        1
    );
    let outbox = outbox(&p).await;
    let m = only_message(&outbox, "p.hook");
    assert_eq!(m["state"], "dead");
    assert_eq!(m["last_error"], "HTTP 400 Bad Request: invalid_payload");
    let out = vigil(&p, &["outbox", "list", "--state", "dead"]).await;
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(
        text.contains("    reason: HTTP 400 Bad Request: invalid_payload\n"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_500_then_200_keeps_the_delivery_id() {
    let server = MockServer::start().await;
    mock(&server, "/hook", ResponseTemplate::new(503), Some(1)).await;
    mock(&server, "/hook", ResponseTemplate::new(200), None).await;
    let p = hook_project(&server, &hook_sink("hook", "soc", ""));
    run(&p, &[record("10.0.0.1")]).await;

    let got = server.received_requests().await.expect("recording");
    assert_eq!(got.len(), 2);
    assert_eq!(
        header(&got[0], "x-vigil-delivery"),
        header(&got[1], "x-vigil-delivery")
    );
    assert_eq!(got[0].body, got[1].body);
    let outbox = outbox(&p).await;
    let m = only_message(&outbox, "p.hook");
    assert_eq!(m["state"], "sent");
    assert_eq!(m["attempts"], 2);
    assert_eq!(m["id"], header(&got[0], "x-vigil-delivery"));
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_slack_and_teams_presets() {
    let server = MockServer::start().await;
    mock(
        &server,
        "/slack",
        ResponseTemplate::new(200).set_body_string("ok"),
        None,
    )
    .await;
    mock(&server, "/teams", ResponseTemplate::new(202), None).await;
    let settings = "connections:\n  webhook:\n    slack:\n      url: ${SLACK_URL}\n    teams:\n      url: ${TEAMS_URL}\n";
    let sinks = format!(
        "{}{}",
        hook_sink("slack", "slack", "    preset: slack\n"),
        hook_sink("teams", "teams", "    preset: teams\n")
    );
    let p = Arc::new(
        Project::new(settings, &pipeline(&sinks))
            .env("SLACK_URL", &format!("{}/slack", server.uri()))
            .env("TEAMS_URL", &format!("{}/teams", server.uri())),
    );
    let rec = record("10.0.0.1");
    run(&p, std::slice::from_ref(&rec)).await;

    let got = server.received_requests().await.expect("recording");
    assert_eq!(got.len(), 2);
    let by_path =
        |p: &str| -> Value { body(got.iter().find(|r| r.url.path() == p).expect("request")) };
    let slack = by_path("/slack");
    assert_eq!(slack["text"], "[HIGH] Burst from 10.0.0.1");
    let blocks = slack["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], "🔴 [HIGH] Burst from 10.0.0.1");
    let all = slack.to_string();
    assert!(all.contains("*Group*\\n`src.ip=10.0.0.1`"), "{all}");
    assert!(
        all.contains("\\\"user\\\":\\\"mallory\\\""),
        "the raw event: {all}"
    );
    assert_eq!(blocks.last().expect("block")["type"], "context");

    let teams = by_path("/teams");
    assert_eq!(teams["type"], "message");
    let attachments = teams["attachments"].as_array().expect("attachments");
    assert_eq!(attachments.len(), 1);
    assert_eq!(
        attachments[0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachments[0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["body"][0]["type"], "TextBlock");
    assert_eq!(card["body"][0]["text"], "[HIGH] Burst from 10.0.0.1");
    assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
    let raw = rec.to_string();
    assert!(
        card["body"]
            .as_array()
            .expect("card body")
            .iter()
            .any(|b| b["type"] == "TextBlock" && b["text"] == raw.as_str()),
        "the raw event in a block of its own: {card:#}"
    );

    let outbox = outbox(&p).await;
    assert_eq!(only_message(&outbox, "p.slack")["state"], "sent");
    assert_eq!(only_message(&outbox, "p.teams")["state"], "sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_custom_body_and_headers() {
    let server = MockServer::start().await;
    mock(&server, "/hook", ResponseTemplate::new(200), None).await;
    let extra = "    preset: custom\n    body: '{\"summary\": {{json alert.title}}, \"n\": {{count}}}'\n    headers: {X-Severity: \"{{severity}}\"}\n";
    let p = hook_project(&server, &hook_sink("hook", "soc", extra));
    run(&p, &[record("10.0.0.1")]).await;

    let got = server.received_requests().await.expect("recording");
    assert_eq!(got.len(), 1);
    assert_eq!(
        String::from_utf8(got[0].body.clone()).expect("UTF-8"),
        r#"{"summary": "Burst from 10.0.0.1", "n": 1}"#
    );
    assert_eq!(header(&got[0], "x-severity"), "high");
    assert_eq!(header(&got[0], "content-type"), "application/json");
}

/// Issue "Hostile input": a custom JSON body escapes every value it interpolates as JSON
/// string content, so a host name holding a quote and a new line (and a try at adding a
/// key) reaches the receiver as valid JSON with the exact string; `{{json x}}` still
/// writes a JSON literal. A body of another content type takes the values as they are.
#[tokio::test(flavor = "multi_thread")]
async fn webhook_custom_json_body_escapes_interpolated_values() {
    let server = MockServer::start().await;
    mock(&server, "/hook", ResponseTemplate::new(200), None).await;
    let json_body = "    preset: custom\n    body: '{\"host\": \"{{alert.group.src.ip}}\", \"title\": \"{{alert.title}}\", \"raw\": {{json alert.samples.0.record}}, \"n\": {{count}}}'\n";
    let plain_body = "    preset: custom\n    content_type: text/plain\n    body: 'host={{alert.group.src.ip}}'\n";
    let sinks = format!(
        "{}{}",
        hook_sink("hook", "soc", json_body),
        hook_sink("plain", "soc", plain_body)
    );
    let p = hook_project(&server, &sinks);
    let host = "web\"01\n\", \"admin\": true, \"x\": \"\u{1b}[2J";
    let rec = record(host);
    run(&p, std::slice::from_ref(&rec)).await;

    let got = server.received_requests().await.expect("recording");
    assert_eq!(got.len(), 2);
    let (json_req, plain_req): (Vec<&Request>, Vec<&Request>) = got
        .iter()
        .partition(|r| header(r, "content-type") == "application/json");
    let sent: Value = serde_json::from_slice(&json_req[0].body).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&json_req[0].body)
        )
    });
    assert_eq!(
        sent,
        json!({
            "host": host,
            "title": format!("Burst from {host}"),
            "raw": rec,
            "n": 1,
        })
    );
    assert_eq!(header(plain_req[0], "content-type"), "text/plain");
    assert_eq!(
        String::from_utf8(plain_req[0].body.clone()).expect("UTF-8"),
        format!("host={host}")
    );
}

// ---------------------------------------------------------------------------------------
// Independence
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_webhook_does_not_delay_line() {
    let slow = MockServer::start().await;
    mock(
        &slow,
        "/hook",
        ResponseTemplate::new(200).set_delay(Duration::from_secs(30)),
        None,
    )
    .await;
    let fast = MockServer::start().await;
    mock(&fast, PUSH, ResponseTemplate::new(200), None).await;
    let settings = format!(
        "{}{}",
        line_settings(&fast.uri()),
        "  webhook:\n    soc:\n      url: ${HOOK_URL}\n"
    );
    // The webhook is the first sink; it reads the same stage as the LINE sink.
    let sinks = format!(
        "{}{}",
        hook_sink("hook", "soc", "    timeout: 20s\n"),
        line_sink("push", "")
    );
    let p = Arc::new(
        Project::new(&settings, &pipeline(&sinks))
            .env("LINE_TOKEN", TOKEN)
            .env("HOOK_URL", &format!("{}/hook", slow.uri())),
    );
    let mut child = Killed({
        let p = p.clone();
        blocking(move || p.spawn_run()).await
    });
    let start = Instant::now();
    let mut stdin = child.0.stdin.take().expect("stdin");
    stdin
        .write_all(jsonl(&[record("10.0.0.1")]).as_bytes())
        .expect("write stdin");
    stdin.flush().expect("flush");

    let deadline = Duration::from_secs(5);
    let line = requests(&fast, 1, deadline).await;
    let hook = requests(&slow, 1, deadline).await;
    assert_eq!(line.len(), 1);
    assert_eq!(hook.len(), 1);
    // The LINE message is recorded as sent while the webhook's first attempt is still
    // waiting for its answer (due in 30 s).
    let sent = {
        let p = p.clone();
        blocking(move || {
            let mut last = Vec::new();
            wait_for("the LINE message to be sent", deadline, || {
                last = p.outbox();
                last.iter()
                    .any(|m| m["sink"] == "p.push" && m["state"] == "sent")
            });
            last
        })
        .await
    };
    assert!(start.elapsed() < deadline, "{:?}", start.elapsed());
    let hook_msg = only_message(&sent, "p.hook");
    assert_eq!(hook_msg["state"], "pending", "{hook_msg:#}");
    assert_eq!(hook_msg["attempts"], 0, "its first attempt has not ended");

    drop(stdin);
    blocking(move || drop(child)).await;
}

/// A child process killed when dropped, also when an assertion fails first.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        kill9(&mut self.0);
    }
}

// ---------------------------------------------------------------------------------------
// vigil send-test
// ---------------------------------------------------------------------------------------

/// A project with a LINE sink `push` and a generic webhook sink `hook`, both at `server`.
fn send_test_project(server: &MockServer) -> Arc<Project> {
    let settings = format!(
        "{}  webhook:\n    soc:\n      url: ${{HOOK_URL}}\n      signing_secret: ${{HOOK_SECRET}}\n",
        line_settings(&server.uri())
    );
    let sinks = format!("{}{}", line_sink("push", ""), hook_sink("hook", "soc", ""));
    Arc::new(
        Project::new(&settings, &pipeline(&sinks))
            .env("LINE_TOKEN", TOKEN)
            .env("HOOK_URL", &format!("{}/hook", server.uri()))
            .env("HOOK_SECRET", SECRET),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn send_test_reports_the_peers_answer() {
    let server = MockServer::start().await;
    mock(
        &server,
        PUSH,
        ResponseTemplate::new(200).set_body_string(r#"{"sentMessages":[{"id":"1"}]}"#),
        None,
    )
    .await;
    mock(
        &server,
        "/hook",
        ResponseTemplate::new(200).set_body_string("ok"),
        None,
    )
    .await;
    let p = send_test_project(&server);

    let out = vigil(&p, &["send-test", "p.push"]).await;
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout,
        "p.push (line): delivered: HTTP 200 OK: {\"sentMessages\":[{\"id\":\"1\"}]}\n"
    );
    let out = vigil(&p, &["send-test", "p.hook"]).await;
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout, "p.hook (webhook): delivered: HTTP 200 OK: ok\n");

    let got = server.received_requests().await.expect("recording");
    assert_eq!(got.len(), 2, "one request each");
    let line = &got[0];
    assert_eq!(line.url.path(), PUSH);
    assert_eq!(header(line, "authorization"), format!("Bearer {TOKEN}"));
    // The example alert is shaped like the sink's upstream rule (its title template).
    assert!(texts(&body(line))[0].contains("Burst from 10.20.30.40"));
    let hook = &got[1];
    assert_eq!(hook.url.path(), "/hook");
    assert_eq!(body(hook)["alerts"][0]["title"], "Burst from 10.20.30.40");
    assert!(hook.headers.contains_key("x-vigil-signature"));
}

#[tokio::test(flavor = "multi_thread")]
async fn send_test_reports_a_refusal() {
    let server = MockServer::start().await;
    let refusal = r#"{"message":"The request body has 1 error(s)"}"#;
    mock(
        &server,
        PUSH,
        ResponseTemplate::new(400).set_body_string(refusal),
        None,
    )
    .await;
    mock(
        &server,
        "/hook",
        ResponseTemplate::new(403).set_body_string("forbidden"),
        None,
    )
    .await;
    let p = send_test_project(&server);

    let out = vigil(&p, &["send-test", "p.push"]).await;
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout,
        format!("p.push (line): refused (permanent): HTTP 400 Bad Request: {refusal}\n")
    );
    let out = vigil(&p, &["send-test", "p.hook"]).await;
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout,
        "p.hook (webhook): refused (permanent): HTTP 403 Forbidden: forbidden\n"
    );
    assert_eq!(
        server.received_requests().await.expect("recording").len(),
        2
    );
}

// ---------------------------------------------------------------------------------------
// Snapshots of what is sent (send-test --dry-run: the fixed sample alert and message id)
// ---------------------------------------------------------------------------------------

/// A project with one sink of each kind; nothing listens at its addresses (dry runs only).
fn preview_project() -> Project {
    let settings = "connections:\n  line:\n    ops:\n      base_url: http://127.0.0.1:9\n      token: ${LINE_TOKEN}\n  webhook:\n    soc:\n      url: http://127.0.0.1:9/hook\n";
    let sinks = format!(
        "{}{}{}{}",
        line_sink("push", ""),
        hook_sink("generic", "soc", ""),
        hook_sink("slack", "soc", "    preset: slack\n"),
        hook_sink("teams", "soc", "    preset: teams\n"),
    );
    Project::new(settings, &pipeline(&sinks)).env("LINE_TOKEN", TOKEN)
}

/// `vigil send-test SINK --dry-run`'s stdout, its `body` part pretty-printed.
fn dry_run(p: &Project, sink: &str) -> String {
    let out = p
        .command(&["send-test", sink, "--dry-run", "--pipelines"])
        .arg(p.pipelines())
        .output()
        .expect("vigil runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let mut lines = stdout.lines();
    let mut shown = String::new();
    while let Some(l) = lines.next() {
        shown.push_str(l);
        shown.push('\n');
        if l == "----- body -----" {
            let body: Value = serde_json::from_str(lines.next().expect("body")).expect("JSON");
            shown.push_str(&serde_json::to_string_pretty(&body).expect("JSON"));
            shown.push('\n');
        }
    }
    shown
}

#[test]
fn snapshot_line_text() {
    insta::assert_snapshot!("line_text", dry_run(&preview_project(), "p.push"));
}

#[test]
fn snapshot_webhook_generic_body() {
    insta::assert_snapshot!("webhook_generic", dry_run(&preview_project(), "p.generic"));
}

#[test]
fn snapshot_webhook_slack_body() {
    insta::assert_snapshot!("webhook_slack", dry_run(&preview_project(), "p.slack"));
}

#[test]
fn snapshot_webhook_teams_body() {
    insta::assert_snapshot!("webhook_teams", dry_run(&preview_project(), "p.teams"));
}
