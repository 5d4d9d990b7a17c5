//! Problems found in pipeline files, and how they are printed.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

mod problems;
pub mod template;

pub use problems::Problems;

/// A 1-based line and column in a source file (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// Line, starting at 1.
    pub line: u32,
    /// Column, starting at 1, in characters.
    pub col: u32,
}

/// Builds a JSON pointer from segments.
pub fn to_pointer<'a>(segs: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for s in segs {
        out.push('/');
        out.push_str(&s.replace('~', "~0").replace('/', "~1"));
    }
    out
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The configuration cannot run.
    Error,
    /// It runs, but probably not as meant.
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// The closest candidate to `word`, if one is close enough to be a likely typo (for "did
/// you mean" hints).
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The stable codes of every problem `vigil validate` reports.
///
/// Each code names one class of problem; scripts and CI filters may rely on them.
pub mod codes {
    /// YAML syntax error.
    pub const YAML: &str = "yaml";
    /// The same key twice in one mapping.
    pub const DUPLICATE_KEY: &str = "duplicate-key";
    /// A key the schema does not know (usually a typo).
    pub const UNKNOWN_KEY: &str = "unknown-key";
    /// A required key is missing.
    pub const MISSING_KEY: &str = "missing-key";
    /// A value of the wrong type (a list where a number belongs, ...).
    pub const WRONG_TYPE: &str = "wrong-type";
    /// A value of the right type that is not allowed (bad enum value, bad duration, ...).
    pub const INVALID_VALUE: &str = "invalid-value";
    /// `kind:` missing or not `settings` / `pipeline`.
    pub const UNKNOWN_KIND: &str = "unknown-kind";
    /// A source, stage or sink `type` that no component kind has.
    pub const UNKNOWN_TYPE: &str = "unknown-type";
    /// An entry of `inputs` that names no source or stage of the pipeline.
    pub const UNKNOWN_INPUT: &str = "unknown-input";
    /// The same name twice in one `inputs` list (it is read once).
    pub const DUPLICATE_INPUT: &str = "duplicate-input";
    /// Nodes that feed each other in a loop.
    pub const CYCLE: &str = "cycle";
    /// A sink that no source can reach.
    pub const UNREACHABLE: &str = "unreachable";
    /// A source or stage whose output nobody reads.
    pub const UNUSED: &str = "unused";
    /// A window, interval or threshold that is zero or negative.
    pub const NON_POSITIVE: &str = "non-positive";
    /// A pipeline or component name used twice, or a name with forbidden characters.
    pub const DUPLICATE_NAME: &str = "duplicate-name";
    /// A name with characters other than letters, digits, `_` and `-`.
    pub const INVALID_NAME: &str = "invalid-name";
    /// More than one `kind: settings` document.
    pub const DUPLICATE_SETTINGS: &str = "duplicate-settings";
    /// `${VAR}` names an unset variable and has no default.
    pub const ENV_UNSET: &str = "env-unset";
    /// `${` without a closing `}` or with a bad variable name.
    pub const ENV_SYNTAX: &str = "env-syntax";
    /// A secret (API key, password, token) written literally in a file instead of
    /// `${ENV_VAR}` or a `*_file`.
    pub const LITERAL_SECRET: &str = "literal-secret";
    /// A `connection` that names no connection of the settings.
    pub const UNKNOWN_CONNECTION: &str = "unknown-connection";
    /// A Rhai script or `where:` expression that does not compile (syntax, `eval`,
    /// `import`, an undeclared variable), or a script file that cannot be read.
    pub const SCRIPT: &str = "script";
    /// A pipeline with no sources or no sinks.
    pub const EMPTY_PIPELINE: &str = "empty-pipeline";
    /// A file over the reading budget: too many bytes, documents or nodes (aliases
    /// counted each time they are used), or nesting too deep.
    pub const TOO_LARGE: &str = "too-large";
    /// An SMTP login (`username`) over a connection without TLS, not allowed with
    /// `allow_plaintext_auth: true`.
    pub const PLAINTEXT_AUTH: &str = "plaintext-auth";
    /// A template set or script `file` that leads out of the pipeline file's directory
    /// (`..`, an absolute path elsewhere, a symbolic link pointing outside).
    pub const OUTSIDE_DIR: &str = "outside-dir";
    /// A secret's file (`api_secret_file`, `password_file`, ...) that cannot be read or
    /// is empty (checked by `vigil validate` without `--no-env`).
    pub const SECRET_FILE: &str = "secret-file";
    /// A PCE `url` over plain `http://` without `insecure_http: true`.
    pub const INSECURE_URL: &str = "insecure-url";
    /// A field path that no event reaching the stage has (the sources upstream are all
    /// PCE kinds whose fields are known: the README's "Fields" tables); usually a typo.
    pub const UNKNOWN_FIELD: &str = "unknown-field";
    /// The program an `exec` source runs is not found (or not executable) on the machine
    /// that validates the pipeline: a warning, for it may run elsewhere.
    pub const COMMAND_NOT_FOUND: &str = "command-not-found";
}

