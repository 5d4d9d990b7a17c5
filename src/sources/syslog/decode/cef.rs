//! `decode: cef`: ArcSight Common Event Format,
//! `CEF:Version|Device Vendor|Device Product|Device Version|Signature ID|Name|Severity|Extension`.
//!
//! The header fields become `cef.version`, `cef.vendor`, `cef.product`,
//! `cef.device_version`, `cef.signature_id`, `cef.name` and `cef.severity` (`\|` and `\\`
//! unescaped); the extension's `key=value` pairs become top-level fields (a value may hold
//! spaces: a key starts after the last space before `key=`; `\=`, `\\`, `\n` and `\r` are
//! unescaped). Text before `CEF:` (a syslog header left in the payload) is skipped. The
//! event time is the syslog message's time, else when it was received.

use serde_json::{Map, Value, json};

use super::{DecodeError, Decoder, Message};
use crate::event::Event;

/// The header fields' names, in order, after `version`.
const HEADER: [&str; 6] = [
    "vendor",
    "product",
    "device_version",
    "signature_id",
    "name",
    "severity",
];

/// Decodes CEF payloads.
#[derive(Debug, Default)]
pub struct CefDecoder;

impl CefDecoder {
    /// A CEF decoder (it keeps no state).
    pub fn new() -> CefDecoder {
        CefDecoder
    }
}

/// A parsed CEF record: the header and the extension's pairs in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cef {
    /// The `CEF:` version (the text after `CEF:`).
    pub version: String,
    /// Vendor, product, device version, signature id, name, severity.
    pub header: [String; 6],
    /// The extension's `key=value` pairs, unescaped, in order.
    pub extension: Vec<(String, String)>,
}

/// Splits `s` at its first `n` unescaped `|`, unescaping `\|` and `\\` in the fields;
/// the rest after the `n`-th `|` is returned as it is. `None` if it has fewer.
pub(super) fn split_header(s: &str, n: usize) -> Option<(Vec<String>, &str)> {
    let mut fields = Vec::with_capacity(n);
    let mut cur = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.clone().next() {
                Some((_, e @ ('|' | '\\'))) => {
                    chars.next();
                    cur.push(e);
                }
                _ => cur.push('\\'),
            },
            '|' => {
                fields.push(std::mem::take(&mut cur));
                if fields.len() == n {
                    return Some((fields, &s[i + 1..]));
                }
            }
            c => cur.push(c),
        }
    }
    None
}

/// The longest extension key read; longer text before a `=` is part of a value.
const MAX_KEY: usize = 256;

fn is_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'[' | b']'))
}

/// The value unescaped: `\=`, `\\`, `\|`, `\n`, `\r`; any other backslash stays.
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('=') => out.push('='),
            Some('\\') => out.push('\\'),
            Some('|') => out.push('|'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            _ => {
                out.push('\\');
                continue;
            }
        }
        chars.next();
    }
    out
}

/// The extension's pairs. Text before the first key is ignored. One pass over the text
/// (no backtracking: a long hostile line costs its length).
pub fn parse_extension(ext: &str) -> Vec<(String, String)> {
    let b = ext.as_bytes();
    // (key start, '=' index) of every key.
    let mut keys: Vec<(usize, usize)> = Vec::new();
    let mut floor = 0;
    let mut last_space: Option<usize> = None;
    let mut backslashes = 0usize;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'\\' => {
                backslashes += 1;
                continue;
            }
            b'=' if backslashes % 2 == 0 => {
                let start = match last_space {
                    Some(p) if p >= floor => p + 1,
                    _ => floor,
                };
                // The first key may start the extension; later ones follow a space.
                if (start > floor || keys.is_empty())
                    && i - start <= MAX_KEY
                    && is_key(&ext[start..i])
                {
                    keys.push((start, i));
                    floor = i + 1;
                }
            }
            b' ' => last_space = Some(i),
            _ => {}
        }
        backslashes = 0;
    }
    let mut out = Vec::with_capacity(keys.len());
    for (n, &(ks, eq)) in keys.iter().enumerate() {
        let end = keys.get(n + 1).map_or(b.len(), |&(next, _)| next - 1);
        let value = ext.get(eq + 1..end.max(eq + 1)).unwrap_or("");
        out.push((ext[ks..eq].to_string(), unescape(value)));
    }
    out
}

