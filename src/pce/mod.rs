//! Illumio PCE: the REST client the `pce_*` sources use, and (with the `demo` feature, on by
//! default) the PCE simulator that tests and `vigil demo` run against. The client does not
//! know which one it talks to.

pub mod client;
pub mod names;
#[cfg(feature = "demo")]
pub mod sim;
