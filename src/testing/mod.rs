//! `vigil test`: pipeline test cases on a virtual clock.
//!
//! Cases live in a pipeline's `tests:` section or in `kind: test` documents of
//! `*.test.yaml` files beside the pipeline files. Each case feeds records to named sources
//! at relative times and checks what named stages emit or sinks receive. The stages are
//! the real ones, built from the pipeline's configuration; sources and sinks are not
//! started (the case stands in for them), so a case needs no PCE, no mail server and no
//! wall-clock time: a day of events runs in milliseconds.

pub mod fuzz;
mod runner;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use crate::config::test_case::{
    Expectation, NotificationExpectation, TestCase, TestFile, TestInput, TestKind,
};
pub use runner::{DEFAULT_START, Recorded, RunError, run_case};

use crate::config::interpolate::{LineIndex, resolve};
use crate::config::load::files_under;
use crate::config::{Config, Env, LoadOptions, Loaded, load_paths, yaml};
use crate::diagnostic::{Diagnostic, codes, escape_text};
use crate::event::{AlertStatus, FieldPath};

/// The outcome of `vigil test`.
#[derive(Debug, Default)]
pub struct Report {
    /// What to print.
    pub text: String,
    /// Cases whose expectations all held.
    pub passed: usize,
    /// Cases that failed (an expectation, or the case could not run).
    pub failed: usize,
    /// Problems with the files themselves (the pipelines or the test files).
    pub diagnostics: Vec<Diagnostic>,
}

/// Cases found for one pipeline.
struct Suite {
    pipeline: String,
    file: PathBuf,
    cases: Vec<TestCase>,
}

/// Loads the pipelines under `paths`, finds their cases, runs them.
pub fn run_paths(paths: &[PathBuf], env: Env) -> Result<Report, crate::config::LoadError> {
    let opts = LoadOptions {
        env: env.clone(),
        ..Default::default()
    };
    let loaded: Loaded = load_paths(paths, &opts)?;
    let mut report = Report {
        diagnostics: loaded.diagnostics.clone(),
        ..Report::default()
    };
    let Some(config) = loaded.config else {
        return Ok(report);
    };
    let mut suites: Vec<Suite> = config
        .pipelines
        .iter()
        .filter(|p| !p.config.tests.is_empty())
        .map(|p| Suite {
            pipeline: p.config.name.clone(),
            file: p.file.clone(),
            cases: p.config.tests.clone(),
        })
        .collect();
    for file in test_files(paths) {
        let text = crate::config::load::read_file(&file)?;
        let (files, diags) = parse_test_file(&file, &text, &env);
        report.diagnostics.extend(diags);
        for tf in files {
            if !config
                .pipelines
                .iter()
                .any(|p| p.config.name == tf.pipeline)
            {
                report.diagnostics.push(Diagnostic::error(
                    &file,
                    yaml::Pos { line: 1, col: 1 },
                    codes::UNKNOWN_INPUT,
                    format!(
                        "the tests are for pipeline `{}`, which is not defined",
                        tf.pipeline
                    ),
                ));
                continue;
            }
            suites.push(Suite {
                pipeline: tf.pipeline,
                file: file.clone(),
                cases: tf.tests,
            });
        }
    }
    if report.diagnostics.iter().any(Diagnostic::is_error) {
        return Ok(report);
    }
    let state = std::env::temp_dir();
    for suite in &suites {
        let Some(pi) = config
            .pipelines
            .iter()
            .position(|p| p.config.name == suite.pipeline)
        else {
            continue;
        };
        // Case names, file names and the values in failures come from files: printed
        // with their control characters escaped (see `escape_text`).
        let _ = writeln!(
            report.text,
            "{} ({})",
            suite.pipeline,
            escape_text(&suite.file.display().to_string())
        );
        for case in &suite.cases {
            let failures = match run_case(&config, pi, case, state.clone()) {
                Ok(rec) => check_case(&config, pi, case, &rec),
                Err(e) => vec![format!("could not run: {e}")],
            };
            if failures.is_empty() {
                report.passed += 1;
                let _ = writeln!(report.text, "  ok    {}", escape_text(&case.name));
            } else {
                report.failed += 1;
                let _ = writeln!(report.text, "  FAIL  {}", escape_text(&case.name));
                for f in failures {
                    for line in f.lines() {
                        let _ = writeln!(report.text, "        {}", escape_text(line));
                    }
                }
            }
        }
    }
    let _ = writeln!(
        report.text,
        "\n{} passed, {} failed",
        report.passed, report.failed
    );
    Ok(report)
}

/// `*.test.yaml` files: beside each file given, or anywhere under each directory given.
fn test_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            // An unreadable directory was reported when the pipelines were loaded.
            out.extend(files_under(p, &is_test_file).unwrap_or_default());
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_test_file)
        {
            out.push(p.clone());
        } else {
            let stem = p.with_extension("");
            for ext in ["test.yaml", "test.yml"] {
                let beside = stem.with_extension(ext);
                if beside.is_file() {
                    out.push(beside);
                }
            }
        }
    }
    out.dedup();
    out
}

