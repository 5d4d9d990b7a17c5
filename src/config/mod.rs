//! Pipeline files: reading, interpolation, schema checks with positions, the typed model
//! and the cross-reference pass.

pub mod fields;
pub mod interpolate;
pub mod load;
pub mod model;
pub mod schema;
pub mod state_dir;
pub mod test_case;
pub mod yaml;

pub use crate::diagnostic;
/// The problems a component's structural check reports (see [`crate::diagnostic::Problems`]).
pub mod check {
    pub use crate::diagnostic::Problems;
}

use std::path::PathBuf;
use std::sync::Arc;

use crate::graph::{Graph, GraphNode, NodeRole};

pub use crate::time::Duration;
pub use interpolate::Env;
pub use load::{LoadError, LoadOptions, Loaded, load_paths, load_sources};
pub use model::{
    DEFAULT_PUBLIC_URL, Document, PipelineConfig, RestartsConfig, RetentionConfig, SettingsConfig,
};

/// A complete, validated configuration. Its `Debug` leaves out the documents as read:
/// they hold the interpolated secrets (typed fields hold them as [`crate::secret::Secret`],
/// which prints `***`).
#[derive(Clone, Default)]
pub struct Config {
    /// Engine settings (defaults when no `kind: settings` document exists).
    pub settings: SettingsConfig,
    /// Every pipeline, in file order.
    pub pipelines: Vec<LoadedPipeline>,
    /// The settings document as read (after `${VAR}` interpolation): what a reload
    /// compares to tell whether the settings changed.
    pub settings_raw: serde_json::Value,
}

/// A pipeline and the file it came from (its `Debug` leaves out the document as read).
#[derive(Clone)]
pub struct LoadedPipeline {
    /// The file that defines it.
    pub file: PathBuf,
    /// Its configuration.
    pub config: PipelineConfig,
    /// The document as read (after `${VAR}` interpolation): what a reload compares to
    /// tell which components changed.
    pub raw: serde_json::Value,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("settings", &self.settings)
            .field("pipelines", &self.pipelines)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LoadedPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPipeline")
            .field("file", &self.file)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The graph of this validated configuration (inputs that name nothing are
    /// skipped: validation reports them).
    pub fn graph(&self) -> Graph {
        let config = self;
        let mut nodes = Vec::new();
        for (pi, p) in config.pipelines.iter().enumerate() {
            let pc = &p.config;
            let first = nodes.len();
            let mut add = |name: &str, role: NodeRole, kind: &str| {
                nodes.push(GraphNode {
                    id: format!("{}.{}", pc.name, name).into(),
                    pipeline: pi,
                    name: name.to_string(),
                    role,
                    kind: kind.to_string(),
                    inputs: Vec::new(),
                });
            };
            for (name, s) in &pc.sources {
                add(name, NodeRole::Source, s.kind());
            }
            for (name, s) in &pc.stages {
                add(name, NodeRole::Stage, s.kind());
            }
            for (name, s) in &pc.sinks {
                add(name, NodeRole::Sink, s.kind());
            }
            let index_of = |nodes: &[GraphNode], name: &str| {
                nodes[first..]
                    .iter()
                    .position(|n| n.name == name && n.role != NodeRole::Sink)
                    .map(|i| i + first)
            };
            let wiring: Vec<(String, Vec<String>)> = pc
                .stages
                .iter()
                .map(|(n, s)| (n.clone(), s.inputs().to_vec()))
                .chain(
                    pc.sinks
                        .iter()
                        .map(|(n, s)| (n.clone(), s.inputs().to_vec())),
                )
                .collect();
            for (offset, (_, inputs)) in wiring.iter().enumerate() {
                let at = first + pc.sources.len() + offset;
                let mut resolved: Vec<usize> = Vec::new();
                for i in inputs.iter().filter_map(|i| index_of(&nodes, i)) {
                    // An input listed twice is read once (validation warns about it).
                    if !resolved.contains(&i) {
                        resolved.push(i);
                    }
                }
                nodes[at].inputs = resolved;
            }
        }
        Graph {
            pipelines: config
                .pipelines
                .iter()
                .map(|p| Arc::from(p.config.name.as_str()))
                .collect(),
            nodes,
        }
    }
}
