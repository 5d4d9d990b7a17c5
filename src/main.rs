//! The `vigil` command.
//!
//! Exit codes:
//! - 0: success (`validate`: no errors; warnings allowed unless `--deny-warnings`).
//! - 1: the configuration is invalid, or a node of a run failed.
//! - 2: usage or I/O error (bad flags, a path that cannot be read).
//! - 130: a second Ctrl-C/SIGTERM cut a draining shutdown short.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use vigil::config::diagnostic::{self, Format};
use vigil::config::{Env, LoadError, LoadOptions, Loaded, load_paths};
use vigil::graph::Graph;
use vigil::pce::sim::{PceSim, Scenario, SimConfig};
use vigil::runtime::{self, WallClock};

/// Events are allocated on a source's thread and freed on a sink's: glibc's allocator
/// spends much of its time on locks and trimming in that pattern, mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    about = "Security telemetry in, alerts people act on out."
)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check pipeline files: every problem, with file:line:col, in one run.
    Validate {
        /// Files or directories (default: `pipelines/`).
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Fail (exit 1) on warnings too.
        #[arg(long)]
        deny_warnings: bool,
        /// Check `${VAR}` syntax without requiring the variables to be set.
        #[arg(long)]
        no_env: bool,
    },
    /// Run the pipelines' test cases on a virtual clock; exit 1 if any fails.
    Test {
        /// Files or directories (default: `pipelines/`). `*.test.yaml` files beside the
        /// pipeline files (or under the directories) are read too.
        paths: Vec<PathBuf>,
    },
    /// Run the pipelines until interrupted (or until every source has ended). Saving a
    /// pipeline file (or SIGHUP) reloads them: unchanged pipelines keep running with
    /// their state.
    Run {
        /// The directory (or file) of pipeline files.
        #[arg(long, short, default_value = "pipelines")]
        pipelines: PathBuf,
        /// Do not reload when the files change (SIGHUP still reloads).
        #[arg(long)]
        no_watch: bool,
    },
    /// The whole product on this machine: the PCE simulator playing an attack on
    /// compressed time, the shipped pipelines against it, the API, and every alert mail
    /// written to `OUT/mail/*.eml` by a loopback SMTP server. Ctrl-C stops it.
    Demo {
        /// Where the demo's pipelines, state and mails go.
        #[arg(long, default_value = "demo-out")]
        out: PathBuf,
        /// quiet, port-scan, brute-force, exfiltration, ven-tampering or degraded-pce.
        #[arg(long, default_value = "ven-tampering")]
        scenario: Scenario,
        /// How many times faster than real time the demo runs (60: an hour a minute).
        #[arg(long, default_value_t = 60.0)]
        time_scale: f64,
        /// The API's address.
        #[arg(long, default_value = "127.0.0.1:5001")]
        listen: String,
    },
    /// Draw the pipeline graph.
    Graph {
        /// The directory (or file) of pipeline files.
        #[arg(long, short, default_value = "pipelines")]
        pipelines: PathBuf,
        /// DOT (Graphviz) or Mermaid.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Send a sample alert through a mail, line or webhook sink now and report the peer's
    /// answer (exit 1 if it refused).
    SendTest {
        /// The sink: `pipeline.sink`, or a sink name unique across pipelines.
        sink: String,
        /// The directory (or file) of pipeline files.
        #[arg(long, short, default_value = "pipelines")]
        pipelines: PathBuf,
        /// Print what would be sent instead of sending it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Inspect the delivery outbox: dead letters, and what is waiting to be sent.
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
        /// The directory (or file) of pipeline files (its settings name the state_dir).
        #[arg(long, short, default_value = "pipelines", global = true)]
        pipelines: PathBuf,
        /// The state directory, instead of the one the pipelines' settings name.
        #[arg(long, global = true)]
        state_dir: Option<PathBuf>,
    },
    /// Silences: alerts they match are not sent while they last (the running vigil reads
    /// them from its state database).
    Silence {
        #[command(subcommand)]
        action: SilenceAction,
        /// The directory (or file) of pipeline files (its settings name the state_dir).
        #[arg(long, short, default_value = "pipelines", global = true)]
        pipelines: PathBuf,
        /// The state directory, instead of the one the pipelines' settings name.
        #[arg(long, global = true)]
        state_dir: Option<PathBuf>,
    },
    /// Print the JSON Schema of pipeline files.
    Schema,
    /// Serve a simulated Illumio PCE until interrupted; prints its URL as the first line.
    PceSim {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// quiet, port-scan, brute-force, exfiltration, ven-tampering or degraded-pce.
        #[arg(long, default_value = "quiet")]
        scenario: Scenario,
        /// Seed of the estate, events and flows.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The org id served.
        #[arg(long, default_value_t = 1)]
        org: u64,
        /// How many times faster than real time scenario time runs (60: an hour a minute).
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// Background flows first detected per minute. A 12-minute slice holds about 14
        /// minutes' worth (flows still going from before come back): 14250 gives about
        /// 200,000 rows. Above the default, unmanaged sources also come from a pool of
        /// 65,534 client addresses.
        #[arg(long, default_value_t = 20)]
        flows_per_minute: u32,
        /// API key id clients must use.
        #[arg(long, env = "VIGIL_SIM_API_KEY", default_value = "api_sim")]
        api_key: String,
        /// API key secret clients must use.
        #[arg(
            long,
            env = "VIGIL_SIM_API_SECRET",
            default_value = "sim-secret",
            hide_env_values = true
        )]
        api_secret: String,
    },
}

