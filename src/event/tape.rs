//! Records parsed once into a flat tape over the bytes they came from.
//!
//! A parsed `serde_json::Value` costs an allocation for every key, string, list and map
//! (with key order kept, a hash table for every map), and as much again to free. A flow
//! record of a PCE is read by a few rules for a few fields and then dropped, so a source
//! that reads many records makes a [`Tape`] instead: one list of nodes, strings left where
//! they are in the record's bytes. Field paths are looked up on the tape directly; the
//! full `Value` is made only when something asks for the whole record ([`Tape::value`]).
//!
//! A source may add fields to a taped record without copying it: each [`Tape::set`]
//! places a value at a path, as `Value` insertion would (an existing key keeps its place,
//! a new key comes last), and lookups see it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};

use bytes::Bytes;
use serde_json::{Map, Number, Value};

use super::{FieldPath, Segment};

/// One node of a tape. A list is followed by its items, an object by its pairs (a key
/// node, then the value's nodes); both know where the next node after them is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Node {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    /// A string exactly as in the bytes (it has no escapes): offset and length.
    Raw(u32, u32),
    /// A string that had escapes, unescaped: its index in `owned`.
    Owned(u32),
    /// A list of `len` items; the node after its last item is `end`.
    Arr {
        len: u32,
        end: u32,
    },
    /// An object of `len` pairs; the node after its last pair is `end`.
    Obj {
        len: u32,
        end: u32,
    },
}

/// The record's text as the owner of [`Tape::raw`]'s bytes.
struct RawOwner(std::sync::Arc<str>);

impl AsRef<[u8]> for RawOwner {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Where a patch goes: keys of nested objects.
#[derive(Debug, Clone, PartialEq)]
enum PatchPath {
    /// Known when vigil was built (a source's own fields): nothing to allocate.
    Static(&'static [&'static str]),
    Owned(Box<[Box<str>]>),
}

impl PatchPath {
    fn len(&self) -> usize {
        match self {
            PatchPath::Static(p) => p.len(),
            PatchPath::Owned(p) => p.len(),
        }
    }

    /// The first key.
    fn first(&self) -> Option<&str> {
        match self {
            PatchPath::Static(p) => p.first().copied(),
            PatchPath::Owned(p) => p.first().map(|k| &**k),
        }
    }

    /// How many of the first segments of `segs` are this path's first keys.
    fn common(&self, segs: &[Segment]) -> usize {
        match self {
            PatchPath::Static(p) => p
                .iter()
                .zip(segs)
                .take_while(|(k, s)| **k == s.key())
                .count(),
            PatchPath::Owned(p) => p
                .iter()
                .zip(segs)
                .take_while(|(k, s)| &***k == s.key())
                .count(),
        }
    }

    /// The `i`-th key.
    fn key(&self, i: usize) -> Option<&str> {
        match self {
            PatchPath::Static(p) => p.get(i).copied(),
            PatchPath::Owned(p) => p.get(i).map(|k| &**k),
        }
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        let (a, b): (&[&'static str], &[Box<str>]) = match self {
            PatchPath::Static(p) => (p, &[]),
            PatchPath::Owned(p) => (&[], p),
        };
        a.iter().copied().chain(b.iter().map(|k| &**k))
    }
}

/// A value placed over the tape at a path (see [`Tape::set`]).
#[derive(Debug, Clone, PartialEq)]
struct Patch {
    path: PatchPath,
    value: std::sync::Arc<Value>,
}

/// A record parsed into a tape; see the module documentation.
#[derive(Debug)]
pub struct Tape {
    /// The record's bytes (valid UTF-8: the parser checked them), shared.
    text: std::sync::Arc<str>,
    nodes: Box<[Node]>,
    owned: Box<[Box<str>]>,
    patches: Vec<Patch>,
    /// A patch replaced a list or a scalar of the parsed record by an object: lookups use
    /// the whole value.
    exotic: bool,
    /// Some object repeats a key (the last one counts, as in a parsed `Value`).
    duplicates: bool,
    /// The patches whose paths start with a key no earlier patch's starts with.
    roots: Vec<usize>,
    full: OnceLock<Value>,
    /// The record as JSON text, made on the first ask (a sample kept by a stage) and
    /// shared by every stage holding the event: many stages sample the same events.
    json: OnceLock<std::sync::Arc<serde_json::value::RawValue>>,
    /// Where each numbered field path leads in this record, once a lookup asked (see
    /// [`path_number`]): the rules of a graph read the same few fields of every event,
    /// so each is found once per event, not once per rule.
    memo: OnceLock<Box<[AtomicU16]>>,
}

/// The most field paths numbered for [`Tape`]'s memo; paths parsed after that are looked
/// up every time.
#[cfg(not(test))]
const MAX_NUMBERED_PATHS: usize = 256;
/// The library's unit tests parse well over 256 different paths in one process, in no
/// fixed order: the memo's own tests would otherwise find the numbers used up.
#[cfg(test)]
const MAX_NUMBERED_PATHS: usize = 8192;

/// The field paths numbered so far, by text.
static PATH_NUMBERS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, u16>>> =
    std::sync::LazyLock::new(Default::default);

/// How many paths are numbered (the size of a memo made now).
static NUMBERED_PATHS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The number of the field path written `text`, the same for every path so written, for
/// [`Tape`]'s memo; `None` once [`MAX_NUMBERED_PATHS`] are numbered.
pub(super) fn path_number(text: &str) -> Option<u16> {
    let mut numbers = PATH_NUMBERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = numbers.get(text) {
        return Some(*n);
    }
    let n = numbers.len();
    if n >= MAX_NUMBERED_PATHS {
        return None;
    }
    let n = n as u16;
    numbers.insert(text.to_string(), n);
    NUMBERED_PATHS.store(numbers.len(), Ordering::Release);
    Some(n)
}

/// A memo slot: not looked up yet.
const MEMO_UNKNOWN: u16 = 0;
/// A memo slot: the path reaches nothing.
const MEMO_ABSENT: u16 = 1;
/// A memo slot: the path fans out over a list, or a patch lies on it: looked up the
/// general way.
const MEMO_GENERAL: u16 = 2;
/// A memo slot: the path reaches the node `slot - MEMO_NODE` (below [`MEMO_PATCH`]).
const MEMO_NODE: u16 = 3;
/// A memo slot: the path leads into the value of patch `slot - MEMO_PATCH` (a source's
/// added fields, such as a flow's label maps, are read as often as its own).
const MEMO_PATCH: u16 = 0xff00;

/// Where a field path leads in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Absent,
    General,
    Node(usize),
    /// Into the value of the patch with this index, at the path's keys after the patch's.
    Patch(usize),
}

