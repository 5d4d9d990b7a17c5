//! Who may talk to the API: the `Host` a request names, the origin of a browser's request
//! that changes something, and the bearer token.
//!
//! - **Host** ([`HostPolicy`]): a request must name the server as `web.listen`,
//!   `public_url` or an entry of `web.allowed_hosts` does (421 otherwise). A web page
//!   that rebinds its own DNS name to 127.0.0.1 reaches the port, but its requests still
//!   carry its name: they are refused, so the page cannot read the API. A loopback
//!   `listen` answers to `localhost`, `127.0.0.1` and `[::1]` with its port; a `listen` on
//!   every address to any IP address with its port (rebinding needs a DNS name, so an
//!   address cannot be one).
//! - **Origin** ([`cross_origin`]): without a token the API is open to whatever runs on the
//!   machine, so a request that changes something (`POST`, `DELETE`, …) must not come from
//!   another site's page (a form posted to `/api/v1/reload`). Browsers say where a request
//!   comes from (`Origin`, `Sec-Fetch-Site`); one from another origin is refused with 403.
//!   Tools send neither and are served, which keeps `curl -X POST …/reload` and the demo's
//!   one command working without a token. (Making up a token when none is configured would
//!   protect the same routes, but every script and the demo would then need it.) With a
//!   token configured this check is not needed: a browser never adds the token by itself.
//! - **Token** ([`token_matches`]): compared in constant time.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, Method, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `web.allowed_hosts` has an entry that is not a host name, `host:port` or `*`.
#[derive(Debug, thiserror::Error)]
#[error(
    "web.allowed_hosts: `{0}` is not a host name or address with an optional port (`vigil.example.com`, `vigil.example.com:8080`, `[fd00::5]:5001`) or `*`"
)]
pub struct BadAllowedHost(pub String);

/// Which ports of a host are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    /// Any (an `allowed_hosts` entry without a port).
    Any,
    /// This one; a `Host` without a port too when `omitted` (the scheme's default port).
    Is { port: u16, omitted: bool },
}

/// One allowed name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    /// Lower case; an IPv6 address without its brackets.
    host: String,
    ports: Ports,
}

impl Allowed {
    fn port(host: impl Into<String>, port: u16, default_port: u16) -> Allowed {
        Allowed {
            host: host.into(),
            ports: Ports::Is {
                port,
                omitted: port == default_port,
            },
        }
    }

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        self.host == host
            && match (self.ports, port) {
                (Ports::Any, _) => true,
                (Ports::Is { port: want, .. }, Some(p)) => want == p,
                (Ports::Is { omitted, .. }, None) => omitted,
            }
    }
}

/// The names the server answers to (see the module's documentation).
#[derive(Debug, Clone)]
pub(super) struct HostPolicy {
    allowed: Vec<Allowed>,
    /// `listen` is every address: any IP address with this port.
    any_address_on: Option<u16>,
    /// `allowed_hosts: ["*"]`.
    anything: bool,
}

impl HostPolicy {
    /// The policy of a server bound to `addr` (the actual port), reached at `public_url`,
    /// with `web.allowed_hosts`.
    pub(super) fn new(
        addr: SocketAddr,
        public_url: &str,
        allowed_hosts: &[String],
    ) -> Result<HostPolicy, BadAllowedHost> {
        let port = addr.port();
        let mut allowed = Vec::new();
        let mut any_address_on = None;
        let ip = addr.ip();
        if ip.is_unspecified() {
            any_address_on = Some(port);
        } else {
            allowed.push(Allowed::port(ip_host(ip), port, 80));
        }
        if ip.is_loopback() || ip.is_unspecified() {
            for name in ["localhost", "127.0.0.1", "::1"] {
                allowed.push(Allowed::port(name, port, 80));
            }
        }
        if let Some(a) = url_authority(public_url) {
            allowed.push(a);
        }
        let mut anything = false;
        for entry in allowed_hosts {
            let entry = entry.trim();
            if entry == "*" {
                anything = true;
                continue;
            }
            let (host, port) = split_host(entry).ok_or_else(|| BadAllowedHost(entry.into()))?;
            allowed.push(Allowed {
                host,
                ports: match port {
                    Some(p) => Ports::Is {
                        port: p,
                        omitted: false,
                    },
                    None => Ports::Any,
                },
            });
        }
        Ok(HostPolicy {
            allowed,
            any_address_on,
            anything,
        })
    }

    /// Whether a request naming `host` (a `Host` header's value) is for this server.
    pub(super) fn allows(&self, host: &str) -> bool {
        if self.anything {
            return true;
        }
        self.names(host)
    }

    /// [`Self::allows`] without `*`: whether `host` names this server.
    fn names(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        if let Some(any_port) = self.any_address_on
            && port == Some(any_port)
            && name.parse::<IpAddr>().is_ok()
        {
            return true;
        }
        self.allowed.iter().any(|a| a.matches(&name, port))
    }

    /// Whether a request from a browser is from another origin than this server's: its
    /// `Sec-Fetch-Site` says `cross-site` or `same-site` (another port or a sibling name),
    /// or its `Origin` is neither the `Host` it names nor another name of this server.
    /// A request without either header (curl, scripts) is not.
    pub(super) fn cross_origin(&self, headers: &HeaderMap) -> bool {
        let site = headers
            .get("sec-fetch-site")
            .map(|v| v.as_bytes().to_ascii_lowercase());
        if matches!(site.as_deref(), Some(b"cross-site" | b"same-site")) {
            return true;
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return false;
        };
        // `Origin: null` (a sandboxed page, a redirect) or anything unreadable: refused.
        let Some((name, port)) = origin.to_str().ok().and_then(origin_authority) else {
            return true;
        };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(split_host);
        let same_as_host = host.is_some_and(|(h, p)| h == name && p.unwrap_or(port) == port);
        let authority = if name.contains(':') {
            format!("[{name}]:{port}")
        } else {
            format!("{name}:{port}")
        };
        !(same_as_host || self.names(&authority))
    }
}