#[derive(Debug, Subcommand)]
enum OutboxAction {
    /// List dead letters (or, with --state, other messages), newest first.
    List {
        /// Which messages: dead (default), pending, gathering, sent, or all.
        #[arg(long, value_enum, default_value_t = OutboxFilter::Dead)]
        state: OutboxFilter,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Text (default) or JSON with the alerts in full.
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Send a dead letter again (a running vigil picks it up within seconds).
    Retry {
        /// The message id, or a unique prefix of it.
        id: String,
    },
    /// Delete a dead letter; its alerts are not sent again if raised again.
    Drop {
        /// The message id, or a unique prefix of it.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum SilenceAction {
    /// Silence alerts matching every `FIELD=VALUE` (or `FIELD~REGEX`) for a while.
    Add {
        /// Matchers on the alert's fields: `group.src.ip=10.0.0.1`, `stage=burst`,
        /// `severity~high|critical`.
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long: `2h`, `30m`.
        #[arg(long, default_value = "2h")]
        duration: String,
        /// Why (shown in the list and the dashboard).
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List the silences (active and ended).
    List,
    /// End a silence now.
    Expire {
        /// The silence's id.
        id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutboxFilter {
    Dead,
    Pending,
    Gathering,
    Sent,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ListFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(cli.log_format);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("VIGIL_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate {
            paths,
            format,
            deny_warnings,
            no_env,
        } => validate(paths, format, deny_warnings, no_env),
        Command::Run {
            pipelines,
            no_watch,
        } => run(pipelines, !no_watch),
        Command::Test { paths } => test(paths),
        Command::Graph { pipelines, format } => graph(pipelines, format),
        Command::Demo {
            out,
            scenario,
            time_scale,
            listen,
        } => demo(vigil::demo::DemoOptions {
            out,
            scenario,
            time_scale,
            listen,
        }),
        Command::PceSim {
            listen,
            scenario,
            seed,
            org,
            time_scale,
            flows_per_minute,
            api_key,
            api_secret,
        } => pce_sim(
            listen,
            SimConfig {
                scenario,
                seed,
                org,
                api_key,
                api_secret,
                time_scale,
                flows_per_minute,
                ..SimConfig::default()
            },
        ),
        Command::SendTest {
            sink,
            pipelines,
            dry_run,
        } => send_test(pipelines, &sink, dry_run),
        Command::Outbox {
            action,
            pipelines,
            state_dir,
        } => outbox(action, pipelines, state_dir),
        Command::Silence {
            action,
            pipelines,
            state_dir,
        } => silence(action, pipelines, state_dir),
        Command::Schema => {
            print(&vigil::config::schema::document_schema_text())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .context("writing to standard output")?;
    out.flush().context("writing to standard output")?;
    Ok(())
}

fn validate(
    paths: Vec<PathBuf>,
    format: Format,
    deny_warnings: bool,
    no_env: bool,
) -> anyhow::Result<ExitCode> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from("pipelines")]
    } else {
        paths
    };
    let opts = LoadOptions {
        env: if no_env { Env::NoEnv } else { Env::Process },
    };
    let loaded = load_paths(&paths, &opts)?;
    print(&diagnostic::render(&loaded.diagnostics, format))?;
    let warnings = loaded.diagnostics.iter().any(|d| !d.is_error());
    Ok(if loaded.has_errors() || (deny_warnings && warnings) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn test(paths: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from("pipelines")]
    } else {
        paths
    };
    let report = vigil::testing::run_paths(&paths, Env::Process)?;
    if !report.diagnostics.is_empty() {
        print(&diagnostic::render(&report.diagnostics, Format::Text))?;
    }
    if report.diagnostics.iter().any(|d| d.is_error()) {
        let _ = writeln!(
            std::io::stderr(),
            "vigil: no tests ran: fix the errors above"
        );
        return Ok(ExitCode::from(1));
    }
    print(&report.text)?;
    Ok(if report.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Loads a configuration for `run`/`graph`: problems go to standard error.
fn load_for_use(path: PathBuf) -> Result<Loaded, LoadError> {
    let loaded = load_paths(&[path], &LoadOptions::default())?;
    if !loaded.diagnostics.is_empty() {
        let mut err = std::io::stderr().lock();
        for d in &loaded.diagnostics {
            let _ = writeln!(err, "{}", d.to_text());
        }
    }
    Ok(loaded)
}

fn graph(path: PathBuf, format: GraphFormat) -> anyhow::Result<ExitCode> {
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

/// How long the pipelines directory must be quiet after a change before it is reloaded.
const WATCH_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(300);

fn run(path: PathBuf, watch: bool) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = run_on(&rt, path, watch, Arc::new(WallClock));
    // Every node is done. A read of standard input still blocked in the runtime's thread
    // pool (a `stdin` source whose input stays open) must not keep the process alive.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    outcome
}

/// `vigil run` on `rt` with `clock` (the wall clock, or `vigil demo`'s compressed time).
fn run_on(
    rt: &tokio::runtime::Runtime,
    path: PathBuf,
    watch: bool,
    clock: runtime::SharedClock,
) -> anyhow::Result<ExitCode> {
    // Watch before loading, so no change made in between is missed.
    let watcher = if watch {
        let dir = if path.is_dir() {
            path.clone()
        } else {
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf)
        };
        let _guard = rt.enter();
        match runtime::PipelineWatcher::start(&dir, WATCH_DEBOUNCE) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("{e}; changes to the files are not picked up (SIGHUP reloads)");
                None
            }
        }
    } else {
        None
    };
    let loaded = load_for_use(path.clone())?;
    let Some(config) = loaded.config else {
        let _ = writeln!(
            std::io::stderr(),
            "vigil: not starting: fix the errors above (`vigil validate` lists them)"
        );
        return Ok(ExitCode::from(1));
    };
    rt.block_on(async move {
        let (_watcher, changes) = match watcher {
            Some((w, rx)) => (Some(w), Some(rx)),
            None => (None, None),
        };
        // Listen for SIGHUP before anything can send it (its default action ends the
        // process).
        #[cfg(unix)]
        let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by editing the files");
                None
            }
        };
        #[cfg(not(unix))]
        let hup = None::<()>;
        let topology = runtime::start(&config, clock.clone())?;
        tracing::info!(
            pipelines = config.pipelines.len(),
            nodes = topology.counters().len(),
            "vigil running"
        );
        let token = topology.shutdown_token();
        let driver = runtime::ReloadDriver::new(path.clone(), topology.reloader(), clock.clone());
        // The API and /metrics; a busy port is not fatal (the pipelines matter more).
        let _web = if config.settings.web.enabled {
            match vigil::web::serve(
                &config.settings.web,
                topology.reloader(),
                driver.clone(),
                token.clone(),
            )
            .await
            {
                Ok(server) => Some(server),
                Err(e) => {
                    tracing::warn!("{e}; running without the web API");
                    None
                }
            }
        } else {
            None
        };
        let reloads = tokio::spawn(reload_triggers(driver, hup, changes, token.clone()));
        let signals = tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!(
                "shutting down: draining in-flight events (signal again to stop at once)"
            );
            token.cancel();
            wait_for_signal().await;
            tracing::warn!("second signal: stopping without draining");
            std::process::exit(130);
        });
        let report = topology.wait().await;
        signals.abort();
        reloads.abort();
        for n in &report.nodes {
            tracing::info!(
                node = %n.id,
                role = n.role,
                events_in = n.events_in,
                events_out = n.events_out,
                errors = n.errors,
                "node summary"
            );
        }
        Ok(if report.failed() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

fn demo(opts: vigil::demo::DemoOptions) -> anyhow::Result<ExitCode> {
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

fn send_test(path: PathBuf, sink: &str, dry_run: bool) -> anyhow::Result<ExitCode> {
    let loaded = load_for_use(path)?;
    let Some(config) = loaded.config else {
        return Ok(ExitCode::from(1));
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = rt.block_on(async {
        let send = vigil::sinks::delivery::send_test::send_test(
            &config,
            sink,
            dry_run,
            Arc::new(WallClock),
        );
        match tokio::time::timeout(std::time::Duration::from_secs(60), send).await {
            Ok(r) => r,
            Err(_) => Err("no answer within 60s".to_string()),
        }
    });
    let t = match outcome {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "vigil: send-test: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut out = String::new();
    if !t.recipients.is_empty() {
        out.push_str(&format!("recipients: {}\n", t.recipients.join(", ")));
    }
    if dry_run {
        for (part, text) in &t.preview {
            out.push_str(&format!("----- {part} -----\n{text}\n"));
        }
    }
    let code = match &t.result {
        None => {
            out.push_str(&format!(
                "{} ({}): rendered, not sent (--dry-run)\n",
                t.sink, t.kind
            ));
            ExitCode::SUCCESS
        }
        Some(Ok(answer)) => {
            out.push_str(&format!(
                "{} ({}): delivered: {}\n",
                t.sink, t.kind, answer.0
            ));
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            let kind = match e {
                vigil::sinks::delivery::SendError::Transient { .. } => {
                    "failed (transient, would be retried)"
                }
                vigil::sinks::delivery::SendError::Permanent { .. } => "refused (permanent)",
            };
            out.push_str(&format!("{} ({}): {kind}: {e}\n", t.sink, t.kind));
            ExitCode::from(1)
        }
    };
    print(&out)?;
    Ok(code)
}

/// The state database named by the pipelines' settings (or `state_dir`); `None` after
/// reporting why it cannot be found.
fn open_store(
    pipelines: PathBuf,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<Option<vigil::store::Store>> {
    let state_dir = match state_dir {
        Some(d) => d,
        None => {
            let loaded = load_for_use(pipelines)?;
            let Some(config) = loaded.config else {
                let _ = writeln!(
                    std::io::stderr(),
                    "vigil: cannot read the settings to find state_dir: fix the errors above or pass --state-dir"
                );
                return Ok(None);
            };
            config.settings.state_dir
        }
    };
    Ok(Some(vigil::store::Store::open(&state_dir)?))
}

fn silence(
    action: SilenceAction,
    pipelines: PathBuf,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let Some(store) = open_store(pipelines, state_dir)? else {
        return Ok(ExitCode::from(1));
    };
    let now = chrono::Utc::now();
    match action {
        SilenceAction::Add {
            matchers,
            duration,
            comment,
        } => {
            let mut parsed = Vec::new();
            for m in &matchers {
                let (field, value, regex) = match (m.split_once('='), m.split_once('~')) {
                    (Some((f, v)), _) if !f.contains('~') => (f, v, false),
                    (_, Some((f, v))) => (f, v, true),
                    _ => {
                        let _ = writeln!(
                            std::io::stderr(),
                            "vigil: `{m}` is not FIELD=VALUE or FIELD~REGEX"
                        );
                        return Ok(ExitCode::from(2));
                    }
                };
                let matcher = vigil::store::Matcher {
                    field: field.trim().to_string(),
                    value: value.trim().to_string(),
                    regex,
                };
                if let Err(e) = matcher.check() {
                    let _ = writeln!(std::io::stderr(), "vigil: {e}");
                    return Ok(ExitCode::from(2));
                }
                parsed.push(matcher);
            }
            let length = humantime::parse_duration(&duration)
                .with_context(|| format!("--duration `{duration}` (write e.g. `2h`)"))?;
            let silence = vigil::store::Silence {
                id: uuid::Uuid::new_v4().to_string(),
                created_at: now.timestamp_millis(),
                expires_at: (now + chrono::Duration::from_std(length)?).timestamp_millis(),
                matchers: parsed,
                comment,
                created_by: std::env::var("USER").unwrap_or_else(|_| "cli".into()),
            };
            store.add_silence(&silence)?;
            print(&format!("{}\n", silence.id))?;
            Ok(ExitCode::SUCCESS)
        }
        SilenceAction::List => {
            let mut out = String::new();
            for s in store.silences()? {
                let active =
                    s.created_at <= now.timestamp_millis() && s.expires_at > now.timestamp_millis();
                let until = chrono::DateTime::from_timestamp_millis(s.expires_at)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                let matchers: Vec<String> = s
                    .matchers
                    .iter()
                    .map(|m| format!("{}{}{}", m.field, if m.regex { "~" } else { "=" }, m.value))
                    .collect();
                out.push_str(&format!(
                    "{}  {}  until {until}  {}  by {}{}\n",
                    s.id,
                    if active { "active" } else { "ended " },
                    matchers.join(" "),
                    s.created_by,
                    if s.comment.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", s.comment)
                    }
                ));
            }
            print(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        SilenceAction::Expire { id } => {
            if store.expire_silence(&id, now.timestamp_millis())? {
                print(&format!("{id}: ended\n"))?;
                Ok(ExitCode::SUCCESS)
            } else {
                let _ = writeln!(std::io::stderr(), "vigil: no active silence `{id}`");
                Ok(ExitCode::from(1))
            }
        }
    }
}

fn outbox(
    action: OutboxAction,
    pipelines: PathBuf,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use vigil::store::OutboxState;
    let Some(store) = open_store(pipelines, state_dir)? else {
        return Ok(ExitCode::from(1));
    };
    let now = chrono::Utc::now().timestamp_millis();
    match action {
        OutboxAction::List {
            state,
            limit,
            format,
        } => {
            let filter = match state {
                OutboxFilter::Dead => Some(OutboxState::Dead),
                OutboxFilter::Pending => Some(OutboxState::Pending),
                OutboxFilter::Gathering => Some(OutboxState::Gathering),
                OutboxFilter::Sent => Some(OutboxState::Sent),
                OutboxFilter::All => None,
            };
            let entries = store.outbox(filter, limit)?;
            if format == ListFormat::Json {
                print(&format!("{}\n", serde_json::to_string_pretty(&entries)?))?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut out = String::new();
            for e in &entries {
                let when = chrono::DateTime::from_timestamp_millis(e.created_at)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "{}  {}  {}  {} alert(s)  {} attempt(s)  stored {when}\n",
                    e.id,
                    e.state.as_str(),
                    e.sink,
                    e.alerts.len(),
                    e.attempts
                ));
                for a in &e.alerts {
                    out.push_str(&format!("    [{}] {}\n", a.severity, a.title));
                }
                if let Some(err) = &e.last_error {
                    out.push_str(&format!("    reason: {err}\n"));
                }
                if let Some(answer) = &e.answer {
                    out.push_str(&format!("    answer: {answer}\n"));
                }
            }
            out.push_str(&format!("{} message(s)\n", entries.len()));
            print(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        OutboxAction::Retry { ref id } | OutboxAction::Drop { ref id } => {
            let retry = matches!(action, OutboxAction::Retry { .. });
            let done = match store.outbox_entry(id)? {
                Some(e) if retry => store.retry_dead(&e.id, now)?.then_some(format!(
                    "{}: pending again; a running vigil sends it within seconds, or the next start does\n",
                    e.id
                )),
                Some(e) => store
                    .drop_dead(&e.id)?
                    .then_some(format!("{}: dropped\n", e.id)),
                None => None,
            };
            match done {
                Some(message) => {
                    print(&message)?;
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    let _ = writeln!(
                        std::io::stderr(),
                        "vigil: no dead letter `{id}` (`vigil outbox list` shows them)"
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

fn pce_sim(listen: SocketAddr, cfg: SimConfig) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let scenario = cfg.scenario;
        let sim = PceSim::start(cfg, Arc::new(WallClock), listen).await?;
        print(&format!("{}\n", sim.url()))?;
        tracing::info!(url = %sim.url(), %scenario, "PCE simulator running (Ctrl-C stops it)");
        wait_for_signal().await;
        tracing::info!("stopping the PCE simulator");
        sim.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Reloads the pipelines on SIGHUP and when their files change, until `shutdown`.
async fn reload_triggers(
    driver: runtime::ReloadDriver,
    #[cfg(unix)] mut hup: Option<tokio::signal::unix::Signal>,
    #[cfg(not(unix))] _hup: Option<()>,
    mut changes: Option<tokio::sync::mpsc::Receiver<runtime::ChangeBatch>>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let change = async {
            match changes.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(unix)]
        let hup_signal = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup_signal = std::future::pending::<()>();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup_signal => {
                driver.reload("SIGHUP").await;
            }
            batch = change => match batch {
                Some(batch) => {
                    let files: Vec<String> =
                        batch.paths.iter().map(|p| p.display().to_string()).collect();
                    driver.reload(&format!("changed: {}", files.join(", "))).await;
                }
                None => changes = None,
            },
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