fn is_test_file(name: &str) -> bool {
    name.ends_with(".test.yaml") || name.ends_with(".test.yml")
}

/// Parses the `kind: test` documents of a test file.
pub fn parse_test_file(file: &Path, text: &str, env: &Env) -> (Vec<TestFile>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let parsed = yaml::parse(text);
    for e in &parsed.errors {
        diags.push(Diagnostic::error(file, e.pos, e.code, e.message.clone()));
    }
    if !parsed.errors.is_empty() {
        return (Vec::new(), diags);
    }
    let lines = LineIndex::new(text);
    let mut out = Vec::new();
    for tree in parsed.documents {
        let resolved = resolve(&tree, env, &lines);
        for e in &resolved.errors {
            diags.push(Diagnostic::error(file, e.pos, e.code, e.message.clone()));
        }
        if resolved.value.is_null() || !resolved.errors.is_empty() {
            continue;
        }
        match serde_path_to_error::deserialize::<_, TestFile>(&resolved.value) {
            Ok(tf) => {
                let mut bounds = crate::diagnostic::Problems::default();
                for (i, case) in tf.tests.iter().enumerate() {
                    let before = bounds.items.len();
                    case.check(&mut bounds);
                    for item in &mut bounds.items[before..] {
                        item.pointer = format!("/tests/{i}{}", item.pointer);
                    }
                }
                if bounds.items.is_empty() {
                    out.push(tf);
                }
                for item in bounds.items {
                    diags.push(Diagnostic::error(
                        file,
                        tree.pos_at(&item.pointer),
                        item.code,
                        item.message,
                    ));
                }
            }
            Err(e) => {
                let pointer = crate::config::load::serde_pointer(e.path());
                diags.push(Diagnostic::error(
                    file,
                    tree.pos_at(&pointer),
                    codes::INVALID_VALUE,
                    e.inner().to_string(),
                ));
            }
        }
    }
    (out, diags)
}

/// Checks a case's expectations; one readable entry per failure.
pub fn check_case(
    config: &Config,
    pipeline: usize,
    case: &TestCase,
    rec: &Recorded,
) -> Vec<String> {
    let pc = &config.pipelines[pipeline].config;
    let mut failures = Vec::new();
    for exp in &case.expect {
        let Some(events) = rec.of(&exp.node) else {
            failures.push(format!(
                "no node `{}` in pipeline `{}` (it has: {})",
                exp.node,
                pc.name,
                rec.names.join(", ")
            ));
            continue;
        };
        let all: Vec<&crate::event::Alert> = events.iter().filter_map(|e| e.alert()).collect();
        let others = events.len() - all.len();
        // The lifecycle: firing and resolved alerts; update reports are counted apart.
        let alerts: Vec<&Value> = events
            .iter()
            .filter(|e| e.alert().is_some_and(|a| !a.is_update()))
            .map(|e| e.data())
            .collect();
        let firing = all
            .iter()
            .filter(|a| a.status == AlertStatus::Firing && !a.is_update())
            .count();
        let resolved = all
            .iter()
            .filter(|a| a.status == AlertStatus::Resolved)
            .count();
        let updates = all.iter().filter(|a| a.is_update()).count();
        if let Some(want) = exp.count
            && want != firing
        {
            let mut msg = format!(
                "node `{}`: expected {want} firing alert{}, got {firing}",
                exp.node,
                plural(want),
            );
            for (i, a) in alerts.iter().enumerate().take(10) {
                let _ = write!(msg, "\n  actual alert {}: {}", i + 1, describe(a));
            }
            failures.push(msg);
        }
        for (what, want, got) in [
            ("resolved alert", exp.resolved, resolved),
            ("update report", exp.updates, updates),
        ] {
            if let Some(want) = want
                && want != got
            {
                failures.push(format!(
                    "node `{}`: expected {want} {what}{}, got {got}",
                    exp.node,
                    plural(want)
                ));
            }
        }
        if let Some(want) = exp.events
            && want != others
        {
            failures.push(format!(
                "node `{}`: expected {want} event{} (not alerts), got {others}",
                exp.node,
                plural(want)
            ));
        }
        if let Some(want) = &exp.notifications {
            failures.extend(check_notifications(exp, want, rec));
        }
        for (i, fields) in exp.alerts.iter().enumerate() {
            let Some(actual) = alerts.get(i) else {
                failures.push(format!(
                    "node `{}`: expected an alert {} with {}, but only {} alert{} came",
                    exp.node,
                    i + 1,
                    Value::Object(fields.clone().into_iter().collect()),
                    alerts.len(),
                    plural(alerts.len())
                ));
                continue;
            };
            let mut diffs = Vec::new();
            for (path, want) in fields {
                let got = FieldPath::parse(path)
                    .ok()
                    .and_then(|p| p.first(actual).cloned());
                let same = got.as_ref().is_some_and(|g| values_equal(want, g));
                if !same {
                    diffs.push((path.clone(), want.clone(), got));
                }
            }
            if !diffs.is_empty() {
                let width = diffs.iter().map(|d| d.0.len()).max().unwrap_or(0);
                let mut msg = format!(
                    "node `{}`, alert {} of {} ({}):",
                    exp.node,
                    i + 1,
                    alerts.len(),
                    describe(actual)
                );
                for (path, want, got) in diffs {
                    let got = got.map_or("(missing)".to_string(), |g| show(&g));
                    let want = show(&want);
                    let _ = write!(
                        msg,
                        "\n  {path:width$}  - expected {want}\n  {:width$}  + actual   {got}",
                        ""
                    );
                }
                failures.push(msg);
            }
        }
    }
    failures
}

