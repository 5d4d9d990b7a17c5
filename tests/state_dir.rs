//! `vigil silence` and `vigil outbox` need the settings' `state_dir` only: a `${VAR}`
//! elsewhere in the settings (a password `vigil run` gets from its environment) need not be
//! set in the shell of the person looking at the outbox.

mod common;

use std::process::Output;

use common::cli::Project;

const PIPELINE: &str = "kind: pipeline\nname: p\nsources:\n  in:\n    type: stdin\nsinks:\n  out:\n    type: stdout\n    inputs: [in]\n";

fn smtp_with_password(password: &str) -> String {
    format!(
        "connections:\n  smtp:\n    relay:\n      host: localhost\n      port: 2525\n      tls: none\n      allow_plaintext_auth: true\n      from: vigil@example.com\n      username: vigil\n      password: {password}\n"
    )
}

fn run(p: &Project, args: &[&str]) -> Output {
    p.command(args)
        .arg("--pipelines")
        .arg(p.pipelines())
        .env_remove("UNSET_VAR")
        .env_remove("VIGIL_STATE")
        .output()
        .expect("vigil runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn silence_and_outbox_work_without_the_settings_other_variables() {
    let p = Project::new(&smtp_with_password("${UNSET_VAR}"), PIPELINE);
    // `vigil run` and `vigil validate` do need it.
    let out = p
        .command(&["validate"])
        .arg(p.pipelines())
        .env_remove("UNSET_VAR")
        .output()
        .expect("vigil runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("`UNSET_VAR` is not set"),
        "{}",
        text(&out.stdout)
    );

    let out = run(
        &p,
        &["silence", "add", "stage=burst", "--comment", "maintenance"],
    );
    assert!(out.status.success(), "silence add: {}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let out = run(&p, &["silence", "list"]);
    assert!(out.status.success(), "silence list: {}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(
        listed.contains(&id) && listed.contains("(maintenance)"),
        "{listed}"
    );
    // In the state_dir the settings name.
    assert!(p.path().join("state").join("vigil.db").is_file());

    let out = run(&p, &["outbox", "list", "--state", "all"]);
    assert!(out.status.success(), "outbox list: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "0 message(s)\n");
}

#[test]
fn a_variable_inside_state_dir_itself_is_still_needed_and_named_with_its_place() {
    let p = Project::new("", PIPELINE);
    // The project's settings, with state_dir from a variable.
    let settings = format!(
        "kind: settings\nstate_dir: ${{VIGIL_STATE}}/state\n{}",
        smtp_with_password("${UNSET_VAR}")
    );
    std::fs::write(p.pipelines().join("settings.yaml"), settings).expect("write");
    let out = run(&p, &["outbox", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let file = p.pipelines().join("settings.yaml");
    assert!(
        stderr.contains(&format!(
            "{}:2:12: error[env-unset]: state_dir: environment variable `VIGIL_STATE` is not set",
            file.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("pass --state-dir"), "{stderr}");
    assert!(
        !stderr.contains("UNSET_VAR"),
        "only state_dir matters: {stderr}"
    );

    // Set, it works.
    let out = p
        .command(&["silence", "list", "--pipelines"])
        .arg(p.pipelines())
        .env("VIGIL_STATE", p.path())
        .env_remove("UNSET_VAR")
        .output()
        .expect("vigil runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(p.path().join("state").join("vigil.db").is_file());
}
