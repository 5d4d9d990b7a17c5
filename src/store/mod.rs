//! What vigil keeps on disk under `state_dir`.

pub mod bans;
pub mod history;
pub mod notify;
pub mod outbox;
pub mod private;
pub mod records;
pub mod rejected;
pub mod sqlite;
pub mod writer;

pub use bans::{Ban, BanState};
pub use history::{Matcher, Silence};
pub use outbox::{NotifyMeta, OutboxEntry, OutboxState};
pub use sqlite::{Store, StoreError};
