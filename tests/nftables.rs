//! The `nftables_ban` sink against the real `nft` and the kernel.
//!
//! The tests that ban run inside a user and network namespace of their own (`unshare
//! -rn`: loopback only, nothing of the machine's firewall touched): the test binary runs
//! itself again there (`VIGIL_NETNS_INNER` set), brings `lo` up, starts a TCP listener
//! and `vigil run`, and checks what a user sees — connects from a banned address time
//! out while others connect, a TTL passes, the allow list holds, `vigil ban` works, a
//! dry run changes nothing. Where the kernel refuses namespaces (or `nft` is missing) the
//! outer test says why and passes; the JSON-level tests are unit tests of
//! `src/sinks/nftables_ban/ruleset.rs`.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long anything is waited for.
const DEADLINE: Duration = Duration::from_secs(30);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vigil")
}

/// Polls `f` until it holds, failing with `what` after [`DEADLINE`].
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The addresses in vigil's set `set` with the seconds each has left.
fn live_set(set: &str) -> Vec<(String, Option<u64>)> {
    let out = Command::new(common::netns::nft())
        .args(["-j", "list", "set", "inet", "vigil", set])
        .output()
        .expect("nft runs");
    if !out.status.success() {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("nft's JSON");
    let mut found = Vec::new();
    for o in v["nftables"].as_array().into_iter().flatten() {
        for e in o["set"]["elem"].as_array().into_iter().flatten() {
            match e {
                Value::String(s) => found.push((s.clone(), None)),
                other => found.push((
                    other["elem"]["val"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    other["elem"]["expires"].as_u64(),
                )),
            }
        }
    }
    found
}

fn banned(addr: &str) -> bool {
    let set = if addr.contains(':') {
        "banned6"
    } else {
        "banned4"
    };
    live_set(set).iter().any(|(a, _)| a == addr)
}

/// Whether a TCP connect from `src` to `to` succeeds within 800 ms: `Some(true)`
/// connected, `Some(false)` timed out (dropped), `None` another error.
fn connects_from(src: &str, to: SocketAddr) -> Option<bool> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{src}:0").parse().expect("address"))
            .expect("bind to the source address");
        match tokio::time::timeout(Duration::from_millis(800), socket.connect(to)).await {
            Ok(Ok(_)) => Some(true),
            Err(_) => Some(false),
            // Refused or unreachable: neither connected nor dropped.
            Ok(Err(_)) => None,
        }
    })
}

/// A TCP listener on 127.0.0.1 that accepts (and drops) every connection.
fn listener() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = l.local_addr().expect("address");
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    addr
}

/// A running `vigil run` over a pipelines directory, stopped when dropped.
struct Vigil {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    base: String,
    pipes: PathBuf,
}

impl Vigil {
    fn start(pipes: &Path) -> Vigil {
        let mut child = Command::new(bin())
            .args(["--log-format", "json", "run", "--no-watch", "--pipelines"])
            .arg(pipes)
            .env("VIGIL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vigil starts");
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
        wait_for("the web server", || {
            let logs = logs.lock().unwrap();
            let found = logs.iter().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["fields"]["message"] == "web: listening")
                    .then(|| v["fields"]["address"].as_str().map(str::to_string))
                    .flatten()
            });
            if let Some(addr) = found {
                base = format!("http://{addr}");
                true
            } else {
                false
            }
        });
        Vigil {
            child,
            logs,
            base,
            pipes: pipes.to_path_buf(),
        }
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// `vigil ban ARGS` against this vigil: (exit code, stdout, stderr).
    fn ban(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(bin())
            .arg("ban")
            .args(args)
            .arg("--url")
            .arg(&self.base)
            .arg("--pipelines")
            .arg(&self.pipes)
            .output()
            .expect("vigil ban runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// GET `path` of the API, as JSON (`null` when it does not answer).
    fn get(&self, path: &str) -> Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let url = format!("{}{path}", self.base);
        rt.block_on(async move {
            match reqwest::get(url).await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            }
        })
    }

    /// The alert whose group key names `addr`, once it has a delivery in `state`.
    fn delivery_of(&self, addr: &str, state: &str) -> Value {
        let mut found = Value::Null;
        wait_for(&format!("the delivery of the alert for {addr}"), || {
            let alerts = self.get("/api/v1/alerts");
            found = alerts["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| {
                    a["group_key"]
                        .as_str()
                        .is_some_and(|k| k.ends_with(&format!("={addr}")))
                })
                .and_then(|a| {
                    a["deliveries"]
                        .as_array()
                        .and_then(|d| d.iter().find(|d| d["state"] == state))
                        .cloned()
                })
                .unwrap_or(Value::Null);
            !found.is_null()
        });
        found
    }

    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipelines directory: settings, and a pipeline reading `auth.jsonl` that alerts on
