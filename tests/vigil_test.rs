//! `vigil test` through the binary: the shipped pipelines pass their own cases, and a
//! wrong expectation fails with a readable expected-vs-actual diff and exit 1.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vigil"))
}

fn vigil_test(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("test")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("PCE_URL")
        .output()
        .expect("vigil runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const PIPELINE: &str = r#"
kind: pipeline
name: ssh-burst
sources:
  flows: { type: stdin }
stages:
  ssh:
    type: filter
    inputs: [flows]
    match: { service.port: 22 }
  burst:
    type: window_count
    inputs: [ssh]
    window: 10m
    threshold: 3
    group_by: [src.ip]
    alert:
      severity: high
      title: "SSH burst from {{group.src.ip}}"
sinks:
  out: { type: stdout, inputs: [burst] }
"#;

/// Three SSH flows from one address in ten minutes: one alert.
const CASES: &str = r#"
kind: test
pipeline: ssh-burst
tests:
  - name: three flows fire once
    input:
      - { source: flows, at: 0s, repeat: 3, every: 1m, event: { src: { ip: 10.0.0.1 }, service: { port: 22 } } }
      - { source: flows, at: 0s, event: { src: { ip: 10.0.0.2 }, service: { port: 22 } } }
    expect:
      - node: out
        count: 1
        alerts:
          - { severity: high, title: "SSH burst from 10.0.0.1", value: 3, group.src.ip: 10.0.0.1 }
      - { node: ssh, events: 4 }
"#;

fn write_suite(dir: &std::path::Path, cases: &str) {
    std::fs::write(dir.join("ssh-burst.yaml"), PIPELINE).unwrap();
    std::fs::write(dir.join("ssh-burst.test.yaml"), cases).unwrap();
}

/// Issue 12's acceptance cases, as a user runs them: one alert per episode, reminders,
/// Alertmanager's grouping, inhibition — all on `vigil test`'s virtual clock.
#[test]
fn the_alert_lifecycle_examples_pass() {
    let (code, stdout, stderr) = vigil_test(&["examples/alert-lifecycle"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.ends_with("7 passed, 0 failed\n"), "{stdout}");
    for case in [
        "an hour over the threshold is one firing and one resolved alert, with two reminders",
        "each_crossing fires at 59 of 60 in an hour, then starts the window again",
        "alerts of one group within group_wait go out as one notification",
        "a new alert in a notified group waits for group_interval",
        "still firing and nothing new is a reminder after repeat_interval; the end is told once, by the webhook only",
        "a firing source mutes its target; once it resolves the target goes out at its next look",
    ] {
        assert!(
            stdout.contains(&format!("ok    {case}")),
            "{case}: {stdout}"
        );
    }
}

/// Issue 18's cases for the detection kinds beyond counting, as a user runs them.
#[test]
fn the_detection_examples_pass() {
    let (code, stdout, stderr) = vigil_test(&["examples/detections"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains(", 0 failed\n"), "{stdout}");
    for case in [
        "a value under the lower bound and one over the upper bound are two alerts",
        "the bounds are strict, and a missing value never alerts",
        "back inside the bounds resolves the episode",
        "a host quiet for five minutes fires once from a tick and resolves when it is back",
        "a host that keeps reporting never fires",
        "counts of 10, 10 and 20 per window make one up-spike",
        "counts of 10, 10 and 0 make one down-spike, raised from ticks",
        "a constant rate makes no spike either way",
        "a reference of 10 under min_reference 11 makes no spike",
        "flows that arrive five minutes after their time are no drop",
        "3 of 4 flows blocked is a share of 0.75 and alerts",
        "3 of 3 flows blocked are fewer than min_count and do not alert",
        "the share falling under the threshold resolves the episode",
        "blocked flows leave the window as it slides",
    ] {
        assert!(
            stdout.contains(&format!("ok    {case}")),
            "{case}: {stdout}"
        );
    }
}

/// Issue 18's acceptance cases for `distinct_count`, written as a `kind: test` file beside
/// its pipeline: four users, a repeat and a fifth fire once on the fifth; values 15 minutes
/// later start a fresh window.
#[test]
fn the_distinct_count_examples_pass() {
    let (code, stdout, stderr) = vigil_test(&["examples/distinct-count"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.ends_with("3 passed, 0 failed\n"), "{stdout}");
    for case in [
        "four users, a repeat and a fifth fire once, on the fifth",
        "values 15 minutes later start a fresh window",
        "failures without a user name are not names",
    ] {
        assert!(
            stdout.contains(&format!("ok    {case}")),
            "{case}: {stdout}"
        );
    }
}

/// Issue 18's acceptance cases for `new_term`, written as a `kind: test` file beside its
/// pipeline: 8 × (good, yes) then (bad, no) alert once, for (bad, no); a learn period
/// covering the first values keeps them quiet; a pair of the warm-up file does not
/// alert; `forget_after` alerts again after the gap.
#[test]
fn the_new_term_examples_pass() {
    let (code, stdout, stderr) = vigil_test(&["examples/new-term"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.ends_with("5 passed, 0 failed\n"), "{stdout}");
    for case in [
        "eight (good, yes) then (bad, no) alert once, for (bad, no)",
        "the learn period covers the first values, which never alert",
        "a pair of the warm-up file does not alert",
        "a pair not seen for forget_after alerts again when it comes back",
        "an event without both values is no pair",
    ] {
        assert!(
            stdout.contains(&format!("ok    {case}")),
            "{case}: {stdout}"
        );
    }
}

/// A wrong notification expectation fails with what was expected and what came.
#[test]
fn a_wrong_notification_expectation_says_what_came() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        r#"
kind: settings
connections: { smtp: { relay: { host: localhost, port: 25, tls: none, from: v@example.com } } }
---
kind: pipeline
name: p
sources: { flows: { type: stdin } }
stages:
  burst: { type: window_count, inputs: [flows], window: 10m, threshold: 2, group_by: [src.ip] }
sinks:
  mail: { type: mail, inputs: [burst], connection: relay, to: [a@example.com], group_wait: 30s }
tests:
  - name: told once
    input: [{ source: flows, at: 0s, repeat: 2, every: 1s, event: { src: { ip: 10.0.0.1 } } }]
    run_for: 5m
    expect:
      - node: mail
        notifications: [{ at: 30s, new: 2 }, { at: 5m, reminder: true }]
"#,
    )
    .unwrap();
    let (code, stdout, _) = vigil_test(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("node `mail`: expected 2 notifications, got 1")
            && stdout.contains("actual notification 1: at 31s: 1 new, 0 firing, 0 resolved")
            && stdout.contains("at - expected 30s, actual 31s")
            && stdout.contains("new - expected 2, actual 1"),
        "{stdout}"
    );
}

#[test]
fn the_shipped_pipelines_pass_their_own_cases() {
    let (code, stdout, stderr) = vigil_test(&["pipelines"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let last = stdout.lines().last().unwrap_or("");
    assert!(last.ends_with("passed, 0 failed"), "{stdout}");
    let passed: usize = last.split(' ').next().unwrap().parse().unwrap();
    assert!(passed >= 20, "every shipped pipeline has cases: {stdout}");
    for name in [
        "agent-tampering",
        "ven-offline",
        "missed-heartbeats",
        "api-auth-failures",
        "failed-logins",
        "blocked-traffic",
        "admin-ports",
        "port-scan",
        "traffic-spike",
        "first-app-connection",
        "exfiltration",
        "policy-changes",
        "pce-health",
        "host-cpu-high",
        "host-memory-high",
        "host-disk-io-high",
        "tetragon-network-tools",
        "tetragon-sensitive-files",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{name} ("))),
            "no cases ran for {name}:\n{stdout}"
        );
    }
}

/// The examples that carry cases pass them: the `report` stage's, Portflow's, the
/// auto-ban's.
#[test]
fn the_examples_pass_their_own_cases() {
    for (dir, name) in [
        ("examples/detections", "port-report"),
        ("examples/portflow", "portflow"),
        ("examples/auto-ban", "auto-ban"),
    ] {
        let (code, stdout, stderr) = vigil_test(&[dir]);
        assert_eq!(code, 0, "{dir}: stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{name} ("))),
            "no cases ran for {name}:\n{stdout}"
        );
    }
}

#[test]
fn a_passing_suite_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    write_suite(dir.path(), CASES);
    let (code, stdout, stderr) = vigil_test(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("  ok    three flows fire once"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("1 passed, 0 failed"),
        "{stdout}"
    );
}

#[test]
fn a_wrong_expectation_fails_with_a_readable_diff_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = CASES
        .replace("severity: high,", "severity: critical,")
        .replace("value: 3,", "value: 4,")
        .replace("events: 4", "events: 5")
        + r#"
  - name: must not fire, but does
    input:
      - { source: flows, at: 0s, repeat: 3, event: { src: { ip: 10.0.0.9 }, service: { port: 22 } } }
    expect:
      - { node: burst, count: 0 }
"#;
    write_suite(dir.path(), &wrong);
    let (code, stdout, _) = vigil_test(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    // Each failure names the file, line and column of its expectation (the case's own
    // position on its FAIL line): a terminal or an editor jumps there.
    let expected = "\
ssh-burst (DIR/ssh-burst.test.yaml)
  FAIL  three flows fire once (DIR/ssh-burst.test.yaml:5:5)
        DIR/ssh-burst.test.yaml:10:9: node `out`, alert 1 of 1 ([high] SSH burst from 10.0.0.1 (value 3, src.ip=10.0.0.1)):
          severity  - expected \"critical\"
                    + actual   \"high\"
          value     - expected 4
                    + actual   3
        DIR/ssh-burst.test.yaml:14:9: node `ssh`: expected 5 events (not alerts), got 4
  FAIL  must not fire, but does (DIR/ssh-burst.test.yaml:16:5)
        DIR/ssh-burst.test.yaml:20:9: node `burst`: expected 0 firing alerts, got 1
          actual alert 1: [high] SSH burst from 10.0.0.9 (value 3, src.ip=10.0.0.9)

0 passed, 2 failed
";
    let shown = stdout.replace(dir.path().to_str().unwrap(), "DIR");
    assert_eq!(shown, expected);
}

#[test]
fn a_test_naming_a_missing_node_fails_and_lists_the_nodes() {
    let dir = tempfile::tempdir().unwrap();
    write_suite(dir.path(), &CASES.replace("node: out", "node: outt"));
    let (code, stdout, stderr) = vigil_test(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    // Found when the files are read, at the node's position, before anything runs.
    assert!(
        stdout.contains("ssh-burst.test.yaml:10:15: error[unknown-input]: `outt` is not a node of pipeline `ssh-burst`; did you mean `out`?"),
        "{stdout}{stderr}"
    );
    assert!(stderr.contains("no tests ran"), "{stderr}");
}

/// Issue "Hostile input": `repeat: 1000000` took 5.7 GB. `repeat` is bounded at 10000,
/// and a case's events at 1000000 in all, each refused at its file position (in a test
/// file and in a pipeline's `tests:`), before anything runs.
#[test]
fn repeat_and_the_events_of_a_case_are_bounded_at_their_file_position() {
    let dir = tempfile::tempdir().unwrap();
    let huge = CASES.replace("repeat: 3,", "repeat: 1000000,");
    write_suite(dir.path(), &huge);
    let (code, stdout, stderr) = vigil_test(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(
            "ssh-burst.test.yaml:7:42: error[invalid-value]: `repeat: 1000000` is over the bound of 10000 copies"
        ),
        "{stdout}"
    );
    assert!(stderr.contains("no tests ran"), "{stderr}");

    // 101 inputs of 10000 copies each: every `repeat` is allowed, their sum is not.
    let mut inputs = String::new();
    for _ in 0..101 {
        inputs.push_str(
            "      - { source: flows, repeat: 10000, event: { src: { ip: 10.0.0.1 } } }\n",
        );
    }
    let pipeline = format!(
        "{PIPELINE}tests:\n  - name: too many\n    input:\n{inputs}    expect:\n      - {{ node: out, count: 1 }}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ssh-burst.yaml"), pipeline).unwrap();
    let (code, stdout, stderr) = vigil_test(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    // The 101st input (line 125: the pipeline, `tests:`, and 100 inputs before it) is
    // the one over the bound.
    assert!(
        stdout.contains(
            "ssh-burst.yaml:125:9: error[invalid-value]: with this input the case feeds more than 1000000 events (repeats included), the bound of one case: split it into several cases"
        ),
        "{stdout}"
    );
}

/// Issue "Hostile input": what `vigil test` prints from the files (a case's name, the
/// values in a failure) reaches the terminal with its escape sequences escaped.
#[test]
fn vigil_test_escapes_control_characters_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let cases = CASES
        .replace(
            "name: three flows fire once",
            "name: \"three \\e[2J flows\\n::error::x\"",
        )
        .replace(
            "title: \"SSH burst from 10.0.0.1\"",
            "title: \"\\e]0;pwned\\a\"",
        );
    write_suite(dir.path(), &cases);
    let (code, stdout, stderr) = vigil_test(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        !stdout.contains('\u{1b}') && !stdout.contains('\u{7}'),
        "{stdout:?}"
    );
    assert!(
        stdout.contains("  FAIL  three \\u{1b}[2J flows\\n::error::x ("),
        "{stdout}"
    );
    assert!(
        stdout.contains("- expected \"\\u001b]0;pwned\\u0007\""),
        "{stdout}"
    );
    assert!(stdout.lines().all(|l| !l.starts_with("::")), "{stdout}");
}

/// The suite of `wrong` cases (one failing, one passing) written to a new directory.
fn mixed_suite() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cases = CASES.replace("events: 4", "events: 5")
        + r#"
  - name: another address is quiet
    input:
      - { source: flows, at: 0s, event: { src: { ip: 10.0.0.3 }, service: { port: 22 } } }
    expect:
      - { node: burst, count: 0 }
"#;
    write_suite(dir.path(), &cases);
    dir
}

/// Issue 16: an `ip_list:` exclusion is tested as written, with the IP lists, labels and
/// workloads of the case's `context`; a late event (`time` before `at`) is not counted.
/// The same cases fail without the context's list and without `time`.
#[test]
fn context_ip_lists_and_late_events_are_tested_as_written() {
    let (code, stdout, stderr) = vigil_test(&["tests/fixtures/vigil-test"]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    for case in [
        "the approved scanners are excluded",
        "an address the list leaves out is not a scanner",
        "an event older than the window behind the newest is late, not counted",
    ] {
        assert!(stdout.contains(&format!("  ok    {case}\n")), "{stdout}");
    }
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "settings.yaml",
        "ssh-to-db.yaml",
        "ssh-to-db.test.yaml",
        "late-logins.yaml",
    ] {
        let text = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/vigil-test")
                .join(f),
        )
        .unwrap()
        .replace("Scanners: [", "Others: [")
        .replace(", time: 1m,", ",");
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    let (code, stdout, stderr) = vigil_test(&[dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("  FAIL  the approved scanners are excluded ("),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  FAIL  an event older than the window behind the newest is late, not counted ("
        ),
        "{stdout}"
    );
    // The misspelt list is reported by the stage, once per run of the stage.
    assert!(
        stderr.contains("`ip_list:Scanners` names no IP list of the PCE"),
        "{stderr}"
    );
}

#[test]
fn junit_output_is_read_by_an_xml_parser_with_a_testcase_per_case() {
    use quick_xml::events::Event;
    let dir = mixed_suite();
    let (code, stdout, stderr) = vigil_test(&["--format", "junit", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let mut reader = quick_xml::Reader::from_str(&stdout);
    let mut cases: Vec<(String, String, Option<String>)> = Vec::new();
    let mut suites = 0;
    let mut in_failure = false;
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |name: &str| {
                    e.try_get_attribute(name).expect("attribute").map(|a| {
                        a.normalized_value(quick_xml::XmlVersion::Explicit1_0)
                            .expect("text")
                            .into_owned()
                    })
                };
                match e.name().as_ref() {
                    b"testsuites" => {
                        assert_eq!(attr("tests").as_deref(), Some("2"));
                        assert_eq!(attr("failures").as_deref(), Some("1"));
                    }
                    b"testsuite" => suites += 1,
                    b"testcase" => cases.push((
                        attr("name").expect("name"),
                        format!(
                            "{}:{}",
                            attr("file").expect("file"),
                            attr("line").expect("line")
                        ),
                        None,
                    )),
                    b"failure" => {
                        in_failure = true;
                        let message = attr("message").expect("message");
                        cases.last_mut().expect("inside a testcase").2 = Some(message);
                    }
                    _ => {}
                }
            }
            Event::Text(t) if in_failure => {
                let body = t.decode().expect("text").into_owned();
                assert!(
                    body.contains("ssh-burst.test.yaml:14:9: node `ssh`"),
                    "{body}"
                );
                in_failure = false;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(suites, 1);
    let root = dir.path().to_str().unwrap();
    assert_eq!(
        cases,
        vec![
            (
                "three flows fire once".to_string(),
                format!("{root}/ssh-burst.test.yaml:5"),
                Some("node `ssh`: expected 5 events (not alerts), got 4".to_string())
            ),
            (
                "another address is quiet".to_string(),
                format!("{root}/ssh-burst.test.yaml:16"),
                None
            ),
        ]
    );
}

#[test]
fn github_and_json_formats_name_the_file_and_line_of_each_failure() {
    let dir = mixed_suite();
    let root = dir.path().to_str().unwrap();
    let (code, stdout, _) = vigil_test(&["--format", "github", root]);
    assert_eq!(code, 1);
    let annotation = stdout
        .lines()
        .find(|l| l.starts_with("::error "))
        .unwrap_or_else(|| panic!("no annotation: {stdout}"));
    assert!(
        annotation.starts_with(&format!("::error file={root}/ssh-burst.test.yaml,line=14,col=9,title=vigil test%3A ssh-burst / three flows fire once::node `ssh`: expected 5 events")),
        "{annotation}"
    );
    assert!(stdout.ends_with("1 passed, 1 failed\n"), "{stdout}");

    let (code, stdout, _) = vigil_test(&["--format", "json", root]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(
        (v["passed"].as_u64(), v["failed"].as_u64()),
        (Some(1), Some(1))
    );
    let failed = &v["cases"][0];
    assert_eq!(failed["status"], "failed");
    assert_eq!(
        (failed["line"].as_u64(), failed["column"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(failed["failures"][0]["line"], 14);
    assert_eq!(v["cases"][1]["status"], "passed");
}

/// `--run NAME` runs the cases whose name contains NAME; one matching nothing fails.
#[test]
fn run_selects_cases_by_a_part_of_their_name() {
    let dir = mixed_suite();
    let root = dir.path().to_str().unwrap();
    let (code, stdout, _) = vigil_test(&["--run", "quiet", root]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("  ok    another address is quiet"),
        "{stdout}"
    );
    assert!(!stdout.contains("three flows"), "{stdout}");
    assert!(
        stdout.ends_with("1 passed, 0 failed, 1 filtered out by --run\n"),
        "{stdout}"
    );
    let (code, _, stderr) = vigil_test(&["--run", "no such case", root]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no test case name contains `no such case`"),
        "{stderr}"
    );
}

/// An expectation that checks nothing cannot fail: refused at its position, by
/// `vigil test` and by `vigil validate` (which reads the `*.test.yaml` files too).
#[test]
fn an_expectation_that_checks_nothing_is_refused_where_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    write_suite(
        dir.path(),
        &CASES.replace("      - { node: ssh, events: 4 }", "      - { node: ssh }"),
    );
    let root = dir.path().to_str().unwrap();
    let want = "ssh-burst.test.yaml:14:9: error[invalid-value]: this expectation of node `ssh` checks nothing: give `count`, `alerts`, `resolved`, `updates`, `events` or `notifications` (`count: 0`: must not fire)";
    let (code, stdout, stderr) = vigil_test(&[root]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains(want), "{stdout}");
    let out = Command::new(bin())
        .args(["validate", root])
        .output()
        .expect("vigil runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(want), "{text}");
}

/// `vigil validate` checks test files: a test naming a node the pipeline lacks is an
/// error at its position, and the shipped fixtures are valid.
#[test]
fn validate_reads_test_files_beside_the_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    write_suite(dir.path(), &CASES.replace("node: ssh,", "node: shh,"));
    let root = dir.path().to_str().unwrap();
    for arg in [root.to_string(), format!("{root}/ssh-burst.test.yaml")] {
        let out = Command::new(bin())
            .args(["validate", &arg])
            .output()
            .expect("vigil runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{arg}: {text}");
        assert!(
            text.contains("ssh-burst.test.yaml:14:17: error[unknown-input]: `shh` is not a node of pipeline `ssh-burst`; did you mean `ssh`?"),
            "{arg}: {text}"
        );
    }
    let out = Command::new(bin())
        // The fixtures' PCE key files are not on this machine: the files alone are checked.
        .args([
            "validate",
            "--deny-warnings",
            "--no-env",
            "tests/fixtures/vigil-test",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("vigil runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
