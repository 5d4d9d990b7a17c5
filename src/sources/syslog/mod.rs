//! `syslog`: messages from a syslog listener. (The source itself lands with its own branch; this
//! folder holds the payload decoders until then.)

pub mod decode;
