//! A length of time as written in pipeline and settings files.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};

/// The longest length of time vigil accepts anywhere (100 years): longer ones are
/// errors where they are written, so adding one to a time can never overflow.
pub const MAX_LENGTH: std::time::Duration = std::time::Duration::from_secs(100 * 31_557_600);

/// A length of time written as text (`30s`, `2h`, `1d`): at most [`MAX_LENGTH`]. The
/// error says what to write instead.
pub fn parse_length(text: &str) -> Result<std::time::Duration, String> {
    let body = text.trim();
    if body.chars().all(|c| c.is_ascii_digit()) && !body.is_empty() {
        return Err(format!(
            "`{text}` has no unit: write `{body}s`, `{body}m` or `{body}h`"
        ));
    }
    let length = humantime::parse_duration(body).map_err(|e| {
        format!("`{text}` is not a duration ({e}): write e.g. `30s`, `10m`, `1h30m` or `1d`")
    })?;
    if length > MAX_LENGTH {
        return Err(format!(
            "`{text}` is longer than 100 years (`100y`), the longest length of time vigil accepts"
        ));
    }
    Ok(length)
}

/// A length of time written as text: `500ms`, `30s`, `10m`, `1h30m`, `1d`; at most
/// [`MAX_LENGTH`].
///
/// A leading `-` is accepted by the parser so that `vigil validate` can say "must be
/// greater than zero" at the right place instead of a generic parse error.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Duration {
    inner: std::time::Duration,
    negative: bool,
}

impl Duration {
    /// A positive duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Duration {
        Duration {
            inner: std::time::Duration::from_secs(secs),
            negative: false,
        }
    }

    /// A positive duration of `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Duration {
        Duration {
            inner: std::time::Duration::from_millis(ms),
            negative: false,
        }
    }

    /// The duration; zero when it was written negative (validation rejects that first).
    pub fn get(&self) -> std::time::Duration {
        if self.negative {
            std::time::Duration::ZERO
        } else {
            self.inner
        }
    }

    /// The duration as a span of event time (saturating on absurd values; zero when
    /// written negative).
    pub fn span(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.get()).unwrap_or(chrono::Duration::MAX)
    }

    /// Whether it is greater than zero.
    pub fn is_positive(&self) -> bool {
        !self.negative && !self.inner.is_zero()
    }

    /// Whether it was written negative (and is not zero).
    pub fn is_negative(&self) -> bool {
        self.negative && !self.inner.is_zero()
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        write!(f, "{}", humantime::format_duration(self.inner))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let trimmed = text.trim();
        let (negative, body) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, trimmed),
        };
        let inner = parse_length(body).map_err(|e| {
            // Name what was written, sign included.
            serde::de::Error::custom(e.replacen(&format!("`{body}`"), &format!("`{text}`"), 1))
        })?;
        Ok(Duration { inner, negative })
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A length of time: a number and a unit (ms, s, m, h, d), e.g. `30s`, `10m`, `1h30m`; at most 100 years.",
            "examples": ["30s", "10m", "1h30m"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(s: &str) -> Result<Duration, String> {
        serde_json::from_value::<Duration>(serde_json::Value::String(s.into()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn durations() {
        assert_eq!(dur("10m").unwrap().get().as_secs(), 600);
        assert_eq!(dur("1h 30m").unwrap().get().as_secs(), 5400);
        assert!(dur("0s").unwrap().get().is_zero());
        assert!(!dur("0s").unwrap().is_positive());
        let neg = dur("-5m").unwrap();
        assert!(!neg.is_positive());
        assert_eq!(neg.to_string(), "-5m");
        assert!(dur("10").unwrap_err().contains("no unit"));
        assert!(dur("ten minutes").unwrap_err().contains("not a duration"));
        assert_eq!(dur("100y").unwrap().get(), MAX_LENGTH);
        for long in ["300000y", "1000000y", "101y", "36525d 1s", "-300000y"] {
            let e = dur(long).unwrap_err();
            assert!(e.contains("longer than 100 years"), "{long}: {e}");
            assert!(e.contains(&format!("`{long}`")), "{long}: {e}");
        }
        // Past what humantime can hold at all.
        assert!(
            dur("99999999999999999999y")
                .unwrap_err()
                .contains("not a duration")
        );
    }
}
