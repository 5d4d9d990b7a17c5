//! `syslog`: messages received over TCP, UDP or TLS (RFC 5424 and 3164, RFC 6587
//! framing), each turned into events by a decoder.

mod config;
pub mod decode;
pub mod framing;
mod source;
mod tls;

pub use config::{Decode, Mode, SyslogSourceConfig, TlsConfig};
pub use source::SyslogSource;