impl Clone for Tape {
    fn clone(&self) -> Tape {
        Tape {
            text: self.text.clone(),
            nodes: self.nodes.clone(),
            owned: self.owned.clone(),
            patches: self.patches.clone(),
            exotic: self.exotic,
            duplicates: self.duplicates,
            roots: self.roots.clone(),
            full: OnceLock::new(),
            json: OnceLock::new(),
            memo: OnceLock::new(),
        }
    }
}

impl PartialEq for Tape {
    fn eq(&self, other: &Tape) -> bool {
        self.value() == other.value()
    }
}

impl Tape {
    /// Parses `raw`, which holds one JSON value (and whitespace around it).
    pub fn parse(raw: Bytes) -> Result<Tape, super::ParseError> {
        super::scan::parse(&raw)
    }

    /// A tape of `nodes` over `text` (see [`super::scan`]).
    pub(super) fn from_scan(
        text: std::sync::Arc<str>,
        nodes: Box<[Node]>,
        owned: Vec<Box<str>>,
        duplicates: bool,
    ) -> Tape {
        Tape {
            text,
            nodes,
            owned: owned.into_boxed_slice(),
            patches: Vec::new(),
            exotic: false,
            duplicates,
            roots: Vec::new(),
            full: OnceLock::new(),
            json: OnceLock::new(),
            memo: OnceLock::new(),
        }
    }

    /// Whether some object of the parsed record repeats a key, and how many pairs its
    /// objects have in all (repeats included), for tests of the parser.
    #[cfg(test)]
    pub(super) fn key_facts(&self) -> (bool, usize) {
        let pairs = self
            .nodes
            .iter()
            .map(|n| match n {
                Node::Obj { len, .. } => *len as usize,
                _ => 0,
            })
            .sum();
        (self.duplicates, pairs)
    }

