//! The HTTP server through the binary: health checks, the JSON API, `/metrics` (parsed as
//! Prometheus text), reloads through the API, and the bearer token beyond loopback.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cli::{bin, wait_for};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);
const TOKEN: &str = "web-token-never-shown-9f2c";

struct Vigil {
    dir: tempfile::TempDir,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    base: String,
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pipeline(out: &std::path::Path, port: u16) -> String {
    format!(
        "kind: pipeline\nname: p\ndescription: ssh only\nsources:\n  in: {{type: stdin}}\nstages:\n  keep:\n    type: filter\n    inputs: [in]\n    match: {{port: {port}}}\nsinks:\n  out:\n    type: file\n    inputs: [keep]\n    path: {}\n",
        out.display()
    )
}

/// `vigil run` with `web` settings lines, waiting until the server listens.
fn start(web: &str, env: &[(&str, &str)]) -> Vigil {
    start_with(web, None, env)
}

/// The settings' extra lines and the pipeline of a project in `dir`.
type Custom<'a> = &'a dyn Fn(&std::path::Path) -> (String, String);

/// [`start`] with extra settings lines after `web:` and another pipeline.
fn start_with(web: &str, custom: Option<Custom<'_>>, env: &[(&str, &str)]) -> Vigil {
    start_limited(web, custom, env, None)
}

/// [`start_with`], with the soft open-file limit lowered to `soft_nofile` (as a shell's
/// `ulimit -Sn` does; the hard limit stays).
fn start_limited(
    web: &str,
    custom: Option<Custom<'_>>,
    env: &[(&str, &str)],
    soft_nofile: Option<u32>,
) -> Vigil {
    let dir = tempfile::tempdir().expect("temp");
    let pipes = dir.path().join("pipelines");
    std::fs::create_dir(&pipes).expect("mkdir");
    let (extra, p) = match custom {
        Some(f) => f(dir.path()),
        None => (String::new(), pipeline(&dir.path().join("out.jsonl"), 22)),
    };
    std::fs::write(
        pipes.join("settings.yaml"),
        format!(
            "kind: settings\nstate_dir: {}\nweb:\n{web}{extra}",
            dir.path().join("state").display()
        ),
    )
    .expect("write");
    std::fs::write(pipes.join("p.yaml"), p).expect("write");
    let mut cmd = match soft_nofile {
        None => Command::new(bin()),
        Some(n) => {
            let mut c = Command::new("bash");
            c.arg("-c")
                .arg(format!("ulimit -Sn {n} && exec \"$0\" \"$@\""))
                .arg(bin());
            c
        }
    };
    cmd.args(["--log-format", "json", "run", "--no-watch", "--pipelines"])
        .arg(&pipes)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("vigil starts");
    let stderr = child.stderr.take().expect("stderr");
    let logs: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    let mut base = String::new();
    wait_for("the web server", DEADLINE, || {
        let logs = logs.lock().unwrap();
        let found = logs.iter().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["fields"]["message"] == "web: listening")
                .then(|| v["fields"]["address"].as_str().map(str::to_string))
                .flatten()
        });
        match found {
            Some(addr) => {
                let port = addr.rsplit(':').next().unwrap_or_default().to_string();
                base = format!("http://127.0.0.1:{port}");
                true
            }
            None => false,
        }
    });
    Vigil {
        dir,
        child,
        logs,
        base,
    }
}

impl Vigil {
    fn send(&mut self, records: &[Value]) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        for r in records {
            writeln!(stdin, "{r}").expect("write");
        }
        stdin.flush().expect("flush");
    }

    fn out_lines(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("out.jsonl"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn all_logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

async fn get(url: &str, token: Option<&str>) -> (u16, String, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.text().await.expect("body"), headers)
}

fn event(port: u16) -> Value {
    json!({"src": "10.0.0.1", "port": port, "timestamp": "2026-11-21T10:00:00Z"})
}

#[tokio::test(flavor = "multi_thread")]
async fn health_api_metrics_and_reload() {
    let mut v = tokio::task::spawn_blocking(|| start("  listen: 127.0.0.1:0\n", &[]))
        .await
        .expect("start");
    v.send(&[event(22), event(22), event(443)]);
    let base = v.base.clone();
    let v = tokio::task::spawn_blocking(move || {
        wait_for("2 events written", DEADLINE, || v.out_lines() == 2);
        v
    })
    .await
    .expect("wait");

    let (status, body, _) = get(&format!("{base}/healthz"), None).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // Every route the OpenAPI description lists is served (the stream is checked below).
    let client = reqwest::Client::new();
    for (method, path) in vigil::web::ROUTES {
        if *path == "/api/v1/stream" || *path == "/api/v1/reload" {
            continue;
        }
        let url = format!("{base}{}", path.replace("{id}", "no-such-silence"));
        let req = match *method {
            "get" => client.get(&url),
            "post" => client.post(&url).json(&json!({})),
            _ => client.delete(&url),
        };
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status != 405 && !text.contains("no such route"),
            "{method} {path}: {status} {text}"
        );
    }
    assert_eq!(get(&format!("{base}/readyz"), None).await.0, 200);
    assert_eq!(get(&format!("{base}/nope"), None).await.0, 404);

    // The graph with its counters.
    let (status, body, _) = get(&format!("{base}/api/v1/pipelines"), None).await;
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).expect("JSON");
    let p = &api["pipelines"][0];
    assert_eq!(p["name"], "p");
    assert_eq!(p["description"], "ssh only");
    let nodes = p["nodes"].as_array().expect("nodes");
    let node = |id: &str| nodes.iter().find(|n| n["id"] == id).expect("node").clone();
    assert_eq!(node("p.in")["events_out"], 3);
    assert_eq!(node("p.keep")["kind"], "filter");
    assert_eq!(node("p.keep")["inputs"], json!(["p.in"]));
    assert_eq!(
        (
            node("p.keep")["events_in"].clone(),
            node("p.keep")["events_out"].clone()
        ),
        (json!(3), json!(2))
    );
    assert_eq!(node("p.out")["events_out"], 2);
    assert_eq!(api["reload"]["reloads"], 0);

    let (_, body, _) = get(&format!("{base}/api/v1/stats"), None).await;
    let stats: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(stats["events_read"], 3);
    assert_eq!(stats["events_delivered"], 2);

    // /metrics parses as Prometheus text and says the same.
    let (status, body, headers) = get(&format!("{base}/metrics"), None).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format");
    let value = |name: &str, label: (&str, &str)| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name}{{{}={}}} in:\n{body}", label.0, label.1))
    };
    assert_eq!(value("vigil_node_events_in_total", ("node", "p.keep")), 3.0);
    assert_eq!(
        value("vigil_node_events_out_total", ("node", "p.keep")),
        2.0
    );
    // Errors are counted by reason; a node without any has no series.
    assert!(
        !scrape
            .samples
            .iter()
            .any(|s| s.metric == "vigil_node_errors_total" && s.labels.get("node") == Some("p.in")),
        "no errors for p.in:\n{body}"
    );
    assert_eq!(value("vigil_outbox_messages", ("state", "dead")), 0.0);

    // A reload through the API: a broken file is refused with its position...
    let pipes = v.dir.path().join("pipelines");
    let out = v.dir.path().join("out.jsonl");
    std::fs::write(
        pipes.join("p.yaml"),
        pipeline(&out, 22).replace("port: 22", "port: [22"),
    )
    .expect("write");
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{base}/api/v1/reload"))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 422);
    let failed: Value = resp.json().await.expect("JSON");
    assert_eq!(failed["ok"], false);
    assert!(
        failed["errors"][0].as_str().unwrap().contains("p.yaml:"),
        "{failed}"
    );
    // ...a good one takes effect.
    std::fs::write(pipes.join("p.yaml"), pipeline(&out, 443)).expect("write");
    let resp = client
        .post(format!("{base}/api/v1/reload"))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    let done: Value = resp.json().await.expect("JSON");
    assert_eq!(done["report"]["changed"], json!(["p.keep"]), "{done}");
    let (_, body, _) = get(&format!("{base}/metrics"), None).await;
    assert!(body.contains("vigil_reloads_total 2"), "{body}");
    assert!(body.contains("vigil_reload_failures_total 1"), "{body}");
    drop(v);
}

