//! `vigil validate`: exact diagnostics for every problem class, all problems in one run,
//! exit codes, output formats, the schema contract, and the component registry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::{Value, json};
use vigil::components::{SinkConfig, SourceConfig, StageConfig};
use vigil::config::diagnostic::codes;
use vigil::config::schema::{self, Family};
use vigil::config::{Env, LoadOptions, load_paths, load_sources};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn vigil() -> Command {
    let mut c = Command::cargo_bin("vigil").expect("binary built");
    c.current_dir(root());
    c
}

fn no_env() -> LoadOptions {
    LoadOptions {
        env: Env::Map(HashMap::new()),
        secret_files: false,
    }
}

/// `# expect: LINE:COL severity[code]` lines at the end of a fixture.
fn expectations(path: &Path) -> Vec<String> {
    prefixed(path, "# expect: ")
}

/// The lines of a fixture starting with `prefix`, without it.
fn prefixed(path: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("fixture readable")
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(str::to_owned)
        .collect()
}

fn invalid_fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/invalid"))
        .expect("fixtures dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_invalid_fixture_reports_exactly_its_expected_diagnostics() {
    let files = invalid_fixtures();
    assert!(files.len() >= 10, "fixtures missing: {files:?}");
    let mut covered = std::collections::BTreeSet::new();
    for file in &files {
        let expected = expectations(file);
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` lines",
            file.display()
        );
        let loaded = load_paths(std::slice::from_ref(file), &no_env()).expect("readable");
        let actual: Vec<String> = loaded
            .diagnostics
            .iter()
            .map(|d| {
                let sev = if d.is_error() { "error" } else { "warning" };
                covered.insert(d.code);
                let at = format!("{}:{} {}[{}]", d.line, d.column, sev, d.code);
                if &d.file == file {
                    return at;
                }
                // A problem inside a file the fixture names (a script): `path:` first,
                // relative to the fixture's directory.
                let dir = file.parent().expect("fixture dir");
                let other = d.file.strip_prefix(dir).unwrap_or_else(|_| {
                    panic!("{} is not beside {}", d.file.display(), file.display())
                });
                format!("{}:{at}", other.display())
            })
            .collect();
        assert_eq!(actual, expected, "diagnostics of {}", file.display());
        // `# message: LINE:COL text`: the exact words a user reads there.
        let messages: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| &d.file == file)
            .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
            .collect();
        for want in prefixed(file, "# message: ") {
            assert!(
                messages.contains(&want),
                "{}: no diagnostic `{want}` among {messages:#?}",
                file.display()
            );
        }
        assert!(loaded.config.is_none() || !loaded.has_errors());
    }
    // One fixture at least per problem class `vigil validate` promises.
    for code in [
        codes::YAML,
        codes::DUPLICATE_KEY,
        codes::WRONG_TYPE,
        codes::UNKNOWN_KEY,
        codes::MISSING_KEY,
        codes::UNKNOWN_TYPE,
        codes::UNKNOWN_INPUT,
        codes::CYCLE,
        codes::UNREACHABLE,
        codes::UNUSED,
        codes::NON_POSITIVE,
        codes::ENV_UNSET,
        codes::ENV_SYNTAX,
        codes::UNKNOWN_KIND,
        codes::DUPLICATE_NAME,
        codes::DUPLICATE_INPUT,
        codes::LITERAL_SECRET,
        codes::UNKNOWN_CONNECTION,
        codes::SCRIPT,
        codes::TOO_LARGE,
        codes::PLAINTEXT_AUTH,
        codes::OUTSIDE_DIR,
        codes::INSECURE_URL,
        codes::UNKNOWN_FIELD,
    ] {
        assert!(covered.contains(code), "no fixture covers `{code}`");
    }
}

