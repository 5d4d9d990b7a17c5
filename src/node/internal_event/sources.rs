//! What sources report: records they set aside, reads and checkpoints that failed, and
//! events they missed or handed on late.

use std::fmt::Display;
use std::path::Path;

use super::{DropReason, ErrorReason, InternalEvent};
use crate::node::NodeCounters;

/// A record that cannot be read (not JSON, too long, ...): set aside in the node's file
/// of set-aside records and counted as an error. The node's first 20 are logged one by
/// one; after that one summary line per [`RecordSetAside::SUMMARY_EVERY`] errors keeps
/// the log readable.
#[derive(Debug)]
pub struct RecordSetAside<'a> {
    /// The source, `pipeline.node`.
    pub source: &'a str,
    /// The file it came from, if any.
    pub location: Option<&'a str>,
    /// Its line number there, if it has one.
    pub line: Option<u64>,
    /// Why it was set aside.
    pub reason: &'a str,
}

impl RecordSetAside<'_> {
    /// How many records are logged one by one.
    pub const LOGGED: u64 = 20;
    /// Errors between two summary lines, after the first [`RecordSetAside::LOGGED`].
    pub const SUMMARY_EVERY: u64 = 1000;
}

impl InternalEvent for RecordSetAside<'_> {
    fn emit(self, counters: &NodeCounters) {
        counters.add_errors(ErrorReason::Malformed, 1);
        let n = counters.get().2;
        if n <= Self::LOGGED {
            tracing::warn!(
                source = %self.source,
                location = self.location.unwrap_or("-"),
                line = self.line.unwrap_or(0),
                reason = %self.reason,
                "record set aside"
            );
        } else if n % Self::SUMMARY_EVERY == 0 {
            tracing::warn!(source = %self.source, total = n, "records set aside so far");
        }
    }
}

/// The file of set-aside records reached `retention.rejected_max_bytes` and was rotated
/// (`rotations` times in one batch): the file before it, if any, was dropped.
#[derive(Debug)]
pub struct RejectedRotated<'a> {
    /// The file.
    pub path: &'a Path,
    /// How many rotations.
    pub rotations: u64,
}

impl InternalEvent for RejectedRotated<'_> {
    fn emit(self, counters: &NodeCounters) {
        if self.rotations == 0 {
            return;
        }
        tracing::info!(path = %self.path.display(), rotations = self.rotations, "set-aside records rotated; the file before was dropped");
        counters.add_dropped(DropReason::RejectedRotated, self.rotations);
    }
}

/// A source's position could not be stored: counted as an error (a restart reads again
/// from the last stored one).
pub struct CheckpointNotStored<'a> {
    /// The source.
    pub source: &'a str,
    /// Why.
    pub error: &'a dyn Display,
}

impl InternalEvent for CheckpointNotStored<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::error!(source = %self.source, error = %self.error, "cannot store the checkpoint; a restart would re-read from the last stored one");
        counters.add_errors(ErrorReason::CheckpointNotStored, 1);
    }
}

/// Reading PCE events failed: counted as an error, tried again next interval.
pub struct PceEventsReadFailed<'a> {
    /// The source.
    pub source: &'a str,
    /// Why.
    pub error: &'a dyn Display,
    /// The start of the range read.
    pub from: &'a dyn Display,
    /// Its end.
    pub until: &'a dyn Display,
}

impl InternalEvent for PceEventsReadFailed<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::warn!(source = %self.source, error = %self.error, from = %self.from, until = %self.until, "reading PCE events failed; trying again next interval");
        counters.add_errors(ErrorReason::ReadFailed, 1);
    }
}

/// Events handed on were not all delivered downstream: counted as an error, not
/// checkpointed, read again next interval.
pub struct EventsNotDelivered<'a> {
    /// The source.
    pub source: &'a str,
    /// The start of the range read.
    pub from: &'a dyn Display,
    /// Its end.
    pub until: &'a dyn Display,
}

impl InternalEvent for EventsNotDelivered<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::warn!(source = %self.source, from = %self.from, until = %self.until, "events were not delivered downstream; not checkpointing them, they are read again next interval");
        counters.add_errors(ErrorReason::NotDelivered, 1);
    }
}

/// Events that became visible on the PCE more than `overlap` after their timestamp:
/// handed on late, counted as errors so that `overlap` can be raised.
pub struct EventsVisibleLate<'a> {
    /// The source.
    pub source: &'a str,
    /// How many.
    pub events: usize,
    /// How long after its timestamp the oldest became visible.
    pub lag: std::time::Duration,
    /// The source's `overlap`.
    pub overlap: &'a dyn Display,
}

impl InternalEvent for EventsVisibleLate<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::warn!(source = %self.source, events = self.events, lag = %humantime::format_duration(self.lag), overlap = %self.overlap, "events became visible on the PCE more than `overlap` after their timestamp; handed on late — raise overlap above the lag");
        counters.add_errors(ErrorReason::VisibleLate, self.events as u64);
    }
}

/// Records of a type the source's decoder does not know (a Tetragon event type), handed on
/// with their type: counted as errors (`unknown_type`), said in the log the first time.
pub struct UnknownTypes<'a> {
    /// The source.
    pub source: &'a str,
    /// How many.
    pub records: u64,
}

impl InternalEvent for UnknownTypes<'_> {
    fn emit(self, counters: &NodeCounters) {
        if self.records == 0 {
            return;
        }
        let before = counters
            .errors_by_reason()
            .iter()
            .any(|(r, _)| *r == "unknown_type");
        if !before {
            tracing::warn!(source = %self.source, records = self.records, "records of a type the decoder does not know: handed on with their `event.type` (counted as unknown_type; logged once)");
        }
        counters.add_errors(ErrorReason::UnknownType, self.records);
    }
}

