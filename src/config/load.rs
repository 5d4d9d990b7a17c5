//! Loading pipeline files: every check, every problem reported in one pass.
//!
//! Per file: YAML syntax and duplicate keys. Per document: `${VAR}` interpolation, `kind`,
//! the schema of the document and of every component, the typed model, and each
//! component's own checks. Across documents: one settings document at most, unique
//! pipeline names. Per pipeline: names, inputs that name nothing, cycles, sinks no source
//! reaches, and nodes whose output nobody reads. Nothing here touches the network.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_json::Value;

use super::interpolate::{Env, LineIndex, resolve};
use super::schema::{self, Family, suggest};
use super::yaml::{self, Node, Pos, to_pointer};
use super::{Config, Document, LoadedPipeline, PipelineConfig, SettingsConfig};
use crate::diagnostic::Problems;
use crate::diagnostic::{Diagnostic, codes, sort};
use crate::graph::analyse;

/// How to load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Where `${VAR}` values come from.
    pub env: Env,
    /// Check that every secret file the settings name (`api_secret_file`,
    /// `password_file`, ...) can be read and is not empty (`vigil validate`, `vigil
    /// check`); off for `vigil test` and `--no-env`, which need no secrets.
    pub secret_files: bool,
}

/// A file or directory could not be read: not a configuration problem but a usage or
/// I/O one (`vigil validate` exits 2).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A path given does not exist or cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A directory given holds no `*.yaml` / `*.yml` files.
    #[error("no pipeline files (*.yaml, *.yml) found in {0}")]
    NoFiles(PathBuf),
}

/// The result of loading: a configuration when there were no errors, and every problem.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The configuration, when no error was found.
    pub config: Option<Config>,
    /// Every error and warning, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// The files that were read, in order.
    pub files: Vec<PathBuf>,
}

impl Loaded {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Expands paths: files as given, directories to every `*.yaml` / `*.yml` below them
/// (sorted; hidden files and `*.test.yaml` test files skipped).
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| LoadError::Io {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            let before = out.len();
            walk_dir(p, &is_pipeline_file, &mut out)?;
            if out.len() == before {
                return Err(LoadError::NoFiles(p.clone()));
            }
        } else {
            out.push(p.clone());
        }
    }
    let mut seen = HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    Ok(out)
}

/// Every file under `dir` (sorted, hidden entries skipped) whose name passes `wanted`.
pub fn files_under(dir: &Path, wanted: &dyn Fn(&str) -> bool) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    walk_dir(dir, wanted, &mut out)?;
    Ok(out)
}

fn walk_dir(
    dir: &Path,
    wanted: &dyn Fn(&str) -> bool,
    out: &mut Vec<PathBuf>,
) -> Result<(), LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk_dir(&path, wanted, out)?;
        } else if wanted(name) {
            out.push(path);
        }
    }
    Ok(())
}

/// Whether a file name is a pipeline file (not a `*.test.yaml` test file).
pub fn is_pipeline_file(name: &str) -> bool {
    (name.ends_with(".yaml") || name.ends_with(".yml"))
        && !name.ends_with(".test.yaml")
        && !name.ends_with(".test.yml")
}

/// Reads the files under `paths` and checks them.
pub fn load_paths(paths: &[PathBuf], opts: &LoadOptions) -> Result<Loaded, LoadError> {
    let files = collect_files(paths)?;
    let mut sources = Vec::with_capacity(files.len());
    for f in &files {
        sources.push((f.clone(), read_file(f)?));
    }
    Ok(load_sources(&sources, opts))
}

/// The text of a pipeline, settings or test file, read no further than the reading
/// budget allows: a larger file's text is cut just past the limit (and lossily decoded),
/// so parsing it reports `too-large` without the whole file in memory.
pub fn read_file(path: &Path) -> Result<String, LoadError> {
    use std::io::Read as _;
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let limit = yaml::Budget::DEFAULT.max_bytes as u64;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Ok(String::from_utf8_lossy(&bytes).into_owned());
    }
    String::from_utf8(bytes).map_err(|_| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })
}

/// One document on its way through the checks.
struct Doc<'a> {
    file: &'a Path,
    /// The file's text (to find positions inside a value).
    text: &'a str,
    tree: Node,
    value: Value,
    from_env: BTreeSet<String>,
    unresolved: BTreeSet<String>,
    /// No error so far: worth typing.
    clean: bool,
    /// Check that secret files can be read ([`LoadOptions::secret_files`]).
    secret_files: bool,
}

