//! `vigil demo`: the whole product on a fresh machine. The PCE simulator plays an attack on
//! compressed time, the shipped pipelines watch it through the real PCE client, alerts
//! are mailed through the real mail sink to a loopback SMTP server that writes each mail to
//! `<out>/mail/NNNN.eml`, and the API serves it all.

mod mail_capture;
pub mod tetragon;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use mail_capture::MailCapture;

use crate::pce::sim::{PceSim, RunningSim, Scenario, SimConfig, SyslogExport, SyslogMode};
use crate::time::{ScaledClock, SharedClock};

/// The shipped pipelines, compiled in (`pipelines/` of the repository).
pub const SHIPPED_PIPELINES: &[(&str, &str)] = &[
    (
        "admin-ports.yaml",
        include_str!("../../pipelines/admin-ports.yaml"),
    ),
    (
        "agent-tampering.yaml",
        include_str!("../../pipelines/agent-tampering.yaml"),
    ),
    (
        "api-auth-failures.yaml",
        include_str!("../../pipelines/api-auth-failures.yaml"),
    ),
    (
        "blocked-traffic.yaml",
        include_str!("../../pipelines/blocked-traffic.yaml"),
    ),
    (
        "exfiltration.yaml",
        include_str!("../../pipelines/exfiltration.yaml"),
    ),
    (
        "failed-logins.yaml",
        include_str!("../../pipelines/failed-logins.yaml"),
    ),
    (
        "first-app-connection.yaml",
        include_str!("../../pipelines/first-app-connection.yaml"),
    ),
    (
        "missed-heartbeats.yaml",
        include_str!("../../pipelines/missed-heartbeats.yaml"),
    ),
    (
        "pce-health.yaml",
        include_str!("../../pipelines/pce-health.yaml"),
    ),
    (
        "policy-changes.yaml",
        include_str!("../../pipelines/policy-changes.yaml"),
    ),
    (
        "port-scan.yaml",
        include_str!("../../pipelines/port-scan.yaml"),
    ),
    (
        "traffic-spike.yaml",
        include_str!("../../pipelines/traffic-spike.yaml"),
    ),
    (
        "ven-offline.yaml",
        include_str!("../../pipelines/ven-offline.yaml"),
    ),
];

/// The `tetragon` starter pack (`pipelines/tetragon/` of the repository), compiled in for
/// the demo's `runtime` scenario.
pub const TETRAGON_PIPELINES: &[(&str, &str)] = &[
    (
        "capability-use.yaml",
        include_str!("../../pipelines/tetragon/capability-use.yaml"),
    ),
    (
        "dropping-events.yaml",
        include_str!("../../pipelines/tetragon/dropping-events.yaml"),
    ),
    (
        "exec-from-tmp.yaml",
        include_str!("../../pipelines/tetragon/exec-from-tmp.yaml"),
    ),
    (
        "kernel-module.yaml",
        include_str!("../../pipelines/tetragon/kernel-module.yaml"),
    ),
    (
        "namespace-change.yaml",
        include_str!("../../pipelines/tetragon/namespace-change.yaml"),
    ),
    (
        "network-tools.yaml",
        include_str!("../../pipelines/tetragon/network-tools.yaml"),
    ),
    (
        "sensitive-files.yaml",
        include_str!("../../pipelines/tetragon/sensitive-files.yaml"),
    ),
    (
        "setuid-root.yaml",
        include_str!("../../pipelines/tetragon/setuid-root.yaml"),
    ),
    (
        "sshd-shell.yaml",
        include_str!("../../pipelines/tetragon/sshd-shell.yaml"),
    ),
];

/// The starter pack's export-file path, replaced by the demo's file.
const TETRAGON_PATH: &str = "${TETRAGON_EXPORT_FILE:-/var/run/cilium/tetragon/tetragon.log}";

/// How the starter pack starts on a real export file (from its end), replaced in the demo.
const TETRAGON_START: &str = "start_at: end";

/// What the demo plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoScenario {
    /// A scenario of the simulated PCE, watched by the shipped pipelines.
    Pce(Scenario),
    /// Runtime security: Tetragon's events (written to an export file by the demo's
    /// peer) watched by the `tetragon` starter pack, next to a quiet simulated PCE.
    Runtime,
}

impl std::fmt::Display for DemoScenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DemoScenario::Pce(s) => write!(f, "{s} on a simulated PCE"),
            DemoScenario::Runtime => f.write_str(
                "runtime (Tetragon events through the starter pack, a quiet simulated PCE beside)",
            ),
        }
    }
}

/// An unknown demo scenario name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scenario {0:?} (expected one of: quiet, port-scan, brute-force, exfiltration, ven-tampering, degraded-pce, runtime)"
)]
pub struct UnknownDemoScenario(pub String);

impl std::str::FromStr for DemoScenario {
    type Err = UnknownDemoScenario;

