//! Structural checks a component runs on its own typed config (`check`), reported with the
//! position of the offending value.

use std::path::PathBuf;

use super::{Diagnostic, Severity, codes};
use crate::time::Duration;

/// One problem found by a component's checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// JSON pointer relative to the component (`/window`, `/match/src.ip`).
    pub pointer: String,
    /// Point at the key rather than the value (for problems with the key itself).
    pub at_key: bool,
    /// A code from [`codes`].
    pub code: &'static str,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong and what to do.
    pub message: String,
    /// A position inside the value's text (line, column; from 1), for values that are
    /// code (a Rhai `where:` expression): the diagnostic then points there.
    pub inner: Option<(u32, u32)>,
}

/// Collects [`Problem`]s.
#[derive(Debug, Default)]
pub struct Problems {
    /// What was found.
    pub items: Vec<Problem>,
    /// The directory of the file being checked: relative paths a component names
    /// (`file: ../plugins/x.rhai`) are relative to it.
    pub base_dir: PathBuf,
    /// Problems found in other files a component names (a script's syntax error), with
    /// their own positions.
    pub external: Vec<Diagnostic>,
}

impl Problems {
    /// Problems of a component in a file under `base_dir`.
    pub fn in_dir(base_dir: impl Into<PathBuf>) -> Problems {
        Problems {
            base_dir: base_dir.into(),
            ..Problems::default()
        }
    }

    /// An error at `(line, col)` inside the text of the value at `pointer`.
    pub fn error_inside(
        &mut self,
        pointer: impl Into<String>,
        (line, col): (u32, u32),
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.push(pointer.into(), false, code, Severity::Error, message.into());
        if let Some(last) = self.items.last_mut() {
            last.inner = Some((line, col));
        }
    }

    /// A problem in another file (see [`Problems::external`]).
    pub fn in_file(&mut self, diagnostic: Diagnostic) {
        self.external.push(diagnostic);
    }

    /// Whether an error was found (here or in another file).
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|i| i.severity == Severity::Error)
            || self.external.iter().any(Diagnostic::is_error)
    }

    /// An error at the value `pointer`.
    pub fn error(
        &mut self,
        pointer: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.push(pointer.into(), false, code, Severity::Error, message.into());
    }

    /// An error at the key of `pointer`.
    pub fn error_at_key(
        &mut self,
        pointer: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.push(pointer.into(), true, code, Severity::Error, message.into());
    }

    /// A warning at the value of `pointer`.
    pub fn warning(
        &mut self,
        pointer: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.push(
            pointer.into(),
            false,
            code,
            Severity::Warning,
            message.into(),
        );
    }

    /// A warning at the key of `pointer`.
    pub fn warning_at_key(
        &mut self,
        pointer: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.push(
            pointer.into(),
            true,
            code,
            Severity::Warning,
            message.into(),
        );
    }

    fn push(
        &mut self,
        pointer: String,
        at_key: bool,
        code: &'static str,
        severity: Severity,
        message: String,
    ) {
        self.items.push(Problem {
            pointer,
            at_key,
            code,
            severity,
            message,
            inner: None,
        });
    }

    /// Requires a duration (window, interval) to be greater than zero.
    pub fn positive_duration(&mut self, pointer: &str, what: &str, d: &Duration) {
        if !d.is_positive() {
            self.error(
                pointer,
                codes::NON_POSITIVE,
                format!("{what} must be greater than zero, not `{d}`"),
            );
        }
    }

    /// Requires a number (threshold, size) to be greater than zero.
    pub fn positive_number(&mut self, pointer: &str, what: &str, v: f64) {
        if v.is_nan() || v <= 0.0 {
            self.error(
                pointer,
                codes::NON_POSITIVE,
                format!("{what} must be greater than zero, not {v}"),
            );
        }
    }
}
