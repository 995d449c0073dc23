use super::*;

#[test]
fn embedded_lab_parses_with_the_documented_vms() {
    let lab = SimConfig::from_inventory_str("lab.toml", LAB_TOML).unwrap();
    let find = |n: &str| lab.vms().find(|(_, _, v)| v.name == n).unwrap();
    assert_eq!(find("web-04").2.state, VmState::Off);
    assert!(!find("web-legacy").2.guest_tools);
    assert!(find("vpn-gateway").2.protected);
    assert_eq!(find("build-runner").2.state, VmState::NotAllocated);
    assert_eq!(
        find("batch-worker-2").2.fail_actions,
        vec![SimAction::Pause]
    );
    assert_eq!(find("spark-master").0.hypervisor, "AZURE");
    assert_eq!(
        lab.duration_of(SimAction::Shutdown),
        Duration::from_millis(2500)
    );
    assert_eq!(lab.duration_of(SimAction::On), Duration::from_millis(1500));
}

#[test]
fn lab_keeps_the_seed_ids() {
    let lab = SimConfig::lab();
    let (vdc, vapp, vm) = lab.vms().find(|(_, _, v)| v.id == 47).unwrap();
    assert_eq!((vdc.id, vapp.id, vm.state.clone()), (2, 1, VmState::On));
}

#[test]
fn implicit_ids_continue_after_explicit_ones_and_skip_taken_ids() {
    let text = r#"
[[vdc]]
name = "a"
  [[vdc.vapp]]
  name = "x"
[[vdc.vapp.vm]]
name = "one"
[[vdc.vapp.vm]]
name = "ten"
id = 10
[[vdc.vapp.vm]]
name = "eleven"
[[vdc.vapp.vm]]
name = "two"
id = 2
[[vdc.vapp.vm]]
name = "three"
"#;
    let c = SimConfig::from_inventory_str("t.toml", text).unwrap();
    let ids: Vec<_> = c.vms().map(|(_, _, v)| (v.name.as_str(), v.id)).collect();
    assert_eq!(
        ids,
        [
            ("one", 1),
            ("ten", 10),
            ("eleven", 11),
            ("two", 2),
            ("three", 3)
        ]
    );
}

#[test]
fn unknown_key_error_names_file_and_line() {
    let text = "[[vdc]]\nname = \"a\"\n  [[vdc.vapp]]\n  name = \"x\"\n    [[vdc.vapp.vm]]\n    name = \"v\"\n    colour = \"red\"\n";
    let e = SimConfig::from_inventory_str("inv.toml", text).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("inv.toml:7:"), "{msg}");
    assert!(msg.contains("colour"), "{msg}");
}

#[test]
fn bad_state_duplicate_id_and_non_azure_deallocated_are_rejected_with_lines() {
    let bad_state = "[[vdc]]\nname = \"a\"\n[[vdc.vapp]]\nname = \"x\"\n[[vdc.vapp.vm]]\nname = \"v\"\nstate = \"RUNNING\"\n";
    let e = SimConfig::from_inventory_str("a.toml", bad_state)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("a.toml:7:") && e.contains("RUNNING"), "{e}");

    let dup = "[[vdc]]\nname = \"a\"\n[[vdc.vapp]]\nname = \"x\"\n[[vdc.vapp.vm]]\nname = \"v\"\nid = 3\n[[vdc.vapp.vm]]\nname = \"w\"\nid = 3\n";
    let e = SimConfig::from_inventory_str("b.toml", dup)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("b.toml:10:") && e.contains("duplicate VM id 3"),
        "{e}"
    );

    let dealloc = "[[vdc]]\nname = \"a\"\n[[vdc.vapp]]\nname = \"x\"\n[[vdc.vapp.vm]]\nname = \"v\"\ndeallocated = true\n";
    let e = SimConfig::from_inventory_str("c.toml", dealloc)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("c.toml:7:") && e.contains("AZURE"), "{e}");

    let dur = "[settings]\ntask_duration = \"soon\"\n";
    let e = SimConfig::from_inventory_str("d.toml", dur)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("d.toml:2:") && e.contains("soon"), "{e}");
}

