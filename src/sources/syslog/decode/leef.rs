//! `decode: leef`: IBM QRadar's Log Event Extended Format.
//!
//! - LEEF 1.0: `LEEF:1.0|Vendor|Product|Version|EventID|` then tab-delimited `key=value`
//!   attributes.
//! - LEEF 2.0: `LEEF:2.0|Vendor|Product|Version|EventID|Delimiter|` then the attributes
//!   separated by the delimiter, given as a character or as `xHH` / `0xHH` (a tab when
//!   empty).
//!
//! The header becomes `leef.version`, `leef.vendor`, `leef.product`,
//! `leef.product_version`, `leef.event_id` (and `leef.delimiter` for 2.0); each attribute
//! a top-level field (split at its first `=`; an attribute without `=` is ignored). Text
//! before `LEEF:` is skipped. The event time is the syslog message's time, else when it
//! was received.

use serde_json::{Map, Value};

use super::cef::{finish, split_header};
use super::{DecodeError, Decoder, Message};
use crate::event::Event;

/// Decodes LEEF payloads.
#[derive(Debug, Default)]
pub struct LeefDecoder;

impl LeefDecoder {
    /// A LEEF decoder (it keeps no state).
    pub fn new() -> LeefDecoder {
        LeefDecoder
    }
}

/// A parsed LEEF record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leef {
    /// `1.0` or `2.0` (as written).
    pub version: String,
    /// Vendor, product, product version, event id.
    pub header: [String; 4],
    /// The attribute delimiter.
    pub delimiter: char,
    /// The attributes, in order.
    pub attributes: Vec<(String, String)>,
}

/// The delimiter a LEEF 2.0 header names.
fn delimiter(field: &str) -> Result<char, String> {
    let hex = field
        .strip_prefix("0x")
        .or_else(|| field.strip_prefix("0X"))
        .or_else(|| field.strip_prefix('x'))
        .or_else(|| field.strip_prefix('X'));
    match hex {
        Some(h) if !h.is_empty() => u32::from_str_radix(h, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| format!("LEEF 2.0 delimiter `{field}` is not a character in hex")),
        _ => {
            let mut cs = field.chars();
            match (cs.next(), cs.next()) {
                (None, _) => Ok('\t'),
                (Some(c), None) => Ok(c),
                _ => Err(format!(
                    "LEEF 2.0 delimiter `{field}` is neither one character nor xHH"
                )),
            }
        }
    }
}

