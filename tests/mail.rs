//! The `mail` sink end to end: `vigil run` (and `send-test`, `outbox`) against a real SMTP
//! server on loopback (mailin-embedded, tests/common/smtp.rs): plain, STARTTLS with a CA
//! file, AUTH, refused transactions, rejected recipients, a kill between storing and
//! sending, `group_wait`, templated recipients, and snapshots of the default mail.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::cli::{Project, jsonl, kill9, wait_for};
use common::smtp::{Behaviour, Options, Received, RefusingPort, SmtpServer};
use serde_json::{Value, json};

/// A value that appears only in the input records: it must reach both parts of the mail.
const MARKER: &str = "needle-7f3a91";
/// The password of the AUTH tests: it must never show up in vigil's output.
const PASSWORD: &str = "pw-Q7x!secret-2207";
const LIMIT: Duration = Duration::from_secs(30);

/// The settings of a project sending through `localhost:port`; `extra` adds lines to the
/// connection (indented by six spaces).
fn settings(port: u16, extra: &str) -> String {
    format!(
        "connections:\n  smtp:\n    relay:\n      host: localhost\n      port: {port}\n      from: \"vigil <vigil@example.com>\"\n      timeout: 5s\n{extra}"
    )
}

/// A pipeline turning each stdin record into one `high` alert per `group_by` group and
/// minute, sent by mail sink `p.mail` to `to`; `extra` adds lines to the sink (indented by
/// four spaces).
fn pipeline(group_by: &str, title: &str, to: &str, extra: &str) -> String {
    format!(
        r#"kind: pipeline
name: p
sources:
  in: {{type: stdin, time_field: timestamp}}
stages:
  burst:
    type: window_count
    inputs: [in]
    window: 1m
    threshold: 1
    group_by: [{group_by}]
    alert:
      severity: high
      title: "{title}"
sinks:
  mail:
    type: mail
    inputs: [burst]
    connection: relay
    to: [{to}]
    retry: {{initial: 100ms, max: 1s}}
{extra}"#
    )
}

fn simple_pipeline(extra: &str) -> String {
    pipeline(
        "src.ip",
        "Blocked traffic from {{group.src.ip}}",
        "\"soc@example.com\"",
        extra,
    )
}

/// One flow record from `ip` to `port`.
fn record(ip: &str, port: u16) -> Value {
    json!({
        "timestamp": "2026-11-21T10:00:00Z",
        "src": {"ip": ip},
        "dst": {"ip": "10.0.5.11"},
        "service": {"port": port, "proto": 6},
        "policy_decision": "blocked",
        "marker": MARKER,
    })
}

/// `vigil run` with `input` on stdin, which must succeed; (stdout, stderr).
fn run(p: &Project, input: &str) -> (String, String) {
    let out = p.run_with_input(input, LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "vigil run failed:\n{stderr}");
    (stdout, stderr)
}

