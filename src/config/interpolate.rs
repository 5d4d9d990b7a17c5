//! `${VAR}` interpolation and scalar typing: the YAML tree becomes a JSON value.
//!
//! - `${NAME}`: the variable's value; unset is an error at the `${` (set it, or give a
//!   default).
//! - `${NAME:-default}`: the default when the variable is unset or empty.
//! - `$$`: a literal `$`. A `$` not followed by `{` or `$` is kept as it is.
//!
//! Interpolation runs on the raw text of every scalar value (not on keys). A plain scalar is
//! typed after interpolation, so `port: ${SMTP_PORT:-25}` is the number 25; quoted scalars
//! stay strings.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Number, Value};

use super::yaml::{Node, NodeValue, Pos, Scalar, to_pointer};

/// Where `${VAR}` values come from.
#[derive(Debug, Clone, Default)]
pub enum Env {
    /// The process environment.
    #[default]
    Process,
    /// A fixed set of variables (tests, embedding).
    Map(HashMap<String, String>),
    /// Do not look variables up: check the syntax only (`vigil validate --no-env`).
    /// Defaults are used; a variable without one is left unresolved and not checked.
    NoEnv,
}

impl Env {
    fn get(&self, name: &str) -> Lookup {
        match self {
            Env::Process => match std::env::var(name) {
                Ok(v) => Lookup::Value(v),
                Err(_) => Lookup::Unset,
            },
            Env::Map(m) => match m.get(name) {
                Some(v) => Lookup::Value(v.clone()),
                None => Lookup::Unset,
            },
            Env::NoEnv => Lookup::Skipped,
        }
    }
}

enum Lookup {
    Value(String),
    Unset,
    Skipped,
}

/// A problem with a `${...}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    /// Where the `${` is.
    pub pos: Pos,
    /// `env-unset` or `env-syntax`.
    pub code: &'static str,
    /// What to fix.
    pub message: String,
}

/// The JSON form of a YAML document and what interpolation found on the way.
#[derive(Debug, Default)]
pub struct Resolved {
    /// The document as JSON.
    pub value: Value,
    /// Problems with `${...}` references.
    pub errors: Vec<InterpolationError>,
    /// JSON pointers of values that came (at least partly) from the environment: messages
    /// about them must not echo the value, which may be a secret.
    pub from_env: BTreeSet<String>,
    /// JSON pointers of values left unresolved under [`Env::NoEnv`]: type checks on them
    /// are skipped.
    pub unresolved: BTreeSet<String>,
}

/// Maps character offsets of a source to line and column.
pub struct LineIndex {
    /// Character offset where each line starts.
    starts: Vec<usize>,
    chars: Vec<char>,
}

impl LineIndex {
    /// Indexes `source`.
    pub fn new(source: &str) -> LineIndex {
        let chars: Vec<char> = source.chars().collect();
        let mut starts = vec![0];
        for (i, c) in chars.iter().enumerate() {
            if *c == '\n' {
                starts.push(i + 1);
            }
        }
        LineIndex { starts, chars }
    }

    /// The position of character offset `idx`.
    pub fn pos(&self, idx: usize) -> Pos {
        let line = self.starts.partition_point(|s| *s <= idx);
        let start = self.starts[line.saturating_sub(1)];
        Pos {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            col: u32::try_from(idx - start + 1).unwrap_or(u32::MAX),
        }
    }

    /// Offsets of every `${` in the character range `[from, to)`.
    fn dollar_braces(&self, from: usize, to: usize) -> Vec<usize> {
        let to = to.min(self.chars.len());
        let mut out = Vec::new();
        let mut i = from;
        while i + 1 < to {
            if self.chars[i] == '$' && self.chars[i + 1] == '$' {
                i += 2;
                continue;
            }
            if self.chars[i] == '$' && self.chars[i + 1] == '{' {
                out.push(i);
            }
            i += 1;
        }
        out
    }
}