impl Doc<'_> {
    /// The position of `(line, col)` inside the text of the string value at `pointer`;
    /// the value's own position when it cannot be found.
    fn inner_pos(&self, pointer: &str, (line, col): (u32, u32)) -> Pos {
        let fallback = self.pos(pointer, false);
        let Some(node) = self.tree.at_pointer(pointer) else {
            return fallback;
        };
        let Some(value) = self.value.pointer(pointer).and_then(Value::as_str) else {
            return fallback;
        };
        let Some(want) = value.lines().nth(line.saturating_sub(1) as usize) else {
            return fallback;
        };
        let src: String = self
            .text
            .chars()
            .skip(node.span.0)
            .take(node.span.1.saturating_sub(node.span.0))
            .collect();
        let Some(byte_at) = src.find(want) else {
            return fallback;
        };
        let char_at = src[..byte_at].chars().count();
        let abs = node.span.0 + char_at + col.saturating_sub(1) as usize;
        LineIndex::new(self.text).pos(abs)
    }

    /// Where the value a typing error is about is written: serde loses the path inside
    /// tagged components, so when the node at `pointer` is a mapping or list and the
    /// message quotes a value (`` `1000000y` ``), the first scalar below it written so is
    /// the place.
    fn value_pos(&self, pointer: &str, message: &str) -> Pos {
        let quoted = message
            .split('`')
            .nth(1)
            .filter(|q| !q.is_empty() && message.matches('`').count() >= 2);
        self.tree
            .at_pointer(pointer)
            .zip(quoted)
            .and_then(|(node, q)| node.find_scalar(q))
            .unwrap_or_else(|| self.pos(pointer, false))
    }

    fn pos(&self, pointer: &str, at_key: bool) -> Pos {
        if at_key {
            self.tree.key_pos_at(pointer)
        } else {
            self.tree.pos_at(pointer)
        }
    }
}