    /// The whole record, as a field.
    pub fn root(&self) -> Field<'_> {
        self.field(0)
    }

    /// The bytes the record was parsed from.
    pub fn raw(&self) -> Bytes {
        Bytes::from_owner(RawOwner(self.text.clone()))
    }

    /// The record as JSON text, made once with `make` and then shared (see [`Tape`]'s
    /// `json`): its copies are made anew after a patch.
    pub fn json_text(
        &self,
        make: impl FnOnce(&Tape) -> std::sync::Arc<serde_json::value::RawValue>,
    ) -> std::sync::Arc<serde_json::value::RawValue> {
        self.json.get_or_init(|| make(self)).clone()
    }

    /// Whether [`Tape::set`] placed anything over the parsed record.
    pub fn is_patched(&self) -> bool {
        !self.patches.is_empty()
    }

    /// The whole record as a `Value` (made on the first call, kept).
    pub fn value(&self) -> &Value {
        self.full.get_or_init(|| {
            let mut v = self.node_value(0);
            for p in &self.patches {
                place(&mut v, p.path.keys(), Value::clone(&p.value));
            }
            v
        })
    }

    /// The whole record as a `Value`, consuming the tape.
    pub fn into_value(mut self) -> Value {
        match self.full.take() {
            Some(v) => v,
            None => self.value().clone(),
        }
    }

    /// Places `value` at `path` (keys of nested objects, made where missing), as
    /// inserting into the record's `Value` would: a key that is there keeps its place, a
    /// new one comes last.
    pub fn set(&mut self, path: &[&str], value: Value) {
        self.set_shared(path, std::sync::Arc::new(value));
    }

    /// [`Tape::set`] with a value shared with other tapes (a source placing the same
    /// value over many records keeps one copy).
    pub fn set_shared(&mut self, path: &[&str], value: std::sync::Arc<Value>) {
        let owned = PatchPath::Owned(path.iter().map(|s| Box::from(*s)).collect());
        self.patch(owned, value);
    }

    /// [`Tape::set_shared`] at a path known when vigil was built (nothing to allocate).
    pub fn set_static(&mut self, path: &'static [&'static str], value: std::sync::Arc<Value>) {
        self.patch(PatchPath::Static(path), value);
    }

    /// Makes room for `n` more patches at once.
    pub fn reserve_patches(&mut self, n: usize) {
        self.patches.reserve(n);
    }

    fn patch(&mut self, path: PatchPath, value: std::sync::Arc<Value>) {
        // Where paths lead may change, and the text is no longer the record's.
        self.memo = OnceLock::new();
        self.json = OnceLock::new();
        let n = path.len();
        // Objects on the way that the parsed record has as something else are replaced.
        let mut at = Some(0);
        for k in path.keys().take(n.saturating_sub(1)) {
            match at.and_then(|a| self.nodes.get(a)) {
                Some(Node::Obj { .. }) => at = at.and_then(|a| self.member(a, k)),
                Some(_) => {
                    self.exotic = true;
                    break;
                }
                None => break,
            }
        }
        if n == 0 {
            self.exotic = true;
        }
        if let Some(full) = self.full.get_mut() {
            place(full, path.keys(), Value::clone(&value));
        }
        if let Some(root) = path.keys().next()
            && !self.roots.iter().any(|r| self.root_key(*r) == Some(root))
        {
            self.roots.push(self.patches.len());
        }
        self.patches.push(Patch { path, value });
    }

    /// The first key of the `i`-th patch.
    fn root_key(&self, i: usize) -> Option<&str> {
        self.patches.get(i).and_then(|p| p.path.first())
    }

    /// The value at `segs` on the tape, patches included: `Some(Ok(node))` on the tape,
    /// `Some(Err(value))` in a patch, `None` when a patch below `segs` changes it (ask the
    /// whole value).
    fn route<'a, 's>(&'a self, segs: &'s [Segment]) -> Route<'a, 's> {
        if self.patches.is_empty() {
            return Route::Tape(0, segs);
        }
        if self.exotic {
            return Route::Whole;
        }
        let Some(first) = segs.first() else {
            return Route::Whole;
        };
        if !self
            .roots
            .iter()
            .any(|r| self.root_key(*r) == Some(first.key()))
        {
            return Route::Tape(0, segs);
        }
        let mut found: Option<(usize, &Patch)> = None;
        for (i, p) in self.patches.iter().enumerate().rev() {
            let common = p.path.common(segs);
            if common == p.path.len() {
                if found.is_none() {
                    found = Some((i, p));
                }
            } else if common == segs.len() && found.is_none() {
                // A later patch below the path: only the whole value has it right.
                return Route::Whole;
            }
        }
        match found {
            Some((i, p)) => Route::Patch(i, &p.value, &segs[p.path.len()..]),
            None => Route::Tape(0, segs),
        }
    }

    /// Where `path` leads: from the memo, or looked up and kept there.
    fn reach(&self, path: &FieldPath) -> Reach {
        let Some(number) = path.number else {
            return Reach::General;
        };
        let slots = self.memo.get_or_init(|| {
            (0..NUMBERED_PATHS.load(Ordering::Acquire))
                .map(|_| AtomicU16::new(MEMO_UNKNOWN))
                .collect()
        });
        let Some(slot) = slots.get(usize::from(number)) else {
            return Reach::General;
        };
        match slot.load(Ordering::Relaxed) {
            MEMO_UNKNOWN => {
                let reach = match self.route(&path.segments) {
                    Route::Tape(at, segs) => self.straight(at, segs),
                    Route::Patch(i, ..) => Reach::Patch(i),
                    Route::Whole => Reach::General,
                };
                let code = match reach {
                    Reach::Absent => MEMO_ABSENT,
                    Reach::General => MEMO_GENERAL,
                    Reach::Node(at) => u16::try_from(at)
                        .ok()
                        .and_then(|at| at.checked_add(MEMO_NODE))
                        .filter(|code| *code < MEMO_PATCH)
                        .unwrap_or(MEMO_GENERAL),
                    Reach::Patch(i) => u16::try_from(i)
                        .ok()
                        .and_then(|i| i.checked_add(MEMO_PATCH))
                        .unwrap_or(MEMO_GENERAL),
                };
                // Racing lookups store the same answer.
                slot.store(code, Ordering::Relaxed);
                reach
            }
            MEMO_ABSENT => Reach::Absent,
            MEMO_GENERAL => Reach::General,
            code if code >= MEMO_PATCH => Reach::Patch(usize::from(code - MEMO_PATCH)),
            code => Reach::Node(usize::from(code - MEMO_NODE)),
        }
    }

    /// Follows `segs` from `at` through objects and list indexes: the node it reaches,
    /// `Absent`, or `General` when it meets a list without an index (it fans out).
    fn straight(&self, mut at: usize, segs: &[Segment]) -> Reach {
        for seg in segs {
            let next = match (self.nodes.get(at), seg) {
                (Some(Node::Obj { .. }), seg) => self.member(at, seg.key()),
                (Some(Node::Arr { .. }), Segment::Index(i, _)) => self.items(at).nth(*i),
                (Some(Node::Arr { .. }), Segment::Key(_)) => return Reach::General,
                _ => None,
            };
            match next {
                Some(n) => at = n,
                None => return Reach::Absent,
            }
        }
        Reach::Node(at)
    }

    /// [`Tape::any`] for a numbered path, through the memo.
    pub(super) fn any_path(
        &self,
        path: &FieldPath,
        visit: &mut dyn FnMut(Field<'_>) -> bool,
    ) -> bool {
        match self.reach(path) {
            Reach::Absent => false,
            Reach::Node(at) => self.walk(at, &[], visit),
            Reach::Patch(i) => match self.in_patch(i, &path.segments) {
                Some((v, rest)) => super::walk(v, rest, &mut |v| visit(Field::Value(v))),
                None => self.any(&path.segments, visit),
            },
            Reach::General => self.any(&path.segments, visit),
        }
    }

    /// [`Tape::first`] for a numbered path, through the memo.
    pub(super) fn first_path<'a>(&'a self, path: &FieldPath) -> Option<Field<'a>> {
        match self.reach(path) {
            Reach::Absent => None,
            Reach::Node(at) => Some(self.field(at)),
            Reach::Patch(i) => match self.in_patch(i, &path.segments) {
                Some((v, rest)) => super::first(v, rest).map(Field::Value),
                None => self.first(&path.segments),
            },
            Reach::General => self.first(&path.segments),
        }
    }

    /// [`Tape::has`] for a numbered path, through the memo.
    pub(super) fn has_path(&self, path: &FieldPath) -> bool {
        match self.reach(path) {
            Reach::Absent => false,
            Reach::Node(_) => true,
            Reach::Patch(i) => match self.in_patch(i, &path.segments) {
                Some((v, rest)) => super::first(v, rest).is_some(),
                None => self.has(&path.segments),
            },
            Reach::General => self.has(&path.segments),
        }
    }

    /// The value of patch `i` and the keys of `segs` below its path (`None` should the
    /// memo be stale: then the caller looks the general way).
    fn in_patch<'a, 's>(
        &'a self,
        i: usize,
        segs: &'s [Segment],
    ) -> Option<(&'a Value, &'s [Segment])> {
        let p = self.patches.get(i)?;
        let n = p.path.len();
        (p.path.common(segs) == n).then(|| (&*p.value, &segs[n..]))
    }

    /// Calls `visit` with every value `segs` reaches (see [`super::FieldPath::any`]).
    pub(super) fn any(&self, segs: &[Segment], visit: &mut dyn FnMut(Field<'_>) -> bool) -> bool {
        match self.route(segs) {
            Route::Tape(at, segs) => self.walk(at, segs, visit),
            Route::Patch(_, v, rest) => super::walk(v, rest, &mut |v| visit(Field::Value(v))),
            Route::Whole => super::walk(self.value(), segs, &mut |v| visit(Field::Value(v))),
        }
    }

    /// The first value `segs` reaches (see [`super::FieldPath::first`]).
    pub(super) fn first<'a>(&'a self, segs: &[Segment]) -> Option<Field<'a>> {
        match self.route(segs) {
            Route::Tape(at, segs) => self.first_at(at, segs),
            Route::Patch(_, v, rest) => super::first(v, rest).map(Field::Value),
            Route::Whole => super::first(self.value(), segs).map(Field::Value),
        }
    }

    /// Whether `segs` reaches a value (without making the whole value when a patch lies
    /// below it: then it does).
    pub(super) fn has(&self, segs: &[Segment]) -> bool {
        match self.route(segs) {
            Route::Whole => {
                self.patches.iter().any(|p| {
                    p.path.len() > segs.len() && p.path.keys().zip(segs).all(|(k, s)| k == s.key())
                }) || super::first(self.value(), segs).is_some()
            }
            _ => self.first(segs).is_some(),
        }
    }

    fn end_of(&self, at: usize) -> usize {
        match self.nodes.get(at) {
            Some(Node::Arr { end, .. } | Node::Obj { end, .. }) => *end as usize,
            _ => at + 1,
        }
    }

    fn str_at(&self, at: usize) -> Option<&str> {
        match self.nodes.get(at)? {
            Node::Raw(off, len) => self.text.get(*off as usize..(*off + *len) as usize),
            Node::Owned(i) => self.owned.get(*i as usize).map(|s| &**s),
            _ => None,
        }
    }

    /// The value node of `key` in the object at `at` (the last, when a key repeats, as in
    /// a parsed `Value`).
    fn member(&self, at: usize, key: &str) -> Option<usize> {
        let Some(Node::Obj { len, .. }) = self.nodes.get(at) else {
            return None;
        };
        let mut i = at + 1;
        let mut found = None;
        for _ in 0..*len {
            let matches = match self.nodes.get(i) {
                Some(Node::Raw(off, l)) => {
                    // Length and first byte first: most keys differ there, without a call.
                    let bytes = self.text.as_bytes();
                    *l as usize == key.len()
                        && bytes.get(*off as usize) == key.as_bytes().first()
                        && bytes.get(*off as usize..(*off + *l) as usize) == Some(key.as_bytes())
                }
                _ => self.str_at(i) == Some(key),
            };
            if matches {
                if !self.duplicates {
                    return Some(i + 1);
                }
                found = Some(i + 1);
            }
            i = self.end_of(i + 1);
        }
        found
    }

    /// The items of the list at `at`.
    fn items(&self, at: usize) -> impl Iterator<Item = usize> + '_ {
        let len = match self.nodes.get(at) {
            Some(Node::Arr { len, .. }) => *len,
            _ => 0,
        };
        let mut i = at + 1;
        (0..len).map(move |_| {
            let here = i;
            i = self.end_of(i);
            here
        })
    }

    fn walk(&self, at: usize, segs: &[Segment], visit: &mut dyn FnMut(Field<'_>) -> bool) -> bool {
        let Some((seg, rest)) = segs.split_first() else {
            return match self.nodes.get(at) {
                Some(Node::Arr { .. }) => self.items(at).any(|i| visit(self.field(i))),
                Some(_) => visit(self.field(at)),
                None => false,
            };
        };
        match (self.nodes.get(at), seg) {
            (Some(Node::Obj { .. }), seg) => self
                .member(at, seg.key())
                .is_some_and(|c| self.walk(c, rest, visit)),
            (Some(Node::Arr { .. }), Segment::Index(i, _)) => self
                .items(at)
                .nth(*i)
                .is_some_and(|c| self.walk(c, rest, visit)),
            (Some(Node::Arr { .. }), Segment::Key(_)) => {
                self.items(at).any(|c| self.walk(c, segs, visit))
            }
            _ => false,
        }
    }

    fn first_at<'a>(&'a self, at: usize, segs: &[Segment]) -> Option<Field<'a>> {
        let Some((seg, rest)) = segs.split_first() else {
            return Some(self.field(at));
        };
        match (self.nodes.get(at)?, seg) {
            (Node::Obj { .. }, seg) => self.first_at(self.member(at, seg.key())?, rest),
            (Node::Arr { .. }, Segment::Index(i, _)) => {
                self.first_at(self.items(at).nth(*i)?, rest)
            }
            (Node::Arr { .. }, Segment::Key(_)) => {
                self.items(at).find_map(|c| self.first_at(c, segs))
            }
            _ => None,
        }
    }

    fn field(&self, at: usize) -> Field<'_> {
        Field::Tape(TapeRef { tape: self, at })
    }

    fn node_value(&self, at: usize) -> Value {
        match self.nodes.get(at) {
            Some(Node::Arr { .. }) => {
                Value::Array(self.items(at).map(|i| self.node_value(i)).collect())
            }
            Some(Node::Obj { len, .. }) => {
                let mut map = Map::with_capacity(*len as usize);
                let mut i = at + 1;
                for _ in 0..*len {
                    let key = self.str_at(i).unwrap_or_default().to_string();
                    map.insert(key, self.node_value(i + 1));
                    i = self.end_of(i + 1);
                }
                Value::Object(map)
            }
            _ => match self.field(at).scalar() {
                Scalar::Bool(b) => Value::Bool(b),
                Scalar::Num(n) => Value::Number(n),
                Scalar::Str(t) => Value::String(t.to_string()),
                Scalar::Null | Scalar::Other => Value::Null,
            },
        }
    }
}

