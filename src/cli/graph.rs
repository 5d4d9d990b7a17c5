//! `vigil graph`.

use std::path::PathBuf;
use std::process::ExitCode;

use vigil::graph::Graph;

use super::{GraphFormat, load_for_use, print};

pub(super) fn graph(path: PathBuf, format: GraphFormat) -> anyhow::Result<ExitCode> {
    let loaded = load_for_use(path)?;
    let Some(config) = loaded.config else {
        return Ok(ExitCode::from(1));
    };
    let g = Graph::from_config(&config);
    print(&match format {
        GraphFormat::Dot => g.to_dot(&config),
        GraphFormat::Mermaid => g.to_mermaid(&config),
    })?;
    Ok(ExitCode::SUCCESS)
}
