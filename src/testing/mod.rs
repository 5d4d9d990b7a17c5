//! `vigil test`: pipeline test cases on a virtual clock.
//!
//! Cases live in a pipeline's `tests:` section or in `kind: test` documents of
//! `*.test.yaml` files beside the pipeline files. Each case feeds records to named sources
//! at relative times and checks what named stages emit or sinks receive. The stages are
//! the real ones, built from the pipeline's configuration; sources and sinks are not
//! started (the case stands in for them), so a case needs no PCE, no mail server and no
//! wall-clock time: a day of events runs in milliseconds.

pub mod fuzz;
pub mod replay;
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
use crate::diagnostic::{Diagnostic, codes, escape_data, escape_property, escape_text};
use crate::event::{AlertStatus, FieldPath};

/// The outcome of `vigil test`.
#[derive(Debug, Default)]
pub struct Report {
    /// What to print (the text format; see [`render`] for the others).
    pub text: String,
    /// Cases whose expectations all held.
    pub passed: usize,
    /// Cases that failed (an expectation, or the case could not run).
    pub failed: usize,
    /// Cases left out by `--run`.
    pub filtered: usize,
    /// Every case that ran, in order.
    pub cases: Vec<CaseResult>,
    /// Problems with the files themselves (the pipelines or the test files).
    pub diagnostics: Vec<Diagnostic>,
}

/// One case that ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    /// The pipeline it ran against.
    pub pipeline: String,
    /// The file it is written in.
    pub file: PathBuf,
    /// Where it starts in that file (line, from 1).
    pub line: u32,
    /// Its column.
    pub column: u32,
    /// Its name.
    pub name: String,
    /// How long it took to run, in seconds.
    pub seconds: f64,
    /// What did not hold (empty: it passed).
    pub failures: Vec<Failure>,
}

/// One expectation that did not hold (or why the case could not run).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    /// Where the expectation is written (the case's position when the case could not
    /// run): line, from 1.
    pub line: u32,
    /// Its column.
    pub column: u32,
    /// What was expected and what came.
    pub message: String,
}

/// Where a case and each of its expectations are written.
#[derive(Debug, Clone, Default)]
struct Spots {
    case: yaml::Pos,
    expect: Vec<yaml::Pos>,
}

/// Cases found for one pipeline.
struct Suite {
    pipeline: String,
    file: PathBuf,
    cases: Vec<TestCase>,
    spots: Vec<Spots>,
}

/// Loads the pipelines under `paths`, finds their cases, runs them.
pub fn run_paths(paths: &[PathBuf], env: Env) -> Result<Report, crate::config::LoadError> {
    run_matching(paths, env, None)
}

/// [`run_paths`], running only the cases whose name contains `run` (when given; as
/// `cargo test NAME` does).
pub fn run_matching(
    paths: &[PathBuf],
    env: Env,
    run: Option<&str>,
) -> Result<Report, crate::config::LoadError> {
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
    let mut suites: Vec<Suite> = Vec::new();
    for p in config
        .pipelines
        .iter()
        .filter(|p| !p.config.tests.is_empty())
    {
        suites.push(Suite {
            pipeline: p.config.name.clone(),
            file: p.file.clone(),
            cases: p.config.tests.clone(),
            spots: inline_spots(&p.file, &p.config.name, &p.config.tests),
        });
    }
    for file in test_files(paths) {
        let text = crate::config::load::read_file(&file)?;
        let (files, diags) = parse_test_file_at(&file, &text, &env, Some(&config));
        report.diagnostics.extend(diags);
        for (tf, spots) in files {
            let context = tf.context.clone();
            suites.push(Suite {
                pipeline: tf.pipeline,
                file: file.clone(),
                cases: tf
                    .tests
                    .into_iter()
                    .map(|mut c| {
                        if c.context.is_none() {
                            c.context = context.clone();
                        }
                        c
                    })
                    .collect(),
                spots,
            });
        }
    }
    crate::diagnostic::sort(&mut report.diagnostics);
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
        for (ci, case) in suite.cases.iter().enumerate() {
            if run.is_some_and(|r| !case.name.contains(r)) {
                report.filtered += 1;
                continue;
            }
            let spots = suite.spots.get(ci).cloned().unwrap_or_default();
            let began = std::time::Instant::now();
            let failures: Vec<(Option<usize>, String)> =
                match run_case(&config, pi, case, state.clone()) {
                    Ok(rec) => check_case_at(&config, pi, case, &rec),
                    Err(e) => vec![(None, format!("could not run: {e}"))],
                };
            let failures: Vec<Failure> = failures
                .into_iter()
                .map(|(j, message)| {
                    let at = j
                        .and_then(|j| spots.expect.get(j).copied())
                        .unwrap_or(spots.case);
                    Failure {
                        line: at.line,
                        column: at.col,
                        message,
                    }
                })
                .collect();
            if failures.is_empty() {
                report.passed += 1;
            } else {
                report.failed += 1;
            }
            report.cases.push(CaseResult {
                pipeline: suite.pipeline.clone(),
                file: suite.file.clone(),
                line: spots.case.line,
                column: spots.case.col,
                name: case.name.clone(),
                seconds: began.elapsed().as_secs_f64(),
                failures,
            });
        }
    }
    report.text = render(&report, Format::Text);
    Ok(report)
}

