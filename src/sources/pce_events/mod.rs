//! `pce_events`: the PCE's audit events (`GET /orgs/{org}/events`), polled by timestamp
//! with a persisted watermark.
//!
//! # How a cycle reads
//!
//! Every `interval` the source asks for `[watermark − overlap, now]` (both ends inclusive,
//! RFC 3339 with milliseconds). The overlap re-reads the recent past because the PCE's
//! event index lags: an event can become visible minutes after its timestamp. Events
//! already handed on are recognised by their whole `href` (`/orgs/1/events/<uuid>` and
//! `/system_events/<uuid>` both occur) and dropped; the hrefs handed on within the overlap
//! window are kept in the checkpoint next to the watermark.
//!
//! A full page (`len == max_results`) means there may be more: the range is split in half
//! and each half read again (older half first) until no page is full, so no event is
//! skipped whatever subset of the matches the PCE chose to return. A range that cannot be
//! split any more (one millisecond holding more than `max_results` events) is handed on as
//! it is, with a warning. Events of a settled range are sorted by timestamp (the PCE's
//! order is not documented; ties keep the PCE's order) and emitted as the PCE's JSON,
//! unchanged.
//!
//! With `event_types` set, each type is asked for with its own query (the PCE documents
//! `event_type` as a single value; one query per type works on every version), and the
//! answers are merged before sorting and de-duplication.
//!
//! # Checkpoint and delivery
//!
//! The checkpoint (`watermark` plus the recent hrefs) is stored under the node id after
//! each settled range was handed downstream (`send` returned): an event is never marked
//! done before it is handed on, and after a restart the source continues from the
//! checkpoint, neither re-emitting what it handed on nor skipping anything.
//!
//! The remaining window: a crash (kill -9, power loss) after a batch was handed on but
//! before its checkpoint was written re-emits that batch (at most one settled range) on
//! the next start. Downstream de-duplication by `href` (and the stable alert id derived
//! from it) covers it.
//!
//! Known gap (not closed by this source): handed on means put into the next node's
//! channel, not written by the sink. A SIGKILL loses what is still in the channels and in
//! a sink's write buffer (the `file` sink buffers up to 256 KiB until it is idle) although
//! it is already checkpointed; a graceful shutdown drains everything first. Closing it
//! needs an end-to-end acknowledgement in the runtime (checkpoint what the sinks flushed);
//! `tests/pce_events.rs` has the SIGKILL test for it, ignored until then.
//!
//! # Errors
//!
//! A PCE error (after the client's own retries) is logged with its request id and the
//! cycle is tried again at the next interval; the watermark does not move. A record
//! without a string `href` or an RFC 3339 `timestamp` is counted as an error and set aside
//! in `<state_dir>/rejected/<pipeline.node>.jsonl` (once per run, although the overlap
//! returns it again).

mod checkpoint;
mod config;
mod source;

pub use checkpoint::EventsCheckpoint;
pub use config::{PceEventsConfig, Severity, StartAt, Status};
pub use source::PceEventsSource;
