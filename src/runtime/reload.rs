//! Reloading the pipelines directory into a running graph: what the file watcher, SIGHUP
//! and (later) the API all call.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{ReloadReport, Reloader};
use crate::config::{LoadOptions, load_paths};
use crate::diagnostic::Diagnostic;
use crate::event::{Alert, AlertStatus, AlertWindow, Sample, Severity, Timestamp};

/// What the last reload did, for logs, the dashboard and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadOutcome {
    /// When it ran.
    pub at: Timestamp,
    /// What triggered it (`file change`, `SIGHUP`, ...).
    pub trigger: String,
    /// Whether the new configuration took effect.
    pub ok: bool,
    /// What changed, when it took effect.
    pub report: Option<ReloadReport>,
    /// Why not, otherwise: every problem with its file:line:col.
    pub errors: Vec<String>,
}

/// Reloads `dir` into a running graph; counts and remembers the outcomes.
#[derive(Clone)]
pub struct ReloadDriver {
    dir: PathBuf,
    reloader: Reloader,
    clock: crate::time::SharedClock,
    state: Arc<Mutex<DriverState>>,
}

#[derive(Default)]
struct DriverState {
    last: Option<ReloadOutcome>,
    reloads: u64,
    failures: u64,
}

impl ReloadDriver {
    /// A driver reloading `dir` into the graph behind `reloader`; failures are published
    /// to the graph's `internal` sources.
    pub fn new(dir: PathBuf, reloader: Reloader, clock: crate::time::SharedClock) -> ReloadDriver {
        ReloadDriver {
            dir,
            reloader,
            clock,
            state: Arc::default(),
        }
    }

    /// The last outcome, and how many reloads ran and failed.
    pub fn status(&self) -> (Option<ReloadOutcome>, u64, u64) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.last.clone(), s.reloads, s.failures)
    }

    /// Reads and validates the whole directory; if anything is wrong the running graph is
    /// left as it is, the problems are logged (file:line:col) and a `vigil.reload_failed`
    /// alert is published; otherwise the graph is changed to the new configuration.
    pub async fn reload(&self, trigger: &str) -> ReloadOutcome {
        let dir = self.dir.clone();
        let loaded =
            tokio::task::spawn_blocking(move || load_paths(&[dir], &LoadOptions::default())).await;
        let at = self.clock.now();
        let outcome = match loaded {
            Err(e) => {
                self.failed(
                    at,
                    trigger,
                    vec![format!("the reload task failed: {e}")],
                    &[],
                )
                .await
            }
            Ok(Err(e)) => self.failed(at, trigger, vec![e.to_string()], &[]).await,
            Ok(Ok(loaded)) => match loaded.config {
                None => {
                    let errors: Vec<&Diagnostic> =
                        loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
                    let texts = errors.iter().map(|d| d.to_text()).collect();
                    self.failed(at, trigger, texts, &errors).await
                }
                Some(config) => match self.reloader.reload(&config).await {
                    Ok(report) => {
                        tracing::info!(
                            trigger,
                            added = ?report.added,
                            removed = ?report.removed,
                            changed = ?report.changed,
                            unchanged = report.unchanged,
                            state_kept = ?report.state_kept,
                            state_reset = ?report.state_reset,
                            aborted = ?report.aborted,
                            restart_needed = ?report.restart_needed,
                            "reloaded"
                        );
                        ReloadOutcome {
                            at,
                            trigger: trigger.into(),
                            ok: true,
                            report: Some(report),
                            errors: Vec::new(),
                        }
                    }
                    Err(e) => self.failed(at, trigger, vec![e.to_string()], &[]).await,
                },
            },
        };
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.reloads += 1;
        if !outcome.ok {
            s.failures += 1;
        }
        s.last = Some(outcome.clone());
        outcome
    }

    async fn failed(
        &self,
        at: Timestamp,
        trigger: &str,
        errors: Vec<String>,
        diagnostics: &[&Diagnostic],
    ) -> ReloadOutcome {
        for e in &errors {
            tracing::error!(trigger, "{e}");
        }
        tracing::error!(
            trigger,
            errors = errors.len(),
            "reload failed: the running pipelines are unchanged"
        );
        // Subscribers may be none: nobody asked to be told.
        self.reloader
            .internal_alerts()
            .await
            .publish(reload_failed_alert(at, &errors, diagnostics));
        ReloadOutcome {
            at,
            trigger: trigger.into(),
            ok: false,
            report: None,
            errors,
        }
    }
}

/// The `vigil.reload_failed` alert: the errors in its summary, each diagnostic as a
/// sample (`{file, line, column, code, message}`).
fn reload_failed_alert(at: Timestamp, errors: &[String], diagnostics: &[&Diagnostic]) -> Alert {
    let samples = diagnostics
        .iter()
        .take(20)
        .filter_map(|d| {
            serde_json::value::to_raw_value(&serde_json::json!({
                "file": d.file.display().to_string(),
                "line": d.line,
                "column": d.column,
                "code": d.code,
                "message": d.message,
            }))
            .ok()
            .map(|record| Sample {
                time: at,
                source: "vigil.reload".into(),
                record: record.into(),
            })
        })
        .collect();
    let window = AlertWindow { start: at, end: at };
    let group_key = format!("at={}", at.to_rfc3339());
    Alert {
        id: Alert::make_id("vigil", "reload_failed", &group_key, &window),
        status: AlertStatus::Firing,
        pipeline: "vigil".into(),
        stage: "reload_failed".into(),
        severity: Severity::High,
        title: format!(
            "vigil reload failed: {} error(s) in the pipeline files; the old pipelines keep running",
            errors.len()
        ),
        summary: errors.join("\n"),
        group: serde_json::json!({}),
        group_key,
        value: errors.len() as f64,
        threshold: 1.0,
        unit: None,
        estimate: None,
        window,
        first_seen: window.end,
        last_seen: window.end,
        updates: 0,
        episode: false,
        samples,
        top: None,
        fields: serde_json::Map::new(),
    }
}
