//! Plan building tests, plus fixtures other unit tests reuse.

use super::*;
use crate::abiquo::model::{Link, ListedVm, VirtualMachine};
use crate::runbook::model::{
    Amount, ApiSettings, Fallback, Limits, NameOrId, OnFailure, Pattern, Selector, Waves,
};
use std::collections::BTreeMap;
use std::time::Duration;

pub(crate) fn step(name: &str, action: Action, targets: Vec<Selector>) -> Step {
    Step {
        name: name.into(),
        action,
        targets,
        exclude: Vec::new(),
        after: Vec::new(),
        after_gates: Vec::new(),
        order: Order::Parallel,
        concurrency: None,
        waves: None,
        gate: None,
        fallback: None,
        task_timeout: Runbook::DEFAULT_TASK_TIMEOUT,
        on_failure: OnFailure::Abort,
        max_failures: None,
        allow_protected: false,
        expected_duration: None,
    }
}

pub(crate) fn runbook(steps: Vec<Step>) -> Runbook {
    Runbook {
        name: "test".into(),
        description: None,
        api: ApiSettings::default(),
        limits: Limits::default(),
        estimates: BTreeMap::new(),
        steps,
        source_hash: "0".repeat(64),
    }
}

pub(crate) fn sel_vm(glob: &str) -> Selector {
    Selector {
        vm: Some(Pattern::new(glob).unwrap()),
        ..Selector::default()
    }
}

pub(crate) fn sel_vapp(name: &str) -> Selector {
    Selector {
        vapp: Some(NameOrId::Name(Pattern::new(name).unwrap())),
        ..Selector::default()
    }
}

/// VM documents as a listing keeps them.
pub(crate) fn listed(vms: &[VirtualMachine]) -> Vec<ListedVm> {
    vms.iter().map(ListedVm::from).collect()
}

/// Plans over VM documents, as they come listed.
pub(crate) fn build(rb: &Runbook, vms: &[VirtualMachine], endpoint: &str) -> Plan {
    super::build(rb, &listed(vms), endpoint)
}

pub(crate) fn vm(id: u64, name: &str, vapp: &str, state: VmState, hyp: &str) -> VirtualMachine {
    let base = "http://127.0.0.1:9/api/cloud/virtualdatacenters/1";
    VirtualMachine {
        id,
        uuid: None,
        name: name.into(),
        label: None,
        description: None,
        state,
        id_state: None,
        cpu: None,
        ram: None,
        protected: false,
        protected_cause: None,
        deallocated: (hyp == "AZURE").then_some(false),
        links: vec![
            Link::new(
                "edit",
                format!("{base}/virtualappliances/2/virtualmachines/{id}"),
            ),
            Link::new("virtualdatacenter", base).titled("prod"),
            Link::new("virtualappliance", format!("{base}/virtualappliances/2")).titled(vapp),
            Link::new(
                "hypervisortype",
                format!("http://127.0.0.1:9/api/config/hypervisortypes/{hyp}"),
            )
            .titled(hyp),
        ],
    }
}

fn names(step: &PlannedStep) -> Vec<&str> {
    step.targets.iter().map(|t| &*t.vm.name).collect()
}

pub(crate) fn lab() -> Vec<VirtualMachine> {
    vec![
        vm(1, "web-01", "web", VmState::On, "KVM"),
        vm(2, "web-02", "web", VmState::On, "KVM"),
        vm(3, "web-03", "web", VmState::Off, "KVM"),
        vm(4, "db-01", "db", VmState::On, "KVM"),
        vm(5, "db-02", "db", VmState::On, "KVM"),
        vm(6, "az-01", "az", VmState::On, "AZURE"),
    ]
}

#[test]
fn targets_keep_runbook_order_and_first_match_wins() {
    let rb = runbook(vec![step(
        "s",
        Action::Off,
        vec![sel_vm("db-02"), sel_vm("web-*"), sel_vm("db-*")],
    )]);
    let plan = build(&rb, &lab(), "http://x/api");
    assert_eq!(
        names(&plan.steps[0]),
        ["db-02", "web-01", "web-02", "web-03", "db-01"]
    );
}

