//! `vigil run`: the pipelines, the API, reloads and signals.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use vigil::runtime::{self, WallClock};

use super::load_for_use;
use super::systemd::Notifier;

/// How long the pipelines directory must be quiet after a change before it is reloaded.
const WATCH_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(300);

pub(super) fn run(path: PathBuf, watch: bool) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = run_on(&rt, path, watch, Arc::new(WallClock));
    // Every node is done. A read of standard input still blocked in the runtime's thread
    // pool (a `stdin` source whose input stays open) must not keep the process alive.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    outcome
}

/// `vigil run` on `rt` with `clock` (the wall clock, or `vigil demo`'s compressed time).
pub(super) fn run_on(
    rt: &tokio::runtime::Runtime,
    path: PathBuf,
    watch: bool,
    clock: runtime::SharedClock,
) -> anyhow::Result<ExitCode> {
    // Watch before loading, so no change made in between is missed. (A path that does not
    // exist is reported by the load; watching what would be its parent is only noise.)
    let watcher = if watch && path.exists() {
        let dir = if path.is_dir() {
            path.clone()
        } else {
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf)
        };
        let _guard = rt.enter();
        match runtime::PipelineWatcher::start(&dir, WATCH_DEBOUNCE) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("{e}; changes to the files are not picked up (SIGHUP reloads)");
                None
            }
        }
    } else {
        None
    };
    let loaded = load_for_use(path.clone())?;
    let Some(config) = loaded.config else {
        let _ = writeln!(
            std::io::stderr(),
            "vigil: not starting: fix the errors above (`vigil validate` lists them)"
        );
        return Ok(ExitCode::from(1));
    };
    rt.block_on(async move {
        let (_watcher, changes) = match watcher {
            Some((w, rx)) => (Some(w), Some(rx)),
            None => (None, None),
        };
        // Listen for SIGHUP before anything can send it (its default action ends the
        // process).
        #[cfg(unix)]
        let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by editing the files");
                None
            }
        };
        #[cfg(not(unix))]
        let hup = None::<()>;
        // Before READY=1: a service manager may send SIGTERM right after it.
        let mut signals = Signals::listen();
        let topology = runtime::start(&config, clock.clone())?;
        tracing::info!(
            pipelines = config.pipelines.len(),
            nodes = topology.counters().len(),
            "vigil running"
        );
        let token = topology.shutdown_token();
        let driver = runtime::ReloadDriver::new(path.clone(), topology.reloader(), clock.clone());
        // The API and /metrics; a busy port is not fatal (the pipelines matter more).
        let _web = if config.settings.web.enabled {
            match vigil::web::serve(
                &config.settings.web,
                &config.settings.public_url,
                topology.reloader(),
                driver.clone(),
                token.clone(),
            )
            .await
            {
                Ok(server) => Some(server),
                Err(e) => {
                    tracing::warn!("{e}; running without the web API");
                    None
                }
            }
        } else {
            None
        };
        // Started, and the API listens: the service manager may start what comes after.
        let notifier = Notifier::default();
        notifier.ready(config.pipelines.len());
        let watchdog = notifier.spawn_watchdog(topology.reloader());
        let reloads = tokio::spawn(reload_triggers(driver, hup, changes, token.clone()));
        let on_signal = notifier.clone();
        let signals = tokio::spawn(async move {
            signals.next().await;
            tracing::info!(
                "shutting down: draining in-flight events (signal again to stop at once)"
            );
            on_signal.stopping();
            token.cancel();
            signals.next().await;
            tracing::warn!("second signal: stopping without draining");
            std::process::exit(130);
        });
        let report = topology.wait().await;
        // Every source ended by itself, or the drain is over.
        notifier.stopping();
        signals.abort();
        reloads.abort();
        if let Some(w) = watchdog {
            w.abort();
        }
        for n in &report.nodes {
            tracing::info!(
                node = %n.id,
                role = n.role,
                events_in = n.events_in,
                events_out = n.events_out,
                errors = n.errors,
                "node summary"
            );
        }
        Ok(if report.failed() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// Reloads the pipelines on SIGHUP and when their files change, until `shutdown`.
async fn reload_triggers(
    driver: runtime::ReloadDriver,
    #[cfg(unix)] mut hup: Option<tokio::signal::unix::Signal>,
    #[cfg(not(unix))] _hup: Option<()>,
    mut changes: Option<tokio::sync::mpsc::Receiver<runtime::ChangeBatch>>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let change = async {
            match changes.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(unix)]
        let hup_signal = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup_signal = std::future::pending::<()>();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup_signal => {
                driver.reload("SIGHUP").await;
            }
            batch = change => match batch {
                Some(batch) => {
                    let files: Vec<String> =
                        batch.paths.iter().map(|p| p.display().to_string()).collect();
                    driver.reload(&format!("changed: {}", files.join(", "))).await;
                }
                None => changes = None,
            },
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from the moment this is made: one that
/// arrives before anyone waits is kept, not the default action's end of the process.
pub(super) struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Starts listening (on the current tokio runtime).
    pub(super) fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Some((term, int)),
                _ => None,
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next SIGTERM or SIGINT.
    pub(super) async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((term, int)) = self.streams.as_mut() {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
