//! `vigil check` against real peers: the PCE simulator (accepting or refusing the API
//! key), a real SMTP server and a closed port, a webhook receiver, secret files that
//! cannot be read, and a state_dir that cannot be created. One line per check, exit 1 on
//! any failure, nothing sent, no secret shown.

#![cfg(feature = "demo")]

mod common;

use std::process::{Child, Output};

use common::cli::{Project, pce_sim};
use common::smtp::{Options, SmtpServer};

/// The simulator's key and secret in these tests.
const KEY: &str = "api_check";
const SECRET: &str = "check-secret-never-shown";

/// A simulator accepting [`KEY`] / [`SECRET`]; killed on drop.
struct Sim {
    child: Child,
    url: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sim() -> Sim {
    let (child, url) = pce_sim(
        &[],
        &[("VIGIL_SIM_API_KEY", KEY), ("VIGIL_SIM_API_SECRET", SECRET)],
    );
    Sim { child, url }
}

/// A project whose PCE connection `lab` reads its key and secret from the files
/// `secrets/key` and `secrets/secret` (relative: to the directory vigil runs in) holding
/// `key` and `secret`, sending mail through `smtp_port`; `extra` adds settings.
fn project(sim: &Sim, key: &str, secret: &str, smtp_port: u16, extra: &str) -> Project {
    let settings = format!(
        "connections:\n  pce:\n    lab:\n      url: {url}\n      insecure_http: true\n      api_key_file: secrets/key\n      api_secret_file: secrets/secret\n  smtp:\n    relay:\n      host: 127.0.0.1\n      port: {smtp_port}\n      tls: none\n      from: vigil@example.com\n{extra}",
        url = sim.url,
    );
    let p = Project::new(
        &settings,
        "kind: pipeline\nname: p\nsources:\n  in: {type: stdin}\nsinks:\n  out: {type: stdout, inputs: [in]}\n",
    );
    let secrets = p.path().join("secrets");
    std::fs::create_dir(&secrets).expect("mkdir");
    std::fs::write(secrets.join("key"), format!("{key}\n")).expect("write");
    std::fs::write(secrets.join("secret"), format!("{secret}\n")).expect("write");
    p
}

fn check(p: &Project) -> (Option<i32>, String) {
    let out: Output = p
        .command(&["check", "--timeout", "5s"])
        .output()
        .expect("vigil check runs");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains(SECRET) && !errors.contains(SECRET),
        "the secret is shown:\n{text}\n{errors}"
    );
    (out.status.code(), text)
}

/// The line of the check named `what`.
fn line<'a>(text: &'a str, what: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no `{what}` line in:\n{text}"))
}