/// Parses a LEEF record (from `LEEF:` on).
pub fn parse(text: &str) -> Result<Leef, String> {
    let Some(at) = text.find("LEEF:") else {
        return Err("not a LEEF record: no `LEEF:` header".into());
    };
    let body = &text[at + 5..];
    let v2 = body.starts_with('2');
    let n = if v2 { 6 } else { 5 };
    let Some((mut h, rest)) = split_header(body, n) else {
        return Err(format!(
            "not a LEEF record: the header needs {n} fields separated by `|` (Version|Vendor|Product|Version|EventID|{})",
            if v2 { "Delimiter|" } else { "" }
        ));
    };
    let delim = if v2 {
        delimiter(&h.pop().unwrap_or_default())?
    } else {
        '\t'
    };
    let version = h.remove(0);
    let header: [String; 4] = h
        .try_into()
        .map_err(|_| "not a LEEF record: the header has the wrong number of fields".to_string())?;
    let attributes = rest
        .split(delim)
        .filter_map(|a| a.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(Leef {
        version,
        header,
        delimiter: delim,
        attributes,
    })
}

impl Leef {
    /// The record's fields: `leef.*` and the attributes.
    pub fn into_record(self) -> Map<String, Value> {
        let mut rec = Map::new();
        for (k, v) in self.attributes {
            rec.insert(k, Value::String(v));
        }
        let mut leef = Map::new();
        leef.insert("version".into(), Value::String(self.version));
        for (k, v) in ["vendor", "product", "product_version", "event_id"]
            .iter()
            .zip(self.header)
        {
            leef.insert((*k).into(), Value::String(v));
        }
        leef.insert(
            "delimiter".into(),
            Value::String(self.delimiter.to_string()),
        );
        rec.insert("leef".into(), Value::Object(leef));
        rec
    }
}

impl Decoder for LeefDecoder {
    fn decode(&mut self, msg: &Message<'_>, out: &mut Vec<Event>) -> Result<(), DecodeError> {
        let leef = parse(msg.parsed.msg).map_err(DecodeError::Malformed)?;
        out.push(finish(leef.into_record(), "leef", msg));
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
    fn leef_1_reads_tab_separated_attributes() {
        let l = parse("LEEF:1.0|Microsoft|MSExchange|4.0 SP1|15345|src=192.0.2.0\tdst=172.50.123.1\tsev=5\tcat=anomaly\tmsg=a b=c").unwrap();
        assert_eq!(l.version, "1.0");
        assert_eq!(
            l.header,
            ["Microsoft", "MSExchange", "4.0 SP1", "15345"].map(String::from)
        );
        assert_eq!(l.delimiter, '\t');
        assert_eq!(
            l.attributes,
            pairs(&[
                ("src", "192.0.2.0"),
                ("dst", "172.50.123.1"),
                ("sev", "5"),
                ("cat", "anomaly"),
                ("msg", "a b=c")
            ])
        );
        let rec = l.into_record();
        assert_eq!(rec["leef"]["vendor"], "Microsoft");
        assert_eq!(rec["leef"]["event_id"], "15345");
        assert_eq!(rec["dst"], "172.50.123.1");
    }

    #[test]
    fn leef_2_reads_its_delimiter_as_a_character_or_hex() {
        let l = parse("LEEF:2.0|Lancope|StealthWatch|1.0|41|^|src=10.0.1.8^dst=10.0.0.5^sev=5")
            .unwrap();
        assert_eq!(l.delimiter, '^');
        assert_eq!(
            l.attributes,
            pairs(&[("src", "10.0.1.8"), ("dst", "10.0.0.5"), ("sev", "5")])
        );
        for d in ["x5E", "0x5e", "X5e"] {
            let l = parse(&format!("LEEF:2.0|V|P|1|E|{d}|a=1^b=2")).unwrap();
            assert_eq!(l.delimiter, '^', "{d}");
            assert_eq!(l.attributes, pairs(&[("a", "1"), ("b", "2")]));
        }
        let l = parse("LEEF:2.0|V|P|1|E||a=1\tb=2").unwrap();
        assert_eq!(l.delimiter, '\t');
        assert!(parse("LEEF:2.0|V|P|1|E|xZZ|a=1").is_err());
        assert!(parse("LEEF:2.0|V|P|1|E|ab|a=1").is_err());
        assert!(parse("LEEF:2.0|V|P|1|E|x110000|a=1").is_err());
    }

    #[test]
    fn short_headers_and_other_text_are_errors() {
        assert!(parse("LEEF:1.0|V|P|1").is_err());
        assert!(parse("LEEF:2.0|V|P|1|E|").is_err());
        assert!(parse("hello").is_err());
        let l = parse("<13>Jan 18 11:07:53 host LEEF:1.0|V|P|1|E|noequals\ta=1").unwrap();
        assert_eq!(l.attributes, pairs(&[("a", "1")]));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in ".*") {
            let _ = parse(&s);
            let _ = parse(&format!("LEEF:1.0|{s}"));
            let _ = parse(&format!("LEEF:2.0|V|P|1|E|{s}"));
        }

        #[test]
        fn records_round_trip(
            header in proptest::array::uniform4("[^|\\\\]{0,12}"),
            attrs in proptest::collection::vec(("[a-zA-Z][a-zA-Z0-9]{0,8}", "[^\t^]{0,16}"), 0..6),
            v2 in any::<bool>(),
        ) {
            let (head, sep) = if v2 { ("LEEF:2.0|", "^") } else { ("LEEF:1.0|", "\t") };
            let mut line = head.to_string();
            for h in &header {
                line.push_str(h);
                line.push('|');
            }
            if v2 {
                line.push_str("x5E|");
            }
            let text: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            line.push_str(&text.join(sep));
            let l = parse(&line).unwrap();
            prop_assert_eq!(l.header, header);
            prop_assert_eq!(l.attributes, attrs);
        }
    }
}