    fn from_str(s: &str) -> Result<DemoScenario, UnknownDemoScenario> {
        if s == "runtime" {
            return Ok(DemoScenario::Runtime);
        }
        s.parse()
            .map(DemoScenario::Pce)
            .map_err(|_| UnknownDemoScenario(s.to_string()))
    }
}

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where everything goes: `pipelines/`, `state/`, `mail/`, `secrets/` (and
    /// `tetragon/`, the `runtime` scenario's export file).
    pub out: PathBuf,
    /// What the demo plays.
    pub scenario: DemoScenario,
    /// The `runtime` scenario: a file of Tetragon's events (JSON lines) to write into the
    /// export file in turn instead of the built-in intrusion.
    pub tetragon_events: Option<PathBuf>,
    /// How many times faster than real time the demo's clock runs.
    pub time_scale: f64,
    /// The API's address.
    pub listen: String,
}

/// The demo could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A file or directory under `out`.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The simulator or the mail server did not start.
    #[error("{0}")]
    Start(String),
}

/// What runs beside the pipelines; dropping it stops the simulator's task.
pub struct Demo {
    /// The pipelines directory to run.
    pub pipelines: PathBuf,
    /// The compressed clock every component runs on.
    pub clock: SharedClock,
    /// The simulated PCE.
    pub sim: RunningSim,
    /// The mail server.
    pub mail: MailCapture,
    /// Where mails are written.
    pub mail_dir: PathBuf,
    /// Where the simulator pushes its syslog export (the `pce-syslog` pipeline listens).
    pub syslog: std::net::SocketAddr,
    /// The `runtime` scenario's Tetragon export file, being written.
    pub tetragon: Option<tetragon::TetragonExport>,
}

/// The example pipeline reading a PCE's syslog export: the demo's real-time path.
const SYSLOG_PIPELINE: &str = include_str!("../../examples/pce-syslog/pce-syslog.yaml");

/// The example's listening line, replaced by the demo's loopback address.
const SYSLOG_ADDRESS: &str = "    address: 0.0.0.0:1514";

fn write(path: &Path, text: &str) -> Result<(), DemoError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| DemoError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| DemoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the demo's simulated time to `file` every second of real time (for the next run
/// in the same directory to go on from it).
fn keep_clock(clock: SharedClock, file: PathBuf) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let now = clock.now().to_rfc3339();
            // In the state directory: made as vigil makes the rest of it (0700, 0600).
            if let Some(dir) = file.parent() {
                let _ = crate::store::private::private_dir(dir);
            }
            let _ = crate::store::private::write_replace(&file, now.as_bytes());
        }
    });
}

/// How a shipped pipeline's `stdout` sink is declared (the line the demo adds to).
const STDOUT_SINK: &str = "\n    type: stdout\n";

/// A shipped pipeline as the demo runs it: its `stdout` sinks print one short line per
/// alert (a terminal watched by a person; the full alert is in the dashboard and the
/// mails) instead of the 2–5 KB JSON line of each.
fn for_the_terminal(pipeline: &str) -> String {
    pipeline.replace(
        STDOUT_SINK,
        "\n    type: stdout\n    encoding: summary          # the demo: one line per alert (json_lines for machines)\n",
    )
}

