//! One scrape of `/proc` (or a copy of it under another root), and the event two scrapes
//! make: counters become rates over the time between them, measured by the kernel's own
//! uptime in the same scrape (so a copy of `/proc` taken at two moments gives exact rates,
//! whatever clock the engine runs on).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use procfs::prelude::*;
use serde_json::{Map, Value, json};

/// Sectors in `/proc/diskstats` are 512 bytes, whatever the device's own sector size.
const SECTOR_BYTES: u64 = 512;

/// The most processes a scrape looks at (a bound on the memory the top-N costs).
pub(super) const MAX_PROCESSES: usize = 65_536;

/// CPU time in clock ticks: all of it, and the idle part (idle and iowait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct CpuTicks {
    pub(super) total: u64,
    pub(super) idle: u64,
}

impl CpuTicks {
    fn of(t: &procfs::CpuTime) -> CpuTicks {
        // `guest` and `guest_nice` are already counted in `user` and `nice`.
        let idle = t.idle + t.iowait.unwrap_or(0);
        let total = t.user
            + t.nice
            + t.system
            + idle
            + t.irq.unwrap_or(0)
            + t.softirq.unwrap_or(0)
            + t.steal.unwrap_or(0);
        CpuTicks { total, idle }
    }
}

/// A block device's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DiskCounters {
    pub(super) sectors_read: u64,
    pub(super) sectors_written: u64,
    /// Milliseconds spent doing I/O.
    pub(super) io_ms: u64,
}

/// A network interface's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NetCounters {
    pub(super) rx_bytes: u64,
    pub(super) tx_bytes: u64,
}

/// A process's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProcCounters {
    pub(super) name: String,
    /// User and system time, in ticks.
    pub(super) cpu_ticks: u64,
    pub(super) rss_bytes: u64,
    /// Bytes read from and written to storage (`None`: `/proc/<pid>/io` not readable).
    pub(super) io: Option<(u64, u64)>,
}

/// What one scrape read.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Snapshot {
    /// Seconds since boot (`/proc/uptime`): the time base of every rate.
    pub(super) uptime: f64,
    pub(super) host: Option<String>,
    pub(super) cpu: CpuTicks,
    pub(super) cores: Vec<CpuTicks>,
    /// Total and available bytes.
    pub(super) memory: Option<(u64, u64)>,
    pub(super) load: Option<(f64, f64, f64)>,
    pub(super) disks: BTreeMap<String, DiskCounters>,
    pub(super) nets: BTreeMap<String, NetCounters>,
    pub(super) procs: BTreeMap<i32, ProcCounters>,
    /// Processes left out past [`MAX_PROCESSES`].
    pub(super) procs_skipped: usize,
    /// Parts that could not be read, and why (logged once by the source).
    pub(super) unreadable: Vec<(&'static str, String)>,
    pub(super) ticks_per_second: u64,
}

/// What to read.
#[derive(Debug, Clone)]
pub(super) struct Scope {
    pub(super) root: PathBuf,
    /// Only these block devices (empty: every whole disk).
    pub(super) disks: Vec<String>,
    /// Only these interfaces (empty: every one but `lo`).
    pub(super) interfaces: Vec<String>,
    /// Read the processes too.
    pub(super) processes: bool,
}

/// Why a scrape failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// `uptime` or `stat`, without which there is no rate.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn core<T>(
    path: PathBuf,
    read: impl FnOnce(&Path) -> procfs::ProcResult<T>,
) -> Result<T, ScrapeError> {
    read(&path).map_err(|e| ScrapeError::Unreadable {
        reason: e.to_string(),
        path,
    })
}