/// every source address (`src_ip`) at once and bans it with `sink` (the sink's options).
fn pipelines(dir: &Path, sink: &str) -> PathBuf {
    let pipes = dir.join("pipelines");
    std::fs::create_dir_all(&pipes).expect("mkdir");
    std::fs::write(
        pipes.join("settings.yaml"),
        format!(
            "kind: settings\nstate_dir: {}\nweb:\n  listen: 127.0.0.1:0\n",
            dir.join("state").display()
        ),
    )
    .expect("write");
    std::fs::write(
        pipes.join("guard.yaml"),
        format!(
            "kind: pipeline\nname: guard\nsources:\n  auth:\n    type: file\n    path: {auth}\n    poll_interval: 100ms\nstages:\n  failures:\n    type: window_count\n    inputs: [auth]\n    window: 10m\n    threshold: 1\n    group_by: [src_ip]\n    alert: {{severity: high, title: \"login failures from {{{{group.src_ip}}}}\"}}\nsinks:\n  ban:\n    type: nftables_ban\n    inputs: [failures]\n    nft: {nft}\n{sink}",
            auth = dir.join("auth.jsonl").display(),
            nft = common::netns::nft(),
        ),
    )
    .expect("write");
    pipes
}

/// Appends a failed login from `addr` to the file the pipeline reads.
fn failed_login(dir: &Path, addr: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("auth.jsonl"))
        .expect("open");
    writeln!(
        f,
        "{{\"src_ip\": \"{addr}\", \"user\": \"root\", \"outcome\": \"failure\"}}"
    )
    .expect("write");
}

