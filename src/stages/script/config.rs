//! The `script` stage's configuration.

use schemars::JsonSchema;
use serde::Deserialize;

use super::sandbox::{DEFAULT_MAX_OPERATIONS, DEFAULT_TIMEOUT, Limits, Sandbox};
use super::stage::ScriptStage;
use crate::confine::confine;
use crate::diagnostic::Pos;
use crate::diagnostic::Problems;
use crate::diagnostic::{Diagnostic, codes};
use crate::event::Severity;
use crate::node::{BuildContext, NodeError, Stage};
use crate::time::Duration;

/// Runs a Rhai script (see `plugins/README.md`) on every event: to drop, rewrite or enrich
/// events, and to raise alerts with logic the other stages cannot express.
///
/// The script's body runs once per event with the record in the map `event` (`event.src.ip`;
/// a missing field reads as `()`). It may change `event`. Its value decides:
/// `false` drops the event; anything else (`true`, `()`, ...) hands the event on — with the
/// record replaced by `event` if the script changed it (an alert stays an alert while
/// `event` still reads as one). The event time does not change.
///
/// Functions besides Rhai's standard ones:
///
/// - `alert(#{ title, severity, group, value, threshold, summary, unit, fields,
///   window_start })` raises an alert, handed on after the event. Every key is optional:
///   `title` defaults to `alert.title`, `severity` (`info` ... `critical`) to
///   `alert.severity`, `group` (a map by field path: `#{ "src.ip": ip }`) to none, `value`
///   and `threshold` to 0, `window_start` (epoch seconds or an RFC 3339 string) to the
///   event's time; the window ends at the event's time, the alert carries this event as its
///   sample, and its id is stable for the same stage, group and window. An unknown key or
///   a bad value is an error.
/// - `state_get(key)` (`()` when absent), `state_set(key, value)`, `state_remove(key)`:
///   values by key (a string or number) that persist across restarts, at most
///   `max_state_keys` keys (`state_set` of a new key beyond that is an error: remove keys
///   you are done with).
/// - `event_time()`: the event's time as epoch seconds (a float, millisecond precision).
/// - `log(text)`, `print(text)`: a line in vigil's log (info); `debug(value)`: at debug.
///
/// Sandbox: no modules (`import`) and no `eval` (both rejected by `vigil validate`),
/// variables must be declared, at most `max_operations` operations and `timeout` of wall
/// clock per event, bounded string, array and map sizes.
///
/// A script that fails on an event (an error, a limit reached) does not lose it: the event
/// is handed on unchanged; the error is counted and logged (with the script's path and the
/// position, once per 1000 errors), and the next event runs normally. Alerts raised and
/// state changed before the error stand.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = example())]
pub struct ScriptConfig {
    /// The sources or stages this stage reads.
    #[schemars(length(min = 1))]
    pub inputs: Vec<String>,
    /// The `.rhai` file, relative to the pipeline file's directory and inside it (no
    /// `..` step, no absolute path or symbolic link leading elsewhere): copy a shipped
    /// script from `plugins/` beside your pipelines (`scripts/port-scan.rhai`).
    pub file: String,
    /// Operations one run may take (an endless loop stops here): at most 100000000.
    /// Default: 100000.
    #[serde(default = "default_max_operations")]
    pub max_operations: u64,
    /// Wall-clock time one run may take: a safety stop only, at most `1s`. Default:
    /// `50ms`.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Keep `state_set` values across restarts; `false` makes the state functions errors.
    /// Default: `true`.
    #[serde(default = "default_state")]
    pub state: bool,
    /// The most keys the state may hold, and the most episodes open at once
    /// (`fire()`). Default: 100000.
    #[serde(default = "default_max_state_keys")]
    pub max_state_keys: usize,
    /// An episode the script opened with `fire()` and has not fired again for this long
    /// (engine time) is resolved. Default: `1h`.
    #[serde(default = "default_resolve_after")]
    pub resolve_after: Duration,
    /// Defaults for the alerts the script raises.
    #[serde(default)]
    pub alert: ScriptAlertConfig,
}

