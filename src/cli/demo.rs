//! `vigil demo`.

use std::process::ExitCode;

use anyhow::Context as _;

use super::print;
use super::run::run_on;

pub(super) fn demo(opts: vigil::demo::DemoOptions) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let demo = rt
        .block_on(vigil::demo::prepare(&opts))
        .context("setting up the demo")?;
    print(&format!(
        "vigil demo: {scenario} on a simulated PCE at {sim}, {scale}x real time\n           API:       http://{listen}/api/v1/pipelines  (metrics: http://{listen}/metrics)\n           mails:     {mail}/*.eml\n           pipelines: {pipes}  (edit them: vigil reloads)\n\
         Ctrl-C stops.\n",
        scenario = opts.scenario,
        sim = demo.sim.url(),
        scale = opts.time_scale,
        listen = opts.listen,
        mail = demo.mail_dir.display(),
        pipes = demo.pipelines.display(),
    ))?;
    let code = run_on(&rt, demo.pipelines.clone(), true, demo.clock.clone());
    drop(demo);
    code
}
