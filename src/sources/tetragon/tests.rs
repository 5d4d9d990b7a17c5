use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/real/tetragon")
}

/// Every record of the real fixtures: the JSON lines files, and the book's examples (one
/// pretty-printed event a file).
fn records() -> Vec<(String, Value)> {
    let dir = fixtures();
    let mut all = Vec::new();
    for f in ["docs_use_cases_events.jsonl", "testdata_events.jsonl"] {
        let text = std::fs::read_to_string(dir.join(f)).expect("the fixture");
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            all.push((
                format!("{f}:{}", i + 1),
                serde_json::from_str(line).expect("a JSON line"),
            ));
        }
    }
    let book = dir.join("oreilly_book_examples");
    let mut files: Vec<_> = std::fs::read_dir(&book)
        .expect("the book's examples")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("an example");
        all.push((
            f.display().to_string(),
            serde_json::from_str(&text).expect("a JSON example"),
        ));
    }
    all
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

#[test]
fn every_fixture_record_is_a_known_event_with_its_type_and_time() {
    let all = records();
    assert_eq!(all.len(), 29, "18 + 3 lines and 8 examples");
    for (at, r) in &all {
        let n = normalize(r).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert!(n.known, "{at}: {}", n.data["event"]["type"]);
        let kind = n.data["event"]["type"].as_str().expect("a type");
        assert!(r.get(kind).is_some(), "{at}");
        assert_eq!(n.data.get("time"), r.get("time"), "{at}");
        if kind != "process_throttle" {
            assert!(n.data["process"]["binary"].is_string(), "{at}: {}", n.data);
        }
    }
}

#[test]
fn kprobe_arguments_become_named_fields() {
    let all = records();
    let line = |name: &str| {
        let (_, r) = all
            .iter()
            .find(|(at, _)| at.ends_with(name))
            .unwrap_or_else(|| panic!("{name}"));
        normalize(r).unwrap().data
    };
    // /etc/passwd read, by policy `file-monitoring`.
    let d = line("docs_use_cases_events.jsonl:5");
    assert_eq!(d["event"]["type"], "process_kprobe");
    assert_eq!(get(&d, "kprobe.function"), "security_file_permission");
    assert_eq!(get(&d, "kprobe.policy"), "file-monitoring");
    assert_eq!(get(&d, "kprobe.action"), "KPROBE_ACTION_POST");
    assert_eq!(get(&d, "kprobe.return"), 0);
    assert_eq!(get(&d, "arg.file.path"), "/etc/passwd");
    assert_eq!(get(&d, "arg.file.permission"), "-rw-r--r--");
    assert_eq!(get(&d, "arg.int"), 2);
    assert_eq!(
        d["args"].as_array().map(Vec::len),
        Some(2),
        "kept as written"
    );
    // A capability check.
    let d = line("docs_use_cases_events.jsonl:18");
    assert_eq!(get(&d, "kprobe.function"), "cap_capable");
    assert_eq!(get(&d, "arg.cap.name"), "CAP_SYSLOG");
    assert_eq!(get(&d, "arg.user_ns.ns.is_host"), true);
    // Credentials committed to root.
    let d = line("docs_use_cases_events.jsonl:13");
    assert_eq!(get(&d, "kprobe.function"), "commit_creds");
    assert_eq!(get(&d, "arg.creds.uid"), 0);
    // setns: two integer arguments.
    let d = line("docs_use_cases_events.jsonl:15");
    assert_eq!(get(&d, "kprobe.function"), "__x64_sys_setns");
    assert_eq!(get(&d, "arg.int"), 3);
    assert_eq!(get(&d, "arg.int_2"), 134_217_728);
    // A connection (an Isovalent build's network event).
    let d = line("process_connect.json");
    assert_eq!(d["event"]["type"], "process_connect");
    assert_eq!(get(&d, "sock.saddr"), "10.88.0.7");
    assert!(get(&d, "sock.dport").is_number(), "{d}");
    // A module loaded.
    let d = line("docs_use_cases_events.jsonl:7");
    assert_eq!(get(&d, "arg.module.name"), "kernel_module_hello");
}

#[test]
fn processes_parents_pods_and_throttles_read_plainly() {
    let all = records();
    let (_, exec) = all
        .iter()
        .find(|(at, _)| at.ends_with("testdata_events.jsonl:1"))
        .unwrap();
    let d = normalize(exec).unwrap().data;
    assert_eq!(get(&d, "process.binary"), "/usr/bin/netserver");
    assert_eq!(get(&d, "process.arguments"), "-D");
    assert_eq!(get(&d, "process.pid"), 68790);
    assert_eq!(get(&d, "process.uid"), 0);
    assert_eq!(get(&d, "process.pod.namespace"), "default");
    assert_eq!(get(&d, "process.pod.name"), "tiefighter");
    assert_eq!(
        get(&d, "process.pod.container.image"),
        "docker.io/tgraf/netperf:latest"
    );
    assert_eq!(get(&d, "parent.binary"), "/usr/bin/containerd-shim-runc-v2");
    assert_eq!(d["node_name"], "my-node");

    let (_, throttle) = all
        .iter()
        .find(|(at, _)| at.ends_with("docs_use_cases_events.jsonl:1"))
        .unwrap();
    let d = normalize(throttle).unwrap().data;
    assert_eq!(d["event"]["type"], "process_throttle");
    assert_eq!(get(&d, "throttle.type"), "THROTTLE_START");
    assert_eq!(get(&d, "throttle.cgroup"), "session-429.scope");
}

#[test]
fn unknown_types_pass_with_their_type_and_what_is_not_an_event_is_said() {
    let n =
        normalize(&json!({"process_future": {"x": 1}, "time": "2026-01-01T00:00:00Z"})).unwrap();
    assert!(!n.known);
    assert_eq!(n.data["event"]["type"], "process_future");
    assert_eq!(n.data["body"]["x"], 1);
    assert_eq!(n.data["time"], "2026-01-01T00:00:00Z");
    assert_eq!(normalize(&json!([1])), Err(NotAnEvent::NotObject));
    assert_eq!(
        normalize(&json!({"time": "2026-01-01T00:00:00Z", "node_name": "n"})),
        Err(NotAnEvent::NoEvent)
    );
    assert_eq!(
        normalize(&json!({"process_exec": 5})),
        Err(NotAnEvent::NoEvent)
    );
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z_]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        let keys = prop_oneof![
            Just("process_kprobe".to_string()),
            Just("process_exec".to_string()),
            Just("process_throttle".to_string()),
            Just("process".to_string()),
            Just("parent".to_string()),
            Just("pod".to_string()),
            Just("container".to_string()),
            Just("image".to_string()),
            Just("args".to_string()),
            Just("return".to_string()),
            Just("time".to_string()),
            "[a-z_]{1,10}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary JSON (shaped like Tetragon's, often) never panics: it normalises or is
    /// refused.
    #[test]
    fn arbitrary_json_never_panics(v in any_json()) {
        let _ = normalize(&v);
    }
}