/// A free loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_reachable_passes_and_sends_nothing() {
    let sim = sim();
    let smtp = SmtpServer::start(Options::default());
    let (hook, hook_url) = common::cli::hook_receiver().await;
    let p = project(
        &sim,
        KEY,
        SECRET,
        smtp.port,
        &format!("  webhook:\n    soc:\n      url: {hook_url}\n"),
    );
    let (code, text) = tokio::task::spawn_blocking(move || {
        let out = check(&p);
        // The state directory was not made, let alone a database in it.
        assert!(!p.path().join("state").exists());
        out
    })
    .await
    .expect("check");
    assert_eq!(code, Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "ok    validate: 2 files, 0 warnings", "{text}");
    assert!(
        line(&text, "secret file connections.pce.lab.api_secret_file").starts_with("ok    ")
            && line(&text, "secret file connections.pce.lab.api_secret_file")
                .ends_with("/secret): readable, not empty"),
        "{text}"
    );
    assert!(
        line(&text, "pce lab").starts_with(&format!(
            "ok    pce lab ({}, org 1): the API key is accepted",
            sim.url
        )),
        "{text}"
    );
    assert_eq!(
        line(&text, "smtp relay"),
        format!(
            "ok    smtp relay (127.0.0.1:{}, no TLS): connected, EHLO, NOOP answered",
            smtp.port
        )
    );
    let webhook = line(&text, "webhook soc");
    assert!(
        webhook.starts_with("ok    webhook soc: http://127.0.0.1:"),
        "{text}"
    );
    assert!(
        webhook.ends_with("answered 404 to HEAD") || webhook.ends_with("answered 405 to HEAD"),
        "{text}"
    );
    assert!(
        line(&text, "state_dir").starts_with("ok    state_dir ")
            && line(&text, "state_dir").contains("does not exist yet; vigil run creates it in"),
        "{text}"
    );
    assert_eq!(*lines.last().expect("a summary"), "7 checks passed");
    // Nothing was sent: no mail, no webhook POST.
    assert_eq!(smtp.transactions(), 0);
    let posts = hook
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST")
        .count();
    assert_eq!(posts, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_key_and_a_closed_smtp_port_are_named() {
    let sim = sim();
    let port = closed_port();
    let p = project(&sim, KEY, "not-the-secret", port, "");
    let (code, text) = tokio::task::spawn_blocking(move || check(&p))
        .await
        .expect("check");
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(
        line(&text, "pce lab"),
        format!(
            "FAIL  pce lab ({}, org 1): 401 unauthorized: the PCE refuses the API key (check api_key/api_secret or their files; the key may have been deleted)",
            sim.url
        )
    );
    let smtp = line(&text, "smtp relay");
    assert!(
        smtp.starts_with(&format!(
            "FAIL  smtp relay (127.0.0.1:{port}, no TLS): 127.0.0.1:{port}: Connection error: Connection refused"
        )),
        "{text}"
    );
    assert!(line(&text, "secret file connections.pce.lab.api_key_file").starts_with("ok    "));
    assert_eq!(text.lines().last(), Some("2 of 6 checks failed"), "{text}");
    assert!(!text.contains("not-the-secret"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_secret_file_and_a_state_dir_under_a_file_fail() {
    let sim = sim();
    let smtp = SmtpServer::start(Options::default());
    let p = project(&sim, KEY, SECRET, smtp.port, "");
    // The secret file becomes a directory: unreadable even for root.
    let secret = p.path().join("secrets/secret");
    std::fs::remove_file(&secret).expect("remove");
    std::fs::create_dir(&secret).expect("mkdir");
    // state_dir below a regular file cannot be created, even by root.
    let blocker = p.path().join("file.txt");
    std::fs::write(&blocker, "x").expect("write");
    let settings = p.pipelines().join("settings.yaml");
    let text = std::fs::read_to_string(&settings).expect("read");
    let state_line = text
        .lines()
        .find(|l| l.starts_with("state_dir:"))
        .expect("state_dir");
    std::fs::write(
        &settings,
        text.replace(state_line, &format!("state_dir: {}/sub", blocker.display())),
    )
    .expect("write");
    let (code, text) = tokio::task::spawn_blocking(move || check(&p))
        .await
        .expect("check");
    assert_eq!(code, Some(1), "{text}");
    let secret_line = line(&text, "secret file connections.pce.lab.api_secret_file");
    assert!(
        secret_line.starts_with("FAIL  ") && secret_line.contains("cannot read it: "),
        "{text}"
    );
    // The PCE check says why it could not authenticate.
    assert!(line(&text, "pce lab").starts_with("FAIL  "), "{text}");
    assert_eq!(
        line(&text, "state_dir"),
        format!(
            "FAIL  state_dir {}/sub: {} is not a directory, so state_dir cannot be created under it",
            blocker.display(),
            blocker.display()
        )
    );
    assert!(line(&text, "smtp relay").starts_with("ok    "), "{text}");
}

#[test]
fn a_configuration_with_errors_fails_before_the_environment() {
    let p = Project::new(
        "connections:\n  pce:\n    lab:\n      url: http://pce.example.com\n      api_key: ${K}\n      api_secret: ${K}\n",
        "kind: pipeline\nname: p\nsources:\n  in: {type: stdin}\nsinks:\n  out: {type: stdout, inputs: [in]}\n",
    )
    .env("K", "x");
    let (code, text) = check(&p);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("error[insecure-url]"), "{text}");
    assert!(
        text.contains(
            "FAIL  validate: the pipeline files have errors (above)\nthe environment was not checked: fix the errors above first\n"
        ),
        "{text}"
    );
}

/// A PCE that accepts the connection but never answers: the check says it timed out
/// within `--timeout`, and does not hang.
#[test]
fn a_pce_that_never_answers_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            keep.lock().expect("lock").push(stream);
        }
    });
    let p = Project::new(
        &format!(
            "connections:\n  pce:\n    lab:\n      url: http://127.0.0.1:{port}\n      insecure_http: true\n      api_key: ${{K}}\n      api_secret: ${{K}}\n"
        ),
        "kind: pipeline\nname: p\nsources:\n  in: {type: stdin}\nsinks:\n  out: {type: stdout, inputs: [in]}\n",
    )
    .env("K", "x");
    let started = std::time::Instant::now();
    let out = p
        .command(&["check", "--timeout", "1s"])
        .output()
        .expect("vigil check runs");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(
        line(&text, "pce lab"),
        format!("FAIL  pce lab (http://127.0.0.1:{port}, org 1): timed out: no answer within 1s")
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(!held.lock().expect("lock").is_empty(), "it connected");
}

