//! Per-VM health checks: gates that name `{vm.ip}`, `{vm.name}` or `{vm.id}` are checked
//! for each VM that just acted, at the address the API gives for its first NIC.

use crate::support::{FAST_POLLING, Test, free_port, open_port_after};
use powerbook::sim::MutationRecord;
use std::time::Duration;

/// Four VMs answering on loopback: their only NIC is 127.0.0.1.
fn on_loopback() -> Test {
    Test::new().generated(4, 50).configure(|c| {
        for vm in c
            .vdcs
            .iter_mut()
            .flat_map(|d| &mut d.vapps)
            .flat_map(|a| &mut a.vms)
        {
            vm.ips = Some(vec!["127.0.0.1".into()]);
        }
    })
}

fn rolling(port: u16, timeout: &str) -> String {
    format!(
        r#"
name = "rolling restart"
[[step]]
name = "restart"
action = "restart"
targets = [{{ vdc = "*" }}]
on_failure = "abort"
waves = {{ size = 2, gate = {{ tcp = "{{vm.ip}}:{port}", timeout = "{timeout}", interval = "100ms" }} }}
"#
    )
}

fn timeline(t: &Test) -> Vec<MutationRecord> {
    let mut all: Vec<MutationRecord> = t.stats().mutations.into_values().flatten().collect();
    all.sort_by_key(|m| m.accepted_ms);
    all
}

#[test]
fn a_wave_gate_checks_each_vm_of_the_wave_before_at_its_own_address() {
    let port = free_port();
    let t = on_loopback().runbook(&rolling(port, "30s"));
    let opener = open_port_after(port, Duration::from_secs(3));
    let out = t
        .clone()
        .args(["run", "runbook.toml", "--yes", "--output", "json"])
        .args(FAST_POLLING)
        .code(0)
        .run();
    let report: serde_json::Value = out.json();
    let gate = &report["gates"][0];
    assert_eq!(gate["passed"], true, "{}", out.context());
    assert_eq!(gate["check"], format!("tcp {{vm.ip}}:{port}"));
    assert_eq!(gate["detail"], "2 VMs passed", "{gate}");
    // The second wave's first shutdown waits for the port the first wave's VMs answer on.
    let all = timeline(&t);
    let first_wave_on = all
        .iter()
        .filter(|m| m.vm_id <= 2 && m.action == "ON")
        .map(|m| m.accepted_ms)
        .max()
        .unwrap();
    let second_wave = all
        .iter()
        .filter(|m| m.vm_id > 2)
        .map(|m| m.accepted_ms)
        .min()
        .unwrap();
    assert!(
        second_wave >= first_wave_on + 2_000,
        "second wave {} ms after the first came back",
        second_wave - first_wave_on
    );
    drop(opener);
}

#[test]
fn a_vm_without_an_address_fails_the_per_vm_gate_by_name() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = on_loopback()
        .configure(|c| c.vdcs[0].vapps[0].vms[1].ips = Some(Vec::new()))
        .runbook(&rolling(port, "2s"));
    let out = t
        .clone()
        .args(["run", "runbook.toml", "--yes"])
        .args(FAST_POLLING)
        .code(3)
        .stdout_contains("vm-00002 has no IP address")
        .run();
    // Only the first wave acted.
    let acted: Vec<u64> = timeline(&t).iter().map(|m| m.vm_id).collect();
    assert!(
        acted.iter().all(|&id| id <= 2),
        "{acted:?}\n{}",
        out.context()
    );
    drop(listener);
}

#[test]
fn a_gate_on_an_after_edge_checks_the_vms_of_that_step() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = on_loopback()
        // The second VM has no NIC: a check of it would fail, and it is not db's.
        .configure(|c| c.vdcs[0].vapps[0].vms[1].ips = Some(Vec::new()))
        .runbook(&format!(
            r#"
name = "db then app"
[[step]]
name = "db off"
action = "off"
targets = [{{ vm = "vm-00001" }}]
[[step]]
name = "app off"
action = "off"
after = [{{ step = "db off", gate = {{ tcp = "{{vm.ip}}:{port}", timeout = "5s" }} }}]
targets = [{{ vm = "vm-0000[2-4]" }}]
"#
        ));
    let out = t
        .clone()
        .args(["run", "runbook.toml", "--yes", "--output", "json"])
        .args(FAST_POLLING)
        .code(0)
        .run();
    let report: serde_json::Value = out.json();
    assert_eq!(
        report["gates"][0]["detail"],
        "1 VM passed",
        "{}",
        out.context()
    );
    assert_eq!(t.actions().len(), 4);
    drop(listener);
}
