//! `decode: raw`: the envelope and the free text, as they came.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{DecodeError, Decoder, Message, envelope, header_time};
use crate::event::Event;

/// Makes one event per message: `syslog` (the envelope), `message` (the free text) and
/// `peer` (`ip:port`). The event time is the header's, else the receive time.
#[derive(Debug, Default)]
pub struct RawDecoder;

impl Decoder for RawDecoder {
    fn decode(&mut self, msg: &Message<'_>, out: &mut Vec<Event>) -> Result<(), DecodeError> {
        let mut record = Map::with_capacity(3);
        record.insert("syslog".into(), envelope(msg));
        record.insert("message".into(), Value::from(msg.parsed.msg));
        record.insert("peer".into(), Value::from(msg.peer.to_string()));
        let mut event =
            Event::from_record(Value::Object(record), Arc::clone(msg.source), msg.received);
        event.meta.time = header_time(msg).unwrap_or(msg.received);
        out.push(event);
        Ok(())
    }
}
