//! Reading response bodies: streaming into one buffer, gzip by magic bytes, JSON arrays
//! and NDJSON.
//!
//! A 200,000-flow download is ~265 MB of JSON but several GB as parsed values, so big
//! bodies are read record by record with [`Records`]: each item is one record and the
//! exact bytes it was parsed from, and nothing but the body is held meanwhile.

use std::io::Read;

use bytes::Bytes;
use serde_json::Value;

use crate::event::{Parsed, Tape};

/// The gzip magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Inflated bodies larger than this are refused (a guard against gzip bombs): 4 GiB.
const MAX_INFLATED: u64 = 4 << 30;

/// Whether `body` starts with the gzip magic bytes.
pub fn is_gzip(body: &[u8]) -> bool {
    body.starts_with(&GZIP_MAGIC)
}

/// Parses a traffic download (or any list body): gzip is detected by its magic bytes
/// whatever the headers say; then a JSON array, NDJSON (one JSON value a line; objects
/// concatenated with any whitespace also work), or an empty body (no records).
pub fn parse_records(body: &[u8]) -> Result<Vec<Value>, String> {
    if is_gzip(body) {
        let inflated = inflate(body)?;
        return parse_plain(&inflated);
    }
    parse_plain(body)
}

/// Like [`parse_records`], but takes the body so a gzip body is freed as soon as it is
/// inflated (lower peak memory for big downloads).
pub fn parse_records_owned(body: Vec<u8>) -> Result<Vec<Value>, String> {
    if is_gzip(&body) {
        let inflated = inflate(&body)?;
        drop(body);
        return parse_plain(&inflated);
    }
    parse_plain(&body)
}

/// The inflated size a gzip body announces in its trailer (ISIZE, modulo 4 GiB), when it
/// is plausible; used only to size the buffer.
fn inflated_size_hint(body: &[u8]) -> usize {
    const MAX_HINT: usize = 1 << 30;
    let fallback = body.len().saturating_mul(8).min(MAX_HINT);
    let Some(tail) = body.len().checked_sub(4).and_then(|i| body.get(i..)) else {
        return fallback;
    };
    let mut isize_bytes = [0u8; 4];
    isize_bytes.copy_from_slice(tail);
    let announced = u32::from_le_bytes(isize_bytes) as usize;
    if announced >= body.len() && announced <= MAX_HINT {
        announced
    } else {
        fallback
    }
}

fn inflate(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(inflated_size_hint(body));
    flate2::read::MultiGzDecoder::new(body)
        .take(MAX_INFLATED)
        .read_to_end(&mut out)
        .map_err(|e| format!("gzip body: {e}"))?;
    Ok(out)
}

fn parse_plain(body: &[u8]) -> Result<Vec<Value>, String> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Ok(Vec::new());
    };
    let body = &body[start..];
    if body[0] == b'[' {
        return serde_json::from_slice::<Vec<Value>>(body).map_err(|e| format!("JSON array: {e}"));
    }
    parse_ndjson(body)
}

fn parse_ndjson(body: &[u8]) -> Result<Vec<Value>, String> {
    serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .enumerate()
        .map(|(i, v)| v.map_err(|e| format!("NDJSON record {}: {e}", i + 1)))
        .collect()
}

/// Inflates a gzip body (detected by its magic bytes); other bodies are returned as they
/// are. The compressed body is freed once inflated.
pub fn plain_body(body: Bytes) -> Result<Bytes, String> {
    if is_gzip(&body) {
        let inflated = inflate(&body)?;
        drop(body);
        return Ok(Bytes::from(inflated));
    }
    Ok(body)
}

/// The records of a plain (not gzip) body, one at a time: a JSON array, NDJSON, or an
/// empty body. Each item is the record and the bytes it was parsed from (shared with the
/// body, not copied). After an error the iterator ends.
#[derive(Debug, Clone)]
pub struct Records {
    body: Bytes,
    pos: usize,
    array: bool,
    index: usize,
    done: bool,
}

impl Records {
    /// Records of `body` (see [`plain_body`] for gzip).
    pub fn new(body: Bytes) -> Records {
        let skip_bom = if body.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            0
        };
        let mut r = Records {
            body,
            pos: skip_bom,
            array: false,
            index: 0,
            done: false,
        };
        r.skip_ws();
        if r.body.get(r.pos) == Some(&b'[') {
            r.array = true;
            r.pos += 1;
        }
        r
    }

    fn skip_ws(&mut self) {
        while self.body.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn fail<T>(&mut self, message: String) -> Option<Result<T, String>> {
        self.done = true;
        Some(Err(message))
    }
}

impl Records {
    /// The next record, parsed by `parse` from the body at the given offset (it returns
    /// the record and the offset just after it, or `None` when no value starts there).
    fn step<T>(
        &mut self,
        parse: impl FnOnce(&Bytes, usize) -> Option<Result<(T, usize), serde_json::Error>>,
    ) -> Option<Result<T, String>> {
        if self.done {
            return None;
        }
        self.skip_ws();
        if self.array {
            match self.body.get(self.pos) {
                Some(b']') => {
                    self.done = true;
                    self.pos += 1;
                    self.skip_ws();
                    if self.pos < self.body.len() {
                        return self.fail("JSON array: trailing characters after `]`".into());
                    }
                    return None;
                }
                Some(b',') if self.index > 0 => {
                    self.pos += 1;
                    self.skip_ws();
                }
                None => return self.fail("JSON array: the body ends before `]`".into()),
                _ if self.index > 0 => {
                    return self.fail(format!(
                        "JSON array: expected `,` or `]` after record {}",
                        self.index
                    ));
                }
                _ => {}
            }
        } else if self.pos >= self.body.len() {
            self.done = true;
            return None;
        }
        match parse(&self.body, self.pos) {
            Some(Ok((value, end))) => {
                self.pos = end;
                self.index += 1;
                Some(Ok(value))
            }
            Some(Err(e)) => {
                let what = if self.array { "JSON array" } else { "NDJSON" };
                self.fail(format!("{what} record {}: {e}", self.index + 1))
            }
            None => {
                self.done = true;
                if self.array {
                    Some(Err("JSON array: the body ends before `]`".into()))
                } else {
                    None
                }
            }
        }
    }