/// Output formats of `vigil test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Per pipeline, `ok` or `FAIL` per case with `file:line:col` of each failed
    /// expectation, and a summary.
    Text,
    /// GitHub Actions annotations (`::error file=..,line=..::`) for each failure, and the
    /// summary.
    Github,
    /// One JSON object: `{"passed", "failed", "filtered", "cases": [...], "diagnostics"}`.
    Json,
    /// JUnit XML (a `testsuite` per pipeline file, a `testcase` per case), for CI test
    /// reports.
    Junit,
}

/// The report in `format`.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Text => render_text(report),
        Format::Github => render_github(report),
        Format::Json => {
            let v = serde_json::json!({
                "passed": report.passed,
                "failed": report.failed,
                "filtered": report.filtered,
                "cases": report.cases.iter().map(|c| serde_json::json!({
                    "pipeline": c.pipeline,
                    "file": c.file,
                    "line": c.line,
                    "column": c.column,
                    "name": c.name,
                    "status": if c.failures.is_empty() { "passed" } else { "failed" },
                    "seconds": c.seconds,
                    "failures": c.failures,
                })).collect::<Vec<_>>(),
                "diagnostics": report.diagnostics,
            });
            format!("{v}\n")
        }
        Format::Junit => render_junit(report),
    }
}

fn summary(report: &Report) -> String {
    let mut s = format!("{} passed, {} failed", report.passed, report.failed);
    if report.filtered > 0 {
        let _ = write!(s, ", {} filtered out by --run", report.filtered);
    }
    s
}

fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let mut current: Option<(&str, &Path)> = None;
    for c in &report.cases {
        // Case names, file names and the values in failures come from files: printed
        // with their control characters escaped (see `escape_text`).
        let file = escape_text(&c.file.display().to_string()).into_owned();
        if current != Some((c.pipeline.as_str(), c.file.as_path())) {
            current = Some((c.pipeline.as_str(), c.file.as_path()));
            let _ = writeln!(out, "{} ({file})", c.pipeline);
        }
        if c.failures.is_empty() {
            let _ = writeln!(out, "  ok    {}", escape_text(&c.name));
            continue;
        }
        let _ = writeln!(
            out,
            "  FAIL  {} ({file}:{}:{})",
            escape_text(&c.name),
            c.line,
            c.column
        );
        for f in &c.failures {
            let mut lines = f.message.lines();
            let first = lines.next().unwrap_or_default();
            let _ = writeln!(
                out,
                "        {file}:{}:{}: {}",
                f.line,
                f.column,
                escape_text(first)
            );
            for line in lines {
                let _ = writeln!(out, "        {}", escape_text(line));
            }
        }
    }
    let _ = writeln!(out, "\n{}", summary(report));
    out
}

