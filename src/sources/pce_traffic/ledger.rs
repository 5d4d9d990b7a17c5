//! The flow ledger of one PCE connection: which flows the source has already counted, so a
//! row is counted in the slice where it was last detected and a flow's connections once.
//!
//! REST traffic rows carry **lifetime** counters of a connection, and the same connection
//! comes back in every slice it was detected in (and a PCE may repeat a row outright). The
//! ledger remembers, per flow — `(src.ip, dst.ip, service.port, service.proto,
//! flow_direction, timestamp_range.first_detected)` — the `last_detected` and
//! `num_connections` of its last sighting. A row is then:
//!
//! - **new** (not remembered): counted whole;
//! - a **repeat** (`last_detected` not after the remembered one): already counted, not
//!   handed on;
//! - a **continuation** (a later `last_detected`): `num_connections` becomes the increase
//!   over the last sighting (the whole value when it went down: the counter was reset),
//!   and the PCE's value is kept as `vigil.num_connections_total`. Bytes are left alone
//!   (the `bandwidth` stage takes the difference of the lifetime counters itself).
//!
//! A row without the key fields or `timestamp_range` is handed on unchanged (counted as
//! new). `service.port` may be absent (ICMP): it is part of the key as "no port".
//!
//! A flow is remembered by a 128-bit hash of its identity ([`FlowId`], XXH3-128 of a
//! fixed byte encoding described at [`FlowKey::id`]), not by the identity itself: 40 bytes
//! per flow in a hash table slot instead of 80. Two flows of one connection sharing an id
//! is not a practical concern (about 2⁻⁹⁰ with a million flows remembered).
//!
//! What a slice teaches the ledger is [`Pending`] until the slice has been delivered: a
//! slice queried again after a failed delivery is counted exactly as the first time
//! (at-least-once delivery is kept), and only an acknowledged slice is [committed]
//! (`Ledger::commit`). The ledger is bounded: flows not seen for `flow_memory` of slice
//! time are forgotten, and at most `max_flows` are kept (least recently seen forgotten
//! first). It is saved compactly in the state database beside the slice cursor
//! ([`Ledger::save_text`], version 2; the version 1 saved by earlier vigil is still read), so a
//! restart does not count a continuing flow whole again.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::event::flow_id::{FlowId, FlowMap};
use crate::event::{Field, FieldPath, Tape, Timestamp, time_from_field};

/// The version of the saved form written.
const VERSION: u64 = 2;
/// Numbers per flow in the saved form of version 1.
const STRIDE_V1: usize = 9;
/// Fields per flow in the saved form of version 2.
const STRIDE_V2: usize = 4;
/// Characters of a flow id in the saved form (16 bytes, base64url without padding).
const ID_CHARS: usize = 22;

/// A flow's identity across rows, as read from a row (or a version 1 saved form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    src: IpAddr,
    dst: IpAddr,
    port: Option<u16>,
    proto: u16,
    inbound: bool,
    /// `first_detected`, epoch milliseconds.
    first: i64,
}

impl FlowKey {
    /// The flow's [`FlowId`]: XXH3-128 (seed 0) of these 47 bytes — saved, so never to
    /// change:
    ///
    /// - 1 byte: bit 0 set when the source is IPv6, bit 1 when the destination is (so an
    ///   IPv4 address and its IPv4-mapped IPv6 form are different flows, as they are in
    ///   rows);
    /// - the source and the destination, 16 bytes each: the IPv6 address, or the IPv4
    ///   address as its IPv4-mapped IPv6 form (`::ffff:a.b.c.d`);
    /// - the port, 3 bytes: `1` then the port big-endian, or `0, 0, 0` for no port;
    /// - the protocol, 2 bytes big-endian;
    /// - the direction, 1 byte: 1 inbound, 0 outbound;
    /// - `first_detected`, 8 bytes: epoch milliseconds, big-endian two's complement.
    fn id(&self) -> FlowId {
        let mut b = [0u8; 47];
        let v6 = |ip: &IpAddr| match ip {
            IpAddr::V4(a) => (false, a.to_ipv6_mapped().octets()),
            IpAddr::V6(a) => (true, a.octets()),
        };
        let (src6, src) = v6(&self.src);
        let (dst6, dst) = v6(&self.dst);
        b[0] = u8::from(src6) | (u8::from(dst6) << 1);
        b[1..17].copy_from_slice(&src);
        b[17..33].copy_from_slice(&dst);
        if let Some(p) = self.port {
            b[33] = 1;
            b[34..36].copy_from_slice(&p.to_be_bytes());
        }
        b[36..38].copy_from_slice(&self.proto.to_be_bytes());
        b[38] = u8::from(self.inbound);
        b[39..47].copy_from_slice(&self.first.to_be_bytes());
        FlowId::of_bytes(&b)
    }
}

/// Remembered flows by id.
type Flows = FlowMap<Entry>;

/// What the ledger remembers of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// `last_detected` of the last sighting, epoch milliseconds.
    last: i64,
    /// `num_connections` of the last sighting.
    connections: u64,
    /// The end of the slice it was last seen in, epoch milliseconds.
    seen: i64,
}

/// What a row is, given what the ledger remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sighting {
    /// Not remembered, or not keyed: counted whole.
    New,
    /// Already counted: not handed on.
    Repeat,
    /// A later sighting of a remembered flow: `num_connections` now holds the increase.
    Continuation {
        /// The PCE's `num_connections` (lifetime), when the row had one.
        total: Option<u64>,
    },
}

/// What a slice counted: rows by kind, and flows forgotten when it was committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Rows counted whole.
    pub(crate) new: u64,
    /// Rows of flows seen before, counted as their increase.
    pub(crate) continued: u64,
    /// Rows already counted, not handed on.
    pub(crate) repeated: u64,
    /// Flows forgotten after `flow_memory` without a sighting.
    pub(crate) expired: u64,
    /// Flows forgotten because `max_flows` were remembered.
    pub(crate) evicted: u64,
}

