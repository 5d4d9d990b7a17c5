//! A small YAML tree that remembers where every key and value came from.
//!
//! Pipeline files are parsed with `saphyr-parser` (the YAML 1.2 parser under serde-saphyr)
//! into [`Node`]s. Scalars stay raw text here: `${VAR}` interpolation runs on the raw text
//! first, and only then is a plain scalar typed (`25` → integer, `true` → bool), so
//! `port: ${SMTP_PORT}` becomes a number. Duplicate keys are errors with the position of
//! the second key; anchors, aliases and `<<` merge keys are resolved here.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

pub use crate::diagnostic::Pos;

/// The position of a parser marker.
fn pos_of(m: &saphyr_parser::Marker) -> Pos {
    Pos {
        line: u32::try_from(m.line()).unwrap_or(u32::MAX),
        col: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
    }
}

/// A parsed YAML node with its position.
#[derive(Debug, Clone)]
pub struct Node {
    /// What the node holds.
    pub value: NodeValue,
    /// Where the node starts.
    pub pos: Pos,
    /// Character offsets `[start, end)` of the node in the source, used to find positions
    /// inside a scalar (for `${VAR}` errors).
    pub span: (usize, usize),
}

/// The content of a [`Node`].
#[derive(Debug, Clone)]
pub enum NodeValue {
    /// A scalar, still raw text.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order.
    Map(Vec<Entry>),
}

/// A raw scalar.
#[derive(Debug, Clone)]
pub struct Scalar {
    /// The scalar's text after YAML unescaping.
    pub text: String,
    /// Plain (unquoted) scalars are typed after interpolation; quoted and block scalars
    /// are always strings.
    pub plain: bool,
    /// A `!!str`-style core tag, if any (`str`, `int`, `float`, `bool`, `null`).
    pub tag: Option<String>,
}

/// One `key: value` of a mapping.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key's text.
    pub key: String,
    /// Where the key is.
    pub key_pos: Pos,
    /// The value.
    pub value: Node,
}

/// A problem found while reading YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Where it is.
    pub pos: Pos,
    /// `yaml` for syntax errors, `duplicate-key` for repeated keys.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

/// The documents of one file and the problems met while reading them.
#[derive(Debug, Default)]
pub struct ParsedFile {
    /// Every document that parsed completely, in order.
    pub documents: Vec<Node>,
    /// Syntax errors and duplicate keys.
    pub errors: Vec<YamlError>,
}

enum Frame {
    Seq {
        anchor: usize,
        start: Pos,
        span_start: usize,
        items: Vec<Node>,
    },
    Map {
        anchor: usize,
        start: Pos,
        span_start: usize,
        entries: Vec<Entry>,
        /// A key waiting for its value.
        pending_key: Option<(String, Pos)>,
        /// Values of `<<` merge keys, applied when the mapping ends.
        merges: Vec<Node>,
    },
}

