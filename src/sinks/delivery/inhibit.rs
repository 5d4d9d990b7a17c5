//! Inhibition: while an alert matching a rule's `source` fires, alerts matching its
//! `target` (with the same values at its `equal` paths) are not notified — "PCE
//! unreachable" (or refusing vigil's API key) mutes every traffic rule of that PCE.
//!
//! Rules are written in the settings (`inhibit:`). The [`Inhibitor`] is one board for the
//! whole engine: every alert a stage raises is shown to it (the runtime does that where
//! it records the alert history), and the delivering sinks ask it, each time they look at
//! a notification group, which firing alerts are muted. When the source alert resolves,
//! its targets are new again at their group's next look.

use std::collections::HashMap;
use std::sync::Mutex;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::event::{Alert, AlertStatus, FieldPath};

/// The most source alerts the board holds; beyond, the oldest is forgotten and counted.
pub const MAX_SOURCES: usize = 10_000;

/// One inhibition rule of the settings.
///
/// ```yaml
/// inhibit:
///   - source: { pipeline: pce-health, group.status: [unreachable, unauthorized, forbidden, critical] }
///     target: { pipeline: { regex: "blocked-traffic|admin-ports|exfiltration" } }
///     equal: []
/// ```
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    /// The alerts that mute: every path (into the alert's JSON form: `pipeline`, `stage`,
    /// `severity`, `group.src.ip`, `fields.x`) must hold the value given — a value, a list
    /// of values (any of them), or `{regex: "..."}` (anchored at both ends).
    pub source: IndexMap<String, MatchValue>,
    /// The alerts that are muted while a source alert fires; the same form as `source`.
    pub target: IndexMap<String, MatchValue>,
    /// Paths whose values must be equal in the source and the target alert (a missing
    /// value equals only a missing value). Default: none (every target is muted).
    #[serde(default)]
    pub equal: Vec<String>,
}

/// What a path of a matcher must hold.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MatchValue {
    /// Any of these values.
    Any(Vec<Value>),
    /// A regular expression, anchored at both ends.
    Regex {
        /// The expression.
        regex: String,
    },
    /// This value (numbers compare as numbers, other values as their text).
    One(Value),
}

impl InhibitRuleConfig {
    /// Checks the rule (paths that parse, expressions that compile); problems at
    /// `pointer/...`.
    pub fn check(&self, pointer: &str, p: &mut Problems) {
        for (side, m) in [("source", &self.source), ("target", &self.target)] {
            if m.is_empty() {
                p.error(
                    format!("{pointer}/{side}"),
                    codes::INVALID_VALUE,
                    format!(
                        "`{side}` needs at least one path to match, or it would match every alert"
                    ),
                );
            }
            for (path, v) in m {
                let at = format!(
                    "{pointer}/{side}/{}",
                    path.replace('~', "~0").replace('/', "~1")
                );
                if let Err(e) = FieldPath::parse(path) {
                    p.error(at.clone(), codes::INVALID_VALUE, e.to_string());
                }
                if let MatchValue::Regex { regex } = v
                    && let Err(e) = regex::Regex::new(&format!("^(?:{regex})$"))
                {
                    p.error(
                        format!("{at}/regex"),
                        codes::INVALID_VALUE,
                        format!("not a regular expression: {e}"),
                    );
                }
            }
        }
        for (i, path) in self.equal.iter().enumerate() {
            if let Err(e) = FieldPath::parse(path) {
                p.error(
                    format!("{pointer}/equal/{i}"),
                    codes::INVALID_VALUE,
                    e.to_string(),
                );
            }
        }
    }
}

/// A compiled path matcher.
#[derive(Debug, Clone)]
enum Test {
    Values(Vec<Value>),
    Regex(regex::Regex),
}

#[derive(Debug, Clone)]
struct Matchers(Vec<(FieldPath, Test)>);

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => text(a) == text(b),
    }
}

impl Matchers {
    fn compile(m: &IndexMap<String, MatchValue>) -> Result<Matchers, String> {
        let mut out = Vec::with_capacity(m.len());
        for (path, v) in m {
            let fp = FieldPath::parse(path).map_err(|e| e.to_string())?;
            let test = match v {
                MatchValue::One(x) => Test::Values(vec![x.clone()]),
                MatchValue::Any(xs) => Test::Values(xs.clone()),
                MatchValue::Regex { regex } => Test::Regex(
                    regex::Regex::new(&format!("^(?:{regex})$")).map_err(|e| e.to_string())?,
                ),
            };
            out.push((fp, test));
        }
        Ok(Matchers(out))
    }