/// Parses a CEF record (from `CEF:` on; text before it is skipped).
pub fn parse(text: &str) -> Result<Cef, String> {
    let Some(at) = text.find("CEF:") else {
        return Err("not a CEF record: no `CEF:` header".into());
    };
    let body = &text[at + 4..];
    let Some((mut h, ext)) = split_header(body, 7) else {
        return Err(
            "not a CEF record: the header needs 7 fields separated by `|` (Version|Vendor|Product|Device Version|Signature ID|Name|Severity|)"
                .into(),
        );
    };
    let version = h.remove(0);
    let header: [String; 6] = h
        .try_into()
        .map_err(|_| "not a CEF record: the header has the wrong number of fields".to_string())?;
    Ok(Cef {
        version,
        header,
        extension: parse_extension(ext),
    })
}

impl Cef {
    /// The record's fields: `cef.*` and the extension's keys.
    pub fn into_record(self) -> Map<String, Value> {
        let mut rec = Map::new();
        for (k, v) in self.extension {
            rec.insert(k, Value::String(v));
        }
        let mut cef = Map::new();
        let version = self
            .version
            .trim()
            .parse::<u64>()
            .map_or(Value::String(self.version), Value::from);
        cef.insert("version".into(), version);
        for (k, v) in HEADER.iter().zip(self.header) {
            cef.insert((*k).into(), Value::String(v));
        }
        rec.insert("cef".into(), Value::Object(cef));
        rec
    }
}

/// The `vigil` field of a generic decoder's record, and the event made of `rec`.
pub(super) fn finish(mut rec: Map<String, Value>, decoder: &str, msg: &Message<'_>) -> Event {
    let m = msg.parsed;
    rec.insert(
        "vigil".into(),
        json!({"source_type": "syslog", "decoder": decoder,
               "syslog": {"host": m.hostname, "app": m.appname}}),
    );
    let mut event = Event::from_record(Value::Object(rec), msg.source.clone(), msg.received);
    event.meta.time = m
        .timestamp
        .map_or(msg.received, |t| t.with_timezone(&chrono::Utc));
    event
}

