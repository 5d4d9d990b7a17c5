//! Sink kinds. Each lives in its own folder; the list of kinds is in
//! [`crate::components`].

pub mod delivery;
pub mod file;
pub mod line;
pub mod mail;
pub mod nftables_ban;
pub mod stdout;
pub mod webhook;

use futures::FutureExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use std::sync::Arc;

use indexmap::IndexMap;

use crate::node::internal_event::{EventNotEncoded, InternalEvent};
use crate::node::{Input, Message, NodeResult};

/// What the delivering sinks (mail, LINE, webhook) of a run share, built from the
/// settings before any node: the connections they send through, by name, and the
/// engine's inhibition rules.
#[derive(Debug, Default)]
pub struct DeliveryServices {
    /// `connections: smtp:`.
    pub smtp: IndexMap<String, mail::SmtpConnectionConfig>,
    /// `connections: line:`.
    pub line: IndexMap<String, line::LineConnectionConfig>,
    /// `connections: webhook:`.
    pub webhook: IndexMap<String, webhook::WebhookConnectionConfig>,
    /// The inhibition rules and their firing source alerts.
    pub inhibitor: Arc<delivery::inhibit::Inhibitor>,
}

/// How records are written by the `file` and `stdout` sinks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// One compact JSON object per line.
    #[default]
    JsonLines,
    /// Indented JSON, one object after another (for reading by eye).
    JsonPretty,
    /// One short line per alert for a person at a terminal: time, severity, status, rule,
    /// title (which names the host or key and the count) and value — the full alert is in
    /// the dashboard, the API and the mails. Events that are not alerts are written as
    /// JSON lines.
    Summary,
}

/// The one-line form of an alert ([`Encoding::Summary`]).
fn summary_line(buf: &mut Vec<u8>, a: &crate::event::Alert) {
    use std::io::Write as _;
    let status = match a.status {
        crate::event::AlertStatus::Firing if a.updates > 0 => "updated",
        crate::event::AlertStatus::Firing => "firing",
        crate::event::AlertStatus::Resolved => "resolved",
    };
    // The title is one line (a template may have put a line break in it).
    let title: String = a
        .title
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let value = match a
        .unit
        .as_deref()
        .map(|u| (u, crate::event::units::unit_bytes(u)))
    {
        // A size reads in the unit its magnitude calls for.
        Some((_, Some(bytes))) => crate::event::units::binary_size(a.value * bytes),
        unit => {
            let unit = unit.map(|(u, _)| format!(" {u}")).unwrap_or_default();
            if a.value.fract() == 0.0 && a.value.abs() < 1e15 {
                format!("{:.0}{unit}", a.value)
            } else {
                format!("{:.2}{unit}", a.value)
            }
        }
    };
    let _ = write!(
        buf,
        "{time}  {sev:<8}  {status:<8}  {pipeline}/{stage}  {title}  [value {value}]",
        time = a
            .window
            .end
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        sev = a.severity.as_str().to_uppercase(),
        pipeline = a.pipeline,
        stage = a.stage,
    );
}

/// While events that carry an acknowledgement are held, flush at least this often (in
/// bytes written), even while input keeps coming.
const FLUSH_BYTES: usize = 1 << 20;

/// Writes every event of `input` to `out` as JSON. Output is flushed whenever the input is
/// idle, every [`FLUSH_BYTES`] while acknowledged events are held, and at the end. Events
/// whose source waits on a batch acknowledgement are held until their bytes are flushed,
/// so the source learns of them only once they are out of the process. A write error
/// marks the held events failed.
pub(crate) async fn write_json_lines<W: AsyncWrite + Unpin>(
    id: &str,
    input: &mut Input,
    out: W,
    encoding: Encoding,
) -> NodeResult {
    let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, out);
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut held: Vec<std::sync::Arc<crate::event::Event>> = Vec::new();
    let mut unflushed = 0usize;
    loop {
        // Take what is ready without waiting; flush before waiting for more.
        let msg = match input.recv().now_or_never() {
            Some(m) => m,
            None => {
                flush(&mut out, &mut held, &mut unflushed).await?;
                input.recv().await
            }
        };
        let Some(msg) = msg else { break };
        let Message::Events(events) = msg else {
            continue;
        };
        buf.clear();
        for e in &events {
            let written = match (encoding, e.raw()) {
                (Encoding::Summary, _) if e.alert().is_some() => {
                    if let Some(a) = e.alert() {
                        summary_line(&mut buf, a);
                    }
                    Ok(())
                }
                // Unchanged since it was read: the original line, byte for byte.
                (Encoding::JsonLines | Encoding::Summary, Some(raw)) => {
                    buf.extend_from_slice(raw);
                    Ok(())
                }
                (Encoding::JsonLines | Encoding::Summary, None) => {
                    serde_json::to_writer(&mut buf, &e.record())
                }
                (Encoding::JsonPretty, _) => serde_json::to_writer_pretty(&mut buf, &e.record()),
            };
            if let Err(error) = written {
                EventNotEncoded {
                    sink: id,
                    error: &error,
                }
                .emit(input.counters());
                e.fail();
                continue;
            }
            buf.push(b'\n');
        }
        if let Err(err) = out.write_all(&buf).await {
            fail_all(&held);
            fail_all(&events);
            return Err(err.into());
        }
        input.counters().add_out(events.len());
        unflushed += buf.len();
        // Only events whose source waits on an acknowledgement are held (and force
        // flushes); the others are done with once written to the buffer.
        held.extend(events.into_iter().filter(|e| e.has_ack()));
        if unflushed >= FLUSH_BYTES && !held.is_empty() {
            flush(&mut out, &mut held, &mut unflushed).await?;
        }
    }
    flush(&mut out, &mut held, &mut unflushed).await
}

async fn flush<W: AsyncWrite + Unpin>(
    out: &mut tokio::io::BufWriter<W>,
    held: &mut Vec<std::sync::Arc<crate::event::Event>>,
    unflushed: &mut usize,
) -> NodeResult {
    if *unflushed == 0 && held.is_empty() {
        return Ok(());
    }
    if let Err(err) = out.flush().await {
        fail_all(held);
        return Err(err.into());
    }
    // Out of the process: the batches these events came in may be acknowledged.
    held.clear();
    *unflushed = 0;
    Ok(())
}

fn fail_all(events: &[std::sync::Arc<crate::event::Event>]) {
    for e in events {
        e.fail();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_summary_is_one_short_line_naming_severity_rule_key_and_count() {
        let mut a = delivery::sample_alert();
        a.title = "36 blocked connections\nto admin ports from 10.0.9.9".into();
        let mut buf = Vec::new();
        summary_line(&mut buf, &a);
        let line = String::from_utf8(buf).unwrap();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.len() < 200, "{} bytes: {line}", line.len());
        assert!(line.contains(&a.severity.as_str().to_uppercase()), "{line}");
        assert!(
            line.contains(&format!("{}/{}", a.pipeline, a.stage)),
            "{line}"
        );
        assert!(
            line.contains("36 blocked connections to admin ports from 10.0.9.9"),
            "{line}"
        );
        assert!(
            line.contains("updated") && line.ends_with("[value 36]"),
            "{line}"
        );
        a.unit = Some("MiB".into());
        a.value = 2_159_748.2;
        let mut buf = Vec::new();
        summary_line(&mut buf, &a);
        let line = String::from_utf8(buf).unwrap();
        assert!(line.ends_with("[value 2.06 TiB]"), "{line}");
    }
}