#[test]
fn excluded_protected_and_state_skips_are_recorded_with_reasons() {
    let mut vms = lab();
    vms[1].protected = true;
    vms[1].protected_cause = Some("SAN tunnel".into());
    let mut s = step("s", Action::Shutdown, vec![sel_vm("web-*"), sel_vm("db-*")]);
    s.exclude = vec![sel_vm("db-02")];
    let plan = build(&runbook(vec![s]), &vms, "http://x/api");
    let reasons: Vec<String> = plan.steps[0]
        .targets
        .iter()
        .map(|t| t.disposition.reason())
        .collect();
    assert_eq!(
        reasons,
        [
            "ON → OFF (graceful)",
            "protected: SAN tunnel",
            "already OFF",
            "ON → OFF (graceful)",
            "excluded"
        ]
    );
    let c = plan.steps[0].counts();
    assert_eq!(
        (c.act, c.skip, c.refuse, c.excluded, c.protected),
        (2, 1, 0, 1, 1)
    );
    assert_eq!(plan.steps[0].live_count(), 3);
}

#[test]
fn allow_protected_acts_on_protected_vms() {
    let mut vms = lab();
    vms[0].protected = true;
    let mut s = step("s", Action::Off, vec![sel_vm("web-01")]);
    s.allow_protected = true;
    let plan = build(&runbook(vec![s]), &vms, "http://x/api");
    assert!(matches!(
        plan.steps[0].targets[0].disposition,
        Disposition::Act { .. }
    ));
}

#[test]
fn later_steps_see_the_states_earlier_steps_lead_to() {
    let off = step("down", Action::Off, vec![sel_vapp("web")]);
    let mut on = step("up", Action::On, vec![sel_vapp("web")]);
    on.after = vec![0];
    let plan = build(&runbook(vec![off, on]), &lab(), "http://x/api");
    let up = &plan.steps[1];
    assert!(
        up.targets
            .iter()
            .all(|t| matches!(t.disposition, Disposition::Act { .. })),
        "{:?}",
        up.targets
    );
    assert!(up.targets.iter().all(|t| t.state_expected == VmState::Off));
    assert_eq!(up.targets[0].state_seen, VmState::On);
}

#[test]
fn deallocate_is_refused_off_azure_and_expected_on_azure() {
    let s = step(
        "d",
        Action::Deallocate,
        vec![sel_vm("az-01"), sel_vm("web-01")],
    );
    let plan = build(&runbook(vec![s]), &lab(), "http://x/api");
    assert!(matches!(
        plan.steps[0].targets[0].disposition,
        Disposition::Act { .. }
    ));
    assert!(matches!(
        plan.steps[0].targets[1].disposition,
        Disposition::Refuse { code: None, .. }
    ));
}

#[test]
fn waves_split_the_acting_vms_and_recheck_the_rest_first() {
    let mut s = step("s", Action::Off, vec![sel_vm("*")]);
    s.waves = Some(Waves {
        sizes: vec![Amount::Percent(50)],
        pause: Duration::from_secs(2),
        gate: None,
    });
    s.exclude = vec![sel_vm("db-02")];
    let plan = build(&runbook(vec![s]), &lab(), "http://x/api");
    let st = &plan.steps[0];
    // acting: web-01, web-02, db-01, az-01 (4) -> 2 per wave; web-03 (already OFF) in wave 0.
    assert_eq!(
        names(st),
        ["web-01", "web-02", "web-03", "db-01", "db-02", "az-01"]
    );
    assert_eq!(st.waves, vec![vec![0, 1, 2], vec![3, 5]]);
    assert_eq!(st.wave_pause_ms, 2000);
}

#[test]
fn a_ramp_of_wave_sizes_starts_with_a_canary_and_repeats_its_last_size() {
    let ramp = |sizes: Vec<Amount>| Waves {
        sizes,
        pause: Duration::ZERO,
        gate: None,
    };
    let canary = ramp(vec![Amount::Count(1), Amount::Percent(50)]);
    assert_eq!(canary.chunks(10), [1, 5, 4]);
    let ansible = ramp(vec![
        Amount::Count(1),
        Amount::Percent(10),
        Amount::Percent(25),
    ]);
    assert_eq!(ansible.chunks(100), [1, 10, 25, 25, 25, 14]);
    assert_eq!(ramp(vec![Amount::Percent(25)]).chunks(10), [3, 3, 3, 1]);
    // A ramp longer than the VMs stops when every VM has its wave.
    assert_eq!(ansible.chunks(2), [1, 1]);
    assert!(ansible.chunks(0).is_empty());
    let mut s = step("s", Action::Off, vec![sel_vm("*")]);
    s.waves = Some(canary);
    let plan = build(&runbook(vec![s]), &lab(), "http://x/api");
    // acting: web-01, web-02, db-01, db-02, az-01 (5): the canary, then 3, then 1; web-03
    // (already OFF) is re-checked with the canary.
    assert_eq!(plan.steps[0].waves.len(), 3);
    assert_eq!(plan.steps[0].waves[0].len(), 2);
    assert_eq!(plan.steps[0].waves[1].len(), 3);
}

