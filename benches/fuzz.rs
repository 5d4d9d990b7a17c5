//! A mutation fuzzer over every parser that reads outside input (`vigil::testing::fuzz`):
//! each target runs for `VIGIL_FUZZ_SECONDS` (default 60; 1 under `cargo test --benches`)
//! on random mutations of its seeds (and of the shipped pipeline files for the pipeline
//! loader), and the run prints executions, executions a second, the largest input and
//! its findings: panics, and inputs that took longer than a second twice in a row. Each
//! finding's input is written to `target/fuzz-findings/`.
//!
//! `cargo bench --bench fuzz`; `VIGIL_FUZZ_TARGETS=where,template` runs only those;
//! `VIGIL_FUZZ_SEED` makes a run repeatable.

#![allow(missing_docs)]
#![allow(clippy::print_stderr, clippy::print_stdout)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use vigil::testing::fuzz::{DICTIONARY, mutate, targets};

fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds: u64 = env_or("VIGIL_FUZZ_SECONDS", if bench_mode() { 60 } else { 1 });
    let only: Option<Vec<String>> = std::env::var("VIGIL_FUZZ_TARGETS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let seed: u64 = env_or("VIGIL_FUZZ_SEED", rand::rng().random());
    let findings_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-findings");
    // Panics are findings, counted below: keep their messages off the terminal.
    std::panic::set_hook(Box::new(|_| {}));
    println!("fuzz: {seconds} s a target, seed {seed}");
    println!(
        "{:<14} {:>12} {:>10} {:>10} {:>8} {:>6}",
        "target", "executions", "per s", "max input", "panics", "slow"
    );
    let mut total_findings = 0;
    for t in targets() {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == t.name))
        {
            continue;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ t.name.len() as u64);
        let mut corpus: Vec<Vec<u8>> = t.seeds.iter().map(|s| s.as_bytes().to_vec()).collect();
        if t.name == "pipeline-yaml" {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pipelines");
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.path().extension().is_some_and(|x| x == "yaml")
                        && let Ok(bytes) = std::fs::read(e.path())
                    {
                        corpus.push(bytes);
                    }
                }
            }
        }
        let (mut runs, mut panics, mut slow, mut max_len) = (0u64, 0u64, 0u64, 0usize);
        let started = Instant::now();
        let until = started + Duration::from_secs(seconds);
        while Instant::now() < until {
            let base = &corpus[rng.random_range(0..corpus.len())];
            let n = rng.random_range(1..16);
            let ops: Vec<(u8, u32, u32)> = (0..n).map(|_| rng.random()).collect();
            let input = mutate(base, &ops, DICTIONARY);
            max_len = max_len.max(input.len());
            let one = Instant::now();
            let ok = std::panic::catch_unwind(|| (t.run)(&input)).is_ok();
            let took = one.elapsed();
            runs += 1;
            let finding = if !ok {
                panics += 1;
                Some("panic")
            } else if took > Duration::from_secs(1) && {
                // Once more: a busy machine can hold any run up for a second.
                let again = Instant::now();
                (t.run)(&input);
                again.elapsed() > Duration::from_secs(1)
            } {
                slow += 1;
                Some("slow")
            } else {
                None
            };
            if let Some(kind) = finding {
                total_findings += 1;
                let _ = std::fs::create_dir_all(&findings_dir);
                let path = findings_dir.join(format!("{}-{kind}-{runs}.bin", t.name));
                let _ = std::fs::write(&path, &input);
                eprintln!("  {} {kind} ({took:?}): {}", t.name, path.display());
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:<14} {:>12} {:>10.0} {:>10} {:>8} {:>6}",
            t.name,
            runs,
            runs as f64 / secs,
            max_len,
            panics,
            slow
        );
    }
    if total_findings > 0 {
        println!("fuzz: {total_findings} findings in target/fuzz-findings/");
        std::process::exit(1);
    }
}
