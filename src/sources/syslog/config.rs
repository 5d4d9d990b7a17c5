//! The `syslog` source's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::Deserialize;

use super::decode::{
    CefDecoder, Decoder, LeefDecoder, PceDecoder, json::JsonDecoder, raw::RawDecoder,
};
use super::framing::Framing;
use super::source::SyslogSource;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::node::{BuildContext, NodeError, Source};
use crate::sources::internal::InternalAlerts;

/// Receives syslog messages (RFC 5424 or RFC 3164) over TCP, UDP or TLS, as the Illumio
/// PCE exports its events and flows, and turns each into an event with its `decode`r.
///
/// A message that cannot be read (no syslog header, a payload the decoder refuses, a
/// frame longer than `max_length`) is counted and set aside with the sender's address
/// under `<state_dir>/rejected/`; it never stops the source. A TCP or TLS sender is not
/// read while the pipeline is full (its writes stall); UDP datagrams that find the
/// pipeline full are dropped and counted.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct SyslogSourceConfig {
    /// The transport: `tcp`, `udp` (one message per datagram) or `tls` (TCP with TLS;
    /// needs `tls`).
    pub mode: Mode,
    /// The address and port to listen on, e.g. `0.0.0.0:6514` (all IPv4 addresses) or
    /// `[::]:514`.
    pub address: String,
    /// How messages are delimited on TCP and TLS (RFC 6587): `auto` (the default: per
    /// connection, a first byte that is a digit means octet counting), `octet_counting`
    /// or `newline`. Not used for UDP.
    #[serde(default)]
    pub framing: Framing,
    /// The longest message, in bytes. A longer frame is discarded (up to its octet count,
    /// or the next newline), counted and set aside. Default: 102400.
    #[serde(default = "default_max_length")]
    #[schemars(range(min = 1))]
    pub max_length: usize,
    /// The networks senders may connect from (CIDRs such as `10.0.0.0/8`, or single
    /// addresses). Others are refused at once (TCP, TLS) or their datagrams dropped (UDP),
    /// and counted (`reason="peer_not_allowed"`). Default: any sender.
    #[serde(default)]
    pub allow_from: Vec<String>,
    /// The server certificate and key for `mode: tls`, and optionally the CA that client
    /// certificates must be signed by.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The most TCP or TLS connections open at once. One more is closed as soon as it is
    /// accepted, and counted (`reason="connection_limit"`). Default: 1000.
    #[serde(default = "default_connection_limit")]
    #[schemars(range(min = 1))]
    pub connection_limit: usize,
    /// What a message's payload is: `raw` (the envelope and the free text) or `json` (the
    /// payload is a JSON object). Default: `raw`.
    #[serde(default)]
    pub decode: Decode,
}

/// The transport of a `syslog` source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Plain TCP (RFC 6587).
    Tcp,
    /// UDP, one message per datagram (RFC 5426).
    Udp,
    /// TCP with TLS (RFC 5425).
    Tls,
}

/// The TLS settings of a `syslog` source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM), the server's own certificate first. A
    /// relative path is relative to the pipeline file's directory.
    pub cert_file: PathBuf,
    /// The server certificate's private key (PEM: PKCS #8, PKCS #1 or SEC1).
    pub key_file: PathBuf,
    /// With it, every client must present a certificate signed by this CA (PEM); without
    /// it, clients are not asked for one.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// How a `syslog` source reads a message's payload. Every decoder gets the envelope
/// (under `syslog`) and the sender (`peer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decode {
    /// The free text as `message`.
    #[default]
    Raw,
    /// The payload is a JSON object: it is the record.
    Json,
    /// An Illumio PCE's syslog export: audit events (JSON `version: 2`) and traffic flow
    /// summaries (app name `illumio_pce/collector`, `version: 4`), made into the same
    /// records as the `pce_events` and `pce_traffic` sources, so their pipelines work on
    /// either; a gap in a PCE node's `sequenceId` raises `vigil.syslog_gap`.
    Pce,
    /// ArcSight CEF: the header fields under `cef.*` and the extension's keys as fields.
    Cef,
    /// IBM QRadar LEEF 1.0 and 2.0: the header under `leef.*` and the attributes as fields.
    Leef,
}