/// The command an `exec` source runs exited (or could not be started): logged with its
/// status and how long it ran, counted as an error (`command_exited`).
pub struct CommandExited<'a> {
    /// The source.
    pub source: &'a str,
    /// The program.
    pub program: &'a str,
    /// How it ended: `exit status 1`, `signal 9 (SIGKILL)`, or why it did not start.
    pub status: &'a str,
    /// How long it ran.
    pub ran: std::time::Duration,
    /// The wait before it is started again; `None`: it is not.
    pub restart_in: Option<std::time::Duration>,
}

impl InternalEvent for CommandExited<'_> {
    fn emit(self, counters: &NodeCounters) {
        let ran = humantime::format_duration(std::time::Duration::from_secs(self.ran.as_secs()));
        match self.restart_in {
            Some(wait) => {
                let wait = humantime::format_duration(wait);
                tracing::warn!(source = %self.source, program = %self.program, status = %self.status, ran = %ran, "the command ended; starting it again in {wait}");
            }
            None => {
                tracing::info!(source = %self.source, program = %self.program, status = %self.status, ran = %ran, "the command ended; the source ends with it (restart: never)");
            }
        }
        counters.add_errors(ErrorReason::CommandExited, 1);
    }
}

/// A `host_metrics` scrape failed as a whole (`/proc/uptime` or `/proc/stat` unreadable):
/// no event this interval; counted as `read_failed`.
pub struct HostScrapeFailed<'a> {
    /// The source.
    pub source: &'a str,
    /// Why.
    pub error: &'a str,
}

impl InternalEvent for HostScrapeFailed<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::warn!(source = %self.source, error = %self.error, "cannot read the host's counters; trying again next interval");
        counters.add_errors(ErrorReason::ReadFailed, 1);
    }
}

/// A `host_metrics` scrape met more processes than it looks at: the rest are left out of
/// `top` (counted as `evicted`; logged once).
pub struct HostProcessesSkipped<'a> {
    /// The source.
    pub source: &'a str,
    /// How many this scrape.
    pub skipped: usize,
    /// The bound.
    pub max: usize,
}

impl InternalEvent for HostProcessesSkipped<'_> {
    fn emit(self, counters: &NodeCounters) {
        if self.skipped == 0 {
            return;
        }
        if counters.add_dropped(DropReason::Evicted, self.skipped as u64) == self.skipped as u64 {
            tracing::warn!(source = %self.source, max = self.max, "more processes than a scrape looks at; the rest are left out of `top` (counted as evicted; logged once)");
        }
    }
}

/// A `port_counters` reading failed (nft or iptables refused, or printed what does not
/// read): the interval is counted in the next; counted as `read_failed`.
pub struct PortCountersReadFailed<'a> {
    /// The source.
    pub source: &'a str,
    /// Why.
    pub error: &'a str,
}

impl InternalEvent for PortCountersReadFailed<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::warn!(source = %self.source, error = %self.error, "cannot read the port counters; what passed is counted at the next reading");
        counters.add_errors(ErrorReason::ReadFailed, 1);
    }
}

/// The `internal` source fell behind the engine's own alerts and missed some: counted as
/// errors.
#[derive(Debug)]
pub struct InternalAlertsMissed<'a> {
    /// The source.
    pub node: &'a str,
    /// How many.
    pub missed: u64,
}

impl InternalEvent for InternalAlertsMissed<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::warn!(node = %self.node, missed = self.missed, "internal alerts came faster than they were handled; some were missed");
        counters.add_errors(ErrorReason::InternalMissed, self.missed);
    }
}

/// A `syslog` sender outside `allow_from`: its connection closed at once, or its datagram
/// dropped. Logged at `debug` (a scan would flood the log); counted.
pub struct SyslogPeerRefused<'a> {
    /// The source.
    pub source: &'a str,
    /// The sender.
    pub peer: std::net::SocketAddr,
}

impl InternalEvent for SyslogPeerRefused<'_> {
    fn emit(self, counters: &NodeCounters) {
        tracing::debug!(source = %self.source, peer = %self.peer, "syslog sender not in allow_from; refused");
        counters.add_dropped(DropReason::PeerNotAllowed, 1);
    }
}

/// A `syslog` connection past `connection_limit`, closed at once: the first one is
/// logged as a warning, the rest at `debug`; all counted.
pub struct SyslogConnectionLimit<'a> {
    /// The source.
    pub source: &'a str,
    /// The sender.
    pub peer: std::net::SocketAddr,
    /// The limit.
    pub limit: usize,
}

impl InternalEvent for SyslogConnectionLimit<'_> {
    fn emit(self, counters: &NodeCounters) {
        let n = counters.add_dropped(DropReason::ConnectionLimit, 1);
        if n == 1 {
            tracing::warn!(source = %self.source, peer = %self.peer, limit = self.limit, "syslog connection limit reached; closing new connections (raise connection_limit if the senders are expected)");
        } else {
            tracing::debug!(source = %self.source, peer = %self.peer, "syslog connection past the limit closed");
        }
    }
}

/// A `syslog` UDP datagram that found the pipeline full: dropped (UDP has no way to slow
/// the sender). Logged once per [`RecordSetAside::SUMMARY_EVERY`]; counted.
pub struct SyslogDatagramDropped<'a> {
    /// The source.
    pub source: &'a str,
}

impl InternalEvent for SyslogDatagramDropped<'_> {
    fn emit(self, counters: &NodeCounters) {
        let n = counters.add_dropped(DropReason::PipelineFull, 1);
        if n == 1 || n % RecordSetAside::SUMMARY_EVERY == 0 {
            tracing::warn!(source = %self.source, total = n, "syslog datagrams dropped: the pipeline is full");
        }
    }
}
