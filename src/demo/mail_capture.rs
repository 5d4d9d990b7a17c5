//! `vigil demo`'s mail server: a real SMTP server on loopback (mailin-embedded) that
//! writes every message it accepts to `<dir>/NNNN.eml`, so the mail sink's real code path
//! runs and the mails can be opened.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mailin_embedded::response::{INTERNAL_ERROR, OK};
use mailin_embedded::{Handler, Response, Server};

/// The running capture server (it runs until the process ends).
#[derive(Debug)]
pub struct MailCapture {
    /// Where it listens.
    pub addr: SocketAddr,
    /// How many mails it wrote (this run).
    pub count: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Capture {
    dir: PathBuf,
    count: Arc<AtomicUsize>,
    /// The number of the last mail already in `dir` (from an earlier run): this run's
    /// mails come after it.
    offset: usize,
    data: Vec<u8>,
}

impl Handler for Capture {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        OK
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        self.data.clear();
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let n = self.offset + self.count.fetch_add(1, Ordering::SeqCst) + 1;
        let path = self.dir.join(format!("{n:04}.eml"));
        // Written under a temporary name and renamed: a reader never sees half a mail.
        let tmp = self.dir.join(format!(".{n:04}.eml.part"));
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&self.data).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => {
                tracing::debug!(file = %path.display(), "demo: mail captured");
                OK
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "demo: cannot write the mail");
                INTERNAL_ERROR
            }
        }
    }
}

impl MailCapture {
    /// Starts on a free loopback port, writing into `dir` (created if needed), numbering
    /// its mails after those an earlier run left there.
    pub fn start(dir: &Path) -> std::io::Result<MailCapture> {
        std::fs::create_dir_all(dir)?;
        let offset = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".eml")?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let count = Arc::new(AtomicUsize::new(0));
        let handler = Capture {
            dir: dir.to_path_buf(),
            count: count.clone(),
            offset,
            data: Vec::new(),
        };
        let mut server = Server::new(handler);
        // Every mail sink keeps a pooled connection open: plenty of threads.
        server
            .with_name("vigil-demo")
            .with_num_threads(64)
            .with_tcp_listener(listener);
        std::thread::Builder::new()
            .name("demo-smtp".into())
            .spawn(move || {
                if let Err(e) = server.serve() {
                    tracing::error!(error = %e, "demo: the mail capture server stopped");
                }
            })?;
        Ok(MailCapture { addr, count })
    }
}
