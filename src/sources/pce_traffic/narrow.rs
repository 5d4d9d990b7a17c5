//! Asking the PCE for less: what a source's pipeline can pass at all.
//!
//! A `pce_traffic` source whose every reader is a `filter` stage needs only the flows those
//! filters can keep. From the filters' conditions this module reads, dimension by
//! dimension, what a kept flow certainly has: its destination port (`service.port`), its
//! protocol (`service.proto`), the labels of its source or destination (`src.labels.role:
//! DB`) and the IP lists they are in (`dst.ip: ip_list:Corporate`), plus the actors every
//! filter drops (`exclude:` of a label or an address). A connection's one query narrows a
//! dimension only when every source of the connection restricts it, and then asks for the
//! union of what they keep (per dimension: a flow some pipeline keeps is inside every
//! dimension's union, so the query returns it).
//!
//! Only conditions a kept flow certainly meets count: a condition of `match`, or one of
//! every `any` group (joined with `match`), that is an equality or a list of values (or
//! the `eq` / `in` operators). Anything else (other operators, `where`, conditions on other
//! fields) narrows nothing. Label values and IP list names become hrefs through the
//! connection's name cache when the query is built ([`Restriction::query`]); a name the
//! cache does not know leaves that dimension unnarrowed (the cache may be stale).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::pce::client::{Actor, ActorFilter, Service};
use crate::pce::names::Names;
use crate::stages::filter::{Conditions, Exclude, FilterConfig, Literal, Matcher};

/// The field a port restriction is read from.
const PORT_FIELD: &str = "service.port";

/// The field a protocol restriction is read from.
const PROTO_FIELD: &str = "service.proto";

/// The prefix of an operand naming a PCE IP list (as the `filter` stage reads it).
const IP_LIST_PREFIX: &str = "ip_list:";

/// The most ports a query names; a wider set asks for every port.
pub const MAX_PORTS: usize = 200;

/// The most protocols a query names; more asks for every protocol.
pub const MAX_PROTOS: usize = 20;

/// The most services (port × protocol) a query names; more drops the protocols.
pub const MAX_SERVICES: usize = 200;

/// The most label groups one side of a query names; more asks for every label.
pub const MAX_LABEL_GROUPS: usize = 100;

/// The most IP lists one side of a query names; more asks for every address.
pub const MAX_IP_LISTS: usize = 50;

/// The most actors a query excludes; beyond, the rest are not excluded.
pub const MAX_EXCLUDES: usize = 100;

/// One end of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// The source (`src`).
    Src,
    /// The destination (`dst`).
    Dst,
}

impl Side {
    /// The flow field of this end.
    pub fn field(self) -> &'static str {
        match self {
            Side::Src => "src",
            Side::Dst => "dst",
        }
    }
}

/// Labels a flow's end must all have (key → value): an AND-group of the query.
pub type LabelGroup = BTreeMap<String, String>;

/// An actor whose flows every filter drops.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Excluded {
    /// The end has the label `key: value`.
    Label(Side, String, String),
    /// The end has this address.
    Ip(Side, IpAddr),
}

/// What the flows a source's pipeline can keep certainly have, by dimension (`None`: the
/// pipeline may keep any value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restriction {
    /// Destination ports.
    pub ports: Option<BTreeSet<u16>>,
    /// Protocols (IANA numbers).
    pub protos: Option<BTreeSet<u8>>,
    /// Labels of the source: a kept flow's source has every label of one group.
    pub src_labels: Option<BTreeSet<LabelGroup>>,
    /// Labels of the destination, likewise.
    pub dst_labels: Option<BTreeSet<LabelGroup>>,
    /// IP lists (by name) the source address is in, one of them.
    pub src_ip_lists: Option<BTreeSet<String>>,
    /// IP lists (by name) the destination address is in, one of them.
    pub dst_ip_lists: Option<BTreeSet<String>>,
    /// Actors whose flows are dropped (by every filter: none is kept).
    pub excludes: BTreeSet<Excluded>,
}

impl Restriction {
    /// Nothing restricted: every flow may be kept.
    pub fn everything() -> Restriction {
        Restriction::default()
    }

    /// The labels of `side`.
    pub fn labels(&self, side: Side) -> Option<&BTreeSet<LabelGroup>> {
        match side {
            Side::Src => self.src_labels.as_ref(),
            Side::Dst => self.dst_labels.as_ref(),
        }
    }

    /// The IP lists of `side`.
    pub fn ip_lists(&self, side: Side) -> Option<&BTreeSet<String>> {
        match side {
            Side::Src => self.src_ip_lists.as_ref(),
            Side::Dst => self.dst_ip_lists.as_ref(),
        }
    }

    /// Whether it narrows nothing.
    pub fn is_everything(&self) -> bool {
        *self == Restriction::everything()
    }

    /// What flows kept by either `self` or `other` have: each dimension's union (`None`
    /// when either is `None`), the actors both exclude. Dimensions over their cap become
    /// `None`.
    pub fn or(&self, other: &Restriction) -> Restriction {
        fn both<T: Ord + Clone>(
            a: &Option<BTreeSet<T>>,
            b: &Option<BTreeSet<T>>,
            max: usize,
        ) -> Option<BTreeSet<T>> {
            let all: BTreeSet<T> = a.as_ref()?.union(b.as_ref()?).cloned().collect();
            (all.len() <= max).then_some(all)
        }
        Restriction {
            ports: both(&self.ports, &other.ports, MAX_PORTS),
            protos: both(&self.protos, &other.protos, MAX_PROTOS),
            src_labels: both(&self.src_labels, &other.src_labels, MAX_LABEL_GROUPS),
            dst_labels: both(&self.dst_labels, &other.dst_labels, MAX_LABEL_GROUPS),
            src_ip_lists: both(&self.src_ip_lists, &other.src_ip_lists, MAX_IP_LISTS),
            dst_ip_lists: both(&self.dst_ip_lists, &other.dst_ip_lists, MAX_IP_LISTS),
            excludes: self
                .excludes
                .intersection(&other.excludes)
                .cloned()
                .collect(),
        }
    }
}

