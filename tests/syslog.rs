//! The `syslog` source through real sockets and real senders: `logger` (util-linux) over
//! TCP and UDP, rsyslog forwarding over TLS, raw clients for framing, refusals, limits
//! and backpressure. Each test runs `vigil run` on a pipeline `p` whose source `in`
//! listens on a free loopback port, read back from vigil's log.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cli::{Project, spawn_logged, wait_for};
use common::lines;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(20);

/// A `vigil run` with one `syslog` source (`in`, its options in `source`) and a file
/// sink (`out`) writing to `out` (a file, or a FIFO).
struct Vigil {
    project: Project,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    out: PathBuf,
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vigil {
    fn start(source: &str) -> Vigil {
        Vigil::start_with(source, false)
    }

    /// With `fifo`, the sink writes to a FIFO (made before vigil starts) that nobody reads
    /// yet: the sink blocks.
    fn start_with(source: &str, fifo: bool) -> Vigil {
        let project = Project::new("web: { listen: \"127.0.0.1:0\" }\n", "");
        let out = project.path().join("out.jsonl");
        if fifo {
            let status = Command::new("mkfifo").arg(&out).status().expect("mkfifo");
            assert!(status.success());
        }
        std::fs::write(project.pipelines().join("p.yaml"), pipeline(source, &out)).expect("write");
        let (child, logs) = spawn_logged(
            project
                .command(&["--log-format", "json", "run", "--pipelines"])
                .arg(project.pipelines())
                .stdin(Stdio::piped())
                .stdout(Stdio::null()),
        );
        Vigil {
            project,
            child,
            logs,
            out,
        }
    }

    /// Replaces the pipeline's source options (a running vigil reloads).
    fn rewrite(&self, source: &str) {
        let path = self.project.pipelines().join("p.yaml");
        std::fs::write(path, pipeline(source, &self.out)).expect("write");
    }

    /// How many log lines say `message`.
    fn count_logs(&self, message: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| {
                serde_json::from_str::<Value>(l).is_ok_and(|v| v["fields"]["message"] == message)
            })
            .count()
    }

    fn dir(&self) -> &Path {
        self.project.path()
    }

    /// The address a log line named with `message`, waited for.
    fn logged_address(&self, message: &str) -> String {
        let mut found = None;
        wait_for(message, DEADLINE, || {
            found = self.logs.lock().unwrap().iter().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["fields"]["message"] == message)
                    .then(|| v["fields"]["address"].as_str().map(str::to_string))
                    .flatten()
            });
            found.is_some()
        });
        found.expect("address")
    }

    /// Where the syslog source listens.
    fn address(&self) -> SocketAddr {
        self.logged_address("syslog listening")
            .parse()
            .expect("address")
    }

    fn port(&self) -> String {
        self.address().port().to_string()
    }

    /// The records the sink wrote.
    fn out(&self) -> Vec<Value> {
        lines(&self.out)
    }

    /// Waits until the sink wrote `n` records; returns them.
    fn wait_out(&self, n: usize) -> Vec<Value> {
        wait_for(&format!("{n} records"), DEADLINE, || self.out().len() >= n);
        self.out()
    }

    /// The records set aside.
    fn rejected(&self) -> Vec<Value> {
        lines(&self.dir().join("state/rejected/p.in.jsonl"))
    }

    /// `/metrics`, as text.
    fn metrics(&self) -> String {
        let web = self.logged_address("web: listening");
        let mut s = TcpStream::connect(&web).expect("web");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("response");
        body
    }

    /// The `vigil_node_dropped_total` of the source for `reason`.
    fn dropped(&self, reason: &str) -> u64 {
        let needle = format!("reason=\"{reason}\"}} ");
        self.metrics()
            .lines()
            .find(|l| {
                l.starts_with("vigil_node_dropped_total{node=\"p.in\"") && l.contains(&needle)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }
}

/// The pipeline: source `in` (`syslog`, on a free loopback port unless `source` names
/// an `address`) into a file sink writing `out`.
fn pipeline(source: &str, out: &Path) -> String {
    let address = if source.contains("address:") {
        ""
    } else {
        "    address: 127.0.0.1:0\n"
    };
    format!(
        "kind: pipeline\nname: p\nsources:\n  in:\n    type: syslog\n{address}{source}sinks:\n  out:\n    type: file\n    inputs: [in]\n    path: {}\n",
        out.display()
    )
}

/// The messages of the real PCE syslog samples (the text after the structured data),
/// their `@@TOKEN` placeholders filled in, with the app name each was sent by.
fn samples() -> Vec<(String, String)> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/real/illumio-splunk-ta");
    let token = regex::Regex::new("@@[A-Z_]+").expect("regex");
    let mut out = Vec::new();
    for name in ["illumio-pce-v2.samples", "illumio-pce-collector-v2.samples"] {
        let text = std::fs::read_to_string(dir.join(name)).expect("samples");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let line = token.replace_all(line, "7");
            let app = line.split(' ').nth(3).expect("app name").to_string();
            let msg = line
                .split_once("] ")
                .map(|(_, m)| m.trim().to_string())
                .expect("message after the structured data");
            out.push((app, msg));
        }
    }
    assert!(out.len() >= 10, "{}", out.len());
    out
}