#[test]
fn multi_error_file_reports_every_problem_in_one_run_through_the_binary() {
    let file = "tests/fixtures/invalid/multi-error.yaml";
    let out = vigil()
        .args(["validate", "--format", "json", file])
        .env_remove("VIGIL_TEST_UNSET_DIR")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json output");
    let got: Vec<String> = v["diagnostics"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| {
            assert_eq!(d["file"], file);
            format!(
                "{}:{} {}[{}]",
                d["line"],
                d["column"],
                d["severity"].as_str().unwrap(),
                d["code"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(got, expectations(&root().join(file)));
    assert_eq!(v["errors"], 10);
    assert_eq!(v["warnings"], 1);
}

#[test]
fn text_output_is_file_line_col_code_message() {
    let out = vigil()
        .args(["validate", "tests/fixtures/invalid/unknown-key.yaml"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "tests/fixtures/invalid/unknown-key.yaml:7:5: error[unknown-key]: unknown key `inptus`; did you mean `inputs`?\n\
         tests/fixtures/invalid/unknown-key.yaml:13:9: error[unknown-key]: unknown key `regx`; did you mean `regex`?\n\
         2 errors, 0 warnings\n"
    );
}

#[test]
fn github_format_writes_annotations() {
    let out = vigil()
        .args([
            "validate",
            "--format",
            "github",
            "tests/fixtures/invalid/unknown-type.yaml",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "::error file=tests/fixtures/invalid/unknown-type.yaml,line=4,col=14,title=unknown-type::unknown source type `filez` (known: file, stdin, exec, host_metrics, port_counters, pce_health, pce_events, pce_traffic, internal, syslog); did you mean `file`?\n"
    );
}

/// Issue "Hostile input": a value of the file that ends up in a diagnostic (here an
/// unknown source type holding `\x1b[2J`, a new line and a workflow command) reaches
/// neither the terminal as an escape sequence nor the CI log as a command of its own.
#[test]
fn escape_sequences_and_workflow_commands_from_the_file_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        "kind: pipeline\nname: p\nsources:\n  in:\n    type: \"x\\x1b[2J\\n::error::pwned\"\nsinks:\n  out: {type: stdout, inputs: [in]}\n",
    )
    .unwrap();
    let run = |format: &str| {
        let out = vigil()
            .args(["validate", "--format", format])
            .arg(&file)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run("text");
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(
        text.contains("unknown source type `x\\u{1b}[2J\\n::error::pwned`"),
        "{text:?}"
    );
    assert!(text.lines().all(|l| !l.starts_with("::")), "{text:?}");
    assert_eq!(text.lines().count(), 2, "{text:?}");

    let github = run("github");
    assert!(!github.contains('\u{1b}'), "{github:?}");
    assert!(
        github.contains("unknown source type `x\\u{1b}[2J%0A::error::pwned`"),
        "{github:?}"
    );
    assert_eq!(github.lines().count(), 1, "{github:?}");
    assert!(github.starts_with("::error file="), "{github:?}");
}

/// Issue "Hostile input": a template set named `../../etc/passwd`, and a template file
/// that is a symbolic link to a file outside, are refused with what to do.
#[test]
fn template_sets_outside_the_pipeline_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(pipelines.join("templates")).unwrap();
    std::fs::write(dir.path().join("secret.txt"), "not a template").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        dir.path().join("secret.txt"),
        pipelines.join("templates/linked.subject.hbs"),
    )
    .unwrap();
    let pipeline = |template: &str| {
        format!(
            "kind: settings\nconnections:\n  smtp:\n    relay: {{ host: localhost }}\n---\nkind: pipeline\nname: p\nsources:\n  in: {{type: stdin}}\nsinks:\n  mail:\n    type: mail\n    inputs: [in]\n    connection: relay\n    from: vigil@example.com\n    to: [soc@example.com]\n    template: {template}\n"
        )
    };
    let file = pipelines.join("p.yaml");
    let validate = || {
        let out = vigil().arg("validate").arg(&file).output().expect("runs");
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };

    std::fs::write(&file, pipeline("../../etc/passwd")).unwrap();
    let (code, out) = validate();
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        out,
        format!(
            "{}:17:15: error[outside-dir]: template set `../../etc/passwd`: `templates/../../etc/passwd.subject.hbs` has a `..` step: name a file inside the pipeline file's directory {} (copy it there)\n1 error, 0 warnings\n",
            file.display(),
            pipelines.display()
        )
    );

    #[cfg(unix)]
    {
        std::fs::write(&file, pipeline("linked")).unwrap();
        let (code, out) = validate();
        assert_eq!(code, Some(1), "{out}");
        let real = dir.path().canonicalize().unwrap().join("secret.txt");
        assert!(
            out.starts_with(&format!(
                "{}:17:15: error[outside-dir]: template set `linked`: `templates/linked.subject.hbs` leads through a symbolic link to {}, outside the pipeline file's directory",
                file.display(),
                real.display()
            )),
            "{out}"
        );
        assert!(!out.contains("not a template"), "{out}");
    }
}

/// Issue "Hostile input": an SMTP login over `tls: none` would send the password in
/// clear; refused at `tls:`, saying what to set, unless `allow_plaintext_auth: true`.
#[test]
fn an_smtp_login_without_tls_is_refused_unless_allowed() {
    let settings = |extra: &str| {
        format!(
            "kind: settings\nconnections:\n  smtp:\n    relay:\n      host: smtp.example.com\n      tls: none\n      username: vigil\n      password_file: /etc/vigil/smtp.pass\n{extra}"
        )
    };
    let load = |text: String| load_sources(&[(PathBuf::from("s.yaml"), text)], &no_env());
    let loaded = load(settings(""));
    let got: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_text()).collect();
    assert_eq!(
        got,
        vec![
            "s.yaml:6:12: error[plaintext-auth]: connection `relay` logs in (`username`) without TLS (`tls: none`): the password would cross the network in clear; set `tls: starttls` or `tls: implicit`, or `allow_plaintext_auth: true` for a relay on this machine or a network you trust"
        ]
    );
    let loaded = load(settings("      allow_plaintext_auth: true\n"));
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
}

#[test]
fn exit_codes() {
    // The shipped pipelines are valid, without warnings, once their secret files exist.
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("key"), "api_1a2b\n").unwrap();
    std::fs::write(secrets.path().join("secret"), "s3cr3t-value\n").unwrap();
    vigil()
        .args(["validate", "pipelines/"])
        .env("PCE_API_KEY_FILE", secrets.path().join("key"))
        .env("PCE_API_SECRET_FILE", secrets.path().join("secret"))
        .assert()
        .code(0);
    vigil()
        .args(["validate", "--deny-warnings", "examples/sample-flows"])
        .assert()
        .code(0);
    vigil()
        .args(["validate", "--deny-warnings", "examples/pce-syslog"])
        .assert()
        .code(0);
    vigil()
        .args(["validate", "--deny-warnings"])
        .env("PCE_API_KEY_FILE", secrets.path().join("key"))
        .env("PCE_API_SECRET_FILE", secrets.path().join("secret"))
        .assert()
        .code(0);
    // Without them, `vigil run` would stop: validate says so.
    vigil()
        .args(["validate", "pipelines/"])
        .env("PCE_API_KEY_FILE", secrets.path().join("missing"))
        .env("PCE_API_SECRET_FILE", secrets.path().join("secret"))
        .assert()
        .code(1);
    // Warnings alone pass, unless denied.
    vigil()
        .args(["validate", "tests/fixtures/invalid/unused.yaml"])
        .assert()
        .code(0);
    vigil()
        .args([
            "validate",
            "--deny-warnings",
            "tests/fixtures/invalid/unused.yaml",
        ])
        .assert()
        .code(1);
    // An unknown field is a warning: CI fails on it with `--deny-warnings`.
    vigil()
        .args([
            "validate",
            "--no-env",
            "tests/fixtures/invalid/unknown-field.yaml",
        ])
        .assert()
        .code(0)
        .stdout(predicates::str::contains("did you mean `service.port`?"));
    vigil()
        .args([
            "validate",
            "--deny-warnings",
            "--no-env",
            "tests/fixtures/invalid/unknown-field.yaml",
        ])
        .assert()
        .code(1);
    // Usage and I/O errors.
    vigil().args(["validate", "no/such/dir"]).assert().code(2);
    vigil()
        .args(["validate", "--format", "xml"])
        .assert()
        .code(2);
    let empty = tempfile::tempdir().unwrap();
    vigil().arg("validate").arg(empty.path()).assert().code(2);
}

