//! `pce_events`: the PCE's audit events (`GET /orgs/{org}/events`), polled by timestamp
//! with a persisted watermark.
//!
//! # How a cycle reads
//!
//! Every `interval` the source asks for `[watermark − overlap, now]` (both ends inclusive,
//! RFC 3339 with milliseconds). The overlap re-reads the recent past because the PCE's
//! event index lags: an event can become visible minutes after its timestamp. Events
//! already handed on are recognised by their whole `href` (`/orgs/1/events/<uuid>` and
//! `/system_events/<uuid>` both occur) and dropped; the hrefs handed on recently are kept
//! in the checkpoint next to the watermark.
//!
//! Once per `overlap` (or `interval`, if longer) the source also reads again the range
//! behind the overlap, `overlap + max(overlap, interval) + interval` deep. An event there
//! that was not handed on was indexed more than `overlap` late: it is handed on then,
//! counted as the source's error and logged with its lag, so a too-short `overlap` shows
//! instead of losing events unseen. An event indexed up to twice the overlap late is
//! caught so; later than that it is still missed.
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
//! Every batch carries an end-to-end acknowledgement ([`crate::event::ack_pair`]): the
//! checkpoint (`watermark` plus the recent hrefs) is stored under the node id only once
//! every sink has written and flushed the batch (or a stage dropped its events on
//! purpose). A batch that failed somewhere is not checkpointed and is read again next
//! interval. After a restart the source continues from the checkpoint, neither
//! re-emitting what was delivered nor skipping anything.
//!
//! The remaining window: a crash (kill -9, power loss) after the sinks flushed a batch but
//! before its checkpoint was written re-emits that batch (at most one settled range) on
//! the next start. Downstream de-duplication by `href` (and the stable alert id derived
//! from it) covers it; `tests/pce_events.rs` kills `vigil run` with SIGKILL mid-catch-up
//! and checks that nothing is lost and at most one batch repeats.
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
pub(crate) use source::read_range;
