//! vigil watches security telemetry — Illumio PCE audit events and traffic flows, syslog
//! exports, Tetragon events, host counters — and turns it into alerts people act on.
//!
//! Pipelines are YAML files: sources → stages → sinks, wired as a DAG by `inputs`.
//! [`config`] reads and checks them with exact positions, [`graph`] builds the DAG,
//! [`runtime`] runs it, and [`components`] lists every kind of node.

pub mod components;
pub mod config;
pub mod event;
pub mod graph;
pub mod runtime;
pub mod sinks;
pub mod sources;
pub mod stages;
pub mod store;