/// A secret file that is missing, unreadable or empty is an error at the setting that
/// names it (`vigil run` would stop there), never showing the secret; `--no-env` (CI,
/// where secrets are absent) does not look at the files.
#[test]
fn missing_unreadable_or_empty_secret_files_are_errors_at_their_setting() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "api_1a2b\n").unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cr3t-value-never-shown\n").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, " \n").unwrap();
    // A directory cannot be read as a file, even by root.
    let unreadable = dir.path().join("a-directory");
    std::fs::create_dir(&unreadable).unwrap();
    let file = dir.path().join("settings.yaml");
    std::fs::write(
        &file,
        format!(
            "kind: settings\nconnections:\n  pce:\n    ok:\n      url: https://pce.example.com:8443\n      api_key_file: {key}\n      api_secret_file: {secret}\n    bad:\n      url: https://pce.example.com:8443\n      api_key_file: {missing}\n      api_secret_file: {unreadable}\n  smtp:\n    relay:\n      host: smtp.example.com\n      from: vigil@example.com\n      username: vigil\n      password_file: {empty}\n",
            key = key.display(),
            secret = secret.display(),
            missing = dir.path().join("missing").display(),
            unreadable = unreadable.display(),
            empty = empty.display(),
        ),
    )
    .unwrap();
    let out = vigil().arg("validate").arg(&file).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let f = file.display();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with(&format!(
            "{f}:10:21: error[secret-file]: cannot read `api_key_file` {}: ",
            dir.path().join("missing").display()
        )),
        "{text}"
    );
    assert!(
        lines[0].ends_with("`vigil run` would stop here: create it (holding only the value, readable by the user vigil runs as) or point `api_key_file` at it"),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{f}:11:24: error[secret-file]: cannot read `api_secret_file` {}: ",
            unreadable.display()
        )),
        "{text}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "{f}:17:22: error[secret-file]: `password_file` {} is empty;",
            empty.display()
        )),
        "{text}"
    );
    assert_eq!(lines[3], "3 errors, 0 warnings");
    assert!(
        !text.contains("s3cr3t") && !text.contains("api_1a2b"),
        "{text}"
    );
    // Without the environment the files are not looked at.
    vigil()
        .args(["validate", "--no-env"])
        .arg(&file)
        .assert()
        .code(0);
}

