//! Shared by the integration tests: the PCE simulator's helpers (with the `demo` feature),
//! the CLI's (`cli`) and a real SMTP server (`smtp`).

#![allow(dead_code)] // each test crate uses its own subset

pub(crate) mod cli;
pub(crate) mod netns;
#[cfg(feature = "demo")]
pub(crate) mod sim_http;
pub(crate) mod smtp;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use vigil::config::{Config, Env, LoadOptions, load_sources};
#[cfg(feature = "demo")]
use vigil::pce::sim::{Faults, PceSim, RunningSim, Scenario, SimConfig};
#[cfg(feature = "demo")]
use vigil::runtime::SharedClock;
use vigil::runtime::VirtualClock;

/// The simulator's API secret in these tests; it must never show up in any output.
pub(crate) const SECRET: &str = "sim-secret-not-in-any-file";

/// Starts the simulator on a free loopback port.
#[cfg(feature = "demo")]
pub(crate) async fn sim(
    scenario: Scenario,
    seed: u64,
    faults: Faults,
    clock: SharedClock,
) -> RunningSim {
    let cfg = SimConfig {
        scenario,
        seed,
        api_secret: SECRET.into(),
        faults,
        ..SimConfig::default()
    };
    PceSim::start(cfg, clock, "127.0.0.1:0".parse().expect("address"))
        .await
        .expect("simulator starts")
}

/// A settings document with state under `dir` and one PCE connection `lab` to `sim`
/// (key and secret from the environment); `extra` adds lines to the connection.
#[cfg(feature = "demo")]
pub(crate) fn settings(dir: &Path, sim: &RunningSim, extra: &str) -> String {
    format!(
        "kind: settings\nstate_dir: {state}\nconnections:\n  pce:\n    lab:\n      url: {url}\n      insecure_http: true\n      api_key: ${{PCE_KEY}}\n      api_secret: ${{PCE_SECRET}}\n      backoff_base: 1s\n{extra}---\n",
        state = dir.join("state").display(),
        url = sim.url(),
    )
}

/// Loads `yaml` with `PCE_KEY` / `PCE_SECRET` set; it must be valid.
pub(crate) fn load(yaml: String) -> Config {
    let env = Env::Map(HashMap::from([
        ("PCE_KEY".to_string(), "api_sim".to_string()),
        ("PCE_SECRET".to_string(), SECRET.to_string()),
    ]));
    let loaded = load_sources(
        &[(PathBuf::from("p.yaml"), yaml)],
        &LoadOptions {
            env,
            ..Default::default()
        },
    );
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    loaded.config.expect("valid")
}

/// The JSON lines of a file written by a sink (none if it does not exist yet).
pub(crate) fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until `cond` holds; while it does not, nudges the virtual clock by a few seconds
/// now and then, so that a source that computed its next deadline after the test moved the
/// clock, or a client waiting out a retry backoff, moves on. Fails after a deadline.
pub(crate) async fn nudge_until(clock: &VirtualClock, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut idle = 0;
    while !cond() {
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {what} at {}",
                vigil::runtime::Clock::now(clock)
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        idle += 1;
        if idle % 5 == 0 {
            clock.advance(Duration::from_secs(5));
        }
    }
}