/// One problem, at one place in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file, as given on the command line (or found under a given directory).
    pub file: PathBuf,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1, in characters.
    pub column: u32,
    /// Error or warning.
    pub severity: Severity,
    /// One of [`codes`].
    pub code: &'static str,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl Diagnostic {
    /// An error at `pos` in `file`.
    pub fn error(file: &Path, pos: Pos, code: &'static str, message: impl Into<String>) -> Self {
        Self::new(file, pos, Severity::Error, code, message)
    }

    /// A warning at `pos` in `file`.
    pub fn warning(file: &Path, pos: Pos, code: &'static str, message: impl Into<String>) -> Self {
        Self::new(file, pos, Severity::Warning, code, message)
    }

    fn new(
        file: &Path,
        pos: Pos,
        severity: Severity,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line: pos.line,
            column: pos.col,
            severity,
            code,
            message: message.into(),
        }
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col: error[code]: message`, on one line: control characters of the
    /// file name and the message (which may quote the file's content) are escaped
    /// ([`escape_text`]).
    pub fn to_text(&self) -> String {
        format!(
            "{}:{}:{}: {}[{}]: {}",
            escape_text(&self.file.display().to_string()),
            self.line,
            self.column,
            self.severity.as_str(),
            self.code,
            escape_text(&self.message)
        )
    }

    /// A GitHub Actions workflow command (`::error file=..,line=..,col=..,title=..::msg`),
    /// on one line: what the file's content put in the message can never start a command
    /// of its own nor reach the terminal as an escape sequence.
    pub fn to_github(&self) -> String {
        format!(
            "::{} file={},line={},col={},title={}::{}",
            self.severity.as_str(),
            escape_property(&self.file.display().to_string()),
            self.line,
            self.column,
            escape_property(self.code),
            escape_data(&self.message)
        )
    }
}

/// Whether `c` must not reach a terminal or a CI log as it is: control characters (C0,
/// DEL, C1: `ESC` starts terminal escape sequences, `\n` and `\r` start new lines), the
/// Unicode line and paragraph separators, and the bidirectional formatting characters
/// (which make text read differently from what it holds).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every character of [`is_unsafe`] but those `keep` accepts written as an
/// escape: `\n`, `\r`, `\t`, else `\u{1b}`.
fn escape_unsafe(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if !is_unsafe(c) || keep(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    Cow::Owned(out)
}

/// `s` safe to print on one line of a terminal or a CI log: control characters (an
/// escape sequence's `ESC`, new lines), line separators and bidirectional formatting
/// characters written as escapes (`\u{1b}`, `\n`).
pub fn escape_text(s: &str) -> Cow<'_, str> {
    escape_unsafe(s, |_| false)
}

/// A workflow command's message: `%`, `\r`, `\n` as `%25`, `%0D`, `%0A` (GitHub shows
/// them as written), other unsafe characters as in [`escape_text`].
pub fn escape_data(s: &str) -> String {
    escape_unsafe(s, |c| c == '\r' || c == '\n')
        .replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property: as [`escape_data`], and `:` and `,` as `%3A`, `%2C`.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Output formats of `vigil validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `file:line:col: error[code]: message`, one per line, and a summary.
    Text,
    /// One JSON object: `{"diagnostics": [...], "errors": N, "warnings": N}`.
    Json,
    /// GitHub Actions annotations.
    Github,
}

/// Sorts diagnostics by file, position, then severity, and drops exact repeats.
pub fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.severity, a.code, &a.message)
            .cmp(&(&b.file, b.line, b.column, b.severity, b.code, &b.message))
    });
    diags.dedup();
}

/// Renders diagnostics in `format`, ending with a newline.
pub fn render(diags: &[Diagnostic], format: Format) -> String {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    let mut out = String::new();
    match format {
        Format::Text => {
            for d in diags {
                let _ = writeln!(out, "{}", d.to_text());
            }
            let _ = writeln!(
                out,
                "{} error{}, {} warning{}",
                errors,
                if errors == 1 { "" } else { "s" },
                warnings,
                if warnings == 1 { "" } else { "s" }
            );
        }
        Format::Json => {
            let v = serde_json::json!({
                "diagnostics": diags,
                "errors": errors,
                "warnings": warnings,
            });
            let _ = writeln!(out, "{v}");
        }
        Format::Github => {
            for d in diags {
                let _ = writeln!(out, "{}", d.to_github());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_github() {
        let d = Diagnostic::error(
            Path::new("p/a.yaml"),
            Pos { line: 3, col: 7 },
            codes::UNKNOWN_KEY,
            "unknown key `inptus`\nsecond line, 100%",
        );
        assert_eq!(
            d.to_text(),
            "p/a.yaml:3:7: error[unknown-key]: unknown key `inptus`\\nsecond line, 100%"
        );
        assert_eq!(
            d.to_github(),
            "::error file=p/a.yaml,line=3,col=7,title=unknown-key::unknown key `inptus`%0Asecond line, 100%25"
        );
    }

    #[test]
    fn control_characters_and_commands_never_reach_the_output_as_they_are() {
        let d = Diagnostic::error(
            Path::new("p/\u{1b}[31mx.yaml"),
            Pos { line: 1, col: 2 },
            codes::INVALID_VALUE,
            "`a\u{1b}[2J\r\n::error::pwned\u{7}\u{9b}\u{2028}\u{202e}b`",
        );
        assert_eq!(
            d.to_text(),
            "p/\\u{1b}[31mx.yaml:1:2: error[invalid-value]: `a\\u{1b}[2J\\r\\n::error::pwned\\u{7}\\u{9b}\\u{2028}\\u{202e}b`"
        );
        assert_eq!(
            d.to_github(),
            "::error file=p/\\u{1b}[31mx.yaml,line=1,col=2,title=invalid-value::`a\\u{1b}[2J%0D%0A::error::pwned\\u{7}\\u{9b}\\u{2028}\\u{202e}b`"
        );
        assert_eq!(escape_text("plain `text`, 100%"), "plain `text`, 100%");
    }
}