/// Checks in-memory files (`(path, text)`).
pub fn load_sources(files: &[(PathBuf, String)], opts: &LoadOptions) -> Loaded {
    let mut diags: Vec<Diagnostic> = Vec::new();
    let mut settings: Vec<(Doc<'_>, Option<SettingsConfig>)> = Vec::new();
    let mut pipelines: Vec<(Doc<'_>, Option<PipelineConfig>)> = Vec::new();

    for (file, text) in files {
        let parsed = yaml::parse(text);
        for e in &parsed.errors {
            diags.push(Diagnostic::error(file, e.pos, e.code, e.message.clone()));
        }
        let file_clean = parsed.errors.is_empty();
        let lines = LineIndex::new(text);
        for tree in parsed.documents {
            let resolved = resolve(&tree, &opts.env, &lines);
            for e in &resolved.errors {
                diags.push(Diagnostic::error(file, e.pos, e.code, e.message.clone()));
            }
            let mut doc = Doc {
                file,
                text,
                tree,
                value: resolved.value,
                from_env: resolved.from_env,
                unresolved: resolved.unresolved,
                clean: file_clean && resolved.errors.is_empty(),
                secret_files: opts.secret_files,
            };
            if doc.value.is_null() {
                continue; // an empty document (only comments, or a trailing `---`)
            }
            let Some(obj) = doc.value.as_object() else {
                diags.push(Diagnostic::error(
                    file,
                    doc.tree.pos,
                    codes::WRONG_TYPE,
                    "a document must be a mapping with `kind: settings` or `kind: pipeline`",
                ));
                continue;
            };
            match obj.get("kind").and_then(Value::as_str) {
                Some("settings") => {
                    let typed = check_settings(&mut doc, &mut diags);
                    settings.push((doc, typed));
                }
                Some("pipeline") => {
                    let typed = check_pipeline_doc(&mut doc, &mut diags);
                    pipelines.push((doc, typed));
                }
                Some(other) => {
                    let hint = if other == "test" {
                        "; `kind: test` documents go in a `*.test.yaml` file beside the pipeline file (read by `vigil test` and `vigil validate`)".to_string()
                    } else {
                        suggest(other, ["settings", "pipeline"])
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_default()
                    };
                    diags.push(Diagnostic::error(
                        file,
                        doc.pos("/kind", false),
                        codes::UNKNOWN_KIND,
                        format!("unknown kind `{other}`: expected `settings` or `pipeline`{hint}"),
                    ));
                }
                None => {
                    let (pos, msg) = match obj.get("kind") {
                        Some(_) => (
                            doc.pos("/kind", false),
                            "`kind` must be `settings` or `pipeline`",
                        ),
                        None => (
                            doc.tree.pos,
                            "missing required key `kind` (`settings` or `pipeline`)",
                        ),
                    };
                    diags.push(Diagnostic::error(file, pos, codes::UNKNOWN_KIND, msg));
                }
            }
        }
    }

    // Across documents.
    for (doc, _) in settings.iter().skip(1) {
        diags.push(Diagnostic::error(
            doc.file,
            doc.pos("/kind", true),
            codes::DUPLICATE_SETTINGS,
            format!(
                "a second `kind: settings` document (the first is in {}); merge them into one",
                settings[0].0.file.display()
            ),
        ));
    }
    let mut names: HashMap<String, (PathBuf, Pos)> = HashMap::new();
    for (doc, _) in &pipelines {
        let Some(name) = doc.value.get("name").and_then(Value::as_str) else {
            continue;
        };
        let pos = doc.pos("/name", false);
        if !valid_name(name) {
            diags.push(Diagnostic::error(
                doc.file,
                pos,
                codes::INVALID_NAME,
                format!("pipeline name `{name}` may hold only letters, digits, `_` and `-`"),
            ));
        }
        if let Some((first_file, first_pos)) = names.get(name) {
            diags.push(Diagnostic::error(
                doc.file,
                pos,
                codes::DUPLICATE_NAME,
                format!(
                    "pipeline `{name}` is already defined at {}:{}:{}",
                    first_file.display(),
                    first_pos.line,
                    first_pos.col
                ),
            ));
        } else {
            names.insert(name.to_string(), (doc.file.to_path_buf(), pos));
        }
        check_wiring(doc, &mut diags);
    }

    check_connections(&settings, &pipelines, &mut diags);

    sort(&mut diags);
    let files_read = files.iter().map(|(p, _)| p.clone()).collect();
    let has_errors = diags.iter().any(Diagnostic::is_error);
    let config = if has_errors {
        None
    } else {
        let settings_raw = settings
            .first()
            .map(|(d, _)| d.value.clone())
            .unwrap_or(Value::Null);
        Some(Config {
            settings: settings
                .into_iter()
                .next()
                .and_then(|(_, s)| s)
                .unwrap_or_default(),
            settings_raw,
            pipelines: pipelines
                .into_iter()
                .filter_map(|(doc, p)| {
                    p.map(|config| LoadedPipeline {
                        file: doc.file.to_path_buf(),
                        raw: doc.value.clone(),
                        config,
                    })
                })
                .collect(),
        })
    };
    Loaded {
        config,
        diagnostics: diags,
        files: files_read,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn push_schema(
    doc: &mut Doc<'_>,
    problems: Vec<schema::SchemaProblem>,
    diags: &mut Vec<Diagnostic>,
) {
    for p in problems {
        doc.clean = false;
        let pos = doc.pos(&p.pointer, p.at_key);
        diags.push(Diagnostic::error(doc.file, pos, p.code, p.message));
    }
}

fn push_problems(doc: &Doc<'_>, prefix: &str, problems: Problems, diags: &mut Vec<Diagnostic>) {
    diags.extend(problems.external);
    for p in problems.items {
        let pointer = format!("{prefix}{}", p.pointer);
        let pos = match p.inner {
            Some(inner) => doc.inner_pos(&pointer, inner),
            None => doc.pos(&pointer, p.at_key),
        };
        diags.push(match p.severity {
            crate::diagnostic::Severity::Error => {
                Diagnostic::error(doc.file, pos, p.code, p.message)
            }
            crate::diagnostic::Severity::Warning => {
                Diagnostic::warning(doc.file, pos, p.code, p.message)
            }
        });
    }
}

fn schema_cx<'a>(doc: &'a Doc<'_>) -> schema::Context<'a> {
    schema::Context {
        from_env: Some(&doc.from_env),
        unresolved: Some(&doc.unresolved),
    }
}

/// Types the document; a failure is reported at the deepest position serde names.
fn typed<T: serde::de::DeserializeOwned>(
    doc: &mut Doc<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    if !doc.clean {
        return None;
    }
    if !doc.unresolved.is_empty() {
        // `--no-env` left placeholders that may not type; the schema checks ran already.
        return None;
    }
    let typed = typed_component(doc, "", &doc.value, diags);
    doc.clean = typed.is_some();
    typed
}

fn check_settings(doc: &mut Doc<'_>, diags: &mut Vec<Diagnostic>) -> Option<SettingsConfig> {
    let problems = schema::check_settings(&doc.value, schema_cx(doc));
    push_schema(doc, problems, diags);
    let Document::Settings(s) = typed::<Document>(doc, diags)? else {
        return None;
    };
    let mut p = Problems::default();
    p.positive_duration("/tick_interval", "tick_interval", &s.tick_interval);
    p.positive_duration(
        "/snapshot_interval",
        "snapshot_interval",
        &s.snapshot_interval,
    );
    p.positive_duration("/history_interval", "history_interval", &s.history_interval);
    p.positive_duration("/handover_timeout", "handover_timeout", &s.handover_timeout);
    p.positive_duration(
        "/retention/history_max_age",
        "retention.history_max_age",
        &s.retention.history_max_age,
    );
    p.positive_duration("/restarts/within", "restarts.within", &s.restarts.within);
    p.positive_duration("/restarts/backoff", "restarts.backoff", &s.restarts.backoff);
    p.positive_duration(
        "/restarts/max_backoff",
        "restarts.max_backoff",
        &s.restarts.max_backoff,
    );
    for (i, rule) in s.inhibit.iter().enumerate() {
        rule.check(&format!("/inhibit/{i}"), &mut p);
    }
    for (name, conn) in &s.connections.pce {
        let base = to_pointer(["connections", "pce", name.as_str()]);
        for field in ["api_key", "api_secret"] {
            check_secret(doc, &mut p, name, &base, field, Need::Required);
        }
        if let Err(e) = conn.api_base() {
            let code = if conn.is_plain_http() {
                codes::INSECURE_URL
            } else {
                codes::INVALID_VALUE
            };
            p.error(format!("{base}/url"), code, e.to_string());
        }
    }
    check_secret(doc, &mut p, "web", "/web", "token", Need::Optional);
    p.positive_duration(
        "/web/header_read_timeout",
        "web.header_read_timeout",
        &s.web.header_read_timeout,
    );
    p.positive_duration(
        "/web/request_timeout",
        "web.request_timeout",
        &s.web.request_timeout,
    );
    p.positive_duration("/web/idle_timeout", "web.idle_timeout", &s.web.idle_timeout);
    p.positive_number(
        "/web/max_connections",
        "web.max_connections",
        s.web.max_connections as f64,
    );
    p.positive_number(
        "/web/max_body_bytes",
        "web.max_body_bytes",
        s.web.max_body_bytes as f64,
    );
    for (i, entry) in s.web.allowed_hosts.iter().enumerate() {
        let entry = entry.trim();
        let plain = entry == "*"
            || reqwest::Url::parse(&format!("http://{entry}/")).is_ok_and(|u| {
                u.host_str().is_some()
                    && u.path() == "/"
                    && u.username().is_empty()
                    && u.query().is_none()
                    && !entry.contains('/')
            });
        if !plain {
            p.error(
                format!("/web/allowed_hosts/{i}"),
                codes::INVALID_VALUE,
                format!(
                    "`{entry}` is not a host name or address with an optional port (`vigil.example.com`, `vigil.example.com:8080`, `[fd00::5]:5001`) or `*`"
                ),
            );
        }
    }
    match s.web.listen.parse::<std::net::SocketAddr>() {
        Err(e) => p.error(
            "/web/listen",
            codes::INVALID_VALUE,
            format!(
                "`{}` is not an address and port (`127.0.0.1:5001`): {e}",
                s.web.listen
            ),
        ),
        Ok(addr) if s.web.enabled && !addr.ip().is_loopback() => {
            let has_token = s.web.token.is_some() || s.web.token_file.is_some();
            if !has_token {
                p.error(
                    "/web/listen",
                    codes::INVALID_VALUE,
                    format!(
                        "listening on {addr} (beyond this machine) needs a bearer token: set `token: ${{VIGIL_WEB_TOKEN}}` or `token_file:`"
                    ),
                );
            }
        }
        Ok(_) => {}
    }
    for (name, conn) in &s.connections.smtp {
        let base = to_pointer(["connections", "smtp", name.as_str()]);
        let need = if conn.username.is_some() {
            Need::Required
        } else {
            Need::Optional
        };
        check_secret(doc, &mut p, name, &base, "password", need);
        if conn.username.is_none() && (conn.password.is_some() || conn.password_file.is_some()) {
            p.error_at_key(
                format!("{base}/password"),
                codes::INVALID_VALUE,
                "a password without `username` is never used: add `username`",
            );
        }
        if conn.refuses_plaintext_auth() {
            // `tls: none` is written (the default is `starttls`): point there.
            p.error(
                format!("{base}/tls"),
                codes::PLAINTEXT_AUTH,
                format!(
                    "connection `{name}` logs in (`username`) without TLS (`tls: none`): the password would cross the network in clear; set `tls: starttls` or `tls: implicit`, or `allow_plaintext_auth: true` for a relay on this machine or a network you trust"
                ),
            );
        }
    }
    for name in s.connections.line.keys() {
        let base = to_pointer(["connections", "line", name.as_str()]);
        check_secret(doc, &mut p, name, &base, "token", Need::Required);
    }
    for name in s.connections.webhook.keys() {
        let base = to_pointer(["connections", "webhook", name.as_str()]);
        check_secret(doc, &mut p, name, &base, "url", Need::Required);
        check_secret(doc, &mut p, name, &base, "signing_secret", Need::Optional);
    }
    check_literal_secrets(doc, &mut p);
    let failed = p
        .items
        .iter()
        .any(|i| i.severity == crate::diagnostic::Severity::Error);
    push_problems(doc, "", p, diags);
    (!failed).then_some(s)
}

/// Every secret of the settings — every value whose type is a secret, found from the
/// schema, connection headers included — taken from the environment or a file, never
/// written in the file. A webhook URL may be written out (an internal endpoint) unless
/// it carries a token itself.
fn check_literal_secrets(doc: &Doc<'_>, p: &mut Problems) {
    for pointer in schema::secret_pointers(&doc.value) {
        if doc.from_env.contains(&pointer) || doc.unresolved.contains(&pointer) {
            continue;
        }
        let segs = yaml::pointer_segments(&pointer);
        let seg = |i: usize| segs.get(i).map(String::as_str);
        let field = segs.last().map(String::as_str).unwrap_or_default();
        let prefix = match (seg(0), seg(1)) {
            (Some("connections"), Some("pce")) => "PCE",
            (Some("connections"), Some("smtp")) => "SMTP",
            (Some("connections"), Some("line")) => "LINE_CHANNEL",
            (Some("connections"), Some("webhook")) => "WEBHOOK",
            (Some("web"), _) => "VIGIL_WEB",
            _ => "VIGIL",
        };
        let var = format!("{prefix}_{}", field.to_uppercase().replace('-', "_"));
        let message = if segs.len() >= 2 && seg(segs.len() - 2) == Some("headers") {
            format!(
                "the connection's header `{field}` is written in the file: its value is a secret, so take it from the environment (`{field}: ${{{var}}}`); headers that are not secret belong in the sink's `headers`"
            )
        } else if prefix == "WEBHOOK" && field == "url" {
            let written = doc.value.pointer(&pointer).and_then(Value::as_str);
            let Some(why) = written.and_then(token_in_url) else {
                continue;
            };
            format!(
                "this webhook URL carries a secret ({why}) and is written in the file: take it from the environment (`url: ${{WEBHOOK_URL}}`) or a file (`url_file: /path`)"
            )
        } else {
            format!(
                "`{field}` is written in the file: take it from the environment (`{field}: ${{{var}}}`) or a file (`{field}_file: /path`)"
            )
        };
        p.error(pointer, codes::LITERAL_SECRET, message);
    }
}

/// Why a webhook URL written in a file holds a secret, if it does: a service whose
/// webhook URLs are their own credential (Slack, Teams, Discord, Google Chat, Telegram,
/// Azure Logic Apps), a user and password, or a query parameter named like a token.
fn token_in_url(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url.trim()).ok()?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some("a user and password".into());
    }
    let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
    let path = parsed.path();
    let service = [
        (
            "hooks.slack.com",
            "",
            "a Slack webhook URL is its own token",
        ),
        (
            "webhook.office.com",
            "",
            "a Teams webhook URL is its own token",
        ),
        (
            "outlook.office.com",
            "/webhook",
            "a Teams webhook URL is its own token",
        ),
        (
            "discord.com",
            "/api/webhooks",
            "a Discord webhook URL is its own token",
        ),
        (
            "discordapp.com",
            "/api/webhooks",
            "a Discord webhook URL is its own token",
        ),
        (
            "api.telegram.org",
            "/bot",
            "a Telegram bot URL holds the bot's token",
        ),
    ];
    for (domain, prefix, why) in service {
        if (host == domain || host.ends_with(&format!(".{domain}"))) && path.starts_with(prefix) {
            return Some(why.into());
        }
    }
    const NAMES: [&str; 12] = [
        "token",
        "access_token",
        "auth",
        "key",
        "api_key",
        "apikey",
        "sig",
        "signature",
        "secret",
        "code",
        "password",
        "pass",
    ];
    parsed
        .query_pairs()
        .find(|(k, v)| !v.is_empty() && NAMES.contains(&k.to_ascii_lowercase().as_str()))
        .map(|(k, _)| format!("the `{k}` query parameter"))
}

/// Whether a connection's secret must be set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

/// A secret field of connection `name` at `base`: present when required, and not given
/// both ways (its value and `<field>_file`). Whether it is written literally is checked
/// for every secret at once ([`check_literal_secrets`]).
fn check_secret(doc: &Doc<'_>, p: &mut Problems, name: &str, base: &str, field: &str, need: Need) {
    let pointer = format!("{base}/{field}");
    let has_value = doc.value.pointer(&pointer).is_some_and(|v| !v.is_null());
    let has_file = doc
        .value
        .pointer(&format!("{pointer}_file"))
        .is_some_and(|v| !v.is_null());
    if has_value && has_file {
        p.error_at_key(
            format!("{pointer}_file"),
            codes::INVALID_VALUE,
            format!("set either `{field}` or `{field}_file`, not both"),
        );
    }
    if need != Need::Optional && !has_value && !has_file {
        p.error_at_key(
            base.to_string(),
            codes::MISSING_KEY,
            format!("connection `{name}` needs `{field}` (from the environment) or `{field}_file`"),
        );
    }
    let file_pointer = format!("{pointer}_file");
    if doc.secret_files && !doc.unresolved.contains(&file_pointer) {
        let path = doc.value.pointer(&file_pointer).and_then(Value::as_str);
        if let Some(path) = path.filter(|p| !p.trim().is_empty()) {
            if let Err(why) = crate::secret::check_secret_file(field, Path::new(path)) {
                p.error(
                    file_pointer,
                    codes::SECRET_FILE,
                    format!("{why}; `vigil run` would stop here: create it (holding only the value, readable by the user vigil runs as) or point `{field}_file` at it"),
                );
            }
        }
    }
}

fn check_pipeline_doc(doc: &mut Doc<'_>, diags: &mut Vec<Diagnostic>) -> Option<PipelineConfig> {
    let problems = schema::check_pipeline(&doc.value, schema_cx(doc));
    let doc_level_ok = problems.is_empty();
    push_schema(doc, problems, diags);
    // Each component is checked on its own, so one broken component does not hide the
    // problems of the others: schema first, then (if that passed) its typed checks.
    let mut failed = !doc_level_ok;
    // The components that type, for the checks across them (field paths, templates)
    // that run even when another component has errors.
    let mut sources: IndexMap<String, crate::components::SourceConfig> = IndexMap::new();
    let mut stages: IndexMap<String, crate::components::StageConfig> = IndexMap::new();
    let mut sinks: IndexMap<String, crate::components::SinkConfig> = IndexMap::new();
    for family in Family::ALL {
        let Some(Value::Object(members)) = doc.value.get(family.key()).cloned() else {
            continue;
        };
        for (name, body) in &members {
            let prefix = to_pointer([family.key(), name.as_str()]);
            let problems = schema::check_component(family, &prefix, body, schema_cx(doc));
            if !problems.is_empty() {
                failed = true;
                push_schema(doc, problems, diags);
                continue;
            }
            if doc
                .unresolved
                .iter()
                .any(|u| u.starts_with(&format!("{prefix}/")))
            {
                // `--no-env` placeholders may not type: no errors about them, but what
                // types still takes part in the checks across components.
                match family {
                    Family::Sources => {
                        if let Ok(c) = serde_json::from_value(body.clone()) {
                            sources.insert(name.clone(), c);
                        }
                    }
                    Family::Stages => {
                        if let Ok(c) = serde_json::from_value(body.clone()) {
                            stages.insert(name.clone(), c);
                        }
                    }
                    Family::Sinks => {
                        if let Ok(c) = serde_json::from_value(body.clone()) {
                            sinks.insert(name.clone(), c);
                        }
                    }
                }
                continue;
            }
            let mut found = Problems::in_dir(doc.file.parent().unwrap_or(Path::new("")));
            let typed = match family {
                Family::Sources => {
                    typed_component::<crate::components::SourceConfig>(doc, &prefix, body, diags)
                        .map(|c| {
                            c.check(&mut found);
                            sources.insert(name.clone(), c);
                        })
                }
                Family::Stages => {
                    typed_component::<crate::components::StageConfig>(doc, &prefix, body, diags)
                        .map(|c| {
                            c.check(&mut found);
                            stages.insert(name.clone(), c);
                        })
                }
                Family::Sinks => typed_component::<crate::components::SinkConfig>(
                    doc, &prefix, body, diags,
                )
                .map(|c| {
                    c.check(&mut found);
                    sinks.insert(name.clone(), c);
                }),
            };
            failed |= typed.is_none() || found.has_errors();
            push_problems(doc, &prefix, found, diags);
        }
    }
    for (name, problems) in super::fields::check(&sources, &stages) {
        push_problems(doc, &to_pointer(["stages", name.as_str()]), problems, diags);
    }
    // Templates are rendered even when other components have errors (all problems in
    // one run), when every stage upstream of the sink typed (its groups are known).
    for (name, sink) in &sinks {
        let Some(group_by) = upstream_group_by(&sources, &stages, sink.inputs()) else {
            continue;
        };
        let mut found = Problems::in_dir(doc.file.parent().unwrap_or(Path::new("")));
        sink.check_rendering(&group_by, &mut found);
        failed |= found.has_errors();
        push_problems(doc, &to_pointer(["sinks", name.as_str()]), found, diags);
    }
    if failed {
        doc.clean = false;
        return None;
    }
    let Document::Pipeline(p) = typed::<Document>(doc, diags)? else {
        return None;
    };
    let mut problems = Problems::default();
    check_tests(&p, &mut problems);
    let failed = problems.has_errors();
    push_problems(doc, "", problems, diags);
    (!failed).then_some(p)
}

/// The `group_by` paths of the detection stages upstream of `inputs`: the groups the
/// alerts reaching a sink can have; `None` when a node upstream did not type (or names
/// nothing), so its groups are unknown.
fn upstream_group_by(
    sources: &IndexMap<String, crate::components::SourceConfig>,
    stages: &IndexMap<String, crate::components::StageConfig>,
    inputs: &[String],
) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut todo: Vec<&str> = inputs.iter().map(String::as_str).collect();
    while let Some(node) = todo.pop() {
        if seen.contains(&node) {
            continue;
        }
        seen.push(node);
        if let Some(stage) = stages.get(node) {
            for path in stage.group_by() {
                if !out.contains(path) {
                    out.push(path.clone());
                }
            }
            todo.extend(stage.inputs().iter().map(String::as_str));
        } else if !sources.contains_key(node) {
            return None;
        }
    }
    Some(out)
}

/// The test cases of a pipeline name its own sources and nodes (pointers
/// `/tests/<i>/...`, as in a pipeline document and in a `kind: test` document).
pub(crate) fn check_tests(p: &PipelineConfig, problems: &mut Problems) {
    let nodes: Vec<&str> = p
        .sources
        .keys()
        .chain(p.stages.keys())
        .chain(p.sinks.keys())
        .map(String::as_str)
        .collect();
    for (i, case) in p.tests.iter().enumerate() {
        let mut bounds = Problems::default();
        case.check(&mut bounds);
        for mut item in bounds.items {
            item.pointer = format!("/tests/{i}{}", item.pointer);
            problems.items.push(item);
        }
        for (j, input) in case.input.iter().enumerate() {
            if !p.sources.contains_key(&input.source) {
                let hint = suggest(&input.source, p.sources.keys().map(String::as_str))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                problems.error(
                    format!("/tests/{i}/input/{j}/source"),
                    codes::UNKNOWN_INPUT,
                    format!(
                        "`{}` is not a source of pipeline `{}`{hint}",
                        input.source, p.name
                    ),
                );
            }
        }
        for (j, exp) in case.expect.iter().enumerate() {
            if !nodes.contains(&exp.node.as_str()) {
                let hint = suggest(&exp.node, nodes.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                problems.error(
                    format!("/tests/{i}/expect/{j}/node"),
                    codes::UNKNOWN_INPUT,
                    format!(
                        "`{}` is not a node of pipeline `{}`{hint}",
                        exp.node, p.name
                    ),
                );
            }
        }
        if let Some(start) = &case.start
            && chrono::DateTime::parse_from_rfc3339(start).is_err()
        {
            problems.error(
                format!("/tests/{i}/start"),
                codes::INVALID_VALUE,
                format!("`{start}` is not an RFC 3339 time (e.g. `2026-01-01T09:00:00Z`)"),
            );
        }
    }
}

fn typed_component<T: serde::de::DeserializeOwned>(
    doc: &Doc<'_>,
    prefix: &str,
    body: &Value,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(body) {
        Ok(v) => Some(v),
        Err(e) => {
            let pointer = format!("{prefix}{}", serde_pointer(e.path()));
            let message = if doc.from_env.contains(&pointer) {
                "the value taken from the environment is not valid here".to_string()
            } else {
                e.inner().to_string()
            };
            diags.push(Diagnostic::error(
                doc.file,
                doc.value_pos(&pointer, &message),
                codes::INVALID_VALUE,
                message,
            ));
            None
        }
    }
}

/// The JSON pointer serde_path_to_error names.
pub(crate) fn serde_pointer(path: &serde_path_to_error::Path) -> String {
    let mut segs: Vec<String> = Vec::new();
    for s in path.iter() {
        match s {
            serde_path_to_error::Segment::Seq { index } => segs.push(index.to_string()),
            serde_path_to_error::Segment::Map { key } => segs.push(key.clone()),
            _ => {}
        }
    }
    to_pointer(segs.iter().map(String::as_str))
}

/// One node as the wiring checks see it, read from JSON so they run even when a
/// component has other errors.
struct WireNode {
    family: Family,
    name: String,
    /// `(pointer of the inputs entry, name)`.
    inputs: Vec<(String, String)>,
    /// `inputs` is missing, empty or not a list of names.
    inputs_broken: bool,
}

fn check_wiring(doc: &Doc<'_>, diags: &mut Vec<Diagnostic>) {
    let pname = doc.value.get("name").and_then(Value::as_str).unwrap_or("?");
    let mut nodes: Vec<WireNode> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let err = |diags: &mut Vec<Diagnostic>, pointer: &str, at_key: bool, code, msg: String| {
        diags.push(Diagnostic::error(
            doc.file,
            doc.pos(pointer, at_key),
            code,
            msg,
        ));
    };
    for family in Family::ALL {
        let Some(Value::Object(members)) = doc.value.get(family.key()) else {
            continue;
        };
        for (name, body) in members {
            let pointer = to_pointer([family.key(), name.as_str()]);
            if !valid_name(name) {
                err(
                    diags,
                    &pointer,
                    true,
                    codes::INVALID_NAME,
                    format!(
                        "{} name `{name}` may hold only letters, digits, `_` and `-`",
                        family.singular()
                    ),
                );
            }
            let inputs: Vec<(String, String)> = match body.get("inputs") {
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| {
                        v.as_str()
                            .map(|s| (format!("{pointer}/inputs/{i}"), s.to_string()))
                    })
                    .collect(),
                _ => Vec::new(),
            };
            nodes.push(WireNode {
                family,
                name: name.clone(),
                // A stage or sink without a usable `inputs` has its own error already.
                inputs_broken: family != Family::Sources && inputs.is_empty(),
                inputs,
            });
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        if let Some(&first) = index.get(n.name.as_str()) {
            let f = &nodes[first];
            err(
                diags,
                &to_pointer([n.family.key(), n.name.as_str()]),
                true,
                codes::DUPLICATE_NAME,
                format!(
                    "the name `{}` is already used by {} `{}`: names are unique within a pipeline",
                    n.name,
                    f.family.singular(),
                    f.name
                ),
            );
        } else {
            index.insert(n.name.as_str(), i);
        }
    }

    // Edges, and inputs that name nothing.
    let mut edges: Vec<(usize, usize)> = Vec::new();
    let mut broken: Vec<bool> = nodes.iter().map(|n| n.inputs_broken).collect();
    let readable: Vec<&str> = nodes
        .iter()
        .filter(|n| n.family != Family::Sinks)
        .map(|n| n.name.as_str())
        .collect();
    for (to, n) in nodes.iter().enumerate() {
        let mut seen_inputs: HashSet<&str> = HashSet::new();
        for (pointer, input) in &n.inputs {
            if !seen_inputs.insert(input.as_str()) {
                diags.push(Diagnostic::warning(
                    doc.file,
                    doc.pos(pointer, false),
                    codes::DUPLICATE_INPUT,
                    format!("`{input}` is listed twice in `inputs`; it is read once"),
                ));
                continue;
            }
            match index.get(input.as_str()) {
                Some(&from) if nodes[from].family == Family::Sinks => {
                    broken[to] = true;
                    err(
                        diags,
                        pointer,
                        false,
                        codes::UNKNOWN_INPUT,
                        format!("`{input}` is a sink: sinks cannot be read by other nodes"),
                    );
                }
                Some(&from) => edges.push((from, to)),
                None => {
                    broken[to] = true;
                    let hint = suggest(input, readable.iter().copied())
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_else(|| {
                            if readable.is_empty() {
                                String::new()
                            } else {
                                format!(" (sources and stages: {})", readable.join(", "))
                            }
                        });
                    err(
                        diags,
                        pointer,
                        false,
                        codes::UNKNOWN_INPUT,
                        format!("`{input}` names no source or stage of pipeline `{pname}`{hint}"),
                    );
                }
            }
        }
    }

    let roots: Vec<usize> = (0..nodes.len())
        .filter(|i| nodes[*i].family == Family::Sources)
        .collect();
    let analysis = analyse(nodes.len(), &edges, &roots);
    for cycle in &analysis.cycles {
        let members: BTreeSet<usize> = cycle.iter().copied().collect();
        // Report at the first `inputs` entry (in file order) that closes the loop.
        let closing = cycle
            .iter()
            .flat_map(|&to| {
                nodes[to]
                    .inputs
                    .iter()
                    .filter(|(_, name)| {
                        index
                            .get(name.as_str())
                            .is_some_and(|f| members.contains(f))
                    })
                    .map(|(p, _)| p.clone())
            })
            .min_by_key(|p| doc.pos(p, false));
        let names: Vec<String> = cycle
            .iter()
            .map(|&i| format!("`{}`", nodes[i].name))
            .collect();
        let message = if cycle.len() == 1 {
            format!("{} reads its own output: the graph must not loop", names[0])
        } else {
            format!(
                "{} feed each other in a loop: the graph must not loop",
                names.join(", ")
            )
        };
        if let Some(p) = closing {
            err(diags, &p, false, codes::CYCLE, message);
        }
    }

    // Sinks no source reaches (unless a broken `inputs` above already explains it; a
    // loop does not: a sink fed only by a loop that no source enters gets nothing).
    let upstream_broken = |start: usize| {
        let mut seen = vec![false; nodes.len()];
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut seen[n], true) {
                continue;
            }
            if broken[n] {
                return true;
            }
            stack.extend(
                edges
                    .iter()
                    .filter(|(_, to)| *to == n)
                    .map(|(from, _)| *from),
            );
        }
        false
    };
    for (i, n) in nodes.iter().enumerate() {
        if n.family == Family::Sinks && !analysis.reached[i] && !upstream_broken(i) {
            err(
                diags,
                &to_pointer(["sinks", n.name.as_str()]),
                true,
                codes::UNREACHABLE,
                format!(
                    "no source reaches sink `{}`: it would never receive anything",
                    n.name
                ),
            );
        }
    }

    // Nodes whose output nobody reads.
    let read: HashSet<usize> = edges.iter().map(|(from, _)| *from).collect();
    for (i, n) in nodes.iter().enumerate() {
        if n.family != Family::Sinks && !read.contains(&i) {
            diags.push(Diagnostic::warning(
                doc.file,
                doc.pos(&to_pointer([n.family.key(), n.name.as_str()]), true),
                codes::UNUSED,
                format!(
                    "nothing reads {} `{}`: add it to the `inputs` of a stage or sink, or remove it",
                    n.family.singular(),
                    n.name
                ),
            ));
        }
    }

    if !nodes.iter().any(|n| n.family == Family::Sources) {
        diags.push(Diagnostic::error(
            doc.file,
            doc.pos("/name", true),
            codes::EMPTY_PIPELINE,
            format!("pipeline `{pname}` has no sources"),
        ));
    } else if !nodes.iter().any(|n| n.family == Family::Sinks) {
        diags.push(Diagnostic::warning(
            doc.file,
            doc.pos("/name", true),
            codes::EMPTY_PIPELINE,
            format!("pipeline `{pname}` has no sinks: its results go nowhere"),
        ));
    }
}