fn logger(args: &[&str], app: &str, msg: &str) {
    let status = Command::new("logger")
        .args(args)
        .args(["--size", "65536", "-t", app, "--", msg])
        .status()
        .expect("logger runs");
    assert!(status.success());
}

fn check_samples(v: &Vigil, sent: &[(String, String)]) {
    let got = v.wait_out(sent.len());
    assert_eq!(got.len(), sent.len());
    for (app, msg) in sent {
        let r = got
            .iter()
            .find(|r| r["message"] == msg.as_str())
            .unwrap_or_else(|| panic!("{msg} not received: {got:?}"));
        assert_eq!(r["syslog"]["appname"], app.as_str());
        assert_eq!(r["syslog"]["facility"], "user");
        assert!(
            r["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{r}"
        );
        assert!(r["syslog"]["timestamp"].is_string(), "{r}");
    }
    assert!(v.rejected().is_empty(), "{:?}", v.rejected());
}

/// The real PCE samples, sent by `logger` with octet counting over TCP, arrive decoded.
#[test]
fn logger_over_tcp_with_octet_counting() {
    let v = Vigil::start("    mode: tcp\n    framing: octet_counting\n");
    let port = v.port();
    let sent = samples();
    for (app, msg) in &sent {
        logger(
            &[
                "--tcp",
                "--octet-count",
                "--rfc5424",
                "-n",
                "127.0.0.1",
                "-P",
                &port,
            ],
            app,
            msg,
        );
    }
    check_samples(&v, &sent);
}

/// The same over UDP, one message per datagram.
#[test]
fn logger_over_udp() {
    let v = Vigil::start("    mode: udp\n");
    let port = v.port();
    let sent = samples();
    for (app, msg) in &sent {
        logger(
            &["--udp", "--rfc5424", "-n", "127.0.0.1", "-P", &port],
            app,
            msg,
        );
    }
    check_samples(&v, &sent);
}

/// Newline framing (auto-detected) and octet counting on another connection; a frame
/// that is no syslog and an oversize one between good ones are set aside with the peer,
/// and the good ones arrive.
#[test]
fn malformed_and_oversize_frames_are_set_aside() {
    let v = Vigil::start("    mode: tcp\n    max_length: 200\n");
    let addr = v.address();
    let mut c = TcpStream::connect(addr).expect("connect");
    let peer = c.local_addr().expect("local").to_string();
    let big = format!("<13>1 - h app - - - {}", "x".repeat(300));
    write!(
        c,
        "<13>1 2026-01-01T00:00:00Z h app - - - one\nthis is no syslog\n{big}\n<13>Dec 31 23:59:59 h app: two\n"
    )
    .expect("write");
    drop(c);
    let mut o = TcpStream::connect(addr).expect("connect");
    let m = "<13>1 2026-01-01T00:00:01Z h app - - - three";
    write!(o, "{} {m}{} {m}", m.len(), m.len()).expect("write");
    drop(o);
    let got = v.wait_out(4);
    let texts: Vec<&str> = got.iter().filter_map(|r| r["message"].as_str()).collect();
    assert_eq!(
        texts.iter().filter(|t| **t == "one").count(),
        1,
        "{texts:?}"
    );
    assert_eq!(
        texts.iter().filter(|t| **t == "two").count(),
        1,
        "{texts:?}"
    );
    assert_eq!(
        texts.iter().filter(|t| **t == "three").count(),
        2,
        "{texts:?}"
    );
    wait_for("2 set aside", DEADLINE, || v.rejected().len() == 2);
    let rejected = v.rejected();
    assert!(
        rejected.iter().all(|r| r["location"] == peer.as_str()),
        "{rejected:?}"
    );
    assert_eq!(rejected[0]["raw"], "this is no syslog");
    assert!(
        rejected[1]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("max_length"),
        "{rejected:?}"
    );
    assert_eq!(got.len(), 4);
}

/// A sender outside `allow_from` is refused: its connection is closed unread, counted.
#[test]
fn a_peer_outside_allow_from_is_refused() {
    let v = Vigil::start("    mode: tcp\n    allow_from: [10.0.0.0/8, \"192.0.2.7\"]\n");
    let mut c = TcpStream::connect(v.address()).expect("connect");
    c.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let _ = c.write_all(b"<13>1 - h app - - - refused\n");
    let mut buf = [0u8; 16];
    // Closed by vigil: end of stream (or a reset), never a timeout.
    match c.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
    }
    wait_for("the refusal counted", DEADLINE, || {
        v.dropped("peer_not_allowed") == 1
    });
    assert!(v.out().is_empty());
}

