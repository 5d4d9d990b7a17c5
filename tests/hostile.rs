//! Hostile input: every parser that reads from outside the process (see
//! `vigil::testing::fuzz`) gets arbitrary bytes and mutations of real inputs, and must
//! neither panic nor take long. `VIGIL_PROPTEST_CASES` sets the cases per target and kind
//! (default 2,000); `cargo bench --bench fuzz` runs the same targets for minutes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use vigil::testing::fuzz::{DICTIONARY, Target, mutate, targets};

/// A case longer than this is a finding (a debug build, on a loaded machine: generous).
const SLOW: Duration = Duration::from_secs(10);

fn cases() -> u32 {
    std::env::var("VIGIL_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(2_000)
}

/// The target's seeds, and for the pipeline loader every shipped pipeline file.
fn seeds(t: &Target) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = t.seeds.iter().map(|s| s.as_bytes().to_vec()).collect();
    if t.name == "pipeline-yaml" {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        for entry in std::fs::read_dir(dir).expect("pipelines/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                out.push(std::fs::read(path).expect("readable"));
            }
        }
    }
    out
}

fn check(t: &Target, input: &[u8]) -> Result<(), TestCaseError> {
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(|| (t.run)(input));
    let took = started.elapsed();
    prop_assert!(
        outcome.is_ok(),
        "{} panicked on {:?}",
        t.name,
        String::from_utf8_lossy(input)
    );
    prop_assert!(
        took < SLOW,
        "{} took {took:?} on {:?}",
        t.name,
        String::from_utf8_lossy(input)
    );
    Ok(())
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn every_parser_takes_arbitrary_bytes() {
    for t in targets() {
        runner()
            .run(&proptest::collection::vec(any::<u8>(), 0..2048), |input| {
                check(&t, &input)
            })
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
    }
}

#[test]
fn every_parser_takes_mutations_of_real_inputs() {
    for t in targets() {
        let seeds = seeds(&t);
        let ops = proptest::collection::vec((any::<u8>(), any::<u32>(), any::<u32>()), 1..12);
        runner()
            .run(&(0..seeds.len(), ops), |(i, ops)| {
                check(&t, &mutate(&seeds[i], &ops, DICTIONARY))
            })
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
    }
}
