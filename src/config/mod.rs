//! Pipeline files: reading, interpolation, schema checks with positions, the typed model
//! and the cross-reference pass.

pub mod check;
pub mod diagnostic;
pub mod interpolate;
pub mod load;
pub mod model;
pub mod schema;
pub mod yaml;

use std::path::PathBuf;

pub use interpolate::Env;
pub use load::{LoadError, LoadOptions, Loaded, load_paths, load_sources};
pub use model::{
    DEFAULT_PUBLIC_URL, Document, Duration, PipelineConfig, RestartsConfig, RetentionConfig,
    SettingsConfig,
};

/// A complete, validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Engine settings (defaults when no `kind: settings` document exists).
    pub settings: SettingsConfig,
    /// Every pipeline, in file order.
    pub pipelines: Vec<LoadedPipeline>,
    /// The settings document as read (after `${VAR}` interpolation): what a reload
    /// compares to tell whether the settings changed.
    pub settings_raw: serde_json::Value,
}

/// A pipeline and the file it came from.
#[derive(Debug, Clone)]
pub struct LoadedPipeline {
    /// The file that defines it.
    pub file: PathBuf,
    /// Its configuration.
    pub config: PipelineConfig,
    /// The document as read (after `${VAR}` interpolation): what a reload compares to
    /// tell which components changed.
    pub raw: serde_json::Value,
}
