//! The service manager's protocol (`sd_notify(3)`): `READY=1` once the pipelines run and
//! the API listens, `STOPPING=1` when a shutdown starts, and `WATCHDOG=1` pings while the
//! engine's runtime answers. Everything here is a no-op when `NOTIFY_SOCKET` is unset (a
//! run from a terminal, a container, a test).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vigil::runtime::Reloader;

/// Tells the service manager where the run is.
#[derive(Clone, Default)]
pub(super) struct Notifier {
    stopping: Arc<AtomicBool>,
    warned: Arc<AtomicBool>,
}

impl Notifier {
    /// The pipelines run and the API listens (or was not asked for).
    pub(super) fn ready(&self, pipelines: usize) {
        let status = format!("running {pipelines} pipeline(s)");
        self.send(&[State::Ready, State::Status(&status)]);
    }

    /// A shutdown started (sent once, whatever asked for it).
    pub(super) fn stopping(&self) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        self.send(&[State::Stopping, State::Status("draining in-flight events")]);
    }

    /// When the service manager asked for watchdog pings (`WATCHDOG_USEC`, for this
    /// process), pings at half that period from a task on the engine's runtime, each time
    /// after the graph's state has answered and a fresh task could be scheduled: a runtime
    /// whose workers are all stuck stops pinging, and the service manager restarts it.
    /// The pings go on through a drain (a long drain is a live process) until it ends.
    pub(super) fn spawn_watchdog(&self, reloader: Reloader) -> Option<tokio::task::JoinHandle<()>> {
        let period = watchdog_period()?;
        let every = period / 2;
        if every.is_zero() {
            return None;
        }
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if engine_answers(&reloader, every).await {
                    me.send(&[State::Watchdog]);
                } else {
                    tracing::warn!(
                        "the engine did not answer within {}: no watchdog ping",
                        humantime::format_duration(every)
                    );
                }
            }
        }))
    }

    fn send(&self, states: &[State<'_>]) {
        if let Err(e) = notify(states)
            && !self.warned.swap(true, Ordering::AcqRel)
        {
            tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
        }
    }
}

#[cfg(unix)]
use sd_notify::{NotifyState as State, notify, watchdog_enabled as watchdog_period};

/// What is sent (without a service manager to send it to off Unix).
#[cfg(not(unix))]
enum State<'a> {
    Ready,
    Stopping,
    Watchdog,
    Status(&'a str),
}

#[cfg(not(unix))]
fn notify(_: &[State<'_>]) -> std::io::Result<()> {
    Ok(())
}

#[cfg(not(unix))]
fn watchdog_period() -> Option<Duration> {
    None
}

/// The graph's state can be read and a new task runs, within `limit`.
async fn engine_answers(reloader: &Reloader, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        let _ = reloader.nodes().await;
        tokio::spawn(async {}).await.is_ok()
    })
    .await
    .unwrap_or(false)
}
