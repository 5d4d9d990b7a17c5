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

// ---- Added below the contract by the transport side (issue 17): helpers every decoder
// may use. The items above are unchanged.

pub mod cef;
pub mod json;
pub mod leef;
pub mod pce;
pub mod raw;

pub use cef::CefDecoder;
pub use leef::LeefDecoder;
pub use pce::{PceDecoder, PceStats};

use chrono::{Datelike, Utc};
use serde_json::{Map, Value};

/// The envelope of `msg` as the `syslog` object of a record: `facility`, `severity`,
/// `hostname`, `appname`, `procid`, `msgid`, `structured_data` (SD-ID → its params) and
/// `timestamp` (RFC 3339), each left out when the message has none.
pub fn envelope(msg: &Message<'_>) -> Value {
    let p = msg.parsed;
    let mut m = Map::new();
    if let Some(f) = p.facility {
        m.insert("facility".into(), Value::from(f.as_str()));
    }
    if let Some(s) = p.severity {
        m.insert("severity".into(), Value::from(s.as_str()));
    }
    let mut text = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            m.insert(k.into(), Value::from(v));
        }
    };
    text("hostname", p.hostname);
    text("appname", p.appname);
    text("msgid", p.msgid);
    if let Some(id) = &p.procid {
        let v = match id {
            syslog_loose::ProcId::PID(n) => Value::from(*n),
            syslog_loose::ProcId::Name(s) => Value::from(*s),
        };
        m.insert("procid".into(), v);
    }
    if !p.structured_data.is_empty() {
        let mut sd = Map::new();
        for el in &p.structured_data {
            let params: Map<String, Value> = el
                .params
                .iter()
                .map(|(k, v)| ((*k).to_string(), Value::from(*v)))
                .collect();
            sd.insert(el.id.to_string(), Value::Object(params));
        }
        m.insert("structured_data".into(), Value::Object(sd));
    }
    if let Some(t) = header_time(msg) {
        m.insert(
            "timestamp".into(),
            Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        );
    }
    Value::Object(m)
}

/// The time in the message's header, if it has one.
pub fn header_time(msg: &Message<'_>) -> Option<Timestamp> {
    msg.parsed.timestamp.map(|t| t.with_timezone(&Utc))
}

/// The year of an RFC 3164 time (which has none) received at `received`: the year that
/// puts the month closest to the receive time, so a message stamped Dec 31 received on
/// Jan 1 is of last year, and one stamped Jan 1 received on Dec 31 (a sender whose clock
/// is ahead) of next year.
pub fn year_for(month: u32, received: Timestamp) -> i32 {
    let year = received.year();
    match (month, received.month()) {
        (12, 1) => year - 1,
        (1, 12) => year + 1,
        _ => year,
    }
}

