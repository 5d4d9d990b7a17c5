//! Save-to-live latency of a hot reload: from writing a pipeline file to the first event
//! handled by the new configuration, through the real binary (file watcher, debounce,
//! validation, rebuild of the changed node). `cargo bench --bench reload`.

#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 20;

fn pipeline(port: u32, out: &std::path::Path) -> String {
    format!(
        "kind: pipeline\nname: p\nsources:\n  in: {{type: stdin}}\nstages:\n  keep:\n    type: filter\n    inputs: [in]\n    match: {{port: {port}}}\n  burst:\n    type: window_count\n    inputs: [keep]\n    window: 1h\n    threshold: 1000000\n    group_by: [src]\nsinks:\n  out:\n    type: file\n    inputs: [keep]\n    path: {}\n",
        out.display()
    )
}

fn count_lines(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let dir = tempfile::tempdir().expect("temp dir");
    let pipes = dir.path().join("pipelines");
    std::fs::create_dir(&pipes).expect("mkdir");
    let out = dir.path().join("out.jsonl");
    std::fs::write(
        pipes.join("settings.yaml"),
        format!(
            "kind: settings\nstate_dir: {}\n",
            dir.path().join("state").display()
        ),
    )
    .expect("write");
    std::fs::write(pipes.join("p.yaml"), pipeline(1000, &out)).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--pipelines"])
        .arg(&pipes)
        .env("VIGIL_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vigil starts");
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
    let mut stdin = child.stdin.take().expect("stdin");
    // Warm up: the first event of the first configuration gets through.
    let start = Instant::now();
    while count_lines(&out) == 0 {
        writeln!(stdin, "{{\"src\":\"a\",\"port\":1000}}").expect("write");
        stdin.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "vigil did not start"
        );
    }
    let mut latencies = Vec::new();
    for round in 1..=ROUNDS {
        let port = 1000 + round as u32;
        let seen = count_lines(&out);
        let saved = Instant::now();
        std::fs::write(pipes.join("p.yaml"), pipeline(port, &out)).expect("write");
        // Probe with events of the new port until one comes out: the new filter is live.
        loop {
            writeln!(stdin, "{{\"src\":\"a\",\"port\":{port}}}").expect("write");
            stdin.flush().expect("flush");
            if count_lines(&out) > seen {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
            assert!(
                saved.elapsed() < Duration::from_secs(30),
                "reload {round} never went live"
            );
        }
        latencies.push(saved.elapsed());
        // Let the probes of this round drain before the next save.
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = latencies.iter().map(|d| ms(*d)).sum::<f64>() / latencies.len() as f64;
    println!(
        "save-to-live over {ROUNDS} reloads (debounce 300 ms included): min {:.0} ms, median {:.0} ms, mean {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        ms(latencies[0]),
        ms(latencies[ROUNDS / 2]),
        mean,
        ms(latencies[ROUNDS * 9 / 10]),
        ms(latencies[ROUNDS - 1])
    );
}
