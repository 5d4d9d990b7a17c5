//! `decode: json`: the message body is a JSON object.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::{DecodeError, Decoder, Message, envelope, header_time};
use crate::event::{Event, TIME_FIELDS, Tape, time_from_field};

/// Makes one event per message: the body parsed as a JSON object, with the envelope
/// under `syslog` and the sender under `peer` (both replace fields of those names in the
/// body). The event time is the body's (`timestamp`, `time`, `@timestamp`), else the
/// header's, else the receive time. A body that is not a JSON object is malformed.
#[derive(Debug, Default)]
pub struct JsonDecoder;

impl Decoder for JsonDecoder {
    fn decode(&mut self, msg: &Message<'_>, out: &mut Vec<Event>) -> Result<(), DecodeError> {
        let body = msg.parsed.msg.trim();
        // Parsed into a tape (as the `file` source does): fields are read from it and the
        // sinks write it out without building a `Value` of the whole record.
        let mut tape = match Tape::parse(Bytes::copy_from_slice(body.as_bytes())) {
            Ok(t) => t,
            Err(e) => {
                return Err(DecodeError::Malformed(format!(
                    "the message is not a JSON object (decode: json): {} at column {}",
                    describe(&e),
                    e.column()
                )));
            }
        };
        let root = tape.root();
        if !root.is_object() {
            return Err(DecodeError::Malformed(
                "the message is JSON but not an object (decode: json reads one JSON object per message)".into(),
            ));
        }
        let body_time = TIME_FIELDS
            .iter()
            .filter_map(|f| root.get(f))
            .any(|f| time_from_field(&f).is_some());
        tape.reserve_patches(2);
        tape.set_static(&["syslog"], Arc::new(envelope(msg)));
        tape.set_static(&["peer"], Arc::new(Value::from(msg.peer.to_string())));
        let mut event = Event::from_tape(tape, Arc::clone(msg.source), msg.received);
        // `from_tape` took the body's time, else the receive time: the header's comes
        // between.
        if !body_time && let Some(t) = header_time(msg) {
            event.meta.time = t;
        }
        out.push(event);
        Ok(())
    }
}

fn describe(e: &crate::event::ParseError) -> &'static str {
    if e.is_eof() {
        "it ends early"
    } else {
        "invalid JSON"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::syslog::decode::parse;

    fn decode(text: &str) -> Result<Vec<Event>, DecodeError> {
        let received = chrono::DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        let parsed = parse(text, received).expect("a syslog message");
        let source: Arc<str> = Arc::from("p.in");
        let msg = Message {
            peer: "192.0.2.1:514".parse().expect("addr"),
            raw: text.as_bytes(),
            parsed: &parsed,
            received,
            source: &source,
        };
        let mut out = Vec::new();
        JsonDecoder.decode(&msg, &mut out)?;
        Ok(out)
    }

    #[test]
    fn the_body_is_the_record_with_the_envelope_and_the_peer() {
        let out = decode(
            r#"<14>1 2026-02-01T10:00:00Z pce app - - - {"event_type":"user.login","syslog":"replaced"}"#,
        )
        .expect("decodes");
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!(e.data()["event_type"], "user.login");
        assert_eq!(e.data()["peer"], "192.0.2.1:514");
        assert_eq!(e.data()["syslog"]["hostname"], "pce");
        assert_eq!(e.meta.time.to_rfc3339(), "2026-02-01T10:00:00+00:00");
    }

    #[test]
    fn the_body_time_comes_before_the_header_time() {
        let out = decode(
            r#"<14>1 2026-02-01T10:00:00Z pce app - - - {"timestamp":"2026-01-05T00:00:00Z"}"#,
        )
        .expect("decodes");
        assert_eq!(out[0].meta.time.to_rfc3339(), "2026-01-05T00:00:00+00:00");
        // Neither: the receive time.
        let out = decode(r#"<14>1 - pce app - - - {"a":1}"#).expect("decodes");
        assert_eq!(out[0].meta.time.to_rfc3339(), "2026-03-01T00:00:00+00:00");
    }

    #[test]
    fn a_body_that_is_no_json_object_is_malformed() {
        for body in ["not json", "[1,2]", "{\"a\":", "42"] {
            let e = decode(&format!("<14>1 - pce app - - - {body}")).expect_err(body);
            let DecodeError::Malformed(text) = e;
            assert!(text.contains("decode: json"), "{text}");
        }
    }
}