/// A `vigil` command's (exit code, stdout, stderr).
fn vigil(p: &Project, args: &[&str]) -> (i32, String, String) {
    let out = p
        .command(args)
        .arg("--pipelines")
        .arg(p.pipelines())
        .output()
        .expect("vigil runs");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A received mail, parsed.
#[derive(Debug)]
struct Mail {
    subject: String,
    from: String,
    from_name: String,
    to: Vec<String>,
    message_id: String,
    /// `type/subtype` of every part, in order.
    content_types: Vec<String>,
    text: String,
    html: String,
}

fn parse(received: &Received) -> Mail {
    use mail_parser::{MessageParser, MimeHeaders as _, PartType};
    let raw = String::from_utf8_lossy(&received.data).into_owned();
    let msg = MessageParser::default()
        .parse(&received.data)
        .unwrap_or_else(|| panic!("not a mail:\n{raw}"));
    let from = msg.from().and_then(|a| a.first()).expect("From");
    let mut text = String::new();
    let mut html = String::new();
    let mut content_types = Vec::new();
    for part in &msg.parts {
        if let Some(ct) = part.content_type() {
            content_types.push(format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")));
        }
        match &part.body {
            PartType::Text(t) => text.push_str(t),
            PartType::Html(h) => html.push_str(h),
            _ => {}
        }
    }
    Mail {
        subject: msg.subject().expect("Subject").to_string(),
        from: from.address().expect("From address").to_string(),
        from_name: from.name().unwrap_or("").to_string(),
        to: msg
            .to()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.address())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        message_id: msg.message_id().expect("Message-ID").to_string(),
        content_types,
        text,
        html,
    }
}

/// The one message at the server after a run: exactly one arrived.
fn only_one(server: &SmtpServer) -> Received {
    let received = server.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    received.into_iter().next().expect("one")
}

#[test]
fn plain_smtp_delivers_the_raw_log_snapshot_with_both_parts() {
    let server = SmtpServer::start(Options::default());
    let p = Project::new(
        &settings(server.port, "      tls: none\n"),
        &simple_pipeline(""),
    );
    run(&p, &jsonl(&[record("10.0.0.1", 22)]));

    let got = only_one(&server);
    assert_eq!(got.from, "vigil@example.com");
    assert_eq!(got.to, ["soc@example.com"]);
    assert!(!got.tls, "a `tls: none` session must stay plain");
    assert_eq!(got.user, None);

    let mail = parse(&got);
    assert_eq!(mail.from, "vigil@example.com");
    assert_eq!(mail.from_name, "vigil");
    assert_eq!(mail.to, ["soc@example.com"]);
    assert_eq!(mail.subject, "[vigil] [HIGH] Blocked traffic from 10.0.0.1");
    assert_eq!(
        mail.content_types,
        ["multipart/alternative", "text/plain", "text/html"]
    );
    for (part, body) in [("text", &mail.text), ("html", &mail.html)] {
        for needle in [
            "Blocked traffic from 10.0.0.1",
            "10.0.0.1",
            "10.0.5.11",
            MARKER,
            "p / burst",
            "Raw events (the first 1)",
        ] {
            assert!(
                body.contains(needle),
                "{part} part lacks `{needle}`:\n{body}"
            );
        }
    }
    // The raw event is pretty-printed in the text part (and escaped in the HTML one).
    assert!(
        mail.text.contains(&format!("\"marker\": \"{MARKER}\"")),
        "{}",
        mail.text
    );
    assert!(
        mail.html
            .contains(&format!("&quot;marker&quot;: &quot;{MARKER}&quot;")),
        "{}",
        mail.html
    );
    // No top_n stage: the template leaves the section out.
    assert!(!mail.text.contains("Top "), "{}", mail.text);

    // Message-ID is <uuid@vigil>, the outbox message id.
    let sent = p.outbox();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["state"], "sent");
    assert_eq!(sent[0]["attempts"], 1);
    let id = sent[0]["id"].as_str().expect("id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    assert_eq!(mail.message_id, format!("{id}@vigil"));
    let answer = sent[0]["answer"].as_str().expect("answer");
    assert!(
        answer.contains("250") && answer.contains("queued as test-1"),
        "{answer}"
    );
}

#[test]
fn starttls_with_a_ca_file_delivers_over_tls() {
    let server = SmtpServer::start(Options {
        starttls: true,
        ..Options::default()
    });
    let p = Project::new(
        &settings(
            server.port,
            &format!(
                "      tls: starttls\n      ca_file: {}\n",
                server.ca_file.display()
            ),
        ),
        &simple_pipeline(""),
    );
    run(&p, &jsonl(&[record("10.0.0.2", 22)]));
    let got = only_one(&server);
    assert!(got.tls, "the session was not upgraded with STARTTLS");
    assert_eq!(
        parse(&got).subject,
        "[vigil] [HIGH] Blocked traffic from 10.0.0.2"
    );
    assert_eq!(p.outbox_in("sent").len(), 1);
}

#[test]
fn implicit_tls_delivers_from_the_first_byte() {
    let server = SmtpServer::start(Options {
        implicit_tls: true,
        ..Options::default()
    });
    let p = Project::new(
        &settings(
            server.port,
            &format!(
                "      tls: implicit\n      ca_file: {}\n",
                server.ca_file.display()
            ),
        ),
        &simple_pipeline(""),
    );
    run(&p, &jsonl(&[record("10.0.0.3", 22)]));
    let got = only_one(&server);
    assert_eq!(
        server.handshakes.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the connection did not start with a TLS handshake"
    );
    assert!(!got.tls, "no STARTTLS inside an implicit-TLS session");
    assert_eq!(
        parse(&got).subject,
        "[vigil] [HIGH] Blocked traffic from 10.0.0.3"
    );
    assert_eq!(p.outbox_in("sent").len(), 1);
}

#[test]
fn starttls_without_the_ca_is_refused_and_kept_pending() {
    let server = SmtpServer::start(Options {
        starttls: true,
        ..Options::default()
    });
    // tls_verify is on (the default) and the test CA is not trusted.
    let p = Project::new(
        &settings(server.port, "      tls: starttls\n"),
        &simple_pipeline("    drain_timeout: 1s\n"),
    );
    let (_, stderr) = run(&p, &jsonl(&[record("10.0.0.3", 22)]));
    assert!(server.received().is_empty());
    let all = p.outbox();
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["state"], "pending", "{all:#?}");
    assert!(all[0]["attempts"].as_u64().expect("attempts") >= 1);
    let reason = all[0]["last_error"].as_str().expect("last_error");
    assert_eq!(
        reason,
        format!(
            "localhost:{}: Connection error: invalid peer certificate: UnknownIssuer",
            server.port
        )
    );
    assert!(stderr.contains("send failed; will retry"), "{stderr}");
    assert!(
        stderr.contains("stopping with messages still to send"),
        "{stderr}"
    );

    // The same server with verification off: delivered (over TLS), with a warning.
    let lax = Project::new(
        &settings(
            server.port,
            "      tls: starttls\n      tls_verify: false\n",
        ),
        &simple_pipeline(""),
    );
    let (_, stderr) = run(&lax, &jsonl(&[record("10.0.0.3", 22)]));
    assert!(stderr.contains("tls_verify is off"), "{stderr}");
    let got = only_one(&server);
    assert!(got.tls);
    assert_eq!(lax.outbox_in("sent").len(), 1);
}

