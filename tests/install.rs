//! What an installer or packager uses: `vigil --version`, the manual pages and the shell
//! completions, all generated from the binary itself.

mod common;

#[path = "../build/version.rs"]
#[allow(dead_code)]
mod version;

use std::path::Path;
use std::process::Command;

use common::cli::bin;

fn vigil(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).output().expect("vigil runs")
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8")
}

/// The commands `vigil --help` lists (without `help`).
fn commands() -> Vec<String> {
    let help = stdout(&vigil(&["--help"]));
    let list: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(list.len() >= 10, "commands in --help: {list:?}");
    list
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn vigil_1_names_every_command_and_man_out_writes_a_page_for_each() {
    let page = stdout(&vigil(&["man"]));
    assert!(
        page.starts_with(".ie") || page.contains(".TH vigil 1"),
        "{page}"
    );
    for c in commands() {
        let name = format!("vigil\\-{}(1)", c.replace('-', "\\-"));
        assert!(page.contains(&name), "vigil(1) does not name {name}");
    }
    for section in [
        "EXIT STATUS",
        "ENVIRONMENT",
        "NO_COLOR",
        "CREDENTIALS_DIRECTORY",
    ] {
        assert!(page.contains(section), "vigil(1) has no {section}");
    }
    assert!(
        !page.contains("vigil\\-help(1)"),
        "a page that is not written"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("man1");
    stdout(&vigil(&["man", "--out", out.to_str().expect("UTF-8 path")]));
    let written = |name: &str| out.join(format!("{name}.1"));
    assert_eq!(
        std::fs::read_to_string(written("vigil")).expect("vigil.1"),
        page
    );
    for c in commands() {
        assert!(written(&format!("vigil-{c}")).is_file(), "no vigil-{c}.1");
    }
    // Subcommands of subcommands get theirs.
    for sub in ["outbox-list", "silence-add"] {
        assert!(
            written(&format!("vigil-{sub}")).is_file(),
            "no vigil-{sub}.1"
        );
    }
    if have("groff") {
        for entry in std::fs::read_dir(&out).expect("read dir") {
            let path = entry.expect("entry").path();
            let check = Command::new("groff")
                .args(["-man", "-Tutf8", "-z", "-ww"])
                .arg(&path)
                .output()
                .expect("groff runs");
            assert!(
                check.status.success() && check.stderr.is_empty(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
}

#[test]
fn man_out_into_a_place_that_cannot_be_a_directory_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("write");
    let out = vigil(&["man", "--out", file.to_str().expect("UTF-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
}

#[test]
fn completions_parse_in_their_shell_and_know_every_command() {
    let bash = stdout(&vigil(&["completions", "bash"]));
    for c in commands() {
        assert!(bash.contains(&c), "the bash completions do not know {c}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    for (shell, check) in [
        ("bash", &["bash", "-n"][..]),
        ("zsh", &["zsh", "-n"][..]),
        ("fish", &["fish", "--no-execute"][..]),
    ] {
        let script = stdout(&vigil(&["completions", shell]));
        assert!(script.contains("vigil"), "{shell}: {script}");
        if !have(check[0]) {
            continue;
        }
        let path = dir.path().join(format!("vigil.{shell}"));
        std::fs::write(&path, &script).expect("write");
        let parsed = Command::new(check[0])
            .args(&check[1..])
            .arg(&path)
            .output()
            .expect("the shell runs");
        assert!(
            parsed.status.success(),
            "{shell} rejects the completions: {}",
            String::from_utf8_lossy(&parsed.stderr)
        );
    }
    let out = vigil(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn version_names_the_commit_of_the_checkout() {
    let line = stdout(&vigil(&["--version"]));
    let line = line.trim_end();
    let pkg = env!("CARGO_PKG_VERSION");
    let rest = line
        .strip_prefix(&format!("vigil {pkg}"))
        .unwrap_or_else(|| panic!("{line}"));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    match version::describe("git", manifest) {
        // A checkout: the binary (rebuilt by cargo when HEAD moved) names HEAD.
        Some(d) => assert_eq!(rest, format!(" ({})", d.commit), "{line}"),
        // Built from a tarball, or without git: the version alone.
        None => assert_eq!(rest, "", "{line}"),
    }
    if let Some(inside) = rest.strip_prefix(" (").and_then(|r| r.strip_suffix(')')) {
        let (hash, date) = inside.split_once(' ').expect("hash and date");
        assert!(hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(
            chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok(),
            "{date}"
        );
    }
}

#[test]
fn without_git_or_outside_a_checkout_of_its_own_no_commit_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    // No git program at all.
    assert!(version::describe("/nonexistent/git", dir.path()).is_none());
    if !have("git") {
        return;
    }
    // Not a repository (an unpacked tarball).
    assert!(version::describe("git", dir.path()).is_none());
    // Unpacked inside someone else's repository: not that repository's commit.
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir.path())
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["commit", "-q", "--allow-empty", "-m", "first"]);
    let sub = dir.path().join("vigil-0.1.0");
    std::fs::create_dir(&sub).expect("mkdir");
    assert!(version::describe("git", &sub).is_none());
    // Its own checkout: the commit, and the files whose change means another one.
    let d = version::describe("git", dir.path()).expect("a checkout");
    assert_eq!(d.commit.split(' ').count(), 2, "{}", d.commit);
    assert!(
        d.watch.iter().any(|p| p.ends_with(".git/HEAD")),
        "{:?}",
        d.watch
    );
    assert!(
        d.watch.iter().any(|p| p.ends_with(".git/logs/HEAD")),
        "{:?}",
        d.watch
    );
    assert!(
        d.watch.iter().any(|p| p.ends_with("refs/heads/main")),
        "{:?}",
        d.watch
    );
}