/// `https://` to a PCE that speaks plain HTTP: the handshake fails, named as TLS.
#[test]
fn a_tls_failure_is_named() {
    let sim = sim();
    let https = sim.url.replacen("http://", "https://", 1);
    let p = Project::new(
        &format!(
            "connections:\n  pce:\n    lab:\n      url: {https}\n      api_key: ${{K}}\n      api_secret: ${{K}}\n"
        ),
        "kind: pipeline\nname: p\nsources:\n  in: {type: stdin}\nsinks:\n  out: {type: stdout, inputs: [in]}\n",
    )
    .env("K", "x");
    let (code, text) = check(&p);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        line(&text, "pce lab").starts_with(&format!(
            "FAIL  pce lab ({https}, org 1): TLS: the handshake failed (check ca_file, or the url's host and port): "
        )),
        "{text}"
    );
}

/// LINE: the channel token is checked with `GET /v2/bot/info` (nothing is pushed); a
/// refused token is named.
#[tokio::test(flavor = "multi_thread")]
async fn a_line_token_is_checked_without_pushing() {
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let line_api = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/bot/info"))
        .and(header("authorization", "Bearer good-token"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"userId\":\"U1\"}"))
        .mount(&line_api)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/bot/info"))
        .respond_with(
            ResponseTemplate::new(401).set_body_string("{\"message\":\"Authentication failed\"}"),
        )
        .mount(&line_api)
        .await;
    let base = line_api.uri();
    let p = Project::new(
        &format!(
            "connections:\n  line:\n    ops:\n      token: ${{GOOD}}\n      base_url: {base}\n    old:\n      token: ${{BAD}}\n      base_url: {base}\n"
        ),
        "kind: pipeline\nname: p\nsources:\n  in: {type: stdin}\nsinks:\n  out: {type: stdout, inputs: [in]}\n",
    )
    .env("GOOD", "good-token")
    .env("BAD", "reissued-token");
    let (code, text) = tokio::task::spawn_blocking(move || check(&p))
        .await
        .expect("check");
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(
        line(&text, "line ops"),
        format!("ok    line ops ({base}): the channel access token is accepted (GET /v2/bot/info)")
    );
    assert_eq!(
        line(&text, "line old"),
        format!(
            "FAIL  line old ({base}): 401 unauthorized: LINE refuses the channel access token (check `token`/`token_file`; it may have been reissued)"
        )
    );
    assert!(!text.contains("good-token") && !text.contains("reissued-token"));
    let requests = line_api.received_requests().await.unwrap_or_default();
    assert!(
        requests.iter().all(|r| r.method.as_str() == "GET"),
        "nothing pushed"
    );
}
