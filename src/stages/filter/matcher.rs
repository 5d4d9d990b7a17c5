//! The compiled form of a filter and the running stage.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use regex::Regex;
use serde_json::Value;

use super::config::{Conditions, Exclude, FilterConfig, Literal, Matcher, condition_pointer};
use crate::event::{Event, Field, FieldPath, Fields, Scalar};
use crate::node::Stage;
use crate::node::internal_event::InternalEvent;
use crate::node::internal_event::ScriptRole;
use crate::pce::names::NameCache;
use crate::stages::script::sandbox::{self, ErrorLog, Limits, RunError, Sandbox};

/// A literal ready to compare.
#[derive(Debug, Clone)]
enum Lit {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Ip(IpAddr),
    Net(IpNet, String),
    /// `ip_list:Name`: an address in the PCE IP list of that name (looked up in the name
    /// caches of the PCE connections at match time), or the name itself.
    IpList(String, Option<Arc<[Arc<NameCache>]>>),
}

impl Lit {
    fn from_literal(l: &Literal) -> Lit {
        match l {
            Literal::Null => Lit::Null,
            Literal::Bool(b) => Lit::Bool(*b),
            Literal::Number(n) => Lit::Num(*n),
            Literal::String(s) => {
                if let Some(name) = s.strip_prefix(IP_LIST_PREFIX) {
                    return Lit::IpList(name.trim().to_string(), None);
                }
                if s.contains('/')
                    && let Ok(net) = s.parse::<IpNet>()
                {
                    return Lit::Net(net, s.clone());
                }
                if let Ok(ip) = s.parse::<IpAddr>() {
                    return Lit::Ip(ip);
                }
                Lit::Str(s.clone())
            }
        }
    }

    fn matches(&self, v: &Scalar<'_>) -> bool {
        match (self, v) {
            (Lit::Null, Scalar::Null) => true,
            (Lit::Bool(b), Scalar::Bool(x)) => b == x,
            (Lit::Bool(b), Scalar::Str(s)) => *s == if *b { "true" } else { "false" },
            (Lit::Num(n), _) => as_number(v) == Some(*n),
            (Lit::Str(s), Scalar::Str(x)) => s == x,
            (Lit::Str(s), Scalar::Num(_)) => s.parse::<f64>().ok() == as_number(v),
            (Lit::Str(s), Scalar::Bool(b)) => s == if *b { "true" } else { "false" },
            (Lit::Ip(ip), Scalar::Str(x)) => x.parse::<IpAddr>().is_ok_and(|a| a == *ip),
            (Lit::Net(net, text), Scalar::Str(x)) => {
                x == text
                    || x.parse::<IpAddr>().is_ok_and(|a| net.contains(&a))
                    || x.parse::<IpNet>().is_ok_and(|n| net.contains(&n))
            }
            (Lit::IpList(name, caches), Scalar::Str(x)) => {
                x == name
                    || x.parse::<IpAddr>().is_ok_and(|ip| {
                        caches
                            .iter()
                            .flat_map(|c| c.iter())
                            .any(|c| c.ip_list_contains(name, ip) == Some(true))
                    })
            }
            _ => false,
        }
    }
}

/// The prefix of an operand naming a PCE IP list.
const IP_LIST_PREFIX: &str = "ip_list:";