fn auth_project(server: &SmtpServer, password: &str) -> Project {
    Project::new(
        &settings(
            server.port,
            &format!(
                "      tls: starttls\n      ca_file: {}\n      username: alerts\n      password: ${{SMTP_PASSWORD}}\n",
                server.ca_file.display()
            ),
        ),
        &simple_pipeline(""),
    )
    .env("SMTP_PASSWORD", password)
}

#[test]
fn starttls_and_auth_log_in_with_the_password_from_the_environment() {
    let server = SmtpServer::start(Options {
        starttls: true,
        credentials: Some(("alerts".into(), PASSWORD.into())),
        ..Options::default()
    });
    let p = auth_project(&server, PASSWORD);
    let (stdout, stderr) = run(&p, &jsonl(&[record("10.0.0.4", 22)]));
    let got = only_one(&server);
    assert!(got.tls);
    assert_eq!(got.user.as_deref(), Some("alerts"));
    assert_eq!(
        server.logins(),
        [("alerts".to_string(), PASSWORD.to_string())]
    );
    assert_eq!(p.outbox_in("sent").len(), 1);
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));
}

#[test]
fn a_wrong_password_is_a_dead_letter_with_the_reason() {
    let server = SmtpServer::start(Options {
        starttls: true,
        credentials: Some(("alerts".into(), PASSWORD.into())),
        ..Options::default()
    });
    let wrong = "wrong-Zz8#pw-5531";
    let p = auth_project(&server, wrong);
    let (stdout, stderr) = run(&p, &jsonl(&[record("10.0.0.5", 22)]));
    assert!(server.received().is_empty());
    assert_eq!(server.logins(), [("alerts".to_string(), wrong.to_string())]);
    let dead = p.outbox_in("dead");
    assert_eq!(dead.len(), 1, "{:#?}", p.outbox());
    assert_eq!(dead[0]["attempts"], 1, "a refused login is not retried");
    let reason = dead[0]["last_error"].as_str().expect("last_error");
    assert_eq!(
        reason,
        format!(
            "localhost:{}: permanent error (535): Invalid credentials",
            server.port
        )
    );
    assert!(stderr.contains("moved to the dead letters"), "{stderr}");
    let (code, list, list_err) = vigil(&p, &["outbox", "list"]);
    assert_eq!(code, 0, "{list_err}");
    assert!(list.contains("dead") && list.contains("535"), "{list}");
    for out in [&stdout, &stderr, &list, &list_err] {
        assert!(!out.contains(wrong), "the password leaked:\n{out}");
    }
}

