//! Shell completions, the man page and each command's `--help`.

use crate::support::Test;

#[test]
fn completions_are_generated_for_every_shell_and_name_the_commands() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = Test::new().args(["completions", shell]).code(0).run();
        for word in ["powerbook", "resume", "state-max-age", "show"] {
            assert!(
                out.stdout.contains(word),
                "{shell}: no {word}\n{}",
                out.context()
            );
        }
    }
    let bash = Test::new().args(["completions", "bash"]).code(0).run();
    let t = Test::new().file("powerbook.bash", &bash.stdout);
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(t.path("powerbook.bash"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn the_man_page_renders_without_warnings_and_covers_every_command() {
    use std::io::Write;
    let out = Test::new().arg("man").code(0).run();
    let mut groff = std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("groff renders man pages");
    groff
        .stdin
        .take()
        .unwrap()
        .write_all(out.stdout.as_bytes())
        .unwrap();
    let page = groff.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&page.stderr);
    assert!(page.status.success() && stderr.is_empty(), "{stderr}");
    // The terminal device marks bold as `X\bX`: keep the letters.
    let mut text = String::new();
    let mut chars = String::from_utf8_lossy(&page.stdout).into_owned();
    chars.push(' ');
    let chars: Vec<char> = chars.chars().collect();
    let mut i = 0;
    while i + 1 < chars.len() {
        if chars[i + 1] == '\u{8}' {
            i += 2;
        } else {
            text.push(chars[i]);
            i += 1;
        }
    }
    for heading in [
        "POWERBOOK RUN",
        "POWERBOOK PLAN",
        "POWERBOOK RESUME",
        "POWERBOOK REPORT",
        "POWERBOOK VALIDATE",
        "Exit codes:",
        "ABIQUO_API_PASSWORD",
    ] {
        assert!(text.contains(heading), "no {heading}\n{text}");
    }
}

#[test]
fn each_help_names_the_environment_and_its_own_exit_codes() {
    let run = Test::new().args(["run", "--help"]).code(0).run();
    for needle in [
        "NO_COLOR",
        "RUST_LOG",
        "POWERBOOK_RUNS_DIR",
        "4    declined",
        "130",
    ] {
        assert!(
            run.stdout.contains(needle),
            "run --help: no {needle}\n{}",
            run.stdout
        );
    }
    let validate = Test::new().args(["validate", "--help"]).code(0).run();
    assert!(
        validate.stdout.contains("every runbook is valid"),
        "{}",
        validate.stdout
    );
    assert!(
        !validate.stdout.contains("interrupted") && !validate.stdout.contains("declined"),
        "validate --help shows the run's exit codes\n{}",
        validate.stdout
    );
    for command in [
        "sim",
        "snapshot",
        "schema",
        "completions",
        "man",
        "runs",
        "restore",
        "report",
    ] {
        let help = Test::new().args([command, "--help"]).code(0).run();
        assert!(
            help.stdout.contains("Exit codes:"),
            "{command} --help\n{}",
            help.stdout
        );
    }
    let plan = Test::new().args(["plan", "--help"]).code(0).run();
    assert!(
        plan.stdout.contains("--strict: the plan has warnings"),
        "{}",
        plan.stdout
    );
}
