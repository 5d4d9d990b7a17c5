//! The `port_counters` source for real, in a network namespace this test makes (`unshare
//! -rn`: a user and network namespace with only loopback; the test runs itself again
//! inside it): nftables counts a known loopback transfer to the port, to within the
//! packets' headers, and what passes while vigil is stopped is handed on at its next
//! start. Needs `unshare` and `nft` (Debian's `nftables`, installed by `.ci/run`); where
//! the kernel refuses namespaces the test says why and passes.

mod common;

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{lines, load};
use serde_json::Value;
use vigil::runtime::{self, SharedClock, VirtualClock};

fn t0() -> chrono::DateTime<chrono::Utc> {
    "2026-03-01T00:00:00Z".parse().unwrap()
}

/// Sends `bytes` bytes to 127.0.0.1:`port` (a listener reads them all first).
fn transfer(port: u16, bytes: usize) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("listen");
    let reader = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        let mut got = Vec::new();
        c.read_to_end(&mut got).expect("read");
        got.len()
    });
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.write_all(&vec![b'x'; bytes]).expect("write");
    drop(c);
    assert_eq!(reader.join().expect("reader"), bytes);
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pipeline(dir: &Path, port: u16, out: &Path) -> String {
    format!(
        "kind: settings\nstate_dir: {state}\n---\nkind: pipeline\nname: p\nsources:\n  ports:\n    type: port_counters\n    interval: 1m\n    ports: [{port}]\n    protocols: [tcp]\nsinks:\n  out:\n    type: file\n    inputs: [ports]\n    path: {out}\n",
        state = dir.join("state").display(),
        out = out.display(),
    )
}

/// The events for `port` so far.
fn of_port(out: &Path, port: u16) -> Vec<Value> {
    lines(out)
        .into_iter()
        .filter(|e| e["port"] == port)
        .collect()
}

/// `in_bytes` is the payload plus, per packet, at most its headers (IP and TCP with
/// options: 20 + 60 bytes).
fn assert_counted(e: &Value, payload: u64) {
    let bytes = e["in_bytes"].as_u64().unwrap();
    let packets = e["in_packets"].as_u64().unwrap();
    assert!(
        bytes >= payload && bytes <= payload + packets * 80,
        "{payload} bytes sent, {bytes} counted in {packets} packets: {e}"
    );
    // The answers from the port: acknowledgements only.
    let out = e["out_bytes"].as_u64().unwrap();
    assert!(out > 0 && out < 20_000, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_transfer_is_counted_and_nothing_is_lost_while_vigil_is_stopped() {
    if !common::netns::in_namespace(
        "a_loopback_transfer_is_counted_and_nothing_is_lost_while_vigil_is_stopped",
    ) {
        return;
    }
    let port = 9611;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ports.jsonl");
    let clock = VirtualClock::new(t0());
    let shared: SharedClock = Arc::new(clock.clone());
    let cfg = load(pipeline(dir.path(), port, &out));

    let topology = runtime::start(&cfg, shared.clone()).expect("starts");
    let table = || {
        Command::new(common::netns::nft())
            .args(["list", "table", "inet", "vigil_ports"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    wait_until("vigil's table", table).await;
    // The source has taken its first reading once it waits for the interval: a moment of
    // real time after the table exists; the transfer comes after either way (the table
    // it made counts from zero).
    transfer(port, 1_000_000);
    // The clock is nudged on until the interval ends (the source may compute its deadline
    // after the test moved the clock).
    common::nudge_until(&clock, "the first interval's event", || {
        !of_port(&out, port).is_empty()
    })
    .await;
    let first = of_port(&out, port).remove(0);
    assert_eq!(first["proto"], "tcp");
    assert!(
        first["interval_seconds"].as_f64().unwrap() >= 60.0,
        "{first}"
    );
    assert_counted(&first, 1_000_000);

    // An interval with nothing: listed ports are reported, with zero.
    common::nudge_until(&clock, "the second interval's event", || {
        of_port(&out, port).len() == 2
    })
    .await;
    assert_eq!(of_port(&out, port)[1]["in_bytes"], 0);

    // vigil stops; the kernel keeps counting; the next start hands on what passed.
    topology.shutdown();
    let report = topology.wait().await;
    assert!(!report.failed(), "{:?}", report.nodes);
    assert!(table(), "the table stays when vigil stops");
    let stopped_at = vigil::runtime::Clock::now(&clock);
    transfer(port, 500_000);
    clock.advance(Duration::from_secs(600));
    let topology = runtime::start(&cfg, shared).expect("starts again");
    common::nudge_until(&clock, "the event after the restart", || {
        of_port(&out, port).len() == 3
    })
    .await;
    let after = of_port(&out, port).remove(2);
    assert_counted(&after, 500_000);
    // Counted from the last reading saved, before the stop.
    assert!(
        after["interval_seconds"].as_f64().unwrap() >= 660.0,
        "stopped at {stopped_at}: {after}"
    );
    topology.shutdown();
    topology.wait().await;
}
