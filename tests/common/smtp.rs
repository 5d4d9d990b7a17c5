//! A real SMTP server on loopback (mailin-embedded, in-process) for the mail sink tests:
//! it keeps every complete message it accepted, and can be told to refuse transactions
//! (451), reject recipients (550) and check AUTH PLAIN/LOGIN credentials.

use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailin_embedded::response::{AUTH_OK, INTERNAL_ERROR, INVALID_CREDENTIALS, NO_MAILBOX, OK};
use mailin_embedded::{AuthMechanism, Handler, Response, Server, SslConfig};

use super::cli::wait_for;

/// One message the server accepted.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    /// The envelope sender (MAIL FROM).
    pub(crate) from: String,
    /// The envelope recipients (RCPT TO) the server accepted.
    pub(crate) to: Vec<String>,
    /// The message as sent after DATA (headers and body, dot-unstuffed).
    pub(crate) data: Vec<u8>,
    /// The session was upgraded with STARTTLS before the message: the client said EHLO
    /// a second time, which it does only after the upgrade (RFC 3207).
    pub(crate) tls: bool,
    /// The user the session logged in as, if it did.
    pub(crate) user: Option<String>,
}

/// How the server answers; can be changed while it runs ([`SmtpServer::set`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Behaviour {
    /// Refuse this many transactions (at DATA, 451) before accepting any.
    pub(crate) refuse_first: usize,
    /// Recipients answered `550 Mailbox unavailable`.
    pub(crate) reject: Vec<String>,
    /// How long the server waits before it answers the end of a message's DATA. The
    /// message counts as received before the wait (a slow server that has taken the
    /// mail): a client that gives up meanwhile and sends it again sends it twice.
    pub(crate) answer_data_after: Duration,
}

/// What the server options are at start.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    /// Offer STARTTLS with a certificate for `localhost` signed by a test CA.
    pub(crate) starttls: bool,
    /// Offer AUTH PLAIN and LOGIN (after STARTTLS only) and require a login with this
    /// user and password before MAIL.
    pub(crate) credentials: Option<(String, String)>,
    /// The initial behaviour.
    pub(crate) behaviour: Behaviour,
    /// Speak TLS from the first byte (SMTPS) instead of plain text.
    pub(crate) implicit_tls: bool,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    behaviour: Mutex<Behaviour>,
    credentials: Option<(String, String)>,
    /// Every login attempt: (user, password).
    logins: Mutex<Vec<(String, String)>>,
    /// Transactions that reached DATA (refused or not).
    transactions: AtomicUsize,
    /// Transactions refused with 451.
    refused: AtomicUsize,
    /// Recipients rejected with 550.
    rejected: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct Session {
    shared: Arc<Shared>,
    ehlos: usize,
    user: Option<String>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Session {
    fn login(&mut self, user: &str, password: &str) -> Response {
        self.shared
            .logins
            .lock()
            .unwrap()
            .push((user.to_string(), password.to_string()));
        match &self.shared.credentials {
            Some((u, p)) if u == user && p == password => {
                self.user = Some(user.to_string());
                AUTH_OK
            }
            _ => INVALID_CREDENTIALS,
        }
    }
}

impl Handler for Session {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        self.ehlos += 1;
        OK
    }

    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.from = from.to_string();
        self.to.clear();
        self.data.clear();
        OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let rejected = self
            .shared
            .behaviour
            .lock()
            .unwrap()
            .reject
            .iter()
            .any(|r| r == to);
        if rejected {
            self.shared.rejected.lock().unwrap().push(to.to_string());
            return NO_MAILBOX;
        }
        self.to.push(to.to_string());
        OK
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        self.shared.transactions.fetch_add(1, Ordering::SeqCst);
        let refuse_first = self.shared.behaviour.lock().unwrap().refuse_first;
        let refused = &self.shared.refused;
        if refused.load(Ordering::SeqCst) < refuse_first {
            refused.fetch_add(1, Ordering::SeqCst);
            return INTERNAL_ERROR;
        }
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let queued = {
            let mut received = self.shared.received.lock().unwrap();
            received.push(Received {
                from: self.from.clone(),
                to: self.to.clone(),
                data: std::mem::take(&mut self.data),
                tls: self.ehlos >= 2,
                user: self.user.clone(),
            });
            received.len()
        };
        // Each session has a thread of its own: the wait holds up this client only.
        let wait = self.shared.behaviour.lock().unwrap().answer_data_after;
        std::thread::sleep(wait);
        Response::custom(250, format!("2.0.0 Ok: queued as test-{queued}"))
    }

    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> Response {
        self.login(user, password)
    }

    fn auth_login(&mut self, user: &str, password: &str) -> Response {
        self.login(user, password)
    }
}

