//! A small YAML tree that remembers where every key and value came from.
//!
//! Pipeline files are parsed with `saphyr-parser` (the YAML 1.2 parser under serde-saphyr)
//! into [`Node`]s. Scalars stay raw text here: `${VAR}` interpolation runs on the raw text
//! first, and only then is a plain scalar typed (`25` → integer, `true` → bool), so
//! `port: ${SMTP_PORT}` becomes a number. Duplicate keys are errors with the position of
//! the second key; anchors, aliases and `<<` merge keys are resolved here.
//!
//! Reading has a [`Budget`]: a file may be at most so large, hold so many documents,
//! expand to so many nodes (an alias counts its anchor's nodes each time it is used, so a
//! "billion laughs" file stops early) and nest so deep. An overrun is one diagnostic at
//! the position where it happened, and the file's documents are not checked further.

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::diagnostic::codes::TOO_LARGE;

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
    Map(Mapping),
}

/// A mapping's entries in source order, with an index of the keys of a large one (so
/// finding the position of each of many keys stays linear in all).
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// The entries, in source order.
    pub entries: Vec<Entry>,
    /// Entry by key, for mappings of more than [`Mapping::INDEXED`] entries.
    index: Option<std::sync::Arc<HashMap<String, usize>>>,
}

impl Mapping {
    /// Mappings with more entries than this are indexed.
    const INDEXED: usize = 16;

    fn new(entries: Vec<Entry>) -> Mapping {
        let index = (entries.len() > Self::INDEXED).then(|| {
            std::sync::Arc::new(
                entries
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (e.key.clone(), i))
                    .collect(),
            )
        });
        Mapping { entries, index }
    }

    /// The entry with this key.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.index {
            Some(index) => index.get(key).and_then(|i| self.entries.get(*i)),
            None => self.entries.iter().find(|e| e.key == key),
        }
    }
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

/// How much one file may hold. Pipeline files are small: the largest shipped pack is a
/// few tens of kilobytes, so the limits are far above any real file and far below what
/// exhausts memory or time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes of text.
    pub max_bytes: usize,
    /// Documents (`---`).
    pub max_documents: usize,
    /// Nodes (scalars, sequences, mappings), aliases counting their anchor's nodes each
    /// time they are used.
    pub max_nodes: usize,
    /// Sequences and mappings inside each other.
    pub max_depth: usize,
}

impl Budget {
    /// The budget of every pipeline, settings and test file.
    pub const DEFAULT: Budget = Budget {
        max_bytes: 4 * 1024 * 1024,
        max_documents: 1_000,
        max_nodes: 500_000,
        max_depth: 64,
    };
}

impl Default for Budget {
    fn default() -> Self {
        Budget::DEFAULT
    }
}

/// The error for a text of `len` bytes when that is more than `budget` allows.
pub fn too_large(len: usize, budget: &Budget) -> Option<YamlError> {
    (len > budget.max_bytes).then(|| YamlError {
        pos: Pos { line: 1, col: 1 },
        code: TOO_LARGE,
        message: format!(
            "the file is larger than {} bytes, the most a pipeline file may have: split it into several files",
            budget.max_bytes
        ),
    })
}

/// A problem found while reading YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Where it is.
    pub pos: Pos,
    /// `yaml` for syntax errors, `duplicate-key` for repeated keys, `too-large` for a
    /// budget overrun.
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
        /// Nodes counted before this one started.
        counted_before: usize,
        items: Vec<Node>,
    },
    Map {
        anchor: usize,
        start: Pos,
        span_start: usize,
        /// Nodes counted before this one started.
        counted_before: usize,
        entries: Vec<Entry>,
        /// The keys of `entries` (so a mapping with many keys is checked for duplicates
        /// in linear time).
        keys: HashMap<String, Pos>,
        /// A key waiting for its value.
        pending_key: Option<(String, Pos)>,
        /// Values of `<<` merge keys, applied when the mapping ends.
        merges: Vec<Node>,
    },
}

/// Parses every document of a YAML source within the default [`Budget`].
pub fn parse(source: &str) -> ParsedFile {
    parse_within(source, &Budget::DEFAULT)
}