/// The standard process metrics describe the running binary (read from `/proc`, so Linux
/// only).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn process_metrics_describe_the_running_binary() {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64()
    };
    let before = now();
    let v = tokio::task::spawn_blocking(|| start("  listen: 127.0.0.1:0\n", &[]))
        .await
        .expect("start");
    let (status, body, _) = get(&format!("{}/metrics", v.base), None).await;
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format");
    let value = |name: &str| -> prometheus_parse::Value {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
            .value
            .clone()
    };
    let gauge = |name: &str| match value(name) {
        prometheus_parse::Value::Gauge(v) => v,
        other => panic!("{name} is not a gauge: {other:?}"),
    };
    let prometheus_parse::Value::Counter(cpu) = value("process_cpu_seconds_total") else {
        panic!("process_cpu_seconds_total is not a counter:\n{body}");
    };
    assert!(cpu >= 0.0, "{body}");
    let rss = gauge("process_resident_memory_bytes");
    assert!(rss > 1_048_576.0, "{body}");
    assert!(gauge("process_virtual_memory_bytes") >= rss, "{body}");
    let fds = gauge("process_open_fds");
    assert!(fds >= 3.0, "{body}");
    assert!(gauge("process_max_fds") >= fds, "{body}");
    // Started by this test (the boot time in /proc/stat is whole seconds: leave a margin).
    let started = gauge("process_start_time_seconds");
    assert!(
        started >= before - 60.0 && started <= now() + 60.0,
        "started {started}, test began {before}:\n{body}"
    );
    drop(v);
}

#[tokio::test(flavor = "multi_thread")]
async fn beyond_loopback_a_token_is_required_and_never_shown() {
    let v = tokio::task::spawn_blocking(|| {
        start(
            "  listen: 0.0.0.0:0\n  token: ${VIGIL_WEB_TOKEN}\n",
            &[("VIGIL_WEB_TOKEN", TOKEN)],
        )
    })
    .await
    .expect("start");
    let base = v.base.clone();
    let mut bodies = String::new();
    for path in [
        "/api/v1/pipelines",
        "/api/v1/stats",
        "/api/v1/alerts",
        "/api/v1/events",
        "/api/v1/silences",
        "/metrics",
    ] {
        let (status, body, headers) = get(&format!("{base}{path}"), None).await;
        assert_eq!(status, 401, "{path} without a token");
        assert_eq!(headers["www-authenticate"], "Bearer");
        bodies.push_str(&body);
        let (status, body, _) = get(&format!("{base}{path}"), Some("wrong")).await;
        assert_eq!(status, 401, "{path} with a wrong token");
        bodies.push_str(&body);
        let (status, body, _) = get(&format!("{base}{path}"), Some(TOKEN)).await;
        assert_eq!(status, 200, "{path} with the token: {body}");
        bodies.push_str(&body);
    }
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/reload"))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 401);
    // The stream takes the token as a query parameter too (EventSource sends no headers).
    assert_eq!(get(&format!("{base}/api/v1/stream"), None).await.0, 401);
    let resp = reqwest::Client::new()
        .get(format!("{base}/api/v1/stream?token={TOKEN}"))
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status().as_u16(), 200);
    drop(resp);
    // Health checks need no token.
    assert_eq!(get(&format!("{base}/healthz"), None).await.0, 200);
    assert_eq!(get(&format!("{base}/readyz"), None).await.0, 200);
    assert!(!bodies.contains(TOKEN), "a response shows the token");
    let logs = v.all_logs();
    assert!(!logs.contains(TOKEN), "a log line shows the token:\n{logs}");
}