#[test]
fn generated_inventory_has_deterministic_names_and_spread() {
    let c = SimConfig::generated(10_000);
    assert_eq!(c.vms().count(), 10_000);
    assert_eq!(c.vdcs.len(), 50);
    assert_eq!(c.vdcs[0].name, "vdc-01");
    assert_eq!(c.vdcs[0].vapps[0].name, "vapp-001");
    assert_eq!(c.vdcs[0].vapps[0].vms[0].name, "vm-00001");
    assert_eq!(c.vdcs[49].vapps[9].vms[19].name, "vm-10000");
    assert!(
        c.vms()
            .all(|(_, _, v)| v.state == VmState::On && v.guest_tools)
    );
    assert!(c.validate().is_ok());
    let small = SimConfig::generated(3);
    assert_eq!(small.vms().count(), 3);
    assert_eq!(small.vdcs.len(), 1);
}

#[test]
fn every_problem_is_reported_at_once_with_its_line_and_column() {
    let text = r#"[settings]
task_duration = 1500
speed = 0
locked_code = "VM-3"
[settings.durations]
shutdwn = "2s"

[[vdc]]
name = "a"
hypervisr = "KVM"
  [[vdc.vapp]]
  name = "x"
    [[vdc.vapp.vm]]
    name = "v"
    stat = "ON"
    [[vdc.vapp.vm]]
    name = "v"
    state = "on"
    id = 0
    guest_tools = "false"
    deallocated = true
    [[vdc.vapp.vm]]
    label = "no name"
    fail_rate = 2
    fail_actions = ["pasue"]
"#;
    let e = SimConfig::from_inventory_str("inv.toml", text).unwrap_err();
    let SimError::Inventory { file, errors } = &e else {
        panic!("{e}");
    };
    assert_eq!(file, "inv.toml");
    let got: Vec<String> = errors
        .iter()
        .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
        .collect();
    let want = [
        "2:17: wrong type for `task_duration`: expected a duration string, found an integer; durations are strings with a unit, e.g. \"1500ms\"",
        "3:9: speed must be a number > 0",
        "4:15: unknown locked_code `VM-3`; did you mean `VM-2`?",
        "6:1: unknown action `shutdwn` in durations; did you mean `shutdown`?",
        "10:1: unknown key `hypervisr` in a [[vdc]]; did you mean `hypervisor`?",
        "15:5: unknown key `stat` in a [[vdc.vapp.vm]]; did you mean `state`?",
        "17:12: duplicate VM name `v` (also at line 14)",
        "18:13: unknown VM state `on`; did you mean `ON`?",
        "19:10: VM id must be 1 or more",
        "20:19: wrong type for `guest_tools`: expected a boolean, found a string; write false without quotes",
        "21:19: `deallocated` only applies to VMs in an AZURE VDC",
        "22:5: this VM has no `name`; add e.g. name = \"...\"",
        "24:17: fail_rate must be within 0.0..=1.0",
        "25:21: unknown action `pasue` in fail_actions; did you mean `pause`?",
    ];
    assert_eq!(got, want, "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with("inv.toml: 14 errors in the inventory\ninv.toml:2:17: "),
        "{text}"
    );
    assert_eq!(text.lines().count(), 15);
}

#[test]
fn reader_builds_what_serde_builds_from_the_lab() {
    let by_serde: raw::RawInventory = toml::from_str(LAB_TOML).unwrap();
    let by_reader = read::read(LAB_TOML);
    assert!(by_reader.problems.is_empty(), "{:?}", by_reader.problems);
    assert_eq!(by_reader.raw, by_serde);
    assert_eq!(by_reader.raw.vdcs.len(), 3);
}

