//! Time, passed in: the clocks the engine waits on, and lengths of time as written in
//! pipeline files.

mod clock;
mod duration;

pub use clock::{Clock, JumpClock, ScaledClock, SharedClock, VirtualClock, WallClock};
pub use duration::Duration;
