//! The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! ...), read from `/proc` on Linux at scrape time. On other systems there are none.
//!
//! Each value is read on its own: a file that cannot be read or a field that does not parse
//! leaves that one value out, never the scrape.

/// `/proc/*/stat` counts CPU time in clock ticks of `USER_HZ`, which Linux fixes at 100 for
/// user space on every architecture it still supports (the Prometheus Go client assumes the
/// same).
const USER_HZ: f64 = 100.0;

/// What the process uses, each value `None` when it could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Process {
    /// User and system CPU time, seconds.
    pub(crate) cpu_seconds: Option<f64>,
    /// Resident memory, bytes.
    pub(crate) resident_bytes: Option<u64>,
    /// Virtual memory, bytes.
    pub(crate) virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub(crate) open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub(crate) max_fds: Option<u64>,
    /// When the process started, seconds since the Unix epoch.
    pub(crate) start_time_seconds: Option<f64>,
}

/// The text of the `/proc` files the values come from, `None` for one that could not be
/// read.
#[derive(Debug, Default)]
pub(crate) struct ProcFiles {
    /// `/proc/self/stat`.
    pub(crate) stat: Option<String>,
    /// `/proc/self/status`.
    pub(crate) status: Option<String>,
    /// `/proc/self/limits`.
    pub(crate) limits: Option<String>,
    /// `/proc/stat` (for the boot time).
    pub(crate) system_stat: Option<String>,
    /// The number of entries in `/proc/self/fd`.
    pub(crate) open_fds: Option<u64>,
}

impl Process {
    /// This process now: from `/proc` on Linux, nothing elsewhere.
    pub(crate) fn read() -> Process {
        if !cfg!(target_os = "linux") {
            return Process::default();
        }
        let read = |path: &str| std::fs::read_to_string(path).ok();
        Process::from_files(&ProcFiles {
            stat: read("/proc/self/stat"),
            status: read("/proc/self/status"),
            limits: read("/proc/self/limits"),
            system_stat: read("/proc/stat"),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
        })
    }

    /// The values found in `files`.
    pub(crate) fn from_files(files: &ProcFiles) -> Process {
        let stat = files.stat.as_deref();
        let field = |n| stat.and_then(|s| stat_field(s, n));
        let ticks = |n| field(n).map(|t| t as f64 / USER_HZ);
        let boot = files.system_stat.as_deref().and_then(boot_time);
        Process {
            // utime + stime
            cpu_seconds: field(14)
                .zip(field(15))
                .map(|(u, s)| u.saturating_add(s) as f64 / USER_HZ),
            resident_bytes: files
                .status
                .as_deref()
                .and_then(|s| status_kib(s, "VmRSS"))
                .map(|kib| kib.saturating_mul(1024)),
            // vsize
            virtual_bytes: field(23),
            open_fds: files.open_fds,
            max_fds: files.limits.as_deref().and_then(max_open_files),
            // starttime, in ticks after boot
            start_time_seconds: boot.zip(ticks(22)).map(|(b, t)| b as f64 + t),
        }
    }
}

/// Field `n` of a `/proc/[pid]/stat` line, numbered as in proc(5) (1 is the pid). The
/// command name (field 2) is in parentheses and may hold spaces and parentheses itself, so
/// the fields after it are counted from its last `)`.
fn stat_field(stat: &str, n: usize) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// A `Key:   1234 kB` line of `/proc/[pid]/status`, in KiB.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut words = value.split_whitespace();
        let n = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(n)
    })
}

/// The soft limit of the `Max open files` line of `/proc/[pid]/limits` (`unlimited` gives
/// `None`).
fn max_open_files(limits: &str) -> Option<u64> {
    limits.lines().find_map(|line| {
        line.strip_prefix("Max open files")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// The boot time (`btime`) in `/proc/stat`, seconds since the Unix epoch.
fn boot_time(system_stat: &str) -> Option<u64> {
    system_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a Linux 6.x process whose name holds a space and parentheses.
    const STAT: &str = "4242 (vigil (x) y) S 1 4242 4242 0 -1 4194560 5120 0 3 0 250 125 0 0 20 0 9 0 123456 987654321 2560 18446744073709551615 1 1 0 0 0 0 0 4096 17991 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
    const STATUS: &str = "Name:\tvigil\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  970000 kB\nVmSize:\t  964506 kB\nVmRSS:\t   10240 kB\nRssAnon:\t    6000 kB\nThreads:\t9\n";
    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \nMax cpu time              unlimited            unlimited            seconds   \nMax open files            1024                 524288               files     \nMax locked memory         8388608              8388608              bytes     \n";
    const SYSTEM_STAT: &str =
        "cpu  1 2 3 4 5 6 7 0 0 0\nintr 12345\nctxt 67890\nbtime 1764000000\nprocesses 4321\n";

    fn files() -> ProcFiles {
        ProcFiles {
            stat: Some(STAT.into()),
            status: Some(STATUS.into()),
            limits: Some(LIMITS.into()),
            system_stat: Some(SYSTEM_STAT.into()),
            open_fds: Some(12),
        }
    }

    #[test]
    fn the_values_come_from_captured_proc_files() {
        assert_eq!(
            Process::from_files(&files()),
            Process {
                cpu_seconds: Some(3.75),
                resident_bytes: Some(10240 * 1024),
                virtual_bytes: Some(987_654_321),
                open_fds: Some(12),
                max_fds: Some(1024),
                start_time_seconds: Some(1_764_000_000.0 + 1234.56),
            }
        );
    }

    #[test]
    fn a_missing_or_garbled_file_leaves_out_only_its_values() {
        let process = Process::from_files(&ProcFiles {
            stat: Some("4242 (vigil) S 1 2 3".into()),
            status: Some("VmRSS:\tlots kB\n".into()),
            limits: Some(LIMITS.replace("1024 ", "unlimited ")),
            system_stat: None,
            open_fds: Some(5),
        });
        assert_eq!(
            process,
            Process {
                open_fds: Some(5),
                ..Process::default()
            }
        );
        assert_eq!(
            Process::from_files(&ProcFiles::default()),
            Process::default()
        );
        // Start time needs both the stat line and the boot time.
        let mut no_boot = files();
        no_boot.system_stat = Some("cpu 1 2 3\n".into());
        assert_eq!(Process::from_files(&no_boot).start_time_seconds, None);
        assert_eq!(Process::from_files(&no_boot).cpu_seconds, Some(3.75));
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            ")",
            "(",
            "1 (a",
            "1 (a)",
            "1 (a) S",
            "\u{0}\u{ff}) ) )",
            "x:",
        ] {
            let process = Process::from_files(&ProcFiles {
                stat: Some(text.into()),
                status: Some(text.into()),
                limits: Some(text.into()),
                system_stat: Some(text.into()),
                open_fds: None,
            });
            assert_eq!(process, Process::default(), "{text:?}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_plausibly() {
        let p = Process::read();
        assert!(p.cpu_seconds.is_some_and(|c| c >= 0.0), "{p:?}");
        assert!(p.resident_bytes.is_some_and(|r| r > 1 << 20), "{p:?}");
        assert!(
            p.virtual_bytes.unwrap_or(0) >= p.resident_bytes.unwrap_or(0),
            "{p:?}"
        );
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(
            p.max_fds.is_some_and(|n| n >= p.open_fds.unwrap_or(0)),
            "{p:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        assert!(
            p.start_time_seconds
                .is_some_and(|s| s <= now + 1.0 && s > now - 86_400.0 * 365.0),
            "{p:?}"
        );
    }
}