impl serde::Serialize for Tape {
    /// As the record's `Value` would serialise, without making it: the parsed record with
    /// the patches merged in as they are written (a `Value` is made only when one patch
    /// lies inside another's value, or a patch replaced a list or a scalar).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Some(full) = self.full.get() {
            return full.serialize(s);
        }
        if self.patches.is_empty() {
            return NodeRef { tape: self, at: 0 }.serialize(s);
        }
        if self.exotic || self.duplicates || self.nested_patches() {
            return self.value().serialize(s);
        }
        let patches: Vec<&Patch> = self.patches.iter().collect();
        Merged {
            tape: self,
            at: Some(0),
            patches: &patches,
            depth: 0,
        }
        .serialize(s)
    }
}

impl Tape {
    /// Whether one patch's path leads into another's value (their order then matters in
    /// ways [`Merged`] does not follow).
    fn nested_patches(&self) -> bool {
        self.patches.iter().enumerate().any(|(i, a)| {
            self.patches[i + 1..].iter().any(|b| {
                let common = a
                    .path
                    .keys()
                    .zip(b.path.keys())
                    .take_while(|(x, y)| x == y)
                    .count();
                a.path.len() != b.path.len() && common == a.path.len().min(b.path.len())
            })
        })
    }
}

/// An object of a patched tape, to serialise: the parsed object at `at` (or a new one,
/// made for patches below it) with the patches whose paths pass through it, from their
/// `depth`-th key on. An existing key keeps its place (with the last patch's value when a
/// patch ends there); new keys follow in the order patches first named them.
struct Merged<'a, 'p> {
    tape: &'a Tape,
    at: Option<usize>,
    patches: &'p [&'a Patch],
    depth: usize,
}