/// `http://` is refused at the url unless the connection opts in with `insecure_http`.
#[test]
fn a_plain_http_pce_url_is_refused_unless_opted_in() {
    let out = vigil()
        .args([
            "validate",
            "--no-env",
            "tests/fixtures/invalid/insecure-url.yaml",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(
        text,
        "tests/fixtures/invalid/insecure-url.yaml:5:12: error[insecure-url]: PCE connection settings: url `http://pce.example.com:8443` uses plain http://: the API key would cross the network in clear; use https:// (e.g. https://pce.example.com:8443), or set `insecure_http: true` for a TLS-terminating proxy on this machine or a test PCE\n1 error, 0 warnings\n"
    );
}

#[test]
fn no_env_checks_syntax_without_requiring_variables() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        "kind: pipeline\nname: p\nsources:\n  in:\n    type: file\n    path: ${VIGIL_TEST_NOPE_PATH}\n    max_line_bytes: ${VIGIL_TEST_NOPE_MAX}\n    poll_interval: ${VIGIL_TEST_NOPE_POLL:-1s}\nsinks:\n  out: {type: stdout, inputs: [in]}\n",
    )
    .unwrap();
    let with_env = vigil().arg("validate").arg(&file).output().unwrap();
    assert_eq!(with_env.status.code(), Some(1));
    let text = String::from_utf8(with_env.stdout).unwrap();
    assert!(text.contains(":6:11: error[env-unset]"), "{text}");
    assert!(text.contains(":7:21: error[env-unset]"), "{text}");
    let out = vigil()
        .args(["validate", "--no-env"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A syntax error is still an error without the environment.
    let out = vigil()
        .args([
            "validate",
            "--no-env",
            "tests/fixtures/invalid/env-unset.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("error[env-syntax]") && !text.contains("error[env-unset]"),
        "{text}"
    );
}

#[test]
fn interpolated_values_are_typed_and_never_echoed() {
    let text = "kind: pipeline\nname: p\nsources:\n  in:\n    type: file\n    path: /data/${DIR:-x}/f.jsonl\n    max_line_bytes: ${MAX}\n    follow: ${SECRET}\nsinks:\n  out: {type: stdout, inputs: [in]}\n";
    let env = |pairs: &[(&str, &str)]| LoadOptions {
        env: Env::Map(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    let files = vec![(PathBuf::from("p.yaml"), text.to_string())];
    let ok = load_sources(
        &files,
        &env(&[("DIR", "flows"), ("MAX", "2048"), ("SECRET", "false")]),
    );
    assert!(ok.diagnostics.is_empty(), "{:?}", ok.diagnostics);
    let config = ok.config.expect("valid");
    let SourceConfig::File(f) = &config.pipelines[0].config.sources["in"] else {
        panic!("file source");
    };
    assert_eq!(f.path, PathBuf::from("/data/flows/f.jsonl"));
    assert_eq!(f.max_line_bytes, 2048);
    assert!(!f.follow);
    let bad = load_sources(
        &files,
        &env(&[("MAX", "2048"), ("SECRET", "hunter2-secret")]),
    );
    assert_eq!(bad.diagnostics.len(), 1);
    let d = &bad.diagnostics[0];
    assert_eq!((d.line, d.column, d.code), (8, 13, codes::WRONG_TYPE));
    assert!(
        !d.message.contains("hunter2"),
        "secret echoed: {}",
        d.message
    );
}

#[test]
fn several_documents_and_files_in_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("team")).unwrap();
    std::fs::write(dir.path().join("a.yaml"), "kind: settings\nstate_dir: st\n---\nkind: pipeline\nname: a\nsources:\n  in: {type: stdin}\nsinks:\n  out: {type: stdout, inputs: [in]}\n").unwrap();
    std::fs::write(dir.path().join("team/b.yml"), "kind: pipeline\nname: b\nsources:\n  in: {type: stdin}\nsinks:\n  out: {type: stdout, inputs: [in]}\n---\n# only a comment\n").unwrap();
    // Test files and hidden files are not pipeline files.
    std::fs::write(dir.path().join("a.test.yaml"), "not: [valid").unwrap();
    std::fs::write(dir.path().join(".a.yaml.swp"), "not: [valid").unwrap();
    let loaded = load_paths(&[dir.path().to_path_buf()], &no_env()).unwrap();
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let config = loaded.config.unwrap();
    assert_eq!(config.settings.state_dir, PathBuf::from("st"));
    let names: Vec<_> = config
        .pipelines
        .iter()
        .map(|p| p.config.name.as_str())
        .collect();
    assert_eq!(names, vec!["a", "b"]);
    // A second settings document is an error at its `kind`.
    std::fs::write(dir.path().join("c.yaml"), "kind: settings\n").unwrap();
    let loaded = load_paths(&[dir.path().to_path_buf()], &no_env()).unwrap();
    let d: Vec<_> = loaded
        .diagnostics
        .iter()
        .map(|d| (d.line, d.column, d.code))
        .collect();
    assert_eq!(d, vec![(1, 1, codes::DUPLICATE_SETTINGS)]);
}

#[test]
fn committed_schema_is_fresh() {
    let committed =
        std::fs::read_to_string(root().join(schema::SCHEMA_PATH)).expect("schema committed");
    assert!(
        committed == schema::document_schema_text(),
        "{} is stale: run `cargo run -- schema > {}`",
        schema::SCHEMA_PATH,
        schema::SCHEMA_PATH
    );
}

#[test]
fn editors_accept_env_references_in_typed_values_of_the_shipped_files() {
    let editor = jsonschema::validator_for(&schema::editor_schema()).expect("compiles");
    let strict = jsonschema::validator_for(&schema::document_schema()).expect("compiles");
    let mut strict_errors = Vec::new();
    let mut docs = 0;
    for dir in [
        "pipelines",
        "examples/sample-flows",
        "examples/alert-lifecycle",
        "examples/pce-syslog",
        "examples/distinct-count",
        "examples/new-term",
        "examples/portflow",
        "examples/auto-ban",
        "pipelines/host",
        "pipelines/tetragon",
    ] {
        for entry in std::fs::read_dir(root().join(dir)).expect("dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable");
            for doc in vigil::config::yaml::parse(&text).documents {
                let value = vigil::config::interpolate::as_written(&doc);
                docs += 1;
                let errors: Vec<String> = editor
                    .iter_errors(&value)
                    .map(|e| format!("{} at {}", e, e.instance_path().as_str()))
                    .collect();
                assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
                strict_errors.extend(
                    strict
                        .iter_errors(&value)
                        .map(|e| format!("{}{}", path.display(), e.instance_path().as_str())),
                );
            }
        }
    }
    assert!(docs > 10);
    // What the editor showed before: `org: ${PCE_ORG:-1}`, `port: ${SMTP_PORT:-25}` and
    // `tls: ${SMTP_TLS:-none}` are not an integer, an integer and a choice as written.
    assert!(
        strict_errors
            .iter()
            .any(|e| e.ends_with("pipelines/settings.yaml")),
        "{strict_errors:#?}"
    );
    for (key, value) in [
        ("org", "${PCE_ORG:-1}"),
        ("tls_verify", "${TLS_VERIFY}"),
        ("requests_per_minute", "${RPM:-400}"),
    ] {
        let mut prod = serde_json::json!({"url": "https://pce.example.com", "api_key": "${K}", "api_secret": "${S}"});
        prod[key] = serde_json::json!(value);
        let doc = serde_json::json!({"kind": "settings", "connections": {"pce": {"prod": prod}}});
        assert!(editor.is_valid(&doc), "{key}: {value}");
        assert!(!strict.is_valid(&doc), "{key}: {value}");
    }
    let smtp = serde_json::json!({"kind": "settings", "connections": {"smtp": {"relay": {
        "host": "localhost", "port": "${SMTP_PORT:-25}", "tls": "${SMTP_TLS:-none}", "from": "v@example.com"}}}});
    assert!(editor.is_valid(&smtp));
    assert!(!strict.is_valid(&smtp));
    // Only whole references are accepted: `2${X}` is not an integer as written.
    let bad = serde_json::json!({"kind": "settings", "connections": {"pce": {"prod": {
        "url": "https://pce.example.com", "org": "2${X}", "api_key": "${K}", "api_secret": "${S}"}}}});
    assert!(!editor.is_valid(&bad));
}

#[test]
fn readme_field_tables_are_the_catalogue() {
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README");
    let (start, end) = ("<!-- fields:start -->\n", "<!-- fields:end -->");
    let from = readme.find(start).expect("fields:start marker") + start.len();
    let to = readme.find(end).expect("fields:end marker");
    let tables = vigil::event::catalogue::markdown();
    if readme[from..to] != tables {
        if std::env::var_os("VIGIL_UPDATE_README").is_some() {
            let fresh = format!("{}{tables}{}", &readme[..from], &readme[to..]);
            std::fs::write(&path, fresh).expect("README written");
        } else {
            panic!(
                "README.md's field tables are stale: run `VIGIL_UPDATE_README=1 cargo test --test validate readme_field_tables`"
            );
        }
    }
}

#[test]
fn shipped_yaml_files_point_editors_at_the_schema() {
    let mut checked = 0;
    for dir in [
        "pipelines",
        "examples/sample-flows",
        "examples/distinct-count",
        "examples/new-term",
    ] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    text.lines()
                        .next()
                        .is_some_and(|l| l.starts_with("# yaml-language-server: $schema=")
                            && l.ends_with("schemas/vigil.schema.json")),
                    "{} lacks the `# yaml-language-server: $schema=` first line",
                    path.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0);
}

/// A plausible typo of `key` that is not another valid key.
fn misspell(key: &str, valid: &[String]) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    let n = chars.len();
    let candidate = if n >= 2 {
        chars.swap(n - 1, n - 2);
        chars.into_iter().collect()
    } else {
        format!("{key}x")
    };
    if valid.contains(&candidate) || candidate == key {
        format!("{key}_")
    } else {
        candidate
    }
}