    fn matches(&self, alert: &Value) -> bool {
        !self.0.is_empty()
            && self.0.iter().all(|(path, test)| {
                path.any(alert, &mut |v| match test {
                    Test::Values(xs) => xs.iter().any(|x| same(x, v)),
                    Test::Regex(re) => re.is_match(&text(v)),
                })
            })
    }
}

#[derive(Debug, Clone)]
struct Rule {
    source: Matchers,
    target: Matchers,
    equal: Vec<FieldPath>,
}

impl Rule {
    fn equal_values(&self, alert: &Value) -> Vec<Option<Value>> {
        self.equal.iter().map(|p| p.first(alert).cloned()).collect()
    }
}

/// A firing source alert: for each rule it is a source of, its `equal` values.
#[derive(Debug, Clone)]
struct Source {
    rules: Vec<(usize, Vec<Option<Value>>)>,
    seq: u64,
}

#[derive(Debug, Default)]
struct Board {
    sources: HashMap<String, Source>,
    seq: u64,
    evicted: u64,
}

/// The engine's inhibition rules and the firing alerts that are their sources.
#[derive(Debug, Default)]
pub struct Inhibitor {
    rules: Vec<Rule>,
    board: Mutex<Board>,
}

impl Inhibitor {
    /// The inhibitor of `rules` (checked by `vigil validate` first; a rule that does not
    /// compile is left out and logged).
    pub fn new(rules: &[InhibitRuleConfig]) -> Inhibitor {
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let compiled = Matchers::compile(&r.source).and_then(|source| {
                let target = Matchers::compile(&r.target)?;
                let equal = r
                    .equal
                    .iter()
                    .map(|p| FieldPath::parse(p).map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Rule {
                    source,
                    target,
                    equal,
                })
            });
            match compiled {
                Ok(rule) => out.push(rule),
                Err(e) => tracing::error!(rule = i, error = %e, "inhibit rule left out"),
            }
        }
        Inhibitor {
            rules: out,
            board: Mutex::default(),
        }
    }

    /// Whether there are rules at all (nothing to do otherwise).
    pub fn is_active(&self) -> bool {
        !self.rules.is_empty()
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Shows the board a report of `alert` (`form`: its JSON form): a firing source alert
    /// starts or goes on muting, a resolved one stops.
    pub fn observe(&self, alert: &Alert, form: &Value) {
        if self.rules.is_empty() {
            return;
        }
        let mut board = self.board();
        if alert.status == AlertStatus::Resolved {
            board.sources.remove(&alert.id);
            return;
        }
        let rules: Vec<(usize, Vec<Option<Value>>)> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.source.matches(form))
            .map(|(i, r)| (i, r.equal_values(form)))
            .collect();
        if rules.is_empty() {
            return;
        }
        board.seq += 1;
        let seq = board.seq;
        if !board.sources.contains_key(&alert.id) && board.sources.len() >= MAX_SOURCES {
            let oldest = board
                .sources
                .iter()
                .min_by_key(|(_, s)| s.seq)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                board.sources.remove(&k);
                board.evicted += 1;
                if board.evicted == 1 {
                    tracing::warn!(
                        max = MAX_SOURCES,
                        "the inhibition board is full: forgetting the oldest source alert"
                    );
                }
            }
        }
        board
            .sources
            .insert(alert.id.clone(), Source { rules, seq });
    }

    /// Whether `alert` (`form`: its JSON form) is muted by a firing source alert now.
    pub fn mutes(&self, alert: &Alert, form: &Value) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let targeted: Vec<(usize, Vec<Option<Value>>)> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.target.matches(form))
            .map(|(i, r)| (i, r.equal_values(form)))
            .collect();
        if targeted.is_empty() {
            return false;
        }
        let board = self.board();
        board.sources.iter().any(|(id, s)| {
            id != &alert.id
                && s.rules.iter().any(|(i, eq)| {
                    targeted.iter().any(|(j, teq)| {
                        i == j
                            && eq.len() == teq.len()
                            && eq.iter().zip(teq).all(|(a, b)| match (a, b) {
                                (Some(a), Some(b)) => same(a, b),
                                (None, None) => true,
                                _ => false,
                            })
                    })
                })
        })
    }

    /// Source alerts held, and forgotten to stay under [`MAX_SOURCES`].
    pub fn counts(&self) -> (usize, u64) {
        let b = self.board();
        (b.sources.len(), b.evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::delivery::sample_alert;
    use serde_json::json;

    fn rules(v: Value) -> Inhibitor {
        let cfg: Vec<InhibitRuleConfig> = serde_json::from_value(v).unwrap();
        let mut p = Problems::default();
        for (i, r) in cfg.iter().enumerate() {
            r.check(&format!("/inhibit/{i}"), &mut p);
        }
        assert!(p.items.is_empty(), "{:?}", p.items);
        Inhibitor::new(&cfg)
    }

    fn alert(pipeline: &str, group: Value, status: AlertStatus) -> (Alert, Value) {
        let mut a = sample_alert();
        a.pipeline = pipeline.into();
        a.group = group;
        a.status = status;
        a.id = format!("{pipeline}/{}", a.group);
        let form = a.to_value();
        (a, form)
    }

    #[test]
    fn a_firing_source_mutes_its_targets_until_it_resolves() {
        let inh = rules(json!([{
            "source": {"pipeline": "pce-health", "group.status": ["unreachable", "critical"]},
            "target": {"pipeline": {"regex": "blocked-.*|admin-ports"}},
        }]));
        let (target, tform) = alert(
            "blocked-traffic",
            json!({"src": {"ip": "10.0.0.1"}}),
            AlertStatus::Firing,
        );
        let (other, oform) = alert("failed-logins", json!({}), AlertStatus::Firing);
        assert!(!inh.mutes(&target, &tform));
        let (warn, wform) = alert(
            "pce-health",
            json!({"status": "warning"}),
            AlertStatus::Firing,
        );
        inh.observe(&warn, &wform);
        assert!(!inh.mutes(&target, &tform), "warning is not a source");
        let (down, dform) = alert(
            "pce-health",
            json!({"status": "unreachable"}),
            AlertStatus::Firing,
        );
        inh.observe(&down, &dform);
        assert!(inh.mutes(&target, &tform));
        assert!(!inh.mutes(&other, &oform), "not a target");
        let (up, uform) = alert(
            "pce-health",
            json!({"status": "unreachable"}),
            AlertStatus::Resolved,
        );
        inh.observe(&up, &uform);
        assert!(!inh.mutes(&target, &tform));
        assert_eq!(inh.counts(), (0, 0));
    }

    #[test]
    fn equal_paths_must_hold_the_same_values() {
        let inh = rules(json!([{
            "source": {"stage": "down"},
            "target": {"stage": "burst"},
            "equal": ["group.connection"],
        }]));
        let mk = |stage: &str, conn: Option<&str>| {
            let mut a = sample_alert();
            a.stage = stage.into();
            a.group = match conn {
                Some(c) => json!({"connection": c}),
                None => json!({}),
            };
            a.id = format!("{stage}/{conn:?}");
            let f = a.to_value();
            (a, f)
        };
        let (src, sf) = mk("down", Some("pce-a"));
        inh.observe(&src, &sf);
        let (a, af) = mk("burst", Some("pce-a"));
        let (b, bf) = mk("burst", Some("pce-b"));
        let (c, cf) = mk("burst", None);
        assert!(inh.mutes(&a, &af));
        assert!(!inh.mutes(&b, &bf));
        assert!(!inh.mutes(&c, &cf));
    }

    #[test]
    fn an_alert_does_not_mute_itself_and_bad_rules_are_reported() {
        let inh = rules(
            json!([{"source": {"severity": "critical"}, "target": {"severity": "critical"}}]),
        );
        let (a, af) = alert("p", json!({}), AlertStatus::Firing);
        let mut a = a;
        a.severity = crate::event::Severity::Critical;
        let af = {
            let _ = af;
            a.to_value()
        };
        inh.observe(&a, &af);
        assert!(!inh.mutes(&a, &af));

        let cfg: Vec<InhibitRuleConfig> = serde_json::from_value(json!([
            {"source": {}, "target": {"a..b": 1, "x": {"regex": "("}}, "equal": [""]}
        ]))
        .unwrap();
        let mut p = Problems::default();
        cfg[0].check("/inhibit/0", &mut p);
        let pointers: Vec<&str> = p.items.iter().map(|i| i.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            vec![
                "/inhibit/0/source",
                "/inhibit/0/target/a..b",
                "/inhibit/0/target/x/regex",
                "/inhibit/0/equal/0"
            ]
        );
    }
}