/// The union of `all` ([`Restriction::or`]); everything when `all` is empty.
pub fn union(all: &[Restriction]) -> Restriction {
    let mut it = all.iter();
    let Some(first) = it.next() else {
        return Restriction::everything();
    };
    it.fold(first.clone(), |acc, r| acc.or(r))
}

/// A port the PCE can be asked for (1–65535), from a filter literal.
fn port(l: &Literal) -> Option<u16> {
    let n = number(l)?;
    (n.fract() == 0.0 && (1.0..=65535.0).contains(&n)).then_some(n as u16)
}

/// A protocol number the PCE can be asked for (1–255), from a filter literal.
fn proto(l: &Literal) -> Option<u8> {
    let n = number(l)?;
    (n.fract() == 0.0 && (1.0..=255.0).contains(&n)).then_some(n as u8)
}

/// A number literal, or a string the filter reads as one.
fn number(l: &Literal) -> Option<f64> {
    match l {
        Literal::Number(n) => Some(*n),
        Literal::String(s) => s.trim().parse::<f64>().ok(),
        Literal::Bool(_) | Literal::Null => None,
    }
}

/// A string the filter compares as text only (equal to exactly this value): not an IP
/// address, network or IP list, and not a number (which would also match numeric text).
fn text(l: &Literal) -> Option<String> {
    let Literal::String(s) = l else {
        return None;
    };
    let plain = !s.starts_with(IP_LIST_PREFIX)
        && !s.contains('/')
        && s.parse::<IpAddr>().is_err()
        && s.trim().parse::<f64>().is_err()
        && s != "true"
        && s != "false";
    plain.then(|| s.clone())
}

/// The IP list an `ip_list:Name` literal names.
fn ip_list(l: &Literal) -> Option<String> {
    match l {
        Literal::String(s) => s.strip_prefix(IP_LIST_PREFIX).map(|n| n.trim().to_string()),
        _ => None,
    }
}

/// An IP address literal (the filter compares it as an address, in any notation).
fn address(l: &Literal) -> Option<IpAddr> {
    match l {
        Literal::String(s) if !s.contains('/') => s.parse().ok(),
        _ => None,
    }
}

/// The values `m` certainly requires of a field, each read by `conv` (`None`: a value
/// outside them may match, or one is not readable).
fn allowed<T: Ord>(m: &Matcher, conv: impl Fn(&Literal) -> Option<T>) -> Option<BTreeSet<T>> {
    let all = |lits: &[Literal]| lits.iter().map(&conv).collect::<Option<BTreeSet<T>>>();
    match m {
        Matcher::Equals(l) => all(std::slice::from_ref(l)),
        Matcher::AnyOf(lits) => all(lits),
        Matcher::Ops(ops) => {
            // `eq` and `in` both restrict: the value must be in both.
            let eq = ops.eq.as_ref().and_then(|l| all(std::slice::from_ref(l)));
            let in_ = ops.in_.as_deref().and_then(all);
            match (eq, in_) {
                (Some(a), Some(b)) => Some(a.into_iter().filter(|x| b.contains(x)).collect()),
                (Some(a), None) | (None, Some(a)) => Some(a),
                (None, None) => None,
            }
        }
    }
}

/// The values exactly equal to which a condition holds (`Equals` and `AnyOf` only), each
/// read by `conv`; literals `conv` cannot read are left out.
fn exact<T>(m: &Matcher, conv: impl Fn(&Literal) -> Option<T>) -> Vec<T> {
    match m {
        Matcher::Equals(l) => conv(l).into_iter().collect(),
        Matcher::AnyOf(lits) => lits.iter().filter_map(conv).collect(),
        Matcher::Ops(_) => Vec::new(),
    }
}

/// The label key a path `src.labels.<key>` names, for `side` (simple keys only: a key
/// with a dot or an index-like key is not one the filter reads as written).
fn label_key(path: &str, side: Side) -> Option<&str> {
    let key = path.strip_prefix(side.field())?.strip_prefix(".labels.")?;
    let simple = !key.is_empty() && !key.contains('.') && !key.bytes().all(|b| b.is_ascii_digit());
    simple.then_some(key)
}

/// The address field of `side`.
fn ip_field(side: Side) -> &'static str {
    match side {
        Side::Src => "src.ip",
        Side::Dst => "dst.ip",
    }
}

/// The set a conjunction of `groups` requires of one field (the intersection of what its
/// conditions on `path` require; `None`: none restricts it).
fn conj_set<T: Ord + Clone>(
    groups: &[&Conditions],
    path: &str,
    conv: impl Fn(&Literal) -> Option<T> + Copy,
) -> Option<BTreeSet<T>> {
    let mut acc: Option<BTreeSet<T>> = None;
    for g in groups {
        let Some(set) = g.get(path).and_then(|m| allowed(m, conv)) else {
            continue;
        };
        acc = Some(match acc {
            None => set,
            Some(a) => a.intersection(&set).cloned().collect(),
        });
    }
    acc
}

