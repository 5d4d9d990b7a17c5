//! Captured `/proc` text, two scrapes apart: exact rates; a counter that went backwards
//! gives no rate; the live `/proc` of this machine gives plausible values.

use std::path::Path;

use serde_json::{Value, json};

use super::scrape::{Scope, read, render};

/// One capture of `/proc`: the files a scrape reads.
struct Capture<'a> {
    uptime: &'a str,
    stat: &'a str,
    meminfo: &'a str,
    loadavg: &'a str,
    diskstats: &'a str,
    net_dev: &'a str,
    /// (pid, stat line, io text)
    procs: &'a [(u32, &'a str, &'a str)],
}

fn write(dir: &Path, c: &Capture) {
    std::fs::create_dir_all(dir.join("net")).unwrap();
    std::fs::create_dir_all(dir.join("sys/kernel")).unwrap();
    std::fs::write(dir.join("uptime"), c.uptime).unwrap();
    std::fs::write(dir.join("stat"), c.stat).unwrap();
    std::fs::write(dir.join("meminfo"), c.meminfo).unwrap();
    std::fs::write(dir.join("loadavg"), c.loadavg).unwrap();
    std::fs::write(dir.join("diskstats"), c.diskstats).unwrap();
    std::fs::write(dir.join("net/dev"), c.net_dev).unwrap();
    std::fs::write(dir.join("sys/kernel/hostname"), "web-01\n").unwrap();
    for (pid, stat, io) in c.procs {
        let p = dir.join(pid.to_string());
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("stat"), stat).unwrap();
        std::fs::write(p.join("io"), io).unwrap();
    }
}

const STAT_1: &str = "cpu  1000 0 500 8000 500 0 0 0 0 0\ncpu0 600 0 200 3900 300 0 0 0 0 0\ncpu1 400 0 300 4100 200 0 0 0 0 0\nintr 1\nctxt 100\nbtime 1700000000\nprocesses 10\nprocs_running 1\nprocs_blocked 0\n";
// +10 s: cpu0 busy 800 of 1000 ticks, cpu1 busy 200 of 1000: overall 1000 of 2000.
const STAT_2: &str = "cpu  1900 0 600 8900 600 0 0 0 0 0\ncpu0 1300 0 300 4000 400 0 0 0 0 0\ncpu1 600 0 300 4900 200 0 0 0 0 0\nintr 1\nctxt 100\nbtime 1700000000\nprocesses 10\nprocs_running 1\nprocs_blocked 0\n";

const MEMINFO: &str = "MemTotal:       16000000 kB\nMemFree:         2000000 kB\nMemAvailable:    4000000 kB\nBuffers:          100000 kB\nCached:          1000000 kB\nSwapCached:            0 kB\nActive:          1000000 kB\nInactive:        1000000 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\nDirty:                 0 kB\nWriteback:             0 kB\nAnonPages:       1000000 kB\nMapped:           100000 kB\nShmem:             10000 kB\nSlab:             100000 kB\nSReclaimable:      50000 kB\nSUnreclaim:        50000 kB\nKernelStack:       10000 kB\nPageTables:        10000 kB\nNFS_Unstable:          0 kB\nBounce:                0 kB\nWritebackTmp:          0 kB\nCommitLimit:     8000000 kB\nCommitted_AS:    2000000 kB\nVmallocTotal:   34359738367 kB\nVmallocUsed:       10000 kB\nVmallocChunk:          0 kB\n";

const DISK_1: &str = "   7       0 loop0 10 0 100 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n   8       0 sda 1000 0 200000 500 2000 0 400000 900 0 3000 1400 0 0 0 0 0 0\n   8       1 sda1 900 0 190000 450 1900 0 390000 800 0 2900 1300 0 0 0 0 0 0\n 259       0 nvme0n1 50 0 1000 10 0 0 0 0 0 100 10 0 0 0 0 0 0\n 259       1 nvme0n1p1 50 0 1000 10 0 0 0 0 0 100 10 0 0 0 0 0 0\n";
// +10 s: sda read 20480 sectors (10 MiB) and wrote 40960 (20 MiB), 2500 ms busy of 10 s;
// nvme0n1 was replaced (its counters start again): no rate.
const DISK_2: &str = "   7       0 loop0 10 0 100 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n   8       0 sda 1100 0 220480 600 2200 0 440960 1000 0 5500 1600 0 0 0 0 0 0\n   8       1 sda1 1000 0 210480 550 2100 0 430960 900 0 5400 1500 0 0 0 0 0 0\n 259       0 nvme0n1 5 0 100 1 0 0 0 0 0 10 1 0 0 0 0 0 0\n 259       1 nvme0n1p1 5 0 100 1 0 0 0 0 0 10 1 0 0 0 0 0 0\n";

