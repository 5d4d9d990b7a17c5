//! The `filter` stage's configuration.

use std::sync::Arc;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

use super::matcher::{CompiledFilter, FilterStage, IpListWatch, WhereExpr};
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::diagnostic::to_pointer;
use crate::node::{BuildContext, NodeError, Stage};
use crate::pce::names::NameCache;

/// Conditions by field path; all must hold.
pub type Conditions = IndexMap<String, Matcher>;

/// Keeps the events that match declarative conditions and drops the rest.
///
/// An event passes when every condition of `match` holds, at least one group of `any`
/// holds (if `any` is given), and `exclude` does not hold. A condition is a field path and
/// what its value must be:
///
/// - a single value: equal to it (`service.port: 22`). A string that is an IP network
///   (`10.0.0.0/8`) matches IP addresses inside it; an IP address matches the same address
///   in any notation. Numbers match numbers and numeric strings alike.
/// - a list: equal to any of its values (`policy_decision: [blocked, potentially_blocked]`).
/// - a mapping of operators, all of which must hold: `eq`, `ne`, `in`, `not_in`, `gt`,
///   `gte`, `lt`, `lte`, `regex`, `cidr`, `not_cidr`, `exists`, `contains`, `starts_with`,
///   `ends_with`.
///
/// A path that crosses a list visits every element (`notifications.notification_type`);
/// a positive condition holds when any value it reaches matches, a negative one (`ne`,
/// `not_in`, `not_cidr`) when none does. A missing field fails positive conditions and
/// passes negative ones.
///
/// PCE audit events: a condition on `event_type` also sees the event's notification
/// types (`notifications.notification_type`). A failed login is not an event type of its
/// own — the PCE reports a `user.sign_in` or `user.login` event with `status: failure`
/// carrying a `user.login_failed` (or `request.authentication_failed`) notification — so
/// `event_type: user.login_failed` finds it, and `event_type: {ne: ...}` holds only when
/// neither the type nor any notification type is that value.
///
/// `where` adds a Rhai expression (see `plugins/README.md`) that must return `true`, for
/// what conditions cannot say: `event.bytes_in > 10 * event.bytes_out`. It sees the record
/// as the map `event` (`event.src.ip`); a missing field reads as `()`. It runs after the
/// conditions, in a sandbox (no modules, no `eval`, at most 100000 operations and 50 ms per
/// event). Comparing values of different types is `false` (`() > 5`, `"6" == 6`). A
/// result other than `true` or `false`, or an error (a method called on a missing field, a
/// limit reached), drops the event and is counted and logged (once per 1000 errors); the
/// stage keeps running. `vigil validate` reports syntax errors at their position inside
/// the expression.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct FilterConfig {
    /// The sources or stages this stage reads.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// Conditions that must all hold, by field path.
    #[serde(default, rename = "match")]
    pub match_: Conditions,
    /// Groups of conditions; at least one group must hold (a group holds when all its
    /// conditions do).
    #[serde(default)]
    pub any: Vec<Conditions>,
    /// Events that match this are dropped. A mapping: dropped when all its conditions hold.
    /// A list of mappings: dropped when any of them holds.
    #[serde(default)]
    pub exclude: Option<Exclude>,
    /// A Rhai expression that must return `true` for the event to pass, e.g.
    /// `event.service.port in [22, 3389] && event.num_connections > 5`.
    #[serde(default, rename = "where")]
    pub where_: Option<String>,
}

fn example() -> serde_json::Value {
    serde_json::json!({
        "inputs": ["flows"],
        "match": {
            "policy_decision": ["blocked", "potentially_blocked"],
            "service.port": [22, 3389],
            "num_connections": {"gte": 5}
        },
        "exclude": {"src.ip": ["10.20.0.0/16"]},
        "where": "event.bytes_in > 10 * event.bytes_out"
    })
}

/// What `exclude` holds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Exclude {
    /// Dropped when all these conditions hold.
    All(Conditions),
    /// Dropped when any of these groups holds.
    Any(Vec<Conditions>),
}

/// What a field's value must be.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Matcher {
    // Order matters for `untagged`: a derived struct also accepts a list (field by field),
    // so the list form must be tried before the operators.
    /// Equal to any of these values.
    AnyOf(Vec<Literal>),
    /// Equal to this value.
    Equals(Literal),
    /// Operators, all of which must hold.
    Ops(Box<Operators>),
}

/// A value to compare with.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Literal {
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(f64),
    /// A string; IP addresses and networks (`10.0.0.0/8`) compare as IPs.
    String(String),
    /// `null`: the field is null or missing.
    Null,
}

