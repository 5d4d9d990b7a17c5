//! The JSON Schema of pipeline files, and schema checks that report exact positions.
//!
//! The schema is generated from the config types ([`super::Document`] and the component
//! enums of [`crate::components`]); `schemas/vigil.schema.json` is that output, kept fresh
//! by a test. Validation runs per document: the document against its kind's schema (with
//! component bodies left out), then every component against its own kind's schema, so an
//! unknown key in a stage is reported at that key, not as "matches none of the kinds".

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use serde_json::{Map, Value};

use super::yaml::pointer_segments;
use crate::diagnostic::codes;

/// Where the schema lives in the repository, relative to its root.
pub const SCHEMA_PATH: &str = "schemas/vigil.schema.json";

/// The schema of one document (`kind: settings` or `kind: pipeline`).
pub fn document_schema() -> Value {
    schemars::schema_for!(super::Document).to_value()
}

/// The schema as committed: pretty JSON with a trailing newline.
pub fn document_schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&editor_schema()).unwrap_or_default();
    s.push('\n');
    s
}

/// The name of the definition a `${VAR}` value matches in [`editor_schema`].
const INTERPOLATED: &str = "Interpolated";

/// The schema for files as written, before `${VAR}` interpolation (what editors check):
/// [`document_schema`] where every typed value (number, integer, boolean, a choice of
/// words) also accepts a whole `${VAR}` or `${VAR:-default}`. vigil itself checks the
/// interpolated values against the strict [`document_schema`].
pub fn editor_schema() -> Value {
    let mut root = document_schema();
    // `kind: test` documents (`*.test.yaml` files) are known to editors too; vigil reads
    // them apart from pipeline files (`vigil test`, `vigil validate`).
    let mut test = schemars::schema_for!(super::test_case::TestFile).to_value();
    if let (Some(defs), Some(Value::Object(test_defs))) = (
        root.get_mut("$defs").and_then(Value::as_object_mut),
        test.as_object_mut().and_then(|t| t.remove("$defs")),
    ) {
        for (k, v) in test_defs {
            defs.entry(k).or_insert(v);
        }
    }
    if let Some(t) = test.as_object_mut() {
        t.remove("$schema");
        t.remove("title");
    }
    if let Some(Value::Array(kinds)) = root.get_mut("oneOf") {
        kinds.push(test);
    }
    interpolable(&mut root);
    if let Some(defs) = root.get_mut("$defs").and_then(Value::as_object_mut) {
        defs.insert(
            INTERPOLATED.into(),
            serde_json::json!({
                "type": "string",
                "pattern": r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}$",
                "description": "`${VAR}` or `${VAR:-default}`: the value is taken from the environment when the file is read, then checked as the type this key wants.",
            }),
        );
    }
    root
}

/// Adds the `${VAR}` alternative to every typed value below `node`.
fn interpolable(node: &mut Value) {
    match node {
        Value::Array(items) => items.iter_mut().for_each(interpolable),
        Value::Object(map) => {
            if map.contains_key("const") {
                return; // a discriminator (`kind`, `type`) or one word of a choice
            }
            for v in map.values_mut() {
                interpolable(v);
            }
            let alternative = serde_json::json!({"$ref": format!("#/$defs/{INTERPOLATED}")});
            // A choice of words: one more alternative.
            if let Some(Value::Array(choices)) = map.get_mut("oneOf")
                && !choices.is_empty()
                && choices.iter().all(|c| c.get("const").is_some())
            {
                choices.push(alternative);
                return;
            }
            let typed = |t: &Value| matches!(t.as_str(), Some("integer" | "number" | "boolean"));
            let is_typed = map.get("type").is_some_and(|t| match t {
                Value::Array(ts) => ts.iter().any(typed),
                other => typed(other),
            }) || map.contains_key("enum");
            if !is_typed || map.contains_key("properties") {
                return;
            }
            // The annotations stay outside, for editors' hovers.
            let mut inner = Map::new();
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if !matches!(
                    k.as_str(),
                    "description" | "title" | "default" | "examples" | "deprecated"
                ) && let Some(v) = map.remove(&k)
                {
                    inner.insert(k, v);
                }
            }
            map.insert(
                "anyOf".into(),
                Value::Array(vec![Value::Object(inner), alternative]),
            );
        }
        _ => {}
    }
}

/// The three component families of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `sources:`
    Sources,
    /// `stages:`
    Stages,
    /// `sinks:`
    Sinks,
}