const NET_HEAD: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";

fn net(lo: u64, eth_rx: u64, eth_tx: u64) -> String {
    format!(
        "{NET_HEAD}    lo: {lo} 10 0 0 0 0 0 0 {lo} 10 0 0 0 0 0 0\n  eth0: {eth_rx} 100 0 0 0 0 0 0 {eth_tx} 100 0 0 0 0 0 0\n"
    )
}

fn proc_stat(pid: u32, comm: &str, utime: u64, stime: u64, rss_pages: u64) -> String {
    format!(
        "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} 0 0 20 0 1 0 100 10000000 {rss_pages} 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0"
    )
}

fn io(read: u64, write: u64) -> String {
    format!(
        "rchar: 0\nwchar: 0\nsyscr: 0\nsyscw: 0\nread_bytes: {read}\nwrite_bytes: {write}\ncancelled_write_bytes: 0\n"
    )
}

fn scope(root: &Path) -> Scope {
    Scope {
        root: root.to_path_buf(),
        disks: Vec::new(),
        interfaces: Vec::new(),
        processes: true,
    }
}

/// The event of two captures, 10 s apart by the kernel's uptime.
fn two_scrapes(second_net: String) -> Value {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (p1a, p1b) = (proc_stat(100, "postgres", 1000, 500, 25_000), io(0, 0));
    let (p2a, p2b) = (proc_stat(200, "backup.sh", 10, 10, 1_000), io(1_000_000, 0));
    let net1 = net(5_000, 1_000_000, 2_000_000);
    write(
        a.path(),
        &Capture {
            uptime: "1000.00 1900.00\n",
            stat: STAT_1,
            meminfo: MEMINFO,
            loadavg: "1.50 0.75 0.25 2/300 4000\n",
            diskstats: DISK_1,
            net_dev: &net1,
            procs: &[(100, &p1a, &p1b), (200, &p2a, &p2b)],
        },
    );
    // postgres: +600 ticks (6 s of CPU in 10 s: 60 %), backup.sh: +500 MB written.
    let (q1a, q1b) = (proc_stat(100, "postgres", 1500, 600, 25_000), io(0, 0));
    let (q2a, q2b) = (
        proc_stat(200, "backup.sh", 20, 20, 1_000),
        io(1_000_000, 500_000_000),
    );
    write(
        b.path(),
        &Capture {
            uptime: "1010.00 1918.00\n",
            stat: STAT_2,
            meminfo: MEMINFO,
            loadavg: "2.00 1.00 0.50 3/301 4001\n",
            diskstats: DISK_2,
            net_dev: &second_net,
            procs: &[(100, &q1a, &q1b), (200, &q2a, &q2b)],
        },
    );
    let first = read(&scope(a.path())).unwrap();
    let second = read(&scope(b.path())).unwrap();
    assert!(first.unreadable.is_empty(), "{:?}", first.unreadable);
    render(Some(&first), &second, 2)
}

#[test]
fn two_captures_give_exact_rates() {
    let got = two_scrapes(net(9_000, 1_000_000 + 12_500_000, 2_000_000 + 1_250_000));
    assert_eq!(got["host"], "web-01");
    assert_eq!(got["interval_seconds"], 10.0);
    assert_eq!(got["cpu"]["percent"], 50.0);
    assert_eq!(got["cpu"]["cores"], json!([80.0, 20.0]));
    assert_eq!(got["cpu"]["count"], 2);
    assert_eq!(got["memory"]["total_bytes"], 16_000_000u64 * 1024);
    assert_eq!(got["memory"]["available_bytes"], 4_000_000u64 * 1024);
    assert_eq!(got["memory"]["used_percent"], 75.0);
    assert_eq!(got["load"], json!({"1": 2.0, "5": 1.0, "15": 0.5}));
    // Whole disks only: no loop device, no partitions.
    assert_eq!(
        got["disk"]["sda"],
        json!({"read_bps": 1_048_576.0, "write_bps": 2_097_152.0, "util_percent": 25.0})
    );
    assert!(got["disk"].get("loop0").is_none() && got["disk"].get("sda1").is_none());
    assert!(got["disk"].get("nvme0n1p1").is_none());
    // Counters that went backwards: no rate, never a negative one (its writes stayed 0).
    assert_eq!(got["disk"]["nvme0n1"], json!({"write_bps": 0.0}));
    // The total leaves out what it cannot know.
    assert!(got["disk_total"].get("read_bps").is_none(), "{got}");
    assert_eq!(
        got["net"],
        json!({"eth0": {"rx_bps": 1_250_000.0, "tx_bps": 125_000.0}})
    );
    // Processes: CPU in percent of one core, resident memory, storage I/O.
    assert_eq!(
        got["top"]["cpu"],
        json!([
            {"pid": 100, "name": "postgres", "cpu_percent": 60.0, "rss_bytes": 25_000u64 * 4096, "io_bps": 0.0},
            {"pid": 200, "name": "backup.sh", "cpu_percent": 2.0, "rss_bytes": 1_000u64 * 4096, "io_bps": 50_000_000.0}
        ])
    );
    assert_eq!(got["top"]["io"][0]["name"], "backup.sh");
    assert_eq!(got["top"]["io"].as_array().unwrap().len(), 1);
    assert_eq!(got["top"]["rss"][0]["name"], "postgres");
}