/// A saved ledger that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LedgerError {
    /// Saved by another version of vigil.
    #[error("unknown saved form version {0}")]
    Version(u64),
    /// Damaged or edited.
    #[error("malformed saved form: {0}")]
    Malformed(&'static str),
}

/// The flows of one connection already counted.
#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    flows: Flows,
    memory_ms: i64,
    max_flows: usize,
}

/// What one slice's rows taught, applied to the ledger only once the slice was delivered.
#[derive(Debug)]
pub(crate) struct Pending {
    changes: Flows,
    /// Flows of `changes` the ledger did not remember when they were seen.
    added: usize,
    /// The slice's end, epoch milliseconds.
    seen: i64,
    tally: Tally,
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A flow row as the ledger reads and rewrites it: a parsed `Value` or a [`Tape`].
pub(crate) trait FlowRow {
    /// The first value `path` reaches.
    fn field(&self, path: &FieldPath) -> Option<Field<'_>>;
    /// Sets the row's top-level `num_connections`.
    fn set_connections(&mut self, n: u64);
}

impl FlowRow for Value {
    fn field(&self, path: &FieldPath) -> Option<Field<'_>> {
        path.first(self).map(Field::Value)
    }

    fn set_connections(&mut self, n: u64) {
        if let Some(obj) = self.as_object_mut() {
            obj.insert("num_connections".to_string(), Value::from(n));
        }
    }
}

impl FlowRow for Tape {
    fn field(&self, path: &FieldPath) -> Option<Field<'_>> {
        path.first_in_tape(self)
    }

    fn set_connections(&mut self, n: u64) {
        self.set_static(&["num_connections"], std::sync::Arc::new(Value::from(n)));
    }
}

/// The fields of a row the ledger reads, parsed once.
struct RowPaths {
    src: FieldPath,
    dst: FieldPath,
    port: FieldPath,
    proto: FieldPath,
    direction: FieldPath,
    first: FieldPath,
    last: FieldPath,
    connections: FieldPath,
}

static ROW_PATHS: std::sync::LazyLock<Option<RowPaths>> = std::sync::LazyLock::new(|| {
    let p = |s: &str| FieldPath::parse(s).ok();
    Some(RowPaths {
        src: p("src.ip")?,
        dst: p("dst.ip")?,
        port: p("service.port")?,
        proto: p("service.proto")?,
        direction: p("flow_direction")?,
        first: p("timestamp_range.first_detected")?,
        last: p("timestamp_range.last_detected")?,
        connections: p("num_connections")?,
    })
});

/// The key, `last_detected` and `num_connections` of a row, if it has the key fields.
fn parse_row(row: &impl FlowRow) -> Option<(FlowKey, i64, Option<u64>)> {
    let paths = ROW_PATHS.as_ref()?;
    let ip = |p: &FieldPath| row.field(p)?.as_str()?.trim().parse::<IpAddr>().ok();
    let time = |p: &FieldPath| {
        row.field(p)
            .and_then(|f| time_from_field(&f))
            .map(|t| t.timestamp_millis())
    };
    let inbound = match row.field(&paths.direction)?.as_str()? {
        "inbound" => true,
        "outbound" => false,
        _ => return None,
    };
    let key = FlowKey {
        src: ip(&paths.src)?,
        dst: ip(&paths.dst)?,
        // ICMP rows have no port, or `"All"`.
        port: row
            .field(&paths.port)
            .and_then(|f| f.as_u64())
            .and_then(|p| u16::try_from(p).ok()),
        proto: row
            .field(&paths.proto)?
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())?,
        inbound,
        first: time(&paths.first)?,
    };
    let last = time(&paths.last)?;
    Some((
        key,
        last,
        row.field(&paths.connections).and_then(|f| f.as_u64()),
    ))
}

impl Ledger {
    /// An empty ledger forgetting flows not seen for `memory`, keeping at most `max_flows`.
    pub(crate) fn new(memory: std::time::Duration, max_flows: usize) -> Ledger {
        Ledger {
            flows: Flows::default(),
            memory_ms: millis(memory),
            max_flows,
        }
    }

    /// Changes the bounds (applied at the next commit).
    pub(crate) fn set_limits(&mut self, memory: std::time::Duration, max_flows: usize) {
        self.memory_ms = millis(memory);
        self.max_flows = max_flows;
    }

    /// How many flows are remembered.
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    /// Starts counting the rows of the slice ending at `slice_end`, of which there are
    /// about `rows` (room is made for them at once, up to the ledger's bound).
    pub(crate) fn begin(&self, slice_end: Timestamp, rows: usize) -> Pending {
        Pending {
            changes: Flows::with_capacity_and_hasher(rows.min(self.max_flows), Default::default()),
            added: 0,
            seen: slice_end.timestamp_millis(),
            tally: Tally::default(),
        }
    }

    /// Applies what a delivered slice taught, then forgets what is too old or too much.
    /// Returns the slice's tally.
    pub(crate) fn commit(&mut self, pending: Pending) -> Tally {
        let Pending {
            changes,
            added,
            seen: now,
            mut tally,
        } = pending;
        // Room for the flows the ledger did not know only: the others replace an entry.
        self.flows.reserve(added);
        for (id, entry) in changes {
            self.flows.insert(id, entry);
        }
        let before = self.flows.len();
        let memory = self.memory_ms;
        self.flows
            .retain(|_, e| now.saturating_sub(e.seen) < memory);
        tally.expired = (before - self.flows.len()) as u64;
        if self.flows.len() > self.max_flows {
            let excess = self.flows.len() - self.max_flows;
            // Least recently seen first; of one slice, the earliest last detection first;
            // then by id, so which of equals go does not depend on the table's order.
            let mut order: Vec<(i64, i64, FlowId)> = self
                .flows
                .iter()
                .map(|(id, e)| (e.seen, e.last, *id))
                .collect();
            order.select_nth_unstable(excess - 1);
            for (_, _, id) in &order[..excess] {
                self.flows.remove(id);
            }
            tally.evicted = excess as u64;
        }
        tally
    }

