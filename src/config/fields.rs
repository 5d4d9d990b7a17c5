//! The field-path check of `vigil validate`: a path a stage reads (filter conditions,
//! `group_by`, `sum`, `by`, `within`, `key`, `flow_key`) that no record reaching the stage
//! has is a warning (`unknown-field`) with the closest known path, when every record
//! reaching it comes from a kind the field catalogue ([`crate::event::catalogue`]) knows.
//! Anything upstream whose records are free-form (a `file` or `stdin` source, a `script`
//! stage) turns the check off for what it feeds.

use std::collections::{BTreeMap, BTreeSet};

use indexmap::IndexMap;

use crate::components::{SourceConfig, StageConfig};
use crate::diagnostic::{Problems, codes, to_pointer};
use crate::event::catalogue::{self, Catalogue};
use crate::stages::filter::{Conditions, Exclude};
use crate::stages::values::FieldSpec;

/// What reaches a node: records of these catalogue kinds, or something unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Unknown,
    Known(BTreeSet<&'static str>),
}

impl Shape {
    fn union(self, other: Shape) -> Shape {
        match (self, other) {
            (Shape::Known(mut a), Shape::Known(b)) => {
                a.extend(b);
                Shape::Known(a)
            }
            _ => Shape::Unknown,
        }
    }

    fn with(self, kind: &'static str) -> Shape {
        self.union(Shape::Known(BTreeSet::from([kind])))
    }
}

struct Shapes<'a> {
    sources: &'a IndexMap<String, SourceConfig>,
    stages: &'a IndexMap<String, StageConfig>,
    memo: BTreeMap<String, Shape>,
}

impl Shapes<'_> {
    /// What node `name` emits.
    fn output(&mut self, name: &str) -> Shape {
        if let Some(s) = self.memo.get(name) {
            return s.clone();
        }
        // A cycle (reported elsewhere) reads as unknown.
        self.memo.insert(name.to_string(), Shape::Unknown);
        let shape = if let Some(src) = self.sources.get(name) {
            // Tetragon's events (a `file` or `exec` source's) are read as the catalogue's `tetragon`.
            let kind = match src.line_format() {
                Some(crate::sources::json_lines::LineFormat::Tetragon) => "tetragon",
                _ => src.kind(),
            };
            match catalogue::of_source(kind) {
                Some(c) => Shape::Known(BTreeSet::from([c.kind])),
                None => Shape::Unknown,
            }
        } else if let Some(stage) = self.stages.get(name) {
            let input = self.input(stage.inputs());
            match stage {
                StageConfig::Filter(_) | StageConfig::Dedupe(_) | StageConfig::Cooldown(_) => input,
                StageConfig::WindowCount(_)
                | StageConfig::Bandwidth(_)
                | StageConfig::Metric(_)
                | StageConfig::DistinctCount(_)
                | StageConfig::Spike(_)
                | StageConfig::Ratio(_)
                | StageConfig::NewTerm(_)
                | StageConfig::Flatline(_)
                | StageConfig::Report(_) => Shape::Known(BTreeSet::from([catalogue::ALERT.kind])),
                StageConfig::TopN(_) => input.with(catalogue::ALERT.kind),
                StageConfig::Script(_) => Shape::Unknown,
            }
        } else {
            Shape::Unknown // an input naming nothing: reported elsewhere
        };
        self.memo.insert(name.to_string(), shape.clone());
        shape
    }

    /// What reaches a node reading `inputs`.
    fn input(&mut self, inputs: &[String]) -> Shape {
        inputs.iter().fold(Shape::Known(BTreeSet::new()), |acc, i| {
            acc.union(self.output(i))
        })
    }
}

