//! The nftables JSON the `nftables_ban` sink applies (built with the `nftables` crate's
//! typed schema) and what it reads back: pure functions, no `nft` run here.
//!
//! vigil owns one table, `inet vigil`, and touches nothing else:
//!
//! ```text
//! table inet vigil {
//!     set banned4 { type ipv4_addr; flags timeout; }
//!     set banned6 { type ipv6_addr; flags timeout; }
//!     chain input {
//!         type filter hook input priority filter - 10; policy accept;
//!         ip saddr @banned4 counter drop comment "vigil: drop banned4"
//!         ip6 saddr @banned6 counter drop comment "vigil: drop banned6"
//!     }
//! }
//! ```
//!
//! A ban is `add element inet vigil banned4 { 203.0.113.7 timeout 1h }`; the kernel
//! removes the element when its timeout passes. Making the table, sets and chain is
//! idempotent (`add` of what exists changes nothing); the two rules are written (after
//! `flush chain`, in the same transaction) only when the live chain lacks them, so a
//! restart neither duplicates them nor resets their counters.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;

use nftables::expr::{Elem, Expression, NamedExpression, Payload, PayloadField};
use nftables::schema::{
    Chain, Element, FlushObject, NfCmd, NfListObject, NfObject, Nftables, Rule, Set, SetFlag,
    SetType, SetTypeValue, Table,
};
use nftables::stmt::{Counter, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

/// The table vigil owns (family `inet`).
pub const TABLE: &str = "vigil";
/// The set of banned IPv4 addresses.
pub const SET4: &str = "banned4";
/// The set of banned IPv6 addresses.
pub const SET6: &str = "banned6";
/// The base chain that drops what the sets hold.
pub const CHAIN: &str = "input";
/// The chain's priority: `filter - 10`, ahead of the usual filter chains (a drop is final
/// whatever the order; this makes the counters count every banned packet).
pub const PRIORITY: i32 = -10;
/// The comments of the two drop rules, by which vigil finds them in the live chain.
pub const RULE4_COMMENT: &str = "vigil: drop banned4";
/// See [`RULE4_COMMENT`].
pub const RULE6_COMMENT: &str = "vigil: drop banned6";
/// The longest ban the kernel's JSON takes in one element (`timeout` is seconds in a
/// `u32`); the sink's checks keep `ttl` well below it.
pub const MAX_TTL_SECS: u32 = u32::MAX;

/// The set an address belongs in.
pub fn set_of(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => SET4,
        IpAddr::V6(_) => SET6,
    }
}

fn table() -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::INet,
        name: Cow::Borrowed(TABLE),
        handle: None,
    })
}

fn set(name: &'static str, kind: SetType) -> NfListObject<'static> {
    NfListObject::Set(Box::new(Set {
        family: NfFamily::INet,
        table: Cow::Borrowed(TABLE),
        name: Cow::Borrowed(name),
        handle: None,
        set_type: SetTypeValue::Single(kind),
        policy: None,
        flags: Some(HashSet::from([SetFlag::Timeout])),
        elem: None,
        timeout: None,
        gc_interval: None,
        size: None,
        comment: None,
    }))
}

fn chain() -> Chain<'static> {
    Chain {
        family: NfFamily::INet,
        table: Cow::Borrowed(TABLE),
        name: Cow::Borrowed(CHAIN),
        newname: None,
        handle: None,
        _type: Some(NfChainType::Filter),
        hook: Some(NfHook::Input),
        prio: Some(PRIORITY),
        dev: None,
        policy: Some(NfChainPolicy::Accept),
    }
}

fn drop_rule(
    protocol: &'static str,
    set: &'static str,
    comment: &'static str,
) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: Cow::Borrowed(TABLE),
        chain: Cow::Borrowed(CHAIN),
        expr: Cow::Owned(vec![
            Statement::Match(Match {
                left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
                    PayloadField {
                        protocol: Cow::Borrowed(protocol),
                        field: Cow::Borrowed("saddr"),
                    },
                ))),
                right: Expression::String(Cow::Owned(format!("@{set}"))),
                op: Operator::EQ,
            }),
            Statement::Counter(Counter::Anonymous(None)),
            Statement::Drop(None),
        ]),
        handle: None,
        index: None,
        comment: Some(Cow::Borrowed(comment)),
    })
}

