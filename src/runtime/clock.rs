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