#[test]
fn syntax_errors_alone_are_reported_and_a_single_table_is_not_an_array() {
    let e = SimConfig::from_inventory_str("s.toml", "[[vdc]]\nname = \"a\nflavour = 1\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("s.toml:2:") && e.contains("TOML syntax error"),
        "{e}"
    );
    assert!(!e.contains("flavour"), "{e}");

    let e = SimConfig::from_inventory_str("t.toml", "[vdc]\nname = \"a\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("t.toml:1:1: wrong type for `vdc`: expected an array of tables")
            && e.contains("[[vdc]]"),
        "{e}"
    );
}

#[test]
fn committed_schema_is_fresh() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/runbooks/inventory.schema.json"
    );
    let fresh = schema_json();
    if std::env::var("POWERBOOK_UPDATE_SCHEMA").is_ok_and(|v| v == "1") {
        std::fs::write(path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == fresh,
        "runbooks/inventory.schema.json is stale: regenerate it with\n  \
         POWERBOOK_UPDATE_SCHEMA=1 cargo test committed_schema_is_fresh"
    );
}

#[test]
fn known_keys_match_the_schema_properties() {
    use std::collections::BTreeSet;
    let schema: serde_json::Value = serde_json::from_str(&schema_json()).unwrap();
    let props = |v: &serde_json::Value| -> BTreeSet<String> {
        v["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let set = |k: &[&str]| -> BTreeSet<String> { k.iter().map(|s| s.to_string()).collect() };
    assert_eq!(props(&schema), set(raw::keys::INVENTORY));
    for (def, known) in [
        ("Settings", raw::keys::SETTINGS),
        ("Vdc", raw::keys::VDC),
        ("Vapp", raw::keys::VAPP),
        ("Vm", raw::keys::VM),
    ] {
        assert_eq!(props(&schema["definitions"][def]), set(known), "{def}");
    }
}

#[test]
fn the_lab_validates_against_the_schema_and_mistakes_do_not() {
    let schema: serde_json::Value = serde_json::from_str(&schema_json()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let lab: serde_json::Value = toml::from_str(LAB_TOML).unwrap();
    let errors: Vec<String> = validator.iter_errors(&lab).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let wrong: serde_json::Value = toml::from_str(
        "[[vdc]]\nname = \"a\"\n[[vdc.vapp]]\nname = \"x\"\n[[vdc.vapp.vm]]\nname = \"v\"\nstate = \"RUNNING\"\ncolour = 1\n",
    )
    .unwrap();
    assert_eq!(validator.iter_errors(&wrong).count(), 2);
    let nameless: serde_json::Value = toml::from_str("[[vdc]]\nid = 3\n").unwrap();
    assert!(!validator.is_valid(&nameless));
}

#[test]
fn written_vdcs_read_back_as_the_same_inventory() {
    let mut lab = SimConfig::lab();
    // Every key the writer knows, on one VM.
    let vm = &mut lab.vdcs[0].vapps[0].vms[0];
    vm.fail_rate = 0.25;
    vm.fail_actions = vec![SimAction::Pause, SimAction::Reset];
    vm.forbidden = true;
    lab.vdcs[2].vapps[0].vms[1].deallocated = true;
    lab.vdcs[1].vapps.push(SimVapp {
        id: 99,
        name: "empty \"quoted\" vApp".into(),
        vms: Vec::new(),
    });
    let text = vdcs_toml(&lab.vdcs).unwrap();
    let back = SimConfig::from_inventory_str("written.toml", &text).unwrap();
    assert_eq!(back.vdcs, lab.vdcs, "{text}");
    // Writing what was read back gives the same text.
    assert_eq!(vdcs_toml(&back.vdcs).unwrap(), text);
    assert!(
        text.starts_with("[[vdc]]\nname = \"prod\"\nid = 2\nhypervisor = \"KVM\"\n"),
        "{text}"
    );
    assert!(!text.contains("[settings]"));
    // `deallocated` is written on the Azure VMs only, `guest_tools` only where false.
    assert_eq!(text.matches("deallocated = ").count(), 4, "{text}");
    assert_eq!(text.matches("guest_tools = false").count(), 2, "{text}");
    assert!(!text.contains("guest_tools = true"));
}