    /// The compact saved form, for the slice cursor `through`, as JSON text: written
    /// straight into one string (a large ledger's saved form is megabytes, not copied on
    /// its way to the store).
    ///
    /// `{"v": 2, "through": <RFC 3339>, "base": <epoch ms>, "unit": <ms>, "flows": "<4
    /// fields per flow, comma-separated>"}` — per flow: its id (the 16 bytes of the
    /// XXH3-128 hash described at [`FlowKey::id`], high half first, in base64url without
    /// padding: 22 characters), `base − last_detected`, `num_connections`, `base − seen`
    /// (the end of the slice it was last seen in); times in `unit` milliseconds (1000
    /// when every time is whole seconds, as PCE rows are).
    ///
    /// Version 1 (read by [`Ledger::restore`], no longer written) kept the identity
    /// itself: `{"v": 1, "through", "base", "unit", "ips": [address, ...], "flows": "<9
    /// integers per flow>"}` — source and destination (indexes into `ips`), port (`-1`:
    /// none), protocol, inbound (0/1), `first_detected − base`, `last_detected −
    /// first_detected`, `num_connections`, `base − seen`.
    pub(crate) fn save_text(&self, through: Timestamp) -> String {
        use std::fmt::Write as _;
        let base = through.timestamp_millis();
        let whole = |ms: i64| ms % 1000 == 0;
        let unit: i64 =
            if whole(base) && self.flows.values().all(|e| whole(e.last) && whole(e.seen)) {
                1000
            } else {
                1
            };
        // `through` in RFC 3339 and the numbers need no escaping, nor do the flows'
        // base64url and digits.
        let mut flows = String::with_capacity(self.flows.len() * 36 + 128);
        let _ = write!(
            flows,
            r#"{{"v":{VERSION},"through":"{}","base":{base},"unit":{unit},"flows":""#,
            through.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        let start = flows.len();
        for (id, e) in &self.flows {
            if flows.len() > start {
                flows.push(',');
            }
            URL_SAFE_NO_PAD.encode_string(id.to_bytes(), &mut flows);
            let _ = write!(
                flows,
                ",{},{},{}",
                base.saturating_sub(e.last) / unit,
                e.connections,
                base.saturating_sub(e.seen) / unit,
            );
        }
        flows.push_str("\"}");
        flows
    }

    /// [`Ledger::save_text`], parsed.
    #[cfg(test)]
    pub(crate) fn save(&self, through: Timestamp) -> Value {
        serde_json::from_str(&self.save_text(through)).unwrap_or(Value::Null)
    }

    /// A ledger from its saved form (version 2, or 1 as saved by earlier vigil), with
    /// these bounds.
    pub(crate) fn restore(
        saved: &Value,
        memory: std::time::Duration,
        max_flows: usize,
    ) -> Result<Ledger, LedgerError> {
        let malformed = LedgerError::Malformed;
        let version = saved
            .get("v")
            .and_then(Value::as_u64)
            .ok_or(malformed("no version"))?;
        if version != 1 && version != 2 {
            return Err(LedgerError::Version(version));
        }
        let base = saved
            .get("base")
            .and_then(Value::as_i64)
            .ok_or(malformed("no base"))?;
        let unit = match saved.get("unit").and_then(Value::as_i64) {
            Some(u @ (1 | 1000)) => u,
            _ => return Err(malformed("no unit (1 or 1000)")),
        };
        let text = saved
            .get("flows")
            .and_then(Value::as_str)
            .ok_or(malformed("no flows"))?;
        let mut ledger = Ledger::new(memory, max_flows);
        if version == 1 {
            restore_v1(&mut ledger.flows, saved, base, unit, text)?;
        } else {
            restore_v2(&mut ledger.flows, base, unit, text)?;
        }
        Ok(ledger)
    }
}

/// Reads the flows of a version 2 saved form into `flows`.
fn restore_v2(flows: &mut Flows, base: i64, unit: i64, text: &str) -> Result<(), LedgerError> {
    let malformed = LedgerError::Malformed;
    if text.is_empty() {
        return Ok(());
    }
    let ms = |n: i64| n.saturating_mul(unit);
    let fields: Vec<&str> = text.split(',').collect();
    if fields.len() % STRIDE_V2 != 0 {
        return Err(malformed("a flow is incomplete"));
    }
    flows.reserve(fields.len() / STRIDE_V2);
    for f in fields.chunks_exact(STRIDE_V2) {
        let mut bytes = [0u8; 18];
        let id = match URL_SAFE_NO_PAD.decode_slice(f[0], &mut bytes) {
            Ok(16) if f[0].len() == ID_CHARS => {
                FlowId::from_bytes(bytes[..16].try_into().unwrap_or([0; 16]))
            }
            _ => return Err(malformed("a flow id is not 16 bytes of base64url")),
        };
        let number = |s: &str| {
            s.parse::<i64>()
                .map_err(|_| malformed("a flow number does not parse"))
        };
        let entry = Entry {
            last: base.saturating_sub(ms(number(f[1])?)),
            connections: f[2]
                .parse::<u64>()
                .map_err(|_| malformed("a connection count does not parse"))?,
            seen: base.saturating_sub(ms(number(f[3])?)),
        };
        flows.insert(id, entry);
    }
    Ok(())
}

/// Reads the flows of a version 1 saved form (the identity itself, with an address
/// table) into `flows`, each keyed by the id of its identity.
fn restore_v1(
    flows: &mut Flows,
    saved: &Value,
    base: i64,
    unit: i64,
    text: &str,
) -> Result<(), LedgerError> {
    let malformed = LedgerError::Malformed;
    let ms = |n: i64| n.saturating_mul(unit);
    let ips = saved
        .get("ips")
        .and_then(Value::as_array)
        .ok_or(malformed("no address list"))?
        .iter()
        .map(|ip| ip.as_str().and_then(|s| s.parse::<IpAddr>().ok()))
        .collect::<Option<Vec<IpAddr>>>()
        .ok_or(malformed("an address does not parse"))?;
    let numbers = if text.is_empty() {
        Vec::new()
    } else {
        text.split(',')
            .map(|n| n.parse::<i64>())
            .collect::<Result<Vec<i64>, _>>()
            .map_err(|_| malformed("a flow number does not parse"))?
    };
    if numbers.len() % STRIDE_V1 != 0 {
        return Err(malformed("a flow is incomplete"));
    }
    flows.reserve(numbers.len() / STRIDE_V1);
    for f in numbers.chunks_exact(STRIDE_V1) {
        let ip = |i: i64| {
            usize::try_from(i)
                .ok()
                .and_then(|i| ips.get(i).copied())
                .ok_or(malformed("an address index is out of range"))
        };
        let port = match f[2] {
            -1 => None,
            p => Some(u16::try_from(p).map_err(|_| malformed("a port is out of range"))?),
        };
        let first = base.saturating_add(ms(f[5]));
        let key = FlowKey {
            src: ip(f[0])?,
            dst: ip(f[1])?,
            port,
            proto: u16::try_from(f[3]).map_err(|_| malformed("a protocol is out of range"))?,
            inbound: f[4] != 0,
            first,
        };
        let entry = Entry {
            last: first.saturating_add(ms(f[6])),
            connections: u64::try_from(f[7])
                .map_err(|_| malformed("a connection count is negative"))?,
            seen: base.saturating_sub(ms(f[8])),
        };
        flows.insert(key.id(), entry);
    }
    Ok(())
}

impl Pending {
    /// Classifies `row` against what the ledger and this slice's earlier rows remember;
    /// rewrites `num_connections` of a continuation to the increase.
    pub(crate) fn observe(&mut self, ledger: &Ledger, row: &mut impl FlowRow) -> Sighting {
        let Some((key, last, connections)) = parse_row(row) else {
            self.tally.new += 1;
            return Sighting::New;
        };
        let id = key.id();
        let n = connections.unwrap_or(0);
        let known = match self.changes.get(&id) {
            Some(e) => Some(*e),
            None => {
                let e = ledger.flows.get(&id).copied();
                if e.is_none() {
                    self.added += 1;
                }
                e
            }
        };
        let seen = self.seen;
        match known {
            None => {
                self.changes.insert(
                    id,
                    Entry {
                        last,
                        connections: n,
                        seen,
                    },
                );
                self.tally.new += 1;
                Sighting::New
            }
            Some(e) if last <= e.last => {
                self.changes.insert(id, Entry { seen, ..e });
                self.tally.repeated += 1;
                Sighting::Repeat
            }
            Some(e) => {
                self.changes.insert(
                    id,
                    Entry {
                        last,
                        connections: n,
                        seen,
                    },
                );
                self.tally.continued += 1;
                if connections.is_some() {
                    // Lower than before: the counter was reset, all of it is new.
                    let increase = n.checked_sub(e.connections).unwrap_or(n);
                    row.set_connections(increase);
                }
                Sighting::Continuation { total: connections }
            }
        }
    }

