//! What vigil keeps on disk under `state_dir`.

pub mod rejected;