/// A running SMTP server on 127.0.0.1 (it runs until the test process ends).
pub(crate) struct SmtpServer {
    /// Its port.
    pub(crate) port: u16,
    /// The PEM file of the CA that signed its certificate (for `ca_file`).
    pub(crate) ca_file: PathBuf,
    /// With [`Options::implicit_tls`]: how many TLS handshakes the port completed.
    pub(crate) handshakes: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    /// Starts a server on a free port.
    pub(crate) fn start(options: Options) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        SmtpServer::serve(listener, options)
    }

    /// Starts a server on `port` (one that was free a moment ago).
    pub(crate) fn start_on(port: u16, options: Options) -> SmtpServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the chosen port");
        SmtpServer::serve(listener, options)
    }

    fn serve(listener: TcpListener, options: Options) -> SmtpServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca_file, cert_file, key_file) = certificates(&dir);
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (port, listener) = if options.implicit_tls {
            // TLS from the first byte (SMTPS): a TLS front on the public port, relaying to
            // the SMTP server on a port of its own (mailin itself speaks only STARTTLS).
            let inner = TcpListener::bind("127.0.0.1:0").expect("bind");
            let inner_port = inner.local_addr().expect("address").port();
            let port = tls_front(
                listener,
                inner_port,
                &cert_file,
                &key_file,
                handshakes.clone(),
            );
            (port, inner)
        } else {
            (listener.local_addr().expect("address").port(), listener)
        };
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(options.behaviour),
            credentials: options.credentials.clone(),
            ..Shared::default()
        });
        let handler = Session {
            shared: shared.clone(),
            ehlos: 0,
            user: None,
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
        };
        let mut server = Server::new(handler);
        server.with_name("mx.test").with_num_threads(8);
        if options.starttls {
            server
                .with_ssl(SslConfig::SelfSigned {
                    cert_path: cert_file.display().to_string(),
                    key_path: key_file.display().to_string(),
                })
                .expect("TLS set up");
        }
        if options.credentials.is_some() {
            server
                .with_auth(AuthMechanism::Plain)
                .with_auth(AuthMechanism::Login);
        }
        server.with_tcp_listener(listener);
        std::thread::spawn(move || {
            if let Err(e) = server.serve() {
                panic!("the SMTP test server stopped: {e}");
            }
        });
        SmtpServer {
            port,
            ca_file,
            handshakes,
            shared,
            _dir: dir,
        }
    }

    /// Changes how the server answers from the next command on.
    pub(crate) fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    /// The messages accepted so far.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages were accepted; returns them all.
    pub(crate) fn wait_received(&self, n: usize, limit: Duration) -> Vec<Received> {
        wait_for(&format!("{n} message(s) at the SMTP server"), limit, || {
            self.shared.received.lock().unwrap().len() >= n
        });
        self.received()
    }

    /// Every login attempt: (user, password).
    pub(crate) fn logins(&self) -> Vec<(String, String)> {
        self.shared.logins.lock().unwrap().clone()
    }

    /// How many transactions reached DATA.
    pub(crate) fn transactions(&self) -> usize {
        self.shared.transactions.load(Ordering::SeqCst)
    }

    /// How many transactions were refused with 451.
    pub(crate) fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// The recipients rejected with 550 so far.
    pub(crate) fn rejected(&self) -> Vec<String> {
        self.shared.rejected.lock().unwrap().clone()
    }
}

/// A CA and a certificate for `localhost` it signed: (CA PEM, certificate PEM, key PEM)
/// files under `dir`.
fn certificates(dir: &tempfile::TempDir) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "vigil test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &ca).expect("server certificate");
    let paths = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write");
    std::fs::write(&paths.1, cert.pem()).expect("write");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write");
    paths
}

/// Accepts TLS connections on `listener` (certificate and key from the PEM files) and
/// relays each, decrypted, to 127.0.0.1:`inner_port`; counts completed handshakes.
/// Returns the public port.
fn tls_front(
    listener: TcpListener,
    inner_port: u16,
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
    handshakes: Arc<AtomicUsize>,
) -> u16 {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{ServerConfig, crypto};

    let port = listener.local_addr().expect("address").port();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .expect("certificate file")
        .collect::<Result<_, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_file(key_file).expect("key PEM");
    let config =
        ServerConfig::builder_with_provider(Arc::new(crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("TLS configuration");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    listener.set_nonblocking(true).expect("non-blocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let handshakes = handshakes.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    handshakes.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut plain) =
                        tokio::net::TcpStream::connect(("127.0.0.1", inner_port)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
    });
    port
}

/// A loopback port held by a listener that hangs up on every connection (an SMTP server
/// that is down), so no other test can take the port; [`RefusingPort::release`] frees it
/// for a real server.
pub(crate) struct RefusingPort {
    /// The port.
    pub(crate) port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RefusingPort {
    /// Holds a free port.
    pub(crate) fn hold() -> RefusingPort {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => drop(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        RefusingPort {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops listening: the port is free again (for [`SmtpServer::start_on`]).
    pub(crate) fn release(mut self) -> u16 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.port
    }
}