    /// What the slice counted so far.
    #[cfg(test)]
    pub(crate) fn tally(&self) -> Tally {
        self.tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

    fn t(min: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap() + chrono::Duration::minutes(min)
    }

    fn stamp(min: i64) -> String {
        t(min).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// A row of flow `src` → 10.0.0.9:443 first detected at minute `first`.
    fn row(src: &str, first: i64, last: i64, n: u64) -> Value {
        json!({
            "src": {"ip": src}, "dst": {"ip": "10.0.0.9"},
            "service": {"port": 443, "proto": 6}, "flow_direction": "outbound",
            "num_connections": n, "dst_bo": 1000 * n,
            "timestamp_range": {"first_detected": stamp(first), "last_detected": stamp(last)},
        })
    }

    /// Runs one slice (ending at minute `end`) over `rows` and commits it: the rows handed
    /// on and the tally.
    fn slice(ledger: &mut Ledger, end: i64, rows: Vec<Value>) -> (Vec<Value>, Tally) {
        let mut pending = ledger.begin(t(end), 0);
        let mut out = Vec::new();
        for mut r in rows {
            match pending.observe(ledger, &mut r) {
                Sighting::Repeat => {}
                Sighting::Continuation { total } => {
                    r["vigil_total"] = json!(total);
                    out.push(r);
                }
                Sighting::New => out.push(r),
            }
        }
        (out, ledger.commit(pending))
    }

    fn sum(rows: &[Value]) -> u64 {
        rows.iter()
            .filter_map(|r| r["num_connections"].as_u64())
            .sum()
    }

    #[test]
    fn a_new_flow_is_counted_whole_and_a_repeat_is_dropped() {
        let mut l = Ledger::new(HOUR, 100);
        let (out, tally) = slice(&mut l, 5, vec![row("10.1.1.1", 0, 4, 7)]);
        assert_eq!(sum(&out), 7);
        assert_eq!((tally.new, tally.continued, tally.repeated), (1, 0, 0));
        // The same row again, and an older sighting of it: both already counted.
        let (out, tally) = slice(
            &mut l,
            10,
            vec![row("10.1.1.1", 0, 4, 7), row("10.1.1.1", 0, 3, 5)],
        );
        assert!(out.is_empty(), "{out:?}");
        assert_eq!((tally.new, tally.continued, tally.repeated), (0, 0, 2));
        // Twice in one slice: the second is a repeat.
        let (out, tally) = slice(
            &mut l,
            15,
            vec![row("10.1.1.2", 11, 12, 3), row("10.1.1.2", 11, 12, 3)],
        );
        assert_eq!(sum(&out), 3);
        assert_eq!((tally.new, tally.repeated), (1, 1));
    }

    #[test]
    fn a_continuation_counts_the_increase_and_keeps_the_total() {
        let mut l = Ledger::new(HOUR, 100);
        slice(&mut l, 5, vec![row("10.1.1.1", 0, 4, 10)]);
        let (out, tally) = slice(&mut l, 10, vec![row("10.1.1.1", 0, 9, 25)]);
        assert_eq!(tally.continued, 1);
        assert_eq!(out[0]["num_connections"], 15);
        assert_eq!(out[0]["vigil_total"], 25);
        assert_eq!(out[0]["dst_bo"], 25_000, "bytes are left alone");
        // No new connections: the row is handed on with 0.
        let (out, _) = slice(&mut l, 15, vec![row("10.1.1.1", 0, 14, 25)]);
        assert_eq!(out[0]["num_connections"], 0);
        // 10 + 15 + 0 = the PCE's total.
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn a_counter_that_went_down_was_reset_and_counts_whole() {
        let mut l = Ledger::new(HOUR, 100);
        slice(&mut l, 5, vec![row("10.1.1.1", 0, 4, 40)]);
        let (out, tally) = slice(&mut l, 10, vec![row("10.1.1.1", 0, 9, 6)]);
        assert_eq!(tally.continued, 1);
        assert_eq!(out[0]["num_connections"], 6);
        assert_eq!(out[0]["vigil_total"], 6);
        let (out, _) = slice(&mut l, 15, vec![row("10.1.1.1", 0, 14, 9)]);
        assert_eq!(out[0]["num_connections"], 3);
    }

    #[test]
    fn the_same_tuple_first_detected_later_is_another_flow() {
        let mut l = Ledger::new(HOUR, 100);
        slice(&mut l, 5, vec![row("10.1.1.1", 0, 4, 10)]);
        let (out, tally) = slice(&mut l, 10, vec![row("10.1.1.1", 6, 9, 4)]);
        assert_eq!((tally.new, tally.continued), (1, 0));
        assert_eq!(out[0]["num_connections"], 4);
        // Another direction, port or protocol is another flow too.
        let mut other = row("10.1.1.1", 0, 9, 30);
        other["flow_direction"] = json!("inbound");
        let mut icmp = row("10.1.1.1", 0, 9, 30);
        icmp["service"] = json!({"proto": 1});
        let (_, tally) = slice(&mut l, 15, vec![other, icmp]);
        assert_eq!(tally.new, 2);
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn rows_without_the_key_fields_are_handed_on_unchanged() {
        let mut l = Ledger::new(HOUR, 100);
        let mut bare = row("10.1.1.1", 0, 4, 10);
        bare.as_object_mut().unwrap().remove("timestamp_range");
        let mut no_ip = row("10.1.1.1", 0, 4, 10);
        no_ip["src"] = json!({"workload": {"href": "/w/1"}});
        let rows = vec![bare.clone(), bare.clone(), no_ip.clone()];
        let (out, tally) = slice(&mut l, 5, rows);
        assert_eq!(out, vec![bare.clone(), bare, no_ip]);
        assert_eq!((tally.new, tally.repeated), (3, 0));
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn an_undelivered_slice_teaches_nothing() {
        let mut l = Ledger::new(HOUR, 100);
        let mut pending = l.begin(t(5), 0);
        let mut r = row("10.1.1.1", 0, 4, 10);
        assert_eq!(pending.observe(&l, &mut r), Sighting::New);
        assert_eq!(pending.tally().new, 1);
        drop(pending);
        // Queried again: the same answer.
        let (out, tally) = slice(&mut l, 5, vec![row("10.1.1.1", 0, 4, 10)]);
        assert_eq!((sum(&out), tally.new), (10, 1));
    }

    #[test]
    fn flows_not_seen_for_the_memory_are_forgotten_and_counted() {
        let mut l = Ledger::new(HOUR, 100);
        slice(&mut l, 5, vec![row("10.1.1.1", 0, 4, 10)]);
        slice(&mut l, 10, vec![row("10.1.1.2", 6, 9, 1)]);
        // 10.1.1.1 was last seen in the slice ending 09:05: kept until 10:05.
        let (_, tally) = slice(&mut l, 64, vec![]);
        assert_eq!((tally.expired, l.len()), (0, 2));
        let (_, tally) = slice(&mut l, 65, vec![]);
        assert_eq!((tally.expired, l.len()), (1, 1));
        // Forgotten: a later sighting counts whole again.
        let (out, tally) = slice(&mut l, 70, vec![row("10.1.1.1", 0, 69, 50)]);
        assert_eq!((tally.new, sum(&out)), (1, 50));
        assert_eq!(
            (tally.expired, l.len()),
            (1, 1),
            "10.1.1.2, last seen at 09:10"
        );
        // A repeat keeps a flow in memory.
        let (_, tally) = slice(&mut l, 100, vec![row("10.1.1.1", 0, 69, 50)]);
        assert_eq!(tally.repeated, 1);
        let (_, tally) = slice(&mut l, 159, vec![]);
        assert_eq!((tally.expired, l.len()), (0, 1));
        let (_, tally) = slice(&mut l, 160, vec![]);
        assert_eq!((tally.expired, l.len()), (1, 0));
    }

    #[test]
    fn at_most_max_flows_are_kept_least_recently_seen_forgotten_first() {
        let mut l = Ledger::new(HOUR, 3);
        slice(
            &mut l,
            5,
            vec![row("10.1.1.1", 0, 1, 1), row("10.1.1.2", 0, 2, 1)],
        );
        let (_, tally) = slice(
            &mut l,
            10,
            vec![row("10.1.1.3", 6, 7, 1), row("10.1.1.1", 0, 8, 2)],
        );
        assert_eq!((tally.evicted, l.len()), (0, 3));
        let (_, tally) = slice(&mut l, 15, vec![row("10.1.1.4", 11, 12, 1)]);
        assert_eq!((tally.evicted, l.len()), (1, 3));
        // 10.1.1.2 (seen in the oldest slice) went; 10.1.1.1 was seen again and stays.
        let (_, tally) = slice(
            &mut l,
            20,
            vec![row("10.1.1.1", 0, 8, 2), row("10.1.1.2", 0, 2, 1)],
        );
        assert_eq!((tally.repeated, tally.new), (1, 1));
        assert_eq!((tally.evicted, l.len()), (1, 3));
        // Of one slice, the earliest last detection goes first.
        let mut l = Ledger::new(HOUR, 1);
        slice(
            &mut l,
            5,
            vec![row("10.1.1.1", 0, 3, 1), row("10.1.1.2", 0, 1, 1)],
        );
        let (_, tally) = slice(&mut l, 10, vec![row("10.1.1.1", 0, 3, 1)]);
        assert_eq!(tally.repeated, 1);
    }

    #[test]
    fn the_saved_form_round_trips_and_is_compact() {
        let mut l = Ledger::new(HOUR, 1000);
        let mut rows: Vec<Value> = (0..200)
            .map(|i| {
                row(
                    &format!("10.1.{}.{}", i / 250, i % 250 + 1),
                    i % 5,
                    5,
                    i as u64,
                )
            })
            .collect();
        let mut icmp = row("10.1.1.1", 0, 4, 3);
        icmp["service"] = json!({"proto": 1, "port": "All"});
        rows.push(icmp);
        let mut v6 = row("fd00::1", 1, 4, 3);
        v6["dst"]["ip"] = json!("2001:db8::9");
        v6["flow_direction"] = json!("inbound");
        rows.push(v6);
        slice(&mut l, 5, rows);
        slice(&mut l, 10, vec![row("10.1.0.3", 2, 9, 90)]);
        let saved = l.save(t(10));
        let text = saved.to_string();
        assert!(text.len() < 202 * 60, "{} bytes", text.len());
        let back = Ledger::restore(&saved, HOUR, 1000).expect("readable");
        assert_eq!(back.flows, l.flows);
        assert_eq!(saved["through"], stamp(10));
        // Restored, it still knows what was counted.
        let mut back = back;
        let (out, tally) = slice(&mut back, 15, vec![row("10.1.0.3", 2, 14, 95)]);
        assert_eq!(
            (tally.continued, out[0]["num_connections"].as_u64()),
            (1, Some(5))
        );
        assert_eq!(saved["unit"], 1000, "PCE rows have whole seconds");
        // Milliseconds are kept when a time has them.
        let mut ms = Ledger::new(HOUR, 10);
        let mut r = row("10.1.1.1", 0, 4, 3);
        r["timestamp_range"]["last_detected"] = json!("2026-03-02T09:04:00.250Z");
        slice(&mut ms, 5, vec![r]);
        let saved = ms.save(t(5));
        assert_eq!(saved["unit"], 1);
        let back = Ledger::restore(&saved, HOUR, 10).expect("readable");
        assert_eq!(back.flows, ms.flows);
        // An empty ledger too.
        let empty = Ledger::new(HOUR, 10);
        let back = Ledger::restore(&empty.save(t(0)), HOUR, 10).expect("readable");
        assert_eq!(back.len(), 0);
    }

    #[test]
    fn a_damaged_saved_form_is_an_error() {
        let mut l = Ledger::new(HOUR, 10);
        slice(&mut l, 5, vec![row("10.1.1.1", 0, 4, 10)]);
        let good = l.save(t(5));
        let id = good["flows"]
            .as_str()
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_string();
        let with = |k: &str, v: Value| {
            let mut s = good.clone();
            s[k] = v;
            Ledger::restore(&s, HOUR, 10)
        };
        assert!(with("flows", good["flows"].clone()).is_ok());
        assert_eq!(with("v", json!(9)).err(), Some(LedgerError::Version(9)));
        assert_eq!(with("v", json!(0)).err(), Some(LedgerError::Version(0)));
        assert!(with("flows", json!("1,2,3")).is_err());
        assert!(with("flows", json!(format!("{id},0,1"))).is_err());
        assert!(with("flows", json!(format!("{id},0,x,0"))).is_err());
        assert!(with("flows", json!(format!("{id},0,-1,0"))).is_err());
        assert!(with("flows", json!(format!("{id}A,0,1,0"))).is_err());
        assert!(with("flows", json!(format!("{},0,1,0", &id[1..]))).is_err());
        assert!(with("flows", json!("!!!!!!!!!!!!!!!!!!!!!!,0,1,0")).is_err());
        assert!(with("unit", json!(7)).is_err());
        assert!(with("base", json!("x")).is_err());
        assert!(Ledger::restore(&json!("nope"), HOUR, 10).is_err());
        // Version 1.
        let v1: Value = serde_json::from_str(V1_MS).unwrap();
        let with = |k: &str, v: Value| {
            let mut s = v1.clone();
            s[k] = v;
            Ledger::restore(&s, HOUR, 10)
        };
        assert!(with("flows", v1["flows"].clone()).is_ok());
        assert!(with("flows", json!("1,2,3")).is_err());
        assert!(with("flows", json!("7,0,443,6,0,0,0,1,0")).is_err());
        assert!(with("flows", json!("0,0,443,6,0,0,0,x,0")).is_err());
        assert!(with("flows", json!("0,0,70000,6,0,0,0,1,0")).is_err());
        assert!(with("ips", json!(["nope"])).is_err());
        assert!(with("unit", json!(7)).is_err());
    }

    fn key(src: &str, first: i64) -> FlowKey {
        FlowKey {
            src: src.parse().unwrap(),
            dst: "10.0.0.9".parse().unwrap(),
            port: Some(443),
            proto: 6,
            inbound: false,
            first: t(first).timestamp_millis(),
        }
    }

    #[test]
    fn a_remembered_flow_takes_40_bytes_of_a_slot() {
        assert!(std::mem::size_of::<(FlowId, Entry)>() <= 40);
        assert_eq!(std::mem::align_of::<FlowId>(), 8);
    }

    #[test]
    fn the_id_of_a_flow_is_fixed() {
        // Saved: the same identity must give the same id in every vigil, on every machine
        // (these agree with `xxh128sum` of the reference xxHash over the same 47 bytes).
        let hex = |k: FlowKey| k.id().to_string();
        assert_eq!(hex(key("10.1.1.1", 0)), "046fbfc6087616ca8040e6c358df6ba2");
        let mut k = key("fd00::1", 0);
        k.dst = "2001:db8::9".parse().unwrap();
        k.port = None;
        k.proto = 58;
        k.inbound = true;
        k.first = -1;
        assert_eq!(hex(k), "4ceb8235635f676095cbee60f9db25b3");
        // Every part of the identity counts.
        let base = key("10.1.1.1", 0);
        let variants = [
            FlowKey {
                src: "10.1.1.2".parse().unwrap(),
                ..base
            },
            FlowKey {
                dst: "10.0.0.8".parse().unwrap(),
                ..base
            },
            FlowKey { port: None, ..base },
            FlowKey {
                port: Some(0),
                ..base
            },
            FlowKey { proto: 17, ..base },
            FlowKey {
                inbound: true,
                ..base
            },
            FlowKey {
                first: base.first + 1,
                ..base
            },
            FlowKey {
                src: base.dst,
                dst: base.src,
                ..base
            },
        ];
        let mut ids: Vec<FlowId> = variants.iter().map(FlowKey::id).collect();
        ids.push(base.id());
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), variants.len() + 1);
    }

    #[test]
    fn an_ipv4_address_and_its_ipv4_mapped_form_are_different_flows() {
        assert_ne!(key("10.1.1.1", 0).id(), key("::ffff:10.1.1.1", 0).id());
        let mut l = Ledger::new(HOUR, 100);
        let (out, tally) = slice(
            &mut l,
            5,
            vec![row("10.1.1.1", 0, 4, 3), row("::ffff:10.1.1.1", 0, 4, 5)],
        );
        assert_eq!((tally.new, sum(&out), l.len()), (2, 8, 2));
        let saved = l.save(t(5));
        let mut back = Ledger::restore(&saved, HOUR, 100).expect("readable");
        let (out, tally) = slice(&mut back, 10, vec![row("::ffff:10.1.1.1", 0, 9, 7)]);
        assert_eq!((tally.continued, sum(&out)), (1, 2));
    }

    #[test]
    fn of_equal_flows_the_lowest_ids_are_evicted_whatever_the_order_seen() {
        // Five flows of one slice with the same last detection: three must go.
        let srcs = ["10.1.1.1", "10.1.1.2", "10.1.1.3", "10.1.1.4", "10.1.1.5"];
        let mut ids: Vec<FlowId> = srcs.iter().map(|s| key(s, 0).id()).collect();
        ids.sort();
        let kept: Vec<FlowId> = ids[3..].to_vec();
        for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1]] {
            let mut l = Ledger::new(HOUR, 2);
            let rows = order.iter().map(|&i| row(srcs[i], 0, 4, 1)).collect();
            let (_, tally) = slice(&mut l, 5, rows);
            assert_eq!(tally.evicted, 3);
            let mut left: Vec<FlowId> = l.flows.keys().copied().collect();
            left.sort();
            assert_eq!(left, kept, "order {order:?}");
        }
    }

    #[test]
    fn the_saved_form_is_version_2_and_smaller_than_version_1() {
        let mut l = Ledger::new(HOUR, 100);
        slice(&mut l, 5, vec![row("10.1.1.1", 0, 4, 10)]);
        let saved = l.save(t(5));
        let id = URL_SAFE_NO_PAD.encode(key("10.1.1.1", 0).id().to_bytes());
        assert_eq!(
            saved,
            json!({"v": 2, "through": stamp(5), "base": t(5).timestamp_millis(), "unit": 1000,
                   "flows": format!("{id},60,10,0")})
        );
        // The version 1 fixture, saved again.
        let v1: Value = serde_json::from_str(V1_WHOLE).unwrap();
        let l = Ledger::restore(&v1, HOUR, 100).expect("readable");
        let v2 = l.save(t(10));
        assert!(
            v2.to_string().len() <= V1_WHOLE.len(),
            "{} > {}",
            v2.to_string().len(),
            V1_WHOLE.len()
        );
        let back = Ledger::restore(&v2, HOUR, 100).expect("readable");
        assert_eq!(back.flows, l.flows);
    }

    /// A ledger saved by vigil before the flows were keyed by their hash (version 1): flows
    /// 10.1.1.2 (first 09:01, last 09:03, 5), ICMP from 10.1.1.3 (09:00–09:04, 3) and
    /// inbound fd00::1 → 2001:db8::9 (09:01–09:04, 8) seen in the slice ending 09:05;
    /// 10.1.1.1 (09:00–09:09, 10) and its IPv4-mapped twin ::ffff:10.1.1.1 (same times,
    /// 20) seen in the slice ending 09:10. Every flow goes to 10.0.0.9:443/6 outbound
    /// unless said otherwise.
    const V1_WHOLE: &str = r#"{"v":1,"through":"2026-03-02T09:10:00Z","base":1772442600000,"unit":1000,"ips":["10.1.1.2","10.0.0.9","10.1.1.1","fd00::1","2001:db8::9","10.1.1.3","::ffff:10.1.1.1"],"flows":"0,1,443,6,0,-540,120,5,300,2,1,443,6,0,-600,540,10,0,3,4,443,6,1,-540,180,8,300,5,1,-1,1,0,-600,240,3,300,6,1,443,6,0,-600,540,20,0"}"#;

    /// Version 1 with milliseconds: 10.1.1.1 (09:00–09:04:00.250, 3) seen in the slice
    /// ending 09:05.
    const V1_MS: &str = r#"{"v":1,"through":"2026-03-02T09:05:00Z","base":1772442300000,"unit":1,"ips":["10.1.1.1","10.0.0.9"],"flows":"0,1,443,6,0,-300000,240250,3,0"}"#;

    fn icmp_row(src: &str, first: i64, last: i64, n: u64) -> Value {
        let mut r = row(src, first, last, n);
        r["service"] = json!({"proto": 1});
        r
    }

    fn v6_row(first: i64, last: i64, n: u64) -> Value {
        let mut r = row("fd00::1", first, last, n);
        r["dst"]["ip"] = json!("2001:db8::9");
        r["flow_direction"] = json!("inbound");
        r
    }

    #[test]
    fn a_ledger_saved_by_version_1_is_read_with_the_same_behaviour() {
        let saved: Value = serde_json::from_str(V1_WHOLE).expect("JSON");
        let mut l = Ledger::restore(&saved, HOUR, 100).expect("readable");
        assert_eq!(l.len(), 5);
        let mut rows = Vec::new();
        let mut kinds = Vec::new();
        let mut pending = l.begin(t(15), 0);
        for mut r in [
            row("10.1.1.1", 0, 14, 25),
            row("::ffff:10.1.1.1", 0, 14, 26),
            row("10.1.1.2", 1, 3, 5),
            icmp_row("10.1.1.3", 0, 4, 3),
            v6_row(1, 12, 11),
            row("10.1.1.9", 0, 14, 4),
        ] {
            kinds.push(pending.observe(&l, &mut r));
            rows.push(r["num_connections"].as_u64());
        }
        let tally = l.commit(pending);
        let cont = |n| Sighting::Continuation { total: Some(n) };
        assert_eq!(
            kinds,
            vec![
                cont(25),
                cont(26),
                Sighting::Repeat,
                Sighting::Repeat,
                cont(11),
                Sighting::New
            ]
        );
        assert_eq!(
            rows,
            vec![Some(15), Some(6), Some(5), Some(3), Some(3), Some(4)]
        );
        assert_eq!((tally.new, tally.continued, tally.repeated), (1, 3, 2));
        assert_eq!(l.len(), 6);

        // The restored times decide eviction as before: the three flows of the slice
        // ending 09:05 go first.
        let mut l = Ledger::restore(&saved, HOUR, 100).expect("readable");
        l.set_limits(HOUR, 2);
        let (_, tally) = slice(&mut l, 15, vec![]);
        assert_eq!((tally.evicted, l.len()), (3, 2));
        let (out, tally) = slice(
            &mut l,
            20,
            vec![row("10.1.1.1", 0, 19, 12), row("10.1.1.2", 1, 3, 5)],
        );
        assert_eq!((tally.continued, tally.new), (1, 1));
        assert_eq!(sum(&out), 2 + 5);

        // Milliseconds.
        let saved: Value = serde_json::from_str(V1_MS).expect("JSON");
        let mut l = Ledger::restore(&saved, HOUR, 100).expect("readable");
        let mut again = row("10.1.1.1", 0, 4, 3);
        again["timestamp_range"]["last_detected"] = json!("2026-03-02T09:04:00.250Z");
        let mut later = again.clone();
        later["timestamp_range"]["last_detected"] = json!("2026-03-02T09:04:00.500Z");
        later["num_connections"] = json!(5);
        let (out, tally) = slice(&mut l, 10, vec![again, later]);
        assert_eq!((tally.repeated, tally.continued), (1, 1));
        assert_eq!(sum(&out), 2);
    }

    /// The hash table's bytes: a control byte and a slot per bucket.
    fn table_bytes<K, V, S>(map: &std::collections::HashMap<K, V, S>) -> usize {
        let cap = map.capacity();
        let buckets = if cap < 8 {
            cap + 1
        } else {
            (cap * 8 / 7).next_power_of_two()
        };
        buckets * (std::mem::size_of::<(K, V)>() + 1)
    }

    /// Not a check: prints what a 200,000-flow cycle costs (run it in release with
    /// `--ignored --nocapture`).
    #[test]
    #[ignore = "a measurement, printed: cargo test --release --lib ledger::tests::measure -- --ignored --nocapture"]
    #[allow(clippy::print_stderr)] // a measurement is read by whoever runs it
    fn measure_a_200000_flow_cycle() {
        const N: usize = 200_000;
        let rows = |last: i64| -> Vec<Value> {
            (0..N)
                .map(|i| {
                    let src = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
                    row(&src, 0, last, 10 + last as u64)
                })
                .collect()
        };
        let mut l = Ledger::new(HOUR, N);
        for (end, what) in [(5, "all new"), (10, "all continued"), (15, "all repeated")] {
            let mut batch = rows(if end == 15 { 9 } else { end - 1 });
            let start = std::time::Instant::now();
            let mut pending = l.begin(t(end), N);
            let pending_bytes = table_bytes(&pending.changes);
            for r in &mut batch {
                pending.observe(&l, r);
            }
            let tally = l.commit(pending);
            let took = start.elapsed();
            eprintln!(
                "{what}: begin + {N} rows + commit {took:?} (tally {tally:?}); slot {} bytes; \
                 pending map {pending_bytes} bytes ({} per flow); flows map {} bytes ({} per flow)",
                std::mem::size_of::<(FlowId, Entry)>(),
                pending_bytes / N,
                table_bytes(&l.flows),
                table_bytes(&l.flows) / l.len(),
            );
        }
    }
}
