//! The sandboxed Rhai engine shared by `filter`'s `where:` and the `script` stage.
//!
//! - No modules and no `import` (a compile error), no `eval` (a compile error), no file or
//!   network access (Rhai has none without modules), strict variables: a script sees only
//!   the variables it declares and `event`.
//! - Limits per run: operations (`max_operations`), call depth, expression depth, string,
//!   array and map sizes, and a wall-clock guard (`timeout`). The guard is the only place
//!   vigil's scripting reads the wall clock, and only to stop a runaway script; no result
//!   depends on it.
//! - `print` and `debug` go to the log (`tracing`), never to standard output.
//!
//! Scripts compile once ([`Sandbox::compile_script`], [`Sandbox::compile_expression`]) and
//! run once per event with a fresh [`Scope`] holding `event` ([`Sandbox::eval`]).

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use rhai::module_resolvers::DummyModuleResolver;
use rhai::{AST, Dynamic, Engine, EvalAltResult, ParseError, Position, Scope};
use serde_json::Value;

use crate::node::internal_event::{InternalEvent, ScriptFailed, ScriptRole};

/// The name of the variable that holds the event.
pub const EVENT: &str = "event";

/// Default operations per run.
pub const DEFAULT_MAX_OPERATIONS: u64 = 100_000;
/// Default wall-clock limit per run.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(50);
/// Deepest call nesting (script functions calling each other).
pub const MAX_CALL_LEVELS: usize = 32;
/// Deepest expression nesting (at compile time).
pub const MAX_EXPR_DEPTH: usize = 64;
/// Deepest expression nesting inside functions (at compile time).
pub const MAX_FUNCTION_EXPR_DEPTH: usize = 32;
/// Longest string a script may build, in bytes.
pub const MAX_STRING_SIZE: usize = 1 << 20;
/// Largest array a script may build.
pub const MAX_ARRAY_SIZE: usize = 100_000;
/// Largest map a script may build.
pub const MAX_MAP_SIZE: usize = 100_000;
/// The wall clock is read once every this many operations.
const CLOCK_EVERY: u64 = 256;

/// What a run may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Operations per run (Rhai's operation count).
    pub max_operations: u64,
    /// Wall-clock time per run: a safety stop only.
    pub timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: DEFAULT_MAX_OPERATIONS,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

thread_local! {
    /// The deadline of the run in progress on this thread.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The token `on_progress` stops a run with when its deadline passes.
const TIMEOUT_TOKEN: &str = "vigil-timeout";

/// A script that does not compile, at a position inside its text (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub col: u32,
    /// What is wrong.
    pub message: String,
}