/// The label groups a conjunction of `groups` requires of `side` (`None`: no label).
fn conj_labels(groups: &[&Conditions], side: Side) -> Option<BTreeSet<LabelGroup>> {
    let mut by_key: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for g in groups {
        for (path, m) in g.iter() {
            let Some(key) = label_key(path, side) else {
                continue;
            };
            let Some(values) = allowed(m, text) else {
                continue;
            };
            by_key
                .entry(key.to_string())
                .and_modify(|v| v.retain(|x| values.contains(x)))
                .or_insert(values);
        }
    }
    if by_key.is_empty() {
        return None;
    }
    // Every combination of one value per key.
    let mut out: BTreeSet<LabelGroup> = [LabelGroup::new()].into();
    for (key, values) in by_key {
        out = out
            .iter()
            .flat_map(|g| {
                values.iter().map(|v| {
                    let mut g = g.clone();
                    g.insert(key.clone(), v.clone());
                    g
                })
            })
            .collect();
        if out.len() > MAX_LABEL_GROUPS {
            return None;
        }
    }
    Some(out)
}

/// What a flow meeting every condition of `groups` certainly has.
fn conj_restriction(groups: &[&Conditions]) -> Restriction {
    Restriction {
        ports: conj_set(groups, PORT_FIELD, port),
        protos: conj_set(groups, PROTO_FIELD, proto),
        src_labels: conj_labels(groups, Side::Src),
        dst_labels: conj_labels(groups, Side::Dst),
        src_ip_lists: conj_set(groups, ip_field(Side::Src), ip_list),
        dst_ip_lists: conj_set(groups, ip_field(Side::Dst), ip_list),
        excludes: BTreeSet::new(),
    }
}

/// The actors one exclude group drops every flow of: only a group of one condition
/// (equal to a label value, or to an address) drops all of an actor's flows.
fn excluded_by(group: &Conditions) -> Vec<Excluded> {
    let mut out = Vec::new();
    if group.len() != 1 {
        return out;
    }
    for (path, m) in group.iter() {
        for side in [Side::Src, Side::Dst] {
            if let Some(key) = label_key(path, side) {
                out.extend(
                    exact(m, text)
                        .into_iter()
                        .map(|v| Excluded::Label(side, key.to_string(), v)),
                );
            }
            if path == ip_field(side) {
                out.extend(exact(m, address).into_iter().map(|a| Excluded::Ip(side, a)));
            }
        }
    }
    out
}

/// What the flows `f` keeps certainly have.
pub fn filter_restriction(f: &FilterConfig) -> Restriction {
    // A kept flow meets `match` and (when there are `any` groups) one of them.
    let conjunctions: Vec<Vec<&Conditions>> = if f.any.is_empty() {
        vec![vec![&f.match_]]
    } else {
        f.any.iter().map(|g| vec![&f.match_, g]).collect()
    };
    let mut r = union(
        &conjunctions
            .iter()
            .map(|c| conj_restriction(c))
            .collect::<Vec<_>>(),
    );
    r.excludes = match &f.exclude {
        None => BTreeSet::new(),
        Some(Exclude::All(g)) => excluded_by(g).into_iter().collect(),
        Some(Exclude::Any(gs)) => gs.iter().flat_map(excluded_by).collect(),
    };
    r
}

/// What a source needs, given its readers: the union of what each keeps when every
/// reader is a filter, everything otherwise (`readers` is `None` when some reader is not
/// a filter).
pub fn source_restriction(readers: Option<&[FilterConfig]>) -> Restriction {
    match readers {
        None | Some([]) => Restriction::everything(),
        Some(readers) => union(&readers.iter().map(filter_restriction).collect::<Vec<_>>()),
    }
}

/// A narrowed query's filters, resolved to hrefs through a connection's name cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Narrowing {
    /// Services to include (empty: every service).
    pub services: Vec<Service>,
    /// The query's `sources`.
    pub sources: ActorFilter,
    /// The query's `destinations`.
    pub destinations: ActorFilter,
    /// Whether an IP list is asked for: then the query says
    /// `exclude_workloads_from_ip_list_query: false`, so managed workloads inside a list's
    /// ranges come back too (a filter's `ip_list:` operand matches by address).
    pub ip_lists: bool,
    /// The label values and IP list names the cache did not know (what they restrict was
    /// not narrowed).
    pub not_found: Vec<String>,
}

impl Narrowing {
    /// Puts the narrowing into `query`.
    pub fn apply(&self, query: &mut crate::pce::client::TrafficQuery) {
        query.services.include = self.services.clone();
        query.sources = self.sources.clone();
        query.destinations = self.destinations.clone();
        if self.ip_lists {
            query.exclude_workloads_from_ip_list_query = false;
        }
    }

    /// One line saying what the query is narrowed to (for the logs).
    pub fn describe(&self) -> String {
        serde_json::json!({
            "services": self.services,
            "sources": self.sources,
            "destinations": self.destinations,
            "exclude_workloads_from_ip_list_query": !self.ip_lists,
            "not_found": self.not_found,
        })
        .to_string()
    }
}

/// Reverse lookups in one name snapshot: exact key and value, exact list name.
struct Lookup<'n> {
    names: &'n Names,
    labels: BTreeMap<(&'n str, &'n str), Vec<&'n str>>,
}

impl<'n> Lookup<'n> {
    fn new(names: &'n Names) -> Lookup<'n> {
        let mut labels: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        for (href, (k, v)) in &names.labels {
            labels
                .entry((k.as_str(), v.as_str()))
                .or_default()
                .push(href.as_str());
        }
        Lookup { names, labels }
    }

    /// The one label `key: value` (`None`: unknown, or several share it).
    fn label(&self, key: &str, value: &str) -> Option<&'n str> {
        match self.labels.get(&(key, value)).map(Vec::as_slice) {
            Some([href]) => Some(href),
            _ => None,
        }
    }