/// Starts the simulator and the mail server and writes the demo's pipelines directory
/// (the shipped pipelines and settings pointing at both).
pub async fn prepare(opts: &DemoOptions) -> Result<Demo, DemoError> {
    let out = &opts.out;
    // Simulated time goes on where the last run in this directory left it: its saved
    // positions (events read, traffic slices) are in the simulated future of a clock that
    // started again at the real now, and a second run would wait for them.
    let clock_file = out.join("state").join("demo-clock");
    let start = std::fs::read_to_string(&clock_file)
        .ok()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .filter(|t| *t > chrono::Utc::now())
        .unwrap_or_else(chrono::Utc::now);
    let clock: SharedClock = Arc::new(ScaledClock::starting_at(opts.time_scale, start));
    keep_clock(clock.clone(), clock_file);
    let mail_dir = out.join("mail");
    let mail = MailCapture::start(&mail_dir).map_err(|source| DemoError::Io {
        path: mail_dir.clone(),
        source,
    })?;
    // The real-time path: the simulator also pushes its syslog export, as a PCE does, to
    // the `pce-syslog` pipeline on a free loopback port.
    let syslog = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| DemoError::Start(format!("a port for the syslog export: {e}")))?;
    let sim_cfg = SimConfig {
        scenario: match opts.scenario {
            DemoScenario::Pce(s) => s,
            DemoScenario::Runtime => Scenario::Quiet,
        },
        syslog: Some(SyslogExport {
            to: syslog,
            mode: SyslogMode::Tcp,
            // Audit events only: flow summaries too would double the flows flooding the
            // live stream (the REST path reads them already), and push alerts off it.
            flow_summaries: false,
        }),
        ..SimConfig::default()
    };
    let (key, secret) = (sim_cfg.api_key.clone(), sim_cfg.api_secret.clone());
    let addr = "127.0.0.1:0"
        .parse()
        .map_err(|e| DemoError::Start(format!("{e}")))?;
    let sim = PceSim::start(sim_cfg, clock.clone(), addr)
        .await
        .map_err(|e| DemoError::Start(format!("the PCE simulator: {e}")))?;
    let secrets = out.join("secrets");
    write(&secrets.join("pce-api-key"), &key)?;
    write(&secrets.join("pce-api-secret"), &secret)?;
    let pipelines = out.join("pipelines");
    let state = out.join("state");
    let settings = format!(
        "# Written by `vigil demo`: the simulated PCE and the loopback mail server of this run.\n\
         kind: settings\n\
         state_dir: {state}\n\
         public_url: http://{listen}\n\
         web:\n  listen: {listen}\n\
         connections:\n  pce:\n    pce:\n      url: {url}\n      # The simulator serves plain HTTP on loopback.\n      insecure_http: true\n      org: 1\n      api_key_file: {key}\n      api_secret_file: {secret}\n\
         \x20 smtp:\n    relay:\n      host: 127.0.0.1\n      port: {smtp}\n      tls: none\n      from: vigil-demo@localhost\n",
        state = state.display(),
        listen = opts.listen,
        url = sim.url(),
        key = secrets.join("pce-api-key").display(),
        secret = secrets.join("pce-api-secret").display(),
        smtp = mail.addr.port(),
    );
    write(&pipelines.join("settings.yaml"), &settings)?;
    for (name, text) in SHIPPED_PIPELINES {
        write(&pipelines.join(name), &for_the_terminal(text))?;
    }
    write(
        &pipelines.join("pce-syslog.yaml"),
        &for_the_terminal(&SYSLOG_PIPELINE.replacen(
            SYSLOG_ADDRESS,
            &format!("    address: {syslog}"),
            1,
        )),
    )?;
    // The runtime scenario's pack reads the demo's export file; another scenario runs
    // without it (a pack left by an earlier run in `out` is taken away).
    let pack = pipelines.join("tetragon");
    let tetragon = match opts.scenario {
        DemoScenario::Runtime => {
            let file = std::path::absolute(out.join("tetragon").join("tetragon.log")).map_err(
                |source| DemoError::Io {
                    path: out.join("tetragon"),
                    source,
                },
            )?;
            for (name, text) in TETRAGON_PIPELINES {
                // The export file is the demo's own: read it from its first line.
                let text = text
                    .replace(TETRAGON_PATH, &file.display().to_string())
                    .replace(TETRAGON_START, "start_at: beginning");
                write(&pack.join(name), &for_the_terminal(&text))?;
            }
            let export = tetragon::start(file, clock.clone(), opts.tetragon_events.as_deref())
                .map_err(|e| DemoError::Start(format!("the Tetragon export: {e}")))?;
            Some(export)
        }
        DemoScenario::Pce(_) => {
            if pack.exists() {
                std::fs::remove_dir_all(&pack).map_err(|source| DemoError::Io {
                    path: pack.clone(),
                    source,
                })?;
            }
            None
        }
    };
    Ok(Demo {
        pipelines,
        clock,
        sim,
        mail,
        mail_dir,
        syslog,
        tetragon,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo's syslog pipeline listens where the simulator sends (the example's address
    /// line is the one replaced).
    #[test]
    fn the_syslog_example_listens_where_the_demo_points_it() {
        assert_eq!(SYSLOG_PIPELINE.matches(SYSLOG_ADDRESS).count(), 1);
        assert_eq!(SYSLOG_PIPELINE.matches("type: stdout").count(), 1);
    }

    /// Every `stdout` sink of the shipped pipelines prints summaries in the demo (that
    /// they load is shown by running the demo: tests/demo.rs).
    #[test]
    fn the_demo_prints_one_line_per_alert() {
        for (name, text) in SHIPPED_PIPELINES {
            let sinks = text.matches("type: stdout").count();
            let demo = for_the_terminal(text);
            assert_eq!(
                demo.matches("encoding: summary").count(),
                sinks,
                "{name}: a stdout sink not declared as `{STDOUT_SINK:?}`"
            );
        }
    }

    /// The runtime scenario's pack is the repository's, whole, and reads the export
    /// file the demo writes.
    #[test]
    fn the_demo_carries_the_tetragon_pack() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/tetragon");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = TETRAGON_PIPELINES.iter().map(|(n, _)| *n).collect();
        assert_eq!(on_disk, embedded);
        for (name, text) in TETRAGON_PIPELINES {
            assert_eq!(text.matches(TETRAGON_PATH).count(), 1, "{name}");
            assert_eq!(text.matches(TETRAGON_START).count(), 1, "{name}");
            assert_eq!(
                text.matches(STDOUT_SINK).count(),
                1,
                "{name}: its stdout sink prints summaries in the demo"
            );
        }
        assert_eq!("runtime".parse::<DemoScenario>(), Ok(DemoScenario::Runtime));
        assert_eq!(
            "port-scan".parse::<DemoScenario>(),
            Ok(DemoScenario::Pce(Scenario::PortScan))
        );
        assert!("nope".parse::<DemoScenario>().is_err());
    }

    /// Every shipped pipeline is compiled into the demo.
    #[test]
    fn the_demo_carries_every_shipped_pipeline() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml") && n != "settings.yaml")
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = SHIPPED_PIPELINES.iter().map(|(n, _)| *n).collect();
        assert_eq!(on_disk, embedded);
    }
}