fn typed(family: Family, body: &Value) -> Result<(), String> {
    let r = match family {
        Family::Sources => serde_json::from_value::<SourceConfig>(body.clone()).map(|_| ()),
        Family::Stages => serde_json::from_value::<StageConfig>(body.clone()).map(|_| ()),
        Family::Sinks => serde_json::from_value::<SinkConfig>(body.clone()).map(|_| ()),
    };
    r.map_err(|e| e.to_string())
}

#[test]
fn a_misspelt_key_is_rejected_for_every_registered_kind() {
    let mut kinds_seen = 0;
    for family in Family::ALL {
        let kinds = schema::kinds(family);
        assert!(!kinds.is_empty());
        for kind in kinds {
            kinds_seen += 1;
            let example = kind.examples.first().unwrap_or_else(|| {
                panic!(
                    "{} `{}` has no `#[schemars(example = ...)]`: add one",
                    family.singular(),
                    kind.name
                )
            });
            let mut body = example.clone();
            body["type"] = json!(kind.name);
            let pointer = format!("/{}/x", family.key());
            // The example itself is valid, in the schema and in the typed model.
            let problems = schema::check_component(family, &pointer, &body, Default::default());
            assert!(
                problems.is_empty(),
                "example of `{}` is invalid: {problems:?}",
                kind.name
            );
            typed(family, &body)
                .unwrap_or_else(|e| panic!("example of `{}` does not type: {e}", kind.name));

            let valid: Vec<String> = kind.schema["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            let mut keys: Vec<String> = body
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "type")
                .cloned()
                .collect();
            keys.push("inputs".into());
            for key in keys {
                let typo = misspell(&key, &valid);
                let mut broken = body.clone();
                let obj = broken.as_object_mut().unwrap();
                let value = obj.remove(&key).unwrap_or(json!(["x"]));
                obj.insert(typo.clone(), value);
                // The schema names the key...
                let problems =
                    schema::check_component(family, &pointer, &broken, Default::default());
                assert!(
                    problems.iter().any(|p| p.code == codes::UNKNOWN_KEY
                        && p.at_key
                        && p.pointer == format!("{pointer}/{typo}")),
                    "`{typo}` in {} `{}` not reported as unknown: {problems:?}",
                    family.singular(),
                    kind.name
                );
                // ...and the typed model refuses it too (no `flatten` letting it through).
                assert!(
                    typed(family, &broken).is_err(),
                    "`{typo}` accepted by the typed {} `{}`",
                    family.singular(),
                    kind.name
                );
            }

            // Through a whole file: the error lands on the misspelt key's line and column.
            let mut yaml = String::from("kind: pipeline\nname: p\nsources:\n  in: {type: stdin}\n");
            let (section, extra) = match family {
                Family::Sources => (
                    "sources",
                    "sinks:\n  out: {type: stdout, inputs: [in, it]}\n",
                ),
                Family::Stages => ("stages", "sinks:\n  out: {type: stdout, inputs: [it]}\n"),
                Family::Sinks => ("sinks", ""),
            };
            let mut comp = body.clone();
            if family != Family::Sources {
                comp["inputs"] = json!(["in"]);
            }
            comp.as_object_mut()
                .unwrap()
                .insert("colour".into(), json!(1));
            if section == "sources" {
                yaml.push_str(&format!("  it: {comp}\n"));
            } else {
                yaml.push_str(&format!("{section}:\n  it: {comp}\n"));
            }
            yaml.push_str(extra);
            let loaded = load_sources(&[(PathBuf::from("p.yaml"), yaml.clone())], &no_env());
            let line = yaml.lines().position(|l| l.contains("\"colour\"")).unwrap() + 1;
            let col = yaml
                .lines()
                .nth(line - 1)
                .unwrap()
                .find("\"colour\"")
                .unwrap()
                + 1;
            assert!(
                loaded
                    .diagnostics
                    .iter()
                    .any(|d| d.code == codes::UNKNOWN_KEY
                        && d.line as usize == line
                        && d.column as usize == col),
                "{} `{}`: {:?}\n{yaml}",
                family.singular(),
                kind.name,
                loaded.diagnostics
            );
        }
    }
    assert!(kinds_seen >= 5);
}