/// Parses every document of a YAML source.
pub fn parse(source: &str) -> ParsedFile {
    let mut out = ParsedFile::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut doc_root: Option<Node> = None;

    for item in Parser::new_from_str(source) {
        let (event, span) = match item {
            Ok(ev) => ev,
            Err(e) => {
                out.errors.push(YamlError {
                    pos: pos_of(e.marker()),
                    code: "yaml",
                    message: format!("YAML syntax error: {}", e.info()),
                });
                return out;
            }
        };
        let completed: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                doc_root = None;
                anchors.clear();
                None
            }
            Event::DocumentEnd => {
                if let Some(root) = doc_root.take() {
                    out.documents.push(root);
                }
                None
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(node) => {
                    let mut node = node.clone();
                    node.pos = pos_of(&span.start);
                    Some((node, 0))
                }
                None => {
                    out.errors.push(YamlError {
                        pos: pos_of(&span.start),
                        code: "yaml",
                        message: "alias refers to an anchor that is not defined before it".into(),
                    });
                    Some((null_node(&span), 0))
                }
            },
            Event::Scalar(text, style, anchor, tag) => {
                let tag = tag.and_then(|t| {
                    if t.is_yaml_core_schema() {
                        Some(t.suffix.clone())
                    } else {
                        None
                    }
                });
                Some((
                    Node {
                        value: NodeValue::Scalar(Scalar {
                            text: text.into_owned(),
                            plain: matches!(style, ScalarStyle::Plain),
                            tag,
                        }),
                        pos: pos_of(&span.start),
                        span: (span.start.index(), span.end.index()),
                    },
                    anchor,
                ))
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq {
                    anchor,
                    start: pos_of(&span.start),
                    span_start: span.start.index(),
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map {
                    anchor,
                    start: pos_of(&span.start),
                    span_start: span.start.index(),
                    entries: Vec::new(),
                    pending_key: None,
                    merges: Vec::new(),
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    anchor,
                    start,
                    span_start,
                    items,
                }) => Some((
                    Node {
                        value: NodeValue::Seq(items),
                        pos: start,
                        span: (span_start, span.end.index()),
                    },
                    anchor,
                )),
                _ => None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    anchor,
                    start,
                    span_start,
                    mut entries,
                    merges,
                    ..
                }) => {
                    apply_merges(&mut entries, merges, &mut out.errors);
                    Some((
                        Node {
                            value: NodeValue::Map(entries),
                            pos: start,
                            span: (span_start, span.end.index()),
                        },
                        anchor,
                    ))
                }
                _ => None,
            },
        };

        let Some((node, anchor)) = completed else {
            continue;
        };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        attach(node, &mut stack, &mut doc_root, &mut out.errors);
    }
    out
}

fn null_node(span: &Span) -> Node {
    Node {
        value: NodeValue::Scalar(Scalar {
            text: String::new(),
            plain: true,
            tag: None,
        }),
        pos: pos_of(&span.start),
        span: (span.start.index(), span.end.index()),
    }
}

fn attach(
    node: Node,
    stack: &mut [Frame],
    doc_root: &mut Option<Node>,
    errors: &mut Vec<YamlError>,
) {
    match stack.last_mut() {
        None => *doc_root = Some(node),
        Some(Frame::Seq { items, .. }) => items.push(node),
        Some(Frame::Map {
            entries,
            pending_key,
            merges,
            ..
        }) => match pending_key.take() {
            None => match &node.value {
                NodeValue::Scalar(s) => *pending_key = Some((s.text.clone(), node.pos)),
                _ => {
                    errors.push(YamlError {
                        pos: node.pos,
                        code: "yaml",
                        message: "mapping keys must be plain strings, not lists or mappings".into(),
                    });
                    *pending_key = Some((String::new(), node.pos));
                }
            },
            Some((key, key_pos)) => {
                if key == "<<" {
                    merges.push(node);
                } else if let Some(first) = entries.iter().find(|e| e.key == key) {
                    errors.push(YamlError {
                        pos: key_pos,
                        code: "duplicate-key",
                        message: format!(
                            "duplicate key `{key}` (first defined at line {}, column {})",
                            first.key_pos.line, first.key_pos.col
                        ),
                    });
                } else {
                    entries.push(Entry {
                        key,
                        key_pos,
                        value: node,
                    });
                }
            }
        },
    }
}

/// `<<: *base` and `<<: [*a, *b]`: keys of the merged mappings that the mapping does not
/// set itself are added; earlier merge sources win over later ones.
fn apply_merges(entries: &mut Vec<Entry>, merges: Vec<Node>, errors: &mut Vec<YamlError>) {
    for merge in merges {
        let sources = match merge.value {
            NodeValue::Map(_) => vec![merge],
            NodeValue::Seq(items) => items,
            NodeValue::Scalar(_) => {
                errors.push(YamlError {
                    pos: merge.pos,
                    code: "yaml",
                    message: "a `<<` merge key needs a mapping or a list of mappings".into(),
                });
                continue;
            }
        };
        for source in sources {
            match source.value {
                NodeValue::Map(extra) => {
                    for e in extra {
                        if !entries.iter().any(|have| have.key == e.key) {
                            entries.push(e);
                        }
                    }
                }
                _ => errors.push(YamlError {
                    pos: source.pos,
                    code: "yaml",
                    message: "a `<<` merge key needs a mapping or a list of mappings".into(),
                }),
            }
        }
    }
}