/// Past `connection_limit`, a connection is closed at once and counted; the open ones
/// keep working.
#[test]
fn connections_past_the_limit_are_closed() {
    let v = Vigil::start("    mode: tcp\n    connection_limit: 2\n");
    let addr = v.address();
    let mut a = TcpStream::connect(addr).expect("a");
    let mut b = TcpStream::connect(addr).expect("b");
    a.write_all(b"<13>1 - h app - - - a1\n").expect("a");
    b.write_all(b"<13>1 - h app - - - b1\n").expect("b");
    v.wait_out(2);
    let mut c = TcpStream::connect(addr).expect("c");
    c.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut buf = [0u8; 16];
    match c.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
    }
    wait_for("the refusal counted", DEADLINE, || {
        v.dropped("connection_limit") == 1
    });
    a.write_all(b"<13>1 - h app - - - a2\n").expect("a");
    let got = v.wait_out(3);
    assert_eq!(got[2]["message"], "a2");
    // One closed, another may come in.
    drop(b);
    wait_for("a third connection accepted", DEADLINE, || {
        let Ok(mut d) = TcpStream::connect(addr) else {
            return false;
        };
        let _ = d.write_all(b"<13>1 - h app - - - d1\n");
        drop(d);
        v.out().iter().any(|r| r["message"] == "d1")
    });
}

/// A CA, a server certificate for `localhost` and a client certificate, as PEM files in
/// `dir`: `ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key`.
fn certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "vigil syslog test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    for name in ["server", "client"] {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, "localhost");
        let cert = p.signed_by(&key, &ca).expect("certificate");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// rsyslog (with gnutls) forwards what `logger` sends it to vigil over TLS, with a client
/// certificate vigil requires; the messages arrive. A client without a certificate gets
/// nothing through.
#[test]
fn rsyslog_forwards_over_tls() {
    let certs = tempfile::tempdir().expect("temp dir");
    certificates(certs.path());
    let c = |f: &str| certs.path().join(f).display().to_string();
    let v = Vigil::start(&format!(
        "    mode: tls\n    tls:\n      cert_file: {}\n      key_file: {}\n      client_ca_file: {}\n",
        c("server.pem"),
        c("server.key"),
        c("ca.pem")
    ));
    let port = v.port();
    let input = free_port();
    let work = tempfile::tempdir().expect("temp dir");
    let conf = work.path().join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{work}" maxMessageSize="64k" DefaultNetstreamDriverCAFile="{ca}" DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{input}")
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="localhost" TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
"#,
            work = work.path().display(),
            ca = c("ca.pem"),
            cert = c("client.pem"),
            key = c("client.key"),
        ),
    )
    .expect("write");
    let mut rsyslog = Command::new("rsyslogd")
        .args(["-n", "-f"])
        .arg(&conf)
        .arg("-i")
        .arg(work.path().join("rsyslog.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rsyslogd runs (apt-get install rsyslog rsyslog-gnutls)");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut rsyslog);
    wait_for("rsyslog listening", DEADLINE, || {
        TcpStream::connect(("127.0.0.1", input)).is_ok()
    });
    let input = input.to_string();
    let sent = samples();
    for (app, msg) in &sent {
        logger(&["--tcp", "-n", "127.0.0.1", "-P", &input], app, msg);
    }
    let got = v.wait_out(sent.len());
    for (app, msg) in &sent {
        let r = got
            .iter()
            .find(|r| r["message"] == msg.as_str())
            .unwrap_or_else(|| panic!("{msg} not received: {got:?}"));
        assert_eq!(r["syslog"]["appname"], app.as_str());
    }
    // `openssl s_client` with the client certificate gets through; without one, vigil
    // ends the handshake and nothing arrives.
    let s_client = |with_cert: bool, text: &str| {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-quiet", "-no_ign_eof", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-CAfile", &c("ca.pem"), "-verify_return_error"]);
        if with_cert {
            cmd.args(["-cert", &c("client.pem"), "-key", &c("client.key")]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("<13>1 - h app - - - {text}\n").as_bytes())
            .expect("write");
        let _ = child.wait();
    };
    s_client(false, "without a certificate");
    s_client(true, "with a certificate");
    let got = v.wait_out(sent.len() + 1);
    assert!(
        got.iter().any(|r| r["message"] == "with a certificate"),
        "{got:?}"
    );
    assert!(
        !got.iter().any(|r| r["message"] == "without a certificate"),
        "{got:?}"
    );
    assert_eq!(got.len(), sent.len() + 1);
}