/// Checks a delivering sink's notifications against `want`, in order.
fn check_notifications(
    exp: &Expectation,
    want: &[NotificationExpectation],
    rec: &Recorded,
) -> Vec<String> {
    let mut failures = Vec::new();
    let got = rec.notifications_of(&exp.node).unwrap_or_default();
    let line = |(at, m): &(
        crate::event::Timestamp,
        crate::sinks::delivery::dispatch::Planned,
    )| {
        let count = |c| m.alerts.iter().filter(|(x, _)| *x == c).count();
        use crate::sinks::delivery::dispatch::Change;
        format!(
            "at {}: {} new, {} firing, {} resolved{}",
            humantime::format_duration((*at - rec.start).to_std().unwrap_or_default()),
            count(Change::New) + m.omitted.new,
            count(Change::Firing) + m.omitted.firing,
            count(Change::Resolved) + m.omitted.resolved,
            if m.reminder { " (reminder)" } else { "" }
        )
    };
    if got.len() != want.len() {
        let mut msg = format!(
            "node `{}`: expected {} notification{}, got {}",
            exp.node,
            want.len(),
            plural(want.len()),
            got.len()
        );
        for (i, n) in got.iter().enumerate().take(20) {
            let _ = write!(msg, "\n  actual notification {}: {}", i + 1, line(n));
        }
        failures.push(msg);
    }
    for (i, (w, n)) in want.iter().zip(got).enumerate() {
        use crate::sinks::delivery::dispatch::Change;
        let (at, m) = n;
        let count = |c| m.alerts.iter().filter(|(x, _)| *x == c).count();
        let mut diffs: Vec<String> = Vec::new();
        if let Some(a) = w.at
            && rec.start + a.span() != *at
        {
            diffs.push(format!(
                "at - expected {}, actual {}",
                a,
                humantime::format_duration((*at - rec.start).to_std().unwrap_or_default())
            ));
        }
        for (name, want, got) in [
            ("new", w.new, count(Change::New) + m.omitted.new),
            ("firing", w.firing, count(Change::Firing) + m.omitted.firing),
            (
                "resolved",
                w.resolved,
                count(Change::Resolved) + m.omitted.resolved,
            ),
        ] {
            if let Some(want) = want
                && want != got
            {
                diffs.push(format!("{name} - expected {want}, actual {got}"));
            }
        }
        if let Some(r) = w.reminder
            && r != m.reminder
        {
            diffs.push(format!("reminder - expected {r}, actual {}", m.reminder));
        }
        for (j, fields) in w.alerts.iter().enumerate() {
            let Some((change, alert)) = m.alerts.get(j) else {
                diffs.push(format!(
                    "alert {} - expected one, the notification has {}",
                    j + 1,
                    m.alerts.len()
                ));
                continue;
            };
            let mut form = alert.to_value();
            if let Some(o) = form.as_object_mut() {
                o.insert("change".into(), change.as_str().into());
            }
            for (path, want) in fields {
                let got = FieldPath::parse(path)
                    .ok()
                    .and_then(|p| p.first(&form).cloned());
                if !got.as_ref().is_some_and(|g| values_equal(want, g)) {
                    diffs.push(format!(
                        "alert {} {path} - expected {}, actual {}",
                        j + 1,
                        show(want),
                        got.map_or("(missing)".to_string(), |g| show(&g))
                    ));
                }
            }
        }
        if !diffs.is_empty() {
            let mut msg = format!("node `{}`, notification {} ({}):", exp.node, i + 1, line(n));
            for d in diffs {
                let _ = write!(msg, "\n  {d}");
            }
            failures.push(msg);
        }
    }
    failures
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// One line about an alert: status, severity, title, value and group.
fn describe(alert: &Value) -> String {
    let s = |k: &str| alert.get(k).and_then(Value::as_str).unwrap_or("");
    let status = if s("status") == "resolved" {
        "resolved "
    } else {
        ""
    };
    format!(
        "{status}[{}] {} (value {}, {})",
        s("severity"),
        s("title"),
        show(alert.get("value").unwrap_or(&Value::Null)),
        s("group_key")
    )
}

/// A value as JSON, with whole numbers written without a fraction (`3`, not `3.0`).
fn show(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// JSON equality where numbers compare by value (`5` equals `5.0`).
pub fn values_equal(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
            _ => a == b,
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| values_equal(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => want == got,
    }
}
