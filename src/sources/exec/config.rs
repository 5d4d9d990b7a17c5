//! The `exec` source's configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

use super::source::ExecSource;
use crate::diagnostic::Problems;
use crate::diagnostic::codes;
use crate::event::FieldPath;
use crate::node::{BuildContext, NodeError, Source};
use crate::sources::json_lines::LineFormat;
use crate::time::Duration;

/// Runs a command and reads JSON lines (one JSON object per line) from its standard
/// output — e.g. `tetra getevents -o json` with `decode: tetragon`.
///
/// The command is run directly, never through a shell, unless `shell` is given instead of
/// `command`. When it exits (or cannot be started), it is started again after
/// `restart_backoff`, doubled after each exit up to `max_restart_backoff` (a run that
/// lasted longer than `max_restart_backoff` starts the doubling over); every exit is
/// logged with its status and counted (`vigil_node_errors_total{reason="command_exited"}`).
/// Everything it printed before it exited is read first, so no line is lost across a
/// restart; what it prints to standard error is logged (at most 10 lines per 10 s, the
/// rest counted in the next line logged). A line that is not a JSON object is counted and
/// set aside with its line number under `<state_dir>/rejected/`. When vigil stops, the
/// command (and everything it started) gets SIGTERM, then SIGKILL after 5 s.
///
/// A command has no position vigil could save: what it prints while vigil is stopped is
/// not seen (`tetra getevents` streams from the moment it connects). To miss nothing
/// across a restart of vigil, read a file the producer writes instead (Tetragon's export
/// file with the `file` source).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct ExecSourceConfig {
    /// The program and its arguments, run as they are (no shell: no quoting, globbing or
    /// `$VAR` expansion). A program without a `/` is looked up in `PATH`; a relative path
    /// with one is relative to the pipeline file's directory.
    #[serde(default)]
    pub command: Vec<String>,
    /// Instead of `command`: a command line for `/bin/sh -c`, for when a pipe or a
    /// redirection is needed. Quote what comes from outside with care.
    #[serde(default)]
    pub shell: Option<String>,
    /// Variables set for the command, in addition to those of `inherit_env`. A value may
    /// come from vigil's environment with `${NAME}`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The variables of vigil's own environment the command gets (vigil's may hold
    /// secrets the command has no business with). Default: `PATH`, `HOME`, `LANG`,
    /// `LC_ALL`, `TZ`.
    #[serde(default = "default_inherit_env")]
    pub inherit_env: Vec<String>,
    /// The directory the command runs in; relative to the pipeline file's directory.
    /// Default: the pipeline file's directory.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// What the lines hold: `json` (each object an event as it is, the default) or
    /// `tetragon` (`tetra getevents -o json`: each event normalised to the fields of the
    /// `tetragon` catalogue, the line kept as the sample).
    #[serde(default)]
    pub decode: LineFormat,
    /// Start the command again when it exits: `always` (the default) or `never` (the
    /// source ends when the command does, and the pipeline finishes when all its sources
    /// have).
    #[serde(default)]
    pub restart: Restart,
    /// The wait before the first restart. Default: `1s`.
    #[serde(default = "default_restart_backoff")]
    pub restart_backoff: Duration,
    /// The longest wait between restarts. Default: `1m`.
    #[serde(default = "default_max_restart_backoff")]
    pub max_restart_backoff: Duration,
    /// The field that holds the event time (RFC 3339, or epoch seconds). Default: the first
    /// of `timestamp`, `time` and `@timestamp`; without one, the time the line was read.
    #[serde(default)]
    pub time_field: Option<String>,
    /// Lines longer than this many bytes are set aside instead of parsed. Default: 1048576.
    #[serde(default = "default_max_line_bytes")]
    #[schemars(range(min = 1))]
    pub max_line_bytes: usize,
}

/// Whether an `exec` source starts its command again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Whenever it exits, after the backoff.
    #[default]
    Always,
    /// Never: the source ends with the command.
    Never,
}

fn example() -> serde_json::Value {
    serde_json::json!({
        "command": ["tetra", "getevents", "-o", "json", "--event-types", "PROCESS_EXEC,PROCESS_KPROBE"],
        "decode": "tetragon"
    })
}

fn default_inherit_env() -> Vec<String> {
    ["PATH", "HOME", "LANG", "LC_ALL", "TZ"]
        .map(String::from)
        .to_vec()
}
fn default_restart_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_restart_backoff() -> Duration {
    Duration::from_secs(60)
}
fn default_max_line_bytes() -> usize {
    1024 * 1024
}

/// The shell `shell:` runs.
pub(super) const SHELL: &str = "/bin/sh";

