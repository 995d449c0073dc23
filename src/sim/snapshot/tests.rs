use super::*;
use crate::abiquo::auth::Credentials;
use crate::abiquo::client::ClientConfig;
use crate::abiquo::model::{Link, VirtualMachine};
use crate::sim::{SimAction, SimConfig, SimHandle};

/// Every kind of entity and field a snapshot copies, and some it cannot.
const CLOUD: &str = r#"
[[vdc]]
name = "zeta"
id = 9
hypervisor = "VMX_04"
  [[vdc.vapp]]
  name = "empty"
  id = 30
  [[vdc.vapp]]
  name = "svc"
  id = 4
    [[vdc.vapp.vm]]
    name = "b-vm"
    id = 70
    label = "second"
    state = "LOCKED"
    guest_tools = false
    fail_actions = ["pause"]
    [[vdc.vapp.vm]]
    name = "a-vm"
    id = 12
    state = "PAUSED"
    protected = true
    protected_cause = "audit"
[[vdc]]
name = "azure"
id = 3
hypervisor = "AZURE"
  [[vdc.vapp]]
  name = "spark"
  id = 8
    [[vdc.vapp.vm]]
    name = "worker"
    id = 5
    state = "OFF"
    deallocated = true
    [[vdc.vapp.vm]]
    name = "master"
    id = 6
"#;

async fn snapshot_of(config: SimConfig) -> (Snapshot, SimHandle) {
    let sim = SimHandle::start(config).await.unwrap();
    let credentials = Credentials::Basic {
        user: "admin".into(),
        password: "xabiquo".into(),
    };
    let mut config = ClientConfig::new(sim.base_url(), "5.0", credentials);
    config.page_size = 2;
    let client = Client::new(config).unwrap();
    client.login().await.unwrap();
    let listings = take(&client).await.unwrap();
    (Snapshot::of(&listings), sim)
}

#[tokio::test]
async fn a_simulated_cloud_snapshots_to_its_inventory_by_id_without_guest_tools() {
    let config = SimConfig::from_inventory_str("cloud.toml", CLOUD).unwrap();
    let (snap, sim) = snapshot_of(config.clone()).await;
    assert_eq!(sim.stats().mutation_count(), 0);

    // What the API tells is kept, ordered by id; what it does not tell takes the defaults.
    let mut want = config.vdcs.clone();
    want.sort_by_key(|d| d.id);
    for vdc in &mut want {
        vdc.vapps.sort_by_key(|a| a.id);
        for vapp in &mut vdc.vapps {
            vapp.vms.sort_by_key(|v| v.id);
            for vm in &mut vapp.vms {
                vm.guest_tools = true;
                vm.fail_actions.clear();
                // The addresses the VM was served with are written out.
                vm.ips = Some(vm.nic_ips());
            }
        }
    }
    assert_eq!(snap.vdcs, want);
    assert_eq!(
        snap.vdcs[1].vapps[0].name, "svc",
        "empty vApps are kept, by id"
    );
    assert!(snap.vdcs[1].vapps[1].vms.is_empty());
    assert_eq!(snap.notes.len(), 1, "{:?}", snap.notes);
    assert!(snap.notes[0].starts_with("VM `b-vm` (id 70) was LOCKED"));

    let text = snap
        .render("http://cloud/api", "2026-01-02T03:04:05Z")
        .unwrap();
    let back = SimConfig::from_inventory_str("snap.toml", &text).unwrap();
    assert_eq!(back.vdcs, want, "{text}");
    assert!(text.starts_with(
        "# powerbook snapshot: 2 VDCs, 3 vApps, 4 VMs\n# source: http://cloud/api\n\
         # taken: 2026-01-02T03:04:05Z\n"
    ));
    assert!(text.contains("# guest_tools is left out"));
    assert!(text.contains("# note: VM `b-vm` (id 70) was LOCKED"));
    let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(body.iter().all(|l| !l.starts_with("guest_tools")), "{text}");
    assert!(
        body.iter().all(|l| !l.starts_with("fail_actions")),
        "{text}"
    );
    // The simulator's own settings are not the cloud's: none are written.
    assert_eq!(
        back.duration_of(SimAction::On),
        SimConfig::empty("x").task_duration
    );
}