#[test]
fn refused_transactions_are_retried_and_delivered_once() {
    let server = SmtpServer::start(Options {
        behaviour: Behaviour {
            refuse_first: 2,
            ..Behaviour::default()
        },
        ..Options::default()
    });
    let p = Project::new(
        &settings(server.port, "      tls: none\n"),
        &simple_pipeline(""),
    );
    let (_, stderr) = run(&p, &jsonl(&[record("10.0.0.6", 22)]));
    let got = only_one(&server);
    assert_eq!(server.refused(), 2);
    assert_eq!(server.transactions(), 3);
    let sent = p.outbox_in("sent");
    assert_eq!(sent.len(), 1, "{:#?}", p.outbox());
    assert_eq!(sent[0]["attempts"], 3);
    assert_eq!(sent[0]["last_error"], Value::Null);
    // Every attempt carried the same message.
    let id = sent[0]["id"].as_str().expect("id");
    assert_eq!(parse(&got).message_id, format!("{id}@vigil"));
    let retries = stderr.matches("send failed; will retry").count();
    assert_eq!(retries, 2, "{stderr}");
    assert!(stderr.contains("451"), "{stderr}");
}

#[test]
fn a_rejected_recipient_is_a_dead_letter_that_can_be_retried_or_dropped() {
    let server = SmtpServer::start(Options {
        behaviour: Behaviour {
            reject: vec!["soc@example.com".into()],
            ..Behaviour::default()
        },
        ..Options::default()
    });
    // One notification group per address, so each is a message of its own.
    let p = Project::new(
        &settings(server.port, "      tls: none\n"),
        &simple_pipeline("    group_by: [group_key]\n"),
    );
    run(
        &p,
        &jsonl(&[record("10.0.0.7", 22), record("10.0.0.8", 22)]),
    );
    assert!(server.received().is_empty());
    assert_eq!(server.rejected().len(), 2);
    let dead = p.outbox_in("dead");
    assert_eq!(dead.len(), 2, "{:#?}", p.outbox());
    for d in &dead {
        assert_eq!(d["attempts"], 1, "a rejected recipient is not retried");
        let reason = d["last_error"].as_str().expect("last_error");
        assert_eq!(
            reason,
            format!(
                "localhost:{}: permanent error (550): Mailbox unavailable",
                server.port
            )
        );
    }
    let title = |m: &Value| m["alerts"][0]["title"].as_str().expect("title").to_string();
    let (retry, drop): (Vec<&Value>, Vec<&Value>) =
        dead.iter().partition(|m| title(m).contains("10.0.0.7"));
    let retry_id = retry[0]["id"].as_str().expect("id");
    let drop_id = drop[0]["id"].as_str().expect("id");

    // The recipient exists now: send the first dead letter again (by a prefix of its id).
    server.set(Behaviour::default());
    let (code, out, err) = vigil(&p, &["outbox", "retry", &retry_id[..8]]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(retry_id) && out.contains("pending again"),
        "{out}"
    );
    assert_eq!(p.outbox_in("pending").len(), 1);
    run(&p, "");
    let got = only_one(&server);
    let mail = parse(&got);
    assert_eq!(mail.message_id, format!("{retry_id}@vigil"));
    assert!(mail.subject.contains("10.0.0.7"), "{}", mail.subject);
    let sent = p.outbox_in("sent");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["id"], retry_id);
    assert_eq!(sent[0]["attempts"], 1, "retry starts the count afresh");
    assert_eq!(p.outbox_in("dead").len(), 1);

    // A sent message is no dead letter: neither retried nor dropped.
    assert_eq!(vigil(&p, &["outbox", "retry", retry_id]).0, 1);
    assert_eq!(vigil(&p, &["outbox", "drop", retry_id]).0, 1);

    // Drop the other one; it is gone, and dropping it again (or anything unknown) fails.
    let (code, out, err) = vigil(&p, &["outbox", "drop", drop_id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(drop_id) && out.contains("dropped"), "{out}");
    let left = p.outbox();
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_eq!(left[0]["id"], retry_id);
    let (code, _, err) = vigil(&p, &["outbox", "drop", drop_id]);
    assert_eq!(code, 1);
    assert!(err.contains("no dead letter"), "{err}");
    let (code, _, err) = vigil(&p, &["outbox", "drop", "no-such-message"]);
    assert_eq!(code, 1);
    assert!(err.contains("no dead letter `no-such-message`"), "{err}");
    // Nothing more was sent.
    assert_eq!(server.received().len(), 1);
}