/// Operators on one field; all given must hold.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Operators {
    /// Equal to this value.
    #[serde(default)]
    pub eq: Option<Literal>,
    /// Not equal to this value (no value the path reaches equals it).
    #[serde(default)]
    pub ne: Option<Literal>,
    /// Equal to one of these values.
    #[serde(default, rename = "in")]
    pub in_: Option<Vec<Literal>>,
    /// Equal to none of these values.
    #[serde(default)]
    pub not_in: Option<Vec<Literal>>,
    /// A number (or numeric string) greater than this.
    #[serde(default)]
    pub gt: Option<f64>,
    /// A number (or numeric string) greater than or equal to this.
    #[serde(default)]
    pub gte: Option<f64>,
    /// A number (or numeric string) less than this.
    #[serde(default)]
    pub lt: Option<f64>,
    /// A number (or numeric string) less than or equal to this.
    #[serde(default)]
    pub lte: Option<f64>,
    /// A string matching this regular expression (Rust `regex` syntax, unanchored: use
    /// `^...$` to match the whole value).
    #[serde(default)]
    pub regex: Option<String>,
    /// An IP address inside one of these networks or equal to one of these addresses.
    #[serde(default)]
    pub cidr: Option<Vec<String>>,
    /// An IP address outside all of these networks and addresses.
    #[serde(default)]
    pub not_cidr: Option<Vec<String>>,
    /// `true`: the field is present and not null. `false`: it is missing or null.
    #[serde(default)]
    pub exists: Option<bool>,
    /// A string containing this text.
    #[serde(default)]
    pub contains: Option<String>,
    /// A string starting with this text.
    #[serde(default)]
    pub starts_with: Option<String>,
    /// A string ending with this text.
    #[serde(default)]
    pub ends_with: Option<String>,
}

impl FilterConfig {
    /// Structural checks: field paths parse, regexes compile, networks are networks.
    pub fn check(&self, problems: &mut Problems) {
        if let Err(errors) = CompiledFilter::compile(self) {
            for (pointer, at_key, message) in errors {
                if at_key {
                    problems.error_at_key(pointer, codes::INVALID_VALUE, message);
                } else {
                    problems.error(pointer, codes::INVALID_VALUE, message);
                }
            }
        }
        if let Some(expr) = &self.where_ {
            match WhereExpr::compile(expr, "check") {
                Err(e) => {
                    problems.error_inside("/where", (e.line, e.col), codes::SCRIPT, e.message);
                }
                Ok(w) => {
                    if let Some((what, noun)) = w.non_bool_result() {
                        let on = if noun.is_empty() {
                            "an empty record".to_string()
                        } else {
                            format!("a sample {noun}")
                        };
                        problems.error(
                            "/where",
                            codes::SCRIPT,
                            format!(
                                "`where` must give `true` or `false`, but on {on} this expression gives {what} (every event would be dropped): compare it, e.g. `... > 0` or `... == \"x\"`"
                            ),
                        );
                    }
                }
            }
        }
        if self.match_.is_empty()
            && self.any.is_empty()
            && self.exclude.is_none()
            && self.where_.is_none()
        {
            problems.warning_at_key(
                "",
                codes::INVALID_VALUE,
                "this filter has no `match`, `any`, `exclude` or `where`: it passes every event",
            );
        }
    }

    /// The IP list names its `ip_list:Name` operands use (for checks against a PCE:
    /// `vigil validate` cannot know them offline). Empty when it does not compile.
    pub fn ip_list_names(&self) -> Vec<String> {
        CompiledFilter::compile(self)
            .map(|c| c.ip_list_names())
            .unwrap_or_default()
    }

    /// Builds the running stage.
    /// `names` are the name caches of the PCE connections, for `ip_list:` operands.
    pub fn build(
        &self,
        cx: &BuildContext,
        names: &[Arc<NameCache>],
    ) -> Result<Box<dyn Stage>, NodeError> {
        let mut compiled = CompiledFilter::compile(self).map_err(|errors| {
            let msgs: Vec<String> = errors.into_iter().map(|(_, _, m)| m).collect();
            NodeError::from(msgs.join("; "))
        })?;
        if compiled.uses_ip_lists() {
            if names.is_empty() {
                tracing::warn!(stage = %cx.id, "`ip_list:` operands need a PCE connection; they match only the list's name");
            }
            compiled.resolve_ip_lists(names);
        }
        let ip_list_names = compiled.ip_list_names();
        let mut stage = FilterStage::new(compiled);
        if !ip_list_names.is_empty() && !names.is_empty() {
            stage = stage.with_ip_list_watch(IpListWatch::new(
                cx.id.clone(),
                ip_list_names,
                names,
                cx.counters.clone(),
            ));
        }
        if let Some(expr) = &self.where_ {
            let w = WhereExpr::compile(expr, &cx.id).map_err(|e| {
                NodeError::from(format!(
                    "`where` does not compile at {}:{}: {}",
                    e.line, e.col, e.message
                ))
            })?;
            stage = stage.with_where(w.counting_into(cx.counters.clone()));
        }
        Ok(Box::new(stage))
    }
}

/// JSON pointer of a condition inside the filter config.
pub(super) fn condition_pointer(prefix: &[&str], path: &str) -> String {
    to_pointer(prefix.iter().copied().chain(std::iter::once(path)))
}
