//! Time, passed in: the clocks the engine waits on, and lengths of time as written in
//! pipeline files.

mod clock;
mod duration;

pub use clock::{Clock, JumpClock, ScaledClock, SharedClock, VirtualClock, WallClock};
pub use duration::{Duration, MAX_LENGTH, parse_length};

/// `t + d`, saturating at the last time that can be held. Lengths written in files are
/// at most [`MAX_LENGTH`], so this saturates only where plain `+` would have panicked.
pub fn later(
    t: chrono::DateTime<chrono::Utc>,
    d: std::time::Duration,
) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(d)
        .map_or(chrono::DateTime::<chrono::Utc>::MAX_UTC, |d| later_by(t, d))
}

/// `t + d` for a span of event time, saturating at either end of what can be held.
pub fn later_by(
    t: chrono::DateTime<chrono::Utc>,
    d: chrono::Duration,
) -> chrono::DateTime<chrono::Utc> {
    t.checked_add_signed(d)
        .unwrap_or(if d < chrono::Duration::zero() {
            chrono::DateTime::<chrono::Utc>::MIN_UTC
        } else {
            chrono::DateTime::<chrono::Utc>::MAX_UTC
        })
}
