//! What the engine reports about itself: one type per situation, whose
//! [`InternalEvent::emit`] writes the log line and bumps the node's counter together, so
//! nothing is logged without being counted or counted under a misspelt reason (Vector's
//! `internal_events`).
//!
//! A component builds the event where the situation arises and emits it into its node's
//! [`NodeCounters`]:
//!
//! ```
//! use vigil::node::NodeCounters;
//! use vigil::node::internal_event::{InternalEvent, Silenced};
//!
//! let counters = NodeCounters::default();
//! Silenced { sink: "p.mail", alert: "a-1", silence: "s-9" }.emit(&counters);
//! assert_eq!(counters.dropped(), vec![("silenced", 1)]);
//! ```
//!
//! What is set aside on purpose is counted by [`DropReason`] (`vigil_node_dropped_total`);
//! what failed, in the node's errors (`vigil_node_errors_total`); restarts, in
//! `vigil_node_restarts_total`. The events are grouped by who emits them, a file each:
//! `delivery` (delivering sinks), `stages`, `sources` and `runtime` (the runtime, and
//! sinks in general). Events that can happen for every record log at `debug`, or once and
//! then in summaries, so they cannot flood the log.

mod delivery;
mod runtime;
mod sources;
mod stages;

pub use delivery::*;
pub use runtime::*;
pub use sources::*;
pub use stages::*;

use super::NodeCounters;

/// A situation the engine reports: logged and counted at once.
pub trait InternalEvent {
    /// Writes the log line and counts the situation in `counters` (the node's).
    fn emit(self, counters: &NodeCounters);
}

/// Why a node set something aside on purpose: the `reason` label of
/// `vigil_node_dropped_total`. Every reason is listed in the `/metrics` documentation
/// (`src/web/metrics/mod.rs` and the README); a test holds them to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// An event older than its window behind the watermark, or one for a window already
    /// alerted or reported.
    Late,
    /// A group key (or, in `top_n`, a held event; in `metric`, a value; in `new_term`,
    /// a value learned) forgotten early to stay under `max_keys` (`max_events`,
    /// `max_values`, `max_terms`, `max_total_terms`); an event of a key past `report`'s
    /// `max_keys` in its period, not counted; a process a `host_metrics` scrape did not
    /// look at, past its bound.
    Evicted,
    /// An event with nothing to measure: a flow whose byte counters are 0 or absent
    /// (`bandwidth`), an event without a usable number at `top_n`'s `sum`, an event
    /// without the field `distinct_count` counts or `new_term` watches.
    Unmeasured,
    /// Older than what is already held: a flow observation older than the flow's
    /// previous one (`bandwidth`), an alert's report older than the one a delivering sink
    /// holds.
    Stale,
    /// A repeat: the same flow observation as the flow's previous one (`bandwidth`), a
    /// repeat within `dedupe`'s window.
    Duplicate,
    /// Suppressed by a cooldown (the `cooldown` stage or a sink's `cooldown`).
    Cooldown,
    /// An event whose `where:` failed.
    WhereError,
    /// An alert below a sink's `min_severity`.
    MinSeverity,
    /// An alert the sink had already notified.
    AlreadyNotified,
    /// An alert matched by an active silence.
    Silenced,
    /// An alert muted by a firing alert (inhibition).
    Inhibited,
    /// An alert the sink had no room for: it holds as many alerts as it may.
    Refused,
    /// A file of set-aside records dropped by rotation.
    RejectedRotated,
    /// A stage state larger than `snapshot_max_bytes`, not saved.
    SnapshotTooLarge,
    /// A sender outside a `syslog` source's `allow_from`: its connection refused, its
    /// datagram dropped.
    PeerNotAllowed,
    /// A connection beyond a `syslog` source's `connection_limit`, closed at once.
    ConnectionLimit,
    /// A UDP datagram that found the pipeline full (`syslog`), dropped.
    PipelineFull,
    /// An address an `nftables_ban` sink did not ban: in its `allow` list (or the PCE's
    /// own address).
    AllowListed,
    /// An address an `nftables_ban` sink did not ban: `max_bans` bans were active.
    MaxBans,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 19] = [
        DropReason::Late,
        DropReason::Evicted,
        DropReason::Unmeasured,
        DropReason::Stale,
        DropReason::Duplicate,
        DropReason::Cooldown,
        DropReason::WhereError,
        DropReason::MinSeverity,
        DropReason::AlreadyNotified,
        DropReason::Silenced,
        DropReason::Inhibited,
        DropReason::Refused,
        DropReason::RejectedRotated,
        DropReason::SnapshotTooLarge,
        DropReason::PeerNotAllowed,
        DropReason::ConnectionLimit,
        DropReason::PipelineFull,
        DropReason::AllowListed,
        DropReason::MaxBans,
    ];

    /// Its `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Late => "late",
            DropReason::Evicted => "evicted",
            DropReason::Unmeasured => "unmeasured",
            DropReason::Stale => "stale",
            DropReason::Duplicate => "duplicate",
            DropReason::Cooldown => "cooldown",
            DropReason::WhereError => "where_error",
            DropReason::MinSeverity => "min_severity",
            DropReason::AlreadyNotified => "already_notified",
            DropReason::Silenced => "silenced",
            DropReason::Inhibited => "inhibited",
            DropReason::Refused => "refused",
            DropReason::RejectedRotated => "rejected_rotated",
            DropReason::SnapshotTooLarge => "snapshot_too_large",
            DropReason::PeerNotAllowed => "peer_not_allowed",
            DropReason::ConnectionLimit => "connection_limit",
            DropReason::PipelineFull => "pipeline_full",
            DropReason::AllowListed => "allow_listed",
            DropReason::MaxBans => "max_bans",
        }
    }
}