/// Defaults for the alerts a script raises (`alert(#{...})` may override each).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptAlertConfig {
    /// Severity when the script gives none: `info`, `low`, `medium`, `high` or
    /// `critical`. Default: `medium`.
    #[serde(default)]
    pub severity: Severity,
    /// Title when the script gives none. Default: `alert from <script name>`.
    #[serde(default)]
    pub title: Option<String>,
}

/// The most `max_operations` a script may ask for.
const MAX_OPERATIONS_CAP: u64 = 100_000_000;
/// The longest `timeout` a script may ask for.
const TIMEOUT_CAP: std::time::Duration = std::time::Duration::from_secs(1);

fn default_max_operations() -> u64 {
    DEFAULT_MAX_OPERATIONS
}

fn default_timeout() -> Duration {
    Duration::from_millis(DEFAULT_TIMEOUT.as_millis() as u64)
}

fn default_state() -> bool {
    true
}

fn default_max_state_keys() -> usize {
    100_000
}

fn default_resolve_after() -> Duration {
    Duration::from_secs(3600)
}

fn example() -> serde_json::Value {
    serde_json::json!({
        "inputs": ["flows"],
        "file": "scripts/port-scan.rhai",
        "max_operations": 100_000,
        "timeout": "50ms",
        "state": true,
        "max_state_keys": 100_000,
        "alert": {"severity": "high", "title": "port scan"}
    })
}

impl ScriptConfig {
    /// The limits of one run.
    pub fn limits(&self) -> Limits {
        Limits {
            max_operations: self.max_operations,
            timeout: self.timeout.get(),
        }
    }

    /// Checks: the limits are positive; the file reads and compiles (errors are reported
    /// in the script file, at their line and column).
    pub fn check(&self, p: &mut Problems) {
        if self.max_operations == 0 {
            p.error(
                "/max_operations",
                codes::NON_POSITIVE,
                "max_operations must be greater than zero",
            );
        }
        if self.max_operations > MAX_OPERATIONS_CAP {
            p.error(
                "/max_operations",
                codes::INVALID_VALUE,
                format!(
                    "max_operations is at most {MAX_OPERATIONS_CAP}, not {}: a script that needs more should keep state between events instead",
                    self.max_operations
                ),
            );
        }
        p.positive_duration("/timeout", "timeout", &self.timeout);
        if self.timeout.get() > TIMEOUT_CAP {
            p.error(
                "/timeout",
                codes::INVALID_VALUE,
                format!(
                    "timeout is at most 1s, not `{}`: one event must not hold its pipeline longer",
                    self.timeout
                ),
            );
        }
        p.positive_duration("/resolve_after", "resolve_after", &self.resolve_after);
        if self.max_state_keys == 0 {
            p.error(
                "/max_state_keys",
                codes::NON_POSITIVE,
                "max_state_keys must be greater than zero",
            );
        }
        let path = match confine(&p.base_dir, &self.file) {
            Ok(path) => path,
            Err(e) => {
                p.error("/file", codes::OUTSIDE_DIR, format!("script {e}"));
                return;
            }
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                p.error(
                    "/file",
                    codes::SCRIPT,
                    format!("cannot read the script `{}`: {e}", path.display()),
                );
                return;
            }
        };
        let sandbox = Sandbox::new(self.limits(), "check");
        if let Err(e) = sandbox.compile_script(&text) {
            p.in_file(Diagnostic::error(
                &path,
                Pos {
                    line: e.line,
                    col: e.col,
                },
                codes::SCRIPT,
                e.message,
            ));
        }
    }

    /// Builds the running stage: reads and compiles the script, restores the state.
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Stage>, NodeError> {
        let path = confine(&cx.base_dir, &self.file).map_err(|e| format!("script {e}"))?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read the script `{}`: {e}", path.display()))?;
        let mut stage = ScriptStage::new(self, cx, &path, &text)?;
        if let Some(saved) = cx.restore() {
            stage.restore(&saved);
        }
        Ok(Box::new(stage))
    }
}