impl Family {
    /// All of them, in pipeline order.
    pub const ALL: [Family; 3] = [Family::Sources, Family::Stages, Family::Sinks];

    /// The key in a pipeline document.
    pub fn key(self) -> &'static str {
        match self {
            Family::Sources => "sources",
            Family::Stages => "stages",
            Family::Sinks => "sinks",
        }
    }

    /// Singular, for messages.
    pub fn singular(self) -> &'static str {
        match self {
            Family::Sources => "source",
            Family::Stages => "stage",
            Family::Sinks => "sink",
        }
    }

    fn def_name(self) -> &'static str {
        match self {
            Family::Sources => "SourceConfig",
            Family::Stages => "StageConfig",
            Family::Sinks => "SinkConfig",
        }
    }
}

/// One registered component kind, as the schema describes it.
#[derive(Debug, Clone)]
pub struct KindInfo {
    /// The `type` name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its schema (with the shared definitions attached).
    pub schema: Value,
    /// Example configurations (without `type`), from the config type.
    pub examples: Vec<Value>,
}

struct Schemas {
    settings: (Value, Validator),
    pipeline: (Value, Validator),
    kinds: HashMap<Family, Vec<Kind>>,
    /// The shared definitions, attached to a kind's schema when it is compiled.
    defs: Value,
}

/// A kind's schema, compiled when a document first uses the kind: a configuration uses a
/// few of the kinds, and each compiled kind holds every shared definition (about a
/// quarter of a megabyte each, a daemon's lifetime long).
struct Kind {
    /// Its name, description and examples; `schema` without the shared definitions.
    info: KindInfo,
    /// Its schema with the shared definitions, and that compiled.
    compiled: OnceLock<(Value, Validator)>,
}

impl Kind {
    fn compiled(&self, defs: &Value) -> &(Value, Validator) {
        self.compiled.get_or_init(|| {
            let schema = with_defs(&self.info.schema, defs);
            let validator = compile(&schema);
            (schema, validator)
        })
    }
}

fn with_defs(schema: &Value, defs: &Value) -> Value {
    let mut s = schema.clone();
    if let Value::Object(m) = &mut s {
        m.insert("$defs".into(), defs.clone());
    }
    s
}

fn compile(schema: &Value) -> Validator {
    // The schema is generated from our own types: failing to compile it is a bug in vigil,
    // caught by the schema tests, never a user error.
    jsonschema::validator_for(schema).expect("the generated schema compiles")
}

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let root = document_schema();
        let defs = root
            .get("$defs")
            .cloned()
            .unwrap_or(Value::Object(Map::new()));
        let variants = root
            .get("oneOf")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let doc_kind = |v: &Value| {
            v.pointer("/properties/kind/const")
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let find = |k: &str| {
            variants
                .iter()
                .find(|v| doc_kind(v).as_deref() == Some(k))
                .cloned()
                .unwrap_or(Value::Bool(true))
        };
        let settings_schema = with_defs(&find("settings"), &defs);
        let pipeline_schema = with_defs(&find("pipeline"), &defs);
        let settings = (settings_schema.clone(), compile(&settings_schema));
        let pipeline = (pipeline_schema.clone(), compile(&pipeline_schema));
        let mut kinds = HashMap::new();
        for family in Family::ALL {
            let list = defs
                .pointer(&format!("/{}/oneOf", family.def_name()))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut infos = Vec::new();
            for v in list {
                let Some(name) = v.pointer("/properties/type/const").and_then(Value::as_str) else {
                    continue;
                };
                let info = KindInfo {
                    name: name.to_string(),
                    description: v
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    examples: v
                        .get("examples")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                    schema: v.clone(),
                };
                infos.push(Kind {
                    info,
                    compiled: OnceLock::new(),
                });
            }
            kinds.insert(family, infos);
        }
        Schemas {
            settings,
            pipeline,
            kinds,
            defs,
        }
    })
}

/// Every registered kind of a family.
pub fn kinds(family: Family) -> Vec<KindInfo> {
    let all = schemas();
    all.kinds[&family]
        .iter()
        .map(|k| KindInfo {
            schema: with_defs(&k.info.schema, &all.defs),
            ..k.info.clone()
        })
        .collect()
}

/// A schema problem, before it is given a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    /// JSON pointer of the offending value (or of the key, when `at_key`).
    pub pointer: String,
    /// Point at the key rather than the value.
    pub at_key: bool,
    /// A code from [`codes`].
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

