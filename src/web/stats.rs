//! What the web server refused, cut off or failed at: one counter per situation, logged as
//! it is counted, read by `/metrics` (`vigil_web_*`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a connection or a request was refused or cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A connection beyond `web.max_connections`, closed at once.
    MaxConnections,
    /// A connection that did not send a request's headers within
    /// `web.header_read_timeout` (a slow client, or an idle one).
    HeaderTimeout,
    /// A connection with nothing going either way for `web.idle_timeout`.
    IdleTimeout,
    /// A request naming a `Host` that is not this server (421).
    Host,
    /// A browser's request that changes something, from another origin, without a token
    /// configured (403).
    Origin,
    /// A request without the configured token, or with another (401).
    Token,
    /// A request body beyond `web.max_body_bytes` (413).
    BodyTooLarge,
    /// A request not answered within `web.request_timeout` (408).
    RequestTimeout,
}

impl Refusal {
    /// Every reason, in the order `/metrics` writes them.
    pub(super) const ALL: [Refusal; 8] = [
        Refusal::MaxConnections,
        Refusal::HeaderTimeout,
        Refusal::IdleTimeout,
        Refusal::Host,
        Refusal::Origin,
        Refusal::Token,
        Refusal::BodyTooLarge,
        Refusal::RequestTimeout,
    ];

    /// The `reason` label.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::IdleTimeout => "idle_timeout",
            Refusal::Host => "host",
            Refusal::Origin => "origin",
            Refusal::Token => "token",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::RequestTimeout => "request_timeout",
        }
    }
}

/// The web server's counters.
#[derive(Debug, Default)]
pub(super) struct WebStats {
    accepted: AtomicU64,
    open: AtomicU64,
    accept_errors: AtomicU64,
    panics: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
}

/// The counters as `/metrics` reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct WebCounts {
    /// Connections accepted (and served).
    pub(super) accepted: u64,
    /// Connections open now.
    pub(super) open: u64,
    /// `accept` calls that failed (out of file descriptors, …).
    pub(super) accept_errors: u64,
    /// Requests whose handler panicked (answered 500).
    pub(super) panics: u64,
    /// Connections and requests refused, by reason.
    pub(super) refused: Vec<(&'static str, u64)>,
}

impl WebStats {
    /// Counts `reason` once, and logs it (at debug: a flood of them must not flood the
    /// log; the refused connections warn at 1, 2, 4, 8, … so an operator learns of them).
    pub(super) fn refuse(&self, reason: Refusal) {
        let idx = Refusal::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        let n = self.refused[idx].fetch_add(1, Ordering::Relaxed) + 1;
        if reason == Refusal::MaxConnections && n.is_power_of_two() {
            tracing::warn!(
                refused = n,
                "web: a connection was refused: web.max_connections are open (raise it if these are real clients)"
            );
        } else {
            tracing::debug!(reason = reason.as_str(), "web: refused");
        }
    }

    /// A connection was accepted; the guard counts it open until dropped.
    pub(super) fn opened(&self) -> OpenGuard<'_> {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(self)
    }

    /// `accept` failed with `error`; warns at the 1st, 2nd, 4th, … time.
    pub(super) fn accept_failed(&self, error: &std::io::Error) {
        let n = self.accept_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                error = %error,
                failures = n,
                "web: cannot accept a connection (out of file descriptors? raise the open-file limit, or lower web.max_connections)"
            );
        }
    }

    /// A handler panicked.
    pub(super) fn panicked(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub(super) fn counts(&self) -> WebCounts {
        WebCounts {
            accepted: self.accepted.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
            panics: self.panics.load(Ordering::Relaxed),
            refused: Refusal::ALL
                .iter()
                .zip(&self.refused)
                .map(|(r, c)| (r.as_str(), c.load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

/// An open connection (see [`WebStats::opened`]).
pub(super) struct OpenGuard<'a>(&'a WebStats);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