/// Methods that only read: not checked for their origin.
pub(super) fn only_reads(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether `given` is the token: both are hashed first, so neither the time taken nor
/// its length says anything about the token.
pub(super) fn token_matches(given: &str, token: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(token.as_bytes());
    a.ct_eq(&b).into()
}

/// An address as it appears in a `Host` (IPv6 without its brackets here; see
/// [`split_host`]).
fn ip_host(ip: IpAddr) -> String {
    ip.to_string()
}

/// `host[:port]`, `[v6][:port]` → (lower-case host without brackets, port). `None` when it
/// is not one.
fn split_host(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let ip = v6.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse::<u16>().ok()?),
        };
        return Some((ip.to_string(), port));
    }
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
        None => (s, None),
    };
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    ok.then(|| (host.to_ascii_lowercase(), port))
}

/// `http(s)://host[:port]` → (host, port with the scheme's default).
fn origin_authority(origin: &str) -> Option<(String, u16)> {
    let (scheme, rest) = origin.split_once("://")?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') {
        return None;
    }
    let (host, port) = split_host(authority)?;
    Some((host, port.unwrap_or(default)))
}

/// The allowed name of `public_url` (`https://vigil.example.com/`): its host with its port,
/// or with no port when it is the scheme's default.
fn url_authority(url: &str) -> Option<Allowed> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let (host, port) = split_host(authority)?;
    let default = if url.to_ascii_lowercase().starts_with("https://") {
        443
    } else {
        80
    };
    Some(Allowed::port(host, port.unwrap_or(default), default))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn policy(listen: &str, public_url: &str, extra: &[&str]) -> HostPolicy {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        HostPolicy::new(listen.parse().expect("addr"), public_url, &extra).expect("policy")
    }

    #[test]
    fn a_loopback_listen_answers_to_the_loopback_names_with_its_port() {
        let p = policy("127.0.0.1:5001", "http://127.0.0.1:5001", &[]);
        for ok in [
            "127.0.0.1:5001",
            "localhost:5001",
            "LOCALHOST:5001",
            "[::1]:5001",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for no in [
            "evil.example",
            "evil.example:5001",
            "127.0.0.1:5002",
            "localhost",
            "127.0.0.1.evil.example:5001",
            "",
            "[::1",
            "a b:5001",
        ] {
            assert!(!p.allows(no), "{no}");
        }
    }

    #[test]
    fn public_url_and_allowed_hosts_add_names() {
        let p = policy(
            "127.0.0.1:5001",
            "https://vigil.example.com/",
            &["ops.example.com", "box:8080", "[fd00::5]:5001"],
        );
        for ok in [
            "vigil.example.com",
            "vigil.example.com:443",
            "ops.example.com",
            "ops.example.com:9999",
            "box:8080",
            "[fd00::5]:5001",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for no in ["vigil.example.com:5001", "box", "box:80", "[fd00::5]"] {
            assert!(!p.allows(no), "{no}");
        }
        assert!(policy("127.0.0.1:5001", "", &["*"]).allows("evil.example"));
        assert!(
            HostPolicy::new(
                "127.0.0.1:1".parse().expect("addr"),
                "",
                &["http://x/".into()]
            )
            .is_err()
        );
    }

    #[test]
    fn every_address_answers_to_any_ip_address_with_its_port() {
        let p = policy("0.0.0.0:5001", "http://127.0.0.1:5001", &[]);
        assert!(p.allows("10.1.2.3:5001"));
        assert!(p.allows("[fd00::1]:5001"));
        assert!(p.allows("localhost:5001"));
        assert!(!p.allows("10.1.2.3:5002"));
        assert!(!p.allows("evil.example:5001"));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn requests_from_another_origin_are_told_apart() {
        let p = policy("127.0.0.1:5001", "http://127.0.0.1:5001", &[]);
        let host = ("host", "127.0.0.1:5001");
        assert!(!p.cross_origin(&headers(&[host])), "curl");
        assert!(!p.cross_origin(&headers(&[host, ("origin", "http://127.0.0.1:5001")])));
        assert!(!p.cross_origin(&headers(&[host, ("origin", "http://localhost:5001")])));
        assert!(!p.cross_origin(&headers(&[host, ("sec-fetch-site", "same-origin")])));
        assert!(!p.cross_origin(&headers(&[host, ("sec-fetch-site", "none")])));
        for bad in [
            vec![host, ("origin", "http://evil.example")],
            vec![host, ("origin", "http://127.0.0.1:8080")],
            vec![host, ("origin", "null")],
            vec![host, ("sec-fetch-site", "cross-site")],
            vec![host, ("sec-fetch-site", "same-site")],
        ] {
            assert!(p.cross_origin(&headers(&bad)), "{bad:?}");
        }
        // Behind a proxy that passes the public name on.
        let p = policy("127.0.0.1:5001", "https://vigil.example.com", &[]);
        assert!(!p.cross_origin(&headers(&[
            ("host", "vigil.example.com"),
            ("origin", "https://vigil.example.com")
        ])));
        assert!(!p.cross_origin(&headers(&[
            ("host", "127.0.0.1:5001"),
            ("origin", "https://vigil.example.com")
        ])));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abc", "abd"));
        assert!(!token_matches("abc", "ab"));
        assert!(!token_matches("", "abc"));
    }
}