/// Converts a YAML document to JSON, interpolating `${VAR}` from `env`.
pub fn resolve(doc: &Node, env: &Env, lines: &LineIndex) -> Resolved {
    let mut r = Resolved::default();
    let mut path: Vec<String> = Vec::new();
    r.value = convert(doc, env, lines, &mut path, &mut r);
    r
}

fn convert(
    node: &Node,
    env: &Env,
    lines: &LineIndex,
    path: &mut Vec<String>,
    r: &mut Resolved,
) -> Value {
    match &node.value {
        NodeValue::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                out.push(convert(item, env, lines, path, r));
                path.pop();
            }
            Value::Array(out)
        }
        NodeValue::Map(m) => {
            let mut out = Map::new();
            for e in &m.entries {
                path.push(e.key.clone());
                let v = convert(&e.value, env, lines, path, r);
                path.pop();
                out.insert(e.key.clone(), v);
            }
            Value::Object(out)
        }
        NodeValue::Scalar(s) => {
            let pointer = || to_pointer(path.iter().map(String::as_str));
            let mut outcome = Outcome::default();
            let text = if s.text.contains('$') {
                interpolate(&s.text, env, &mut outcome)
            } else {
                s.text.clone()
            };
            if !outcome.errors.is_empty() {
                // Positions: the k-th `${` of the value is the k-th `${` of the raw text.
                let raw = lines.dollar_braces(node.span.0, node.span.1.max(node.span.0 + 1));
                for (k, (code, message)) in outcome.errors.into_iter() {
                    let pos = raw.get(k).map(|i| lines.pos(*i)).unwrap_or(node.pos);
                    r.errors.push(InterpolationError { pos, code, message });
                }
            }
            if outcome.substituted {
                r.from_env.insert(pointer());
            }
            if outcome.unresolved {
                r.unresolved.insert(pointer());
                return Value::String(text);
            }
            type_scalar(s, text)
        }
    }
}

/// The document as written, without interpolation (`${VAR}` stays text): what an editor
/// checks against the schema. Scalars are typed as YAML types them.
pub fn as_written(doc: &Node) -> Value {
    match &doc.value {
        NodeValue::Seq(items) => Value::Array(items.iter().map(as_written).collect()),
        NodeValue::Map(m) => Value::Object(
            m.entries
                .iter()
                .map(|e| (e.key.clone(), as_written(&e.value)))
                .collect(),
        ),
        NodeValue::Scalar(s) => type_scalar(s, s.text.clone()),
    }
}

#[derive(Default)]
struct Outcome {
    /// (index of the `${` among the scalar's references, code, message)
    errors: Vec<(usize, (&'static str, String))>,
    substituted: bool,
    unresolved: bool,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn interpolate(text: &str, env: &Env, outcome: &mut Outcome) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut k = 0usize;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        let Some(body_and_rest) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let index = k;
        k += 1;
        let Some(close) = body_and_rest.find('}') else {
            outcome.errors.push((
                index,
                (
                    crate::diagnostic::codes::ENV_SYNTAX,
                    "`${` is not closed: write `${NAME}` or `${NAME:-default}` (use `$$` for a literal `$`)".into(),
                ),
            ));
            out.push_str(&rest[i..]);
            return out;
        };
        let body = &body_and_rest[..close];
        rest = &body_and_rest[close + 1..];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if !valid_name(name) {
            outcome.errors.push((
                index,
                (
                    crate::diagnostic::codes::ENV_SYNTAX,
                    format!(
                        "`${{{body}}}`: `{name}` is not a variable name (letters, digits and `_`, not starting with a digit)"
                    ),
                ),
            ));
            continue;
        }
        match (env.get(name), default) {
            (Lookup::Value(v), _) if !v.is_empty() || default.is_none() => {
                outcome.substituted = true;
                out.push_str(&v);
            }
            (Lookup::Value(_) | Lookup::Unset | Lookup::Skipped, Some(d)) => out.push_str(d),
            (Lookup::Unset, None) => outcome.errors.push((
                index,
                (
                    crate::diagnostic::codes::ENV_UNSET,
                    format!(
                        "environment variable `{name}` is not set: set it, or give a default with `${{{name}:-value}}`"
                    ),
                ),
            )),
            (Lookup::Skipped, None) => {
                outcome.unresolved = true;
                out.push_str("${");
                out.push_str(name);
                out.push('}');
            }
            (Lookup::Value(_), None) => unreachable!("covered by the first arm"),
        }
    }
    out.push_str(rest);
    out
}

/// Types a scalar: quoted and block scalars are strings; plain scalars follow the YAML 1.2
/// core schema with strict booleans (`true`/`false` only, so `no` stays a string).
fn type_scalar(s: &Scalar, text: String) -> Value {
    match s.tag.as_deref() {
        Some("str") => return Value::String(text),
        Some("null") => return Value::Null,
        _ => {}
    }
    if !s.plain && s.tag.is_none() {
        return Value::String(text);
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_int(&text) {
        return Value::Number(n);
    }
    if looks_like_float(&text)
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text)
}

fn parse_int(t: &str) -> Option<Number> {
    let (neg, digits) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() {
        return None;
    }
    let (radix, digits) = if let Some(h) = digits.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = digits.strip_prefix("0o") {
        (8, o)
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        let v = i64::try_from(magnitude).ok()?;
        Some(Number::from(-v))
    } else {
        Some(Number::from(magnitude))
    }
}

fn looks_like_float(t: &str) -> bool {
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mantissa_ok = {
        let (int, frac) = match mantissa.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (mantissa, None),
        };
        let int_ok = int.chars().all(|c| c.is_ascii_digit());
        let frac_ok = frac.is_none_or(|f| f.chars().all(|c| c.is_ascii_digit()));
        int_ok && frac_ok && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()))
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    mantissa_ok && exp_ok
}