/// What the schema checks need to know about where values came from.
#[derive(Debug, Default, Clone, Copy)]
pub struct Context<'a> {
    /// Pointers whose values came from the environment (never echo them).
    pub from_env: Option<&'a BTreeSet<String>>,
    /// Pointers left unresolved by `--no-env` (skip their type checks).
    pub unresolved: Option<&'a BTreeSet<String>>,
}

/// Checks a `kind: settings` document.
pub fn check_settings(doc: &Value, cx: Context<'_>) -> Vec<SchemaProblem> {
    let (schema, validator) = &schemas().settings;
    run(validator, schema, doc, "", cx, |_| true)
}

/// Checks a `kind: pipeline` document; component bodies are checked separately by
/// [`check_component`].
pub fn check_pipeline(doc: &Value, cx: Context<'_>) -> Vec<SchemaProblem> {
    let (schema, validator) = &schemas().pipeline;
    run(validator, schema, doc, "", cx, |pointer| {
        let segs = pointer_segments(pointer);
        !(segs.len() >= 2 && Family::ALL.iter().any(|f| f.key() == segs[0]))
    })
}

/// Checks one component (`/stages/burst`, ...) against the schema of its `type`. Reports
/// an unknown or missing `type` itself.
pub fn check_component(
    family: Family,
    pointer: &str,
    body: &Value,
    cx: Context<'_>,
) -> Vec<SchemaProblem> {
    let Some(obj) = body.as_object() else {
        return vec![SchemaProblem {
            pointer: pointer.to_string(),
            at_key: false,
            code: codes::WRONG_TYPE,
            message: format!(
                "expected a mapping with a `type`, found {}",
                type_name(body)
            ),
        }];
    };
    let all = schemas();
    let kinds = &all.kinds[&family];
    let names: Vec<&str> = kinds.iter().map(|k| k.info.name.as_str()).collect();
    let ty = match obj.get("type") {
        None => {
            return vec![SchemaProblem {
                pointer: pointer.to_string(),
                at_key: false,
                code: codes::MISSING_KEY,
                message: format!("missing required key `type` (one of: {})", names.join(", ")),
            }];
        }
        Some(Value::String(s)) => s,
        Some(other) => {
            return vec![SchemaProblem {
                pointer: format!("{pointer}/type"),
                at_key: false,
                code: codes::WRONG_TYPE,
                message: format!("expected a string, found {}", type_name(other)),
            }];
        }
    };
    let Some(kind) = kinds.iter().find(|k| &k.info.name == ty) else {
        let hint = suggest(ty, names.iter().copied())
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return vec![SchemaProblem {
            pointer: format!("{pointer}/type"),
            at_key: false,
            code: codes::UNKNOWN_TYPE,
            message: format!(
                "unknown {} type `{ty}` (known: {}){hint}",
                family.singular(),
                names.join(", ")
            ),
        }];
    };
    let (schema, validator) = kind.compiled(&all.defs);
    run(validator, schema, body, pointer, cx, |_| true)
}

