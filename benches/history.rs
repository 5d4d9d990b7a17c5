//! The alert history at size: 1,000,000 alerts in the state database, then the API's
//! query for the first page, a page deep in by cursor (`after`), and the last page by
//! `offset`, each the median of several runs; then the retention pruning half of it.
//! `cargo bench --bench history` (`VIGIL_BENCH_ROWS` sets the size). Under
//! `cargo test --benches` it runs with 20,000 alerts, to check that it works.

#![allow(missing_docs)]
#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::time::{Duration, Instant};

use vigil::store::Store;
use vigil::store::history::{AlertQuery, Cursor};

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

fn main() {
    let n = rows();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let t0 = chrono::Utc::now() - chrono::Duration::days(30);
    let started = Instant::now();
    let base = vigil::sinks::delivery::sample_alert();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        let mut a = base.clone();
        a.id = format!("{i:032x}");
        a.window.end = t0 + chrono::Duration::seconds(i as i64);
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
    let all = AlertQuery::default();
    let (first, page) = time(9, || store.alerts(&all, 50, 0).expect("first page"));
    assert_eq!(page.alerts.len(), 50);
    // A cursor 50 rows before the oldest: the last page, reached by `after`.
    let deep = Cursor {
        time: (t0 + chrono::Duration::seconds(49)).timestamp_millis(),
        id: format!("{:032x}", 49),
    };
    let (by_cursor, page) = time(9, || {
        let q = AlertQuery {
            after: Some(&deep),
            ..AlertQuery::default()
        };
        store.alerts(&q, 50, 0).expect("deep page")
    });
    assert_eq!(page.alerts.len(), 49);
    let (by_offset, page) = time(5, || store.alerts(&all, 50, n - 50).expect("last page"));
    assert_eq!(page.alerts.len(), 50);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "GET /api/v1/alerts?limit=50 over {n} alerts (median): first page {:.2} ms, last page by cursor {:.2} ms, last page by offset {:.1} ms",
        ms(first),
        ms(by_cursor),
        ms(by_offset)
    );
    let cut = (t0 + chrono::Duration::seconds((n / 2) as i64)).timestamp_millis();
    let t = Instant::now();
    let gone = store.prune_history(cut, n).expect("prune");
    println!(
        "retention: {gone} alerts older than the cut pruned in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(gone, n / 2);
}