    /// Every IP list called `name`, sorted (empty: unknown).
    fn ip_lists(&self, name: &str) -> Vec<&'n str> {
        let mut hrefs: Vec<&str> = self
            .names
            .ip_lists
            .iter()
            .filter(|(_, l)| l.name == name)
            .map(|(h, _)| h.as_str())
            .collect();
        hrefs.sort_unstable();
        hrefs
    }
}

impl Restriction {
    /// The query filters for this restriction, with label and IP list hrefs from `names`
    /// (the connection's current snapshot). A side is narrowed by its labels when every
    /// label value is known, else by its IP lists when every list is known, else not at
    /// all. An excluded label the cache does not know is not excluded.
    pub fn query(&self, names: &Names) -> Narrowing {
        let lookup = Lookup::new(names);
        let mut out = Narrowing::default();
        let ports: Vec<Option<u16>> = match &self.ports {
            Some(p) if !p.is_empty() => p.iter().copied().map(Some).collect(),
            _ => vec![None],
        };
        let protos: Vec<Option<u8>> = match &self.protos {
            Some(p) if !p.is_empty() && p.len() * ports.len() <= MAX_SERVICES => {
                p.iter().copied().map(Some).collect()
            }
            _ => vec![None],
        };
        if ports != [None] || protos != [None] {
            for port in &ports {
                for proto in &protos {
                    out.services.push(Service {
                        port: *port,
                        proto: *proto,
                        ..Default::default()
                    });
                }
            }
        }
        for side in [Side::Src, Side::Dst] {
            let include = self.include(side, &lookup, &mut out);
            let filter = match side {
                Side::Src => &mut out.sources,
                Side::Dst => &mut out.destinations,
            };
            filter.include = include;
        }
        let mut excluded = 0;
        for e in &self.excludes {
            if excluded >= MAX_EXCLUDES {
                break;
            }
            let (side, actor) = match e {
                Excluded::Label(side, k, v) => match lookup.label(k, v) {
                    Some(href) => (
                        *side,
                        Actor::Label {
                            href: href.to_string(),
                        },
                    ),
                    None => {
                        out.not_found.push(format!("label {k}: {v}"));
                        continue;
                    }
                },
                Excluded::Ip(side, a) => (*side, Actor::IpAddress(a.to_string())),
            };
            match side {
                Side::Src => out.sources.exclude.push(actor),
                Side::Dst => out.destinations.exclude.push(actor),
            }
            excluded += 1;
        }
        out
    }