/// Why the command cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program is not there.
    #[error(
        "the command `{program}` was not found{where_}: install it, or give its full path in `command`"
    )]
    NotFound {
        /// As configured.
        program: String,
        /// Where it was looked for.
        where_: String,
    },
    /// It is there but cannot be run.
    #[error("the command `{program}` ({path}) is not an executable file")]
    NotExecutable {
        /// As configured.
        program: String,
        /// Where it was found.
        path: String,
    },
    /// The directory it is to run in is not there.
    #[error("cannot run `{program}` in {dir}: no such directory (see `working_dir`)")]
    NoWorkingDir {
        /// As configured.
        program: String,
        /// The directory.
        dir: String,
    },
    /// Starting it failed otherwise.
    #[error("cannot start the command `{program}`: {source}")]
    Spawn {
        /// As configured.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// Reading its output failed.
    #[error("cannot read the output of `{program}`: {source}")]
    Read {
        /// As configured.
        program: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Finds `program` as the command would be run: a name without `/` in `path_var` (a
/// `PATH`), a relative path with one under `base_dir`.
pub(super) fn resolve(
    program: &str,
    base_dir: &Path,
    path_var: Option<&str>,
) -> Result<PathBuf, ExecError> {
    let runnable = |p: &Path| -> Option<Result<PathBuf, ExecError>> {
        let meta = std::fs::metadata(p).ok()?;
        Some(if meta.is_file() && is_executable(&meta) {
            Ok(p.to_path_buf())
        } else {
            Err(ExecError::NotExecutable {
                program: program.to_string(),
                path: p.display().to_string(),
            })
        })
    };
    if program.contains('/') {
        let path = base_dir.join(program);
        return runnable(&path).unwrap_or_else(|| {
            Err(ExecError::NotFound {
                program: program.to_string(),
                where_: format!(" at {}", path.display()),
            })
        });
    }
    let dirs = path_var.unwrap_or("");
    let mut not_executable = None;
    for dir in std::env::split_paths(dirs) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        match runnable(&dir.join(program)) {
            Some(Ok(p)) => return Ok(p),
            Some(Err(e)) => {
                not_executable.get_or_insert(e);
            }
            None => {}
        }
    }
    Err(not_executable.unwrap_or_else(|| ExecError::NotFound {
        program: program.to_string(),
        where_: if dirs.is_empty() {
            " (PATH is empty)".to_string()
        } else {
            format!(" in PATH ({dirs})")
        },
    }))
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    true
}

impl ExecSourceConfig {
    /// The program run: the first word of `command`, or the shell.
    pub(super) fn program(&self) -> &str {
        match &self.shell {
            Some(_) => SHELL,
            None => self.command.first().map_or("", String::as_str),
        }
    }

    /// The `PATH` the command is looked up in: its own `env`'s, else vigil's when
    /// inherited.
    pub(super) fn path_var(&self) -> Option<String> {
        self.env.get("PATH").cloned().or_else(|| {
            self.inherit_env
                .iter()
                .any(|n| n == "PATH")
                .then(|| std::env::var("PATH").ok())
                .flatten()
        })
    }

    /// Structural checks; a program not found here is a warning (the pipeline may be
    /// validated on another machine than the one it runs on).
    pub fn check(&self, problems: &mut Problems) {
        match (&self.shell, self.command.is_empty()) {
            (Some(_), false) => {
                problems.error(
                    "/shell",
                    codes::INVALID_VALUE,
                    "give either `command` (run as it is) or `shell` (run by /bin/sh -c), not both",
                );
                return;
            }
            (None, true) => {
                problems.error_at_key(
                    "/command",
                    codes::MISSING_KEY,
                    "`command` is missing: the program to run and its arguments, e.g. [tetra, getevents, -o, json]",
                );
                return;
            }
            (Some(s), true) if s.trim().is_empty() => {
                problems.error("/shell", codes::INVALID_VALUE, "the command line is empty");
                return;
            }
            _ => {}
        }
        if self.command.first().is_some_and(|p| p.is_empty()) {
            problems.error("/command/0", codes::INVALID_VALUE, "the program is empty");
            return;
        }
        problems.positive_duration("/restart_backoff", "restart_backoff", &self.restart_backoff);
        problems.positive_duration(
            "/max_restart_backoff",
            "max_restart_backoff",
            &self.max_restart_backoff,
        );
        if self.max_restart_backoff.get() < self.restart_backoff.get() {
            problems.error(
                "/max_restart_backoff",
                codes::INVALID_VALUE,
                "max_restart_backoff is shorter than restart_backoff",
            );
        }
        if let Some(f) = &self.time_field
            && let Err(e) = FieldPath::parse(f)
        {
            problems.error("/time_field", codes::INVALID_VALUE, e.to_string());
        }
        if let Err(e) = resolve(
            self.program(),
            &problems.base_dir,
            self.path_var().as_deref(),
        ) {
            let pointer = if self.shell.is_some() {
                "/shell"
            } else {
                "/command/0"
            };
            problems.warning(pointer, codes::COMMAND_NOT_FOUND, e.to_string());
        }
    }

    /// Builds the running source (`internal`: where Tetragon's
    /// `vigil.tetragon_dropping` alerts go).
    pub fn build(
        &self,
        cx: &BuildContext,
        internal: &crate::sources::internal::InternalAlerts,
    ) -> Result<Box<dyn Source>, NodeError> {
        let time_field = self
            .time_field
            .as_deref()
            .map(FieldPath::parse)
            .transpose()?;
        Ok(Box::new(ExecSource::new(
            self.clone(),
            time_field,
            cx,
            internal.clone(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_found_in_path_or_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let found = resolve("sh", dir.path(), Some("/nonexistent:/bin:/usr/bin")).unwrap();
        assert!(found.ends_with("sh"), "{}", found.display());

        let e = resolve("no-such-vigil-tool", dir.path(), Some("/bin:/usr/bin")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the command `no-such-vigil-tool` was not found in PATH (/bin:/usr/bin): install it, or give its full path in `command`"
        );

        let e = resolve("./feed.sh", dir.path(), None).unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "`./feed.sh` was not found at {}/./feed.sh",
                dir.path().display()
            )),
            "{e}"
        );
        std::fs::write(dir.path().join("feed.sh"), "#!/bin/sh\n").unwrap();
        let e = resolve("./feed.sh", dir.path(), None).unwrap_err();
        assert!(e.to_string().contains("is not an executable file"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(
                dir.path().join("feed.sh"),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
            assert!(resolve("./feed.sh", dir.path(), None).is_ok());
        }
    }
}