#[cfg(test)]
mod tests {
    use super::super::yaml;
    use super::*;
    use serde_json::json;

    fn run(src: &str, env: Env) -> Resolved {
        let f = yaml::parse(src);
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        resolve(&f.documents[0], &env, &LineIndex::new(src))
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::Map(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn typing_after_interpolation() {
        let r = run(
            "port: ${PORT}\nq: '${PORT}'\nd: ${NOPE:-25}\nb: no\nt: true\nf: 1.5\nn: ~\nh: 0x1f\ns: 1.2.3\n",
            env(&[("PORT", "2525")]),
        );
        assert!(r.errors.is_empty());
        assert_eq!(
            r.value,
            json!({"port": 2525, "q": "2525", "d": 25, "b": "no", "t": true, "f": 1.5, "n": null, "h": 31, "s": "1.2.3"})
        );
        assert!(r.from_env.contains("/port"));
        assert!(!r.from_env.contains("/d"));
    }

    #[test]
    fn unset_variable_points_at_dollar() {
        let src = "a: 1\nurl: \"https://${HOST}:${PORT}/x\"\n";
        let r = run(src, env(&[("HOST", "pce")]));
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].code, "env-unset");
        assert_eq!(r.errors[0].pos, Pos { line: 2, col: 23 });
    }

    #[test]
    fn syntax_errors_and_escapes() {
        let r = run("a: ${BAD NAME}\nb: $${LIT} $5\nc: ${OPEN\n", env(&[]));
        let codes: Vec<_> = r.errors.iter().map(|e| (e.code, e.pos)).collect();
        assert_eq!(
            codes,
            vec![
                ("env-syntax", Pos { line: 1, col: 4 }),
                ("env-syntax", Pos { line: 3, col: 4 })
            ]
        );
        assert_eq!(r.value["b"], json!("${LIT} $5"));
    }

    #[test]
    fn empty_value_uses_default() {
        let r = run("a: ${E:-x}\nb: ${E}\n", env(&[("E", "")]));
        assert_eq!(r.value, json!({"a": "x", "b": null}));
    }

    #[test]
    fn no_env_leaves_unresolved() {
        let r = run("a: ${X}\nb: ${Y:-3}\n", Env::NoEnv);
        assert!(r.errors.is_empty());
        assert_eq!(r.value, json!({"a": "${X}", "b": 3}));
        assert!(r.unresolved.contains("/a"));
    }
}
