//! Reading response bodies: streaming into one buffer, gzip by magic bytes, JSON arrays
//! and NDJSON.

use std::io::Read;

use serde_json::Value;

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
}
