//! Help, completions and the manual page over the real binary: examples in every command's
//! help, global options under their own heading, `--db` refused where it means nothing.

mod support;

use std::time::Duration;

use support::*;

const LIMIT: Duration = Duration::from_secs(30);

/// Every command and subcommand, as typed.
const COMMANDS: &[&[&str]] = &[
    &["send"],
    &["bulk"],
    &["serve"],
    &["export"],
    &["stats"],
    &["report"],
    &["keygen"],
    &["keys"],
    &["keys", "upload"],
    &["keys", "check"],
    &["sandbox"],
    &["demo"],
    &["doctor"],
    &["init"],
    &["completions"],
    &["man"],
    &["flows"],
    &["templates"],
    &["db"],
    &["db", "migrate-to"],
];

fn help(env: &Env, command: &[&str]) -> String {
    let mut c = env.cmd();
    c.args(command).arg("--help");
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{command:?}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn every_command_has_examples_and_global_options_under_their_heading() {
    let env = Env::new();
    let top = help(&env, &[]);
    assert!(top.contains("Examples:"), "{top}");
    for command in COMMANDS {
        let text = help(&env, command);
        let examples = text
            .split("Examples:")
            .nth(1)
            .unwrap_or_else(|| panic!("{command:?} has no Examples section:\n{text}"));
        let first = examples
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        assert!(
            first.trim_start().starts_with("flowctl"),
            "{command:?}: the examples start with a command line, not {first:?}"
        );
        let global = text
            .split("Global options:")
            .nth(1)
            .unwrap_or_else(|| panic!("{command:?}: no Global options heading:\n{text}"));
        assert!(global.contains("--env-file"), "{command:?}:\n{text}");
    }
}

#[test]
fn commands_that_need_secrets_name_them() {
    let env = Env::new();
    for (command, secrets) in [
        (&["send"][..], &["WHATSAPP_ACCESS_TOKEN"][..]),
        (&["bulk"], &["WHATSAPP_ACCESS_TOKEN"]),
        (
            &["serve"],
            &["APP_SECRET", "WEBHOOK_VERIFY_TOKEN", "FLOWCTL_API_KEY"],
        ),
        (
            &["keys", "upload"],
            &["WHATSAPP_ACCESS_TOKEN", "PRIVATE_KEY"],
        ),
        (&["doctor"], &["WHATSAPP_ACCESS_TOKEN", "APP_SECRET"]),
    ] {
        let text = help(&env, command);
        for s in secrets {
            assert!(text.contains(s), "{command:?} does not name {s}:\n{text}");
        }
    }
}

#[test]
fn serve_help_lists_no_send_only_flags() {
    let env = Env::new();
    let text = help(&env, &["serve"]);
    for flag in [
        "--template-button-index",
        "--template-name-param",
        "--template ",
        "--lang",
    ] {
        assert!(!text.contains(flag), "serve lists {flag}:\n{text}");
    }
    // They are still on the commands that send templates.
    let send = help(&env, &["send"]);
    assert!(send.contains("--template-button-index"), "{send}");
}

#[test]
fn db_on_a_command_that_uses_no_database_is_refused() {
    let env = Env::new();
    for command in [
        &["keygen"][..],
        &["sandbox"],
        &["keys", "check"],
        &["completions", "bash"],
    ] {
        for before in [true, false] {
            let mut c = env.cmd();
            if before {
                c.args(["--db", "x.db"]).args(command);
            } else {
                c.args(command).args(["--db", "x.db"]);
            }
            let out = run(c, LIMIT);
            assert_eq!(out.status.code(), Some(2), "{command:?}: {}", stderr(&out));
            assert!(stderr(&out).contains("--db"), "{}", stderr(&out));
        }
    }
    assert!(!env.path("private.pem").exists(), "keygen did not run");
    // FLOWCTL_DB in the environment is for the commands that use it: not an error.
    let mut c = env.cmd();
    c.args(["completions", "bash"]);
    assert_eq!(run(c, LIMIT).status.code(), Some(0));
    // And --db still works where it is used.
    let mut c = env.cmd();
    c.args(["--db"]).arg(env.path("none.db")).arg("stats");
    let out = run(c, LIMIT);
    assert!(stderr(&out).contains("none.db"), "{}", stderr(&out));
}

#[test]
fn completions_are_scripts_for_each_shell() {
    let env = Env::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef flowctl"),
        ("fish", "complete -c flowctl"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let mut c = env.cmd();
        c.args(["completions", shell]);
        let out = run(c, LIMIT);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}:\n{script}");
        assert!(script.contains("flowctl"), "{shell}");
        assert!(
            script.contains("doctor"),
            "{shell}: the subcommands are completed"
        );
    }
    let mut c = env.cmd();
    c.args(["completions", "tcsh"]);
    assert_eq!(run(c, LIMIT).status.code(), Some(2));
}

#[test]
fn man_prints_roff_and_writes_one_page_per_command() {
    let env = Env::new();
    let mut c = env.cmd();
    c.arg("man");
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(
        page.starts_with(".ie") || page.contains(".TH flowctl"),
        "{page}"
    );
    assert!(page.contains(".SH"), "roff sections: {page}");
    assert!(page.contains("doctor"), "{page}");

    let mut c = env.cmd();
    c.args(["man", "--out"]).arg(env.path("man"));
    let out = run(c, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for name in [
        "flowctl.1",
        "flowctl-send.1",
        "flowctl-doctor.1",
        "flowctl-keys-check.1",
    ] {
        let text = std::fs::read_to_string(env.path("man").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains(".TH"), "{name}");
    }
}