/// A VM as a listing shows it, in vApp `vapp` of VDC `vdc`.
fn listed(id: u64, name: &str, state: &str, vdc: u64, vapp: u64, hypervisor: &str) -> ListedVm {
    let vdc_href = format!("http://c/api/cloud/virtualdatacenters/{vdc}");
    let vm = VirtualMachine {
        id,
        uuid: None,
        name: name.into(),
        label: None,
        description: None,
        state: VmState::from(state),
        id_state: None,
        cpu: None,
        ram: None,
        protected: false,
        protected_cause: None,
        deallocated: Some(true),
        links: vec![
            Link::new("virtualdatacenter", vdc_href.clone()),
            Link::new(
                "virtualappliance",
                format!("{vdc_href}/virtualappliances/{vapp}"),
            ),
            Link::new(
                "hypervisortype",
                format!("http://c/api/config/hypervisortypes/{hypervisor}"),
            ),
        ],
    };
    ListedVm::from(&vm)
}

fn vdc(
    id: u64,
    name: &str,
    hypervisor: Option<&str>,
    vapps: &[(u64, &str)],
) -> (VirtualDatacenter, Vec<VirtualAppliance>) {
    let vapps = vapps
        .iter()
        .map(|(id, name)| VirtualAppliance {
            id: *id,
            name: (*name).into(),
            state: None,
            links: Vec::new(),
        })
        .collect();
    let vdc = VirtualDatacenter {
        id,
        name: name.into(),
        hypervisor_type: hypervisor.map(str::to_owned),
        links: Vec::new(),
    };
    (vdc, vapps)
}

#[test]
fn what_the_format_cannot_hold_is_left_out_or_adapted_with_a_note_each() {
    let listings = Listings {
        vdcs: vec![
            vdc(1, "kvm", Some("KVM"), &[(10, "a")]),
            vdc(2, "unnamed-hypervisor", None, &[(20, "b")]),
            vdc(3, "bare", None, &[]),
            vdc(4, "cloudy", None, &[(40, "c")]),
        ],
        vms: vec![
            listed(100, "odd", "HIBERNATED", 1, 10, "KVM"),
            listed(101, "twin", "ON", 1, 10, "XEN_3"),
            listed(102, "twin", "ON", 2, 20, "HYPERV_301"),
            listed(103, "stray", "ON", 1, 99, "KVM"),
            listed(104, "hv", "OFF", 2, 20, "HYPERV_301"),
            listed(105, "spot", "OFF", 4, 40, "AZURE"),
        ],
    };
    let snap = Snapshot::of(&listings);
    let vm = |name: &str| {
        snap.vdcs
            .iter()
            .flat_map(|d| &d.vapps)
            .flat_map(|a| &a.vms)
            .find(|v| v.name == name)
    };
    assert_eq!(vm("odd").unwrap().state, VmState::Unknown);
    assert_eq!(vm("twin").unwrap().id, 101, "the lower id keeps the name");
    assert!(vm("stray").is_none());
    let deallocated: Vec<&str> = snap
        .vdcs
        .iter()
        .flat_map(|d| &d.vapps)
        .flat_map(|a| &a.vms)
        .filter(|v| v.deallocated)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        deallocated,
        ["spot"],
        "deallocated only in AZURE VDCs, which may be told by their VMs"
    );
    let hypervisors: Vec<&str> = snap.vdcs.iter().map(|d| d.hypervisor.as_str()).collect();
    assert_eq!(hypervisors, ["KVM", "HYPERV_301", "KVM", "AZURE"]);
    let notes = snap.notes.join("\n");
    for needle in [
        "VM `odd` (id 100) was in state `HIBERNATED`, which the simulator does not know: written UNKNOWN",
        "VM `odd` (id 100) is deallocated but its VDC is not an AZURE one",
        "VM `twin` (id 102) left out: VM id 101 has the same name",
        "VM `stray` (id 103) left out: its vApp was not in the vApp listings",
        "VDC `kvm` (id 1) is KVM but some of its VMs name XEN_3",
        "VDC `bare` (id 3) has no hypervisorType and no VM that names one: written KVM",
    ] {
        assert!(notes.contains(needle), "no {needle:?} in\n{notes}");
    }
    let text = snap.render("http://c/api", "t").unwrap();
    assert!(
        SimConfig::from_inventory_str("s.toml", &text).is_ok(),
        "{text}"
    );
}

#[test]
fn the_source_line_names_no_credentials_query_or_fragment() {
    assert_eq!(
        source_of("https://ops:hunter2@cloud.example.com:8443/api/?token=abc#x"),
        "https://cloud.example.com:8443/api"
    );
    assert_eq!(
        source_of("http://127.0.0.1:9000/api"),
        "http://127.0.0.1:9000/api"
    );
    assert_eq!(source_of("not a url"), "(an endpoint that is not a URL)");
}