impl Node {
    /// The node at a JSON pointer (`/stages/burst/window`), if it exists.
    pub fn at_pointer(&self, pointer: &str) -> Option<&Node> {
        let mut node = self;
        for seg in pointer_segments(pointer) {
            node = node.child(&seg)?;
        }
        Some(node)
    }

    /// The child with this key (mappings) or index (sequences).
    pub fn child(&self, seg: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find(|e| e.key == seg).map(|e| &e.value),
            NodeValue::Seq(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
            NodeValue::Scalar(_) => None,
        }
    }

    /// The position of the key `key` in this mapping.
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| e.key_pos),
            _ => None,
        }
    }

    /// The best position for a JSON pointer: the node itself, or the deepest existing
    /// ancestor when the pointer goes past the tree.
    pub fn pos_at(&self, pointer: &str) -> Pos {
        let mut node = self;
        for seg in pointer_segments(pointer) {
            match node.child(&seg) {
                Some(c) => node = c,
                None => break,
            }
        }
        node.pos
    }

    /// Where the key that holds the value at `pointer` is written (for "unknown key" or
    /// "unused node" messages); falls back to the value's own position.
    pub fn key_pos_at(&self, pointer: &str) -> Pos {
        let segs = pointer_segments(pointer);
        let Some((last, parent)) = segs.split_last() else {
            return self.pos;
        };
        let parent_ptr = to_pointer(parent.iter().map(String::as_str));
        match self.at_pointer(&parent_ptr).and_then(|p| p.key_pos(last)) {
            Some(pos) => pos,
            None => self.pos_at(pointer),
        }
    }
}

/// Splits a JSON pointer into unescaped segments.
pub fn pointer_segments(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        return Vec::new();
    }
    pointer
        .trim_start_matches('/')
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

pub use crate::diagnostic::to_pointer;

#[cfg(test)]
mod tests {
    use super::*;

    fn map_keys(n: &Node) -> Vec<&str> {
        match &n.value {
            NodeValue::Map(e) => e.iter().map(|e| e.key.as_str()).collect(),
            _ => vec![],
        }
    }

    #[test]
    fn positions_of_keys_and_values() {
        let f = parse("kind: pipeline\nstages:\n  a:\n    type: filter\n");
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        let d = &f.documents[0];
        assert_eq!(map_keys(d), vec!["kind", "stages"]);
        assert_eq!(d.key_pos_at("/stages/a/type"), Pos { line: 4, col: 5 });
        assert_eq!(d.pos_at("/stages/a/type"), Pos { line: 4, col: 11 });
        // A pointer past the tree lands on the deepest existing node.
        assert_eq!(d.pos_at("/stages/a/nope/x"), Pos { line: 4, col: 5 });
    }

    #[test]
    fn several_documents() {
        let f = parse("a: 1\n---\nb: 2\n---\nc: 3\n");
        assert_eq!(f.documents.len(), 3);
        assert_eq!(f.documents[2].pos, Pos { line: 5, col: 1 });
    }

    #[test]
    fn duplicate_key_points_at_second() {
        let f = parse("a: 1\nb: 2\na: 3\n");
        assert_eq!(f.errors.len(), 1);
        assert_eq!(f.errors[0].code, "duplicate-key");
        assert_eq!(f.errors[0].pos, Pos { line: 3, col: 1 });
        assert!(f.errors[0].message.contains("line 1"));
    }

    #[test]
    fn syntax_error_has_position() {
        let f = parse("a: 1\nb: [1, 2\n");
        assert_eq!(f.errors.len(), 1);
        assert_eq!(f.errors[0].code, "yaml");
        assert!(f.errors[0].pos.line >= 2);
    }

    #[test]
    fn merge_keys_and_aliases() {
        let f = parse("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n");
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        let other = f.documents[0].child("other").unwrap();
        assert_eq!(map_keys(other), vec!["y", "x"]);
    }

    #[test]
    fn pointer_escapes() {
        assert_eq!(pointer_segments("/a~1b/c~0d"), vec!["a/b", "c~d"]);
        assert_eq!(to_pointer(["a/b", "c~d"]), "/a~1b/c~0d");
    }
}
