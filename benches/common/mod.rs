//! Shared by the benchmarks.

pub(crate) mod flows;
