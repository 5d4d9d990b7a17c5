//! Which flows a subscriber can use: its policy decisions and, when every reader of its
//! source is a `filter` stage, what those filters can keep.
//!
//! The hub tests each flow right after making it, while its bytes are still in the
//! processor's cache, and hands a subscriber only the flows it can keep; a flow no
//! subscriber can keep is not handed on at all. Without this every pipeline's filter
//! read every flow of the slice again, long after it was made (a 200,000-flow slice does
//! not fit in any cache), once per pipeline.
//!
//! The test errs on the side of handing on: a filter's `ip_list:` conditions and `where:`
//! script are left out of it (see [`CompiledFilter::relaxed`]), and the filter stage still
//! decides. A source whose filters cannot be compiled (the stage reports why) gets
//! every flow.

use std::collections::HashSet;

use crate::event::{Event, FieldPath};
use crate::stages::filter::{CompiledFilter, FilterConfig};

/// Where a flow says its policy decision.
static POLICY_DECISION: std::sync::LazyLock<Option<FieldPath>> =
    std::sync::LazyLock::new(|| FieldPath::parse("policy_decision").ok());

/// What one subscriber can use.
#[derive(Debug, Default)]
pub(crate) struct Route {
    /// The policy decisions its source asks for (`None`: all).
    decisions: Option<HashSet<&'static str>>,
    /// Its readers' filters, relaxed (`None`: some reader is not a filter).
    filters: Option<Vec<CompiledFilter>>,
}

impl Route {
    /// The route of a source asking for `decisions`, read by `readers` (`None` when some
    /// reader is not a filter stage).
    pub(crate) fn new(
        decisions: Option<HashSet<&'static str>>,
        readers: Option<&[FilterConfig]>,
    ) -> Route {
        let filters = readers.and_then(|readers| {
            readers
                .iter()
                .map(|f| CompiledFilter::compile(f).ok().map(|c| c.relaxed()))
                .collect::<Option<Vec<_>>>()
        });
        Route { decisions, filters }
    }

    /// Whether the subscriber can use `event`.
    pub(crate) fn wants(&self, event: &Event) -> bool {
        if let Some(d) = &self.decisions {
            let decision = POLICY_DECISION
                .as_ref()
                .and_then(|p| p.first_in(event))
                .and_then(|f| f.as_str());
            if !decision.is_some_and(|p| d.contains(p)) {
                return false;
            }
        }
        match &self.filters {
            None => true,
            Some(filters) => filters.iter().any(|f| f.matches_event(event)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn filter(v: Value) -> FilterConfig {
        serde_json::from_value(v).unwrap()
    }

    fn flow(port: u16, decision: &str, role: &str) -> Event {
        let data = json!({
            "service": {"port": port, "proto": 6},
            "policy_decision": decision,
            "dst": {"ip": "10.0.0.9", "labels": {"role": role}},
        });
        Event::from_record(data, "f".into(), chrono::DateTime::UNIX_EPOCH)
    }

    #[test]
    fn a_flow_goes_where_a_reader_can_keep_it() {
        let readers = [
            filter(json!({"inputs": ["f"], "match": {"service.port": 22}})),
            filter(json!({"inputs": ["f"], "match": {"dst.labels.role": "DB"}})),
        ];
        let route = Route::new(None, Some(&readers));
        assert!(route.wants(&flow(22, "allowed", "Web")));
        assert!(route.wants(&flow(443, "allowed", "DB")));
        assert!(!route.wants(&flow(443, "allowed", "Web")));

        let blocked = Route::new(Some(["blocked"].into()), Some(&readers));
        assert!(blocked.wants(&flow(22, "blocked", "Web")));
        assert!(!blocked.wants(&flow(22, "allowed", "Web")));

        // A reader that is not a filter: every flow of its decisions.
        let open = Route::new(Some(["blocked"].into()), None);
        assert!(open.wants(&flow(1, "blocked", "x")));
        assert!(!open.wants(&flow(1, "allowed", "x")));
    }

    #[test]
    fn what_needs_more_than_the_flow_is_left_to_the_stage() {
        // `where:` and `ip_list:` cannot be decided by the hub: the flow goes on.
        let readers = [filter(json!({
            "inputs": ["f"],
            "match": {"service.port": 22, "dst.ip": "ip_list:Admins"},
            "where": "false",
        }))];
        let route = Route::new(None, Some(&readers));
        assert!(route.wants(&flow(22, "allowed", "Web")));
        assert!(!route.wants(&flow(23, "allowed", "Web")));

        // An exclude group with an `ip_list:` condition is left out whole (dropping only
        // that condition would exclude every port-22 flow).
        let readers = [filter(json!({
            "inputs": ["f"],
            "exclude": {"service.port": 22, "dst.ip": "ip_list:Admins"},
        }))];
        let route = Route::new(None, Some(&readers));
        assert!(route.wants(&flow(22, "allowed", "Web")));
    }
}