impl Merged<'_, '_> {
    /// The entry of `key`, made of the patches that pass through it.
    fn entry<M: serde::ser::SerializeMap>(
        &self,
        map: &mut M,
        key: &str,
        below: Option<usize>,
    ) -> Result<(), M::Error> {
        let here: Vec<&Patch> = self
            .patches
            .iter()
            .copied()
            .filter(|p| p.path.key(self.depth) == Some(key))
            .collect();
        // Patches through one key all end there or all go on (see `nested_patches`).
        match here.iter().rev().find(|p| p.path.len() == self.depth + 1) {
            Some(last) => map.serialize_entry(key, &*last.value),
            None => map.serialize_entry(
                key,
                &Merged {
                    tape: self.tape,
                    at: below,
                    patches: &here,
                    depth: self.depth + 1,
                },
            ),
        }
    }
}

impl serde::Serialize for Merged<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let t = self.tape;
        let touched = |key: &str| {
            self.patches
                .iter()
                .any(|p| p.path.key(self.depth) == Some(key))
        };
        let mut map = s.serialize_map(None)?;
        if let Some(at) = self.at
            && let Some(Node::Obj { len, .. }) = t.nodes.get(at)
        {
            let mut i = at + 1;
            for _ in 0..*len {
                let key = t.str_at(i).unwrap_or_default();
                if touched(key) {
                    self.entry(&mut map, key, Some(i + 1))?;
                } else {
                    map.serialize_entry(key, &NodeRef { tape: t, at: i + 1 })?;
                }
                i = t.end_of(i + 1);
            }
        }
        let exists = |key: &str| self.at.is_some_and(|at| t.member(at, key).is_some());
        for (n, p) in self.patches.iter().enumerate() {
            let Some(key) = p.path.key(self.depth) else {
                continue;
            };
            let first = !self.patches[..n]
                .iter()
                .any(|q| q.path.key(self.depth) == Some(key));
            if first && !exists(key) {
                self.entry(&mut map, key, None)?;
            }
        }
        map.end()
    }
}