/// A run that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError {
    /// Where in the script (line, column; from 1), when Rhai knows.
    pub pos: Option<(u32, u32)>,
    /// Whether a limit (operations, time, sizes) stopped the run.
    pub limit: bool,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pos {
            Some((l, c)) => write!(f, "{}:{}: {}", l, c, self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A configured engine and its limits.
pub struct Sandbox {
    engine: Engine,
    limits: Limits,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// A sandboxed engine with `limits`; `origin` names the scripts in the log (the
    /// stage id).
    pub fn new(limits: Limits, origin: &str) -> Sandbox {
        let mut engine = Engine::new();
        engine.set_module_resolver(DummyModuleResolver::new());
        engine.set_max_modules(0);
        engine.disable_symbol("eval");
        engine.disable_symbol("import");
        engine.set_strict_variables(true);
        engine.set_max_operations(limits.max_operations.max(1));
        engine.set_max_call_levels(MAX_CALL_LEVELS);
        engine.set_max_expr_depths(MAX_EXPR_DEPTH, MAX_FUNCTION_EXPR_DEPTH);
        engine.set_max_string_size(MAX_STRING_SIZE);
        engine.set_max_array_size(MAX_ARRAY_SIZE);
        engine.set_max_map_size(MAX_MAP_SIZE);
        let origin_print: Arc<str> = origin.into();
        engine.on_print(move |s| tracing::info!(script = %origin_print, "{s}"));
        let origin_debug: Arc<str> = origin.into();
        engine.on_debug(
            move |s, _src, pos| tracing::debug!(script = %origin_debug, position = %pos, "{s}"),
        );
        engine.on_progress(|ops| {
            if ops % CLOCK_EVERY != 0 {
                return None;
            }
            let late = DEADLINE.with(|d| d.get().is_some_and(|t| Instant::now() >= t));
            late.then(|| Dynamic::from(TIMEOUT_TOKEN.to_string()))
        });
        Sandbox { engine, limits }
    }

    /// The engine, to register functions.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Compiles a script (statements) that sees `event`.
    pub fn compile_script(&self, text: &str) -> Result<AST, CompileError> {
        self.engine
            .compile_with_scope(&compile_scope(), text)
            .map_err(|e| compile_error(e, text))
    }

    /// Compiles one expression that sees `event` (a `where:`).
    pub fn compile_expression(&self, text: &str) -> Result<AST, CompileError> {
        self.engine
            .compile_expression_with_scope(&compile_scope(), text)
            .map_err(|e| compile_error(e, text))
    }

    /// Runs `ast` with `event` in a fresh scope; returns the result and the (possibly
    /// changed) event.
    pub fn eval(&self, ast: &AST, event: Dynamic) -> (Result<Dynamic, RunError>, Dynamic) {
        let mut scope = Scope::new();
        scope.push(EVENT, event);
        let deadline = Instant::now() + self.limits.timeout;
        DEADLINE.with(|d| d.set(Some(deadline)));
        let result = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut scope, ast)
            .map_err(|e| self.run_error(*e));
        DEADLINE.with(|d| d.set(None));
        let event = scope.remove::<Dynamic>(EVENT).unwrap_or(Dynamic::UNIT);
        (result, event)
    }

    /// Calls the script's function `name` with `args` (its top-level statements are not
    /// run), under the same limits as a run.
    pub fn call(
        &self,
        ast: &AST,
        name: &str,
        args: impl rhai::FuncArgs,
    ) -> Result<Dynamic, RunError> {
        let mut scope = Scope::new();
        let deadline = Instant::now() + self.limits.timeout;
        DEADLINE.with(|d| d.set(Some(deadline)));
        let result = self
            .engine
            .call_fn_with_options::<Dynamic>(
                rhai::CallFnOptions::new().eval_ast(false),
                &mut scope,
                ast,
                name,
                args,
            )
            .map_err(|e| self.run_error(*e));
        DEADLINE.with(|d| d.set(None));
        result
    }

    fn run_error(&self, mut e: EvalAltResult) -> RunError {
        let pos = position(e.take_position());
        let (limit, message) = match &e {
            EvalAltResult::ErrorTooManyOperations(_) => (
                true,
                format!(
                    "the script ran more than {} operations (`max_operations`): an endless loop?",
                    self.limits.max_operations
                ),
            ),
            EvalAltResult::ErrorTerminated(token, _)
                if token.clone().into_string().ok().as_deref() == Some(TIMEOUT_TOKEN) =>
            {
                (
                    true,
                    format!(
                        "the script ran longer than {} (`timeout`): an endless loop?",
                        humantime::format_duration(self.limits.timeout)
                    ),
                )
            }
            EvalAltResult::ErrorDataTooLarge(..)
            | EvalAltResult::ErrorStackOverflow(_)
            | EvalAltResult::ErrorTooManyModules(_)
            | EvalAltResult::ErrorTooManyVariables(_) => (true, e.to_string()),
            _ => (false, e.to_string()),
        };
        RunError {
            pos,
            limit,
            message,
        }
    }
}

/// The scope scripts compile against: `event` declared (not constant: the optimizer would
/// fold its placeholder value in).
fn compile_scope() -> Scope<'static> {
    let mut scope = Scope::new();
    scope.push(EVENT, Dynamic::UNIT);
    scope
}

fn position(p: Position) -> Option<(u32, u32)> {
    let line = u32::try_from(p.line()?).ok()?;
    let col = p
        .position()
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(1);
    Some((line, col))
}

/// `(line, col)` moved inside `text`: an error at the end of the input (an unclosed
/// bracket) points just after its last character rather than past its last line.
fn clamp(text: &str, (line, col): (u32, u32)) -> (u32, u32) {
    let lines: Vec<&str> = text.lines().collect();
    let Some(last) = lines.iter().rposition(|l| !l.trim().is_empty()) else {
        return (1, 1);
    };
    let at = (line.max(1) as usize - 1).min(last);
    let width = lines[at].chars().count() as u32 + 1;
    if line as usize - 1 > last {
        return (at as u32 + 1, width);
    }
    (line, col.clamp(1, width))
}

fn compile_error(e: ParseError, text: &str) -> CompileError {
    let (line, col) = clamp(text, position(e.position()).unwrap_or((1, 1)));
    let mut message = e.err_type().to_string();
    for word in ["eval", "import"] {
        let disabled = match e.err_type() {
            rhai::ParseErrorType::BadInput(rhai::LexError::ImproperSymbol(s, _))
            | rhai::ParseErrorType::Reserved(s) => s == word,
            _ => false,
        };
        if disabled || message == format!("reserved keyword '{word}' is disabled") {
            message = format!("`{word}` is not allowed in vigil scripts (sandbox)");
        }
    }
    CompileError { line, col, message }
}