#[test]
fn without_waves_every_live_vm_is_in_one_wave_in_order() {
    let s = step("s", Action::On, vec![sel_vm("web-*")]);
    let plan = build(&runbook(vec![s]), &lab(), "http://x/api");
    assert_eq!(plan.steps[0].waves, vec![vec![0, 1, 2]]);
}

#[test]
fn concurrency_is_one_when_sequential_and_capped_by_the_run() {
    let mut a = step("a", Action::Off, vec![sel_vm("web-*")]);
    a.order = Order::Sequential;
    a.concurrency = NonZeroUsize::new(10);
    let mut b = step("b", Action::Off, vec![sel_vm("db-*")]);
    b.concurrency = NonZeroUsize::new(100);
    let mut rb = runbook(vec![a, b]);
    rb.limits.concurrency = NonZeroUsize::new(20);
    let plan = build(&rb, &lab(), "http://x/api");
    assert_eq!(plan.steps[0].concurrency, 1);
    assert_eq!(plan.steps[1].concurrency, 20);
    assert_eq!(plan.concurrency, 20);
}

#[test]
fn fallback_is_carried_into_the_plan() {
    let mut s = step("s", Action::Shutdown, vec![sel_vm("web-01")]);
    s.fallback = Some(Fallback {
        action: Action::Off,
        after: Duration::from_secs(90),
    });
    let plan = build(&runbook(vec![s]), &lab(), "http://x/api");
    assert_eq!(
        plan.steps[0].fallback,
        Some(PlannedFallback {
            action: Action::Off,
            after_ms: 90_000
        })
    );
    assert_eq!(
        plan.steps[0].targets[0].disposition.reason(),
        "ON → OFF (graceful, fallback hard off after 1m 30s)"
    );
}

#[test]
fn the_plan_carries_what_executing_it_needs() {
    let mut s = step("s", Action::Off, vec![sel_vm("web-*"), sel_vm("db-*")]);
    s.task_timeout = Duration::from_secs(42);
    s.max_failures = Some(Amount::Percent(50));
    s.on_failure = OnFailure::Continue;
    s.exclude = vec![sel_vm("db-02")];
    let mut rb = runbook(vec![s, step("t", Action::On, vec![sel_vm("az-*")])]);
    rb.limits.max_failures = Some(Amount::Count(2));
    rb.limits.deadline = Some(Duration::from_secs(600));
    let plan = build(&rb, &lab(), "http://x/api");
    let s = &plan.steps[0];
    assert_eq!(s.task_timeout(), Duration::from_secs(42));
    assert_eq!(s.on_failure, OnFailure::Continue);
    // 50% of the 4 live VMs (the excluded one does not count).
    assert_eq!(
        s.max_failures,
        Some(FailureLimit {
            amount: Amount::Percent(50),
            tolerated: 2
        })
    );
    assert_eq!(plan.steps[1].max_failures, None);
    assert_eq!(plan.steps[1].task_timeout(), Runbook::DEFAULT_TASK_TIMEOUT);
    assert_eq!(
        plan.max_failures,
        Some(FailureLimit {
            amount: Amount::Count(2),
            tolerated: 2
        })
    );
    assert_eq!(plan.deadline(), Some(Duration::from_secs(600)));
}

#[test]
fn step_order_respects_after_even_when_listed_backwards() {
    let mut a = step("a", Action::On, vec![]);
    a.after = vec![1];
    let b = step("b", Action::On, vec![]);
    let mut c = step("c", Action::On, vec![]);
    c.after = vec![0];
    assert_eq!(step_order(&runbook(vec![a, b, c])), vec![1, 0, 2]);
}

#[test]
fn plan_round_trips_through_json() {
    let mut s = step("s", Action::Shutdown, vec![sel_vm("*")]);
    s.max_failures = Some(Amount::Percent(10));
    s.fallback = Some(Fallback {
        action: Action::Off,
        after: Duration::from_secs(90),
    });
    let mut rb = runbook(vec![s]);
    rb.limits.max_failures = Some(Amount::Count(3));
    let plan = build(&rb, &lab(), "http://x/api");
    let text = serde_json::to_string(&plan).unwrap();
    let back: Plan = serde_json::from_str(&text).unwrap();
    assert_eq!(back, plan);
}
