//! The `vigil` command line: the arguments, and one file per command.

mod ban;
mod check;
#[cfg(feature = "demo")]
mod demo;
mod docs;
mod graph;
mod outbox;
#[cfg(feature = "demo")]
mod pce_sim;
mod replay;
mod run;
mod send_test;
mod silence;
mod systemd;
mod test;
mod validate;

use std::io::Write as _;
#[cfg(feature = "demo")]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use vigil::config::diagnostic::Format;
use vigil::config::{LoadError, LoadOptions, Loaded, load_paths};
#[cfg(feature = "demo")]
use vigil::pce::sim::{Scenario, SimConfig};

use self::{
    ban::ban, check::check, graph::graph, outbox::outbox, replay::replay, run::run,
    send_test::send_test, silence::silence, test::test, validate::validate,
};
#[cfg(feature = "demo")]
use self::{demo::demo, pce_sim::pce_sim};

/// How `vigil replay` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReplayFormat {
    /// Tables for people.
    Table,
    /// One JSON object.
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    // The package's version and the commit it was built from (build.rs).
    version = env!("VIGIL_VERSION"),
    about = "Security telemetry in, alerts people act on out."
)]
pub(crate) struct Cli {
    /// Log format on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// `validate`, then the environment: secret files readable, each PCE accepting its
    /// API key, SMTP/LINE/webhook endpoints answering, state_dir writable. One line per
    /// check; exit 1 if any fails. Sends nothing and leaves a running vigil alone.
    Check {
        /// The directory (or file) of pipeline files.
        #[arg(long, short, default_value = "pipelines")]
        pipelines: PathBuf,
        /// How long each check may take (`5s`, `500ms`).
        #[arg(long, default_value = "5s", value_parser = parse_timeout)]
        timeout: std::time::Duration,
    },
    /// Run the pipelines' test cases on a virtual clock; exit 1 if any fails.
    Test {
        /// Files or directories (default: `pipelines/`). `*.test.yaml` files beside the
        /// pipeline files (or under the directories) are read too.
        paths: Vec<PathBuf>,
        /// Output format: text, github (annotations), json or junit (XML for CI reports).
        #[arg(long, value_enum, default_value_t = vigil::testing::Format::Text)]
        format: vigil::testing::Format,
        /// Run only the cases whose name contains NAME (case-sensitive); exit 1 when none
        /// does.
        #[arg(long, value_name = "NAME")]
        run: Option<String>,
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
    /// Run the pipelines over captured records on a virtual clock, delivering nothing:
    /// what each would have alerted, the events per node, and (with --out) what its
    /// delivering sinks would have sent. The state directory is neither read nor
    /// written.
    Replay {
        /// The directory (or file) of pipeline files.
        #[arg(long, short, default_value = "pipelines")]
        pipelines: PathBuf,
        /// A file of records: JSON lines, or one JSON array as the PCE's API answers.
        /// `KIND=FILE` feeds the sources of a kind (`pce_traffic`), `PIPELINE.SOURCE=FILE`
        /// one source; a bare FILE of PCE flows or PCE events feeds the sources of that
        /// kind. Repeat for several files: their records are merged by time.
        #[arg(
            long = "file",
            value_name = "[TARGET=]FILE",
            required_unless_present = "pce",
            conflicts_with = "pce"
        )]
        files: Vec<vigil::testing::replay::Input>,
        /// Read a time range from this PCE connection instead of files: its traffic slice
        /// by slice and its audit events, through the real client, as the sources read
        /// them (needs --from and --to).
        #[arg(long, value_name = "CONNECTION", requires_all = ["from", "to"])]
        pce: Option<String>,
        /// The start of the PCE range: RFC 3339 (`2026-03-02T09:00:00Z`), a date
        /// (`2026-03-02`, midnight UTC), or a length back from now (`24h`, `7d`).
        #[arg(long, value_name = "TIME", value_parser = parse_when, requires = "pce")]
        from: Option<vigil::event::Timestamp>,
        /// The end of the PCE range (exclusive): as --from, or `now`.
        #[arg(long, value_name = "TIME", value_parser = parse_when, requires = "pce")]
        to: Option<vigil::event::Timestamp>,
        /// Output: a table, or JSON.
        #[arg(long, value_enum, default_value_t = ReplayFormat::Table)]
        format: ReplayFormat,
        /// Write what delivering sinks would have sent under DIR/PIPELINE/SINK/: mails
        /// as .eml, other messages' bodies as JSON. DIR must be empty or missing.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The whole product on this machine: the PCE simulator playing an attack on
    /// compressed time, the shipped pipelines against it, the API, and every alert mail
    /// written to `OUT/mail/*.eml` by a loopback SMTP server. Ctrl-C stops it.
    #[cfg(feature = "demo")]
    Demo {
        /// Where the demo's pipelines, state and mails go.
        #[arg(long, default_value = "demo-out")]
        out: PathBuf,
        /// quiet, port-scan, brute-force, exfiltration, ven-tampering or degraded-pce
        /// (the simulated PCE's), or runtime (Tetragon's events through the `tetragon`
        /// starter pack, a quiet PCE beside).
        #[arg(long, default_value = "ven-tampering")]
        scenario: vigil::demo::DemoScenario,
        /// With `--scenario runtime`: a file of Tetragon's events (JSON lines, e.g. its
        /// export file) written into the demo's export file in turn, stamped with the
        /// current time, instead of the built-in intrusion.
        #[arg(long, value_name = "FILE")]
        tetragon_events: Option<PathBuf>,
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
    /// Bans made with nftables by the running vigil's `nftables_ban` sinks: list them, ban
    /// an address by hand, lift a ban. Talks to the running vigil's API (`web.listen` and
    /// `web.token` of the settings, or --url and --token-file).
    Ban {
        #[command(subcommand)]
        action: BanAction,
        /// The directory (or file) of pipeline files (its settings name the API's address
        /// and token).
        #[arg(long, short, default_value = "pipelines", global = true)]
        pipelines: PathBuf,
        /// The API's address, instead of the settings' `web.listen`
        /// (`http://127.0.0.1:5001`).
        #[arg(long, env = "VIGIL_URL", global = true)]
        url: Option<String>,
        /// A file holding the API's token, instead of the settings' (or `VIGIL_TOKEN`).
        #[arg(long, env = "VIGIL_TOKEN_FILE", global = true)]
        token_file: Option<PathBuf>,
    },
    /// Print the JSON Schema of pipeline files.
    Schema,
    /// Print the shell completion script for SHELL (e.g. `vigil completions bash >
    /// /etc/bash_completion.d/vigil`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page vigil(1), or write it and one page per command into a
    /// directory.
    Man {
        /// Write `vigil.1` and `vigil-COMMAND.1` pages into this directory instead of
        /// printing `vigil.1`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Serve a simulated Illumio PCE until interrupted; prints its URL as the first line.
    #[cfg(feature = "demo")]
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
        /// Serve traffic downloads gzip-compressed (with `Content-Encoding: gzip`), as
        /// real PCEs may.
        #[arg(long)]
        gzip_downloads: bool,
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
        /// Also send the events and flows, as they happen, to this syslog receiver
        /// (`host:port`), as a PCE's syslog export does: RFC 5424, flow summaries from
        /// `illumio_pce/collector`, a `sequenceId` per node.
        #[arg(long, value_name = "ADDR")]
        syslog_to: Option<SocketAddr>,
        /// How `--syslog-to` sends: `tcp` (octet-counted frames, RFC 6587) or `udp`.
        #[arg(long, default_value = "tcp", requires = "syslog_to")]
        syslog_mode: vigil::pce::sim::SyslogMode,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum OutboxAction {
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
pub(crate) enum SilenceAction {
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

#[derive(Debug, Subcommand)]
pub(crate) enum BanAction {
    /// The active bans, soonest to end first (with --all, the ended ones too).
    List {
        /// Also the bans that ended (expired, removed, extended).
        #[arg(long)]
        all: bool,
        /// Text (default) or JSON.
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Ban IP now through the running `nftables_ban` sink (its allow list, max_bans and
    /// dry_run apply). Exit 1 when it is refused.
    Add {
        /// The address (IPv4 or IPv6).
        ip: String,
        /// How long: `1h`, `30m` (default: the sink's ttl).
        #[arg(long)]
        ttl: Option<String>,
        /// The sink (`pipeline.sink`), when several run.
        #[arg(long)]
        sink: Option<String>,
    },
    /// Lift the ban of IP now. Exit 1 when it is not banned.
    Remove {
        /// The address.
        ip: String,
        /// The sink (`pipeline.sink`), when several run.
        #[arg(long)]
        sink: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutboxFilter {
    Dead,
    Pending,
    Gathering,
    Sending,
    Sent,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ListFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum GraphFormat {
    Dot,
    Mermaid,
}

pub(crate) fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
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
        Command::Test { paths, format, run } => test(paths, format, run.as_deref()),
        Command::Replay {
            pipelines,
            files,
            pce,
            from,
            to,
            format,
            out,
        } => {
            let range = match (pce, from, to) {
                (Some(connection), Some(from), Some(to)) => {
                    Some(vigil::testing::replay::PceRange {
                        connection,
                        from,
                        to,
                    })
                }
                _ => None,
            };
            replay(pipelines, files, range, format, out)
        }
        Command::Check { pipelines, timeout } => check(pipelines, timeout),
        Command::Graph { pipelines, format } => graph(pipelines, format),
        #[cfg(feature = "demo")]
        Command::Demo {
            out,
            scenario,
            tetragon_events,
            time_scale,
            listen,
        } => demo(vigil::demo::DemoOptions {
            out,
            scenario,
            tetragon_events,
            time_scale,
            listen,
        }),
        #[cfg(feature = "demo")]
        Command::PceSim {
            listen,
            scenario,
            seed,
            org,
            time_scale,
            flows_per_minute,
            gzip_downloads,
            api_key,
            api_secret,
            syslog_to,
            syslog_mode,
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
                faults: vigil::pce::sim::Faults {
                    gzip_downloads,
                    ..Default::default()
                },
                syslog: syslog_to.map(|to| vigil::pce::sim::SyslogExport {
                    to,
                    mode: syslog_mode,
                    flow_summaries: true,
                }),
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
        Command::Ban {
            action,
            pipelines,
            url,
            token_file,
        } => ban(action, pipelines, url, token_file),
        Command::Schema => {
            print(&vigil::config::schema::document_schema_text())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { out } => docs::man(out),
    }
}

/// `--timeout`: a positive length such as `5s`.
/// A moment on the command line: RFC 3339, a date (midnight UTC), `now`, or a length back
/// from now (`24h`).
fn parse_when(text: &str) -> Result<vigil::event::Timestamp, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(chrono::Utc::now());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    match vigil::time::parse_length(text) {
        Ok(back) => chrono::Duration::from_std(back)
            .ok()
            .and_then(|back| chrono::Utc::now().checked_sub_signed(back))
            .ok_or_else(|| format!("{text} back from now is before any date")),
        Err(_) => Err(format!(
            "`{text}` is not a time: write RFC 3339 (2026-03-02T09:00:00Z), a date (2026-03-02), `now`, or a length back from now (24h)"
        )),
    }
}

fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    match vigil::time::parse_length(text)? {
        d if d.is_zero() => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

pub(super) fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .context("writing to standard output")?;
    out.flush().context("writing to standard output")?;
    Ok(())
}

/// Loads a configuration for `run`/`graph`: problems go to standard error.
pub(super) fn load_for_use(path: PathBuf) -> Result<Loaded, LoadError> {
    let loaded = load_paths(&[path], &LoadOptions::default())?;
    if !loaded.diagnostics.is_empty() {
        let mut err = std::io::stderr().lock();
        for d in &loaded.diagnostics {
            let _ = writeln!(err, "{}", d.to_text());
        }
    }
    Ok(loaded)
}

/// The state database named by the pipelines' settings (or `state_dir`); `None` after
/// reporting why it cannot be found. Only the settings' `state_dir` is read: a `${VAR}`
/// elsewhere (an SMTP password) need not be set for this.
pub(super) fn open_store(
    pipelines: PathBuf,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<Option<vigil::store::Store>> {
    use vigil::config::state_dir::{StateDirError, find_state_dir};
    let state_dir = match state_dir {
        Some(d) => d,
        None => match find_state_dir(&[pipelines], &vigil::config::Env::Process) {
            Ok(d) => d,
            Err(StateDirError::Load(e)) => return Err(e.into()),
            Err(StateDirError::Invalid(diagnostics)) => {
                let mut err = std::io::stderr().lock();
                for d in &diagnostics {
                    let _ = writeln!(err, "{}", d.to_text());
                }
                let _ = writeln!(
                    err,
                    "vigil: cannot find state_dir: fix the errors above or pass --state-dir"
                );
                return Ok(None);
            }
        },
    };
    Ok(Some(vigil::store::Store::open(&state_dir)?))
}