/// The commands that make vigil's table, sets and chain (idempotent); with `rules`, also
/// the chain's two drop rules, after emptying the chain (for a chain that lacks them or
/// holds something else).
pub fn setup_commands(rules: bool) -> Vec<NfObject<'static>> {
    let mut out = vec![
        NfObject::CmdObject(NfCmd::Add(table())),
        NfObject::CmdObject(NfCmd::Add(set(SET4, SetType::Ipv4Addr))),
        NfObject::CmdObject(NfCmd::Add(set(SET6, SetType::Ipv6Addr))),
        NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(chain()))),
    ];
    if rules {
        out.push(NfObject::CmdObject(NfCmd::Flush(FlushObject::Chain(
            chain(),
        ))));
        out.push(NfObject::CmdObject(NfCmd::Add(drop_rule(
            "ip",
            SET4,
            RULE4_COMMENT,
        ))));
        out.push(NfObject::CmdObject(NfCmd::Add(drop_rule(
            "ip6",
            SET6,
            RULE6_COMMENT,
        ))));
    }
    out
}

fn element(addr: IpAddr, timeout: Option<u32>) -> NfListObject<'static> {
    let val = Expression::String(Cow::Owned(addr.to_string()));
    let elem = match timeout {
        Some(secs) => Expression::Named(NamedExpression::Elem(Elem {
            val: Box::new(val),
            timeout: Some(secs),
            expires: None,
            comment: None,
            counter: None,
        })),
        None => val,
    };
    NfListObject::Element(Element {
        family: NfFamily::INet,
        table: Cow::Borrowed(TABLE),
        name: Cow::Borrowed(set_of(addr)),
        elem: Cow::Owned(vec![elem]),
    })
}

/// The commands that ban `addr` for `ttl_secs`: `add element`, after deleting the live
/// element when `replace` (the kernel keeps an existing element's timeout on `add`; one
/// transaction, so the address is never unbanned in between).
pub fn ban_commands(addr: IpAddr, ttl_secs: u32, replace: bool) -> Vec<NfObject<'static>> {
    let mut out = Vec::new();
    if replace {
        out.push(NfObject::CmdObject(NfCmd::Delete(element(addr, None))));
    }
    out.push(NfObject::CmdObject(NfCmd::Add(element(
        addr,
        Some(ttl_secs),
    ))));
    out
}

/// The command that lifts the ban of `addr` (`delete element`).
pub fn remove_commands(addr: IpAddr) -> Vec<NfObject<'static>> {
    vec![NfObject::CmdObject(NfCmd::Delete(element(addr, None)))]
}

/// One batch of commands (one `nft -j -f -` run: one transaction).
pub fn batch(objects: Vec<NfObject<'static>>) -> Nftables<'static> {
    Nftables {
        objects: Cow::Owned(objects),
    }
}

/// The JSON text of `nftables` (what `nft -j -f -` reads).
pub fn to_json(nftables: &Nftables<'_>) -> String {
    // The schema's types serialize without fail (plain strings, numbers and lists).
    serde_json::to_string(nftables).unwrap_or_default()
}

/// An element of a live set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveElement {
    /// The banned address.
    pub addr: IpAddr,
    /// Its timeout, seconds (`None`: added without one, banned until removed).
    pub timeout: Option<u32>,
    /// Seconds until the kernel removes it (`None`: without a timeout).
    pub expires: Option<u32>,
}

/// What `nft -j list table inet vigil` shows of vigil's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveTable {
    /// Both sets exist.
    pub sets: bool,
    /// The chain holds both drop rules (found by their comments).
    pub rules: bool,
    /// The elements of both sets.
    pub elements: Vec<LiveElement>,
}

impl LiveTable {
    /// The element for `addr`, if banned.
    pub fn element(&self, addr: IpAddr) -> Option<&LiveElement> {
        self.elements.iter().find(|e| e.addr == addr)
    }

