//! What `vigil` writes to standard error when it goes to a file, a pipe or the journal:
//! plain text (colour only for a terminal, and never with `NO_COLOR`), each error once.

mod common;

use common::cli::{Project, bin};
use std::process::{Command, Output, Stdio};

const PIPELINE: &str = "kind: pipeline\nname: p\nsources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: stdout\n    inputs: [in]\n";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_plain(text: &str) {
    assert!(!text.contains("\x1b["), "colour codes in a pipe:\n{text:?}");
}

/// `vigil run` through a pipe, a port of its API already taken: the warning is there,
/// once, in plain text, and the run goes on.
#[test]
fn logs_into_a_pipe_carry_no_colour_and_a_busy_port_is_said_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address");
    let p = Project::new(&format!("web:\n  listen: {addr}\n"), PIPELINE);
    let out = p
        .command(&["run", "--no-watch", "--pipelines"])
        .arg(p.pipelines())
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("vigil runs");
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert_plain(&text);
    assert!(text.contains(" INFO "), "{text}");
    assert_eq!(
        text.matches(&format!("cannot listen on {addr}")).count(),
        1,
        "{text}"
    );
}

/// A fatal error is one line: `error: ...` for a person, one JSON record for a log
/// collector; its cause is not repeated.
#[test]
fn a_fatal_error_is_said_once_in_either_log_format() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-dir");
    let run = |format: &str| {
        Command::new(bin())
            .args(["--log-format", format, "run", "--pipelines"])
            .arg(&missing)
            .stdin(Stdio::null())
            .output()
            .expect("vigil runs")
    };
    let out = run("text");
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert_plain(&text);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [format!(
            "error: cannot read {}: No such file or directory (os error 2)",
            missing.display()
        )],
        "{text}"
    );

    let out = run("json");
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let record: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON record");
    assert_eq!(record["level"], "ERROR");
    assert_eq!(
        record["fields"]["message"],
        format!(
            "cannot read {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

/// A secret file that is not there stops the run with one line naming the setting and
/// the file.
#[test]
fn a_missing_secret_file_is_said_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("missing-password");
    let p = Project::new(
        &format!(
            "connections:\n  smtp:\n    relay:\n      host: 127.0.0.1\n      port: 2525\n      tls: none\n      allow_plaintext_auth: true\n      from: vigil@example.com\n      username: vigil\n      password_file: {}\n",
            secret.display()
        ),
        &format!(
            "{PIPELINE}  mail:\n    type: mail\n    inputs: [in]\n    connection: relay\n    to: [soc@example.com]\n"
        ),
    );
    let out = p
        .command(&["run", "--no-watch", "--pipelines"])
        .arg(p.pipelines())
        .stdin(Stdio::null())
        .output()
        .expect("vigil runs");
    let text = stderr(&out);
    assert!(!out.status.success(), "{text}");
    assert_plain(&text);
    assert_eq!(
        text.matches(&secret.display().to_string()).count(),
        1,
        "{text}"
    );
}

/// On a terminal the logs are coloured, unless `NO_COLOR` is set (the terminal is the
/// pseudo-terminal of util-linux's `script`; skipped where it is missing).
#[test]
fn a_terminal_gets_colour_unless_no_color_is_set() {
    if Command::new("script")
        .arg("--version")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        return;
    }
    let p = Project::new("", PIPELINE);
    let line = format!(
        "{} run --no-watch --pipelines {} </dev/null",
        bin().display(),
        p.pipelines().display()
    );
    let on_terminal = |no_color: Option<&str>| {
        let mut c = Command::new("script");
        c.args(["-qec", &line, "/dev/null"])
            .current_dir(p.path())
            .stdin(Stdio::null())
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let out = c.output().expect("script runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_terminal(None);
    assert!(coloured.contains("vigil running"), "{coloured}");
    assert!(
        coloured.contains("\x1b["),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = on_terminal(Some("1"));
    assert!(plain.contains("vigil running"), "{plain}");
    assert_plain(&plain);
    // An empty NO_COLOR is as good as none (no-color.org).
    assert!(on_terminal(Some("")).contains("\x1b["));
}