/// Every `connection` of a component names an entry of the settings' `connections:` of
/// its family: `pce_*` sources a `pce` one, `mail` sinks an `smtp` one, `line` sinks a
/// `line` one, `webhook` sinks a `webhook` one.
fn check_connections(
    settings: &[(Doc<'_>, Option<SettingsConfig>)],
    pipelines: &[(Doc<'_>, Option<PipelineConfig>)],
    diags: &mut Vec<Diagnostic>,
) {
    let known = |family: &str| -> Vec<String> {
        settings
            .first()
            .and_then(|(d, _)| d.value.pointer(&format!("/connections/{family}")))
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    for (doc, _) in pipelines {
        for section in ["sources", "stages", "sinks"] {
            let Some(Value::Object(members)) = doc.value.get(section) else {
                continue;
            };
            for (name, body) in members {
                let kind = body.get("type").and_then(Value::as_str).unwrap_or_default();
                let (family, what) = match (section, kind) {
                    ("sources", k) if k.starts_with("pce_") => ("pce", "PCE"),
                    // A warm-up from the PCE's history.
                    ("stages", "new_term") => ("pce", "PCE"),
                    ("sinks", "mail") => ("smtp", "SMTP"),
                    ("sinks", "line") => ("line", "LINE"),
                    ("sinks", "webhook") => ("webhook", "webhook"),
                    _ => continue,
                };
                let at: &[&str] = if section == "stages" {
                    &["warm_up", "pce", "connection"]
                } else {
                    &["connection"]
                };
                let Some(conn) = at
                    .iter()
                    .try_fold(body, |v, k| v.get(*k))
                    .and_then(Value::as_str)
                else {
                    continue;
                };
                let known = known(family);
                if known.iter().any(|k| k == conn) {
                    continue;
                }
                let hint = suggest(conn, known.iter().map(String::as_str))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_else(|| {
                        if known.is_empty() {
                            format!(
                                " (define it under `connections: {family}:` in the `kind: settings` document)"
                            )
                        } else {
                            format!(" (known: {})", known.join(", "))
                        }
                    });
                let pointer = to_pointer(
                    [section, name.as_str()]
                        .into_iter()
                        .chain(at.iter().copied()),
                );
                diags.push(Diagnostic::error(
                    doc.file,
                    doc.pos(&pointer, false),
                    codes::UNKNOWN_CONNECTION,
                    format!("`{conn}` names no {what} connection{hint}"),
                ));
            }
        }
    }
}
