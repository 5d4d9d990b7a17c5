//! Tests that change nftables run in a user and network namespace of their own (`unshare
//! -rn`: only loopback, nothing of the host's touched): the test binary runs the test
//! again inside one, and the outer run checks that it passed there.

#![allow(clippy::print_stderr)] // why a namespace test is skipped, for whoever runs the tests

use std::path::Path;
use std::process::Command;

/// Set in the copy of a test that runs inside the namespace.
const INNER: &str = "VIGIL_NETNS_INNER";

/// The `nft` program.
pub(crate) fn nft() -> String {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nft")
        .to_string()
}

/// In the outer run: runs test `name` again inside a new user and network namespace,
/// checks that it passed there, and returns `false` (the caller returns). In the inner
/// run: brings loopback up and returns `true` (the caller runs the test's body). When the
/// kernel refuses namespaces, or `nft` cannot run there, says why and returns `false`.
pub(crate) fn in_namespace(name: &str) -> bool {
    if std::env::var_os(INNER).is_some() {
        lo_up();
        return true;
    }
    let probe = Command::new("unshare")
        .arg("-rn")
        .arg(nft())
        .args(["list", "ruleset"])
        .output();
    match probe {
        Err(e) => {
            eprintln!("SKIPPED {name}: cannot run `unshare` ({e}); the JSON-level tests still run");
            return false;
        }
        Ok(o) if !o.status.success() => {
            eprintln!(
                "SKIPPED {name}: `unshare -rn nft list ruleset` failed (the kernel refuses user or network namespaces, or nftables is not installed): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return false;
        }
        Ok(_) => {}
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new("unshare")
        .arg("-rn")
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .output()
        .expect("unshare runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed inside its network namespace:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    false
}

/// Inside the namespace: loopback up.
fn lo_up() {
    let ok = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .or_else(|_| {
            Command::new("/usr/sbin/ip")
                .args(["link", "set", "lo", "up"])
                .status()
        })
        .expect("ip runs");
    assert!(ok.success(), "ip link set lo up");
}
