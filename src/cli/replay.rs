//! `vigil replay`.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use vigil::testing::replay::{self, Input, Options, PceRange, Progress, ProgressUnit, Report};

use super::{ReplayFormat, load_for_use, print};

pub(super) fn replay(
    pipelines: PathBuf,
    files: Vec<Input>,
    pce: Option<PceRange>,
    format: ReplayFormat,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let loaded = load_for_use(pipelines)?;
    let Some(config) = loaded.config else {
        return Ok(ExitCode::from(1));
    };
    // A bar on a terminal only: piped output stays clean.
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    // Files count in bytes; a PCE range in the time it covers.
    let template = if pce.is_some() {
        "{spinner} replaying [{bar:40}] {percent}% of the range · {msg} · ETA {eta}"
    } else {
        "{spinner} replaying [{bar:40}] {bytes}/{total_bytes} · {msg} · ETA {eta}"
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .context("the progress bar's template")?
            .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let opts = Options {
        inputs: files,
        pce,
        peer_clock: None,
        out,
    };
    let outcome = replay::replay(&config, &opts, &mut |p: Progress| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        let what = match p.unit {
            ProgressUnit::Bytes => "records",
            ProgressUnit::Seconds => "events",
        };
        bar.set_message(format!("{} {what}", p.records));
    });
    bar.finish_and_clear();
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "vigil: replay: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let _ = writeln!(
        std::io::stderr(),
        "replayed {} records in {:.1} s",
        report.records,
        started.elapsed().as_secs_f64()
    );
    match format {
        ReplayFormat::Json => print(&format!(
            "{}\n",
            serde_json::to_string_pretty(&report).context("the report as JSON")?
        ))?,
        ReplayFormat::Table => print(&table(&report))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The report as tables: the span, what each pipeline alerted, the alerts in time order,
/// the events per node.
fn table(r: &Report) -> String {
    let mut s = String::new();
    let span = match (r.from, r.to) {
        (Some(a), Some(b)) => format!("from {} to {}", a.to_rfc3339(), b.to_rfc3339()),
        _ => "nothing to present".to_string(),
    };
    let _ = writeln!(
        s,
        "{} records ({} malformed, set aside), {span}",
        r.records, r.malformed
    );
    if let Some(p) = &r.pce {
        let _ = writeln!(
            s,
            "PCE `{}`: {} traffic slices ({} truncated), {} flows, {} audit events ({} unusable)",
            p.connection, p.slices, p.truncated_slices, p.flows, p.events, p.unusable_events
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<28} {:>8} {:>8} {:>9} {:>14}",
        "PIPELINE", "FIRED", "UPDATES", "RESOLVED", "NOTIFICATIONS"
    );
    for p in &r.pipelines {
        let (fired, updates, resolved) = replay::tally(&p.alerts);
        let sent: usize = p.notifications.iter().map(|n| n.notifications).sum();
        let _ = writeln!(
            s,
            "{:<28} {fired:>8} {updates:>8} {resolved:>9} {sent:>14}",
            p.pipeline
        );
    }
    // Episodes opening and ending (and one-off alerts); their update reports are counted
    // above and listed in the JSON form.
    let alerts: Vec<_> = r
        .pipelines
        .iter()
        .flat_map(|p| p.alerts.iter())
        .filter(|a| a.status == vigil::event::AlertStatus::Resolved || a.updates == 0)
        .collect();
    if !alerts.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<20} {:<32} {:<8} {:<8} TITLE",
            "WINDOW END", "PIPELINE.STAGE", "SEVERITY", "STATUS"
        );
        for a in alerts {
            let _ = writeln!(
                s,
                "{:<20} {:<32} {:<8} {:<8} {}",
                a.window.end.format("%Y-%m-%d %H:%M:%S"),
                format!("{}.{}", a.pipeline, a.stage),
                a.severity.to_string(),
                match a.status {
                    vigil::event::AlertStatus::Firing => "firing",
                    vigil::event::AlertStatus::Resolved => "resolved",
                },
                a.title
            );
        }
    }
    if r.alerts_left_out > 0 {
        let _ = writeln!(
            s,
            "… and {} more alerts (the first {} are listed)",
            r.alerts_left_out,
            replay::MAX_ALERTS
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<28} {:<24} {:<7} {:>12}",
        "PIPELINE", "NODE", "ROLE", "EVENTS"
    );
    for p in &r.pipelines {
        for n in &p.nodes {
            let _ = writeln!(
                s,
                "{:<28} {:<24} {:<7} {:>12}",
                p.pipeline,
                format!("{} ({})", n.node, n.kind),
                n.role,
                n.events
            );
        }
    }
    if !r.written.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "{} files written:", r.written.len());
        for f in &r.written {
            let _ = writeln!(s, "  {}", f.display());
        }
    }
    s
}
