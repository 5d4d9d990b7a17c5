//! Asking the PCE for less: the ports a source's pipeline can pass at all.
//!
//! A `pce_traffic` source whose every reader is a `filter` stage that keeps only some
//! destination ports (`service.port: [22, 3389]`) needs only those flows; when every
//! source of a connection says so, the connection's one query asks the PCE for the union
//! of their ports, and the download holds nothing the pipelines would drop anyway. A
//! source with any other reader, or a filter that lets any port through, asks for all.

use std::collections::BTreeSet;

use crate::stages::filter::{Conditions, FilterConfig, Literal, Matcher};

/// The field a port restriction is read from.
const PORT_FIELD: &str = "service.port";

/// The most ports a query names; a wider set asks for every port.
pub const MAX_PORTS: usize = 200;

/// A port the PCE can be asked for (1–65535), from a filter literal.
fn port(l: &Literal) -> Option<u16> {
    let n = match l {
        Literal::Number(n) => *n,
        Literal::String(s) => s.trim().parse::<f64>().ok()?,
        Literal::Bool(_) | Literal::Null => return None,
    };
    (n.fract() == 0.0 && (1.0..=65535.0).contains(&n)).then_some(n as u16)
}

/// The ports `lits` all are, if each is one.
fn ports(lits: &[Literal]) -> Option<BTreeSet<u16>> {
    lits.iter().map(port).collect()
}

/// The ports one group of conditions lets through (`None`: any).
fn group_ports(conds: &Conditions) -> Option<BTreeSet<u16>> {
    let m = conds.get(PORT_FIELD)?;
    match m {
        Matcher::Equals(l) => ports(std::slice::from_ref(l)),
        Matcher::AnyOf(lits) => ports(lits),
        Matcher::Ops(ops) => {
            // `eq` and `in` both restrict: the port must be in both.
            let eq = ops.eq.as_ref().map(|l| ports(std::slice::from_ref(l)));
            let in_ = ops.in_.as_deref().map(ports);
            match (eq, in_) {
                (Some(Some(a)), Some(Some(b))) => Some(a.intersection(&b).copied().collect()),
                (Some(Some(a)), _) | (_, Some(Some(a))) => Some(a),
                _ => None,
            }
        }
    }
}

/// The destination ports a filter can let through, when it keeps only some (`None`: any
/// port may pass).
pub fn filter_ports(f: &FilterConfig) -> Option<BTreeSet<u16>> {
    if let Some(p) = group_ports(&f.match_) {
        return Some(p);
    }
    // Without a restriction in `match`, every `any` group must restrict the port.
    if f.any.is_empty() {
        return None;
    }
    let mut all = BTreeSet::new();
    for g in &f.any {
        all.extend(group_ports(g)?);
    }
    Some(all)
}

/// The ports a source needs, given its readers: `Some` only when every reader is a
/// filter keeping only some ports (their union), `None` otherwise (`readers` is `None`
/// when some reader is not a filter).
pub fn source_ports(readers: Option<&[FilterConfig]>) -> Option<BTreeSet<u16>> {
    let readers = readers?;
    if readers.is_empty() {
        return None;
    }
    let mut all = BTreeSet::new();
    for f in readers {
        all.extend(filter_ports(f)?);
    }
    (all.len() <= MAX_PORTS).then_some(all)
}

/// The ports one query asks for: the union of every source's, or `None` (every port)
/// when one source needs every port.
pub fn union(sources: &[Option<BTreeSet<u16>>]) -> Option<BTreeSet<u16>> {
    if sources.is_empty() {
        return None;
    }
    let mut all = BTreeSet::new();
    for s in sources {
        all.extend(s.as_ref()?);
    }
    (all.len() <= MAX_PORTS).then_some(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::filter::CompiledFilter;
    use rand::{Rng, SeedableRng};
    use serde_json::{Value, json};

    fn filter(v: Value) -> FilterConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn port_sets_are_read_from_match_and_any() {
        let f = |v: Value| filter_ports(&filter(v)).map(|s| s.into_iter().collect::<Vec<_>>());
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
        assert_eq!(source_ports(None), None, "a reader that is not a filter");
        assert_eq!(source_ports(Some(&[])), None);
        assert_eq!(union(&[Some([22].into()), None]), None);
        assert_eq!(
            union(&[Some([22].into()), Some([445, 22].into())]),
            Some([22, 445].into())
        );
    }

    /// Random filters and random flows: a flow that some pipeline's filter keeps is always
    /// one the narrowed query asks for.
    #[test]
    fn the_query_never_leaves_out_a_flow_a_pipeline_keeps() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let port_pool = [22u16, 23, 80, 443, 445, 3389, 5432, 8080];
        let pick_ports = |rng: &mut rand_chacha::ChaCha8Rng| -> Vec<Value> {
            let n = rng.random_range(1..4);
            (0..n)
                .map(|_| {
                    let p = port_pool[rng.random_range(0..port_pool.len())];
                    if rng.random_bool(0.2) {
                        json!(p.to_string())
                    } else {
                        json!(p)
                    }
                })
                .collect()
        };
        for case in 0..400 {
            let pipelines = rng.random_range(1..5);
            let mut filters = Vec::new();
            for _ in 0..pipelines {
                let mut f = json!({"inputs": ["flows"]});
                match rng.random_range(0..6) {
                    0 => {}
                    1 => f["match"] = json!({"service.port": pick_ports(&mut rng)}),
                    2 => {
                        f["match"] = json!({"service.port": pick_ports(&mut rng), "policy_decision": "blocked"})
                    }
                    3 => {
                        f["any"] = json!([{"service.port": pick_ports(&mut rng)}, {"service.port": pick_ports(&mut rng)}])
                    }
                    4 => f["match"] = json!({"service.port": {"in": pick_ports(&mut rng)}}),
                    _ => {
                        f["any"] = json!([{"service.port": pick_ports(&mut rng)}, {"policy_decision": "allowed"}])
                    }
                }
                if rng.random_bool(0.3) {
                    f["exclude"] = json!({"service.port": pick_ports(&mut rng)});
                }
                filters.push(filter(f));
            }
            // Each pipeline has one source read by its one filter.
            let per_source: Vec<_> = filters
                .iter()
                .map(|f| source_ports(Some(std::slice::from_ref(f))))
                .collect();
            let asked = union(&per_source);
            let compiled: Vec<CompiledFilter> = filters
                .iter()
                .map(|f| CompiledFilter::compile(f).unwrap())
                .collect();
            for _ in 0..50 {
                let port = if rng.random_bool(0.9) {
                    json!(port_pool[rng.random_range(0..port_pool.len())])
                } else {
                    json!(rng.random_range(1..65535))
                };
                let decision =
                    ["blocked", "allowed", "potentially_blocked"][rng.random_range(0..3)];
                let flow =
                    json!({"service": {"port": port, "proto": 6}, "policy_decision": decision});
                let kept = compiled.iter().any(|c| c.matches(&flow));
                let in_query = asked.as_ref().is_none_or(|ports| {
                    flow["service"]["port"]
                        .as_u64()
                        .is_some_and(|p| ports.contains(&(p as u16)))
                });
                assert!(
                    !kept || in_query,
                    "case {case}: {flow} is kept by a pipeline but not asked for ({asked:?}; {filters:?})"
                );
            }
        }
    }
}
