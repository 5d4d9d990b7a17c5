//! Secrets (API keys, tokens, webhook URLs): read from the settings (after `${ENV}`
//! interpolation) or from a file, and never printed.

use std::fmt;
use std::path::Path;

use schemars::JsonSchema;
use serde::Deserialize;

/// A secret value (API key or secret). Debug and Display print `***`; read it with
/// [`Secret::expose`] only where it is sent.
#[derive(Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A secret from its setting or its `<name>_file` (exactly one of them); the error says
/// what to fix.
pub fn resolve_secret(
    name: &str,
    value: &Option<Secret>,
    file: Option<&Path>,
) -> Result<Secret, String> {
    match (value, file) {
        (Some(_), Some(_)) => Err(format!("set either `{name}` or `{name}_file`, not both")),
        (Some(v), None) if v.expose().is_empty() => Err(format!("`{name}` is empty")),
        (Some(v), None) => Ok(v.clone()),
        (None, Some(path)) => read_secret_file(name, path),
        (None, None) => Err(format!("`{name}` (or `{name}_file`) is required")),
    }
}

/// Whether the secret file `<name>_file` at `path` can be read and holds a value; the
/// error says why not (never the content).
pub fn check_secret_file(name: &str, path: &Path) -> Result<(), String> {
    read_secret_file(name, path).map(|_| ())
}

fn read_secret_file(name: &str, path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{name}_file` {}: {e}", path.display()))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("`{name}_file` {} is empty", path.display()));
    }
    Ok(Secret::new(trimmed))
}