fn run(
    validator: &Validator,
    schema: &Value,
    instance: &Value,
    prefix: &str,
    cx: Context<'_>,
    keep: impl Fn(&str) -> bool,
) -> Vec<SchemaProblem> {
    let mut out = Vec::new();
    for err in validator.iter_errors(instance) {
        let pointer = err.instance_path().as_str().to_string();
        if !keep(&pointer) {
            continue;
        }
        describe(&err, schema, instance, prefix, cx, &mut out);
    }
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn expected_types(kind: &jsonschema::error::TypeKind) -> String {
    let names: Vec<String> = match kind {
        jsonschema::error::TypeKind::Single(t) => vec![t.to_string()],
        jsonschema::error::TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect(),
    };
    let has_other = names.iter().any(|n| n != "null");
    let pretty: Vec<&str> = names
        .iter()
        .filter(|n| !(has_other && n.as_str() == "null"))
        .map(|n| match n.as_str() {
            "object" => "a mapping",
            "array" => "a list",
            "string" => "a string",
            "integer" => "an integer",
            "number" => "a number",
            "boolean" => "a boolean (true or false)",
            "null" => "nothing (null)",
            _ => "a value",
        })
        .collect();
    pretty.join(" or ")
}

pub use crate::diagnostic::suggest;

fn describe(
    err: &ValidationError<'_>,
    schema: &Value,
    instance: &Value,
    prefix: &str,
    cx: Context<'_>,
    out: &mut Vec<SchemaProblem>,
) {
    let rel = err.instance_path().as_str();
    let pointer = format!("{prefix}{rel}");
    if cx.unresolved.is_some_and(|u| u.contains(&pointer)) {
        return;
    }
    let secret = cx.from_env.is_some_and(|f| f.contains(&pointer));
    let here = instance.pointer(rel);
    let push = |out: &mut Vec<SchemaProblem>, code, message: String| {
        out.push(SchemaProblem {
            pointer: pointer.clone(),
            at_key: false,
            code,
            message,
        });
    };
    match err.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let known: Vec<String> = here.map(|_| known_keys(err, schema)).unwrap_or_default();
            for key in unexpected {
                let hint = suggest(key, known.iter().map(String::as_str))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .or_else(|| {
                        (!known.is_empty()).then(|| format!(" (known keys: {})", known.join(", ")))
                    })
                    .unwrap_or_default();
                out.push(SchemaProblem {
                    pointer: format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1")),
                    at_key: true,
                    code: codes::UNKNOWN_KEY,
                    message: format!("unknown key `{key}`{hint}"),
                });
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            push(
                out,
                codes::MISSING_KEY,
                format!("missing required key `{name}`"),
            );
        }
        ValidationErrorKind::Type { kind } => {
            let found = here.map_or("nothing", type_name);
            push(
                out,
                codes::WRONG_TYPE,
                format!("expected {}, found {found}", expected_types(kind)),
            );
        }
        ValidationErrorKind::Enum { options } => {
            let opts: Vec<String> = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|o| {
                            format!(
                                "`{}`",
                                o.as_str().map_or_else(|| o.to_string(), str::to_owned)
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            push(
                out,
                codes::INVALID_VALUE,
                format!("expected one of {}", opts.join(", ")),
            );
        }
        ValidationErrorKind::Constant { expected_value } => {
            push(
                out,
                codes::INVALID_VALUE,
                format!("expected `{expected_value}`"),
            );
        }
        ValidationErrorKind::Minimum { limit }
        | ValidationErrorKind::ExclusiveMinimum { limit }
            if limit.as_f64().is_some_and(|l| l <= 1.0) =>
        {
            let name = pointer_segments(&pointer).pop().unwrap_or_default();
            push(
                out,
                codes::NON_POSITIVE,
                format!("`{name}` must be greater than zero"),
            );
        }
        ValidationErrorKind::MinItems { limit } => {
            push(
                out,
                codes::INVALID_VALUE,
                format!(
                    "needs at least {limit} item{}",
                    if *limit == 1 { "" } else { "s" }
                ),
            );
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            // A choice between constants (an enum whose values have docs): list them.
            let mut constants = Vec::new();
            let all_constants = context.iter().all(|branch| {
                branch.iter().all(|e| match e.kind() {
                    ValidationErrorKind::Constant { expected_value }
                        if e.instance_path().as_str() == rel =>
                    {
                        constants.push(format!(
                            "`{}`",
                            expected_value
                                .as_str()
                                .map_or_else(|| expected_value.to_string(), str::to_owned)
                        ));
                        true
                    }
                    _ => false,
                }) && !branch.is_empty()
            });
            if all_constants && !constants.is_empty() {
                push(
                    out,
                    codes::INVALID_VALUE,
                    format!("expected one of {}", constants.join(", ")),
                );
                return;
            }
            // Pick the alternative that fits the value's type best and report its errors.
            let same_type: Vec<&Vec<ValidationError<'static>>> = context
                .iter()
                .filter(|branch| !branch.iter().any(|e| type_mismatch(e, rel)))
                .collect();
            if let Some(best) = same_type.iter().min_by_key(|b| b.len()) {
                for e in best.iter() {
                    describe(e, schema, instance, prefix, cx, out);
                }
            } else {
                let mut wanted: Vec<String> = Vec::new();
                collect_wanted(context, &mut wanted);
                let found = here.map_or("nothing", type_name);
                push(
                    out,
                    codes::WRONG_TYPE,
                    format!("expected {}, found {found}", wanted.join(" or ")),
                );
            }
        }
        _ => {
            let message = if secret {
                "the value taken from the environment is not valid here".to_string()
            } else {
                err.to_string()
            };
            push(out, codes::INVALID_VALUE, message);
        }
    }
}

fn collect_wanted(context: &[Vec<ValidationError<'static>>], wanted: &mut Vec<String>) {
    for branch in context {
        for e in branch {
            match e.kind() {
                ValidationErrorKind::Type { kind } => {
                    let t = expected_types(kind);
                    if !wanted.contains(&t) {
                        wanted.push(t);
                    }
                }
                ValidationErrorKind::AnyOf { context }
                | ValidationErrorKind::OneOfNotValid { context } => {
                    collect_wanted(context, wanted);
                }
                _ => {}
            }
        }
    }
}

/// Whether `e` says the value at `rel` has the wrong type altogether (directly, or in
/// every alternative of a nested `anyOf`/`oneOf`).
fn type_mismatch(e: &ValidationError<'_>, rel: &str) -> bool {
    if e.instance_path().as_str() != rel {
        return false;
    }
    match e.kind() {
        ValidationErrorKind::Type { .. } => true,
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            context
                .iter()
                .all(|b| b.iter().any(|x| type_mismatch(x, rel)))
        }
        _ => false,
    }
}

/// The keys allowed where an `additionalProperties: false` failed, read from the schema
/// that was validated against.
fn known_keys(err: &ValidationError<'_>, schema: &Value) -> Vec<String> {
    let path = err.schema_path().as_str();
    let Some(base) = path.strip_suffix("/additionalProperties") else {
        return Vec::new();
    };
    match schema.pointer(&format!("{base}/properties")) {
        Some(Value::Object(props)) => props.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The JSON pointers of every value of a `kind: settings` document whose type is a
/// secret ([`crate::secret::Secret`]): found from the schema generated from the types, so
/// a secret field added to a connection is covered without being listed anywhere.
pub fn secret_pointers(doc: &Value) -> Vec<String> {
    let (schema, _) = &schemas().settings;
    let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
    let mut out = Vec::new();
    secrets_below(schema, doc, "", &defs, 0, &mut out);
    out.sort();
    out.dedup();
    out
}

/// The name of the secret type's schema.
const SECRET_DEF: &str = "#/$defs/Secret";

fn secrets_below(
    schema: &Value,
    value: &Value,
    pointer: &str,
    defs: &Value,
    depth: usize,
    out: &mut Vec<String>,
) {
    // The schema is our own and shallow; the bound only guards against a cycle.
    if depth > 32 {
        return;
    }
    let Some(node) = schema.as_object() else {
        return;
    };
    if let Some(target) = node.get("$ref").and_then(Value::as_str) {
        if target == SECRET_DEF {
            if !value.is_null() {
                out.push(pointer.to_string());
            }
            return;
        }
        if let Some(def) = target
            .strip_prefix("#/$defs/")
            .and_then(|name| defs.get(name))
        {
            secrets_below(def, value, pointer, defs, depth + 1, out);
        }
        return;
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for alternative in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            secrets_below(alternative, value, pointer, defs, depth + 1, out);
        }
    }
    let Some(fields) = value.as_object() else {
        return;
    };
    let properties = node.get("properties").and_then(Value::as_object);
    let additional = node.get("additionalProperties").filter(|a| a.is_object());
    for (key, v) in fields {
        let field_schema = properties.and_then(|p| p.get(key)).or(additional);
        if let Some(s) = field_schema {
            let child = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
            secrets_below(s, v, &child, defs, depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The secrets are found by their type: every secret field of every connection kind,
    /// the web token and each connection header — and nothing else.
    #[test]
    fn secret_pointers_follow_the_types() {
        let doc = json!({
            "kind": "settings",
            "web": {"listen": "127.0.0.1:5001", "token": "t"},
            "connections": {
                "pce": {"lab": {"url": "https://pce:8443", "api_key": "k", "api_secret": "s"}},
                "smtp": {"relay": {"host": "h", "username": "u", "password": "p", "from": "f@x"}},
                "line": {"ops": {"token": "l"}},
                "webhook": {"h/1": {"url": "https://x", "signing_secret": "s",
                                    "headers": {"Authorization": "a", "X-Org": "o"}}}
            }
        });
        assert_eq!(
            secret_pointers(&doc),
            [
                "/connections/line/ops/token",
                "/connections/pce/lab/api_key",
                "/connections/pce/lab/api_secret",
                "/connections/smtp/relay/password",
                "/connections/webhook/h~11/headers/Authorization",
                "/connections/webhook/h~11/headers/X-Org",
                "/connections/webhook/h~11/signing_secret",
                "/connections/webhook/h~11/url",
                "/web/token",
            ]
        );
        assert!(secret_pointers(&json!({"kind": "settings"})).is_empty());
    }
}