fn as_number(v: &Scalar<'_>) -> Option<f64> {
    match v {
        Scalar::Num(n) => n.as_f64(),
        Scalar::Str(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

fn as_text<'a>(v: &Scalar<'a>) -> Option<std::borrow::Cow<'a, str>> {
    match v {
        Scalar::Str(s) => Some((*s).into()),
        Scalar::Num(n) => Some(n.to_string().into()),
        Scalar::Bool(b) => Some(if *b { "true" } else { "false" }.into()),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// One test on the values a path reaches.
#[derive(Debug, Clone)]
enum Test {
    /// Some value equals one of these.
    AnyOf(Vec<Lit>),
    /// No value equals any of these.
    NoneOf(Vec<Lit>),
    Cmp(Cmp, f64),
    Regex(Regex),
    Contains(String),
    StartsWith(String),
    EndsWith(String),
    Exists(bool),
}

#[derive(Debug, Clone)]
struct Condition {
    path: FieldPath,
    /// A second path whose values count as the path's own: `event_type` also sees the
    /// notification types of a PCE event.
    also: Option<FieldPath>,
    tests: Vec<Test>,
}

/// The path whose conditions also look at [`NOTIFICATION_TYPES`].
const EVENT_TYPE: &str = "event_type";
/// Where a PCE event lists its notification types.
const NOTIFICATION_TYPES: &str = "notifications.notification_type";

impl Condition {
    /// Calls `visit` with every scalar (or `Other`) the condition's paths reach.
    fn any(&self, data: &impl Fields, visit: &mut dyn FnMut(&Scalar<'_>) -> bool) -> bool {
        let mut each = |f: Field<'_>| visit(&f.scalar());
        data.visit(&self.path, &mut each)
            || self.also.as_ref().is_some_and(|a| data.visit(a, &mut each))
    }

    fn holds(&self, data: &impl Fields) -> bool {
        self.tests.iter().all(|t| self.test(t, data))
    }

    fn test(&self, t: &Test, data: &impl Fields) -> bool {
        match t {
            Test::AnyOf(lits) => {
                if lits.iter().any(|l| matches!(l, Lit::Null))
                    && data.field(&self.path).is_none()
                    && self.also.as_ref().is_none_or(|a| data.field(a).is_none())
                {
                    return true;
                }
                self.any(data, &mut |v| lits.iter().any(|l| l.matches(v)))
            }
            Test::NoneOf(lits) => !self.any(data, &mut |v| lits.iter().any(|l| l.matches(v))),
            Test::Cmp(op, x) => self.any(data, &mut |v| {
                as_number(v).is_some_and(|n| match op {
                    Cmp::Gt => n > *x,
                    Cmp::Gte => n >= *x,
                    Cmp::Lt => n < *x,
                    Cmp::Lte => n <= *x,
                })
            }),
            Test::Regex(re) => self.any(data, &mut |v| as_text(v).is_some_and(|s| re.is_match(&s))),
            Test::Contains(s) => self.any(data, &mut |v| {
                as_text(v).is_some_and(|t| t.contains(s.as_str()))
            }),
            Test::StartsWith(s) => self.any(data, &mut |v| {
                as_text(v).is_some_and(|t| t.starts_with(s.as_str()))
            }),
            Test::EndsWith(s) => self.any(data, &mut |v| {
                as_text(v).is_some_and(|t| t.ends_with(s.as_str()))
            }),
            Test::Exists(want) => self.any(data, &mut |v| *v != Scalar::Null) == *want,
        }
    }
}

/// A group of conditions that must all hold.
#[derive(Debug, Clone, Default)]
struct Group(Vec<Condition>);

impl Group {
    fn holds(&self, data: &impl Fields) -> bool {
        self.0.iter().all(|c| c.holds(data))
    }
}

/// A filter ready to run.
#[derive(Debug, Clone, Default)]
pub struct CompiledFilter {
    all: Group,
    any: Vec<Group>,
    exclude: Vec<Group>,
}

/// (JSON pointer within the filter config, point at the key, message)
type CompileError = (String, bool, String);

impl CompiledFilter {
    /// Compiles a filter config, returning every problem found.
    pub fn compile(cfg: &FilterConfig) -> Result<CompiledFilter, Vec<CompileError>> {
        let mut errors = Vec::new();
        let all = compile_group(&cfg.match_, &["match"], &mut errors);
        let any: Vec<Group> = cfg
            .any
            .iter()
            .enumerate()
            .map(|(i, g)| compile_group(g, &["any", &i.to_string()], &mut errors))
            .collect();
        let exclude = match &cfg.exclude {
            None => Vec::new(),
            Some(Exclude::All(g)) => vec![compile_group(g, &["exclude"], &mut errors)],
            Some(Exclude::Any(gs)) => gs
                .iter()
                .enumerate()
                .map(|(i, g)| compile_group(g, &["exclude", &i.to_string()], &mut errors))
                .collect(),
        };
        if errors.is_empty() {
            Ok(CompiledFilter { all, any, exclude })
        } else {
            Err(errors)
        }
    }

    /// Compiles one group of conditions that must all hold — a filter's `match` alone —
    /// for a stage that tests events with the filter's condition language (`ratio`'s
    /// `match`). `prefix` is the group's JSON pointer within that stage's config, as
    /// segments (`["match"]`); every problem found is returned, pointed there.
    pub fn conditions(
        conds: &Conditions,
        prefix: &[&str],
    ) -> Result<CompiledFilter, Vec<CompileError>> {
        let mut errors = Vec::new();
        let all = compile_group(conds, prefix, &mut errors);
        if errors.is_empty() {
            Ok(CompiledFilter {
                all,
                ..CompiledFilter::default()
            })
        } else {
            Err(errors)
        }
    }

    /// Gives every `ip_list:Name` operand the name caches to look the list up in.
    pub fn resolve_ip_lists(&mut self, caches: &[Arc<NameCache>]) {
        let caches: Arc<[Arc<NameCache>]> = caches.into();
        let groups = std::iter::once(&mut self.all)
            .chain(self.any.iter_mut())
            .chain(self.exclude.iter_mut());
        for group in groups {
            for cond in &mut group.0 {
                for test in &mut cond.tests {
                    if let Test::AnyOf(lits) | Test::NoneOf(lits) = test {
                        for lit in lits {
                            if let Lit::IpList(_, c) = lit {
                                *c = Some(caches.clone());
                            }
                        }
                    }
                }
            }
        }
    }

    /// The names of the filter's `ip_list:Name` operands, each once, in order.
    pub fn ip_list_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let groups = std::iter::once(&self.all)
            .chain(self.any.iter())
            .chain(self.exclude.iter());
        for t in groups.flat_map(|g| g.0.iter()).flat_map(|c| c.tests.iter()) {
            if let Test::AnyOf(lits) | Test::NoneOf(lits) = t {
                for l in lits {
                    if let Lit::IpList(name, _) = l
                        && !out.contains(name)
                    {
                        out.push(name.clone());
                    }
                }
            }
        }
        out
    }

    /// Whether the filter has an `ip_list:Name` operand.
    pub fn uses_ip_lists(&self) -> bool {
        std::iter::once(&self.all)
            .chain(self.any.iter())
            .chain(self.exclude.iter())
            .flat_map(|g| g.0.iter())
            .flat_map(|c| c.tests.iter())
            .any(|t| match t {
                Test::AnyOf(lits) | Test::NoneOf(lits) => {
                    lits.iter().any(|l| matches!(l, Lit::IpList(..)))
                }
                _ => false,
            })
    }

    /// A filter that keeps every event this one keeps and needs nothing but the event, for
    /// routing events ahead of the stage (see `pce_traffic`'s hub): its `ip_list:`
    /// conditions are left out, and an `exclude` group holding one is left out whole
    /// (dropping a condition there would exclude more).
    pub fn relaxed(&self) -> CompiledFilter {
        let needs_names = |c: &Condition| {
            c.tests.iter().any(|t| match t {
                Test::AnyOf(lits) | Test::NoneOf(lits) => {
                    lits.iter().any(|l| matches!(l, Lit::IpList(..)))
                }
                _ => false,
            })
        };
        let keep = |g: &Group| Group(g.0.iter().filter(|c| !needs_names(c)).cloned().collect());
        CompiledFilter {
            all: keep(&self.all),
            any: self.any.iter().map(keep).collect(),
            exclude: self
                .exclude
                .iter()
                .filter(|g| !g.0.iter().any(needs_names))
                .cloned()
                .collect(),
        }
    }

    /// Whether an event's data passes.
    pub fn matches(&self, data: &Value) -> bool {
        self.passes(data)
    }

    /// Whether an event passes (read from its tape when it has one).
    pub fn matches_event(&self, event: &Event) -> bool {
        self.passes(event)
    }

    fn passes(&self, data: &impl Fields) -> bool {
        self.all.holds(data)
            && (self.any.is_empty() || self.any.iter().any(|g| g.holds(data)))
            && !self.exclude.iter().any(|g| g.holds(data))
    }
}

fn compile_group(conds: &Conditions, prefix: &[&str], errors: &mut Vec<CompileError>) -> Group {
    let mut out = Vec::new();
    for (path_text, matcher) in conds {
        let pointer = condition_pointer(prefix, path_text);
        let path = match FieldPath::parse(path_text) {
            Ok(p) => p,
            Err(e) => {
                errors.push((pointer.clone(), true, e.to_string()));
                continue;
            }
        };
        let tests = compile_matcher(matcher, &pointer, errors);
        let also = (path_text == EVENT_TYPE)
            .then(|| FieldPath::parse(NOTIFICATION_TYPES).ok())
            .flatten();
        out.push(Condition { path, also, tests });
    }
    Group(out)
}

fn lits(ls: &[Literal]) -> Vec<Lit> {
    ls.iter().map(Lit::from_literal).collect()
}

/// Why `s`, written like an IP network (an address, `/`, ...), is not one: a string
/// such as `10.0.0.0/33` would otherwise be compared as plain text and never match.
fn network_problem(s: &str) -> Option<String> {
    let (addr, len) = s.split_once('/')?;
    let ip = addr.trim().parse::<IpAddr>().ok()?;
    if s.parse::<IpNet>().is_ok() {
        return None;
    }
    let (family, max) = if ip.is_ipv4() {
        ("IPv4", 32)
    } else {
        ("IPv6", 128)
    };
    Some(match len.trim().parse::<u32>() {
        Ok(n) if n > max => format!(
            "`{s}` is not an IP network: an {family} prefix length is at most {max} (`{addr}/{max}` is the address alone)"
        ),
        _ => format!(
            "`{s}` is not an IP network: after `/` comes a prefix length from 0 to {max} (e.g. `{addr}/24`)"
        ),
    })
}

/// Reports literals written like IP networks that are not (`pointer` is the literal's
/// own, or its list's with `list` set).
fn check_networks(ls: &[&Literal], pointer: &str, list: bool, errors: &mut Vec<CompileError>) {
    for (i, l) in ls.iter().enumerate() {
        if let Literal::String(s) = l
            && let Some(message) = network_problem(s)
        {
            let at = if list {
                format!("{pointer}/{i}")
            } else {
                pointer.to_string()
            };
            errors.push((at, false, message));
        }
    }
}

fn networks(items: &[String], pointer: &str, errors: &mut Vec<CompileError>) -> Vec<Lit> {
    let mut out = Vec::new();
    for (i, s) in items.iter().enumerate() {
        match Lit::from_literal(&Literal::String(s.clone())) {
            lit @ (Lit::Net(..) | Lit::Ip(_) | Lit::IpList(..)) => out.push(lit),
            _ => errors.push((
                format!("{pointer}/{i}"),
                false,
                network_problem(s).unwrap_or_else(|| {
                    format!(
                        "`{s}` is not an IP address or network (write e.g. `10.0.0.0/8` or `192.0.2.7`)"
                    )
                }),
            )),
        }
    }
    out
}

fn compile_matcher(m: &Matcher, pointer: &str, errors: &mut Vec<CompileError>) -> Vec<Test> {
    match m {
        Matcher::Equals(l) => {
            check_networks(&[l], pointer, false, errors);
            vec![Test::AnyOf(vec![Lit::from_literal(l)])]
        }
        Matcher::AnyOf(ls) => {
            check_networks(&ls.iter().collect::<Vec<_>>(), pointer, true, errors);
            vec![Test::AnyOf(lits(ls))]
        }
        Matcher::Ops(ops) => {
            let mut tests = Vec::new();
            if let Some(l) = &ops.eq {
                check_networks(&[l], &format!("{pointer}/eq"), false, errors);
                tests.push(Test::AnyOf(vec![Lit::from_literal(l)]));
            }
            if let Some(l) = &ops.ne {
                check_networks(&[l], &format!("{pointer}/ne"), false, errors);
                tests.push(Test::NoneOf(vec![Lit::from_literal(l)]));
            }
            if let Some(ls) = &ops.in_ {
                let all: Vec<&Literal> = ls.iter().collect();
                check_networks(&all, &format!("{pointer}/in"), true, errors);
                tests.push(Test::AnyOf(lits(ls)));
            }
            if let Some(ls) = &ops.not_in {
                let all: Vec<&Literal> = ls.iter().collect();
                check_networks(&all, &format!("{pointer}/not_in"), true, errors);
                tests.push(Test::NoneOf(lits(ls)));
            }
            for (v, op) in [
                (ops.gt, Cmp::Gt),
                (ops.gte, Cmp::Gte),
                (ops.lt, Cmp::Lt),
                (ops.lte, Cmp::Lte),
            ] {
                if let Some(v) = v {
                    tests.push(Test::Cmp(op, v));
                }
            }
            if let Some(re) = &ops.regex {
                match Regex::new(re) {
                    Ok(r) => tests.push(Test::Regex(r)),
                    Err(e) => errors.push((
                        format!("{pointer}/regex"),
                        false,
                        format!("invalid regular expression: {}", one_line(&e.to_string())),
                    )),
                }
            }
            if let Some(nets) = &ops.cidr {
                tests.push(Test::AnyOf(networks(
                    nets,
                    &format!("{pointer}/cidr"),
                    errors,
                )));
            }
            if let Some(nets) = &ops.not_cidr {
                tests.push(Test::NoneOf(networks(
                    nets,
                    &format!("{pointer}/not_cidr"),
                    errors,
                )));
            }
            if let Some(e) = ops.exists {
                tests.push(Test::Exists(e));
            }
            if let Some(s) = &ops.contains {
                tests.push(Test::Contains(s.clone()));
            }
            if let Some(s) = &ops.starts_with {
                tests.push(Test::StartsWith(s.clone()));
            }
            if let Some(s) = &ops.ends_with {
                tests.push(Test::EndsWith(s.clone()));
            }
            // A regex that failed to compile was given: it has its own error.
            if tests.is_empty() && ops.regex.is_none() {
                errors.push((
                    pointer.to_string(),
                    false,
                    "no operator given: use one of eq, ne, in, not_in, gt, gte, lt, lte, regex, cidr, not_cidr, exists, contains, starts_with, ends_with".into(),
                ));
            }
            tests
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A compiled `where:` expression and its error count.
#[derive(Debug)]
pub struct WhereExpr {
    sandbox: Sandbox,
    ast: Arc<rhai::AST>,
    stage: Arc<str>,
    errors: ErrorLog,
}

impl WhereExpr {
    /// Counts each failed evaluation in `counters` as a dropped event (`where_error`).
    pub fn counting_into(mut self, counters: std::sync::Arc<crate::node::NodeCounters>) -> Self {
        self.errors.counting_into(counters, ScriptRole::Where);
        self
    }

    /// Compiles `expr` for the stage `stage` (`pipeline.node`, for the log).
    pub fn compile(expr: &str, stage: &str) -> Result<WhereExpr, sandbox::CompileError> {
        let sandbox = Sandbox::new(Limits::default(), stage);
        let ast = sandbox.compile_expression(expr)?;
        Ok(WhereExpr {
            sandbox,
            ast: Arc::new(ast),
            stage: stage.into(),
            errors: ErrorLog::default(),
        })
    }

    /// Whether the expression returns `true` for `data`. Errors and non-bool results
    /// count as `false` (and are counted).
    pub fn holds(&mut self, data: &Value) -> bool {
        self.holds_for(sandbox::to_dynamic(data))
    }

    /// [`WhereExpr::holds`] for an event (its record read from its tape when it has one).
    pub fn holds_event(&mut self, event: &Event) -> bool {
        self.holds_for(sandbox::event_dynamic(event))
    }

    fn holds_for(&mut self, input: rhai::Dynamic) -> bool {
        let (result, _) = self.sandbox.eval(&self.ast, input);
        let err = match result {
            Ok(v) => match v.as_bool() {
                Ok(b) => return b,
                Err(type_name) => RunError {
                    pos: None,
                    limit: false,
                    message: format!(
                        "the expression returned a value of type `{type_name}`, not `true` or `false`"
                    ),
                },
            },
            Err(e) => e,
        };
        self.errors.record(&self.stage, "where", &err);
        false
    }

    /// How many evaluations failed.
    pub fn errors(&self) -> u64 {
        self.errors.count
    }

    /// For `vigil validate` (Rhai has no static types, so the expression is evaluated):
    /// what it returns, when that is neither `true`/`false` nor nothing (`()`, a missing
    /// field), on an empty record and on a representative record of every kind the field
    /// catalogue knows. `(what it returned, the record's kind)`. An evaluation that fails
    /// says nothing: a missing field is the run's business.
    pub fn non_bool_result(&self) -> Option<(String, &'static str)> {
        let records = std::iter::once(("", "{}")).chain(
            crate::event::catalogue::ALL
                .iter()
                .map(|c| (c.noun, c.sample)),
        );
        for (noun, text) in records {
            let Ok(data) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            let (result, _) = self.sandbox.eval(&self.ast, sandbox::to_dynamic(&data));
            let Ok(v) = result else { continue };
            if v.is_bool() || v.is_unit() {
                continue;
            }
            let what = match v.type_name() {
                "i64" | "i32" | "u64" | "u32" | "f64" | "f32" | "decimal" => "a number",
                "string" | "char" | "ImmutableString" => "a string",
                "map" | "Map" => "a map",
                "array" | "Array" => "a list",
                _ => "a value that is not true or false",
            };
            return Some((what.to_string(), noun));
        }
        None
    }
}

/// Watches a filter's `ip_list:Name` operands against the PCE's IP lists: a name no
/// connection has, once the name caches are loaded, is reported once (see
/// [`IpListUnknown`]). Checked again only when a cache is refreshed.
#[derive(Debug)]
pub struct IpListWatch {
    stage: Arc<str>,
    names: Vec<String>,
    caches: Vec<Arc<NameCache>>,
    counters: Arc<crate::node::NodeCounters>,
    /// The caches' generations at the last check: while they stay, nothing is looked at.
    generations: Vec<u64>,
    reported: Vec<String>,
}

impl IpListWatch {
    /// Watches `names` (the filter's operands) in `caches` for the stage `stage`.
    pub fn new(
        stage: Arc<str>,
        names: Vec<String>,
        caches: &[Arc<NameCache>],
        counters: Arc<crate::node::NodeCounters>,
    ) -> Self {
        IpListWatch {
            stage,
            names,
            caches: caches.to_vec(),
            counters,
            generations: Vec::new(),
            reported: Vec::new(),
        }
    }

    /// Reports the names no loaded cache has (when a cache changed since the last call).
    pub fn check(&mut self) {
        // Called for every event: without a refresh since the last look, one atomic load
        // per cache and nothing allocated.
        if self.generations.len() == self.caches.len()
            && self
                .caches
                .iter()
                .zip(&self.generations)
                .all(|(c, g)| c.generation() == *g)
        {
            return;
        }
        self.generations = self.caches.iter().map(|c| c.generation()).collect();
        let snapshots: Vec<Arc<crate::pce::names::Names>> =
            self.caches.iter().map(|c| c.snapshot()).collect();
        // Until every connection's names were read once, a missing name proves nothing.
        if snapshots.is_empty() || snapshots.iter().any(|n| n.refreshed_at.is_none()) {
            return;
        }
        for name in &self.names {
            if self.reported.contains(name)
                || snapshots
                    .iter()
                    .any(|n| n.ip_lists_by_name.contains_key(name))
            {
                continue;
            }
            let known: Vec<&str> = snapshots
                .iter()
                .flat_map(|n| n.ip_lists_by_name.keys().map(String::as_str))
                .collect();
            let closest = closest_name(name, &known);
            crate::node::internal_event::IpListUnknown {
                stage: &self.stage,
                name,
                closest,
            }
            .emit(&self.counters);
            self.reported.push(name.clone());
        }
    }

    /// The names reported as unknown so far.
    pub fn unknown(&self) -> &[String] {
        &self.reported
    }
}

/// The closest of `known` to `name` (case-insensitive, at most a few edits away).
fn closest_name<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_lowercase();
    known
        .iter()
        .map(|k| (strsim::levenshtein(&lower, &k.to_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The running `filter` stage.
#[derive(Debug)]
pub struct FilterStage {
    filter: CompiledFilter,
    where_: Option<WhereExpr>,
    ip_lists: Option<IpListWatch>,
}

impl FilterStage {
    /// A stage running `filter`.
    pub fn new(filter: CompiledFilter) -> Self {
        FilterStage {
            filter,
            where_: None,
            ip_lists: None,
        }
    }

    /// Reports `ip_list:` operands that name no IP list of the PCE.
    pub fn with_ip_list_watch(mut self, watch: IpListWatch) -> Self {
        self.ip_lists = Some(watch);
        self
    }

    /// The `ip_list:` names reported as unknown so far.
    pub fn unknown_ip_lists(&self) -> &[String] {
        self.ip_lists.as_ref().map_or(&[], IpListWatch::unknown)
    }

    /// Adds a `where:` expression.
    pub fn with_where(mut self, w: WhereExpr) -> Self {
        self.where_ = Some(w);
        self
    }

    /// How many `where:` evaluations failed.
    pub fn where_errors(&self) -> u64 {
        self.where_.as_ref().map_or(0, WhereExpr::errors)
    }
}

impl Stage for FilterStage {
    fn blocking(&self) -> bool {
        self.where_.is_some()
    }

    fn process(&mut self, event: Arc<Event>, out: &mut Vec<Arc<Event>>) {
        if let Some(w) = &mut self.ip_lists {
            w.check();
        }
        if !self.filter.matches_event(&event) {
            return;
        }
        if let Some(w) = &mut self.where_
            && !w.holds_event(&event)
        {
            return;
        }
        out.push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(yaml_json: Value) -> CompiledFilter {
        let cfg: FilterConfig = serde_json::from_value(yaml_json).expect("valid config");
        CompiledFilter::compile(&cfg).expect("compiles")
    }

    fn flow(src_ip: &str, port: i64, decision: &str, conns: i64) -> Value {
        json!({
            "src": {"ip": src_ip, "workload": {"labels": [{"key": "role", "value": "web"}]}},
            "dst": {"ip": "10.1.2.3", "fqdn": "db.example.com"},
            "service": {"port": port, "proto": 6},
            "policy_decision": decision,
            "num_connections": conns,
        })
    }

    #[test]
    fn equality_sets_and_numbers() {
        let f = filter(json!({
            "inputs": ["x"],
            "match": {
                "policy_decision": ["blocked", "potentially_blocked"],
                "service.port": 22,
                "num_connections": {"gte": 5, "lt": 100}
            }
        }));
        assert!(f.matches(&flow("10.0.0.1", 22, "blocked", 5)));
        assert!(f.matches(&flow("10.0.0.1", 22, "potentially_blocked", 5)));
        assert!(!f.matches(&flow("10.0.0.1", 22, "allowed", 5)));
        assert!(!f.matches(&flow("10.0.0.1", 23, "blocked", 5)));
        assert!(!f.matches(&flow("10.0.0.1", 22, "blocked", 4)));
        assert!(!f.matches(&flow("10.0.0.1", 22, "blocked", 100)));
        // Numeric strings compare as numbers (syslog exports carry strings).
        assert!(f.matches(&json!({"policy_decision": "blocked", "service": {"port": "22"}, "num_connections": "7"})));
    }

    #[test]
    fn cidr_is_real_cidr_not_string_prefix() {
        let f =
            filter(json!({"inputs": ["x"], "match": {"src.ip": ["10.20.0.0/16", "192.0.2.7"]}}));
        assert!(f.matches(&flow("10.20.255.1", 22, "allowed", 1)));
        assert!(!f.matches(&flow("10.200.0.1", 22, "allowed", 1)));
        assert!(f.matches(&flow("192.0.2.7", 22, "allowed", 1)));
        assert!(!f.matches(&flow("192.0.2.70", 22, "allowed", 1)));
        let v6 = filter(json!({"inputs": ["x"], "match": {"src.ip": {"cidr": ["2001:db8::/32"]}}}));
        assert!(v6.matches(&flow("2001:db8:0:0::1", 22, "allowed", 1)));
        assert!(!v6.matches(&flow("2001:db9::1", 22, "allowed", 1)));
        // Same address, other notation.
        let ip6 = filter(json!({"inputs": ["x"], "match": {"src.ip": "2001:db8::1"}}));
        assert!(ip6.matches(&flow("2001:0db8:0000::0001", 22, "allowed", 1)));
    }

    #[test]
    fn ip_list_operands_use_the_name_cache() {
        use crate::pce::names::{IpListEntry, Names};
        let cache = Arc::new(NameCache::default());
        let mut f = filter(json!({"inputs": ["x"], "match": {"src.ip": "ip_list:Scanners"}}));
        let mut cidr = filter(
            json!({"inputs": ["x"], "match": {"src.ip": {"not_cidr": ["ip_list:Scanners"]}}}),
        );
        assert!(f.uses_ip_lists());
        f.resolve_ip_lists(std::slice::from_ref(&cache));
        cidr.resolve_ip_lists(std::slice::from_ref(&cache));
        // Not known yet (the cache is empty): no match.
        assert!(!f.matches(&flow("203.0.113.9", 22, "allowed", 1)));
        let list = Arc::new(IpListEntry {
            name: "Scanners".into(),
            include: vec!["203.0.113.0/24".parse().unwrap()],
            exclude: vec!["203.0.113.128/25".parse().unwrap()],
        });
        let mut names = Names::default();
        names.ip_lists_by_name.insert("Scanners".into(), list);
        cache.replace(names);
        assert!(f.matches(&flow("203.0.113.9", 22, "allowed", 1)));
        assert!(
            !f.matches(&flow("203.0.113.200", 22, "allowed", 1)),
            "excluded"
        );
        assert!(!f.matches(&flow("10.0.0.1", 22, "allowed", 1)));
        assert!(!cidr.matches(&flow("203.0.113.9", 22, "allowed", 1)));
        assert!(cidr.matches(&flow("10.0.0.1", 22, "allowed", 1)));
        // The list's name itself matches (`src.ip_list_names: ip_list:Scanners`).
        let by_name =
            filter(json!({"inputs": ["x"], "match": {"src.ip_list_names": "ip_list:Scanners"}}));
        assert!(by_name.matches(&json!({"src": {"ip_list_names": ["Any", "Scanners"]}})));
    }

    #[test]
    fn an_unknown_ip_list_is_reported_once_per_name_once_the_names_are_read() {
        use crate::pce::names::{IpListEntry, Names};
        let cache = Arc::new(NameCache::default());
        let counters = Arc::new(crate::node::NodeCounters::default());
        let cfg: FilterConfig = serde_json::from_value(json!({"inputs": ["x"],
            "match": {"src.ip": "ip_list:Scaners"},
            "exclude": {"dst.ip": {"cidr": ["ip_list:Scanners", "ip_list:Nowhere", "ip_list:Scaners"]}}}))
        .expect("valid config");
        assert_eq!(cfg.ip_list_names(), ["Scaners", "Scanners", "Nowhere"]);
        let mut compiled = CompiledFilter::compile(&cfg).expect("compiles");
        compiled.resolve_ip_lists(std::slice::from_ref(&cache));
        let watch = IpListWatch::new(
            "p.f".into(),
            compiled.ip_list_names(),
            std::slice::from_ref(&cache),
            counters.clone(),
        );
        let mut stage = FilterStage::new(compiled).with_ip_list_watch(watch);
        let event = |ip: &str| {
            Arc::new(Event::from_record(
                flow(ip, 22, "allowed", 1),
                "p.x".into(),
                chrono::Utc::now(),
            ))
        };
        let mut out = Vec::new();
        // Names not read yet: nothing can be said.
        stage.process(event("203.0.113.9"), &mut out);
        assert!(counters.errors_by_reason().is_empty());
        let mut names = Names {
            refreshed_at: Some(chrono::Utc::now()),
            ..Names::default()
        };
        names.ip_lists_by_name.insert(
            "Scanners".into(),
            Arc::new(IpListEntry {
                name: "Scanners".into(),
                include: vec!["203.0.113.0/24".parse().unwrap()],
                exclude: Vec::new(),
            }),
        );
        cache.replace(names);
        for _ in 0..5 {
            stage.process(event("203.0.113.9"), &mut out);
        }
        assert_eq!(counters.errors_by_reason(), vec![("unknown_ip_list", 2)]);
        assert_eq!(stage.unknown_ip_lists(), ["Scaners", "Nowhere"]);
        assert!(out.is_empty(), "the misspelt list matches nothing");
    }

    #[test]
    fn exclude_and_any() {
        let f = filter(json!({
            "inputs": ["x"],
            "any": [{"service.port": 22}, {"service.port": 3389}],
            "exclude": {"src.ip": "10.20.0.0/16", "policy_decision": "allowed"}
        }));
        assert!(f.matches(&flow("10.20.0.1", 22, "blocked", 1)));
        assert!(!f.matches(&flow("10.20.0.1", 22, "allowed", 1)));
        assert!(f.matches(&flow("10.30.0.1", 3389, "allowed", 1)));
        assert!(!f.matches(&flow("10.30.0.1", 80, "blocked", 1)));
        let many = filter(
            json!({"inputs": ["x"], "exclude": [{"service.port": 22}, {"service.port": 80}]}),
        );
        assert!(!many.matches(&flow("1.1.1.1", 22, "allowed", 1)));
        assert!(!many.matches(&flow("1.1.1.1", 80, "allowed", 1)));
        assert!(many.matches(&flow("1.1.1.1", 443, "allowed", 1)));
    }

    #[test]
    fn regex_exists_strings_and_lists() {
        let f = filter(json!({"inputs": ["x"], "match": {
            "dst.fqdn": {"regex": "\\.example\\.com$"},
            "src.workload": {"exists": true},
            "src.workload.labels.value": "web",
            "dst.workload": {"exists": false}
        }}));
        assert!(f.matches(&flow("1.1.1.1", 1, "allowed", 1)));
        let mut other = flow("1.1.1.1", 1, "allowed", 1);
        other["dst"]["fqdn"] = json!("example.org");
        assert!(!f.matches(&other));
        let strings = filter(json!({"inputs": ["x"], "match": {
            "event_type": {"starts_with": "user.", "ends_with": "_in", "contains": "sign"}
        }}));
        assert!(strings.matches(&json!({"event_type": "user.sign_in"})));
        assert!(!strings.matches(&json!({"event_type": "user.sign_out"})));
    }

    #[test]
    fn negative_operators_and_missing_fields() {
        let f = filter(
            json!({"inputs": ["x"], "match": {"status": {"ne": "success"}, "severity": {"not_in": ["info"]}}}),
        );
        assert!(f.matches(&json!({"status": "failure", "severity": "err"})));
        assert!(
            f.matches(&json!({})),
            "missing fields pass negative conditions"
        );
        assert!(!f.matches(&json!({"status": "success"})));
        let null = filter(json!({"inputs": ["x"], "match": {"status": null}}));
        assert!(null.matches(&json!({"status": null})));
        assert!(null.matches(&json!({})));
        assert!(!null.matches(&json!({"status": "failure"})));
        let missing = filter(json!({"inputs": ["x"], "match": {"service.port": 22}}));
        assert!(!missing.matches(&json!({"service": {}})));
    }

    #[test]
    fn notification_types_inside_lists() {
        let f = filter(
            json!({"inputs": ["x"], "match": {"notifications.notification_type": "user.login_failed"}}),
        );
        let ev = json!({"event_type": "user.sign_in", "status": "failure", "notifications": [
            {"notification_type": "user.login_failed", "info": {}}
        ]});
        assert!(f.matches(&ev));
    }

    /// A PCE reports a failed login as a `user.sign_in` (or `user.login`) failure carrying
    /// a `user.login_failed` notification: an `event_type` condition sees it.
    #[test]
    fn event_type_conditions_see_notification_types() {
        let failed_login = json!({"event_type": "user.sign_in", "status": "failure",
            "created_by": {"system": {}},
            "notifications": [{"notification_type": "user.login_failed",
                "info": {"associated_user": {"supplied_username": "alice@example.com"}}}]});
        let ok_login = json!({"event_type": "user.sign_in", "status": "success",
            "notifications": [{"notification_type": "user.login_session_created"}]});
        let by_type =
            filter(json!({"inputs": ["x"], "match": {"event_type": "user.login_failed"}}));
        assert!(by_type.matches(&failed_login));
        assert!(!by_type.matches(&ok_login));
        let either = filter(
            json!({"inputs": ["x"], "match": {"event_type": ["user.login_failed", "request.authentication_failed"]}}),
        );
        assert!(either.matches(&failed_login));
        // The event type itself still matches.
        let sign_in = filter(json!({"inputs": ["x"], "match": {"event_type": "user.sign_in"}}));
        assert!(sign_in.matches(&failed_login) && sign_in.matches(&ok_login));
        // A negative condition holds only when neither the type nor a notification is it.
        let not_failed =
            filter(json!({"inputs": ["x"], "match": {"event_type": {"ne": "user.login_failed"}}}));
        assert!(!not_failed.matches(&failed_login));
        assert!(not_failed.matches(&ok_login));
        let excluded =
            filter(json!({"inputs": ["x"], "exclude": {"event_type": "user.login_failed"}}));
        assert!(!excluded.matches(&failed_login));
        // Events without notifications (and flows) behave as before.
        assert!(by_type.matches(&json!({"event_type": "user.login_failed"})));
        assert!(!by_type.matches(&json!({"src": {"ip": "10.0.0.1"}})));
        let null = filter(json!({"inputs": ["x"], "match": {"event_type": null}}));
        assert!(null.matches(&json!({"src": {"ip": "10.0.0.1"}})));
        assert!(!null.matches(&failed_login));
    }

    #[test]
    fn compile_errors_point_inside() {
        let cfg: FilterConfig = serde_json::from_value(json!({
            "inputs": ["x"],
            "match": {"a..b": 1, "x": {"regex": "("}, "y": {"cidr": ["10.0.0.0/33", "nope"]}, "z": {}}
        }))
        .unwrap();
        let errs = CompiledFilter::compile(&cfg).unwrap_err();
        let pointers: Vec<_> = errs.iter().map(|(p, k, _)| (p.as_str(), *k)).collect();
        assert_eq!(
            pointers,
            vec![
                ("/match/a..b", true),
                ("/match/x/regex", false),
                ("/match/y/cidr/0", false),
                ("/match/y/cidr/1", false),
                ("/match/z", false)
            ]
        );
    }

    fn where_stage(cfg: Value) -> FilterStage {
        let cfg: FilterConfig = serde_json::from_value(cfg).expect("valid config");
        let w = WhereExpr::compile(cfg.where_.as_deref().unwrap(), "p.f").expect("compiles");
        FilterStage::new(CompiledFilter::compile(&cfg).unwrap()).with_where(w)
    }

    fn passes(stage: &mut FilterStage, data: Value) -> bool {
        let t = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        let mut out = Vec::new();
        stage.process(
            Arc::new(Event::from_record(data, "p.s".into(), t)),
            &mut out,
        );
        out.len() == 1
    }

    #[test]
    fn where_numbers_strings_and_nested_fields() {
        let mut s = where_stage(json!({
            "inputs": ["x"],
            "where": "event.service.port in [22, 3389] && event.num_connections * 2 >= 10 && event.src.ip.starts_with(\"10.\")"
        }));
        assert!(passes(&mut s, flow("10.0.0.1", 22, "blocked", 5)));
        assert!(!passes(&mut s, flow("10.0.0.1", 22, "blocked", 4)));
        assert!(!passes(&mut s, flow("10.0.0.1", 80, "blocked", 50)));
        assert!(!passes(&mut s, flow("192.168.0.1", 3389, "blocked", 50)));
        assert_eq!(s.where_errors(), 0);
    }

    #[test]
    fn where_with_conditions_needs_both() {
        let mut s = where_stage(json!({
            "inputs": ["x"],
            "match": {"policy_decision": "blocked"},
            "where": "event.dst.fqdn.ends_with(\".example.com\")"
        }));
        assert!(passes(&mut s, flow("10.0.0.1", 22, "blocked", 5)));
        assert!(!passes(&mut s, flow("10.0.0.1", 22, "allowed", 5)));
    }

    #[test]
    fn where_missing_fields_and_bad_results_drop_and_count() {
        let mut s = where_stage(json!({"inputs": ["x"], "where": "event.missing > 5"}));
        assert!(!passes(&mut s, json!({"other": 1})), "() > 5 is false");
        assert!(passes(&mut s, json!({"missing": 6})));
        assert!(
            !passes(&mut s, json!({"missing": "six"})),
            "\"six\" > 5 is false"
        );
        assert_eq!(s.where_errors(), 0);

        let mut s = where_stage(json!({"inputs": ["x"], "where": "event.a.b.c == 1"}));
        assert!(!passes(&mut s, json!({"a": 1})));
        assert!(!passes(&mut s, json!({})));
        assert!(passes(&mut s, json!({"a": {"b": {"c": 1}}})));

        let mut s = where_stage(json!({"inputs": ["x"], "where": "event.name"}));
        assert!(
            !passes(&mut s, json!({"name": "x"})),
            "a string is not a verdict"
        );
        assert_eq!(s.where_errors(), 1);

        let mut s = where_stage(json!({"inputs": ["x"], "where": "event.missing == ()"}));
        assert!(passes(&mut s, json!({})), "a missing field reads as ()");
        assert!(!passes(&mut s, json!({"missing": 1})));
    }

    #[test]
    fn where_endless_loop_is_stopped_and_the_next_event_is_handled() {
        let mut s = where_stage(json!({
            "inputs": ["x"],
            "where": "!event.spin || range(0, 1000000000).map(|x| x + 1).len() == 0"
        }));
        assert!(!passes(&mut s, json!({"spin": true})));
        assert_eq!(s.where_errors(), 1);
        assert!(passes(&mut s, json!({"spin": false})));
    }
}
