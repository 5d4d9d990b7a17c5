//! vigil watches security telemetry — Illumio PCE audit events and traffic flows, syslog
//! exports, Tetragon events, host counters — and turns it into alerts people act on.
//!
//! Pipelines are YAML files: sources → stages → sinks, wired as a DAG by `inputs`.
//! [`config`] reads and checks them with exact positions, [`graph`] builds the DAG,
//! [`runtime`] runs it, and [`components`] lists every kind of node.
//!
//! ```
//! use std::path::PathBuf;
//! use vigil::config::{Env, LoadOptions, load_sources};
//!
//! let yaml = r#"
//! kind: pipeline
//! name: admin-ports
//! sources:
//!   flows: {type: file, path: flows.jsonl}
//! stages:
//!   blocked:
//!     type: filter
//!     inputs: [flows]
//!     match: {policy_decision: blocked, service.port: [22, 3389]}
//! sinks:
//!   out: {type: stdout, inputs: [blocked]}
//! "#;
//! let loaded = load_sources(
//!     &[(PathBuf::from("admin-ports.yaml"), yaml.to_string())],
//!     &LoadOptions { env: Env::Map(Default::default()), ..Default::default() },
//! );
//! assert!(loaded.diagnostics.is_empty());
//! let config = loaded.config.expect("valid");
//! assert_eq!(config.pipelines[0].config.stages["blocked"].kind(), "filter");
//! // `vigil::runtime::start(&config, clock)` would now run it.
//! ```

pub mod components;
pub mod config;
pub mod confine;
#[cfg(feature = "demo")]
pub mod demo;
pub mod diagnostic;
pub mod event;
pub mod graph;
pub mod http;
pub mod nft;
pub mod node;
pub mod pce;
pub mod runtime;
pub mod secret;
pub mod sinks;
pub mod sources;
pub mod stages;
pub mod store;
pub mod testing;
pub mod time;
pub mod web;