impl Decode {
    /// A decoder of this kind, for one source (`internal`: where `vigil.syslog_gap` is
    /// published).
    pub fn decoder(&self, internal: &InternalAlerts) -> Box<dyn Decoder> {
        match self {
            Decode::Raw => Box::new(RawDecoder),
            Decode::Json => Box::new(JsonDecoder),
            Decode::Pce => Box::new(PceDecoder::new(
                internal.clone(),
                super::decode::pce::DEFAULT_MAX_NODES,
            )),
            Decode::Cef => Box::new(CefDecoder::new()),
            Decode::Leef => Box::new(LeefDecoder::new()),
        }
    }
}

fn example() -> serde_json::Value {
    serde_json::json!({"mode": "tcp", "address": "0.0.0.0:6514", "decode": "json", "allow_from": ["10.0.0.0/8"]})
}

fn default_max_length() -> usize {
    102_400
}
fn default_connection_limit() -> usize {
    1000
}

/// Parses an `allow_from` entry: a CIDR, or one address.
pub(super) fn network(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

impl SyslogSourceConfig {
    /// Structural checks.
    pub fn check(&self, problems: &mut Problems) {
        if self.address.parse::<SocketAddr>().is_err() {
            problems.error(
                "/address",
                codes::INVALID_VALUE,
                format!(
                    "`{}` is not an address and port to listen on (e.g. `0.0.0.0:6514` or `[::]:514`)",
                    self.address
                ),
            );
        }
        for (i, a) in self.allow_from.iter().enumerate() {
            if network(a).is_none() {
                problems.error(
                    format!("/allow_from/{i}"),
                    codes::INVALID_VALUE,
                    format!("`{a}` is not a network (e.g. `10.0.0.0/8`) or an IP address"),
                );
            }
        }
        match (self.mode, &self.tls) {
            (Mode::Tls, None) => problems.error(
                "/mode",
                codes::INVALID_VALUE,
                "mode `tls` needs `tls:` with `cert_file` and `key_file`",
            ),
            (Mode::Tcp | Mode::Udp, Some(_)) => problems.error(
                "/tls",
                codes::INVALID_VALUE,
                "`tls:` is used only with `mode: tls`; set the mode or remove it",
            ),
            _ => {}
        }
        if self.mode == Mode::Udp && self.framing != Framing::Auto {
            problems.warning(
                "/framing",
                codes::UNUSED,
                "`framing` is not used with `mode: udp` (one message per datagram)",
            );
        }
        if self.max_length == 0 {
            problems.error(
                "/max_length",
                codes::NON_POSITIVE,
                "max_length must be at least 1",
            );
        }
        if self.connection_limit == 0 {
            problems.error(
                "/connection_limit",
                codes::NON_POSITIVE,
                "connection_limit must be at least 1",
            );
        }
    }

    /// Builds the running source (reads the TLS files; binds nothing yet).
    pub fn build(
        &self,
        cx: &BuildContext,
        internal: &InternalAlerts,
    ) -> Result<Box<dyn Source>, NodeError> {
        let address: SocketAddr = self
            .address
            .parse()
            .map_err(|_| format!("`{}` is not an address and port", self.address))?;
        let allow: Vec<IpNet> = self.allow_from.iter().filter_map(|a| network(a)).collect();
        let tls = match (&self.tls, self.mode) {
            (Some(t), Mode::Tls) => Some(super::tls::server_config(t, &cx.base_dir)?),
            (None, Mode::Tls) => return Err("mode `tls` needs `tls:`".into()),
            _ => None,
        };
        Ok(Box::new(SyslogSource::new(
            self,
            address,
            allow,
            tls,
            self.decode.decoder(internal),
            cx,
        )))
    }
}