/// Parses a frame's text as RFC 5424 or 3164 (times without a zone are UTC, a 3164 year
/// is found with [`year_for`]). `None`: not a syslog message.
pub fn parse(text: &str, received: Timestamp) -> Option<syslog_loose::Message<&str>> {
    let year = move |(month, ..): syslog_loose::IncompleteDate| year_for(month, received);
    syslog_loose::parse_message_with_year_exact_tz(
        text,
        year,
        Some(Utc),
        syslog_loose::Variant::Either,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn rfc3164_year_across_new_year() {
        let jan1 = at("2027-01-01T00:00:05Z");
        let m = parse("<13>Dec 31 23:59:58 host app: bye", jan1).expect("parses");
        assert_eq!(m.timestamp.map(|t| t.year()), Some(2026));
        let m = parse("<13>Jan  1 00:00:01 host app: hi", jan1).expect("parses");
        assert_eq!(m.timestamp.map(|t| t.year()), Some(2027));
        let dec31 = at("2026-12-31T23:59:59Z");
        let m = parse("<13>Jan  1 00:00:02 host app: early", dec31).expect("parses");
        assert_eq!(m.timestamp.map(|t| t.year()), Some(2027));
        let m = parse("<13>Dec 31 23:59:50 host app: now", dec31).expect("parses");
        assert_eq!(m.timestamp.map(|t| t.year()), Some(2026));
        let july = at("2026-07-01T00:00:00Z");
        let m = parse("<13>Dec 31 23:59:50 host app: old", july).expect("parses");
        assert_eq!(m.timestamp.map(|t| t.year()), Some(2026));
    }

    #[test]
    fn envelope_of_an_rfc5424_message() {
        let now = at("2026-01-01T00:00:00Z");
        let text = r#"<14>1 2019-06-04T15:24:48.000000+00:00 core0 illumio_pce/agent 31897 ID7 [meta sequenceId="10963"][x a="1" b="2"] hello"#;
        let parsed = parse(text, now).expect("parses");
        let source: Arc<str> = Arc::from("p.s");
        let msg = Message {
            peer: "127.0.0.1:5".parse().expect("addr"),
            raw: text.as_bytes(),
            parsed: &parsed,
            received: now,
            source: &source,
        };
        assert_eq!(
            envelope(&msg),
            serde_json::json!({
                "facility": "user", "severity": "info", "hostname": "core0",
                "appname": "illumio_pce/agent", "procid": 31897, "msgid": "ID7",
                "structured_data": {"meta": {"sequenceId": "10963"}, "x": {"a": "1", "b": "2"}},
                "timestamp": "2019-06-04T15:24:48Z",
            })
        );
        assert_eq!(parsed.msg, "hello");
    }

    #[test]
    fn text_that_is_no_syslog_is_refused() {
        let now = at("2026-01-01T00:00:00Z");
        for t in ["", "hello", "<13>", "<999>1 x", "\u{0}\u{1}"] {
            assert!(parse(t, now).is_none(), "{t:?}");
        }
        assert!(parse("<13>Dec 31 23:59:58 host app: bye", now).is_some());
    }

    /// Whatever arrives, no decoder panics: arbitrary text after a syslog header (plain,
    /// with the PCE's `sec= …` prefix, or a JSON-looking body) goes through the envelope
    /// parser and every decoder; each either makes events or says why not.
    mod any_input {
        use super::*;
        use proptest::prelude::*;

        fn decoders() -> Vec<Box<dyn Decoder>> {
            let internal = crate::sources::internal::InternalAlerts::default();
            [
                crate::sources::syslog::Decode::Raw,
                crate::sources::syslog::Decode::Json,
                crate::sources::syslog::Decode::Pce,
                crate::sources::syslog::Decode::Cef,
                crate::sources::syslog::Decode::Leef,
            ]
            .iter()
            .map(|d| d.decoder(&internal))
            .collect()
        }

        fn body() -> impl Strategy<Value = String> {
            prop_oneof![
                ".{0,200}",
                "\\{.{0,120}\\}",
                "sec=[0-9.]{0,8} sev=INFO pid=1 tid=2 rid=x \\{\"version\":[0-9],.{0,120}",
                "CEF:.{0,120}",
                "LEEF:.{0,120}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn no_decoder_panics(
                app in prop_oneof![
                    Just("illumio_pce/collector".to_string()),
                    Just("illumio_pce/agent".to_string()),
                    "[a-z/_]{1,20}",
                ],
                seq in proptest::option::of(any::<i64>()),
                body in body(),
            ) {
                let sd = seq.map_or("-".to_string(), |n| format!("[meta sequenceId=\"{n}\"]"));
                let text = format!("<14>1 2026-06-04T15:24:48Z core0 {app} 1 - {sd} {body}");
                let now = at("2026-06-04T15:25:00Z");
                let source: Arc<str> = Arc::from("p.s");
                if let Some(parsed) = parse(&text, now) {
                    let msg = Message {
                        peer: "127.0.0.1:5".parse().expect("addr"),
                        raw: text.as_bytes(),
                        parsed: &parsed,
                        received: now,
                        source: &source,
                    };
                    for mut d in decoders() {
                        let mut out = Vec::new();
                        let _ = d.decode(&msg, &mut out);
                    }
                }
            }
        }
    }
}
