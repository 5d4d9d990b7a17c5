//! Shared by the benchmarks.

#![allow(dead_code, unreachable_pub)]

pub(crate) mod child;
pub(crate) mod flows;

/// Records to generate: `VIGIL_BENCH_RECORDS`, else `default` under `cargo bench`, else
/// `test_mode` (`cargo test --benches` runs each benchmark once: keep that quick).
pub(crate) fn records(default: u64, test_mode: u64) -> u64 {
    match std::env::var("VIGIL_BENCH_RECORDS") {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .expect("VIGIL_BENCH_RECORDS must be a positive integer"),
        Err(_) if std::env::args().any(|a| a == "--bench") => default,
        Err(_) => test_mode,
    }
}

/// A `/proc/self/status` field in MiB (Linux).
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Peak resident set size of this process, in MiB.
pub(crate) fn peak_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Current resident set size, in MiB.
pub(crate) fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// Resets the peak (Linux: writing 5 to clear_refs resets VmHWM to the current RSS).
pub(crate) fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A path as a YAML string.
pub(crate) fn yaml_str(p: &std::path::Path) -> String {
    serde_json::to_string(p.to_str().expect("UTF-8 temp path")).expect("string")
}

/// The configuration of one pipeline file's text, which must be valid.
pub(crate) fn load(yaml: String) -> vigil::config::Config {
    let loaded = vigil::config::load_sources(
        &[(std::path::PathBuf::from("bench.yaml"), yaml)],
        &vigil::config::LoadOptions {
            env: vigil::config::Env::Map(Default::default()),
            ..Default::default()
        },
    );
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    loaded.config.expect("a valid configuration")
}