/// An alert bans its address: connects from it time out while another address
/// connects; the allow list holds; a ban by hand with a 2 s TTL expires; a repeat keeps
/// the longer TTL; `max_bans` refuses past its bound; `vigil ban remove` lifts a ban; a
/// restart reconciles the store with the live sets and does not repeat the rules.
#[test]
fn bans_drop_traffic_until_their_ttl_passes() {
    if !common::netns::in_namespace("bans_drop_traffic_until_their_ttl_passes") {
        return;
    }
    let target = listener();
    assert_eq!(
        connects_from("127.0.0.2", target),
        Some(true),
        "before any ban"
    );
    let dir = tempfile::tempdir().expect("temp");
    let pipes = pipelines(
        dir.path(),
        "    ttl: 1h\n    dry_run: false\n    max_bans: 4\n    allow: [127.0.0.5, 10.0.0.0/8]\n",
    );
    let vigil = Vigil::start(&pipes);
    // At start the table is made, with its two rules.
    wait_for("vigil's table", || {
        Command::new(common::netns::nft())
            .args(["list", "chain", "inet", "vigil", "input"])
            .output()
            .is_ok_and(|o| o.status.success())
    });

    failed_login(dir.path(), "127.0.0.2");
    failed_login(dir.path(), "127.0.0.5");
    wait_for("127.0.0.2 in banned4", || banned("127.0.0.2"));
    assert_eq!(
        connects_from("127.0.0.2", target),
        Some(false),
        "a banned address's connect times out"
    );
    assert_eq!(
        connects_from("127.0.0.3", target),
        Some(true),
        "another address still connects"
    );
    let (_, left) = live_set("banned4")
        .into_iter()
        .find(|(a, _)| a == "127.0.0.2")
        .expect("in the set");
    assert!(left.is_some_and(|s| s > 3500 && s <= 3600), "{left:?}");

    // The alert's delivery says what was done, and shows the ban.
    let d = vigil.delivery_of("127.0.0.2", "sent");
    assert_eq!(d["answer"], "banned 127.0.0.2 for 1h", "{d}");
    assert_eq!(d["bans"][0]["address"], "127.0.0.2", "{d}");
    assert_eq!(d["bans"][0]["state"], "active", "{d}");
    // The allowed address: not banned, and its delivery says why.
    let d = vigil.delivery_of("127.0.0.5", "sent");
    assert_eq!(
        d["answer"], "refused: 127.0.0.5 is in the allow list (127.0.0.5/32)",
        "{d}"
    );
    assert!(!banned("127.0.0.5"));
    assert_eq!(connects_from("127.0.0.5", target), Some(true));

    // By hand, 2 s: it expires in the kernel, and the store records it.
    let (code, out, err) = vigil.ban(&["add", "127.0.0.4", "--ttl", "2s"]);
    assert_eq!((code, out.trim()), (0, "banned 127.0.0.4 for 2s"), "{err}");
    assert!(banned("127.0.0.4"));
    wait_for("127.0.0.4 to leave banned4", || !banned("127.0.0.4"));
    assert_eq!(connects_from("127.0.0.4", target), Some(true), "expired");
    wait_for("the expiry recorded", || {
        let (_, out, _) = vigil.ban(&["list", "--all"]);
        out.lines()
            .any(|l| l.starts_with("127.0.0.4 ") && l.contains("expired") && l.contains("(ttl)"))
    });

    // A repeat keeps the longer TTL.
    let (code, out, _) = vigil.ban(&["add", "127.0.0.6", "--ttl", "1h"]);
    assert_eq!((code, out.trim()), (0, "banned 127.0.0.6 for 1h"));
    let (code, out, _) = vigil.ban(&["add", "127.0.0.6", "--ttl", "10m"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("127.0.0.6 already banned for 59m")
            && out.trim().ends_with("(not less than 10m); kept"),
        "{out}"
    );
    let (code, out, _) = vigil.ban(&["add", "127.0.0.6", "--ttl", "2h"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("banned 127.0.0.6 for 2h (its ban had 59m"),
        "{out}"
    );
    let left = live_set("banned4")
        .into_iter()
        .find(|(a, _)| a == "127.0.0.6")
        .and_then(|(_, l)| l);
    assert!(left.is_some_and(|s| s > 7000), "{left:?}");

    // IPv6 goes to banned6; past max_bans (4 active) a ban is refused.
    let (code, out, _) = vigil.ban(&["add", "2001:db8::7"]);
    assert_eq!((code, out.trim()), (0, "banned 2001:db8::7 for 1h"));
    assert!(live_set("banned6").iter().any(|(a, _)| a == "2001:db8::7"));
    let (code, _, _) = vigil.ban(&["add", "127.0.0.10"]);
    assert_eq!(code, 0);
    let (code, out, _) = vigil.ban(&["add", "127.0.0.11"]);
    assert_eq!(code, 1, "refused");
    assert_eq!(
        out.trim(),
        "refused: 127.0.0.11 not banned: max_bans (4) bans are active"
    );
    assert!(!banned("127.0.0.11"));
    let (code, _, err) = vigil.ban(&["add", "10.1.2.3"]);
    assert_eq!(code, 1, "in the allow list: {err}");
    let (code, _, err) = vigil.ban(&["add", "not-an-address"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("`not-an-address` is not an IP address"),
        "{err}"
    );

    // Lifting a ban.
    let (code, out, _) = vigil.ban(&["list"]);
    assert_eq!(code, 0);
    assert!(
        out.lines().any(|l| l.starts_with("127.0.0.2 ")
            && l.contains("active")
            && l.contains("by guard.ban")),
        "{out}"
    );
    let (code, out, _) = vigil.ban(&["remove", "127.0.0.2"]);
    assert_eq!((code, out.trim()), (0, "ban of 127.0.0.2 removed"));
    assert!(!banned("127.0.0.2"));
    assert_eq!(connects_from("127.0.0.2", target), Some(true), "lifted");
    let (code, _, err) = vigil.ban(&["remove", "127.0.0.2"]);
    assert_eq!(code, 1);
    assert!(err.contains("127.0.0.2 is not banned"), "{err}");
    let d = vigil.delivery_of("127.0.0.2", "sent");
    assert_eq!(d["bans"][0]["state"], "removed", "{d}");

    // vigil stops; meanwhile an element is added by hand and one is deleted.
    vigil.stop();
    let nft_cmd = |cmd: &str| {
        let ok = Command::new(common::netns::nft())
            .arg(cmd)
            .status()
            .expect("nft");
        assert!(ok.success(), "{cmd}");
    };
    nft_cmd("add element inet vigil banned4 { 127.0.0.9 timeout 1h }");
    nft_cmd("delete element inet vigil banned4 { 127.0.0.10 }");
    let vigil = Vigil::start(&pipes);
    wait_for("the reconciliation", || {
        let (_, out, _) = vigil.ban(&["list", "--all"]);
        out.lines().any(|l| {
            l.starts_with("127.0.0.9 ") && l.contains("active") && l.contains("by nftables")
        }) && out
            .lines()
            .any(|l| l.starts_with("127.0.0.10 ") && l.contains("vanished"))
    });
    // The rules were not written again.
    let chain = Command::new(common::netns::nft())
        .args(["-j", "list", "chain", "inet", "vigil", "input"])
        .output()
        .expect("nft");
    let chain: Value = serde_json::from_slice(&chain.stdout).expect("JSON");
    let rules = chain["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o.get("rule").is_some())
        .count();
    assert_eq!(rules, 2, "{chain}");
    assert_eq!(
        connects_from("127.0.0.9", target),
        Some(false),
        "the adopted ban holds"
    );
    drop(vigil);
}

/// `dry_run: true` (the default) changes nothing: no table, no element; the delivery and
/// `vigil ban add` say what would have been applied.
#[test]
fn a_dry_run_changes_nothing() {
    if !common::netns::in_namespace("a_dry_run_changes_nothing") {
        return;
    }
    let target = listener();
    let dir = tempfile::tempdir().expect("temp");
    let pipes = pipelines(dir.path(), "    ttl: 1h\n");
    let vigil = Vigil::start(&pipes);
    failed_login(dir.path(), "127.0.0.2");
    let d = vigil.delivery_of("127.0.0.2", "sent");
    let answer = d["answer"].as_str().unwrap_or_default();
    assert_eq!(
        answer,
        "dry run: would apply {\"nftables\":[{\"add\":{\"element\":{\"family\":\"inet\",\"table\":\"vigil\",\"name\":\"banned4\",\"elem\":[{\"elem\":{\"val\":\"127.0.0.2\",\"timeout\":3600,\"expires\":null,\"comment\":null,\"counter\":null}}]}}}]}",
    );
    assert!(vigil.logs().contains("dry run: would ban"), "logged");
    let (code, out, _) = vigil.ban(&["add", "127.0.0.3", "--ttl", "5m"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("dry run: would apply {\"nftables\""),
        "{out}"
    );
    let ruleset = Command::new(common::netns::nft())
        .args(["list", "ruleset"])
        .output()
        .expect("nft");
    assert_eq!(
        String::from_utf8_lossy(&ruleset.stdout).trim(),
        "",
        "nothing in nftables"
    );
    assert_eq!(connects_from("127.0.0.2", target), Some(true));
    let (_, out, _) = vigil.ban(&["list"]);
    assert!(out.contains("dry run"), "{out}");
    assert!(!out.contains("127.0.0.2"), "no ban recorded: {out}");
}

/// `nft` missing (or refused) is a clear error on the alert's delivery, retried by the
/// sink's retry policy; another pipeline goes on. Needs no namespace: nothing is applied.
#[test]
fn a_missing_nft_is_an_error_on_the_delivery_and_retried() {
    let dir = tempfile::tempdir().expect("temp");
    let pipes = pipelines(
        dir.path(),
        "    dry_run: false\n    retry: {initial: 100ms, max: 200ms}\n",
    );
    // The sink's `nft` is a program that does not exist.
    let guard = pipes.join("guard.yaml");
    let text = std::fs::read_to_string(&guard).expect("read").replace(
        &format!("nft: {}", common::netns::nft()),
        "nft: /nonexistent/nft",
    );
    std::fs::write(&guard, text).expect("write");
    std::fs::write(
        pipes.join("other.yaml"),
        format!(
            "kind: pipeline\nname: other\nsources:\n  auth:\n    type: file\n    path: {}\n    poll_interval: 100ms\nsinks:\n  out:\n    type: file\n    inputs: [auth]\n    path: {}\n",
            dir.path().join("auth.jsonl").display(),
            dir.path().join("out.jsonl").display()
        ),
    )
    .expect("write");
    let vigil = Vigil::start(&pipes);
    failed_login(dir.path(), "192.0.2.7");
    let mut d = Value::Null;
    wait_for("a retried delivery", || {
        d = vigil.delivery_of("192.0.2.7", "pending");
        d["attempts"].as_i64().unwrap_or(0) >= 2
    });
    let error = d["last_error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("cannot run `/nonexistent/nft`") && error.contains("install nftables"),
        "{d}"
    );
    wait_for("the other pipeline's output", || {
        std::fs::read_to_string(dir.path().join("out.jsonl")).is_ok_and(|t| t.contains("192.0.2.7"))
    });
    assert!(
        vigil.logs().contains("cannot read or set up nftables"),
        "the start-up reconciliation says why"
    );
}
