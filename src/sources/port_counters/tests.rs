//! The table vigil makes, and the readings of captured `nft -j` and `iptables -L` output.

use super::config::{CounterMode, PortCountersConfig, Protocol};
use super::counters::*;

fn cfg(ports: &[u16]) -> PortCountersConfig {
    PortCountersConfig {
        interval: crate::time::Duration::from_secs(60),
        ports: ports.to_vec(),
        protocols: vec![Protocol::Tcp, Protocol::Udp],
        below: 32768,
        mode: CounterMode::Nftables,
        table: "vigil_ports".into(),
        program: None,
    }
}

#[test]
fn listed_ports_get_a_named_counter_per_direction_and_protocol() {
    let script = nft_script(&cfg(&[8388]));
    assert!(
        script.starts_with(
            "add table inet vigil_ports\ndelete table inet vigil_ports\ntable inet vigil_ports {\n"
        ),
        "{script}"
    );
    for line in [
        "  counter in_tcp_8388 { }\n",
        "  counter out_udp_8388 { }\n",
        "    tcp dport 8388 counter name \"in_tcp_8388\"\n",
        "    udp sport 8388 counter name \"out_udp_8388\"\n",
        "type filter hook input priority -150; policy accept;",
        "type filter hook output priority -150; policy accept;",
    ] {
        assert!(script.contains(line), "{line:?} in {script}");
    }
    assert_eq!(
        expected_objects(&cfg(&[8388]))
            .into_iter()
            .collect::<Vec<_>>(),
        [
            "counter:in_tcp_8388",
            "counter:in_udp_8388",
            "counter:out_tcp_8388",
            "counter:out_udp_8388"
        ]
    );
    let all = nft_script(&cfg(&[]));
    assert!(all.contains(
        "set ports_in { type inet_proto . inet_service; flags dynamic; size 65536; counter; }"
    ));
    assert!(all.contains("th dport < 32768 update @ports_in { meta l4proto . th dport }"));
}

/// `nft -j list table` as nft 1.0.6 prints it.
const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "vigil_ports", "handle": 1}}, {"counter": {"family": "inet", "name": "in_tcp_9999", "table": "vigil_ports", "handle": 3, "packets": 23, "bytes": 1001204}}, {"counter": {"family": "inet", "name": "out_tcp_9999", "table": "vigil_ports", "handle": 4, "packets": 14, "bytes": 772}}, {"set": {"family": "inet", "name": "ports_in", "table": "vigil_ports", "type": ["inet_proto", "inet_service"], "handle": 5, "size": 65536, "elem": [{"elem": {"val": {"concat": ["tcp", 22]}, "counter": {"packets": 5, "bytes": 300}}}, {"elem": {"val": {"concat": [17, 53]}, "counter": {"packets": 2, "bytes": 120}}}], "stmt": [{"counter": null}]}}]}"#;

#[test]
fn a_listing_reads_into_counters_and_set_elements() {
    let (objects, readings) = read_nft(LISTING).unwrap();
    assert_eq!(
        objects.into_iter().collect::<Vec<_>>(),
        [
            "counter:in_tcp_9999",
            "counter:out_tcp_9999",
            "set:ports_in"
        ]
    );
    let get = |dir, proto: &str, port| {
        readings
            .get(&Key {
                dir,
                proto: proto.into(),
                port,
            })
            .copied()
    };
    assert_eq!(
        get(Direction::In, "tcp", 9999),
        Some(Count {
            bytes: 1_001_204,
            packets: 23
        })
    );
    assert_eq!(
        get(Direction::Out, "tcp", 9999),
        Some(Count {
            bytes: 772,
            packets: 14
        })
    );
    assert_eq!(
        get(Direction::In, "tcp", 22),
        Some(Count {
            bytes: 300,
            packets: 5
        })
    );
    assert_eq!(
        get(Direction::In, "udp", 53),
        Some(Count {
            bytes: 120,
            packets: 2
        })
    );
    assert!(read_nft("not json").is_err());
    assert!(read_nft("{}").is_err());
}

#[test]
fn iptables_listings_read_and_a_foreign_rule_is_refused() {
    let text = "Chain VIGIL_PORTS_IN (1 references)\n    pkts      bytes target     prot opt in     out     source               destination         \n      23  1001204            tcp  --  *      *       0.0.0.0/0            0.0.0.0/0            tcp dpt:9999\n       2      120            udp  --  *      *       0.0.0.0/0            0.0.0.0/0            udp dpt:9999\n";
    let mut r = Readings::new();
    let rules = read_iptables(text, Direction::In, &mut r).unwrap();
    assert_eq!(
        rules,
        [("tcp".to_string(), 9999), ("udp".to_string(), 9999)]
    );
    // ip6tables' counters add to iptables'.
    read_iptables(text, Direction::In, &mut r).unwrap();
    assert_eq!(
        r[&Key {
            dir: Direction::In,
            proto: "tcp".into(),
            port: 9999
        }],
        Count {
            bytes: 2_002_408,
            packets: 46
        }
    );
    let foreign = "Chain VIGIL_PORTS_IN (1 references)\n    pkts      bytes target     prot opt in     out     source               destination         \n       1       60 DROP       all  --  *      *       10.0.0.1             0.0.0.0/0\n";
    assert!(read_iptables(foreign, Direction::In, &mut Readings::new()).is_err());
    let mut c = cfg(&[9999]);
    c.mode = CounterMode::Iptables;
    assert_eq!(iptables_chain(&c, Direction::Out), "VIGIL_PORTS_OUT");
    assert_eq!(
        iptables_rules(&c, Direction::Out)[0],
        ["-p", "tcp", "--sport", "9999"]
    );
}

#[test]
fn a_counter_that_went_backwards_counts_from_zero() {
    let c = |bytes, packets| Count { bytes, packets };
    assert_eq!(delta(Some(c(100, 2)), c(350, 5)), c(250, 3));
    assert_eq!(delta(Some(c(100, 2)), c(40, 1)), c(40, 1));
    assert_eq!(delta(None, c(40, 1)), c(40, 1));
}