/// A Rhai syntax error in `where:` lands on its exact line and column inside the YAML
/// string, for plain, quoted and block scalars.
#[test]
fn where_errors_point_inside_the_yaml_string() {
    let yaml = "kind: pipeline\nname: w\nsources:\n  in: {type: stdin}\nstages:\n  a:\n    type: filter\n    inputs: [in]\n    where: event.port == 22 &&& true\n  b:\n    type: filter\n    inputs: [a]\n    where: \"event.x == 1 || evnt.y\"\n  c:\n    type: filter\n    inputs: [b]\n    where: |\n      event.a == 1 &&\n        event.b == (2\nsinks:\n  out: {type: stdout, inputs: [c]}\n";
    let loaded = load_sources(&[(PathBuf::from("w.yaml"), yaml.to_string())], &no_env());
    let got: Vec<(u32, u32, &str)> = loaded
        .diagnostics
        .iter()
        .map(|d| (d.line, d.column, d.code))
        .collect();
    assert_eq!(
        got,
        vec![
            // `&&& true`: the third `&` (the string starts at col 12).
            (9, 31, codes::SCRIPT),
            // `evnt`: an undeclared variable (strict variables).
            (13, 29, codes::SCRIPT),
            // The unclosed `(`: reported just after the last character.
            (19, 22, codes::SCRIPT),
        ],
        "{:?}",
        loaded.diagnostics
    );
    assert!(loaded.config.is_none());

    // A valid expression loads.
    let ok = yaml
        .replace("&&& true", "&& true")
        .replace("evnt.y", "event.y")
        .replace("(2", "2");
    let loaded = load_sources(&[(PathBuf::from("w.yaml"), ok)], &no_env());
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
}

