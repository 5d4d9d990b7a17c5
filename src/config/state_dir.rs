//! Finding `state_dir` alone, for the commands that only open the state database
//! (`vigil outbox`, `vigil silence`): they read the settings document without
//! interpolating or checking anything else, so a `${SMTP_PASSWORD}` they never use need
//! not be set for them — only a `${VAR}` inside `state_dir` itself.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::interpolate::{Env, LineIndex, resolve};
use super::load::{LoadError, collect_files, read_file};
use super::model::SettingsConfig;
use super::yaml::{self, Node, NodeValue};
use crate::diagnostic::{Diagnostic, codes};

/// Why `state_dir` could not be found.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// A path given cannot be read.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The settings (or what is needed to find them) have errors, with positions.
    #[error("cannot tell the state_dir from the settings")]
    Invalid(Vec<Diagnostic>),
}

/// The `state_dir` named by the settings document under `paths` (the default, `var`,
/// when there is none or it names none). Only the settings' `kind` and `state_dir` are
/// read: YAML errors elsewhere, or in other files, do not matter.
pub fn find_state_dir(paths: &[PathBuf], env: &Env) -> Result<PathBuf, StateDirError> {
    let mut found: Vec<(PathBuf, Node, String)> = Vec::new();
    let mut syntax = Vec::new();
    for file in collect_files(paths)? {
        let text = read_file(&file)?;
        let parsed = yaml::parse(&text);
        let mut here: Vec<Node> = parsed.documents.into_iter().filter(is_settings).collect();
        if here.is_empty() {
            // A file whose settings did not parse is a reason to stop; one without
            // settings is none of these commands' business.
            if names_settings(&text) {
                syntax.extend(
                    parsed
                        .errors
                        .iter()
                        .map(|e| Diagnostic::error(&file, e.pos, e.code, e.message.clone())),
                );
            }
            continue;
        }
        for doc in here.drain(..) {
            found.push((file.clone(), doc, text.clone()));
        }
    }
    match found.as_slice() {
        [] if !syntax.is_empty() => Err(StateDirError::Invalid(syntax)),
        [] => Ok(SettingsConfig::default().state_dir),
        [(file, doc, text)] => state_dir_in(file, doc, text, env),
        [(first, ..), rest @ ..] => Err(StateDirError::Invalid(
            rest.iter()
                .map(|(file, doc, _)| {
                    Diagnostic::error(
                        file,
                        doc.pos,
                        codes::DUPLICATE_SETTINGS,
                        format!(
                            "a second `kind: settings` document (the first is in {}); merge them into one",
                            first.display()
                        ),
                    )
                })
                .collect(),
        )),
    }
}

/// A line `kind: settings` (a document that may not have parsed).
fn names_settings(text: &str) -> bool {
    text.lines().any(|l| {
        l.trim_start()
            .strip_prefix("kind:")
            .is_some_and(|v| v.trim().trim_matches(['"', '\'']).starts_with("settings"))
    })
}

fn is_settings(doc: &Node) -> bool {
    let NodeValue::Map(map) = &doc.value else {
        return false;
    };
    map.get("kind").is_some_and(|e| match &e.value.value {
        NodeValue::Scalar(s) => s.text == "settings",
        _ => false,
    })
}

fn state_dir_in(file: &Path, doc: &Node, text: &str, env: &Env) -> Result<PathBuf, StateDirError> {
    let NodeValue::Map(map) = &doc.value else {
        return Ok(SettingsConfig::default().state_dir);
    };
    let Some(entry) = map.get("state_dir") else {
        return Ok(SettingsConfig::default().state_dir);
    };
    let resolved = resolve(&entry.value, env, &LineIndex::new(text));
    if !resolved.errors.is_empty() {
        return Err(StateDirError::Invalid(
            resolved
                .errors
                .iter()
                .map(|e| {
                    Diagnostic::error(file, e.pos, e.code, format!("state_dir: {}", e.message))
                })
                .collect(),
        ));
    }
    match resolved.value {
        Value::String(s) if !s.is_empty() => Ok(PathBuf::from(s)),
        _ => Err(StateDirError::Invalid(vec![Diagnostic::error(
            file,
            entry.value.pos,
            codes::WRONG_TYPE,
            "state_dir must be a directory path",
        )])),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        dir
    }

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::Map(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        )
    }

    const SETTINGS: &str = "kind: settings\nstate_dir: ${STATE:-/var/lib/vigil}\nconnections:\n  smtp:\n    relay:\n      host: localhost\n      from: a@b.c\n      password: ${UNSET_VAR}\n";

    #[test]
    fn only_state_dir_is_interpolated() {
        let dir = dir_with(&[
            ("settings.yaml", SETTINGS),
            (
                "p.yaml",
                "kind: pipeline\nname: p\nsources: {a: {type: file, path: ${ALSO_UNSET}}}\n",
            ),
        ]);
        let paths = [dir.path().to_path_buf()];
        assert_eq!(
            find_state_dir(&paths, &env(&[])).expect("found"),
            PathBuf::from("/var/lib/vigil")
        );
        assert_eq!(
            find_state_dir(&paths, &env(&[("STATE", "/srv/v")])).expect("found"),
            PathBuf::from("/srv/v")
        );
    }

    #[test]
    fn a_variable_in_state_dir_still_needs_setting_and_says_where() {
        let dir = dir_with(&[("s.yaml", "kind: settings\nstate_dir: ${STATE}/x\n")]);
        let Err(StateDirError::Invalid(d)) = find_state_dir(&[dir.path().to_path_buf()], &env(&[]))
        else {
            panic!("an unset variable in state_dir is an error");
        };
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].line, d[0].column), (2, 12));
        assert!(
            d[0].message
                .contains("state_dir: environment variable `STATE` is not set"),
            "{}",
            d[0].message
        );
    }

    #[test]
    fn defaults_and_other_files_errors() {
        // No settings at all: the default; a broken pipeline file does not matter.
        let dir = dir_with(&[("p.yaml", "kind: pipeline\nname: [unclosed\n")]);
        assert_eq!(
            find_state_dir(&[dir.path().to_path_buf()], &env(&[])).expect("found"),
            SettingsConfig::default().state_dir
        );
        // Settings that do not parse: their errors, with positions.
        let dir = dir_with(&[("s.yaml", "kind: settings\nstate_dir: [unclosed\n")]);
        assert!(matches!(
            find_state_dir(&[dir.path().to_path_buf()], &env(&[])),
            Err(StateDirError::Invalid(d)) if !d.is_empty()
        ));
        // A state_dir that is not a path.
        let dir = dir_with(&[("s.yaml", "kind: settings\nstate_dir: {a: 1}\n")]);
        assert!(matches!(
            find_state_dir(&[dir.path().to_path_buf()], &env(&[])),
            Err(StateDirError::Invalid(d)) if d[0].message.contains("directory path")
        ));
        // Two settings documents.
        let dir = dir_with(&[
            ("a.yaml", "kind: settings\nstate_dir: a\n"),
            ("b.yaml", "kind: settings\nstate_dir: b\n"),
        ]);
        assert!(matches!(
            find_state_dir(&[dir.path().to_path_buf()], &env(&[])),
            Err(StateDirError::Invalid(d)) if d[0].code == codes::DUPLICATE_SETTINGS
        ));
    }
}
