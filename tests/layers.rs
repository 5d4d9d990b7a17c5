//! Imports run one way: every top-level module of `src/` may use only the modules in the
//! layers below its own (DESIGN.md §2; `config → components → {sources, stages, sinks} →
//! node, store, event`). The check reads `crate::…` paths in the product code (unit-test
//! modules left out) and names the file of every import that runs up or sideways.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top to bottom. A module may import the modules of any layer below its own, never one
/// of its own layer or above. `main.rs`, `lib.rs` and `cli/` sit above everything.
const LAYERS: &[&[&str]] = &[
    &["demo", "testing", "web"],
    &["runtime"],
    &["config"],
    &["graph"],
    &["components"],
    &["sources"],
    &["stages"],
    &["sinks"],
    &["pce"],
    &["node"],
    &["store", "diagnostic", "http", "secret", "confine", "nft"],
    &["time"],
    &["event"],
];

/// (from module, to module) → the files where `from` imports `to`.
type Arrows = BTreeMap<(String, String), BTreeSet<String>>;

/// The `crate::` modules a piece of Rust code names: `crate::a::…` and `crate::{a, b}`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// The product code of a file: comments and the trailing unit-test module left out.
fn product_code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut code = String::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        // Unit tests sit at the end of a file (a test-only helper fn is not a module).
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .get(i + 1)
                .is_some_and(|l| l.trim_start().contains("mod "))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        code.push_str(line.split(" // ").next().unwrap_or(line));
        code.push('\n');
    }
    code
}

fn arrows(src: &Path) -> Arrows {
    let mut out = Arrows::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tests.rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src/");
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or_default()
                .trim_end_matches(".rs")
                .to_string();
            if matches!(top.as_str(), "main" | "lib" | "cli") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file");
            for to in named_modules(&product_code(&text)) {
                if to != top {
                    out.entry((top.clone(), to))
                        .or_default()
                        .insert(rel.display().to_string());
                }
            }
        }
    }
    out
}

/// Every arrow that does not run down, as `from → to (files)`.
fn violations(arrows: &Arrows) -> Vec<String> {
    let layer = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let mut out = Vec::new();
    for ((from, to), files) in arrows {
        let ok = match (layer(from), layer(to)) {
            (Some(f), Some(t)) => t > f,
            _ => false,
        };
        if !ok {
            let files: Vec<&str> = files.iter().map(String::as_str).collect();
            out.push(format!(
                "{from} → {to} ({}){}",
                files.join(", "),
                if layer(from).is_none() || layer(to).is_none() {
                    ": a module missing from LAYERS"
                } else {
                    ""
                }
            ));
        }
    }
    out
}

#[test]
fn imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let arrows = arrows(&src);
    assert!(
        arrows.contains_key(&("components".to_string(), "sources".to_string())),
        "the reader sees `use crate::{{sinks, sources, stages}}`"
    );
    let bad = violations(&arrows);
    assert!(
        bad.is_empty(),
        "imports that run up or sideways (see LAYERS in tests/layers.rs):\n  {}",
        bad.join("\n  ")
    );
}

/// The check fails on an import that runs up, names the file, and ignores comments and
/// unit tests.
#[test]
fn an_upward_import_is_named() {
    let code = "use crate::node::Stage;\n// crate::runtime in a comment\nuse crate::{event, time};\n\
                #[cfg(test)]\nmod tests {\n    use crate::runtime::start;\n}\n";
    assert_eq!(
        named_modules(&product_code(code)),
        ["event", "node", "time"].map(String::from).into()
    );
    let mut arrows = Arrows::new();
    arrows.insert(
        ("stages".into(), "event".into()),
        ["stages/x.rs".into()].into(),
    );
    arrows.insert(
        ("stages".into(), "config".into()),
        ["stages/y/config.rs".into()].into(),
    );
    arrows.insert(
        ("sources".into(), "sources2".into()),
        ["a.rs".into()].into(),
    );
    assert_eq!(
        violations(&arrows),
        vec![
            "sources → sources2 (a.rs): a module missing from LAYERS".to_string(),
            "stages → config (stages/y/config.rs)".to_string(),
        ]
    );
}