/// A file over the size budget (50 MB) is refused at its first line without being read
/// whole; a mapping of 80,000 keys (1 MB) is within it and validates (the duplicate-key
/// check and the positions of its problems are linear: it took 4 s, and 10 s with a
/// problem a key, when they were quadratic).
#[test]
fn files_over_the_budget_are_refused_and_large_ones_within_it_validate() {
    let dir = tempfile::tempdir().expect("temp");
    let huge = dir.path().join("huge.yaml");
    {
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&huge).expect("create"));
        writeln!(f, "kind: pipeline\nname: huge\nsources:\n  in: {{type: stdin}}\nsinks:\n  out: {{type: stdout, inputs: [in]}}\ndescription: >").expect("write");
        let line = format!("  {}\n", "x".repeat(98));
        for _ in 0..(50 * 1024 * 1024 / line.len()) {
            f.write_all(line.as_bytes()).expect("write");
        }
    }
    let out = vigil().arg("validate").arg(&huge).output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("huge.yaml:1:1: error[too-large]: the file is larger than 4194304 bytes"),
        "{text}"
    );

    let keys = dir.path().join("keys.yaml");
    let mut text = String::from(
        "kind: pipeline\nname: keys\nsources:\n  in: {type: stdin}\nstages:\n  keep:\n    type: filter\n    inputs: [in]\n    match:\n",
    );
    for i in 0..80_000 {
        text.push_str(&format!("      k{i}: {i}\n"));
    }
    text.push_str("sinks:\n  out: {type: stdout, inputs: [keep]}\n");
    std::fs::write(&keys, text).expect("write");
    let out = vigil().arg("validate").arg(&keys).output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Every one of 80,000 keys a problem: all reported.
    let wrong = dir.path().join("wrong.yaml");
    let mut text = String::from("kind: pipeline\nname: wrong\n");
    for i in 0..80_000 {
        text.push_str(&format!("k{i}: {i}\n"));
    }
    std::fs::write(&wrong, text).expect("write");
    let out = vigil().arg("validate").arg(&wrong).output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("wrong.yaml:80002:1: error[unknown-key]: unknown key `k79999`"),
        "{}",
        &text[text.len().saturating_sub(2000)..]
    );
}

