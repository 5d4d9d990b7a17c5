//! `vigil graph`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{GraphFormat, load_for_use, print};

pub(super) fn graph(path: PathBuf, format: GraphFormat) -> anyhow::Result<ExitCode> {
    let loaded = load_for_use(path)?;
    let Some(config) = loaded.config else {
        return Ok(ExitCode::from(1));
    };
    let g = config.graph();
    print(&match format {
        GraphFormat::Dot => g.to_dot(),
        GraphFormat::Mermaid => g.to_mermaid(),
    })?;
    Ok(ExitCode::SUCCESS)
}