#[test]
fn listening_beyond_loopback_without_a_token_does_not_validate() {
    let dir = tempfile::tempdir().expect("temp");
    std::fs::write(
        dir.path().join("settings.yaml"),
        "kind: settings\nweb:\n  listen: 0.0.0.0:5001\n",
    )
    .expect("write");
    let out = Command::new(bin())
        .arg("validate")
        .arg(dir.path())
        .output()
        .expect("validate runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("settings.yaml:3:11: error[invalid-value]: listening on 0.0.0.0:5001 (beyond this machine) needs a bearer token"),
        "{text}"
    );
}

/// A silence created through the API holds back the next matching alert; the alert
/// history shows every alert with its delivery per sink.
#[tokio::test(flavor = "multi_thread")]
async fn a_silence_holds_back_matching_alerts_and_the_history_shows_deliveries() {
    let (hook, url) = common::cli::hook_receiver().await;
    let mut v = tokio::task::spawn_blocking(move || {
        let make = move |_dir: &std::path::Path| {
            (
                format!("connections:\n  webhook:\n    soc:\n      url: {url}\n"),
                "kind: pipeline\nname: p\nsources:\n  in: {type: stdin}\nstages:\n  burst:\n    type: window_count\n    inputs: [in]\n    window: 1m\n    threshold: 1\n    group_by: [src]\n    alert: {severity: high, title: \"burst from {{group.src}}\", mode: each_crossing}\nsinks:\n  hook:\n    type: webhook\n    inputs: [burst]\n    connection: soc\n".to_string(),
            )
        };
        start_with("  listen: 127.0.0.1:0\n", Some(&make), &[])
    })
    .await
    .expect("start");
    let base = v.base.clone();
    let titles = |reqs: &[wiremock::Request]| -> Vec<String> {
        reqs.iter()
            .map(|r| {
                let b: Value = serde_json::from_slice(&r.body).expect("JSON");
                b["alerts"][0]["title"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    async fn wait_hooks(hook: &wiremock::MockServer, n: usize) -> Vec<wiremock::Request> {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let got = hook.received_requests().await.unwrap_or_default();
            if got.len() >= n {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} webhook calls, expected {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let ev = |src: &str, sec: u32| json!({"src": src, "timestamp": format!("2026-11-21T10:00:{sec:02}Z")});
    v.send(&[ev("a", 1)]);
    wait_hooks(&hook, 1).await;

    // Silence alerts about `b` for an hour.
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{base}/api/v1/silences"))
        .json(&json!({"matchers": [{"field": "group.src", "value": "b"}], "duration": "1h", "comment": "maintenance on b"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 201);
    let silence: Value = resp.json().await.expect("JSON");
    let id = silence["id"].as_str().expect("id").to_string();
    // A bad one is refused with the reason.
    let bad = client
        .post(format!("{base}/api/v1/silences"))
        .json(&json!({"matchers": [{"field": "group..src", "value": "b"}], "duration": "1h"}))
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status().as_u16(), 400);
    // A length of time past 100 years is refused with the reason (it panicked adding
    // `300000y` to the clock).
    for long in ["300000y", "1000000y"] {
        let bad = client
            .post(format!("{base}/api/v1/silences"))
            .json(&json!({"matchers": [{"field": "group.src", "value": "b"}], "duration": long}))
            .send()
            .await
            .expect("post");
        assert_eq!(bad.status().as_u16(), 400, "{long}");
        let why: Value = bad.json().await.expect("JSON");
        assert!(
            why["error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("`{long}` is longer than 100 years"))),
            "{why}"
        );
    }

    v.send(&[ev("b", 2), ev("c", 3)]);
    let got = wait_hooks(&hook, 2).await;
    assert_eq!(
        titles(&got),
        ["burst from a", "burst from c"],
        "b was silenced"
    );

    let (_, body, _) = get(&format!("{base}/api/v1/silences"), None).await;
    let list: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(list["silences"][0]["active"], true);
    assert_eq!(list["silences"][0]["comment"], "maintenance on b");

    // The history: all three alerts; b was never queued for the hook.
    let (status, body, _) = get(&format!("{base}/api/v1/alerts"), None).await;
    assert_eq!(status, 200, "{body}");
    let hist: Value = serde_json::from_str(&body).expect("JSON");
    let alerts = hist["alerts"].as_array().expect("alerts");
    let by = |src: &str| {
        alerts
            .iter()
            .find(|a| a["group"]["src"] == src)
            .expect("alert")
            .clone()
    };
    assert_eq!(alerts.len(), 3, "{hist}");
    assert_eq!(by("a")["deliveries"][0]["sink"], "p.hook");
    assert_eq!(by("a")["deliveries"][0]["state"], "sent");
    assert_eq!(by("b")["deliveries"], json!([]));
    assert_eq!(by("c")["samples"][0]["record"]["src"], "c");
    // The list says which alerts an active silence holds back, and until when.
    assert_eq!(by("b")["silenced"]["by"], json!([id]), "{hist}");
    assert_eq!(by("b")["silenced"]["until"], silence["expires_at"]);
    assert!(by("a").get("silenced").is_none(), "{hist}");
    assert!(by("c").get("silenced").is_none(), "{hist}");
    let (_, body, _) = get(&format!("{base}/api/v1/alerts?severity=critical"), None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["alerts"],
        json!([])
    );
    assert_eq!(
        get(&format!("{base}/api/v1/alerts?severity=loud"), None)
            .await
            .0,
        400
    );

    // Expired: b alerts go out again.
    let resp = client
        .delete(format!("{base}/api/v1/silences/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status().as_u16(), 200);
    let resp = client
        .delete(format!("{base}/api/v1/silences/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status().as_u16(), 404);
    v.send(&[ev("b", 4)]);
    let got = wait_hooks(&hook, 3).await;
    assert_eq!(titles(&got)[2], "burst from b");

    // Deliveries by sink and alerts by severity in /metrics.
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let (_, body, _) = get(&format!("{base}/metrics"), None).await;
        let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
            .expect("Prometheus text format");
        let value = |name: &str, labels: &[(&str, &str)]| {
            scrape
                .samples
                .iter()
                .find(|s| {
                    s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                })
                .and_then(|s| match s.value {
                    prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) => {
                        Some(v)
                    }
                    _ => None,
                })
        };
        let sent = value("vigil_deliveries", &[("sink", "p.hook"), ("state", "sent")]);
        if sent == Some(3.0) {
            assert_eq!(
                value("vigil_alerts", &[("severity", "high")]),
                Some(4.0),
                "{body}"
            );
            assert_eq!(
                value("vigil_alerts", &[("severity", "critical")]),
                Some(0.0)
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(v);
}

/// The recent events and the live stream (Server-Sent Events) show what the sources read.
#[tokio::test(flavor = "multi_thread")]
async fn recent_events_and_the_live_stream() {
    use futures::StreamExt;
    let mut v = tokio::task::spawn_blocking(|| start("  listen: 127.0.0.1:0\n", &[]))
        .await
        .expect("start");
    let base = v.base.clone();
    v.send(&[event(22), event(443)]);
    let deadline = std::time::Instant::now() + DEADLINE;
    let recent = loop {
        let (_, body, _) = get(&format!("{base}/api/v1/events"), None).await;
        let v: Value = serde_json::from_str(&body).expect("JSON");
        if v["events"].as_array().is_some_and(|a| a.len() == 2) {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(recent["events"][0]["record"]["port"], 443, "newest first");
    assert_eq!(recent["events"][0]["type"], "event");
    assert_eq!(recent["events"][0]["source"], "p.in");

    assert_eq!(
        get(&format!("{base}/api/v1/stream?type=bogus"), None)
            .await
            .0,
        400
    );
    let resp = reqwest::Client::new()
        .get(format!("{base}/api/v1/stream?type=event&pipeline=p"))
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.bytes_stream();
    // Injected after the stream is open: it arrives on it.
    v.send(&[json!({"src": "10.9.9.9", "port": 22, "marker": "live-1", "timestamp": "2026-11-21T10:00:09Z"})]);
    let mut seen = String::new();
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
            if seen.contains("live-1") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{seen}");
    assert!(seen.contains("event: event"), "{seen}");
    drop(v);
}

/// `vigil silence add|list|expire` on a state directory.
#[test]
fn silences_from_the_command_line() {
    let dir = tempfile::tempdir().expect("temp");
    let state = dir.path().join("state");
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("silence")
            .args(args)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .expect("vigil runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, id, err) = run(&[
        "add",
        "group.src.ip=10.0.0.1",
        "severity~high|critical",
        "--duration",
        "1h",
        "--comment",
        "patching",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let id = id.trim().to_string();
    let (_, list, _) = run(&["list"]);
    assert!(
        list.contains(&format!("{id}  active"))
            && list.contains("group.src.ip=10.0.0.1 severity~high|critical")
            && list.contains("(patching)"),
        "{list}"
    );
    assert_eq!(run(&["expire", &id]).0, Some(0));
    let (_, list, _) = run(&["list"]);
    assert!(list.contains(&format!("{id}  ended")), "{list}");
    assert_eq!(run(&["expire", &id]).0, Some(1), "already ended");
    let (code, _, err) = run(&["add", "nonsense"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("FIELD=VALUE"), "{err}");
}

/// With every kind of secret configured — the PCE API secret, an SMTP password, a LINE
/// token, a webhook signing secret, the web token — none appears in any API response or
/// log line, through start-up, polling, failed deliveries and a reload.
#[cfg(feature = "demo")]
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_appears_in_any_response_or_log_line() {
    const PCE_SECRET: &str = "pce-secret-7b1e93";
    const SMTP_PASSWORD: &str = "smtp-password-42ac";
    const LINE_TOKEN: &str = "line-token-9d0f11";
    const HOOK_SECRET: &str = "hook-secret-c3e8";
    // The webhook URL's path is its token (as Slack's and Teams' are), and a header.
    const HOOK_PATH: &str = "hook-path-token-5d7e";
    const HOOK_AUTH: &str = "Bearer hook-auth-77d2";
    let secrets = [
        PCE_SECRET,
        SMTP_PASSWORD,
        LINE_TOKEN,
        HOOK_SECRET,
        HOOK_PATH,
        HOOK_AUTH,
        TOKEN,
    ];
    // A simulated PCE that wants the secret.
    let (mut sim, sim_url) = common::cli::pce_sim(
        &["--scenario", "brute-force", "--time-scale", "60"],
        &[("VIGIL_SIM_API_SECRET", PCE_SECRET)],
    );
    let hook_url = {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        format!("http://127.0.0.1:{port}/services/{HOOK_PATH}")
    };
    let make = move |dir: &std::path::Path| {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        (
            format!(
                "connections:\n  pce:\n    lab:\n      url: {sim_url}\n      insecure_http: true\n      api_key: ${{PCE_KEY}}\n      api_secret: ${{PCE_SECRET}}\n  smtp:\n    relay:\n      host: 127.0.0.1\n      port: {port}\n      tls: none\n      allow_plaintext_auth: true\n      username: vigil\n      password: ${{SMTP_PASSWORD}}\n      from: vigil@example.com\n  line:\n    ops:\n      token: ${{LINE_TOKEN}}\n      base_url: http://127.0.0.1:{port}\n  webhook:\n    hook:\n      url: ${{HOOK_URL}}\n      signing_secret: ${{HOOK_SECRET}}\n      headers:\n        Authorization: ${{HOOK_AUTH}}\n"
            ),
            format!(
                "kind: pipeline\nname: p\nsources:\n  events:\n    type: pce_events\n    connection: lab\n    interval: 5s\n    start_at: 1h\nstages:\n  any:\n    type: window_count\n    inputs: [events]\n    window: 1h\n    threshold: 1\n    group_by: [event_type]\nsinks:\n  out:\n    type: file\n    inputs: [any]\n    path: {}\n  mail:\n    type: mail\n    inputs: [any]\n    connection: relay\n    to: [soc@example.com]\n    retry: {{initial: 100ms, max: 200ms}}\n  line:\n    type: line\n    inputs: [any]\n    connection: ops\n    to: U123\n    retry: {{initial: 100ms, max: 200ms}}\n  hook:\n    type: webhook\n    inputs: [any]\n    connection: hook\n    retry: {{initial: 100ms, max: 200ms}}\n",
                dir.join("alerts.jsonl").display()
            ),
        )
    };
    let v = tokio::task::spawn_blocking(move || {
        start_with(
            "  listen: 0.0.0.0:0\n  token: ${VIGIL_WEB_TOKEN}\n",
            Some(&make),
            &[
                ("VIGIL_WEB_TOKEN", TOKEN),
                ("PCE_KEY", "api_sim"),
                ("PCE_SECRET", PCE_SECRET),
                ("SMTP_PASSWORD", SMTP_PASSWORD),
                ("LINE_TOKEN", LINE_TOKEN),
                ("HOOK_SECRET", HOOK_SECRET),
                ("HOOK_URL", hook_url.as_str()),
                ("HOOK_AUTH", HOOK_AUTH),
            ],
        )
    })
    .await
    .expect("start");
    let base = v.base.clone();
    // Alerts are raised and every delivery fails (nothing listens): errors get logged.
    let alerts = v.dir.path().join("alerts.jsonl");
    let deadline = std::time::Instant::now() + DEADLINE;
    while std::fs::read_to_string(&alerts)
        .unwrap_or_default()
        .is_empty()
        || !v.all_logs().contains("send failed; will retry")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no alert or no failed delivery:\n{}",
            v.all_logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = reqwest::Client::new();
    let reload = client
        .post(format!("{base}/api/v1/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("reload");
    let mut responses = reload.text().await.expect("body");
    for (method, path) in vigil::web::ROUTES {
        if *method != "get" || *path == "/api/v1/stream" {
            continue;
        }
        let (status, body, _) = get(&format!("{base}{path}"), Some(TOKEN)).await;
        assert_eq!(status, 200, "{path}");
        responses.push_str(&body);
    }
    let logs = v.all_logs();
    for secret in secrets {
        assert!(
            !responses.contains(secret),
            "an API response shows `{secret}`"
        );
        assert!(
            !logs.contains(secret),
            "a log line shows `{secret}`:\n{logs}"
        );
    }
    let _ = sim.kill();
    let _ = sim.wait();
    drop(v);
}

/// `POST /api/v1/run-once` makes a source that polls hourly poll now.
#[cfg(feature = "demo")]
#[tokio::test(flavor = "multi_thread")]
async fn run_once_polls_now() {
    let (mut sim, sim_url) = common::cli::pce_sim(&[], &[]);
    let make = move |dir: &std::path::Path| {
        (
            format!(
                "connections:\n  pce:\n    lab:\n      url: {sim_url}\n      insecure_http: true\n      api_key: ${{PCE_KEY}}\n      api_secret: ${{PCE_SECRET}}\n"
            ),
            format!(
                "kind: pipeline\nname: p\nsources:\n  events:\n    type: pce_events\n    connection: lab\n    interval: 1h\nsinks:\n  out:\n    type: file\n    inputs: [events]\n    path: {}\n",
                dir.join("events.jsonl").display()
            ),
        )
    };
    let v = tokio::task::spawn_blocking(move || {
        start_with(
            "  listen: 127.0.0.1:0\n",
            Some(&make),
            &[("PCE_KEY", "api_sim"), ("PCE_SECRET", "sim-secret")],
        )
    })
    .await
    .expect("start");
    let base = v.base.clone();
    let polls = || async {
        let (_, body, _) = get(&format!("{base}/metrics"), None).await;
        body.lines()
            .filter(|l| {
                l.starts_with("vigil_pce_requests_total{")
                    && l.contains("endpoint=\"/orgs/:org/events\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    let deadline = std::time::Instant::now() + DEADLINE;
    while polls().await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first poll never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = polls().await;
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/run-once"))
        .send()
        .await
        .expect("run-once");
    assert_eq!(resp.status().as_u16(), 202);
    let deadline = std::time::Instant::now() + DEADLINE;
    while polls().await <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "no poll after run-once (an hour before the next)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = sim.kill();
    let _ = sim.wait();
    drop(v);
}

/// A PCE refusing the API key (the simulator with another secret): `pce_health` says
/// `unauthorized` (not `unreachable`) with the PCE's 401, `/readyz` answers 503 naming
/// the connection, and the stats say so — the secret itself appears nowhere.
#[cfg(feature = "demo")]
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_api_key_is_unauthorized_and_not_ready() {
    let (mut sim, sim_url) = common::cli::pce_sim(&[], &[]);
    let make = move |dir: &std::path::Path| {
        (
            format!(
                "connections:\n  pce:\n    lab:\n      url: {sim_url}\n      insecure_http: true\n      api_key: ${{PCE_KEY}}\n      api_secret: ${{PCE_SECRET}}\n"
            ),
            format!(
                "kind: pipeline\nname: p\nsources:\n  health:\n    type: pce_health\n    connection: lab\n    interval: 1h\nsinks:\n  out:\n    type: file\n    inputs: [health]\n    path: {}\n",
                dir.join("health.jsonl").display()
            ),
        )
    };
    let v = tokio::task::spawn_blocking(move || {
        start_with(
            "  listen: 127.0.0.1:0\n",
            Some(&make),
            &[("PCE_KEY", "api_sim"), ("PCE_SECRET", "not-the-sim-secret")],
        )
    })
    .await
    .expect("start");
    let base = v.base.clone();
    let health = v.dir.path().join("health.jsonl");
    let deadline = std::time::Instant::now() + DEADLINE;
    let event: Value = loop {
        let text = std::fs::read_to_string(&health).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            break serde_json::from_str(line).expect("a JSON event");
        }
        assert!(std::time::Instant::now() < deadline, "no health event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(event["status"], "unauthorized", "{event}");
    assert_eq!(event["http_status"], 401, "{event}");
    let error = event["error"].as_str().expect("why");
    assert!(
        error.contains("401") && error.contains("check api_key/api_secret"),
        "{error}"
    );
    let (status, body, _) = get(&format!("{base}/readyz"), None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        "not ready: PCE connection lab refuses the API key (401 unauthorized)\n"
    );
    let (status, body, _) = get(&format!("{base}/api/v1/stats"), None).await;
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        stats["pce"]["lab"]["credentials"], "unauthorized",
        "{stats}"
    );
    let everything = format!("{event}{body}{}", std::fs::read_to_string(&health).unwrap());
    assert!(!everything.contains("not-the-sim-secret"));
    let _ = sim.kill();
    let _ = sim.wait();
    drop(v);
}

/// With the right key the same connection is ready, its credentials accepted.
#[cfg(feature = "demo")]
#[tokio::test(flavor = "multi_thread")]
async fn an_accepted_api_key_is_ready() {
    let (mut sim, sim_url) = common::cli::pce_sim(&[], &[]);
    let make = move |dir: &std::path::Path| {
        (
            format!(
                "connections:\n  pce:\n    lab:\n      url: {sim_url}\n      insecure_http: true\n      api_key: ${{PCE_KEY}}\n      api_secret: ${{PCE_SECRET}}\n"
            ),
            format!(
                "kind: pipeline\nname: p\nsources:\n  health:\n    type: pce_health\n    connection: lab\n    interval: 1h\nsinks:\n  out:\n    type: file\n    inputs: [health]\n    path: {}\n",
                dir.join("health.jsonl").display()
            ),
        )
    };
    let v = tokio::task::spawn_blocking(move || {
        start_with(
            "  listen: 127.0.0.1:0\n",
            Some(&make),
            &[("PCE_KEY", "api_sim"), ("PCE_SECRET", "sim-secret")],
        )
    })
    .await
    .expect("start");
    let health = v.dir.path().join("health.jsonl");
    let deadline = std::time::Instant::now() + DEADLINE;
    while std::fs::read_to_string(&health)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "no health event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = std::fs::read_to_string(&health).unwrap();
    let event: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(event["status"], "normal", "{event}");
    let (status, body, _) = get(&format!("{}/readyz", v.base), None).await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (_, body, _) = get(&format!("{}/api/v1/stats", v.base), None).await;
    let stats: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(stats["pce"]["lab"]["credentials"], "accepted", "{stats}");
    let _ = sim.kill();
    let _ = sim.wait();
    drop(v);
}

// ---- hostile clients ----------------------------------------------------------------------

/// `host:port` of a started vigil.
fn authority(v: &Vigil) -> String {
    v.base.trim_start_matches("http://").to_string()
}

/// A sample of `/metrics` (asked with a 10-second limit: a server that stopped answering
/// fails the test instead of hanging it).
async fn metric(base: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    metric_with(base, None, name, label).await
}

/// [`metric`], sending `token`.
async fn metric_with(
    base: &str,
    token: Option<&str>,
    name: &str,
    label: Option<(&str, &str)>,
) -> f64 {
    let mut req = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
        .get(format!("{base}/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let body = req
        .send()
        .await
        .expect("vigil answers /metrics")
        .text()
        .await
        .expect("body");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or_else(|| panic!("no {name} {label:?} in:\n{body}"))
}

async fn refused(base: &str, reason: &str) -> f64 {
    metric(base, "vigil_web_refused_total", Some(("reason", reason))).await
}

/// Whether the server closes `stream` (end of file or a reset) before `limit`.
fn closed_within(stream: &mut std::net::TcpStream, limit: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // An answer (there should be none): read on to the end.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// DNS rebinding: a page whose name resolves to 127.0.0.1 sends its own name as `Host`; it
/// is refused (421, saying which setting to change) and counted. The loopback names with
/// the port, `public_url` and `web.allowed_hosts` are served; the health checks answer to
/// any name. Every answer carries the security headers.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_naming_another_host_is_refused() {
    let v = tokio::task::spawn_blocking(|| {
        start_with(
            "  listen: 127.0.0.1:0\n  allowed_hosts: [vigil.test]\n",
            Some(&|dir: &std::path::Path| {
                (
                    "public_url: https://vigil.example.com\n".into(),
                    pipeline(&dir.join("out.jsonl"), 22),
                )
            }),
            &[],
        )
    })
    .await
    .expect("start");
    let base = v.base.clone();
    let port = base.rsplit(':').next().expect("port").to_string();
    let client = reqwest::Client::new();
    let ask = |host: String, path: &str| {
        client
            .get(format!("{base}{path}"))
            .header("host", host)
            .send()
    };
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        format!("localhost:{}", port.parse::<u16>().expect("port") ^ 1),
    ] {
        let resp = ask(host.clone(), "/api/v1/alerts").await.expect("answer");
        assert_eq!(resp.status().as_u16(), 421, "{host}");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        assert_eq!(resp.headers()["x-frame-options"], "DENY");
        let body: Value = resp.json().await.expect("JSON");
        let message = body["error"].as_str().expect("error");
        assert!(message.contains("web.allowed_hosts"), "{message}");
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "vigil.test".to_string(),
        "vigil.example.com".to_string(),
    ] {
        let resp = ask(host.clone(), "/api/v1/alerts").await.expect("answer");
        assert_eq!(resp.status().as_u16(), 200, "{host}");
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(
            h["content-security-policy"]
                .to_str()
                .expect("ascii")
                .contains("frame-ancestors 'none'")
        );
    }
    let resp = ask("evil.example".into(), "/healthz")
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 200, "health checks answer any name");
    // An absolute request target names a host too; a request naming none is refused.
    let addr = authority(&v);
    let answers = tokio::task::spawn_blocking(move || {
        [
            format!("GET http://evil.example/api/v1/alerts HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
            "GET /api/v1/alerts HTTP/1.0\r\n\r\n".to_string(),
        ]
        .map(|request| {
            use std::io::Read;
            let mut s = std::net::TcpStream::connect(&addr).expect("connect");
            s.set_read_timeout(Some(DEADLINE)).expect("timeout");
            s.write_all(request.as_bytes()).expect("write");
            let mut answer = String::new();
            s.read_to_string(&mut answer).expect("answer");
            answer
        })
    })
    .await
    .expect("raw requests");
    assert!(answers[0].starts_with("HTTP/1.1 421"), "{}", answers[0]);
    assert!(answers[1].starts_with("HTTP/1.0 421"), "{}", answers[1]);
    assert!(
        answers[1].contains("send a `Host` header"),
        "{}",
        answers[1]
    );
    assert_eq!(refused(&base, "host").await, 6.0);
    drop(v);
}

/// Without a token, a form another site's page posts to `/api/v1/reload` or
/// `/api/v1/run-once` is refused (403) and counted; the dashboard's own requests (same
/// origin) and tools that send no `Origin` (curl) are served.
#[tokio::test(flavor = "multi_thread")]
async fn a_cross_origin_change_without_a_token_is_refused() {
    let v = tokio::task::spawn_blocking(|| start("  listen: 127.0.0.1:0\n", &[]))
        .await
        .expect("start");
    let base = v.base.clone();
    let port: u16 = base
        .rsplit(':')
        .next()
        .expect("port")
        .parse()
        .expect("port");
    let client = reqwest::Client::new();
    let post = |path: &str, headers: Vec<(&'static str, String)>| {
        let mut req = client.post(format!("{base}{path}"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    for (path, headers) in [
        (
            "/api/v1/reload",
            vec![("origin", "http://evil.example".to_string())],
        ),
        (
            "/api/v1/run-once",
            vec![("origin", "http://evil.example".to_string())],
        ),
        // Another port of this machine is another origin.
        (
            "/api/v1/reload",
            vec![("origin", format!("http://127.0.0.1:{}", port ^ 1))],
        ),
        (
            "/api/v1/reload",
            vec![("sec-fetch-site", "cross-site".to_string())],
        ),
    ] {
        let resp = post(path, headers.clone()).await.expect("answer");
        assert_eq!(resp.status().as_u16(), 403, "{path} {headers:?}");
        let body: Value = resp.json().await.expect("JSON");
        assert!(
            body["error"].as_str().expect("error").contains("web.token"),
            "{body}"
        );
    }
    let same_origin = post(
        "/api/v1/reload",
        vec![
            ("origin", format!("http://127.0.0.1:{port}")),
            ("sec-fetch-site", "same-origin".to_string()),
        ],
    )
    .await
    .expect("answer");
    assert_eq!(same_origin.status().as_u16(), 200);
    let curl = post("/api/v1/reload", vec![]).await.expect("answer");
    assert_eq!(curl.status().as_u16(), 200);
    let curl = post("/api/v1/run-once", vec![]).await.expect("answer");
    assert_eq!(curl.status().as_u16(), 202);
    assert_eq!(refused(&base, "origin").await, 4.0);
    drop(v);
}

/// A 10 MB body to `POST /api/v1/silences` gets 413 (with a length, and streamed without
/// one), saying which setting bounds it; a small one is still created.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_past_max_body_bytes_gets_413() {
    let v = tokio::task::spawn_blocking(|| start("  listen: 127.0.0.1:0\n", &[]))
        .await
        .expect("start");
    let base = v.base.clone();
    let client = reqwest::Client::new();
    let url = format!("{base}/api/v1/silences");
    // Through a raw socket that sends a part of the body and then reads: an HTTP client
    // still writing 10 MB when the server answers and closes may see a broken pipe
    // instead of the answer (a race of the client, not of the server).
    let addr = base.trim_start_matches("http://").to_string();
    let answer = |head: String, body: Vec<u8>| {
        let addr = addr.clone();
        async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut sock = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            sock.write_all(head.as_bytes()).await.expect("head");
            // The server may answer before it has read all of it: a write error is fine.
            let _ = sock.write_all(&body).await;
            let mut got = Vec::new();
            let _ = tokio::time::timeout(DEADLINE, sock.read_to_end(&mut got)).await;
            String::from_utf8_lossy(&got).into_owned()
        }
    };
    // A length of 10 MB: refused from the header.
    let got = answer(
        format!(
            "POST /api/v1/silences HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            10 * 1024 * 1024
        ),
        Vec::new(),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(got.contains("web.max_body_bytes"), "{got}");
    // Without a length (chunked): read up to the limit, then refused.
    // 68 KiB in two chunks, just past the limit: little is left unread when it answers.
    let mut chunked = Vec::new();
    for _ in 0..2 {
        chunked.extend_from_slice(format!("{:x}\r\n", 34 * 1024).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 34 * 1024));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let got = answer(
        format!(
            "POST /api/v1/silences HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        ),
        chunked,
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    let resp = client
        .post(&url)
        .json(&json!({"matchers": [{"field": "group.src", "value": "b"}], "duration": "1h"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(refused(&base, "body_too_large").await, 2.0);
    drop(v);
}

/// A client that sends part of a request and stalls, and one that sends nothing, are
/// disconnected after `web.header_read_timeout` (1 s here), and counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_is_cut_off() {
    let v = tokio::task::spawn_blocking(|| {
        start("  listen: 127.0.0.1:0\n  header_read_timeout: 1s\n", &[])
    })
    .await
    .expect("start");
    let addr = authority(&v);
    tokio::task::spawn_blocking(move || {
        let mut slow = std::net::TcpStream::connect(&addr).expect("connect");
        slow.write_all(b"GET /api/v1/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1")
            .expect("write");
        let mut idle = std::net::TcpStream::connect(&addr).expect("connect");
        assert!(
            closed_within(&mut slow, DEADLINE),
            "a stalled request stays open"
        );
        assert!(
            closed_within(&mut idle, DEADLINE),
            "an idle connection stays open"
        );
    })
    .await
    .expect("slow clients");
    assert_eq!(refused(&v.base, "header_timeout").await, 2.0);
    drop(v);
}

/// Idle connections no longer stop the server: 500 of them, opened where the soft
/// open-file limit is 256 (macOS's default, some containers), used to exhaust the process's
/// file descriptors; `accept` then failed for ever and `/healthz` went dark. vigil now
/// raises the limit for its connections and keeps all 500 open while it answers.
#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_idle_connections_leave_the_health_check_answering() {
    let v = tokio::task::spawn_blocking(|| {
        // Long timeouts: the idle connections must still be open when /healthz is asked.
        start_limited(
            "  listen: 127.0.0.1:0\n  header_read_timeout: 60s\n  idle_timeout: 120s\n",
            None,
            &[],
            Some(256),
        )
    })
    .await
    .expect("start");
    let addr: std::net::SocketAddr = authority(&v).parse().expect("address");
    let idle = tokio::task::spawn_blocking(move || {
        (0..500)
            .map(|i| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("connection {i}: {e} (vigil stopped accepting)"))
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("connections");
    // vigil holds them all...
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let open = metric(&v.base, "vigil_web_connections_open", None).await;
        if open >= 500.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{open} connections open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and still answers.
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
        .get(format!("{}/healthz", v.base))
        .send()
        .await
        .expect("/healthz answers");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(refused(&v.base, "max_connections").await, 0.0);
    assert!(
        v.all_logs().contains("web: raised the open-file limit"),
        "{}",
        v.all_logs()
    );
    drop(idle);
    drop(v);
}

/// Beyond `web.max_connections` a connection is closed at once and counted.
#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_max_connections_are_closed_and_counted() {
    let v =
        tokio::task::spawn_blocking(|| start("  listen: 127.0.0.1:0\n  max_connections: 3\n", &[]))
            .await
            .expect("start");
    let addr = authority(&v);
    tokio::task::spawn_blocking(move || {
        let held: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
            .collect();
        // One more: closed without an answer (the three may not all be taken yet: retry
        // until one is refused).
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let mut extra = std::net::TcpStream::connect(&addr).expect("connect");
            if closed_within(&mut extra, Duration::from_millis(500)) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a 4th connection stays open"
            );
        }
        drop(held);
    })
    .await
    .expect("connections");
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        // The three closed by this side free their slots.
        let ok = reqwest::get(format!("{}/healthz", v.base))
            .await
            .is_ok_and(|r| r.status().as_u16() == 200);
        if ok {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no slot freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused(&v.base, "max_connections").await >= 1.0);
    drop(v);
}

/// A token made by `openssl rand -base64 32` (with `+`, `/` and `=`) works in the live
/// stream's `?token=` once percent-encoded (as the dashboard sends it); left unencoded,
/// its `+` means a space and it does not match.
#[tokio::test(flavor = "multi_thread")]
async fn the_stream_takes_a_percent_encoded_base64_token() {
    const B64: &str = "q+Vx/3kZ0Hn8yW1e+T4m/RbL9oPz7cJ2uA6sD5fGh0E=";
    let v = tokio::task::spawn_blocking(|| {
        start(
            "  listen: 127.0.0.1:0\n  token: ${VIGIL_WEB_TOKEN}\n",
            &[("VIGIL_WEB_TOKEN", B64)],
        )
    })
    .await
    .expect("start");
    let base = v.base.clone();
    let encoded = B64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let resp = reqwest::Client::new()
        .get(format!("{base}/api/v1/stream?type=event&token={encoded}"))
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status().as_u16(), 200);
    drop(resp);
    assert_eq!(
        get(&format!("{base}/api/v1/stream?token={B64}"), None)
            .await
            .0,
        401
    );
    assert_eq!(
        get(&format!("{base}/api/v1/pipelines"), Some(B64)).await.0,
        200
    );
    let refused = metric_with(
        &base,
        Some(B64),
        "vigil_web_refused_total",
        Some(("reason", "token")),
    )
    .await;
    assert_eq!(refused, 1.0);
    drop(v);
}

/// The live stream outlives `web.request_timeout` (1 s here): it stays open past it and
/// still delivers what happens after.
#[tokio::test(flavor = "multi_thread")]
async fn the_live_stream_outlives_the_request_timeout() {
    use futures::StreamExt;
    let mut v = tokio::task::spawn_blocking(|| {
        start("  listen: 127.0.0.1:0\n  request_timeout: 1s\n", &[])
    })
    .await
    .expect("start");
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/stream?type=event", v.base))
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.bytes_stream();
    // Nothing happens for twice the request timeout: the stream neither ends nor fails.
    let quiet = tokio::time::timeout(Duration::from_secs(2), body.next()).await;
    assert!(quiet.is_err(), "the stream ended or sent: {quiet:?}");
    v.send(&[json!({"src": "10.9.9.9", "port": 22, "marker": "late-1", "timestamp": "2026-11-21T10:00:09Z"})]);
    let mut seen = String::new();
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
            if seen.contains("late-1") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{seen}");
    drop(v);
}
