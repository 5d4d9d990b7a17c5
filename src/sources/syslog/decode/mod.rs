//! Decoders of the `syslog` source: what a message's payload becomes. The source frames
//! and parses the syslog envelope; a decoder turns one parsed message into events.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::event::{Event, Timestamp};

/// One syslog message, as the source hands it to a decoder.
pub struct Message<'a> {
    /// The sender.
    pub peer: SocketAddr,
    /// The whole frame, exactly as received (without the framing: no octet count, no
    /// trailing newline).
    pub raw: &'a [u8],
    /// The envelope as `syslog_loose` parsed it (RFC 5424 or 3164).
    pub parsed: &'a syslog_loose::Message<&'a str>,
    /// When the source received it.
    pub received: Timestamp,
    /// The source's name (the `source` of the events made).
    pub source: &'a Arc<str>,
}

/// Why a message could not be decoded. The source counts it and sets the frame aside with
/// the peer's address; it is never fatal.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload is not what the decoder reads; the text says what was wrong, in words
    /// for the user (no parser internals).
    #[error("{0}")]
    Malformed(String),
}

/// Turns parsed messages into events. One decoder per source, used by one task at a time
/// (it may keep state across messages, e.g. the PCE decoder's sequence numbers).
pub trait Decoder: Send {
    /// Appends the events `msg` makes to `out` (none is fine: a message that carries
    /// nothing to alert on). Internal alerts (e.g. a sequence gap) are raised by the
    /// decoder itself through the internal-event channel it was given when made.
    fn decode(&mut self, msg: &Message<'_>, out: &mut Vec<Event>) -> Result<(), DecodeError>;
}

// Added below the contract's items by the decoders' branch.

pub mod cef;
pub mod leef;
pub mod pce;

pub use cef::CefDecoder;
pub use leef::LeefDecoder;
pub use pce::{PceDecoder, PceStats};