fn render_github(report: &Report) -> String {
    let mut out = String::new();
    for c in &report.cases {
        for f in &c.failures {
            let _ = writeln!(
                out,
                "::error file={},line={},col={},title={}::{}",
                escape_property(&c.file.display().to_string()),
                f.line,
                f.column,
                escape_property(&format!("vigil test: {} / {}", c.pipeline, c.name)),
                escape_data(&f.message)
            );
        }
    }
    let _ = writeln!(out, "{}", summary(report));
    out
}

/// `s` as XML text or attribute value: markup escaped, and characters XML 1.0 does not
/// allow (control characters other than tab and new lines) written as `\u{..}`.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

fn render_junit(report: &Report) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total_time: f64 = report.cases.iter().map(|c| c.seconds).sum();
    let _ = writeln!(
        out,
        "<testsuites name=\"vigil test\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{total_time:.3}\">",
        report.cases.len(),
        report.failed,
        report.filtered
    );
    // One suite per (pipeline, file), in the order they ran.
    let mut suites: Vec<((&str, &Path), Vec<&CaseResult>)> = Vec::new();
    for c in &report.cases {
        let key = (c.pipeline.as_str(), c.file.as_path());
        match suites.iter_mut().find(|(k, _)| *k == key) {
            Some((_, cases)) => cases.push(c),
            None => suites.push((key, vec![c])),
        }
    }
    for ((pipeline, file), cases) in suites {
        let failed = cases.iter().filter(|c| !c.failures.is_empty()).count();
        let time: f64 = cases.iter().map(|c| c.seconds).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" file=\"{}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" time=\"{time:.3}\">",
            xml(pipeline),
            xml(&file.display().to_string()),
            cases.len()
        );
        for c in cases {
            let file = c.file.display().to_string();
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" line=\"{}\" time=\"{:.3}\"",
                xml(&c.name),
                xml(pipeline),
                xml(&file),
                c.line,
                c.seconds
            );
            if c.failures.is_empty() {
                out.push_str("/>\n");
                continue;
            }
            out.push_str(">\n");
            let first = c.failures[0].message.lines().next().unwrap_or_default();
            let body: Vec<String> = c
                .failures
                .iter()
                .map(|f| format!("{file}:{}:{}: {}", f.line, f.column, f.message))
                .collect();
            let _ = writeln!(
                out,
                "      <failure message=\"{}\" type=\"expectation\">{}</failure>",
                xml(first),
                xml(&body.join("\n"))
            );
            out.push_str("    </testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Where the cases of the `tests:` section of pipeline `pipeline` in `file` are
/// written (the file is read again: the configuration keeps no positions).
fn inline_spots(file: &Path, pipeline: &str, cases: &[TestCase]) -> Vec<Spots> {
    let Ok(text) = crate::config::load::read_file(file) else {
        return Vec::new();
    };
    let parsed = yaml::parse(&text);
    let Some(doc) = parsed.documents.iter().find(|d| {
        matches!(d.at_pointer("/name").map(|n| &n.value),
            Some(yaml::NodeValue::Scalar(s)) if s.text == pipeline)
    }) else {
        return Vec::new();
    };
    spots_of(doc, "/tests", cases)
}

fn spots_of(doc: &yaml::Node, base: &str, cases: &[TestCase]) -> Vec<Spots> {
    cases
        .iter()
        .enumerate()
        .map(|(i, c)| Spots {
            case: doc.pos_at(&format!("{base}/{i}")),
            expect: (0..c.expect.len())
                .map(|j| doc.pos_at(&format!("{base}/{i}/expect/{j}")))
                .collect(),
        })
        .collect()
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
    let (files, diags) = parse_test_file_at(file, text, env, None);
    (files.into_iter().map(|(f, _)| f).collect(), diags)
}

/// Checks the `kind: test` files under `paths` (beside the files given, or under the
/// directories) for `vigil validate`: their structure, bounds and empty expectations,
/// and, with the pipelines of `config`, that each names a pipeline and its sources and
/// nodes. Test files given by name are checked too.
pub fn check_test_files(
    paths: &[PathBuf],
    env: &Env,
    config: Option<&Config>,
) -> Result<Vec<Diagnostic>, crate::config::LoadError> {
    let mut diags = Vec::new();
    for file in test_files(paths) {
        let text = crate::config::load::read_file(&file)?;
        diags.extend(parse_test_file_at(&file, &text, env, config).1);
    }
    Ok(diags)
}

/// [`parse_test_file`], with where each case and expectation is written; with `config`,
/// the pipeline each document names and its sources and nodes are checked.
fn parse_test_file_at(
    file: &Path,
    text: &str,
    env: &Env,
    config: Option<&Config>,
) -> (Vec<(TestFile, Vec<Spots>)>, Vec<Diagnostic>) {
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
                let pipeline =
                    config.and_then(|c| c.pipelines.iter().find(|p| p.config.name == tf.pipeline));
                // With its pipeline, `check_tests` checks each case's own bounds too.
                if pipeline.is_none() {
                    for (i, case) in tf.tests.iter().enumerate() {
                        let before = bounds.items.len();
                        case.check(&mut bounds);
                        for item in &mut bounds.items[before..] {
                            item.pointer = format!("/tests/{i}{}", item.pointer);
                        }
                    }
                }
                if let Some(cx) = &tf.context {
                    let probe = TestCase {
                        name: String::new(),
                        start: None,
                        context: Some(cx.clone()),
                        input: Vec::new(),
                        run_for: None,
                        expect: Vec::new(),
                    };
                    let mut found = crate::diagnostic::Problems::default();
                    probe.check(&mut found);
                    // Only what is about the context (the probe expects nothing).
                    bounds.items.extend(
                        found
                            .items
                            .into_iter()
                            .filter(|i| i.pointer.starts_with("/context")),
                    );
                }
                if let Some(config) = config {
                    match pipeline {
                        Some(p) => {
                            let mut named = p.config.clone();
                            named.tests = tf.tests.clone();
                            crate::config::load::check_tests(&named, &mut bounds);
                        }
                        None => {
                            let known = config.pipelines.iter().map(|p| p.config.name.as_str());
                            let hint = crate::config::schema::suggest(&tf.pipeline, known)
                                .map(|s| format!("; did you mean `{s}`?"))
                                .unwrap_or_default();
                            bounds.error(
                                "/pipeline",
                                codes::UNKNOWN_INPUT,
                                format!(
                                    "the tests are for pipeline `{}`, which is not defined{hint}",
                                    tf.pipeline
                                ),
                            );
                        }
                    }
                }
                let has_errors = bounds.has_errors();
                for item in bounds.items {
                    let pos = if item.at_key {
                        tree.key_pos_at(&item.pointer)
                    } else {
                        tree.pos_at(&item.pointer)
                    };
                    diags.push(match item.severity {
                        crate::diagnostic::Severity::Error => {
                            Diagnostic::error(file, pos, item.code, item.message)
                        }
                        crate::diagnostic::Severity::Warning => {
                            Diagnostic::warning(file, pos, item.code, item.message)
                        }
                    });
                }
                if !has_errors {
                    let spots = spots_of(&tree, "/tests", &tf.tests);
                    out.push((tf, spots));
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
    check_case_at(config, pipeline, case, rec)
        .into_iter()
        .map(|(_, m)| m)
        .collect()
}

/// [`check_case`], each failure with the index of its expectation.
fn check_case_at(
    config: &Config,
    pipeline: usize,
    case: &TestCase,
    rec: &Recorded,
) -> Vec<(Option<usize>, String)> {
    let mut out = Vec::new();
    for (j, exp) in case.expect.iter().enumerate() {
        for f in check_expectation(config, pipeline, exp, rec) {
            out.push((Some(j), f));
        }
    }
    out
}

/// Checks one expectation; one readable entry per failure.
fn check_expectation(
    config: &Config,
    pipeline: usize,
    exp: &Expectation,
    rec: &Recorded,
) -> Vec<String> {
    let pc = &config.pipelines[pipeline].config;
    let mut failures = Vec::new();
    let Some(events) = rec.of(&exp.node) else {
        failures.push(format!(
            "no node `{}` in pipeline `{}` (it has: {})",
            exp.node,
            pc.name,
            rec.names.join(", ")
        ));
        return failures;
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