#[test]
fn killed_between_storing_and_sending_delivers_exactly_once_after_restart() {
    // The server is down: its port hangs up on every connection (and is held, so no
    // other test's server can take it meanwhile).
    let down = RefusingPort::hold();
    let port = down.port;
    let p = Project::new(&settings(port, "      tls: none\n"), &simple_pipeline(""));
    let input = jsonl(&[record("10.0.0.9", 22)]);

    // First run: the server is down; the alert is stored and retried.
    let mut child = p.spawn_run();
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write");
    stdin.flush().expect("flush");
    wait_for("a pending message tried at least once", LIMIT, || {
        let pending = p.outbox_in("pending");
        pending.len() == 1 && pending[0]["attempts"].as_u64().unwrap_or(0) >= 1
    });
    kill9(&mut child);
    drop(stdin);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(stderr.contains("send failed; will retry"), "{stderr}");
    let pending = p.outbox_in("pending");
    assert_eq!(pending.len(), 1);
    let id = pending[0]["id"].as_str().expect("id").to_string();
    let reason = pending[0]["last_error"].as_str().expect("last_error");
    assert!(
        reason.starts_with(&format!(
            "localhost:{port}: response error: incomplete response"
        )),
        "{reason}"
    );

    // The server comes up; a run with nothing to read sends what was stored.
    let server = SmtpServer::start_on(down.release(), Options::default());
    run(&p, "");
    let got = only_one(&server);
    assert_eq!(parse(&got).message_id, format!("{id}@vigil"));
    let sent = p.outbox_in("sent");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["id"], id.as_str());
    assert!(sent[0]["attempts"].as_u64().expect("attempts") >= 2);

    // The same record again raises the same alert (same group, same window): this sink
    // already notified it, so nothing is sent.
    let (_, stderr) = run(&p, &input);
    assert!(
        stderr.contains("already notified by this sink"),
        "the alert was not raised again, so the dedupe was not exercised:\n{stderr}"
    );
    assert_eq!(server.received().len(), 1);
    assert_eq!(p.outbox().len(), 1);
}

#[test]
fn alerts_within_group_wait_go_out_as_one_mail() {
    let server = SmtpServer::start(Options::default());
    let p = Project::new(
        &settings(server.port, "      tls: none\n"),
        &simple_pipeline("    group_wait: 2s\n"),
    );
    // stdin stays open: the message must go out when group_wait ends, not at shutdown.
    let mut child = p.spawn_run();
    let mut stdin = child.stdin.take().expect("stdin");
    let ips = ["10.0.1.1", "10.0.1.2", "10.0.1.3"];
    let records: Vec<Value> = ips.iter().map(|ip| record(ip, 22)).collect();
    stdin.write_all(jsonl(&records).as_bytes()).expect("write");
    stdin.flush().expect("flush");
    let got = server.wait_received(1, LIMIT);
    drop(stdin);
    let out = child.wait_with_output().expect("vigil exits");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.received().len(), 1, "{:#?}", server.received());

    let mail = parse(&got[0]);
    assert!(
        mail.subject
            .starts_with("[vigil] [HIGH] Blocked traffic from 10.0.1.1"),
        "{}",
        mail.subject
    );
    assert!(mail.subject.ends_with("(+2 more)"), "{}", mail.subject);
    for ip in ips {
        let title = format!("Blocked traffic from {ip}");
        assert!(
            mail.text.contains(&title),
            "text lacks {title}:\n{}",
            mail.text
        );
        assert!(
            mail.html.contains(&title),
            "html lacks {title}:\n{}",
            mail.html
        );
    }
    let sent = p.outbox_in("sent");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["alerts"].as_array().expect("alerts").len(), 3);
}

#[test]
fn templated_recipients_route_each_alert() {
    let server = SmtpServer::start(Options::default());
    let p = Project::new(
        &settings(server.port, "      tls: none\n"),
        &pipeline(
            "service.port",
            "Blocked traffic → port {{group.service.port}} (übel)",
            "\"port-{{alert.group.service.port}}@example.com\"",
            "",
        ),
    );
    run(
        &p,
        &jsonl(&[record("10.0.2.1", 22), record("10.0.2.2", 3389)]),
    );
    let mut received = server.received();
    assert_eq!(received.len(), 2, "{received:#?}");
    received.sort_by(|a, b| a.to.cmp(&b.to));
    for (got, port) in received.iter().zip([22, 3389]) {
        let to = format!("port-{port}@example.com");
        assert_eq!(got.to, [to.as_str()]);
        // Non-ASCII in the subject and body travels encoded: the message itself is ASCII,
        // so a server without 8BITMIME takes it too.
        assert!(got.data.is_ascii());
        let mail = parse(got);
        assert_eq!(mail.to, [to.as_str()]);
        let title = format!("Blocked traffic → port {port} (übel)");
        assert_eq!(mail.subject, format!("[vigil] [HIGH] {title}"));
        assert!(mail.text.contains(&title), "{}", mail.text);
        assert!(mail.html.contains(&title), "{}", mail.html);
    }
}

