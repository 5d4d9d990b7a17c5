//! `vigil demo` end to end: on its own (no PCE, no mail server, nothing configured) it
//! produces alert mails through the real mail sink within a minute, and the API shows
//! the deliveries; `--scenario runtime` mails the Tetragon starter pack's alerts, from its
//! built-in intrusion and from the real Tetragon fixtures (`--tetragon-events`).

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

/// The subjects of the mails in `dir`, unfolded.
fn subjects(dir: &std::path::Path) -> Vec<String> {
    let Ok(d) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    d.filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|raw| {
            mail_parser::MessageParser::default()
                .parse(&raw[..])
                .and_then(|m| m.subject().map(str::to_string))
        })
        .collect()
}

/// Waits (up to a minute) for mails with each of `want` in their subjects; the subjects.
fn wait_for_subjects(dir: &std::path::Path, want: &[&str]) -> Vec<String> {
    let mut seen = Vec::new();
    common::cli::wait_for("the runtime mails", Duration::from_secs(60), || {
        seen = subjects(dir);
        want.iter().all(|w| seen.iter().any(|s| s.contains(w)))
    });
    seen
}

#[test]
fn the_runtime_scenario_mails_the_tetragon_packs_alerts() {
    let out = tempfile::tempdir().expect("temp");
    let (_demo, logs) = common::cli::spawn_demo_with(out.path(), &["--scenario", "runtime"]);
    // The built-in intrusion, a chapter every 80 simulated seconds (1.3 s at 60x): each rule
    // of the pack in turn, with its severity.
    let seen = wait_for_subjects(
        &out.path().join("mail"),
        &[
            "[HIGH] /usr/bin/curl executed on k8s-worker-1 in shop/frontend-",
            "[HIGH] /tmp/.x/kworkerd executed from a temporary directory",
            "[CRITICAL] /etc/shadow opened by /usr/bin/cat",
            "[CRITICAL] /tmp/.x/su became root",
        ],
    );
    // The benign executions raise nothing.
    assert!(
        !seen
            .iter()
            .any(|s| s.contains("python3") || s.contains("nginx")),
        "{seen:?}"
    );
    let log = logs.lock().unwrap().join("\n");
    assert!(log.contains("tetragon-network-tools"), "the pack runs");
    let export = std::fs::read_to_string(out.path().join("tetragon/tetragon.log")).unwrap();
    assert!(export.lines().count() > 4);
}

#[test]
fn the_runtime_scenario_replays_real_tetragon_events() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/real/tetragon/docs_use_cases_events.jsonl");
    let out = tempfile::tempdir().expect("temp");
    let (_demo, _logs) = common::cli::spawn_demo_with(
        out.path(),
        &[
            "--scenario",
            "runtime",
            "--tetragon-events",
            fixtures.to_str().unwrap(),
        ],
    );
    // The fixtures' throttled cgroup, /etc/passwd read by vi, and curl in the xwing pod.
    wait_for_subjects(
        &out.path().join("mail"),
        &[
            "Tetragon is dropping events for cgroup session-429.scope",
            "[CRITICAL] /etc/passwd opened by /bin/vi",
            "[HIGH] /usr/bin/curl executed on gke-john-632-default-pool-7041cac0-9s95 in default/xwing",
        ],
    );
}

/// The `.eml` files in `dir`.
fn mails(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .count()
    })
}

/// How far the demo in `out` has taken its simulated time past the real now (what it
/// saves in `state/demo-clock`).
fn simulated_lead(out: &std::path::Path) -> chrono::TimeDelta {
    std::fs::read_to_string(out.join("state/demo-clock"))
        .ok()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).ok())
        .map_or(chrono::TimeDelta::zero(), |t| {
            t.with_timezone(&chrono::Utc) - chrono::Utc::now()
        })
}

/// What one demo run showed: its banner's first lines, how long until it had read events,
/// alerted through its sinks and added a mail, and the page at its banner's first URL.
struct Run {
    banner: Vec<String>,
    took: Duration,
    page: String,
}

