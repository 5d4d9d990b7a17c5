//! Illumio PCE: the REST client the `pce_*` sources use, and the PCE simulator that tests
//! and `vigil demo` run against. The client does not know which one it talks to.

pub mod client;
pub mod names;
pub mod sim;
