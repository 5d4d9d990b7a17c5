//! The alert history at size: 1,000,000 alerts in the state database (four pipelines,
//! every severity, a third resolved), then the API's query for a page of 50: the first
//! page, the last page by cursor (`after`), the middle and the last page by `offset`,
//! each without a filter and with one (a pipeline and `severity=high`: a tenth of the
//! alerts), each the median of several runs; then the retention pruning half of it.
//! `cargo bench --bench history` (`VIGIL_BENCH_ROWS` sets the size). Under
//! `cargo test --benches` it runs with 20,000 alerts, to check that it works.

#![allow(missing_docs)]
#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::time::{Duration, Instant};

use vigil::event::{AlertStatus, Severity};
use vigil::store::Store;
use vigil::store::history::{AlertPage, AlertQuery, Cursor};

const PIPELINES: [&str; 4] = ["edge", "core", "dmz", "lab"];
const SEVERITIES: [Severity; 5] = [
    Severity::Info,
    Severity::Low,
    Severity::Medium,
    Severity::High,
    Severity::Critical,
];

fn rows() -> usize {
    match std::env::var("VIGIL_BENCH_ROWS") {
        Ok(v) => v.trim().parse().expect("a number of rows"),
        Err(_) if std::env::args().any(|a| a == "--bench") => 1_000_000,
        Err(_) => 20_000,
    }
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn time<T>(n: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut runs = Vec::new();
    let mut last = None;
    for _ in 0..n {
        let t = Instant::now();
        last = Some(f());
        runs.push(t.elapsed());
    }
    (median(runs), last.expect("ran"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ids(page: &AlertPage) -> Vec<String> {
    page.alerts
        .iter()
        .map(|a| a["id"].as_str().expect("an id").to_string())
        .collect()
}

fn id(i: usize) -> String {
    format!("{i:032x}")
}

/// Times the pages of `q` over the `matching` alerts (their indexes, oldest first) and
/// checks that each holds the alerts it should.
fn pages(store: &Store, q: AlertQuery<'_>, matching: &[usize], t0: i64, what: &str) {
    let total = matching.len();
    assert!(total >= 200, "too few alerts for the bench");
    // Newest first: the page at offset `o` holds matching[total - 1 - o] down.
    let expect = |offset: usize, n: usize| -> Vec<String> {
        (offset..(offset + n).min(total))
            .map(|o| id(matching[total - 1 - o]))
            .collect()
    };
    let (first, page) = time(9, || store.alerts(&q, 50, 0).expect("first page"));
    assert_eq!(ids(&page), expect(0, 50));
    // The 51st oldest: the page after it is the last 50.
    let deep = Cursor {
        time: t0 + matching[50] as i64 * 1000,
        id: id(matching[50]),
    };
    let (by_cursor, page) = time(9, || {
        let q = AlertQuery {
            after: Some(&deep),
            ..q
        };
        store.alerts(&q, 50, 0).expect("deep page")
    });
    assert_eq!(ids(&page), expect(total - 50, 50));
    let middle = total / 2;
    let (by_middle, page) = time(5, || store.alerts(&q, 50, middle).expect("middle"));
    assert_eq!(ids(&page), expect(middle, 50));
    let (by_offset, page) = time(5, || store.alerts(&q, 50, total - 50).expect("last"));
    assert_eq!(ids(&page), expect(total - 50, 50));
    println!(
        "GET /api/v1/alerts?limit=50{what} ({total} match, median): first page {:.2} ms, last page by cursor {:.2} ms, middle page by offset {:.2} ms, last page by offset {:.2} ms",
        ms(first),
        ms(by_cursor),
        ms(by_middle),
        ms(by_offset)
    );
}

fn main() {
    let n = rows();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let t0 = chrono::Utc::now() - chrono::Duration::days(30);
    let t0_ms = t0.timestamp_millis();
    let started = Instant::now();
    let base = vigil::sinks::delivery::sample_alert();
    let mut batch = Vec::with_capacity(10_000);
    let mut filtered = Vec::new();
    for i in 0..n {
        let mut a = base.clone();
        a.id = id(i);
        a.window.end = t0 + chrono::Duration::seconds(i as i64);
        a.pipeline = PIPELINES[i % 4].into();
        a.severity = SEVERITIES[(i / 4) % 5];
        if i % 3 == 0 {
            a.status = AlertStatus::Resolved;
        }
        if a.pipeline == "core" && a.severity >= Severity::High {
            filtered.push(i);
        }
        batch.push(a);
        if batch.len() == 10_000 || i + 1 == n {
            store.record_alerts(batch.iter()).expect("insert");
            batch.clear();
        }
    }
    println!(
        "history: {n} alerts written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let all: Vec<usize> = (0..n).collect();
    pages(&store, AlertQuery::default(), &all, t0_ms, "");
    let q = AlertQuery {
        pipeline: Some("core"),
        min_severity: Some(Severity::High),
        ..AlertQuery::default()
    };
    pages(&store, q, &filtered, t0_ms, "&pipeline=core&severity=high");
    let cut = (t0 + chrono::Duration::seconds((n / 2) as i64)).timestamp_millis();
    let t = Instant::now();
    let gone = store.prune_history(cut, n).expect("prune");
    println!(
        "retention: {gone} alerts older than the cut pruned in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(gone, n / 2);
}