/// Lengths of time over 100 years are refused where they are written, in every place
/// that takes one: files (see `tests/fixtures/invalid/long-duration.yaml`) and
/// `vigil silence add` (it panicked adding `300000y` to the clock).
#[test]
fn a_silence_longer_than_100_years_is_refused_without_a_panic() {
    let dir = tempfile::tempdir().expect("temp");
    let out = vigil()
        .args(["silence", "add", "--state-dir"])
        .arg(dir.path())
        .args(["--duration", "300000y", "pipeline=x"])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("`300000y` is longer than 100 years"), "{err}");
    assert!(!out.status.success());
}

/// With every kind of secret configured from the environment, none appears in
/// `vigil validate`'s output (text, JSON, GitHub) or in the `{:?}` of the loaded
/// configuration (it printed the settings document as read, secrets included).
#[test]
fn no_secret_appears_in_validate_output_or_the_debug_of_the_config() {
    let secrets = [
        ("PCE_KEY", "api-key-5f1c2e"),
        ("PCE_SECRET", "pce-secret-7b1e93"),
        ("SMTP_PASSWORD", "smtp-password-42ac"),
        ("LINE_TOKEN", "line-token-9d0f11"),
        (
            "HOOK_URL",
            "https://hooks.slack.com/services/T0/B0/hook-url-e21a",
        ),
        ("HOOK_SECRET", "hook-secret-c3e8"),
        ("HOOK_AUTH", "Bearer hook-auth-77d2"),
        ("WEB_TOKEN", "web-token-0a9b8c"),
    ];
    let settings = "kind: settings\nweb:\n  token: ${WEB_TOKEN}\nconnections:\n  pce:\n    lab:\n      url: https://pce.example.com:8443\n      api_key: ${PCE_KEY}\n      api_secret: ${PCE_SECRET}\n  smtp:\n    relay:\n      host: smtp.example.com\n      port: 587\n      tls: starttls\n      username: vigil\n      password: ${SMTP_PASSWORD}\n      from: vigil@example.com\n  line:\n    ops:\n      token: ${LINE_TOKEN}\n  webhook:\n    hook:\n      url: ${HOOK_URL}\n      signing_secret: ${HOOK_SECRET}\n      headers:\n        Authorization: ${HOOK_AUTH}\n";
    // A pipeline with a problem, so that validate has something to say about it.
    let pipeline = "kind: pipeline\nname: p\nsources:\n  events: {type: pce_events, connection: lab, interval: 5s}\nstages:\n  any:\n    type: window_count\n    inputs: [events]\n    window: 1h\n    threshold: 1\n    group_by: [event_type]\nsinks:\n  mail: {type: mail, inputs: [any], connection: relay, to: [soc@example.com]}\n  line: {type: line, inputs: [any], connection: ops, to: U123}\n  hook: {type: webhook, inputs: [any], connection: hook}\n  lost: {type: webhook, inputs: [nothing], connection: hook}\n";
    let dir = tempfile::tempdir().expect("temp");
    std::fs::write(dir.path().join("settings.yaml"), settings).expect("write");
    std::fs::write(dir.path().join("p.yaml"), pipeline).expect("write");
    let env = Env::Map(
        secrets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    // Valid without the broken sink: the configuration's Debug.
    std::fs::write(
        dir.path().join("p.yaml"),
        pipeline.replace(
            "  lost: {type: webhook, inputs: [nothing], connection: hook}\n",
            "",
        ),
    )
    .expect("write");
    let loaded = load_paths(
        &[dir.path().to_path_buf()],
        &LoadOptions {
            env,
            ..Default::default()
        },
    )
    .expect("load");
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let debug = format!("{loaded:?} {:?}", loaded.config);
    assert!(
        debug.contains("relay"),
        "the Debug shows the configuration: {debug}"
    );
    std::fs::write(dir.path().join("p.yaml"), pipeline).expect("write");
    let mut said = debug;
    for format in ["text", "json", "github"] {
        let mut cmd = vigil();
        cmd.args(["validate", "--format", format]).arg(dir.path());
        for (k, v) in secrets {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("runs");
        assert_eq!(out.status.code(), Some(1), "the broken sink is reported");
        said.push_str(&String::from_utf8_lossy(&out.stdout));
        said.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(said.contains("unknown-input"), "{said}");
    for (name, secret) in secrets {
        assert!(!said.contains(secret), "`{name}` shows: {said}");
    }
}
