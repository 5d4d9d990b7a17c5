//! `vigil pce-sim`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use vigil::pce::sim::{PceSim, SimConfig};
use vigil::runtime::WallClock;

use super::print;
use super::run::Signals;

pub(super) fn pce_sim(listen: SocketAddr, cfg: SimConfig) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let scenario = cfg.scenario;
        // Before the URL is printed: whoever reads it may stop the simulator at once.
        let mut signals = Signals::listen();
        let sim = PceSim::start(cfg, Arc::new(WallClock), listen).await?;
        print(&format!("{}\n", sim.url()))?;
        tracing::info!(url = %sim.url(), %scenario, "PCE simulator running (Ctrl-C stops it)");
        signals.next().await;
        tracing::info!("stopping the PCE simulator");
        sim.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
