//! Polling an async query or job with a growing interval and a deadline.

use std::time::Duration;

use super::{PceClient, PceError, Reply, RequestId};
use crate::event::Timestamp;

/// Waits between polls: the first wait (or `Retry-After`), then growing by half each time
/// up to the maximum; gives up with [`PceError::QueryTimedOut`] at the deadline.
pub(crate) struct Poller {
    what: &'static str,
    href: String,
    next: Duration,
    max: Duration,
    started: Timestamp,
    deadline: Timestamp,
    first_wait: Option<Duration>,
    last_status: String,
    request_id: RequestId,
}

impl PceClient {
    /// A poller for `href`, using the client's poll settings.
    pub(crate) fn poller(
        &self,
        what: &'static str,
        href: &str,
        first_wait: Option<Duration>,
    ) -> Poller {
        let started = self.inner.clock.now();
        Poller {
            what,
            href: href.to_string(),
            next: self.inner.poll_initial,
            max: self.inner.poll_max,
            started,
            deadline: crate::time::later(started, self.inner.query_timeout),
            first_wait,
            last_status: "(not polled yet)".to_string(),
            request_id: RequestId::default(),
        }
    }
}

impl Poller {
    /// Waits before the next poll, or fails when the deadline has passed.
    pub(crate) async fn wait(&mut self, client: &PceClient) -> Result<(), PceError> {
        let now = client.inner.clock.now();
        if now >= self.deadline {
            return Err(self.timed_out(now));
        }
        let wait = match self.first_wait.take() {
            Some(w) => w,
            None => {
                let w = self.next;
                self.next = (self.next + self.next / 2).min(self.max);
                w
            }
        };
        let remaining = (self.deadline - now).to_std().unwrap_or_default();
        client.wait(wait.min(remaining)).await;
        Ok(())
    }

    /// Records what the last poll said.
    pub(crate) fn seen(&mut self, status: &str, reply: &Reply) {
        status.clone_into(&mut self.last_status);
        self.request_id = reply.request_id.clone();
    }

    fn timed_out(&self, now: Timestamp) -> PceError {
        PceError::QueryTimedOut {
            what: self.what,
            href: self.href.clone(),
            waited: (now - self.started).to_std().unwrap_or_default(),
            last_status: self.last_status.clone(),
            request_id: self.request_id.clone(),
        }
    }
}
