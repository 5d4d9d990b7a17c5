//! What vigil keeps on disk under `state_dir`.

pub mod rejected;
pub mod sqlite;

pub use sqlite::{Store, StoreError};
