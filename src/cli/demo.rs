//! `vigil demo`.

use std::process::ExitCode;

use anyhow::Context as _;

use super::print;
use super::run::run_on;

/// The address the demo's web server will listen on: `listen` as given, or, when it asks
/// for any free port (`:0`), a free port picked now — so the banner printed before the
/// pipelines start can name the dashboard's real URL.
fn resolve_listen(listen: &str) -> anyhow::Result<String> {
    let addr: std::net::SocketAddr = match listen.parse() {
        Ok(a) => a,
        // A host name: the web server resolves it; the banner shows it as given.
        Err(_) => return Ok(listen.to_string()),
    };
    if addr.port() != 0 {
        return Ok(listen.to_string());
    }
    let probe = std::net::TcpListener::bind(addr)
        .with_context(|| format!("finding a free port on {}", addr.ip()))?;
    let picked = probe
        .local_addr()
        .with_context(|| format!("finding a free port on {}", addr.ip()))?;
    Ok(picked.to_string())
}

pub(super) fn demo(mut opts: vigil::demo::DemoOptions) -> anyhow::Result<ExitCode> {
    if opts.tetragon_events.is_some() && opts.scenario != vigil::demo::DemoScenario::Runtime {
        anyhow::bail!("--tetragon-events goes with --scenario runtime");
    }
    opts.listen = resolve_listen(&opts.listen)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let demo = rt
        .block_on(vigil::demo::prepare(&opts))
        .context("setting up the demo")?;
    print(&format!(
        "vigil demo: open the dashboard at http://{listen}/\n\
         \x20 mails:     {mail}/*.eml  (a loopback SMTP server writes every alert mail there)\n\
         \x20 stop:      Ctrl-C  (a later run in {out} goes on where this one stops)\n\
         \x20 scenario:  {scenario} (the PCE at {sim}), {scale}x real time\n\
         \x20 API:       http://{listen}/api/v1/pipelines  (metrics: http://{listen}/metrics)\n\
         \x20 pipelines: {pipes}  (edit them: vigil reloads)\n\
         \x20 syslog:    the simulator also pushes its audit events as syslog to {syslog}  (pipelines/pce-syslog.yaml: the real-time path)\n{tetragon}",
        scenario = opts.scenario,
        sim = demo.sim.url(),
        scale = opts.time_scale,
        listen = opts.listen,
        mail = demo.mail_dir.display(),
        out = opts.out.display(),
        pipes = demo.pipelines.display(),
        syslog = demo.syslog,
        tetragon = demo
            .tetragon
            .as_ref()
            .map(|t| format!(
                "  tetragon:  Tetragon's events are written to {}  (pipelines/tetragon/: the starter pack reads it)\n",
                t.path.display()
            ))
            .unwrap_or_default(),
    ))?;
    let code = run_on(&rt, demo.pipelines.clone(), true, demo.clock.clone());
    drop(demo);
    code
}
