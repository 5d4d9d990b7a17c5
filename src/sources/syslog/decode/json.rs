//! `decode: json`: the message body is a JSON object.

use std::sync::Arc;

use serde_json::Value;

use super::{DecodeError, Decoder, Message, envelope, header_time};
use crate::event::{Event, record_time};

/// Makes one event per message: the body parsed as a JSON object, with the envelope
/// under `syslog` and the sender under `peer` (both replace fields of those names in the
/// body). The event time is the body's (`timestamp`, `time`, `@timestamp`), else the
/// header's, else the receive time. A body that is not a JSON object is malformed.
#[derive(Debug, Default)]
pub struct JsonDecoder;

impl Decoder for JsonDecoder {
    fn decode(&mut self, msg: &Message<'_>, out: &mut Vec<Event>) -> Result<(), DecodeError> {
        let body = msg.parsed.msg.trim();
        let mut record = match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(DecodeError::Malformed(
                    "the message is JSON but not an object (decode: json reads one JSON object per message)".into(),
                ));
            }
            Err(e) => {
                return Err(DecodeError::Malformed(format!(
                    "the message is not a JSON object (decode: json): {} at column {}",
                    describe(&e),
                    e.column()
                )));
            }
        };
        record.insert("syslog".into(), envelope(msg));
        record.insert("peer".into(), Value::from(msg.peer.to_string()));
        let record = Value::Object(record);
        let time = record_time(&record)
            .or_else(|| header_time(msg))
            .unwrap_or(msg.received);
        let mut event = Event::from_record(record, Arc::clone(msg.source), msg.received);
        event.meta.time = time;
        out.push(event);
        Ok(())
    }
}

fn describe(e: &serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => "it ends early",
        Category::Syntax => "invalid JSON",
        Category::Data | Category::Io => "invalid JSON",
    }
}