#[test]
fn a_counter_reset_gives_no_negative_rate() {
    // eth0's counters start again (the driver was reloaded): no rate this once.
    let got = two_scrapes(net(9_000, 500, 100));
    assert_eq!(got["net"]["eth0"], json!({}), "{got}");
    for (name, d) in got["disk"].as_object().unwrap() {
        for (k, v) in d.as_object().unwrap() {
            assert!(v.as_f64().unwrap() >= 0.0, "{name}.{k} = {v}");
        }
    }
}

#[test]
fn the_first_scrape_has_no_rates_and_a_missing_part_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let net1 = net(1, 1, 1);
    write(
        dir.path(),
        &Capture {
            uptime: "1000.00 1900.00\n",
            stat: STAT_1,
            meminfo: MEMINFO,
            loadavg: "1.50 0.75 0.25 2/300 4000\n",
            diskstats: DISK_1,
            net_dev: &net1,
            procs: &[],
        },
    );
    std::fs::remove_file(dir.path().join("diskstats")).unwrap();
    let snap = read(&scope(dir.path())).unwrap();
    assert_eq!(snap.unreadable.len(), 1);
    assert_eq!(snap.unreadable[0].0, "diskstats");
    let got = render(None, &snap, 5);
    assert!(got["cpu"].get("percent").is_none());
    assert!(got.get("disk").is_none() && got.get("net").is_none());
    assert_eq!(got["memory"]["used_percent"], 75.0);

    // Without /proc/stat there is nothing to scrape: a clear error.
    std::fs::remove_file(dir.path().join("stat")).unwrap();
    let e = read(&scope(dir.path())).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("cannot read {}/stat", dir.path().display())),
        "{e}"
    );
}

/// This machine's own `/proc`, read twice: plausible values.
#[test]
fn this_machines_proc_reads_plausibly() {
    let live = Scope {
        root: "/proc".into(),
        disks: Vec::new(),
        interfaces: Vec::new(),
        processes: true,
    };
    let first = read(&live).expect("/proc");
    // Some CPU time must pass for a rate: burn a little, waiting on the kernel's clock.
    let mut x = 0u64;
    let mut second = read(&live).expect("/proc");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while second.uptime - first.uptime < 0.2 && std::time::Instant::now() < deadline {
        for i in 0..100_000u64 {
            x = x.wrapping_add(i * i);
        }
        second = read(&live).expect("/proc");
    }
    assert!(x > 0);
    let got = render(Some(&first), &second, 3);
    let cpu = got["cpu"]["percent"].as_f64().expect("cpu.percent");
    assert!((0.0..=100.0).contains(&cpu), "{got}");
    let cores = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    assert_eq!(got["cpu"]["count"].as_u64().unwrap() as usize, cores);
    assert!(cores >= 1);
    let mem = got["memory"]["used_percent"].as_f64().expect("memory");
    assert!(mem > 0.0 && mem < 100.0, "{got}");
    assert!(got["memory"]["available_bytes"].as_u64().unwrap() > 0);
    assert!(got["load"]["1"].as_f64().unwrap() >= 0.0);
    assert!(got["net"].get("lo").is_none(), "lo is left out: {got}");
    // This test's own process is busy: it is among the processes read.
    let me = std::process::id() as i32;
    assert!(second.procs.contains_key(&me));
    assert!(!got["top"]["rss"].as_array().unwrap().is_empty());
}