/// Counts failed runs of one stage and reports each ([`ScriptFailed`]: logged the first
/// time and then once per [`ScriptFailed::LOG_EVERY`], so a script failing on every event
/// does not flood the log).
#[derive(Debug, Default)]
pub struct ErrorLog {
    /// Failed runs so far.
    pub count: u64,
    /// The node's counters, where each failure is counted as its `role` says.
    counters: std::sync::Arc<crate::node::NodeCounters>,
    role: ScriptRole,
}

impl ErrorLog {
    /// Counts each failure in `counters` too, as `role` says: a failed `where:` drops its
    /// event (`where_error`), a failed script passes it on (an error).
    pub fn counting_into(
        &mut self,
        counters: std::sync::Arc<crate::node::NodeCounters>,
        role: ScriptRole,
    ) {
        self.counters = counters;
        self.role = role;
    }

    /// Counts `e` and reports it. `what` names the script (`where` or its path).
    pub fn record(&mut self, stage: &str, what: &str, e: &RunError) {
        self.count += 1;
        ScriptFailed {
            stage,
            script: what,
            failures: self.count,
            error: e,
            role: self.role,
        }
        .emit(&self.counters);
    }
}

/// The event's record as a Rhai value (a map for a JSON object).
pub fn to_dynamic(data: &Value) -> Dynamic {
    rhai::serde::to_dynamic(data).unwrap_or(Dynamic::UNIT)
}

/// An event's record as a Rhai value: from its tape when it has one (without making its
/// JSON `Value` first).
pub fn event_dynamic(event: &crate::event::Event) -> Dynamic {
    match event.shared_tape() {
        Some(tape) => rhai::serde::to_dynamic(&*tape).unwrap_or(Dynamic::UNIT),
        None => to_dynamic(event.data()),
    }
}

/// A Rhai value as JSON (`()` is `null`).
pub fn to_json(v: &Dynamic) -> Result<Value, String> {
    rhai::serde::from_dynamic::<Value>(v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sandbox() -> Sandbox {
        Sandbox::new(Limits::default(), "test")
    }

    #[test]
    fn eval_and_import_are_compile_errors() {
        let s = sandbox();
        let e = s.compile_script("let x = 1;\neval(\"1\")").unwrap_err();
        assert_eq!((e.line, e.col), (2, 1), "{e:?}");
        let e = s.compile_script("import \"x\" as y;").unwrap_err();
        assert_eq!((e.line, e.col), (1, 1), "{e:?}");
        assert_eq!(
            e.message,
            "`import` is not allowed in vigil scripts (sandbox)"
        );
        let e = s.compile_expression("1 + eval(\"1\")").unwrap_err();
        assert_eq!((e.line, e.col), (1, 5), "{e:?}");
        assert_eq!(
            e.message,
            "`eval` is not allowed in vigil scripts (sandbox)"
        );
    }

    #[test]
    fn errors_at_the_end_point_after_the_last_character() {
        let e = sandbox()
            .compile_expression("event.a == 1 &&\n  event.b == (2\n")
            .unwrap_err();
        assert_eq!((e.line, e.col), (2, 16), "{e:?}");
    }

    #[test]
    fn strict_variables_but_event_is_known() {
        let s = sandbox();
        assert!(s.compile_expression("event.a == 1").is_ok());
        let e = s.compile_expression("evnt.a == 1").unwrap_err();
        assert_eq!((e.line, e.col), (1, 1), "{e:?}");
    }

    #[test]
    fn endless_loops_stop_at_the_operations_limit() {
        let s = sandbox();
        let ast = s.compile_script("loop {}").unwrap();
        let (r, _) = s.eval(&ast, Dynamic::UNIT);
        let e = r.unwrap_err();
        assert!(e.limit, "{e:?}");
        assert!(e.message.contains("100000 operations"), "{e:?}");
    }

    #[test]
    fn endless_loops_stop_at_the_timeout() {
        let s = Sandbox::new(
            Limits {
                max_operations: u64::MAX,
                timeout: std::time::Duration::from_millis(20),
            },
            "test",
        );
        let ast = s.compile_script("loop {}").unwrap();
        let (r, _) = s.eval(&ast, Dynamic::UNIT);
        let e = r.unwrap_err();
        assert!(e.limit && e.message.contains("longer than 20ms"), "{e:?}");
    }

    #[test]
    fn the_event_round_trips_and_changes_are_seen() {
        let s = sandbox();
        let ast = s
            .compile_script("event.a.b += 1; event.c = \"x\"; true")
            .unwrap();
        let (r, ev) = s.eval(&ast, to_dynamic(&json!({"a": {"b": 1}, "n": 1.5})));
        assert!(r.unwrap().as_bool().unwrap());
        assert_eq!(
            to_json(&ev).unwrap(),
            json!({"a": {"b": 2}, "n": 1.5, "c": "x"})
        );
    }
}
