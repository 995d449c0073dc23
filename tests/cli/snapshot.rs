//! `powerbook snapshot`: a cloud (here the simulator) read with GETs only and written as a
//! simulator inventory that a simulator serves back unchanged.

use crate::support::{ALL_OFF, Test};
use powerbook::abiquo::model::VmState;
use powerbook::sim::{SimConfig, SimUser};

/// The inventory without the header lines that name where and when it was taken.
fn comparable(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("# source: ") && !l.starts_with("# taken: "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Every request the simulator counted was a GET, and no power action was accepted.
fn only_gets(t: &Test) {
    let stats = t.stats();
    assert!(stats.total_requests > 0);
    let others: Vec<&String> = stats
        .requests
        .keys()
        .filter(|k| !k.starts_with("GET "))
        .collect();
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(stats.mutation_count(), 0);
}

#[test]
fn snapshot_of_the_lab_served_by_a_simulator_snapshots_to_the_same_inventory() {
    let lab = Test::new().lab(1.0);
    lab.clone()
        .args(["snapshot", "--output", "snap.toml"])
        .success()
        .stdout_lacks("[[vdc]]")
        .stderr_contains("snapshot: 3 VDCs, 8 vApps, 27 VMs written to snap.toml")
        .run();
    let first = lab.read("snap.toml");
    assert!(first.starts_with("# powerbook snapshot: 3 VDCs, 8 vApps, 27 VMs\n"));
    let source = format!("# source: {}\n", lab.sim().base_url());
    assert!(first.contains(&source), "{first}");

    // The copy is what the lab is, but for what the API does not tell (guest tools) and
    // the settings, which are the simulator's own.
    let copy = SimConfig::from_inventory_file(&lab.path("snap.toml")).unwrap();
    let mut want = SimConfig::lab().vdcs;
    want.sort_by_key(|d| d.id);
    for vm in want
        .iter_mut()
        .flat_map(|d| &mut d.vapps)
        .flat_map(|a| &mut a.vms)
    {
        vm.guest_tools = true;
        vm.fail_actions.clear();
        // The addresses the lab serves its VMs with are written out.
        vm.ips = Some(vm.nic_ips());
    }
    assert_eq!(copy.vdcs, want);

    let copied = lab.other_cloud().sim_config(copy);
    let second = copied.clone().arg("snapshot").success().run().stdout;
    assert_eq!(comparable(&second), comparable(&first));
    assert_ne!(second, first, "each names its own simulator");
    only_gets(&lab);
    only_gets(&copied);
}

#[test]
fn snapshot_sends_no_mutation_and_a_rehearsal_runs_against_it() {
    let t = Test::new().lab(1.0);
    t.clone()
        .args(["snapshot", "-o", "snap.toml"])
        .success()
        .run();
    only_gets(&t);
    assert_eq!(
        t.stats()
            .requests
            .get("GET /api/cloud/virtualdatacenters/{vdc}/virtualappliances"),
        Some(&3),
        "one vApp listing per VDC"
    );
    let rehearsal = Test::new()
        .file("snap.toml", &t.read("snap.toml"))
        .runbook(ALL_OFF)
        .args(["run", "runbook.toml", "--simulate", "--yes"])
        .args([
            "--simulate-inventory",
            "snap.toml",
            "--simulate-speed",
            "50",
        ])
        .fast_polling()
        .run();
    // The copy behaves as the lab does: the PAUSED VM is refused VM-4, the protected and
    // the already-off VMs are skipped, the other 21 are turned off.
    assert_eq!(rehearsal.code, 1, "{}", rehearsal.context());
    assert!(
        rehearsal
            .stdout
            .contains("Summary: 27 VMs: 21 ok, 5 skipped, 1 failed"),
        "{}",
        rehearsal.context()
    );
    assert!(
        rehearsal.stdout.contains("app-03"),
        "{}",
        rehearsal.context()
    );
}

#[test]
fn output_refuses_to_overwrite_a_file_unless_forced() {
    let t = Test::new().lab(1.0).file("snap.toml", "keep me\n");
    t.clone()
        .args(["snapshot", "--output", "snap.toml"])
        .code(2)
        .stderr_contains("snap.toml exists; pass --force to overwrite it")
        .run();
    assert_eq!(t.read("snap.toml"), "keep me\n");
    assert_eq!(
        t.stats().total_requests,
        0,
        "refused before reading the cloud"
    );
    t.clone()
        .args(["snapshot", "--output", "snap.toml", "--force"])
        .success()
        .run();
    assert!(t.read("snap.toml").starts_with("# powerbook snapshot: "));
    Test::new()
        .args(["snapshot", "--force"])
        .code(2)
        .stderr_contains("--output")
        .run();
}

#[test]
fn credentials_appear_nowhere_in_the_output() {
    let (user, password) = ("snap-operator", "Pa55-hunter2-s3cret");
    let t = Test::new().configure(|c| {
        c.users = vec![SimUser {
            name: user.into(),
            password: password.into(),
        }];
    });
    let t = t
        .env("ABIQUO_API_USERNAME", user)
        .env("ABIQUO_API_PASSWORD", password);
    for args in [
        &["snapshot"][..],
        &["snapshot", "-o", "snap.toml"],
        &["-vv", "snapshot"],
    ] {
        t.clone()
            .args(args)
            .success()
            .stdout_lacks(password)
            .stderr_lacks(password)
            .stdout_lacks(user)
            .stderr_lacks(user)
            .run();
    }
    let file = t.read("snap.toml");
    assert!(!file.contains(password) && !file.contains(user), "{file}");
    // Wrong credentials are refused without a file, and without echoing them.
    t.clone()
        .env("ABIQUO_API_PASSWORD", "not-the-Pa55")
        .args(["snapshot", "-o", "refused.toml"])
        .code(3)
        .stderr_lacks("not-the-Pa55")
        .run();
    assert!(!t.path("refused.toml").exists());
}

#[test]
fn a_locked_vm_is_written_locked_with_a_warning_and_a_note() {
    let t = Test::new().lab(1.0);
    assert!(t.sim().set_vm_state("web-02", VmState::Locked));
    let out = t
        .clone()
        .arg("snapshot")
        .success()
        .stderr_contains("warning: VM `web-02` (id 48) was LOCKED")
        .stdout_contains("# note: VM `web-02` (id 48) was LOCKED")
        .run();
    let copy = SimConfig::from_inventory_str("snap.toml", &out.stdout).unwrap();
    let web02 = copy.vms().find(|(_, _, v)| v.name == "web-02").unwrap().2;
    assert_eq!(web02.state, VmState::Locked);
    // -q keeps stderr to errors.
    t.clone()
        .args(["-q", "snapshot"])
        .success()
        .stderr_lacks("warning")
        .run();
}

#[test]
fn snapshot_without_an_endpoint_or_a_reachable_cloud_says_so() {
    Test::new()
        .arg("snapshot")
        .code(2)
        .stderr_contains("no API endpoint: pass --endpoint or set ABIQUO_API_URL")
        .run();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    Test::new()
        .args(["snapshot", "--endpoint", &format!("http://{addr}/api")])
        .args(["--retry-budget", "1s"])
        .env("ABIQUO_API_USERNAME", "admin")
        .env("ABIQUO_API_PASSWORD", "xabiquo")
        .code(3)
        .run();
}