/// One `vigil demo` run in `out` at `scale` times real time; it goes on until it has
/// read events, sent alerts to its sinks and added a mail to those already in
/// `out/mail` (a deadline of 60 s fails the test), and until `until` holds.
fn one_run(out: &std::path::Path, scale: &str, until: impl Fn() -> bool) -> Run {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    let mail_dir = out.join("mail");
    let before = mails(&mail_dir);
    let started = std::time::Instant::now();
    let (child, _logs) = common::cli::spawn_logged(
        Command::new(common::cli::bin())
            .args(["--log-format", "json", "demo", "--listen", "127.0.0.1:0"])
            .args(["--time-scale", scale, "--out"])
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    );
    let mut demo = common::cli::KillOnDrop(child);
    let stdout = demo.0.stdout.take().expect("stdout");
    let mut banner = Vec::new();
    let mut lines = std::io::BufReader::new(stdout).lines();
    for _ in 0..3 {
        banner.push(lines.next().expect("a banner line").expect("text"));
    }
    // Keep reading (the alerts' lines), so the demo never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let url = banner[0]
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("the banner's first line names no URL: {banner:?}"))
        .to_string();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stats = || -> Value {
        rt.block_on(async {
            reqwest::get(format!("{url}api/v1/stats"))
                .await?
                .json::<Value>()
                .await
        })
        .unwrap_or(Value::Null)
    };
    common::cli::wait_for(
        "events read, alerts delivered to the sinks and a new mail",
        Duration::from_secs(60),
        || {
            let s = stats();
            s["events_read"].as_u64().unwrap_or(0) > 0
                && s["events_delivered"].as_u64().unwrap_or(0) > 0
                && mails(&mail_dir) > before
        },
    );
    let took = started.elapsed();
    // The real-time path: the simulator's syslog export reaches the `pce-syslog` pipeline.
    let syslog_read = || -> u64 {
        rt.block_on(async {
            reqwest::get(format!("{url}api/v1/pipelines"))
                .await?
                .json::<Value>()
                .await
        })
        .ok()
        .and_then(|v| {
            v["pipelines"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == "pce-syslog")?["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["name"] == "pce")?["events_out"]
                .as_u64()
        })
        .unwrap_or(0)
    };
    common::cli::wait_for(
        "events over the simulator's syslog export",
        Duration::from_secs(60),
        || syslog_read() > 0,
    );
    common::cli::wait_for("the run's own condition", Duration::from_secs(60), &until);
    let page = rt
        .block_on(async { reqwest::get(&url).await?.text().await })
        .unwrap_or_else(|e| panic!("the dashboard at {url}: {e}"));
    Run { banner, took, page }
}

/// A second demo in the same directory alerts as the first did — although the first took
/// its simulated time well past the real now, so its saved positions (events read, traffic
/// slices) lie in the future of a clock that would start again at the real now — and each
/// banner names the dashboard first, with where mail goes and how to stop.
#[test]
fn a_second_demo_in_the_same_directory_mails_within_a_minute_too() {
    let out = tempfile::tempdir().expect("temp");
    let dir = out.path();
    // The first run goes on until its simulated time is 70 minutes ahead (a user watching
    // the demo for a while at 60x).
    let first = one_run(dir, "300", || {
        simulated_lead(dir) > chrono::TimeDelta::minutes(70)
    });
    let second = one_run(dir, "60", || true);
    for (run, r) in [("first", first), ("second", second)] {
        let banner = &r.banner;
        assert!(banner[0].contains("dashboard"), "{banner:?}");
        assert!(
            r.page.contains("<html"),
            "the {run} run's dashboard: {}",
            r.page
        );
        let mail_dir = dir.join("mail");
        assert!(
            banner[1].contains(&format!("{}", mail_dir.display())),
            "{banner:?}"
        );
        assert!(banner[2].contains("Ctrl-C"), "{banner:?}");
        assert!(
            r.took < Duration::from_secs(60),
            "the {run} run: {:?}",
            r.took
        );
    }
    // Every mail names what it alerts on: no subject ends at "on", "from", "by" or ":"
    // (a rule that fired on an event without the host, or rendered an empty one).
    let mut subjects = Vec::new();
    for entry in std::fs::read_dir(dir.join("mail")).expect("mails") {
        let raw = std::fs::read(entry.expect("entry").path()).expect("read");
        let mail = mail_parser::MessageParser::default()
            .parse(&raw[..])
            .expect("a parsable mail");
        subjects.push(mail.subject().unwrap_or_default().to_string());
    }
    let nameless: Vec<&String> = subjects
        .iter()
        .filter(|s| {
            let s = s.split(" (+").next().unwrap_or(s).trim_end();
            [" on", " from", " by", ":"]
                .iter()
                .any(|end| s.ends_with(end))
        })
        .collect();
    assert!(
        nameless.is_empty(),
        "mails that name nothing: {nameless:?} (of {})",
        subjects.len()
    );
}