/// A sink that cannot write (a FIFO nobody reads yet) stalls a TCP sender: the bytes it
/// gets written stop growing. Once the FIFO is read, every message arrives.
#[test]
fn a_blocked_pipeline_stalls_tcp_senders_and_loses_nothing() {
    // The FIFO's reader: opened at once (so vigil's open for writing goes through), but
    // it reads only when told how many lines to expect.
    let (go, wait) = std::sync::mpsc::channel::<u64>();
    let (tx, rx) = std::sync::mpsc::channel();
    let v = Vigil::start_with("    mode: tcp\n    framing: newline\n", true);
    let out = v.out.clone();
    std::thread::spawn(move || {
        let f = std::fs::File::open(out).expect("open the FIFO");
        let Ok(total) = wait.recv() else { return };
        let mut n = 0u64;
        for l in std::io::BufRead::lines(std::io::BufReader::new(f)) {
            let Ok(l) = l else { break };
            let r: Value = serde_json::from_str(&l).expect("a JSON record");
            assert!(
                r["message"].as_str().is_some_and(|m| m.starts_with("yyy")),
                "{r}"
            );
            n += 1;
            if n == total {
                break;
            }
        }
        let _ = tx.send(n);
    });
    let addr = v.address();
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_nonblocking(true).expect("non-blocking");
    let line = format!("<13>1 - h app - - - {}\n", "y".repeat(200));
    let mut written: u64 = 0;
    let mut complete: u64 = 0;
    let mut pending: &[u8] = line.as_bytes();
    let mut last_progress = Instant::now();
    let started = Instant::now();
    // Write until no byte goes through for a second: the sender is stalled.
    loop {
        match c.write(pending) {
            Ok(n) => {
                written += n as u64;
                pending = &pending[n..];
                if pending.is_empty() {
                    complete += 1;
                    pending = line.as_bytes();
                }
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if last_progress.elapsed() > Duration::from_secs(1) {
                    break;
                }
                std::thread::yield_now();
            }
            Err(e) => panic!("write failed: {e}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the sender was never stalled ({written} bytes written)"
        );
    }
    assert!(written > 100_000, "{written}");
    let partial = pending.len() != line.len();
    let total = complete + u64::from(partial);
    // Resume: read the FIFO until every message came.
    go.send(total).expect("reader");
    c.set_nonblocking(false).expect("blocking");
    if partial {
        c.write_all(pending).expect("write");
    }
    drop(c);
    let n = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("every message arrives once the sink writes again");
    assert_eq!(n, total, "{written} bytes written");
}

/// A reload that changes the source closes its listener and binds the same port again
/// (no "address in use"); senders reconnect and get through.
#[test]
fn a_reload_rebinds_the_port() {
    let port = free_port();
    let v = Vigil::start(&format!("    mode: tcp\n    address: 127.0.0.1:{port}\n"));
    assert_eq!(v.address().port(), port);
    let mut a = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    a.write_all(b"<13>1 - h app - - - before\n").expect("write");
    v.wait_out(1);
    v.rewrite(&format!(
        "    mode: tcp\n    address: 127.0.0.1:{port}\n    max_length: 5000\n"
    ));
    wait_for("the source started again", DEADLINE, || {
        v.count_logs("syslog listening") == 2
    });
    // The old connection was closed with the old source.
    a.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut buf = [0u8; 8];
    match a.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
    }
    let mut b = TcpStream::connect(("127.0.0.1", port)).expect("connect again");
    b.write_all(b"<13>1 - h app - - - after\n").expect("write");
    let got = v.wait_out(2);
    assert_eq!(got[1]["message"], "after");
    assert_eq!(v.count_logs("node failed; restarting it"), 0);
}