    /// The next record parsed into a [`Tape`] over its bytes (see [`Records::tapes`]).
    pub fn next_tape(&mut self) -> Option<Result<Tape, String>> {
        self.step(|body, start| {
            let slice = body.get(start..)?;
            let mut stream = serde_json::Deserializer::from_slice(slice).into_iter::<Parsed<'_>>();
            match stream.next()? {
                Ok(parsed) => {
                    let end = start + stream.byte_offset();
                    let tape = parsed.into_tape(body.slice(start..end), slice.as_ptr() as usize);
                    Some(Ok((tape, end)))
                }
                Err(e) => Some(Err(e)),
            }
        })
    }

    /// The records as tapes: parsed once, strings left in the body, no `Value` made.
    pub fn tapes(self) -> Tapes {
        Tapes(self)
    }
}

/// The records of a body as [`Tape`]s (see [`Records::tapes`]).
#[derive(Debug, Clone)]
pub struct Tapes(Records);

impl Iterator for Tapes {
    type Item = Result<Tape, String>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_tape()
    }
}

impl Iterator for Records {
    type Item = Result<(Value, Bytes), String>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(|body, start| {
            let mut stream =
                serde_json::Deserializer::from_slice(body.get(start..)?).into_iter::<Value>();
            match stream.next()? {
                Ok(value) => {
                    let end = start + stream.byte_offset();
                    Some(Ok(((value, body.slice(start..end)), end)))
                }
                Err(e) => Some(Err(e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn formats() {
        assert!(parse_records(b"").unwrap().is_empty());
        assert!(parse_records(b" \n").unwrap().is_empty());
        assert_eq!(parse_records(b"[{\"a\":1},{\"a\":2}]").unwrap().len(), 2);
        assert_eq!(parse_records(b"{\"a\":1}\n{\"a\":2}\n").unwrap().len(), 2);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let text = format!("[{}{{\"a\":1}}]", "{\"a\":1},".repeat(999));
        gz.write_all(text.as_bytes()).unwrap();
        let zipped = gz.finish().unwrap();
        assert_eq!(inflated_size_hint(&zipped), text.len());
        assert_eq!(parse_records(&zipped).unwrap().len(), 1000);
        assert_eq!(parse_records_owned(zipped).unwrap().len(), 1000);
        assert!(parse_records(b"[{\"a\":1}").is_err());
        assert!(parse_records(b"{\"a\":1}\nnope").is_err());
    }

    fn records(body: &'static [u8]) -> Result<Vec<(Value, String)>, String> {
        Records::new(Bytes::from_static(body))
            .map(|r| r.map(|(v, raw)| (v, String::from_utf8(raw.to_vec()).unwrap())))
            .collect()
    }

    #[test]
    fn records_one_at_a_time_with_their_bytes() {
        let got = records(b"\xEF\xBB\xBF [ {\"a\": 1} ,\n{\"a\":[2, 3]} ]\n").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, "{\"a\": 1}");
        assert_eq!(got[1].0["a"][1], 3);
        assert_eq!(got[1].1, "{\"a\":[2, 3]}");
        assert!(records(b"[]").unwrap().is_empty());
        assert!(records(b"").unwrap().is_empty());
        assert!(records(b"  \n").unwrap().is_empty());
        let nd = records(b"{\"a\":1}\n{\"a\":2}\n").unwrap();
        assert_eq!(
            nd.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
            ["{\"a\":1}", "{\"a\":2}"]
        );
        for bad in [
            &b"[{\"a\":1}"[..],
            b"[{\"a\":1} {\"a\":2}]",
            b"[{\"a\":1},]",
            b"[1] x",
            b"{\"a\":1}\nnope",
        ] {
            let all: Vec<_> = Records::new(Bytes::from_static(bad)).collect();
            assert!(
                all.last().is_some_and(Result::is_err),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn tapes_are_the_records() {
        for body in [
            &b"[ {\"a\": 1} ,\n{\"a\":[2, \"x\\ny\"]} ]"[..],
            b"{\"a\":1}\n{\"b\":{\"c\":null}}\n",
            b"",
            b"[]",
        ] {
            let values: Vec<_> = Records::new(Bytes::from_static(body)).collect();
            let tapes: Vec<_> = Records::new(Bytes::from_static(body)).tapes().collect();
            assert_eq!(values.len(), tapes.len());
            for (v, t) in values.iter().zip(&tapes) {
                let (v, raw) = v.as_ref().unwrap();
                let t = t.as_ref().unwrap();
                assert_eq!(t.value(), v);
                assert_eq!(t.raw(), raw);
            }
        }
        for bad in [&b"[{\"a\":1}"[..], b"[{\"a\":1},]", b"{\"a\":1}\nnope"] {
            let all: Vec<_> = Records::new(Bytes::from_static(bad)).tapes().collect();
            assert!(all.last().is_some_and(Result::is_err));
        }
    }

    #[test]
    fn records_agree_with_parse_records() {
        let body = br#"[{"src":{"ip":"10.0.0.1"},"n":1},{"dst":{"fqdn":"x.example"},"n":2}]"#;
        let all: Vec<Value> = Records::new(Bytes::from_static(body))
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(all, parse_records(body).unwrap());
    }
}