    /// The `include` of one side (empty: any).
    fn include(&self, side: Side, lookup: &Lookup<'_>, out: &mut Narrowing) -> Vec<Vec<Actor>> {
        if let Some(groups) = self.labels(side).filter(|g| !g.is_empty()) {
            let mut include = Vec::new();
            let mut known = true;
            for g in groups {
                let mut actors = Vec::new();
                for (k, v) in g {
                    match lookup.label(k, v) {
                        Some(href) => actors.push(Actor::Label {
                            href: href.to_string(),
                        }),
                        None => {
                            out.not_found.push(format!("label {k}: {v}"));
                            known = false;
                        }
                    }
                }
                include.push(actors);
            }
            if known {
                return include;
            }
        }
        if let Some(lists) = self.ip_lists(side).filter(|l| !l.is_empty()) {
            let mut include = Vec::new();
            let mut known = true;
            for name in lists {
                let hrefs = lookup.ip_lists(name);
                if hrefs.is_empty() {
                    out.not_found.push(format!("ip_list {name}"));
                    known = false;
                }
                include.extend(hrefs.into_iter().map(|h| {
                    vec![Actor::IpList {
                        href: h.to_string(),
                    }]
                }));
            }
            if known && include.len() <= MAX_IP_LISTS {
                out.ip_lists = true;
                return include;
            }
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pce::names::{IpListEntry, NameCache};
    use crate::stages::filter::CompiledFilter;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn filter(v: Value) -> FilterConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn port_sets_are_read_from_match_and_any() {
        let f = |v: Value| {
            filter_restriction(&filter(v))
                .ports
                .map(|s| s.into_iter().collect::<Vec<_>>())
        };
        assert_eq!(
            f(json!({"inputs": ["x"], "match": {"service.port": 22}})),
            Some(vec![22])
        );
        assert_eq!(
            f(json!({"inputs": ["x"], "match": {"service.port": [3389, "445", 22]}})),
            Some(vec![22, 445, 3389])
        );
        assert_eq!(
            f(json!({"inputs": ["x"], "match": {"service.port": {"in": [22, 23], "eq": 22}}})),
            Some(vec![22])
        );
        assert_eq!(
            f(json!({"inputs": ["x"], "any": [{"service.port": 22}, {"service.port": [80, 443]}]})),
            Some(vec![22, 80, 443])
        );
        assert_eq!(
            f(
                json!({"inputs": ["x"], "match": {"service.port": [22, 80]}, "any": [{"service.port": 22}, {"src.ip": "10.0.0.1"}]})
            ),
            Some(vec![22, 80]),
            "`match` restricts every `any` group"
        );
        for open in [
            json!({"inputs": ["x"]}),
            json!({"inputs": ["x"], "match": {"service.port": {"gte": 1024}}}),
            json!({"inputs": ["x"], "match": {"service.port": [22, null]}}),
            json!({"inputs": ["x"], "match": {"service.port": [22, "ssh"]}}),
            json!({"inputs": ["x"], "match": {"service.port": 22.5}}),
            json!({"inputs": ["x"], "any": [{"service.port": 22}, {"src.ip": "10.0.0.1"}]}),
            json!({"inputs": ["x"], "exclude": {"service.port": 22}}),
        ] {
            assert_eq!(f(open.clone()), None, "{open}");
        }
        assert_eq!(
            source_restriction(None).ports,
            None,
            "a reader that is not a filter"
        );
        assert_eq!(source_restriction(Some(&[])).ports, None);
        let ports = |p: Option<BTreeSet<u16>>| Restriction {
            ports: p,
            ..Restriction::everything()
        };
        assert_eq!(union(&[ports(Some([22].into())), ports(None)]).ports, None);
        assert_eq!(
            union(&[ports(Some([22].into())), ports(Some([445, 22].into()))]).ports,
            Some([22, 445].into())
        );
    }

    #[test]
    fn labels_ip_lists_protocols_and_excludes_are_read_from_certain_conditions() {
        let r = |v: Value| filter_restriction(&filter(v));
        let group = |pairs: &[(&str, &str)]| -> LabelGroup {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let a = r(json!({"inputs": ["x"], "match": {
            "dst.labels.role": "DB", "dst.labels.env": ["prod", "staging"],
            "src.ip": "ip_list:Corporate", "service.proto": [6, "17"]
        }}));
        assert_eq!(
            a.dst_labels,
            Some(
                [
                    group(&[("role", "DB"), ("env", "prod")]),
                    group(&[("role", "DB"), ("env", "staging")])
                ]
                .into()
            )
        );
        assert_eq!(a.src_labels, None);
        assert_eq!(a.src_ip_lists, Some(["Corporate".to_string()].into()));
        assert_eq!(a.dst_ip_lists, None);
        assert_eq!(a.protos, Some([6, 17].into()));
        let b = r(json!({"inputs": ["x"], "any": [
            {"dst.labels.role": "DB"}, {"dst.labels.role": {"in": ["Web", "App"]}}
        ]}));
        assert_eq!(
            b.dst_labels,
            Some(
                [
                    group(&[("role", "DB")]),
                    group(&[("role", "Web")]),
                    group(&[("role", "App")])
                ]
                .into()
            )
        );
        for open in [
            json!({"inputs": ["x"], "match": {"dst.labels.role": {"regex": "^DB$"}}}),
            json!({"inputs": ["x"], "match": {"dst.labels.role": {"ne": "DB"}}}),
            json!({"inputs": ["x"], "match": {"dst.labels.role": ["DB", null]}}),
            json!({"inputs": ["x"], "match": {"dst.labels.role": 5}}),
            json!({"inputs": ["x"], "match": {"dst.labels.app.tier": "web"}}),
            json!({"inputs": ["x"], "match": {"dst.labels": "DB"}}),
            json!({"inputs": ["x"], "any": [{"dst.labels.role": "DB"}, {"service.port": 22}]}),
            json!({"inputs": ["x"], "exclude": {"dst.labels.role": "DB"}}),
            json!({"inputs": ["x"], "where": "event.dst.labels.role == \"DB\""}),
        ] {
            assert_eq!(r(open.clone()).dst_labels, None, "{open}");
        }
        for open in [
            json!({"inputs": ["x"], "match": {"dst.ip": ["ip_list:Scanners", "10.0.0.1"]}}),
            json!({"inputs": ["x"], "match": {"dst.ip": {"ne": "ip_list:Scanners"}}}),
            json!({"inputs": ["x"], "match": {"dst.ip_list_names": "ip_list:Scanners"}}),
        ] {
            assert_eq!(r(open.clone()).dst_ip_lists, None, "{open}");
        }
        // Excludes: only a group of one equality drops every flow of an actor.
        let e = r(json!({"inputs": ["x"], "exclude": [
            {"src.labels.role": ["Scanner", "Jumpbox"]},
            {"dst.ip": "10.0.0.9"},
            {"src.ip": "10.0.0.0/8"},
            {"dst.labels.env": "dev", "service.port": 22},
            {"dst.labels.role": {"eq": "DB"}}
        ]}));
        assert_eq!(
            e.excludes,
            [
                Excluded::Label(Side::Src, "role".into(), "Scanner".into()),
                Excluded::Label(Side::Src, "role".into(), "Jumpbox".into()),
                Excluded::Ip(Side::Dst, "10.0.0.9".parse().unwrap()),
            ]
            .into()
        );
        // An actor is excluded only when every filter excludes it.
        let other = r(json!({"inputs": ["x"], "exclude": {"dst.ip": "10.0.0.9"}}));
        assert_eq!(
            union(&[e, other]).excludes,
            [Excluded::Ip(Side::Dst, "10.0.0.9".parse().unwrap())].into()
        );
    }

    fn names() -> Names {
        let mut names = Names::default();
        for (href, k, v) in [
            ("/orgs/1/labels/1", "role", "DB"),
            ("/orgs/1/labels/2", "role", "Web"),
            ("/orgs/1/labels/3", "env", "prod"),
        ] {
            names.labels.insert(href.into(), (k.into(), v.into()));
        }
        let list = Arc::new(IpListEntry {
            name: "Corporate".into(),
            include: vec!["192.168.0.0/16".parse().unwrap()],
            exclude: Vec::new(),
        });
        names
            .ip_lists
            .insert("/orgs/1/sec_policy/active/ip_lists/7".into(), list.clone());
        names.ip_lists_by_name.insert("Corporate".into(), list);
        names
    }

    fn label(href: &str) -> Actor {
        Actor::Label { href: href.into() }
    }

    #[test]
    fn labels_and_ip_lists_become_hrefs_from_the_name_cache() {
        let names = names();
        let r = union(&[
            filter_restriction(&filter(json!({"inputs": ["x"], "match": {
                "dst.labels.role": "DB", "dst.labels.env": "prod", "src.ip": "ip_list:Corporate",
                "service.port": 5432, "service.proto": 6
            }}))),
            filter_restriction(&filter(json!({"inputs": ["x"], "match": {
                "dst.labels.role": "Web", "src.ip": "ip_list:Corporate", "service.port": [80, 443]
            }}))),
        ]);
        let q = r.query(&names);
        assert_eq!(
            q.destinations.include,
            vec![
                vec![label("/orgs/1/labels/3"), label("/orgs/1/labels/1")],
                vec![label("/orgs/1/labels/2")],
            ]
        );
        assert_eq!(
            q.sources.include,
            vec![vec![Actor::IpList {
                href: "/orgs/1/sec_policy/active/ip_lists/7".into()
            }]]
        );
        assert!(
            q.ip_lists,
            "workloads in the list's ranges are asked for too"
        );
        let ports: Vec<_> = q.services.iter().map(|s| (s.port, s.proto)).collect();
        assert_eq!(
            ports,
            [(Some(80), None), (Some(443), None), (Some(5432), None)],
            "the protocol is dropped: one pipeline keeps any"
        );
        assert!(q.not_found.is_empty());
        let mut query = crate::pce::client::TrafficQuery::new(
            "q",
            chrono::DateTime::UNIX_EPOCH,
            chrono::DateTime::UNIX_EPOCH + chrono::Duration::minutes(5),
            10,
        );
        q.apply(&mut query);
        assert!(!query.exclude_workloads_from_ip_list_query);
        assert_eq!(query.destinations, q.destinations);
    }

    #[test]
    fn a_label_or_ip_list_the_cache_does_not_know_narrows_nothing() {
        let names = names();
        let r = |v: Value| filter_restriction(&filter(v)).query(&names);
        // `DB` is known, `Cache` not: the destinations are not narrowed at all.
        let q = r(json!({"inputs": ["x"], "any": [
            {"dst.labels.role": "DB"}, {"dst.labels.role": "Cache"}
        ]}));
        assert!(q.destinations.include.is_empty(), "{q:?}");
        assert_eq!(q.not_found, ["label role: Cache"]);
        // Values are compared exactly.
        let q = r(json!({"inputs": ["x"], "match": {"dst.labels.role": "db"}}));
        assert!(q.destinations.include.is_empty(), "{q:?}");
        let q =
            r(json!({"inputs": ["x"], "match": {"src.ip": ["ip_list:Corporate", "ip_list:Gone"]}}));
        assert!(q.sources.include.is_empty(), "{q:?}");
        assert!(!q.ip_lists);
        assert_eq!(q.not_found, ["ip_list Gone"]);
        // An unknown label falls back on the side's IP lists, when they are known.
        let q = r(
            json!({"inputs": ["x"], "match": {"src.labels.role": "Cache", "src.ip": "ip_list:Corporate"}}),
        );
        assert_eq!(q.sources.include.len(), 1);
        assert!(q.ip_lists);
        // An unknown excluded label is not excluded; an address always is.
        let q = r(
            json!({"inputs": ["x"], "exclude": [{"src.labels.role": "Cache"}, {"src.ip": "10.0.0.9"}, {"dst.labels.role": "DB"}]}),
        );
        assert_eq!(q.sources.exclude, [Actor::IpAddress("10.0.0.9".into())]);
        assert_eq!(q.destinations.exclude, [label("/orgs/1/labels/1")]);
        // Nothing known at all: nothing narrowed.
        let q = filter_restriction(&filter(
            json!({"inputs": ["x"], "match": {"dst.labels.role": "DB"}}),
        ))
        .query(&Names::default());
        assert_eq!(q.destinations, ActorFilter::default());
    }

    /// The label universe of the property test: (href, key, value).
    const LABELS: [(&str, &str, &str); 6] = [
        ("/orgs/1/labels/1", "role", "DB"),
        ("/orgs/1/labels/2", "role", "Web"),
        ("/orgs/1/labels/3", "role", "App"),
        ("/orgs/1/labels/4", "env", "prod"),
        ("/orgs/1/labels/5", "env", "dev"),
        ("/orgs/1/labels/6", "loc", "eu"),
    ];
    /// Its IP lists: (href, name, included, excluded).
    const LISTS: [(&str, &str, &str, &str); 3] = [
        (
            "/orgs/1/ip_lists/1",
            "Corp",
            "192.168.0.0/16",
            "192.168.99.0/24",
        ),
        (
            "/orgs/1/ip_lists/2",
            "Scan",
            "203.0.113.0/24",
            "203.0.113.128/32",
        ),
        ("/orgs/1/ip_lists/3", "Lab", "10.1.0.0/16", "10.1.2.0/24"),
    ];
    const IPS: [&str; 8] = [
        "192.168.1.5",
        "192.168.99.3",
        "203.0.113.9",
        "203.0.113.128",
        "10.1.0.7",
        "10.1.2.3",
        "10.0.0.1",
        "10.0.0.2",
    ];
    const PORTS: [u16; 6] = [22, 80, 443, 445, 3389, 5432];
    const PROTOS: [u8; 3] = [1, 6, 17];

    fn list_entry(i: usize) -> IpListEntry {
        let (_, name, inc, exc) = LISTS[i];
        IpListEntry {
            name: name.into(),
            include: vec![inc.parse().unwrap()],
            exclude: vec![exc.parse().unwrap()],
        }
    }

    /// A flow's end as the test sees it: its address and its labels (by href) when it is
    /// a workload.
    #[derive(Debug, Clone)]
    struct End {
        ip: IpAddr,
        labels: Option<Vec<usize>>,
    }

    /// The PCE's include/exclude semantics, written out plainly: does `actor` match `end`?
    fn actor_matches(actor: &Actor, end: &End, workloads_in_lists: bool) -> bool {
        match actor {
            Actor::Label { href } => end
                .labels
                .as_ref()
                .is_some_and(|ls| ls.iter().any(|&i| LABELS[i].0 == href)),
            Actor::IpList { href } => {
                (end.labels.is_none() || workloads_in_lists)
                    && LISTS
                        .iter()
                        .position(|l| l.0 == href)
                        .is_some_and(|i| list_entry(i).contains(end.ip))
            }
            Actor::IpAddress(a) => a.parse::<IpAddr>().is_ok_and(|a| a == end.ip),
            other => panic!("the narrowing asked for {other:?}"),
        }
    }

    fn side_matches(f: &ActorFilter, end: &End, workloads_in_lists: bool) -> bool {
        (f.include.is_empty()
            || f.include
                .iter()
                .any(|g| g.iter().all(|a| actor_matches(a, end, workloads_in_lists))))
            && !f
                .exclude
                .iter()
                .any(|a| actor_matches(a, end, workloads_in_lists))
    }

    fn query_matches(q: &Narrowing, src: &End, dst: &End, port: u16, proto: u8) -> bool {
        let service = q.services.is_empty()
            || q.services
                .iter()
                .any(|s| s.port.is_none_or(|p| p == port) && s.proto.is_none_or(|p| p == proto));
        service
            && side_matches(&q.sources, src, q.ip_lists)
            && side_matches(&q.destinations, dst, q.ip_lists)
    }

    /// A flow event as the hub hands it on (enriched `labels`).
    fn flow_event(src: &End, dst: &End, port: u16, proto: u8) -> Value {
        let end = |e: &End| {
            let mut v = json!({"ip": e.ip.to_string()});
            if let Some(ls) = &e.labels {
                let map: serde_json::Map<String, Value> = ls
                    .iter()
                    .map(|&i| (LABELS[i].1.to_string(), json!(LABELS[i].2)))
                    .collect();
                v["workload"] = json!({"labels": ls.iter().map(|&i| json!({"href": LABELS[i].0, "key": LABELS[i].1, "value": LABELS[i].2})).collect::<Vec<_>>()});
                v["labels"] = Value::Object(map);
            } else {
                v["labels"] = json!({});
            }
            v
        };
        json!({"src": end(src), "dst": end(dst), "service": {"port": port, "proto": proto}, "policy_decision": "blocked"})
    }

    fn random_end(rng: &mut ChaCha8Rng) -> End {
        let ip = IPS[rng.random_range(0..IPS.len())].parse().unwrap();
        let labels = rng.random_bool(0.7).then(|| {
            // At most one value per key, like a PCE workload.
            let mut ls = Vec::new();
            for key in ["role", "env", "loc"] {
                let of_key: Vec<usize> =
                    (0..LABELS.len()).filter(|&i| LABELS[i].1 == key).collect();
                if rng.random_bool(0.8) {
                    ls.push(of_key[rng.random_range(0..of_key.len())]);
                }
            }
            ls
        });
        End { ip, labels }
    }

    /// One random condition (path, matcher) of the kinds narrowing reads, and some it
    /// must not trust.
    fn random_condition(rng: &mut ChaCha8Rng) -> (String, Value) {
        let kind = rng.random_range(0..9);
        let side = ["src", "dst"][rng.random_range(0..2)];
        condition_of(rng, kind, side)
    }

    /// A random condition of `kind` (0 port, 1 protocol, 2–3 label, 4–5 IP list, 6 label
    /// regex, 7 address, 8 port `ne`) on `side`.
    fn condition_of(rng: &mut ChaCha8Rng, kind: u32, side: &str) -> (String, Value) {
        let some = |rng: &mut ChaCha8Rng, pool: &[Value]| -> Value {
            let n = rng.random_range(1..4);
            let vals: Vec<Value> = (0..n)
                .map(|_| pool[rng.random_range(0..pool.len())].clone())
                .collect();
            match rng.random_range(0..4) {
                0 => vals[0].clone(),
                1 => json!({"in": vals}),
                2 => json!({"eq": vals[0], "in": vals}),
                _ => Value::Array(vals),
            }
        };
        match kind {
            0 => {
                let pool: Vec<Value> = PORTS.iter().map(|p| json!(p)).collect();
                ("service.port".into(), some(rng, &pool))
            }
            1 => {
                let pool: Vec<Value> = PROTOS.iter().map(|p| json!(p)).collect();
                ("service.proto".into(), some(rng, &pool))
            }
            2 | 3 => {
                let key = ["role", "env", "loc"][rng.random_range(0..3)];
                let pool: Vec<Value> = LABELS
                    .iter()
                    .filter(|l| l.1 == key)
                    .map(|l| json!(l.2))
                    .chain(rng.random_bool(0.2).then(|| json!("Unlabelled")))
                    .collect();
                (format!("{side}.labels.{key}"), some(rng, &pool))
            }
            4 | 5 => {
                let pool: Vec<Value> = LISTS
                    .iter()
                    .map(|l| json!(format!("ip_list:{}", l.1)))
                    .chain(rng.random_bool(0.2).then(|| json!("ip_list:Nowhere")))
                    .collect();
                (format!("{side}.ip"), some(rng, &pool))
            }
            6 => (format!("{side}.labels.role"), {
                let re = ["^D", "b$", "App"][rng.random_range(0..3)];
                json!({ "regex": re })
            }),
            7 => (
                format!("{side}.ip"),
                json!(IPS[rng.random_range(0..IPS.len())]),
            ),
            _ => (
                "service.port".into(),
                json!({"ne": PORTS[rng.random_range(0..PORTS.len())]}),
            ),
        }
    }

    fn random_group(rng: &mut ChaCha8Rng, max: usize) -> serde_json::Map<String, Value> {
        let n = rng.random_range(1..=max);
        (0..n).map(|_| random_condition(rng)).collect()
    }

    /// Random filters and random flows: a flow that some pipeline's filter keeps is always
    /// one the narrowed query asks for, whatever the filters restrict (ports, protocols,
    /// labels, IP lists, excludes) and whatever the name cache knows.
    #[test]
    fn the_query_never_leaves_out_a_flow_a_pipeline_keeps() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // How often each part of the query was narrowed (the test must exercise them).
        let mut narrowed = [0usize; 5];
        for case in 0..800 {
            // The name cache: sometimes stale (a label or a list missing).
            let mut names = Names::default();
            for (i, (href, k, v)) in LABELS.iter().enumerate() {
                if !(rng.random_bool(0.1) && i > 0) {
                    names
                        .labels
                        .insert(href.to_string(), (k.to_string(), v.to_string()));
                }
            }
            for (i, (href, name, ..)) in LISTS.iter().enumerate() {
                if !rng.random_bool(0.1) {
                    let e = Arc::new(list_entry(i));
                    names.ip_lists.insert(href.to_string(), e.clone());
                    names.ip_lists_by_name.insert(name.to_string(), e);
                }
            }
            let cache = Arc::new(NameCache::default());
            cache.replace(names.clone());
            let pipelines = rng.random_range(1..4);
            let focus = (
                [0, 1, 2, 4][rng.random_range(0..4)],
                ["src", "dst"][rng.random_range(0..2)],
            );
            // Often, one equality every filter excludes (besides its own groups), so that
            // the query has excludes to get wrong.
            let shared = rng.random_bool(0.4).then(|| {
                loop {
                    let (path, value) = random_condition(&mut rng);
                    if !value.is_object() && (path.contains(".labels.") || path.ends_with(".ip")) {
                        break (path, value);
                    }
                }
            });
            let mut sources = Vec::new();
            let mut compiled = Vec::new();
            let mut configs = Vec::new();
            for _ in 0..pipelines {
                let readers = rng.random_range(1..3);
                let mut filters = Vec::new();
                for _ in 0..readers {
                    let mut f = json!({"inputs": ["flows"]});
                    let mut match_ = serde_json::Map::new();
                    if rng.random_bool(0.8) {
                        match_ = random_group(&mut rng, 3);
                    }
                    // The case's focus, in most filters: its dimension is then often
                    // narrowed.
                    if rng.random_bool(0.7) {
                        let (path, value) = condition_of(&mut rng, focus.0, focus.1);
                        match_.insert(path, value);
                    }
                    f["match"] = Value::Object(match_);
                    if rng.random_bool(0.4) {
                        let n = rng.random_range(1..4);
                        f["any"] = Value::Array(
                            (0..n)
                                .map(|_| Value::Object(random_group(&mut rng, 2)))
                                .collect(),
                        );
                    }
                    if rng.random_bool(0.5) || shared.is_some() {
                        let n = rng.random_range(1..4);
                        let mut groups: Vec<Value> = (0..n)
                            .map(|_| Value::Object(random_group(&mut rng, 2)))
                            .collect();
                        if let Some((path, value)) = &shared {
                            groups.push(json!({ path.clone(): value.clone() }));
                        }
                        f["exclude"] = if groups.len() == 1 && rng.random_bool(0.5) {
                            groups[0].clone()
                        } else {
                            Value::Array(groups)
                        };
                    }
                    let cfg = filter(f);
                    let mut c = CompiledFilter::compile(&cfg).unwrap();
                    c.resolve_ip_lists(std::slice::from_ref(&cache));
                    compiled.push(c);
                    filters.push(cfg);
                }
                sources.push(source_restriction(Some(&filters)));
                configs.push(filters);
            }
            let q = union(&sources).query(&names);
            for (i, on) in [
                !q.services.is_empty(),
                q.sources
                    .include
                    .iter()
                    .chain(&q.destinations.include)
                    .flatten()
                    .any(|a| matches!(a, Actor::Label { .. })),
                q.ip_lists,
                !q.sources.exclude.is_empty() || !q.destinations.exclude.is_empty(),
                !q.not_found.is_empty(),
            ]
            .into_iter()
            .enumerate()
            {
                narrowed[i] += usize::from(on);
            }
            for _ in 0..60 {
                let (src, dst) = (random_end(&mut rng), random_end(&mut rng));
                let port = PORTS[rng.random_range(0..PORTS.len())];
                let proto = PROTOS[rng.random_range(0..PROTOS.len())];
                let event = flow_event(&src, &dst, port, proto);
                let kept = compiled.iter().any(|c| c.matches(&event));
                assert!(
                    !kept || query_matches(&q, &src, &dst, port, proto),
                    "case {case}: {event} is kept by a pipeline but not asked for\nquery: {}\nfilters: {configs:?}",
                    q.describe()
                );
            }
        }
        for (i, n) in narrowed.into_iter().enumerate() {
            assert!(
                n >= 20,
                "part {i} of the query was narrowed in only {n} cases"
            );
        }
    }
}
