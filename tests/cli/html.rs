//! `powerbook report JOURNAL --html FILE` and `run --html FILE`: the page is written from
//! the journal, and a real browser (headless Chromium) loads it without errors, draws the
//! expected lanes and bars, and shows a hostile VM name as text.

use crate::support::{FAST_POLLING, Test, only_journal, root};
use std::path::{Path, PathBuf};
use std::process::Command;

const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// Six web VMs (one with a hostile name whose power off always fails) and two databases.
fn inventory() -> String {
    let web: String = (1..=5)
        .map(|i| format!("    [[vdc.vapp.vm]]\n    name = \"web-{i}\"\n    state = \"ON\"\n"))
        .collect();
    format!(
        r#"
[settings]
task_duration = "150ms"
task_jitter = "50ms"

[[vdc]]
name = "prod"
hypervisor = "KVM"
  [[vdc.vapp]]
  name = "web"
{web}    [[vdc.vapp.vm]]
    name = '{HOSTILE}'
    state = "ON"
    fail_actions = ["off"]
  [[vdc.vapp]]
  name = "db"
    [[vdc.vapp.vm]]
    name = "db-1"
    state = "ON"
    [[vdc.vapp.vm]]
    name = "db-2"
    state = "ON"
"#
    )
}

/// Web tier off in two waves with a pause, then the databases.
const RUNBOOK: &str = r#"
name = "timeline"
[limits]
deadline = "10m"

[[step]]
name = "web off"
action = "off"
targets = [{ vapp = "web" }]
waves = { sizes = [3], pause = "300ms" }

[[step]]
name = "db off"
action = "off"
after = ["web off"]
targets = [{ vapp = "db" }]
"#;

fn timeline_run() -> Test {
    let t = Test::new().inventory(&inventory()).runbook(RUNBOOK);
    t.clone()
        .args(["run", "runbook.toml", "--yes", "--html", "run.html"])
        .args(FAST_POLLING)
        .code(1)
        .stderr_contains("html report: run.html")
        .run();
    t
}

#[test]
fn report_writes_the_same_page_as_run_html_from_the_journal_alone() {
    let t = timeline_run();
    let journal = only_journal(&t);
    t.clone()
        .args(["report"])
        .arg(&journal)
        .args(["--html", "report.html"])
        .success()
        .run();
    let page = t.read("report.html");
    assert_eq!(page, t.read("run.html"));
    assert!(page.contains("data-verdict=\"failed\""));
    assert_eq!(page.matches("class=\"lane step\"").count(), 2);
    assert_eq!(page.matches("class=\"lane wave\"").count(), 3);
    assert!(page.contains("class=\"pause\""));
    // The estimate run recorded in its journal is set beside the actual.
    assert!(page.contains("data-fact=\"estimate\""));
    assert!(!page.contains("not recorded"));
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!page.contains("<img"));
    // Never the credentials the run was given.
    assert!(!page.contains("xabiquo"));
}

#[test]
fn report_refuses_an_unreadable_journal_and_an_unwritable_file() {
    let t = timeline_run();
    let journal = only_journal(&t);
    t.clone()
        .args(["report", "missing.jsonl", "--html", "r.html"])
        .code(2)
        .stderr_contains("cannot read journal")
        .run();
    t.clone().args(["report"]).arg(&journal).code(2).run();
    t.clone()
        .args(["report"])
        .arg(&journal)
        .args(["--html", "no-such-dir/r.html"])
        .code(1)
        .stderr_contains("cannot write the HTML report")
        .run();
}

#[test]
fn a_crashed_run_has_a_page_too() {
    let t = timeline_run();
    let journal = only_journal(&t);
    // Cut the journal before its end record, as a crash would leave it.
    let text = std::fs::read_to_string(&journal).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("\"run_finished\"") && !l.contains("\"step_finished\""))
        .collect();
    std::fs::write(&journal, kept.join("\n") + "\n").unwrap();
    t.clone()
        .args(["report"])
        .arg(&journal)
        .args(["--html", "crashed.html"])
        .success()
        .run();
    let page = t.read("crashed.html");
    assert!(page.contains("data-verdict=\"incomplete\""));
    assert!(page.contains("the journal has no end record"));
}

/// Headless Chromium, or None (with a note) when it is not installed outside CI.
fn chromium() -> Option<PathBuf> {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return Some(candidate.into());
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "chromium is not installed: .ci/run installs it (apt-get install chromium)"
    );
    eprintln!("note: chromium is not installed; skipping the browser test");
    None
}

/// Runs chromium headless on `page` with `mode` (`--dump-dom`, `--screenshot=…`), its
/// profile in a fresh directory and no network of its own; returns its stdout.
fn browse(chromium: &Path, page: &Path, mode: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(mode)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_browser_loads_the_page_without_errors_with_its_lanes_bars_and_hostile_name_as_text() {
    let Some(chromium) = chromium() else {
        return;
    };
    let t = timeline_run();
    let page = t.path("run.html");
    let dom = browse(&chromium, &page, &["--dump-dom"]);
    // The page's first script counts errors and refused loads; its last one marks it ran.
    assert!(dom.contains("data-errors=\"0\""), "{dom}");
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page's script did not run\n{dom}"
    );
    assert_eq!(dom.matches("class=\"lane step\"").count(), 2, "{dom}");
    assert_eq!(dom.matches("class=\"lane wave\"").count(), 3, "{dom}");
    // 8 VMs, each a bar: 7 off, the hostile one failed.
    assert_eq!(dom.matches("class=\"bar ok\"").count(), 7, "{dom}");
    assert_eq!(dom.matches("class=\"bar failed\"").count(), 1, "{dom}");
    // The hostile name is text in the failed VMs table, never an element.
    assert!(
        dom.contains("<td class=\"vm\">&lt;img src=x onerror=alert(1)&gt;</td>"),
        "{dom}"
    );
    assert!(!dom.contains("<img"), "{dom}");
    let shot = root().join("target/report-timeline.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&shot);
    browse(
        &chromium,
        &page,
        &[&format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
}