/// A node of a tape, to serialise.
struct NodeRef<'a> {
    tape: &'a Tape,
    at: usize,
}

impl serde::Serialize for NodeRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        let t = self.tape;
        match t.nodes.get(self.at) {
            None | Some(Node::Null) => s.serialize_unit(),
            Some(Node::Bool(b)) => s.serialize_bool(*b),
            Some(Node::U64(n)) => s.serialize_u64(*n),
            Some(Node::I64(n)) => s.serialize_i64(*n),
            Some(Node::F64(f)) => s.serialize_f64(*f),
            Some(Node::Raw(..) | Node::Owned(_)) => {
                s.serialize_str(t.str_at(self.at).unwrap_or_default())
            }
            Some(Node::Arr { len, .. }) => {
                let mut seq = s.serialize_seq(Some(*len as usize))?;
                for i in t.items(self.at) {
                    seq.serialize_element(&NodeRef { tape: t, at: i })?;
                }
                seq.end()
            }
            Some(Node::Obj { len, .. }) => {
                // A repeated key serialises once, with its last value (as a `Value` would).
                if t.duplicates {
                    return t.node_value(self.at).serialize(s);
                }
                let mut map = s.serialize_map(Some(*len as usize))?;
                let mut i = self.at + 1;
                for _ in 0..*len {
                    map.serialize_entry(
                        t.str_at(i).unwrap_or_default(),
                        &NodeRef { tape: t, at: i + 1 },
                    )?;
                    i = t.end_of(i + 1);
                }
                map.end()
            }
        }
    }
}