/// What failed: the `reason` label of `vigil_node_errors_total`. Every reason is listed
/// in the `/metrics` documentation (`src/web/metrics/mod.rs` and the README); a test
/// holds them to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorReason {
    /// An input record that is not a JSON object, or longer than the limit: set aside.
    Malformed,
    /// Events a node received and could not handle (its source reads them again when it
    /// waits on them).
    EventsFailed,
    /// An event a sink could not encode.
    NotEncoded,
    /// A source's position that could not be stored.
    CheckpointNotStored,
    /// Reading from the PCE (or, `host_metrics`, `/proc`) failed (tried again next
    /// interval).
    ReadFailed,
    /// Events a source handed on that were not all delivered (read again).
    NotDelivered,
    /// PCE events that became visible later than `overlap` after their time.
    VisibleLate,
    /// Engine alerts the `internal` source fell behind on and missed.
    InternalMissed,
    /// A script (`script` stage) that failed on an event.
    Script,
    /// An alert whose recipients could not be worked out.
    RecipientsUnknown,
    /// Alerts or notifications that could not be stored.
    NotStored,
    /// A notification the receiver refused for good.
    Undeliverable,
    /// A notification given up on after its retries.
    GivenUp,
    /// An `ip_list:Name` operand naming no IP list of the PCE (counted once per name).
    UnknownIpList,
    /// A record of a type its decoder does not know (a Tetragon event type), handed on
    /// with its type.
    UnknownType,
    /// The command an `exec` source runs exited, or could not be started (it is started
    /// again after a backoff).
    CommandExited,
}

impl ErrorReason {
    /// Every reason.
    pub const ALL: [ErrorReason; 16] = [
        ErrorReason::Malformed,
        ErrorReason::EventsFailed,
        ErrorReason::NotEncoded,
        ErrorReason::CheckpointNotStored,
        ErrorReason::ReadFailed,
        ErrorReason::NotDelivered,
        ErrorReason::VisibleLate,
        ErrorReason::InternalMissed,
        ErrorReason::Script,
        ErrorReason::RecipientsUnknown,
        ErrorReason::NotStored,
        ErrorReason::Undeliverable,
        ErrorReason::GivenUp,
        ErrorReason::UnknownIpList,
        ErrorReason::UnknownType,
        ErrorReason::CommandExited,
    ];

    /// Its `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::Malformed => "malformed",
            ErrorReason::EventsFailed => "events_failed",
            ErrorReason::NotEncoded => "not_encoded",
            ErrorReason::CheckpointNotStored => "checkpoint_not_stored",
            ErrorReason::ReadFailed => "read_failed",
            ErrorReason::NotDelivered => "not_delivered",
            ErrorReason::VisibleLate => "visible_late",
            ErrorReason::InternalMissed => "internal_missed",
            ErrorReason::Script => "script",
            ErrorReason::RecipientsUnknown => "recipients_unknown",
            ErrorReason::NotStored => "not_stored",
            ErrorReason::Undeliverable => "undeliverable",
            ErrorReason::GivenUp => "given_up",
            ErrorReason::UnknownIpList => "unknown_ip_list",
            ErrorReason::UnknownType => "unknown_type",
            ErrorReason::CommandExited => "command_exited",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
pub(crate) mod capture {
    //! The log lines written while a closure runs, for tests of what is logged.

    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` with every log line (down to `trace`) written, without colours, to a
    /// buffer on this thread, and returns the lines.
    pub(crate) fn logs(f: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reasons' labels are distinct snake_case words, so `/metrics` never shows two
    /// reasons under one name.
    #[test]
    fn reasons_have_distinct_labels() {
        let labels: std::collections::BTreeSet<&str> =
            DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), DropReason::ALL.len());
        let errors: std::collections::BTreeSet<&str> =
            ErrorReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(errors.len(), ErrorReason::ALL.len());
        for l in labels.into_iter().chain(errors) {
            assert!(l.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{l}");
        }
    }

    /// A notification given up on counts its alerts as errors under `given_up`, apart
    /// from other errors of the node.
    #[test]
    fn errors_are_counted_by_reason() {
        let counters = NodeCounters::default();
        capture::logs(|| {
            DeliveryGivenUp {
                sink: "p.hook",
                message: "m-1",
                alerts: 3,
                reason: "5 attempts over 1m; last: HTTP 500",
            }
            .emit(&counters);
            RecipientsUnknown {
                sink: "p.hook",
                alert: "a-1",
                error: &"no such field",
            }
            .emit(&counters);
        });
        assert_eq!(counters.get().2, 4);
        assert_eq!(
            counters.errors_by_reason(),
            vec![("recipients_unknown", 1), ("given_up", 3)]
        );
    }

    /// A silenced alert is counted under `silenced` and logged with the sink, the alert
    /// and the silence, in the words users grep for.
    #[test]
    fn a_silenced_alert_is_counted_and_logged() {
        let counters = NodeCounters::default();
        let logs = capture::logs(|| {
            Silenced {
                sink: "p.mail",
                alert: "a-1",
                silence: "s-9",
            }
            .emit(&counters);
        });
        assert_eq!(counters.dropped(), vec![("silenced", 1)]);
        assert_eq!(counters.dropped_for(DropReason::Silenced), 1);
        let line = logs.lines().find(|l| l.contains("silenced; not sent"));
        let line = line.unwrap_or_else(|| panic!("no log line: {logs:?}"));
        assert!(line.contains("INFO"), "{line}");
        for field in ["sink=p.mail", "alert=a-1", "silence=s-9"] {
            assert!(line.contains(field), "{field} in {line}");
        }
    }
}