/// Reads everything in `scope` (blocking file I/O: run it off the async workers).
pub(super) fn read(scope: &Scope) -> Result<Snapshot, ScrapeError> {
    let root = &scope.root;
    let si = procfs::current_system_info();
    let uptime = core(root.join("uptime"), |p| procfs::Uptime::from_file(p))?;
    let stat = core(root.join("stat"), |p| procfs::KernelStats::from_file(p, si))?;
    let mut snap = Snapshot {
        uptime: uptime.uptime,
        cpu: CpuTicks::of(&stat.total),
        cores: stat.cpu_time.iter().map(CpuTicks::of).collect(),
        ticks_per_second: si.ticks_per_second().max(1),
        ..Snapshot::default()
    };
    snap.host = std::fs::read_to_string(root.join("sys/kernel/hostname"))
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    match procfs::Meminfo::from_file(root.join("meminfo")) {
        Ok(m) => {
            let available = m.mem_available.unwrap_or(m.mem_free + m.buffers + m.cached);
            snap.memory = Some((m.mem_total, available.min(m.mem_total)));
        }
        Err(e) => snap.unreadable.push(("meminfo", e.to_string())),
    }
    match procfs::LoadAverage::from_file(root.join("loadavg")) {
        Ok(l) => {
            let f = |v: f32| round2(f64::from(v));
            snap.load = Some((f(l.one), f(l.five), f(l.fifteen)));
        }
        Err(e) => snap.unreadable.push(("loadavg", e.to_string())),
    }
    match procfs::DiskStats::from_file(root.join("diskstats")) {
        Ok(d) => {
            let names: Vec<&str> = d.0.iter().map(|s| s.name.as_str()).collect();
            for s in &d.0 {
                let wanted = if scope.disks.is_empty() {
                    is_whole_disk(&s.name, &names)
                } else {
                    scope.disks.iter().any(|n| n == &s.name)
                };
                if wanted {
                    snap.disks.insert(
                        s.name.clone(),
                        DiskCounters {
                            sectors_read: s.sectors_read,
                            sectors_written: s.sectors_written,
                            io_ms: s.time_in_progress,
                        },
                    );
                }
            }
        }
        Err(e) => snap.unreadable.push(("diskstats", e.to_string())),
    }
    match procfs::net::InterfaceDeviceStatus::from_file(root.join("net/dev")) {
        Ok(n) => {
            for (name, s) in n.0 {
                let wanted = if scope.interfaces.is_empty() {
                    name != "lo"
                } else {
                    scope.interfaces.iter().any(|i| i == &name)
                };
                if wanted {
                    snap.nets.insert(
                        name,
                        NetCounters {
                            rx_bytes: s.recv_bytes,
                            tx_bytes: s.sent_bytes,
                        },
                    );
                }
            }
        }
        Err(e) => snap.unreadable.push(("net/dev", e.to_string())),
    }
    if scope.processes {
        read_processes(root, si.page_size(), &mut snap);
    }
    Ok(snap)
}

/// Whether `name` is a whole disk: not a loop, RAM or optical device, and not a partition
/// of another listed device (`sda1` of `sda`, `nvme0n1p1` of `nvme0n1`).
fn is_whole_disk(name: &str, all: &[&str]) -> bool {
    const NOT_DISKS: [&str; 5] = ["loop", "ram", "zram", "fd", "sr"];
    if NOT_DISKS.iter().any(|p| name.starts_with(p)) {
        return false;
    }
    !all.iter().any(|other| {
        other.len() < name.len() && name.starts_with(other) && {
            let rest = &name[other.len()..];
            let rest = rest.strip_prefix('p').unwrap_or(rest);
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
        }
    })
}

fn read_processes(root: &Path, page_size: u64, snap: &mut Snapshot) {
    let entries = match std::fs::read_dir(root) {
        Ok(d) => d,
        Err(e) => {
            snap.unreadable.push(("processes", e.to_string()));
            return;
        }
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if snap.procs.len() >= MAX_PROCESSES {
            snap.procs_skipped += 1;
            continue;
        }
        // A process may end between the listing and the read: skip it.
        let dir = entry.path();
        let Ok(stat) = procfs::process::Stat::from_file(dir.join("stat")) else {
            continue;
        };
        let io = procfs::process::Io::from_file(dir.join("io"))
            .ok()
            .map(|io| (io.read_bytes, io.write_bytes));
        snap.procs.insert(
            pid,
            ProcCounters {
                name: stat.comm.clone(),
                cpu_ticks: stat.utime + stat.stime,
                rss_bytes: stat.rss.saturating_mul(page_size),
                io,
            },
        );
    }
}

/// `after - before` per second of `secs`, or `None` when the counter went backwards (a
/// reset, a wrap, a device that was replaced): no negative rate, ever.
fn rate(before: u64, after: u64, secs: f64) -> Option<f64> {
    (after >= before && secs > 0.0).then(|| (after - before) as f64 / secs)
}