/// UDP cannot be slowed down: while the sink is blocked, datagrams that find the source's
/// queue full are dropped and counted, and the socket keeps being read.
#[test]
fn udp_datagrams_are_dropped_and_counted_while_the_pipeline_is_full() {
    let v = Vigil::start_with("    mode: udp\n", true);
    // Hold the FIFO open without reading it: the sink blocks once the pipe is full.
    let out = v.out.clone();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let f = std::fs::File::open(out).expect("open the FIFO");
        let _ = rx.recv();
        drop(f);
    });
    let addr = v.address();
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let line = format!("<13>1 - h app - - - {}", "z".repeat(500));
    let started = Instant::now();
    let mut sent = 0u64;
    while v.dropped("pipeline_full") == 0 {
        for _ in 0..2000 {
            s.send_to(line.as_bytes(), addr).expect("send");
            sent += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no datagram dropped after {sent}"
        );
    }
    let _ = tx.send(());
    reader.join().expect("reader");
}

/// `vigil validate` points at what is wrong in a `syslog` source, with file, line and
/// column.
#[test]
fn validate_names_the_wrong_options() {
    let p = Project::new(
        "",
        "kind: pipeline\nname: p\nsources:\n  in:\n    type: syslog\n    mode: tls\n    address: \"6514\"\n    allow_from: [10.0.0.0/33]\nsinks:\n  out:\n    type: stdout\n    inputs: [in]\n",
    );
    let out = p
        .command(&["validate"])
        .arg(p.pipelines())
        .output()
        .expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("p.yaml:6:11: error[invalid-value]: mode `tls` needs `tls:`"),
        "{text}"
    );
    assert!(
        text.contains("p.yaml:7:14: error[invalid-value]: `6514` is not an address and port"),
        "{text}"
    );
    assert!(
        text.contains("p.yaml:8:18: error[invalid-value]: `10.0.0.0/33` is not a network"),
        "{text}"
    );
}

/// A TLS certificate that cannot be read stops the source with its path and why; the
/// rest of vigil runs on.
#[test]
fn an_unreadable_certificate_is_reported() {
    let v = Vigil::start(
        "    mode: tls\n    tls:\n      cert_file: missing.pem\n      key_file: missing.key\n",
    );
    wait_for("the failure logged", DEADLINE, || {
        v.logs.lock().unwrap().iter().any(|l| {
            l.contains("cannot read the certificate file (tls.cert_file)")
                && l.contains("missing.pem")
        })
    });
}

/// `decode: pce` through the source: the real PCE export, sent by `logger`, becomes the
/// records the REST sources make — flows with `policy_decision` and `service.port`, audit
/// events with `event_type` — and nothing is set aside.
#[test]
fn the_pce_decoder_reads_the_real_export_through_the_source() {
    let v = Vigil::start("    mode: tcp\n    decode: pce\n");
    let port = v.port();
    // Values of the right kind where the decoder reads them (the `samples()` fill, `7`,
    // is no policy decision, direction or address).
    let fills = [
        ("\"pd\":7", "\"pd\":2"),
        ("\"dir\":\"7\"", "\"dir\":\"O\""),
        ("\"src_ip\":\"7\"", "\"src_ip\":\"10.1.0.1\""),
        ("\"dst_ip\":\"7\"", "\"dst_ip\":\"10.1.0.2\""),
    ];
    let sent: Vec<(String, String)> = samples()
        .into_iter()
        .map(|(app, mut msg)| {
            for (from, to) in fills {
                msg = msg.replace(from, to);
            }
            (app, msg)
        })
        .collect();
    for (app, msg) in &sent {
        logger(
            &[
                "--tcp",
                "--octet-count",
                "--rfc5424",
                "-n",
                "127.0.0.1",
                "-P",
                &port,
            ],
            app,
            msg,
        );
    }
    let got = v.wait_out(sent.len());
    assert_eq!(got.len(), sent.len(), "{got:?}");
    let summaries = sent
        .iter()
        .filter(|(app, _)| app == "illumio_pce/collector")
        .count();
    let flows: Vec<&Value> = got
        .iter()
        .filter(|r| r["policy_decision"].is_string())
        .collect();
    assert_eq!(flows.len(), summaries, "{got:?}");
    assert!(summaries > 0 && summaries < sent.len());
    for f in &flows {
        assert!(f["src"]["ip"].is_string(), "{f}");
        assert!(f["dst"]["ip"].is_string(), "{f}");
        assert!(f["service"]["proto"].is_number(), "{f}");
        assert!(f["timestamp_range"]["last_detected"].is_string(), "{f}");
    }
    let events = got.iter().filter(|r| r["event_type"].is_string()).count();
    assert_eq!(events, sent.len() - summaries, "{got:?}");
    assert!(v.rejected().is_empty(), "{:?}", v.rejected());
}
