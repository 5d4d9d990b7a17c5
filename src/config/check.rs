//! Structural checks a component runs on its own typed config (`check`), reported with the
//! position of the offending value.

use super::diagnostic::{Severity, codes};
use super::model::Duration;

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
}

/// Collects [`Problem`]s.
#[derive(Debug, Default)]
pub struct Problems {
    /// What was found.
    pub items: Vec<Problem>,
}

impl Problems {
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
