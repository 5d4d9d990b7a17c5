//! Stage kinds. Each lives in its own folder; the list of kinds is in
//! [`crate::components`].

pub mod alerting;
pub mod filter;
pub mod script;