/// Parses every document of a YAML source; an overrun of `budget` ends the reading with
/// one `too-large` error and no documents.
pub fn parse_within(source: &str, budget: &Budget) -> ParsedFile {
    let mut out = ParsedFile::default();
    if let Some(e) = too_large(source.len(), budget) {
        out.errors.push(e);
        return out;
    }
    let mut stack: Vec<Frame> = Vec::new();
    // Each anchor's node and how many nodes it counts.
    let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
    let mut doc_root: Option<Node> = None;
    let mut nodes = 0usize;
    let mut documents = 0usize;

    for item in Parser::new_from_str(source) {
        let (event, span) = match item {
            Ok(ev) => ev,
            Err(e) if e.info().contains("recursion limit") => {
                out.errors.push(YamlError {
                    pos: pos_of(e.marker()),
                    code: TOO_LARGE,
                    message: format!(
                        "lists and mappings nest too deep here (at most {} levels): no pipeline needs that many",
                        budget.max_depth
                    ),
                });
                out.documents.clear();
                return out;
            }
            Err(e) => {
                out.errors.push(YamlError {
                    pos: pos_of(e.marker()),
                    code: "yaml",
                    message: format!("YAML syntax error: {}", e.info()),
                });
                return out;
            }
        };
        // What this event adds to the count of nodes.
        let adds = match &event {
            Event::Scalar(..) | Event::SequenceStart(..) | Event::MappingStart(..) => 1,
            Event::Alias(id) => anchors.get(id).map_or(1, |(_, n)| *n),
            _ => 0,
        };
        nodes = nodes.saturating_add(adds);
        let overrun = if nodes > budget.max_nodes {
            Some(format!(
                "the file holds more than {} YAML nodes (an alias counts the nodes of its anchor each time it is used): split it, or use fewer aliases",
                budget.max_nodes
            ))
        } else if matches!(event, Event::SequenceStart(..) | Event::MappingStart(..))
            && stack.len() >= budget.max_depth
        {
            Some(format!(
                "lists and mappings nest too deep here (at most {} levels): no pipeline needs that many",
                budget.max_depth
            ))
        } else if matches!(event, Event::DocumentStart(_)) && documents >= budget.max_documents {
            Some(format!(
                "the file has more than {} documents: split it into several files",
                budget.max_documents
            ))
        } else {
            None
        };
        if let Some(message) = overrun {
            out.errors.push(YamlError {
                pos: pos_of(&span.start),
                code: TOO_LARGE,
                message,
            });
            out.documents.clear();
            return out;
        }
        let completed: Option<(Node, usize, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                documents += 1;
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
                Some((node, _)) => {
                    let mut node = node.clone();
                    node.pos = pos_of(&span.start);
                    Some((node, 0, 0))
                }
                None => {
                    out.errors.push(YamlError {
                        pos: pos_of(&span.start),
                        code: "yaml",
                        message: "alias refers to an anchor that is not defined before it".into(),
                    });
                    Some((null_node(&span), 0, 0))
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
                    1,
                ))
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq {
                    anchor,
                    start: pos_of(&span.start),
                    span_start: span.start.index(),
                    counted_before: nodes - 1,
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map {
                    anchor,
                    start: pos_of(&span.start),
                    span_start: span.start.index(),
                    counted_before: nodes - 1,
                    entries: Vec::new(),
                    keys: HashMap::new(),
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
                    counted_before,
                    items,
                }) => Some((
                    Node {
                        value: NodeValue::Seq(items),
                        pos: start,
                        span: (span_start, span.end.index()),
                    },
                    anchor,
                    nodes - counted_before,
                )),
                _ => None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    anchor,
                    start,
                    span_start,
                    counted_before,
                    mut entries,
                    merges,
                    ..
                }) => {
                    apply_merges(&mut entries, merges, &mut out.errors);
                    Some((
                        Node {
                            value: NodeValue::Map(Mapping::new(entries)),
                            pos: start,
                            span: (span_start, span.end.index()),
                        },
                        anchor,
                        nodes - counted_before,
                    ))
                }
                _ => None,
            },
        };

        let Some((node, anchor, counted)) = completed else {
            continue;
        };
        if anchor != 0 {
            anchors.insert(anchor, (node.clone(), counted.max(1)));
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
            keys,
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
                } else if let Some(first) = keys.get(&key) {
                    errors.push(YamlError {
                        pos: key_pos,
                        code: "duplicate-key",
                        message: format!(
                            "duplicate key `{key}` (first defined at line {}, column {})",
                            first.line, first.col
                        ),
                    });
                } else {
                    keys.insert(key.clone(), key_pos);
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
    if merges.is_empty() {
        return;
    }
    let mut have: HashSet<String> = entries.iter().map(|e| e.key.clone()).collect();
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
                    for e in extra.entries {
                        if have.insert(e.key.clone()) {
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
            NodeValue::Map(m) => m.get(seg).map(|e| &e.value),
            NodeValue::Seq(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
            NodeValue::Scalar(_) => None,
        }
    }

    /// The position of the first scalar at or below this node whose text is `text`.
    pub fn find_scalar(&self, text: &str) -> Option<Pos> {
        match &self.value {
            NodeValue::Scalar(s) => (s.text.trim() == text.trim()).then_some(self.pos),
            NodeValue::Seq(items) => items.iter().find_map(|n| n.find_scalar(text)),
            NodeValue::Map(m) => m.entries.iter().find_map(|e| e.value.find_scalar(text)),
        }
    }

    /// The position of the key `key` in this mapping.
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        match &self.value {
            NodeValue::Map(m) => m.get(key).map(|e| e.key_pos),
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
            NodeValue::Map(m) => m.entries.iter().map(|e| e.key.as_str()).collect(),
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
    fn the_budget_counts_alias_expansions_depth_documents_and_bytes() {
        let small = Budget {
            max_bytes: 1_000,
            max_documents: 2,
            max_nodes: 30,
            max_depth: 3,
        };
        // Keys count too: the root, `a` and its list of 2 (4), `b` and its list of 3
        // aliases of 3 (11), `c` and an alias of b (11): 27, within 30; one more alias of
        // b is not.
        let ok = "a: &a [x, y]\nb: &b [*a, *a, *a]\nc: *b\n";
        let f = parse_within(ok, &small);
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        let f = parse_within(&format!("{ok}d: *b\n"), &small);
        assert_eq!(f.errors.len(), 1, "{:?}", f.errors);
        assert_eq!(f.errors[0].code, TOO_LARGE);
        assert_eq!(f.errors[0].pos, Pos { line: 4, col: 4 });
        assert!(
            f.documents.is_empty(),
            "nothing of an overrun file is checked further"
        );

        let f = parse_within("a: {b: {c: 1}}\n", &small);
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        let f = parse_within("a: {b: {c: [1]}}\n", &small);
        assert_eq!(f.errors[0].code, TOO_LARGE);
        assert!(f.errors[0].message.contains("at most 3 levels"));

        let f = parse_within("a: 1\n---\nb: 2\n---\nc: 3\n", &small);
        assert_eq!(f.errors[0].pos, Pos { line: 4, col: 1 });
        assert!(f.errors[0].message.contains("more than 2 documents"));

        let f = parse_within(&format!("a: \"{}\"\n", "x".repeat(1_000)), &small);
        assert_eq!(f.errors[0].pos, Pos { line: 1, col: 1 });
        assert!(f.errors[0].message.contains("larger than 1000 bytes"));
    }

    #[test]
    fn large_mappings_find_duplicates_merges_and_keys() {
        let mut src = String::from("base: &b {k0: merged, extra: 1}\nm:\n  <<: *b\n");
        for i in 0..100 {
            src.push_str(&format!("  k{i}: {i}\n"));
        }
        src.push_str("  k50: again\n");
        let f = parse(&src);
        assert_eq!(f.errors.len(), 1, "{:?}", f.errors);
        assert_eq!(f.errors[0].code, "duplicate-key");
        assert_eq!(f.errors[0].pos, Pos { line: 104, col: 3 });
        let d = &f.documents[0];
        let m = d.child("m").unwrap();
        assert_eq!(map_keys(m).len(), 101, "k0..k99 and the merged `extra`");
        assert_eq!(d.key_pos_at("/m/k99"), Pos { line: 103, col: 3 });
        assert_eq!(
            d.pos_at("/m/k0"),
            Pos { line: 4, col: 7 },
            "its own k0 wins"
        );
        assert!(d.child("m").unwrap().child("extra").is_some());
        assert_eq!(m.find_scalar("42"), Some(Pos { line: 46, col: 8 }));
    }

    #[test]
    fn pointer_escapes() {
        assert_eq!(pointer_segments("/a~1b/c~0d"), vec!["a/b", "c~d"]);
        assert_eq!(to_pointer(["a/b", "c~d"]), "/a~1b/c~0d");
    }
}