enum Route<'a, 's> {
    Tape(usize, &'s [Segment]),
    /// In the value of the patch with this index, at the rest of the path.
    Patch(usize, &'a Value, &'s [Segment]),
    Whole,
}

/// Places `value` at `path` in `v`, making objects on the way (a non-object on the way is
/// replaced by one).
fn place<'k>(v: &mut Value, path: impl Iterator<Item = &'k str>, value: Value) {
    let path: Vec<&str> = path.collect();
    let Some((last, parents)) = path.split_last() else {
        *v = value;
        return;
    };
    let mut here = v;
    for k in parents {
        if !here.is_object() {
            *here = Value::Object(Map::new());
        }
        let Value::Object(map) = here else { return };
        here = map
            .entry(k.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !here.is_object() {
        *here = Value::Object(Map::new());
    }
    if let Value::Object(map) = here {
        map.insert(last.to_string(), value);
    }
}

/// A value a field path reached: in a `Value`, or on a [`Tape`].
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    /// Inside a `Value`.
    Value(&'a Value),
    /// On a tape.
    Tape(TapeRef<'a>),
}

/// A node of a [`Tape`].
#[derive(Debug, Clone, Copy)]
pub struct TapeRef<'a> {
    tape: &'a Tape,
    at: usize,
}

/// What a [`Field`] holds, for comparing: scalars as they are, lists and objects as
/// [`Scalar::Other`].
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Num(Number),
    /// A string.
    Str(&'a str),
    /// A list or an object.
    Other,
}

impl<'a> Field<'a> {
    /// The scalar it holds.
    pub fn scalar(&self) -> Scalar<'a> {
        match self {
            Field::Value(v) => match v {
                Value::Null => Scalar::Null,
                Value::Bool(b) => Scalar::Bool(*b),
                Value::Number(n) => Scalar::Num(n.clone()),
                Value::String(s) => Scalar::Str(s),
                _ => Scalar::Other,
            },
            Field::Tape(r) => match r.tape.nodes.get(r.at) {
                None | Some(Node::Null) => Scalar::Null,
                Some(Node::Bool(b)) => Scalar::Bool(*b),
                Some(Node::U64(n)) => Scalar::Num((*n).into()),
                Some(Node::I64(n)) => Scalar::Num((*n).into()),
                Some(Node::F64(f)) => Number::from_f64(*f).map_or(Scalar::Null, Scalar::Num),
                Some(Node::Raw(..) | Node::Owned(_)) => {
                    r.tape.str_at(r.at).map_or(Scalar::Null, Scalar::Str)
                }
                Some(Node::Arr { .. } | Node::Obj { .. }) => Scalar::Other,
            },
        }
    }

    /// The string it holds.
    pub fn as_str(&self) -> Option<&'a str> {
        match self.scalar() {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number it holds, as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match self.scalar() {
            Scalar::Num(n) => n.as_f64(),
            _ => None,
        }
    }

    /// The number it holds, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self.scalar() {
            Scalar::Num(n) => n.as_u64(),
            _ => None,
        }
    }

    /// The value of `key`, when it is an object that has it.
    pub fn get(&self, key: &str) -> Option<Field<'a>> {
        match self {
            Field::Value(v) => v.get(key).map(Field::Value),
            Field::Tape(r) => r.tape.member(r.at, key).map(|at| r.tape.field(at)),
        }
    }

    /// Its items, when it is a list (else none).
    pub fn items(self) -> impl Iterator<Item = Field<'a>> + 'a {
        let (values, tape): (&'a [Value], Option<TapeRef<'a>>) = match self {
            Field::Value(Value::Array(items)) => (items, None),
            Field::Value(_) => (&[], None),
            Field::Tape(r) => (&[], Some(r)),
        };
        values.iter().map(Field::Value).chain(
            tape.into_iter()
                .flat_map(|r| r.tape.items(r.at).map(move |at| r.tape.field(at))),
        )
    }

    /// Whether it is an object.
    pub fn is_object(&self) -> bool {
        match self {
            Field::Value(v) => v.is_object(),
            Field::Tape(r) => matches!(r.tape.nodes.get(r.at), Some(Node::Obj { .. })),
        }
    }

    /// Whether it is `null`.
    pub fn is_null(&self) -> bool {
        self.scalar() == Scalar::Null
    }

    /// The value itself, borrowed where it is a `Value` already.
    pub fn to_value(&self) -> std::borrow::Cow<'a, Value> {
        match self {
            Field::Value(v) => std::borrow::Cow::Borrowed(*v),
            Field::Tape(r) => std::borrow::Cow::Owned(r.tape.node_value(r.at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `path` reaches in `tape`, looked up the general way and through the memo
    /// (twice: the second answer comes from it), as values.
    fn both_ways(tape: &Tape, path: &str) -> [(Option<Value>, Vec<Value>); 3] {
        let path = FieldPath::parse(path).unwrap();
        assert!(path.number.is_some());
        let general = {
            let mut all = Vec::new();
            tape.any(&path.segments, &mut |f| {
                all.push(f.to_value().into_owned());
                false
            });
            let first = tape
                .first(&path.segments)
                .map(|f| f.to_value().into_owned());
            (first, all)
        };
        let memo = || {
            let mut all = Vec::new();
            path.any_in_tape(tape, &mut |f| {
                all.push(f.to_value().into_owned());
                false
            });
            let first = path.first_in_tape(tape).map(|f| f.to_value().into_owned());
            assert_eq!(tape.has_path(&path), first.is_some(), "{path}");
            (first, all)
        };
        [general, memo(), memo()]
    }

    /// Lookups through the memo give what the general way gives: objects, list indexes,
    /// lists fanned out, lists at the end, absent fields, scalars on the way, and fields a
    /// patch placed after the memo had answers.
    #[test]
    fn the_memo_answers_as_the_general_lookup_does() {
        let raw = br#"{"src":{"ip":"10.0.0.1","labels":[{"key":"role","value":"db"},{"key":"env","value":"prod"}]},"ports":[22,443],"n":3,"s":"x","nested":{"a":{"b":null}}}"#;
        let mut tape = Tape::parse(Bytes::from_static(raw)).unwrap();
        let paths = [
            "src.ip",
            "src.labels.key",
            "src.labels.1.value",
            "src.labels.5.value",
            "ports",
            "ports.0",
            "n",
            "n.x",
            "s.0",
            "nested.a.b",
            "nested.a.c",
            "missing",
            "src.workload.labels_by_key.role",
            "src.workload.labels_by_key",
            "src.workload.labels_by_key.env",
            "dst.ip_list_names",
            "dst.ip_list_names.1",
        ];
        for path in paths {
            let [general, first, second] = both_ways(&tape, path);
            assert_eq!(first, general, "{path}");
            assert_eq!(second, general, "{path}");
        }
        tape.set(
            &["src", "workload", "labels_by_key"],
            serde_json::json!({"role": "db"}),
        );
        tape.set(&["n"], serde_json::json!(4));
        for path in paths {
            let [general, first, second] = both_ways(&tape, path);
            assert_eq!(first, general, "{path} after patches");
            assert_eq!(second, general, "{path} after patches");
        }
        let [_, (first, _), _] = both_ways(&tape, "src.workload.labels_by_key.role");
        assert_eq!(first, Some(serde_json::json!("db")));
        let [_, (first, _), _] = both_ways(&tape, "n");
        assert_eq!(first, Some(serde_json::json!(4)));

        // A list placed by a patch fans out; a patch below an earlier one's value.
        tape.set(&["dst", "ip_list_names"], serde_json::json!(["a", "b"]));
        tape.set(
            &["src", "workload", "labels_by_key", "env"],
            serde_json::json!("prod"),
        );
        for path in paths {
            let [general, first, second] = both_ways(&tape, path);
            assert_eq!(first, general, "{path} after more patches");
            assert_eq!(second, general, "{path} after more patches");
        }
        let [_, (first, _), _] = both_ways(&tape, "src.workload.labels_by_key.env");
        assert_eq!(first, Some(serde_json::json!("prod")));
        let [_, (first, _), _] = both_ways(&tape, "dst.ip_list_names.1");
        assert_eq!(first, Some(serde_json::json!("b")));
    }
    use crate::event::FieldPath;
    use serde_json::json;

    fn tape(text: &str) -> Tape {
        Tape::parse(Bytes::from(text.to_string())).unwrap()
    }

    const RECORD: &str = r#"{"src":{"ip":"10.0.0.1","workload":{"labels":[{"key":"role","value":"db"},{"key":"env","value":"p\"rod"}]}},
        "dst":{"ip":"10.0.0.2"},"service":{"port":22,"proto":6},"n":-3,"f":1.5,"ok":true,"none":null,
        "list":[1,[2,3],{"a":4}],"dup":1,"dup":2,"0":"zero","esc\u0041":"x"}"#;

    #[test]
    fn the_value_is_the_parsed_value() {
        let t = tape(RECORD);
        let v: Value = serde_json::from_str(RECORD).unwrap();
        assert_eq!(t.value(), &v);
        assert_eq!(
            serde_json::to_string(t.value()).unwrap(),
            serde_json::to_string(&v).unwrap(),
            "same key order"
        );
        assert_eq!(tape(" 5 ").value(), &json!(5));
        assert!(Tape::parse(Bytes::from_static(b"{\"a\":1} x")).is_err());
        assert!(Tape::parse(Bytes::from_static(b"{\"a\":")).is_err());
    }

    #[test]
    fn paths_reach_what_they_reach_in_the_value() {
        let t = tape(RECORD);
        let v: Value = serde_json::from_str(RECORD).unwrap();
        for path in [
            "src.ip",
            "src.workload.labels.key",
            "src.workload.labels.value",
            "src.workload.labels.1.value",
            "src.workload.labels",
            "service.port",
            "n",
            "f",
            "ok",
            "none",
            "list",
            "list.1",
            "list.1.0",
            "list.a",
            "list.2.a",
            "dup",
            "0",
            "escA",
            "missing",
            "src.ip.x",
            "src",
        ] {
            let p = FieldPath::parse(path).unwrap();
            let mut on_tape = Vec::new();
            p.any_in_tape(&t, &mut |f| {
                on_tape.push(f.to_value().into_owned());
                false
            });
            let mut in_value = Vec::new();
            p.any(&v, &mut |x| {
                in_value.push(x.clone());
                false
            });
            assert_eq!(on_tape, in_value, "any {path}");
            assert_eq!(
                p.first_in_tape(&t).map(|f| f.to_value().into_owned()),
                p.first(&v).cloned(),
                "first {path}"
            );
        }
    }

    #[test]
    fn a_tape_serialises_as_its_value() {
        for text in [
            RECORD,
            "[1,{\"a\":[]},\"x\"]",
            "null",
            r#"{"a":1,"a":2,"b":{}}"#,
        ] {
            let t = tape(text);
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                serde_json::to_string(t.value()).unwrap(),
                "{text}"
            );
        }
        let mut t = tape(r#"{"a":1}"#);
        t.set(&["b"], json!(2));
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"a":1,"b":2}"#);
    }

    #[test]
    fn a_patched_tape_serialises_as_its_value_without_making_it() {
        let base =
            r#"{"src":{"ip":"10.0.0.1","workload":{"href":"/w/1"}},"n":5,"l":[1,2],"dst":{}}"#;
        let cases: &[&[(&[&str], Value)]] = &[
            // As the traffic hub enriches a flow.
            &[
                (&["src", "workload", "labels_by_key"], json!({"role": "db"})),
                (&["src", "labels"], json!({"role": "db"})),
                (&["src", "ip_list_names"], json!([])),
                (&["dst", "labels"], json!({})),
                (&["vigil"], json!({"truncated": false})),
            ],
            &[
                (&["n"], json!("replaced")),
                (&["a"], json!(1)),
                (&["n"], json!(3)),
            ],
            &[
                (&["x", "y", "z"], json!(1)),
                (&["x", "w"], json!(2)),
                (&["src", "ip"], json!(null)),
            ],
            &[
                (&["dst", "a"], json!(1)),
                (&["dst", "b"], json!(2)),
                (&["dst", "a"], json!(3)),
            ],
            // One patch inside another's value; through a scalar; through a list.
            &[
                (&["vigil"], json!({"t": false})),
                (&["vigil", "total"], json!(7)),
            ],
            &[
                (&["vigil", "total"], json!(7)),
                (&["vigil"], json!({"t": false})),
            ],
            &[(&["n", "deep"], json!(1))],
            &[(&["l", "x"], json!(1))],
        ];
        for patches in cases {
            let make = || {
                let mut t = tape(base);
                for (path, v) in *patches {
                    t.set(path, v.clone());
                }
                t
            };
            let (merged, valued) = (make(), make());
            let text = serde_json::to_string(&merged).unwrap();
            assert_eq!(
                text,
                serde_json::to_string(valued.value()).unwrap(),
                "{patches:?}"
            );
            if !merged.exotic && !merged.nested_patches() {
                assert!(merged.full.get().is_none(), "made the value: {patches:?}");
            }
        }
    }

    #[test]
    fn patches_are_seen_by_paths_and_the_value() {
        let mut t = tape(r#"{"src":{"ip":"10.0.0.1","workload":{"href":"/w/1"}},"n":5}"#);
        t.set(&["src", "workload", "labels_by_key"], json!({"role": "db"}));
        t.set(&["src", "labels"], json!({"role": "db"}));
        t.set(&["n"], json!(2));
        t.set(&["vigil"], json!({"truncated": false}));
        t.set(&["vigil", "total"], json!(7));
        let want = json!({"src": {"ip": "10.0.0.1", "workload": {"href": "/w/1", "labels_by_key": {"role": "db"}}, "labels": {"role": "db"}}, "n": 2, "vigil": {"truncated": false, "total": 7}});
        assert_eq!(t.value(), &want);
        assert_eq!(
            serde_json::to_string(t.value()).unwrap(),
            serde_json::to_string(&want).unwrap()
        );
        let fresh = {
            let mut t = tape(r#"{"src":{"ip":"10.0.0.1","workload":{"href":"/w/1"}},"n":5}"#);
            t.set(&["src", "workload", "labels_by_key"], json!({"role": "db"}));
            t.set(&["src", "labels"], json!({"role": "db"}));
            t.set(&["n"], json!(2));
            t.set(&["vigil"], json!({"truncated": false}));
            t.set(&["vigil", "total"], json!(7));
            t
        };
        for path in [
            "src.ip",
            "src.labels.role",
            "src.workload.labels_by_key.role",
            "src.workload.href",
            "src.workload",
            "src",
            "n",
            "vigil",
            "vigil.total",
            "vigil.truncated",
        ] {
            let p = FieldPath::parse(path).unwrap();
            assert_eq!(
                p.first_in_tape(&fresh).map(|f| f.to_value().into_owned()),
                p.first(&want).cloned(),
                "{path}"
            );
        }
    }
}
