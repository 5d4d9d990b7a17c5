//! What every HTTP client of vigil shares: how a client is built (TLS, redirects, user
//! agent), how long to wait before trying again, and how a `Retry-After` is read.

mod retry;

pub use retry::{MAX_RETRY_AFTER, RetryPolicy, retry_after};

/// An HTTP client builder as every vigil client starts: no redirects followed (a 3xx is
/// reported, and credentials never follow it), vigil's user agent, the certificates of
/// `ca_file` added to the trusted roots, and with `tls_verify: false` any certificate
/// accepted (logged, naming `peer`).
pub fn client_builder(
    ca_file: Option<&std::path::Path>,
    tls_verify: bool,
    peer: &str,
) -> Result<reqwest::ClientBuilder, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read `ca_file` {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("`ca_file` {} is not PEM: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "`ca_file` {} holds no PEM certificate",
                path.display()
            ));
        }
        builder = builder.tls_certs_merge(certs);
    }
    if !tls_verify {
        tracing::warn!(
            peer,
            "tls_verify is false: the peer's certificate is not checked (set ca_file instead)"
        );
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    Ok(builder)
}
