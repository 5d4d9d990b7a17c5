//! Time, passed in.
//!
//! Stages never read the wall clock: the runtime hands them ticks. `vigil run` uses
//! [`WallClock`]; tests and `vigil test` use [`VirtualClock`], which moves only when told,
//! so windows and timeouts are tested without sleeping.

use std::sync::Arc;

use chrono::Utc;
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::event::Timestamp;

/// A source of time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Completes once the clock reads `deadline` or later.
    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()>;
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// The real time.
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> Timestamp {
        Utc::now()
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        let wait = (deadline - Utc::now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// The real time sped up `scale` times from the moment it was made: `vigil demo` plays an
/// hour of an attack in a minute, with every component on the same compressed time.
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    origin: std::time::Instant,
    origin_time: Timestamp,
    scale: f64,
}

impl ScaledClock {
    /// Starts now; `scale` must be positive (1.0 is real time).
    pub fn new(scale: f64) -> ScaledClock {
        ScaledClock::starting_at(scale, Utc::now())
    }

    /// Starts at `start`, running `scale` times faster than real time.
    pub fn starting_at(scale: f64, start: Timestamp) -> ScaledClock {
        ScaledClock {
            origin: std::time::Instant::now(),
            origin_time: start,
            scale: if scale.is_finite() && scale > 0.0 {
                scale
            } else {
                1.0
            },
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Timestamp {
        let elapsed = self.origin.elapsed().as_secs_f64() * self.scale;
        self.origin_time + chrono::Duration::microseconds((elapsed * 1e6) as i64)
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        let ahead = (deadline - self.now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(ahead.div_f64(self.scale)))
    }
}

/// A clock that moves only when [`VirtualClock::advance`] or [`VirtualClock::set`] is called.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    now: Arc<watch::Sender<Timestamp>>,
}

impl VirtualClock {
    /// A clock that reads `start`.
    pub fn new(start: Timestamp) -> VirtualClock {
        VirtualClock {
            now: Arc::new(watch::Sender::new(start)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        self.now.send_modify(|t| *t += by);
    }

    /// Sets the clock to `t` (never backwards: an earlier `t` is ignored).
    pub fn set(&self, t: Timestamp) {
        self.now.send_if_modified(|now| {
            if t > *now {
                *now = t;
                true
            } else {
                false
            }
        });
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // An error means the clock is gone: nothing will ever wake us, so wait forever
            // like a real sleep would at the end of time.
            if rx.wait_for(|now| *now >= deadline).await.is_err() {
                futures::future::pending::<()>().await;
            }
        })
    }
}

/// A virtual clock that jumps to the deadline of every sleep at once, and remembers each
/// wait: for replays that should run as fast as the machine allows, and for tests that
/// assert exact waits (a `Retry-After: 7` waits exactly 7 s) without sleeping.
#[derive(Debug)]
pub struct JumpClock {
    inner: VirtualClock,
    start: Timestamp,
    waits: std::sync::Mutex<Vec<std::time::Duration>>,
}

impl JumpClock {
    /// A clock that reads `start`.
    pub fn new(start: Timestamp) -> Arc<JumpClock> {
        Arc::new(JumpClock {
            inner: VirtualClock::new(start),
            start,
            waits: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Every wait asked for so far, in order.
    pub fn waits(&self) -> Vec<std::time::Duration> {
        self.waits.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// How far the clock has moved since it was made.
    pub fn elapsed(&self) -> std::time::Duration {
        (self.inner.now() - self.start).to_std().unwrap_or_default()
    }

    /// The virtual clock underneath (to share it, e.g. with a simulator).
    pub fn virtual_clock(&self) -> &VirtualClock {
        &self.inner
    }
}

impl Clock for JumpClock {
    fn now(&self) -> Timestamp {
        self.inner.now()
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        let wait = (deadline - self.inner.now()).to_std().unwrap_or_default();
        if let Ok(mut w) = self.waits.lock() {
            w.push(wait);
        }
        self.inner.set(deadline);
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn virtual_sleep_wakes_on_advance() {
        let clock = VirtualClock::new(Utc::now());
        let start = clock.now();
        let sleeper = clock.sleep_until(start + chrono::Duration::seconds(10));
        let handle = tokio::spawn(sleeper);
        clock.advance(Duration::from_secs(5));
        tokio::task::yield_now().await;
        assert!(!handle.is_finished());
        clock.advance(Duration::from_secs(5));
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("woke up")
            .expect("no panic");
        assert_eq!(clock.now() - start, chrono::Duration::seconds(10));
    }
}