/// The busy share of `after - before`, in percent.
fn busy(before: CpuTicks, after: CpuTicks) -> Option<f64> {
    let total = after.total.checked_sub(before.total)?;
    let idle = after.idle.checked_sub(before.idle)?;
    (total > 0).then(|| round2(100.0 * total.saturating_sub(idle) as f64 / total as f64))
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The event of `now` (its record), with rates since `before` when there is one.
pub(super) fn render(before: Option<&Snapshot>, now: &Snapshot, top: usize) -> Value {
    let mut out = Map::new();
    out.insert("source_type".into(), "host_metrics".into());
    if let Some(h) = &now.host {
        out.insert("host".into(), h.clone().into());
    }
    let secs = before.map_or(0.0, |b| now.uptime - b.uptime);
    let before = before.filter(|_| secs > 0.0);
    if let Some(b) = before {
        out.insert("interval_seconds".into(), json!(round2(secs)));
        let mut cpu = Map::new();
        if let Some(p) = busy(b.cpu, now.cpu) {
            cpu.insert("percent".into(), json!(p));
        }
        let cores: Vec<Value> = now
            .cores
            .iter()
            .zip(&b.cores)
            .map(|(n, o)| busy(*o, *n).map_or(Value::Null, |p| json!(p)))
            .collect();
        if !cores.is_empty() {
            cpu.insert("cores".into(), Value::Array(cores));
        }
        cpu.insert("count".into(), json!(now.cores.len()));
        out.insert("cpu".into(), Value::Object(cpu));
    } else {
        out.insert("cpu".into(), json!({"count": now.cores.len()}));
    }
    if let Some((total, available)) = now.memory {
        let used = total - available;
        let mut m = Map::new();
        m.insert("total_bytes".into(), json!(total));
        m.insert("available_bytes".into(), json!(available));
        m.insert("used_bytes".into(), json!(used));
        if total > 0 {
            m.insert(
                "used_percent".into(),
                json!(round2(100.0 * used as f64 / total as f64)),
            );
        }
        out.insert("memory".into(), Value::Object(m));
    }
    if let Some((one, five, fifteen)) = now.load {
        out.insert("load".into(), json!({"1": one, "5": five, "15": fifteen}));
    }
    if let Some(b) = before {
        let mut disks = Map::new();
        let (mut read_all, mut write_all) = (Some(0.0), Some(0.0));
        for (name, d) in &now.disks {
            let Some(o) = b.disks.get(name) else {
                continue;
            };
            let read = rate(o.sectors_read, d.sectors_read, secs).map(|r| r * SECTOR_BYTES as f64);
            let write =
                rate(o.sectors_written, d.sectors_written, secs).map(|r| r * SECTOR_BYTES as f64);
            let util = rate(o.io_ms, d.io_ms, secs).map(|ms| round2((ms / 10.0).min(100.0)));
            read_all = read_all.zip(read).map(|(a, r)| a + r);
            write_all = write_all.zip(write).map(|(a, w)| a + w);
            let mut m = Map::new();
            put(&mut m, "read_bps", read.map(f64::round));
            put(&mut m, "write_bps", write.map(f64::round));
            put(&mut m, "util_percent", util);
            disks.insert(name.clone(), Value::Object(m));
        }
        if !disks.is_empty() {
            let mut total = Map::new();
            put(&mut total, "read_bps", read_all.map(f64::round));
            put(&mut total, "write_bps", write_all.map(f64::round));
            put(
                &mut total,
                "bps",
                read_all.zip(write_all).map(|(r, w)| (r + w).round()),
            );
            out.insert("disk".into(), Value::Object(disks));
            out.insert("disk_total".into(), Value::Object(total));
        }
        let mut nets = Map::new();
        for (name, n) in &now.nets {
            let Some(o) = b.nets.get(name) else {
                continue;
            };
            let mut m = Map::new();
            put(
                &mut m,
                "rx_bps",
                rate(o.rx_bytes, n.rx_bytes, secs).map(f64::round),
            );
            put(
                &mut m,
                "tx_bps",
                rate(o.tx_bytes, n.tx_bytes, secs).map(f64::round),
            );
            nets.insert(name.clone(), Value::Object(m));
        }
        if !nets.is_empty() {
            out.insert("net".into(), Value::Object(nets));
        }
        if top > 0 && !now.procs.is_empty() {
            out.insert("top".into(), top_processes(b, now, secs, top));
        }
    }
    Value::Object(out)
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<f64>) {
    if let Some(v) = v {
        m.insert(key.into(), json!(v));
    }
}

/// The `top` processes by CPU, by resident memory and by storage I/O since `before`.
fn top_processes(before: &Snapshot, now: &Snapshot, secs: f64, top: usize) -> Value {
    struct Row<'a> {
        pid: i32,
        name: &'a str,
        cpu: Option<f64>,
        rss: u64,
        io: Option<f64>,
    }
    let tps = now.ticks_per_second as f64;
    let rows: Vec<Row> = now
        .procs
        .iter()
        .map(|(pid, p)| {
            let old = before.procs.get(pid).filter(|o| o.name == p.name);
            Row {
                pid: *pid,
                name: &p.name,
                cpu: old
                    .and_then(|o| rate(o.cpu_ticks, p.cpu_ticks, secs))
                    .map(|t| round2(100.0 * t / tps)),
                rss: p.rss_bytes,
                io: old.and_then(|o| {
                    let ((r0, w0), (r1, w1)) = (o.io?, p.io?);
                    Some(rate(r0, r1, secs)? + rate(w0, w1, secs)?)
                }),
            }
        })
        .collect();
    let json_of = |r: &Row| {
        let mut m = Map::new();
        m.insert("pid".into(), json!(r.pid));
        m.insert("name".into(), json!(r.name));
        put(&mut m, "cpu_percent", r.cpu);
        m.insert("rss_bytes".into(), json!(r.rss));
        put(&mut m, "io_bps", r.io.map(f64::round));
        Value::Object(m)
    };
    let by = |key: &dyn Fn(&Row) -> Option<f64>| -> Value {
        let mut ranked: Vec<&Row> = rows
            .iter()
            .filter(|r| key(r).is_some_and(|v| v > 0.0))
            .collect();
        ranked.sort_by(|a, b| {
            key(b)
                .partial_cmp(&key(a))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.pid.cmp(&b.pid))
        });
        Value::Array(ranked.into_iter().take(top).map(json_of).collect())
    };
    json!({
        "cpu": by(&|r: &Row| r.cpu),
        "rss": by(&|r: &Row| Some(r.rss as f64)),
        "io": by(&|r: &Row| r.io),
    })
}