/// The field paths a stage reads: `(pointer within the stage, path, point at the key)`.
fn paths_of(stage: &StageConfig) -> Vec<(String, &str, bool)> {
    fn list<'a>(out: &mut Vec<(String, &'a str, bool)>, key: &str, paths: &'a [String]) {
        for (i, p) in paths.iter().enumerate() {
            out.push((to_pointer([key, i.to_string().as_str()]), p, false));
        }
    }
    fn conditions<'a>(out: &mut Vec<(String, &'a str, bool)>, prefix: &[&str], c: &'a Conditions) {
        for path in c.keys() {
            let segs = prefix.iter().copied().chain(std::iter::once(path.as_str()));
            out.push((to_pointer(segs), path, true));
        }
    }
    fn field_spec<'a>(out: &mut Vec<(String, &'a str, bool)>, spec: &'a FieldSpec) {
        match spec {
            FieldSpec::One(f) => out.push(("/field".into(), f, false)),
            FieldSpec::Tuple(fs) => list(out, "field", fs),
        }
    }
    let mut out = Vec::new();
    match stage {
        StageConfig::Filter(c) => {
            conditions(&mut out, &["match"], &c.match_);
            for (i, g) in c.any.iter().enumerate() {
                conditions(&mut out, &["any", &i.to_string()], g);
            }
            match &c.exclude {
                None => {}
                Some(Exclude::All(g)) => conditions(&mut out, &["exclude"], g),
                Some(Exclude::Any(gs)) => {
                    for (i, g) in gs.iter().enumerate() {
                        conditions(&mut out, &["exclude", &i.to_string()], g);
                    }
                }
            }
        }
        StageConfig::WindowCount(c) => {
            if let Some(s) = &c.sum {
                out.push(("/sum".into(), s, false));
            }
            list(&mut out, "group_by", &c.group_by);
        }
        StageConfig::Bandwidth(c) => {
            list(&mut out, "group_by", &c.group_by);
            if let Some(k) = &c.flow_key {
                list(&mut out, "flow_key", k);
            }
        }
        StageConfig::Metric(c) => {
            out.push(("/field".into(), &c.field, false));
            list(&mut out, "group_by", &c.group_by);
        }
        StageConfig::DistinctCount(c) => {
            field_spec(&mut out, &c.field);
            list(&mut out, "group_by", &c.group_by);
        }
        StageConfig::NewTerm(c) => {
            field_spec(&mut out, &c.field);
            list(&mut out, "group_by", &c.group_by);
        }
        StageConfig::Spike(c) => {
            if let crate::stages::spike::Measure::Sum(field) = &c.measure {
                out.push(("/measure/sum".into(), field, false));
            }
            list(&mut out, "group_by", &c.group_by);
        }
        StageConfig::Ratio(c) => {
            conditions(&mut out, &["match"], &c.match_);
            list(&mut out, "group_by", &c.group_by);
        }
        StageConfig::Flatline(c) => list(&mut out, "group_by", &c.group_by),
        StageConfig::Report(c) => {
            list(&mut out, "group_by", &c.group_by);
            for (i, s) in c.sum.paths().iter().enumerate() {
                out.push((c.sum.pointer(i), s, false));
            }
        }
        StageConfig::TopN(c) => {
            list(&mut out, "by", &c.by);
            list(&mut out, "within", &c.within);
            if let Some(s) = &c.sum {
                out.push(("/sum".into(), s, false));
            }
        }
        StageConfig::Dedupe(c) => list(&mut out, "key", &c.key),
        StageConfig::Cooldown(c) => list(&mut out, "key", &c.key),
        StageConfig::Script(_) => {}
    }
    out
}

/// `pattern` made concrete for `path`: each `<key>` takes the path's segment at its
/// place, a final `*` the rest of the path.
fn instantiate(pattern: &str, path: &str) -> String {
    let have: Vec<&str> = path.split('.').collect();
    let mut out: Vec<&str> = Vec::new();
    for (i, seg) in pattern.split('.').enumerate() {
        match seg {
            "<key>" => out.push(have.get(i).copied().unwrap_or("<key>")),
            "*" => {
                out.extend(have.iter().skip(i).copied());
                break;
            }
            s => out.push(s),
        }
    }
    out.join(".")
}

/// Checks the field paths of the stages of one pipeline; each problem is reported under
/// `/stages/<name>`, by stage name.
pub fn check(
    sources: &IndexMap<String, SourceConfig>,
    stages: &IndexMap<String, StageConfig>,
) -> Vec<(String, Problems)> {
    let mut shapes = Shapes {
        sources,
        stages,
        memo: BTreeMap::new(),
    };
    let mut out = Vec::new();
    for (name, stage) in stages {
        let Shape::Known(kinds) = shapes.input(stage.inputs()) else {
            continue;
        };
        if kinds.is_empty() {
            continue;
        }
        let cats: Vec<&Catalogue> = catalogue::ALL
            .iter()
            .copied()
            .filter(|c| kinds.contains(c.kind))
            .collect();
        let mut problems = Problems::default();
        for (pointer, path, at_key) in paths_of(stage) {
            if catalogue::known(&cats, path) {
                continue;
            }
            let concrete: Vec<String> = catalogue::candidates(&cats)
                .map(|p| instantiate(p, path))
                .collect();
            let hint = crate::config::schema::suggest(path, concrete.iter().map(String::as_str))
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            let what: Vec<String> = cats.iter().map(|c| c.noun.to_string()).collect();
            let message = format!(
                "no {} has a field `{path}`{hint} (the known fields are listed in the README, \"Fields\")",
                what.join(" or ")
            );
            if at_key {
                problems.warning_at_key(pointer, codes::UNKNOWN_FIELD, message);
            } else {
                problems.warning(pointer, codes::UNKNOWN_FIELD, message);
            }
        }
        if !problems.items.is_empty() {
            out.push((name.clone(), problems));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_made_concrete_for_suggestions() {
        assert_eq!(
            instantiate("dst.labels.<key>", "dst.lables.role"),
            "dst.labels.role"
        );
        assert_eq!(instantiate("group.*", "grup.src.ip"), "group.src.ip");
        assert_eq!(instantiate("service.port", "service.prot"), "service.port");
    }
}