#[test]
fn send_test_delivers_the_sample_alert_and_reports_the_answer() {
    let server = SmtpServer::start(Options::default());
    let p = Project::new(
        &settings(server.port, "      tls: none\n"),
        &simple_pipeline(""),
    );
    let (code, out, err) = vigil(&p, &["send-test", "p.mail"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("recipients: soc@example.com"), "{out}");
    assert!(out.contains("p.mail (mail): delivered"), "{out}");
    assert!(
        out.contains(&format!(
            "localhost:{}: 250 2.0.0 Ok: queued as test-1",
            server.port
        )),
        "{out}"
    );
    let got = only_one(&server);
    let mail = parse(&got);
    // Shaped like the sink's rule: its title template, its group from the example events.
    assert_eq!(
        mail.subject,
        "[vigil] [HIGH] Blocked traffic from 10.20.30.40"
    );
    assert!(
        mail.text.contains("Workloads:")
            && mail
                .text
                .contains("destination: db-01  [role=db, env=prod]"),
        "{}",
        mail.text
    );
    assert!(mail.html.contains("10.0.5.12"), "{}", mail.html);
    // send-test goes around the outbox.
    assert!(p.outbox().is_empty());

    // The server is down (hangs up at once): a transient failure, exit 1.
    let refusing = RefusingPort::hold();
    let down = Project::new(
        &settings(refusing.port, "      tls: none\n"),
        &simple_pipeline(""),
    );
    let (code, out, err) = vigil(&down, &["send-test", "mail"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("failed (transient, would be retried)"),
        "{out}"
    );
}

#[test]
fn default_mail_snapshot() {
    // The port is never contacted by a dry run.
    let p = Project::new(&settings(2525, "      tls: none\n"), &simple_pipeline(""));
    let (code, out, err) = vigil(&p, &["send-test", "p.mail", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("default_mail_dry_run", out);
}

/// `send-test --dry-run` of a shipped rule's mail sink renders an alert shaped like that
/// rule's: its title template, group, top-table columns and the pipeline's own example
/// event — not the generic blocked-SSH sample.
#[test]
fn send_test_dry_run_shows_an_alert_shaped_like_the_sinks_rule() {
    let shipped = |name: &str| {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("pipelines")
                .join(name),
        )
        .expect("a shipped pipeline")
    };
    let p = Project::new(
        &settings(2525, "      tls: none\n"),
        &shipped("agent-tampering.yaml"),
    );
    std::fs::write(
        p.pipelines().join("blocked.yaml"),
        shipped("blocked-traffic.yaml"),
    )
    .expect("write");
    for (file, text) in [("key", "k"), ("secret", "s")] {
        std::fs::write(p.path().join(file), text).expect("write");
    }
    let settings_file = p.pipelines().join("settings.yaml");
    let mut s = std::fs::read_to_string(&settings_file).expect("settings");
    s.push_str(&format!(
        "  pce:\n    pce:\n      url: https://pce.example:8443\n      org: 1\n      api_key_file: {}\n      api_secret_file: {}\n",
        p.path().join("key").display(),
        p.path().join("secret").display()
    ));
    std::fs::write(&settings_file, s).expect("write");

    let (code, out, err) = vigil(&p, &["send-test", "agent-tampering.mail", "--dry-run"]);
    assert_eq!(code, 0, "{err}{out}");
    assert!(
        out.contains("[vigil] [CRITICAL] agent.tampering on batch.lab.local"),
        "{out}"
    );
    assert!(
        out.contains("Rule:       agent-tampering / per_host"),
        "{out}"
    );
    assert!(out.contains("\"tamper_type\": \"firewall\""), "{out}");
    assert!(!out.contains("admin-port"), "{out}");

    let (code, out, err) = vigil(&p, &["send-test", "blocked-traffic.mail", "--dry-run"]);
    assert_eq!(code, 0, "{err}{out}");
    assert!(
        out.contains("blocked connections from 10.9.9.9 in 10m"),
        "{out}"
    );
    assert!(
        out.contains("Top dst.ip, service by num_connections"),
        "{out}"
    );
    assert!(out.contains("10.1.0.1 / 445/tcp"), "{out}");
}
