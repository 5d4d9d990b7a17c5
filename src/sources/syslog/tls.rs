//! The TLS server configuration of a `syslog` source (`mode: tls`).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig, crypto};

use super::config::TlsConfig;
use crate::node::NodeError;

/// Why the TLS settings cannot be used, in words for the user.
#[derive(Debug, thiserror::Error)]
pub(super) enum TlsError {
    /// A PEM file that cannot be read or holds nothing usable.
    #[error("cannot read the {what} `{path}`: {reason}")]
    File {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The certificate and key do not make a TLS server (a key that does not match).
    #[error("the TLS certificate and key cannot be used together: {0}")]
    Config(String),
}

fn resolve(base: &Path, p: &Path) -> std::path::PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::File {
        what,
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(pem_reason(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(err("it holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn pem_reason(e: &tokio_rustls::rustls::pki_types::pem::Error) -> String {
    use tokio_rustls::rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "it holds no PEM item of the expected kind".into(),
        _ => "it is not valid PEM".into(),
    }
}

/// The server configuration of `tls`, its relative paths taken from `base`: with a
/// `client_ca_file`, client certificates are required and verified against it.
pub(super) fn server_config(tls: &TlsConfig, base: &Path) -> Result<Arc<ServerConfig>, NodeError> {
    let cert_path = resolve(base, &tls.cert_file);
    let key_path = resolve(base, &tls.key_file);
    let chain = certs("certificate file (tls.cert_file)", &cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::File {
        what: "key file (tls.key_file)",
        path: key_path.display().to_string(),
        reason: pem_reason(&e),
    })?;
    let provider = Arc::new(crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let ca_path = resolve(base, ca);
            let mut roots = RootCertStore::empty();
            for c in certs("client CA file (tls.client_ca_file)", &ca_path)? {
                roots.add(c).map_err(|e| TlsError::File {
                    what: "client CA file (tls.client_ca_file)",
                    path: ca_path.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}