    /// Whether the table is ready to ban (sets and rules in place).
    pub fn ready(&self) -> bool {
        self.sets && self.rules
    }
}

/// Reads vigil's table out of a listing. Elements that are not single addresses (none are
/// added by vigil) are left out.
pub fn parse_table(listing: &Nftables<'_>) -> LiveTable {
    let mut live = LiveTable::default();
    let (mut set4, mut set6, mut rule4, mut rule6) = (false, false, false, false);
    for object in listing.objects.iter() {
        let NfObject::ListObject(object) = object else {
            continue;
        };
        match object {
            NfListObject::Set(s) if s.family == NfFamily::INet && s.table == TABLE => {
                match s.name.as_ref() {
                    SET4 => set4 = true,
                    SET6 => set6 = true,
                    _ => continue,
                }
                for e in s.elem.iter().flat_map(|e| e.iter()) {
                    if let Some(element) = live_element(e) {
                        live.elements.push(element);
                    }
                }
            }
            NfListObject::Rule(r)
                if r.family == NfFamily::INet && r.table == TABLE && r.chain == CHAIN =>
            {
                match r.comment.as_deref() {
                    Some(RULE4_COMMENT) => rule4 = true,
                    Some(RULE6_COMMENT) => rule6 = true,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    live.sets = set4 && set6;
    live.rules = rule4 && rule6;
    live
}

fn live_element(e: &Expression<'_>) -> Option<LiveElement> {
    match e {
        Expression::String(s) => Some(LiveElement {
            addr: s.parse().ok()?,
            timeout: None,
            expires: None,
        }),
        Expression::Named(NamedExpression::Elem(elem)) => match elem.val.as_ref() {
            Expression::String(s) => Some(LiveElement {
                addr: s.parse().ok()?,
                timeout: elem.timeout,
                expires: elem.expires,
            }),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_of(objects: Vec<NfObject<'static>>) -> serde_json::Value {
        serde_json::from_str(&to_json(&batch(objects))).unwrap()
    }

    /// The exact JSON that makes vigil's table: `add` commands only, and the rules after
    /// a `flush chain` of vigil's own chain when they are missing.
    #[test]
    fn setup_makes_the_table_sets_chain_and_rules() {
        let table = json!({"add": {"table": {"family": "inet", "name": "vigil"}}});
        let set4 = json!({"add": {"set": {"family": "inet", "table": "vigil", "name": "banned4", "type": "ipv4_addr", "flags": ["timeout"]}}});
        let set6 = json!({"add": {"set": {"family": "inet", "table": "vigil", "name": "banned6", "type": "ipv6_addr", "flags": ["timeout"]}}});
        let chain = json!({"family": "inet", "table": "vigil", "name": "input", "type": "filter", "hook": "input", "prio": -10, "policy": "accept"});
        assert_eq!(
            json_of(setup_commands(false)),
            json!({"nftables": [table, set4, set6, {"add": {"chain": chain}}]})
        );
        let rule = |proto: &str, set: &str, comment: &str| {
            json!({"add": {"rule": {"family": "inet", "table": "vigil", "chain": "input",
                "expr": [
                    {"match": {"left": {"payload": {"protocol": proto, "field": "saddr"}}, "right": format!("@{set}"), "op": "=="}},
                    {"counter": null},
                    {"drop": null}
                ],
                "comment": comment}}})
        };
        assert_eq!(
            json_of(setup_commands(true)),
            json!({"nftables": [table, set4, set6, {"add": {"chain": chain}},
                {"flush": {"chain": chain}},
                rule("ip", "banned4", "vigil: drop banned4"),
                rule("ip6", "banned6", "vigil: drop banned6")]})
        );
        // Nothing outside `inet vigil` is named: every command is about the table itself
        // or something in it.
        for command in json_of(setup_commands(true))["nftables"]
            .as_array()
            .unwrap()
        {
            let (_, object) = command.as_object().unwrap().iter().next().unwrap();
            let (kind, object) = object.as_object().unwrap().iter().next().unwrap();
            assert_eq!(object["family"], "inet", "{command}");
            let table = if kind == "table" {
                &object["name"]
            } else {
                &object["table"]
            };
            assert_eq!(table, "vigil", "{command}");
        }
    }

    #[test]
    fn a_ban_adds_an_element_with_a_timeout_to_the_set_of_its_family() {
        assert_eq!(
            json_of(ban_commands("203.0.113.7".parse().unwrap(), 3600, false)),
            json!({"nftables": [{"add": {"element": {"family": "inet", "table": "vigil", "name": "banned4",
                "elem": [{"elem": {"val": "203.0.113.7", "timeout": 3600, "expires": null, "comment": null, "counter": null}}]}}}]})
        );
        assert_eq!(
            json_of(ban_commands("2001:db8::7".parse().unwrap(), 60, false)),
            json!({"nftables": [{"add": {"element": {"family": "inet", "table": "vigil", "name": "banned6",
                "elem": [{"elem": {"val": "2001:db8::7", "timeout": 60, "expires": null, "comment": null, "counter": null}}]}}}]})
        );
    }

    /// A longer repeat replaces the element in one transaction: delete, then add with the
    /// new timeout.
    #[test]
    fn a_repeat_deletes_and_adds_in_one_batch() {
        let delete = json!({"delete": {"element": {"family": "inet", "table": "vigil", "name": "banned4", "elem": ["203.0.113.7"]}}});
        let got = json_of(ban_commands("203.0.113.7".parse().unwrap(), 7200, true));
        assert_eq!(got["nftables"][0], delete);
        assert_eq!(
            got["nftables"][1]["add"]["element"]["elem"][0]["elem"]["timeout"],
            7200
        );
        assert_eq!(got["nftables"].as_array().unwrap().len(), 2);
        assert_eq!(
            json_of(remove_commands("203.0.113.7".parse().unwrap())),
            json!({"nftables": [delete]})
        );
    }

    /// What `nft -j list table inet vigil` prints (nftables 1.0.6), read back.
    #[test]
    fn a_listing_reads_back_as_elements_with_their_expiry() {
        let listing = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
            {"table": {"family": "inet", "name": "vigil", "handle": 1}},
            {"set": {"family": "inet", "name": "banned4", "table": "vigil", "type": "ipv4_addr", "handle": 1, "flags": ["timeout"],
                "elem": [{"elem": {"val": "203.0.113.7", "timeout": 3600, "expires": 3599}}, "198.51.100.1"]}},
            {"set": {"family": "inet", "name": "banned6", "table": "vigil", "type": "ipv6_addr", "handle": 2, "flags": ["timeout"]}},
            {"chain": {"family": "inet", "table": "vigil", "name": "input", "handle": 3, "type": "filter", "hook": "input", "prio": -10, "policy": "accept"}},
            {"rule": {"family": "inet", "table": "vigil", "chain": "input", "handle": 4, "comment": "vigil: drop banned4",
                "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@banned4"}}, {"counter": {"packets": 3, "bytes": 180}}, {"drop": null}]}},
            {"rule": {"family": "inet", "table": "vigil", "chain": "input", "handle": 5, "comment": "vigil: drop banned6",
                "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": "@banned6"}}, {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}}]}"#;
        let listing: Nftables = serde_json::from_str(listing).unwrap();
        let live = parse_table(&listing);
        assert!(live.ready());
        assert_eq!(
            live.elements,
            vec![
                LiveElement {
                    addr: "203.0.113.7".parse().unwrap(),
                    timeout: Some(3600),
                    expires: Some(3599)
                },
                LiveElement {
                    addr: "198.51.100.1".parse().unwrap(),
                    timeout: None,
                    expires: None
                },
            ]
        );
        // A chain without vigil's rules (emptied by hand) is not ready.
        let bare: Nftables = serde_json::from_str(
            r#"{"nftables": [{"set": {"family": "inet", "name": "banned4", "table": "vigil", "type": "ipv4_addr", "handle": 1, "flags": ["timeout"]}},
               {"set": {"family": "inet", "name": "banned6", "table": "vigil", "type": "ipv6_addr", "handle": 2, "flags": ["timeout"]}}]}"#,
        )
        .unwrap();
        let live = parse_table(&bare);
        assert!(live.sets && !live.rules && !live.ready());
    }
}