impl Decoder for CefDecoder {
    fn decode(&mut self, msg: &Message<'_>, out: &mut Vec<Event>) -> Result<(), DecodeError> {
        let cef = parse(msg.parsed.msg).map_err(DecodeError::Malformed)?;
        out.push(finish(cef.into_record(), "cef", msg));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn a_real_looking_record_reads_header_and_extension() {
        let line = r"CEF:0|Security|threatmanager|1.0|100|worm successfully stopped|10|src=10.0.0.1 dst=2.1.2.2 spt=1232 msg=Detected a threat. No action needed.";
        let c = parse(line).unwrap();
        assert_eq!(c.version, "0");
        assert_eq!(
            c.header,
            [
                "Security",
                "threatmanager",
                "1.0",
                "100",
                "worm successfully stopped",
                "10"
            ]
            .map(String::from)
        );
        assert_eq!(
            c.extension,
            pairs(&[
                ("src", "10.0.0.1"),
                ("dst", "2.1.2.2"),
                ("spt", "1232"),
                ("msg", "Detected a threat. No action needed.")
            ])
        );
        let rec = c.into_record();
        assert_eq!(rec["cef"]["vendor"], "Security");
        assert_eq!(rec["cef"]["version"], 0);
        assert_eq!(rec["src"], "10.0.0.1");
    }

    #[test]
    fn header_escapes_are_read() {
        let c = parse(r"CEF:0|ACME\|Corp|back\\slash|1|id|a \| b|Low|").unwrap();
        assert_eq!(c.header[0], "ACME|Corp");
        assert_eq!(c.header[1], r"back\slash");
        assert_eq!(c.header[4], "a | b");
        assert_eq!(c.header[5], "Low");
        assert!(c.extension.is_empty());
    }

    #[test]
    fn extension_escapes_are_read() {
        let c = parse(r"CEF:0|V|P|1|2|N|3|act=blocked a \= sign cs1=C:\\dir\\f msg=line1\nline2\rend cs2=x\|y").unwrap();
        assert_eq!(
            c.extension,
            pairs(&[
                ("act", "blocked a = sign"),
                ("cs1", r"C:\dir\f"),
                ("msg", "line1\nline2\rend"),
                ("cs2", "x|y"),
            ])
        );
    }

    #[test]
    fn text_before_the_header_is_skipped_and_missing_headers_are_errors() {
        let c = parse("Sep 19 08:26:10 host CEF:0|V|P|1|2|N|3|a=b").unwrap();
        assert_eq!(c.extension, pairs(&[("a", "b")]));
        assert!(parse("no cef here").is_err());
        assert!(parse("CEF:0|V|P|1|2|N").is_err());
        assert!(
            parse("CEF:0|V|P|1|2|N|3").is_err(),
            "the 7th `|` ends the header"
        );
    }

    #[test]
    fn an_equals_sign_not_after_a_key_stays_in_the_value() {
        let c = parse("CEF:0|V|P|1|2|N|3|request=http://x/?a=1&b=2 dst=1.2.3.4").unwrap();
        assert_eq!(
            c.extension,
            pairs(&[("request", "http://x/?a=1&b=2"), ("dst", "1.2.3.4")])
        );
    }

    #[test]
    fn a_long_hostile_extension_costs_its_length() {
        // Quadratic parsing would take minutes here.
        let line = format!("CEF:0|V|P|1|2|N|3|{}", "a=".repeat(1 << 20));
        let c = parse(&line).unwrap();
        assert_eq!(c.extension.len(), 1);
        assert_eq!(c.extension[0].1.len(), (2 << 20) - 2);
        let line = format!("CEF:0|V|P|1|2|N|3|k={}", "\\\\".repeat(1 << 20) + "=x");
        assert_eq!(parse(&line).unwrap().extension.len(), 1);
        let spaced = format!("CEF:0|V|P|1|2|N|3|{}", "x =".repeat(1 << 19));
        assert!(parse(&spaced).unwrap().extension.is_empty());
    }

    fn esc_header(s: &str) -> String {
        s.replace('\\', r"\\").replace('|', r"\|")
    }

    fn esc_value(s: &str) -> String {
        s.replace('\\', r"\\")
            .replace('=', r"\=")
            .replace('\n', r"\n")
            .replace('\r', r"\r")
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in ".*") {
            let _ = parse(&s);
            let _ = parse(&format!("CEF:{s}"));
            let _ = parse_extension(&s);
        }

        #[test]
        fn escaped_records_round_trip(
            header in proptest::array::uniform6(".{0,12}"),
            ext in proptest::collection::vec(("[a-zA-Z][a-zA-Z0-9_]{0,8}", "[^ ].{0,16}"), 0..6),
        ) {
            let mut line = "CEF:0|".to_string();
            for h in &header {
                line.push_str(&esc_header(h));
                line.push('|');
            }
            let ext: Vec<(String, String)> = ext;
            let text: Vec<String> = ext.iter().map(|(k, v)| format!("{k}={}", esc_value(v))).collect();
            line.push_str(&text.join(" "));
            let c = parse(&line).unwrap();
            prop_assert_eq!(c.header, header);
            prop_assert_eq!(c.extension, ext);
        }
    }
}
