//! The simulator over real HTTP on loopback.

use powerbook::abiquo::model::{
    AcceptedRequest, Collection, Task, TaskState, VirtualMachine, VmState,
};
use powerbook::sim::{SimConfig, SimHandle, SimVapp, SimVdc, SimVmSpec};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const ACCEPTED: &str = "application/vnd.abiquo.acceptedrequest+json; version=5.0";
const STATE_CT: &str = "application/vnd.abiquo.virtualmachinestate+json; version=5.0";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The lab with tasks of ~15 ms.
fn fast_lab() -> SimConfig {
    let mut c = SimConfig::lab();
    c.speed = 100.0;
    c
}

fn href_of(sim: &SimHandle, name: &str) -> String {
    sim.vm_states()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no VM {name}"))
        .href
}

async fn put_state(c: &reqwest::Client, vm: &str, body: &str) -> reqwest::Response {
    c.put(format!("{vm}/state"))
        .basic_auth("admin", Some("xabiquo"))
        .header("Accept", ACCEPTED)
        .header("Content-Type", STATE_CT)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn get_json(c: &reqwest::Client, url: &str, accept: &str) -> (StatusCode, Value) {
    let r = c
        .get(url)
        .basic_auth("admin", Some("xabiquo"))
        .header("Accept", accept)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls a task until it is terminal (bounded).
async fn wait_task(c: &reqwest::Client, href: &str) -> Task {
    for _ in 0..400 {
        let (status, body) =
            get_json(c, href, "application/vnd.abiquo.task+json; version=5.0").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let task: Task = serde_json::from_value(body).unwrap();
        if task.state.is_terminal() {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("task {href} never finished");
}

#[tokio::test]
async fn seed_curl_reset_example_gets_202_and_acceptedrequest_shape() {
    let sim = SimHandle::start(fast_lab()).await.unwrap();
    let c = client();
    let url = format!(
        "{}/cloud/virtualdatacenters/2/virtualappliances/1/virtualmachines/47/action/reset",
        sim.base_url()
    );
    let r = c
        .post(&url)
        .header(
            "Accept",
            "application/vnd.abiquo.acceptedrequest+json; version=5.0",
        )
        .basic_auth("user", Some("password"))
        .send()
        .await
        .unwrap();
    // The seed's user:password are placeholders: the lab's account is admin/xabiquo.
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .post(&url)
        .header(
            "Accept",
            "application/vnd.abiquo.acceptedrequest+json; version=5.0",
        )
        .basic_auth("admin", Some("xabiquo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.abiquo.acceptedrequest+json; version=5.0"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["message"],
        "You can keep track of the progress in the link"
    );
    let links = body["links"].as_array().unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["rel"], "status");
    assert_eq!(links[0]["title"], "status");
    assert_eq!(links[0]["type"], "application/vnd.abiquo.task+json");
    let href = links[0]["href"].as_str().unwrap();
    let prefix = format!(
        "http://127.0.0.1:{}/api/cloud/virtualdatacenters/2/virtualappliances/1/virtualmachines/47/tasks/",
        sim.addr().port()
    );
    assert!(href.starts_with(&prefix), "{href}");
    let task_id = &href[prefix.len()..];
    assert_eq!(task_id.len(), 36, "a UUID: {task_id}");
    let parsed: AcceptedRequest = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(parsed.status_href(), Some(href));

    let task = wait_task(&c, href).await;
    assert_eq!(task.task_type.as_str(), "RESET");
    assert_eq!(task.state, TaskState::FinishedSuccessfully);
    let stats = sim.stats();
    let muts = &stats.mutations["web-01"];
    assert_eq!(muts.len(), 1);
    assert_eq!(
        (muts[0].action.as_str(), muts[0].task_type.as_str()),
        ("reset", "RESET")
    );
    assert_eq!(muts[0].task_id, task_id);
    sim.shutdown().await;
}

#[tokio::test]
async fn power_off_locks_the_vm_then_finishes_off_and_lists_show_it() {
    let mut cfg = SimConfig::lab();
    cfg.speed = 10.0; // ~150 ms tasks: LOCKED is observable
    let sim = SimHandle::start(cfg).await.unwrap();
    let c = client();
    let vm = href_of(&sim, "api-01");
    let r = put_state(&c, &vm, r#"{"state":"OFF"}"#).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let accepted: AcceptedRequest = r.json().await.unwrap();
    let (_, body) = get_json(
        &c,
        &vm,
        "application/vnd.abiquo.virtualmachine+json; version=5.0",
    )
    .await;
    let got: VirtualMachine = serde_json::from_value(body).unwrap();
    assert_eq!(got.state, VmState::Locked);
    assert_eq!(got.link("state").unwrap().title.as_deref(), Some("LOCKED"));
    let task = wait_task(&c, accepted.status_href().unwrap()).await;
    assert_eq!(task.task_type.as_str(), "POWER_OFF");
    assert_eq!(task.state, TaskState::FinishedSuccessfully);
    let (status, body) = get_json(
        &c,
        &format!("{}/cloud/virtualmachines?has=api-01", sim.base_url()),
        "application/vnd.abiquo.virtualmachines+json; version=5.0",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let list: Collection<VirtualMachine> = serde_json::from_value(body).unwrap();
    assert_eq!(list.total_size, Some(1));
    assert_eq!(list.collection[0].state, VmState::Off);
    assert_eq!(list.collection[0].href(), Some(vm.as_str()));
    sim.shutdown().await;
}

const VMS: &str = "application/vnd.abiquo.virtualmachines+json; version=5.0";
const TASK: &str = "application/vnd.abiquo.task+json; version=5.0";
const TASKS: &str = "application/vnd.abiquo.tasks+json; version=5.0";

/// One VDC with one vApp holding `vms`; ~10 ms tasks.
fn one_vapp(hypervisor: &str, vms: Vec<SimVmSpec>) -> SimConfig {
    let mut c = SimConfig::empty("test");
    c.speed = 100.0;
    c.task_jitter = Duration::ZERO;
    c.vdcs.push(SimVdc {
        id: 1,
        name: "vdc".into(),
        hypervisor: hypervisor.into(),
        vapps: vec![SimVapp {
            id: 1,
            name: "vapp".into(),
            vms,
        }],
    });
    c
}

async fn reset(c: &reqwest::Client, vm: &str) -> reqwest::Response {
    c.post(format!("{vm}/action/reset"))
        .basic_auth("admin", Some("xabiquo"))
        .header("Accept", ACCEPTED)
        .send()
        .await
        .unwrap()
}

async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .split(';')
            .next(),
        Some("application/vnd.abiquo.errors+json"),
        "errors media type"
    );
    let body: Value = r.json().await.unwrap();
    let code = body["collection"][0]["code"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        body["collection"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    (status, code)
}

async fn wait_vm_state(sim: &SimHandle, name: &str, want: VmState) {
    for _ in 0..500 {
        if sim
            .vm_states()
            .iter()
            .any(|v| v.name == name && v.state == want)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{name} never reached {want}");
}

fn epoch_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn failed_graceful_shutdown_task_matches_the_seed_shape() {
    let sim = SimHandle::start(fast_lab()).await.unwrap();
    let c = client();
    let vm = href_of(&sim, "web-legacy");
    let r = put_state(&c, &vm, r#"{"state":"OFF","gracefulShutdown":true}"#).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let accepted: AcceptedRequest = r.json().await.unwrap();
    let href = accepted.status_href().unwrap().to_owned();
    wait_task(&c, &href).await;
    let (status, t) = get_json(&c, &href, TASK).await;
    assert_eq!(status, StatusCode::OK);

    let keys: BTreeSet<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "creationTimestamp",
            "jobs",
            "links",
            "ownerId",
            "state",
            "taskId",
            "timestamp",
            "type",
            "userId"
        ])
    );
    let task_id = t["taskId"].as_str().unwrap();
    assert!(href.ends_with(&format!("/tasks/{task_id}")));
    assert_eq!(t["type"], "SHUTDOWN");
    assert_eq!(t["state"], "FINISHED_UNSUCCESSFULLY");
    assert_eq!(t["ownerId"], "17883", "ownerId is the VM id as a string");
    assert_eq!(t["userId"], "1", "userId is a string");
    let created = t["creationTimestamp"]
        .as_i64()
        .expect("epoch seconds, an integer");
    let updated = t["timestamp"].as_i64().expect("epoch seconds, an integer");
    assert!(
        (created - epoch_now()).abs() < 60,
        "epoch seconds, not ms: {created}"
    );
    assert!(updated >= created);

    assert_eq!(t["jobs"]["links"], serde_json::json!([]));
    let jobs = t["jobs"]["collection"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    let job_keys: BTreeSet<&str> = job
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        job_keys,
        BTreeSet::from([
            "creationTimestamp",
            "description",
            "id",
            "links",
            "parentTaskId",
            "rollbackState",
            "state",
            "timestamp",
            "type"
        ])
    );
    assert!(
        job["id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{task_id}."))
    );
    assert_eq!(job["parentTaskId"], task_id);
    assert_eq!(job["type"], "SHUTDOWN");
    assert_eq!(
        job["description"],
        "Shutdown task's shutdown on virtual machine with id 17883"
    );
    assert_eq!(job["state"], "FAILED");
    assert_eq!(job["rollbackState"], "ROLLBACK_DONE");
    assert!(job["creationTimestamp"].is_i64() && job["timestamp"].is_i64());
    assert_eq!(job["links"], serde_json::json!([]));

    let rel = |r: &str| {
        t["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rel"] == r)
            .unwrap_or_else(|| panic!("no {r} link"))
            .clone()
    };
    assert_eq!(rel("self")["href"], href.as_str());
    assert_eq!(rel("parent")["href"], format!("{vm}/tasks"));
    assert_eq!(rel("user")["type"], "application/vnd.abiquo.user+json");
    assert_eq!(rel("virtualmachine")["href"], vm.as_str());
    assert_eq!(rel("virtualmachine")["title"], "web-legacy");
    assert_eq!(rel("acknowledge")["href"], format!("{href}/action/ack"));

    // Rolled back: the VM is ON again, and the model parses the task as a failure.
    wait_vm_state(&sim, "web-legacy", VmState::On).await;
    let task: Task = serde_json::from_value(t.clone()).unwrap();
    assert_eq!(task.failed_jobs().count(), 1);
    let rec = &sim.stats().mutations["web-legacy"][0];
    assert_eq!(rec.action, "OFF graceful");
    assert_eq!(rec.outcome.as_deref(), Some("FINISHED_UNSUCCESSFULLY"));
    sim.shutdown().await;
}

#[tokio::test]
async fn successful_task_has_done_job_and_no_acknowledge_link() {
    let sim = SimHandle::start(fast_lab()).await.unwrap();
    let c = client();
    let vm = href_of(&sim, "web-02");
    let r = put_state(&c, &vm, r#"{"state":"OFF","gracefulShutdown":true}"#).await;
    let accepted: AcceptedRequest = r.json().await.unwrap();
    let task = wait_task(&c, accepted.status_href().unwrap()).await;
    assert_eq!(task.task_type.as_str(), "SHUTDOWN");
    assert_eq!(task.state, TaskState::FinishedSuccessfully);
    let job = &task.jobs.collection[0];
    assert_eq!(job.state.as_str(), "DONE");
    assert_eq!(job.rollback_state.as_str(), "UNKNOWN");
    assert!(task.link("acknowledge").is_none());
    wait_vm_state(&sim, "web-02", VmState::Off).await;
}

/// (initial state, request, expected answer: Ok(task type) or Err(status + code)).
type Cell = (
    &'static str,
    &'static str,
    Result<&'static str, (u16, &'static str)>,
);

#[tokio::test]
async fn every_transition_table_cell_answers_as_the_reference() {
    const CONFLICT: u16 = 409;
    let vm4 = Err((CONFLICT, "VM-4"));
    let vm11 = Err((CONFLICT, "VM-11"));
    let vm26 = Err((CONFLICT, "VM-26"));
    let mut cells: Vec<Cell> = vec![
        ("CONFIGURED", "ON", Ok("POWER_ON")),
        ("CONFIGURED", "OFF", vm4),
        ("CONFIGURED", "PAUSED", vm4),
        ("CONFIGURED", "reset", vm26),
        ("ON", "ON", vm4),
        ("ON", "OFF", Ok("POWER_OFF")),
        ("ON", "PAUSED", Ok("PAUSE")),
        ("ON", "reset", Ok("RESET")),
        ("PAUSED", "ON", Ok("RESUME")),
        ("PAUSED", "OFF", vm4),
        ("PAUSED", "PAUSED", vm4),
        ("PAUSED", "reset", vm26),
        ("OFF", "ON", Ok("POWER_ON")),
        ("OFF", "OFF", vm4),
        ("OFF", "PAUSED", vm4),
        ("OFF", "reset", vm26),
    ];
    for state in ["NOT_ALLOCATED", "ALLOCATED", "LOCKED", "UNKNOWN"] {
        for req in ["ON", "OFF", "PAUSED", "reset"] {
            cells.push((state, req, vm11));
        }
    }
    let vms = cells
        .iter()
        .enumerate()
        .map(|(i, (state, req, _))| {
            SimVmSpec::new(
                i as u64 + 1,
                format!("{state}-{req}"),
                VmState::from(*state),
            )
        })
        .collect();
    let sim = SimHandle::start(one_vapp("KVM", vms)).await.unwrap();
    let c = client();
    let mut accepted = Vec::new();
    for (state, req, expected) in &cells {
        let name = format!("{state}-{req}");
        let vm = href_of(&sim, &name);
        let r = if *req == "reset" {
            reset(&c, &vm).await
        } else {
            put_state(&c, &vm, &format!(r#"{{"state":"{req}"}}"#)).await
        };
        match expected {
            Ok(task_type) => {
                assert_eq!(r.status(), StatusCode::ACCEPTED, "{name}");
                let a: AcceptedRequest = r.json().await.unwrap();
                accepted.push((name, a.status_href().unwrap().to_owned(), *task_type, *req));
            }
            Err((status, code)) => {
                assert_eq!(error_code(r).await, (*status, (*code).to_owned()), "{name}");
            }
        }
    }
    for (name, href, task_type, req) in accepted {
        let task = wait_task(&c, &href).await;
        assert_eq!(task.task_type.as_str(), task_type, "{name}");
        assert_eq!(task.state, TaskState::FinishedSuccessfully, "{name}");
        let want = if req == "reset" { "ON" } else { req };
        wait_vm_state(&sim, &name, VmState::from(want)).await;
    }
    let stats = sim.stats();
    assert_eq!(stats.rejected["409 VM-4"], 7);
    assert_eq!(stats.rejected["409 VM-11"], 16);
    assert_eq!(stats.rejected["409 VM-26"], 3);
    assert_eq!(stats.mutation_count(), 6);
}

#[tokio::test]
async fn bad_value_missing_vm_protected_forbidden_and_busy_vm_are_refused() {
    let mut protected = SimVmSpec::new(2, "guarded", VmState::On);
    protected.protected = true;
    protected.protected_cause = Some("SAN tunnel".into());
    let mut forbidden = SimVmSpec::new(3, "not-mine", VmState::On);
    forbidden.forbidden = true;
    let mut cfg = one_vapp(
        "KVM",
        vec![
            SimVmSpec::new(1, "plain", VmState::On),
            protected,
            forbidden,
        ],
    );
    cfg.speed = 2.0; // ~750 ms tasks: the VM stays LOCKED while we poke it
    let sim = SimHandle::start(cfg).await.unwrap();
    let c = client();
    let plain = href_of(&sim, "plain");

    for bad in [
        r#"{"state":"LOCKED"}"#,
        r#"{"state":"CONFIGURED"}"#,
        r#"{"state":"SLEEPING"}"#,
    ] {
        assert_eq!(
            error_code(put_state(&c, &plain, bad).await).await,
            (400, "VM-10".into())
        );
    }
    let missing = plain.replace("/virtualmachines/1", "/virtualmachines/999");
    assert_eq!(
        error_code(put_state(&c, &missing, r#"{"state":"OFF"}"#).await).await,
        (404, "VM-1".into())
    );
    assert_eq!(
        error_code(reset(&c, &missing).await).await,
        (404, "VM-1".into())
    );
    let wrong_vapp = plain.replace("/virtualappliances/1/", "/virtualappliances/7/");
    assert_eq!(
        error_code(reset(&c, &wrong_vapp).await).await,
        (404, "VM-1".into())
    );
    let (status, body) = get_json(&c, &missing, "application/vnd.abiquo.virtualmachine+json").await;
    assert_eq!(
        (status.as_u16(), body["collection"][0]["code"].as_str()),
        (404, Some("VM-1"))
    );

    let guarded = href_of(&sim, "guarded");
    assert_eq!(
        error_code(put_state(&c, &guarded, r#"{"state":"OFF"}"#).await).await,
        (409, "VM-120".into())
    );
    assert_eq!(
        error_code(reset(&c, &guarded).await).await,
        (409, "VM-120".into())
    );
    let (_, vm) = get_json(&c, &guarded, "application/vnd.abiquo.virtualmachine+json").await;
    assert_eq!(
        (vm["protected"].as_bool(), vm["protectedCause"].as_str()),
        (Some(true), Some("SAN tunnel"))
    );

    let not_mine = href_of(&sim, "not-mine");
    assert_eq!(
        error_code(put_state(&c, &not_mine, r#"{"state":"OFF"}"#).await).await,
        (403, "GEN-4".into())
    );

    // Busy: the first request locks the VM, the second gets VM-11 (the default locked code).
    assert_eq!(
        put_state(&c, &plain, r#"{"state":"OFF"}"#).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        error_code(put_state(&c, &plain, r#"{"state":"ON"}"#).await).await,
        (409, "VM-11".into())
    );
    assert_eq!(
        error_code(reset(&c, &plain).await).await,
        (409, "VM-11".into())
    );

    let r = c
        .put(format!("{plain}/state"))
        .basic_auth("admin", Some("xabiquo"))
        .header("Accept", ACCEPTED)
        .header("Content-Type", STATE_CT)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "400-BAD-REQUEST".into()));
    let stats = sim.stats();
    assert_eq!(stats.rejected["400 VM-10"], 3);
    assert_eq!(stats.rejected["403 GEN-4"], 1);
    assert_eq!(stats.mutation_count(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn locked_code_setting_changes_the_busy_answer_over_http() {
    let mut cfg = one_vapp("KVM", vec![SimVmSpec::new(1, "a", VmState::Locked)]);
    cfg.locked_code = powerbook::sim::LockedCode::Vm2;
    let sim = SimHandle::start(cfg).await.unwrap();
    let vm = href_of(&sim, "a");
    assert_eq!(
        error_code(reset(&client(), &vm).await).await,
        (409, "VM-2".into())
    );
}

#[tokio::test]
async fn vm_objects_carry_the_reference_links_with_absolute_hrefs() {
    let sim = SimHandle::start(fast_lab()).await.unwrap();
    let c = client();
    let vm_href = href_of(&sim, "web-01");
    let origin = format!("http://127.0.0.1:{}/api", sim.addr().port());
    assert_eq!(
        vm_href,
        format!("{origin}/cloud/virtualdatacenters/2/virtualappliances/1/virtualmachines/47")
    );
    let (status, vm) = get_json(
        &c,
        &vm_href,
        "application/vnd.abiquo.virtualmachine+json; version=6.1",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (vm["id"].as_u64(), vm["name"].as_str(), vm["state"].as_str()),
        (Some(47), Some("web-01"), Some("ON"))
    );
    assert_eq!(vm["idState"], 4);
    assert_eq!(vm["label"], "storefront web 1");
    assert_eq!(vm["protected"], false);
    assert!(
        vm.get("deallocated").is_none(),
        "non-Azure VMs carry no deallocated"
    );
    let link = |rel: &str| {
        vm["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rel"] == rel)
            .unwrap_or_else(|| panic!("no {rel} link"))
            .clone()
    };
    assert_eq!(link("edit")["href"], vm_href.as_str());
    assert_eq!(link("state")["title"], "ON");
    assert_eq!(link("state")["href"], format!("{vm_href}/state"));
    assert_eq!(link("reset")["href"], format!("{vm_href}/action/reset"));
    assert_eq!(link("tasks")["href"], format!("{vm_href}/tasks"));
    assert_eq!(link("virtualappliance")["title"], "web-frontend");
    assert_eq!(link("virtualdatacenter")["title"], "prod");
    assert_eq!(
        link("virtualdatacenter")["href"],
        format!("{origin}/cloud/virtualdatacenters/2")
    );
    assert_eq!(
        link("hypervisortype")["href"],
        format!("{origin}/config/hypervisortypes/KVM")
    );
    assert_eq!(link("hypervisortype")["title"], "KVM");
    let parsed: VirtualMachine = serde_json::from_value(vm.clone()).unwrap();
    assert_eq!(
        (parsed.hypervisor(), parsed.link_title("virtualappliance")),
        (Some("KVM"), Some("web-frontend"))
    );

    let (_, state) = get_json(
        &c,
        &format!("{vm_href}/state"),
        "application/vnd.abiquo.virtualmachinestate+json",
    )
    .await;
    assert_eq!(state["state"], "ON");

    // /_sim/vms is the same view as SimHandle::vm_states.
    let dump: Vec<powerbook::sim::SimVm> = c
        .get(format!("{origin}/../_sim/vms").replace("/api/../", "/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dump, sim.vm_states());
    let azure = dump.iter().find(|v| v.name == "spark-master").unwrap();
    assert_eq!(
        (azure.hypervisor.as_str(), azure.deallocated),
        ("AZURE", Some(false))
    );
}

#[tokio::test]
async fn azure_graceful_stops_and_hard_off_deallocates() {
    let sim = SimHandle::start(fast_lab()).await.unwrap();
    let c = client();
    let master = href_of(&sim, "spark-master");
    let worker = href_of(&sim, "spark-worker-1");
    let a: AcceptedRequest = put_state(&c, &master, r#"{"state":"OFF","gracefulShutdown":true}"#)
        .await
        .json()
        .await
        .unwrap();
    let b: AcceptedRequest = put_state(&c, &worker, r#"{"state":"OFF"}"#)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        wait_task(&c, a.status_href().unwrap())
            .await
            .task_type
            .as_str(),
        "SHUTDOWN"
    );
    assert_eq!(
        wait_task(&c, b.status_href().unwrap())
            .await
            .task_type
            .as_str(),
        "POWER_OFF"
    );
    let (_, m) = get_json(&c, &master, "application/vnd.abiquo.virtualmachine+json").await;
    let (_, w) = get_json(&c, &worker, "application/vnd.abiquo.virtualmachine+json").await;
    assert_eq!(
        (m["state"].as_str(), m["deallocated"].as_bool()),
        (Some("OFF"), Some(false))
    );
    assert_eq!(
        (w["state"].as_str(), w["deallocated"].as_bool()),
        (Some("OFF"), Some(true))
    );
    let on: AcceptedRequest = put_state(&c, &worker, r#"{"state":"ON"}"#)
        .await
        .json()
        .await
        .unwrap();
    wait_task(&c, on.status_href().unwrap()).await;
    let (_, w) = get_json(&c, &worker, "application/vnd.abiquo.virtualmachine+json").await;
    assert_eq!(
        (w["state"].as_str(), w["deallocated"].as_bool()),
        (Some("ON"), Some(false))
    );
}

async fn all_names(c: &reqwest::Client, first: &str) -> (Vec<String>, u64, usize) {
    let mut url = first.to_owned();
    let mut names = Vec::new();
    let mut pages = 0;
    let total;
    loop {
        let (status, body) = get_json(c, &url, VMS).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page: Collection<VirtualMachine> = serde_json::from_value(body).unwrap();
        pages += 1;
        names.extend(page.collection.iter().map(|v| v.name.clone()));
        match page.next_href() {
            Some(next) => url = next.to_owned(),
            None => {
                total = page.total_size.unwrap();
                break;
            }
        }
        assert!(pages < 100);
    }
    (names, total, pages)
}

#[tokio::test]
async fn listings_page_with_links_total_size_and_filters() {
    let sim = SimHandle::start(fast_lab()).await.unwrap();
    let c = client();
    let base = sim.base_url();
    let mut expected: Vec<String> = sim.vm_states().into_iter().map(|v| v.name).collect();
    expected.sort();

    let (names, total, pages) =
        all_names(&c, &format!("{base}/cloud/virtualmachines?limit=5")).await;
    assert_eq!(names, expected, "next links walk every VM once, by name");
    assert_eq!(total, expected.len() as u64);
    assert_eq!(pages, expected.len().div_ceil(5));

    let (status, body) = get_json(
        &c,
        &format!("{base}/cloud/virtualmachines?startwith=5&limit=5"),
        VMS,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let page: Collection<VirtualMachine> = serde_json::from_value(body).unwrap();
    let got: Vec<_> = page.collection.iter().map(|v| v.name.clone()).collect();
    assert_eq!(got, expected[5..10]);
    let link = |rel: &str| {
        page.links
            .iter()
            .find(|l| l.rel == rel)
            .map(|l| l.href.clone())
    };
    assert_eq!(
        link("first").unwrap(),
        format!("{base}/cloud/virtualmachines?limit=5&by=name&asc=true")
    );
    assert_eq!(
        link("next").unwrap(),
        format!("{base}/cloud/virtualmachines?startwith=10&limit=5&by=name&asc=true")
    );
    let last_start = (expected.len() - 1) / 5 * 5;
    assert_eq!(
        link("last").unwrap(),
        format!("{base}/cloud/virtualmachines?startwith={last_start}&limit=5&by=name&asc=true")
    );

    // Default limit 25; limit=0 = everything.
    let (_, body) = get_json(&c, &format!("{base}/cloud/virtualmachines"), VMS).await;
    assert_eq!(
        body["collection"].as_array().unwrap().len(),
        25.min(expected.len())
    );
    let (_, body) = get_json(&c, &format!("{base}/cloud/virtualmachines?limit=0"), VMS).await;
    assert_eq!(body["collection"].as_array().unwrap().len(), expected.len());

    // by / asc
    let (names, _, _) = all_names(
        &c,
        &format!("{base}/cloud/virtualmachines?limit=7&asc=false"),
    )
    .await;
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(names, reversed);
    let (_, body) = get_json(
        &c,
        &format!("{base}/cloud/virtualmachines?by=id&limit=0"),
        VMS,
    )
    .await;
    let ids: Vec<u64> = body["collection"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // has (name or label, case-insensitive) and vmlabel (exact label).
    let (names, total, _) = all_names(&c, &format!("{base}/cloud/virtualmachines?has=SPARK")).await;
    assert_eq!((names.len(), total), (4, 4));
    let (names, _, _) = all_names(
        &c,
        &format!("{base}/cloud/virtualmachines?vmlabel=storefront%20web%202"),
    )
    .await;
    assert_eq!(names, ["web-02"]);
    let (names, _, _) = all_names(
        &c,
        &format!("{base}/cloud/virtualmachines?vmlabel=storefront"),
    )
    .await;
    assert!(names.is_empty());

    // VDC- and vApp-scoped listings.
    let (names, _, _) = all_names(
        &c,
        &format!("{base}/cloud/virtualdatacenters/2/virtualappliances/1/virtualmachines?limit=2"),
    )
    .await;
    assert_eq!(
        names,
        ["web-01", "web-02", "web-03", "web-04", "web-legacy"]
    );
    let (names, total, _) = all_names(
        &c,
        &format!("{base}/cloud/virtualdatacenters/2/action/virtualmachines?limit=4"),
    )
    .await;
    assert_eq!(
        total as usize,
        sim.vm_states().iter().filter(|v| v.vdc == "prod").count()
    );
    assert!(names.contains(&"db-primary".to_owned()) && !names.contains(&"vpn-gateway".to_owned()));

    // VDCs and vApps list too, and the lists' hrefs lead to the same VMs.
    let (_, vdcs) = get_json(
        &c,
        &format!("{base}/cloud/virtualdatacenters"),
        "application/vnd.abiquo.virtualdatacenters+json",
    )
    .await;
    assert_eq!(vdcs["totalSize"], 3);
    let (_, vapps) = get_json(
        &c,
        &format!("{base}/cloud/virtualdatacenters/2/virtualappliances?limit=2"),
        "application/vnd.abiquo.virtualappliances+json",
    )
    .await;
    assert_eq!(vapps["totalSize"], 5);
    assert_eq!(vapps["collection"].as_array().unwrap().len(), 2);
    assert!(
        vapps["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["rel"] == "next")
    );

    // Bad paging parameters and unknown scopes are refused.
    let r = c
        .get(format!("{base}/cloud/virtualmachines?limit=lots"))
        .basic_auth("admin", Some("xabiquo"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "400-BAD-REQUEST".into()));
    let r = c
        .get(format!(
            "{base}/cloud/virtualdatacenters/99/action/virtualmachines"
        ))
        .basic_auth("admin", Some("xabiquo"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, 404);
}

#[tokio::test]
async fn authentication_basic_token_bearer_and_refusals() {
    let sim = SimHandle::start(fast_lab()).await.unwrap();
    let c = client();
    let url = format!("{}/cloud/virtualmachines?limit=1", sim.base_url());

    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"Abiquo API\""
    );
    assert_eq!(error_code(r).await, (401, "401-UNAUTHORIZED".into()));
    let r = c
        .get(&url)
        .basic_auth("admin", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "GEN-5".into()));
    let r = c
        .get(&url)
        .header("Authorization", "Token nope")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "GEN-5".into()));

    let r = c
        .get(format!("{}/login", sim.base_url()))
        .header("Accept", "application/vnd.abiquo.user+json; version=5.0")
        .basic_auth("admin", Some("xabiquo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.abiquo.user+json; version=5.0"
    );
    let token = r.headers()["x-abiquo-token"].to_str().unwrap().to_owned();
    assert!(!token.is_empty());
    let user: powerbook::abiquo::model::User = r.json().await.unwrap();
    assert_eq!(user.nick, "admin");
    assert!(user.links.iter().any(|l| l.rel == "virtualmachines"));

    for scheme in ["Token", "Bearer"] {
        let r = c
            .get(&url)
            .header("Authorization", format!("{scheme} {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{scheme}");
    }
    // /version needs no credentials and answers text.
    let r = c
        .get(format!("{}/version", sim.base_url()))
        .header("Accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().await.unwrap(), "6.1.0");

    let stats = sim.stats();
    assert_eq!(stats.rejected["401 GEN-5"], 2);
    assert_eq!(stats.rejected["401 401-UNAUTHORIZED"], 1);
}

#[tokio::test]
async fn media_type_versions_are_negotiated() {
    let sim = SimHandle::start(fast_lab()).await.unwrap();
    let c = client();
    let list = format!("{}/cloud/virtualmachines?limit=1", sim.base_url());
    let get = |accept: &'static str| {
        c.get(&list)
            .basic_auth("admin", Some("xabiquo"))
            .header("Accept", accept)
            .send()
    };
    let r = get("application/vnd.abiquo.virtualmachines+json")
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.abiquo.virtualmachines+json; version=6.1",
        "missing version = latest"
    );
    let r = get("application/vnd.abiquo.virtualmachines+json;version=3.10")
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.abiquo.virtualmachines+json; version=3.10"
    );
    let r = get("application/vnd.abiquo.virtualmachines+json; version=9.9")
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (406, "406-NOT-ACCEPTABLE".into()));
    let r = get("application/vnd.abiquo.task+json").await.unwrap();
    assert_eq!(error_code(r).await.0, 406);

    let vm = href_of(&sim, "web-02");
    let r = c
        .put(format!("{vm}/state"))
        .basic_auth("admin", Some("xabiquo"))
        .header("Accept", ACCEPTED)
        .header(
            "Content-Type",
            "application/vnd.abiquo.virtualmachinestate+json; version=9.9",
        )
        .body(r#"{"state":"OFF"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (415, "415-UNSUPPORTED-MEDIA-TYPE-VERSION".into())
    );
    let r = c
        .put(format!("{vm}/state"))
        .basic_auth("admin", Some("xabiquo"))
        .header("Accept", ACCEPTED)
        .header("Content-Type", "text/plain")
        .body(r#"{"state":"OFF"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (415, "415-UNSUPPORTED-MEDIA-TYPE".into())
    );
    assert!(
        sim.stats().mutations.is_empty(),
        "refused requests change nothing"
    );

    // A 3.10 client gets the 3.x acceptedrequest: `entity`, and a bare status link.
    let r = c
        .put(format!("{vm}/state"))
        .basic_auth("admin", Some("xabiquo"))
        .header(
            "Accept",
            "application/vnd.abiquo.acceptedrequest+json; version=3.10",
        )
        .header(
            "Content-Type",
            "application/vnd.abiquo.virtualmachinestate+json; version=3.10",
        )
        .body(r#"{"state":"OFF","links":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.abiquo.acceptedrequest+json; version=3.10"
    );
    let body: Value = r.json().await.unwrap();
    assert!(body.get("message").is_none());
    assert_eq!(
        body["entity"],
        "You can keep track of the progress in the link"
    );
    assert!(body["links"][0].get("type").is_none());
    let stats = sim.stats();
    assert_eq!(stats.rejected["406 406-NOT-ACCEPTABLE"], 2);
    assert_eq!(stats.rejected["415 415-UNSUPPORTED-MEDIA-TYPE-VERSION"], 1);
}

#[tokio::test]
async fn ack_of_a_failed_task_answers_204_and_removes_the_link() {
    let mut cfg = fast_lab();
    cfg.ack_sets_ack_error = true;
    let sim = SimHandle::start(cfg).await.unwrap();
    let c = client();
    let vm = href_of(&sim, "batch-worker-2");
    let a: AcceptedRequest = put_state(&c, &vm, r#"{"state":"PAUSED"}"#)
        .await
        .json()
        .await
        .unwrap();
    let task = wait_task(&c, a.status_href().unwrap()).await;
    assert_eq!(
        (task.task_type.as_str(), task.state.clone()),
        ("PAUSE", TaskState::FinishedUnsuccessfully)
    );
    let ack = task.link("acknowledge").unwrap().href.clone();
    let r = c
        .post(&ack)
        .basic_auth("admin", Some("xabiquo"))
        .header("Accept", "text/json,application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let after = wait_task(&c, a.status_href().unwrap()).await;
    assert_eq!(after.state, TaskState::AckError);
    assert!(after.link("acknowledge").is_none());

    // A successful task cannot be acknowledged.
    let ok = href_of(&sim, "web-03");
    let a: AcceptedRequest = reset(&c, &ok).await.json().await.unwrap();
    let done = wait_task(&c, a.status_href().unwrap()).await;
    let r = c
        .post(format!("{}/action/ack", a.status_href().unwrap()))
        .basic_auth("admin", Some("xabiquo"))
        .send()
        .await
        .unwrap();
    assert_eq!(done.state, TaskState::FinishedSuccessfully);
    assert_eq!(error_code(r).await, (409, "TASK-2".into()));
}

#[tokio::test]
async fn tasks_list_is_newest_first_and_task_gets_are_counted() {
    let sim = SimHandle::start(fast_lab()).await.unwrap();
    let c = client();
    let vm = href_of(&sim, "app-01");
    let a: AcceptedRequest = put_state(&c, &vm, r#"{"state":"OFF"}"#)
        .await
        .json()
        .await
        .unwrap();
    let first = wait_task(&c, a.status_href().unwrap()).await;
    let b: AcceptedRequest = put_state(&c, &vm, r#"{"state":"ON"}"#)
        .await
        .json()
        .await
        .unwrap();
    let second = wait_task(&c, b.status_href().unwrap()).await;
    let (status, body) = get_json(&c, &format!("{vm}/tasks"), TASKS).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("totalSize").is_none());
    let tasks: Collection<Task> = serde_json::from_value(body).unwrap();
    let ids: Vec<_> = tasks.collection.iter().map(|t| t.task_id.clone()).collect();
    assert_eq!(ids, [second.task_id.clone(), first.task_id.clone()]);
    assert_eq!(tasks.collection[0].task_type.as_str(), "POWER_ON");
    assert!(
        tasks
            .links
            .iter()
            .any(|l| l.rel == "parent" && l.href == vm)
    );

    let stats = sim.stats();
    assert!(stats.task_gets[&first.task_id] >= 1);
    let key = "PUT /api/cloud/virtualdatacenters/{vdc}/virtualappliances/{vapp}/virtualmachines/{vm}/state";
    assert_eq!(stats.requests_to(key), 2);
    assert_eq!(stats.requests_to("GET /api/cloud/virtualdatacenters/{vdc}/virtualappliances/{vapp}/virtualmachines/{vm}/tasks"), 1);
    let recs = &stats.mutations["app-01"];
    assert_eq!(
        recs.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["OFF", "ON"]
    );
    for r in recs {
        let (started, finished) = (r.started_ms.unwrap(), r.finished_ms.unwrap());
        assert!(r.accepted_ms <= started && started <= finished, "{r:?}");
        assert_eq!(r.outcome.as_deref(), Some("FINISHED_SUCCESSFULLY"));
    }
    let (status, _) = get_json(&c, &format!("{vm}/tasks/not-a-task"), TASK).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn concurrent_tasks_are_counted_in_flight() {
    let mut cfg = one_vapp(
        "KVM",
        (1..=8)
            .map(|i| SimVmSpec::new(i, format!("vm-{i}"), VmState::On))
            .collect(),
    );
    cfg.speed = 3.0; // 500 ms tasks: all 8 overlap
    let sim = SimHandle::start(cfg).await.unwrap();
    let c = client();
    let hrefs: Vec<String> = (1..=8).map(|i| href_of(&sim, &format!("vm-{i}"))).collect();
    let answers =
        futures::future::join_all(hrefs.iter().map(|h| put_state(&c, h, r#"{"state":"OFF"}"#)))
            .await;
    assert!(answers.iter().all(|r| r.status() == StatusCode::ACCEPTED));
    let stats = sim.stats();
    assert_eq!((stats.tasks_in_flight, stats.max_tasks_in_flight), (8, 8));
    for i in 1..=8 {
        wait_vm_state(&sim, &format!("vm-{i}"), VmState::Off).await;
    }
    assert_eq!(sim.stats().tasks_in_flight, 0);
}

#[tokio::test]
async fn set_vm_state_changes_a_vm_behind_the_apis_back() {
    let sim = SimHandle::start(fast_lab()).await.unwrap();
    assert!(sim.set_vm_state("web-03", VmState::Locked));
    assert!(!sim.set_vm_state("no-such-vm", VmState::Off));
    let c = client();
    let vm = href_of(&sim, "web-03");
    assert_eq!(
        error_code(reset(&c, &vm).await).await,
        (409, "VM-11".into())
    );
    assert!(sim.set_vm_state("web-03", VmState::Off));
    assert_eq!(
        put_state(&c, &vm, r#"{"state":"ON"}"#).await.status(),
        StatusCode::ACCEPTED
    );
}

/// Replays the same requests on a fresh simulator; returns (task id, duration) per mutation.
async fn run_sequence(seed: u64) -> Vec<(String, u64, Option<String>)> {
    let mut cfg = SimConfig::lab();
    cfg.seed = seed;
    cfg.speed = 50.0;
    cfg.vdcs[0].vapps[0].vms[1].fail_rate = 0.5; // web-02
    let sim = SimHandle::start(cfg).await.unwrap();
    let c = client();
    for name in ["web-01", "web-02", "web-03", "api-01"] {
        let vm = href_of(&sim, name);
        for body in [r#"{"state":"OFF"}"#, r#"{"state":"ON"}"#] {
            let r = put_state(&c, &vm, body).await;
            if r.status() != StatusCode::ACCEPTED {
                continue; // a failed OFF leaves the VM ON: the ON is refused
            }
            let a: AcceptedRequest = r.json().await.unwrap();
            wait_task(&c, a.status_href().unwrap()).await;
        }
    }
    let stats = sim.stats();
    stats
        .mutations
        .values()
        .flatten()
        .map(|r| {
            (
                r.task_id.clone(),
                r.finished_ms.unwrap() - r.accepted_ms,
                r.outcome.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn same_seed_gives_same_durations_ids_and_failures() {
    let a = run_sequence(7).await;
    let b = run_sequence(7).await;
    let c = run_sequence(8).await;
    assert!(a.len() >= 4);
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Durations follow the lab's 1500 ms ± 500 ms at speed 50: 20-40 ms.
    assert!(a.iter().all(|(_, d, _)| (20..=40).contains(d)), "{a:?}");
}

fn faulty(f: impl FnOnce(&mut powerbook::sim::Faults)) -> SimConfig {
    let mut c = fast_lab();
    f(&mut c.faults);
    c
}

async fn sim_stats_over_http(c: &reqwest::Client, sim: &SimHandle) -> powerbook::sim::SimStats {
    let url = sim.base_url().replace("/api", "/_sim/stats");
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn fault_503_and_429_refuse_without_processing() {
    let sim = SimHandle::start(faulty(|f| f.http_503 = 1.0))
        .await
        .unwrap();
    let c = client();
    let vm = href_of(&sim, "web-01");
    let r = put_state(&c, &vm, r#"{"state":"OFF"}"#).await;
    assert_eq!(error_code(r).await, (503, "503-SERVICE-UNAVAILABLE".into()));
    let stats = sim_stats_over_http(&c, &sim).await;
    assert_eq!(
        (stats.rejected["503 injected"], stats.faults_injected["503"]),
        (1, 1)
    );
    assert!(stats.mutations.is_empty());

    let sim = SimHandle::start(faulty(|f| {
        f.http_429 = 1.0;
        f.retry_after = Duration::from_millis(1500);
    }))
    .await
    .unwrap();
    let vm = href_of(&sim, "web-01");
    let r = put_state(&c, &vm, r#"{"state":"OFF"}"#).await;
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(error_code(r).await, (429, "429-TOO-MANY-REQUESTS".into()));
    assert!(sim.stats().mutations.is_empty());
}

#[tokio::test]
async fn fault_rates_between_zero_and_one_hit_some_requests() {
    let sim = SimHandle::start(faulty(|f| f.http_503 = 0.5))
        .await
        .unwrap();
    let c = client();
    let url = format!("{}/cloud/virtualmachines?limit=1", sim.base_url());
    let mut refused = 0;
    for _ in 0..40 {
        let r = c
            .get(&url)
            .basic_auth("admin", Some("xabiquo"))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused += 1;
        }
    }
    assert!((5..=35).contains(&refused), "{refused} of 40");
}

#[tokio::test]
async fn fault_drop_closes_the_connection_before_processing() {
    let sim = SimHandle::start(faulty(|f| f.drop_connection = 1.0))
        .await
        .unwrap();
    let c = client();
    let vm = href_of(&sim, "web-01");
    let r = c
        .put(format!("{vm}/state"))
        .basic_auth("admin", Some("xabiquo"))
        .header("Accept", ACCEPTED)
        .header("Content-Type", STATE_CT)
        .body(r#"{"state":"OFF"}"#)
        .send()
        .await;
    let e = r.expect_err("no answer");
    assert!(!e.is_timeout(), "closed, not timed out: {e}");
    let stats = sim_stats_over_http(&c, &sim).await;
    assert_eq!(stats.faults_injected["drop"], 1);
    assert!(stats.mutations.is_empty(), "nothing was processed");
    assert_eq!(
        sim.vm_states()
            .iter()
            .find(|v| v.name == "web-01")
            .unwrap()
            .state,
        VmState::On
    );
}

#[tokio::test]
async fn fault_lose_answer_processes_the_mutation_then_closes() {
    let sim = SimHandle::start(faulty(|f| f.lose_answer = 1.0))
        .await
        .unwrap();
    let c = client();
    let vm = href_of(&sim, "web-01");
    let r = c
        .put(format!("{vm}/state"))
        .basic_auth("admin", Some("xabiquo"))
        .header("Accept", ACCEPTED)
        .header("Content-Type", STATE_CT)
        .body(r#"{"state":"OFF"}"#)
        .send()
        .await;
    assert!(r.is_err(), "the answer is lost");
    let stats = sim.stats();
    assert_eq!(
        stats.mutations["web-01"].len(),
        1,
        "but the mutation happened"
    );
    assert_eq!(stats.faults_injected["lose_answer"], 1);
    // Reads are answered: the client recovers the task from the VM's tasks list.
    let (status, body) = get_json(&c, &format!("{vm}/tasks"), TASKS).await;
    assert_eq!(status, StatusCode::OK);
    let tasks: Collection<Task> = serde_json::from_value(body).unwrap();
    assert_eq!(tasks.collection.len(), 1);
    assert_eq!(
        tasks.collection[0].task_id,
        stats.mutations["web-01"][0].task_id
    );
    // Refusals are answered too (only accepted mutations lose their answer).
    assert_eq!(
        error_code(put_state(&c, &vm, r#"{"state":"PAUSED"}"#).await)
            .await
            .0,
        409
    );
}

#[tokio::test]
async fn fault_slow_delays_answers() {
    let sim = SimHandle::start(faulty(|f| {
        f.slow = 1.0;
        f.slow_delay = Duration::from_millis(300);
    }))
    .await
    .unwrap();
    let c = client();
    let (status, _) = get_json(
        &c,
        &format!("{}/cloud/virtualmachines", sim.base_url()),
        VMS,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sim.stats().faults_injected.get("slow"), Some(&1));
    // /_sim is never slowed: reading the counters over HTTP adds no slow answer.
    let stats = sim_stats_over_http(&c, &sim).await;
    assert_eq!(stats.faults_injected.get("slow"), Some(&1));
    assert_eq!(sim.stats().faults_injected.get("slow"), Some(&1));
}

#[tokio::test]
async fn fault_job_failure_rolls_back_and_stuck_task_never_finishes() {
    let sim = SimHandle::start(faulty(|f| f.job_failure = 1.0))
        .await
        .unwrap();
    let c = client();
    let vm = href_of(&sim, "web-01");
    let a: AcceptedRequest = put_state(&c, &vm, r#"{"state":"OFF"}"#)
        .await
        .json()
        .await
        .unwrap();
    let task = wait_task(&c, a.status_href().unwrap()).await;
    assert_eq!(task.state, TaskState::FinishedUnsuccessfully);
    assert_eq!(
        task.jobs.collection[0].rollback_state.as_str(),
        "ROLLBACK_DONE"
    );
    wait_vm_state(&sim, "web-01", VmState::On).await;
    assert_eq!(sim.stats().faults_injected["job_failure"], 1);

    let sim = SimHandle::start(faulty(|f| f.stuck_task = 1.0))
        .await
        .unwrap();
    let vm = href_of(&sim, "web-01");
    let a: AcceptedRequest = put_state(&c, &vm, r#"{"state":"OFF"}"#)
        .await
        .json()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // 10x the task duration
    let (_, t) = get_json(&c, a.status_href().unwrap(), TASK).await;
    assert_eq!(t["state"], "STARTED");
    assert_eq!(
        sim.vm_states()
            .iter()
            .find(|v| v.name == "web-01")
            .unwrap()
            .state,
        VmState::Locked
    );
    let stats = sim.stats();
    assert_eq!(
        (stats.tasks_in_flight, stats.faults_injected["stuck"]),
        (1, 1)
    );
}

#[tokio::test]
async fn fault_malformed_json_cuts_answers_but_not_sim_endpoints() {
    let sim = SimHandle::start(faulty(|f| f.malformed_json = 1.0))
        .await
        .unwrap();
    let c = client();
    let r = c
        .get(format!("{}/cloud/virtualmachines", sim.base_url()))
        .basic_auth("admin", Some("xabiquo"))
        .header("Accept", VMS)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], VMS);
    let text = r.text().await.unwrap();
    assert!(text.starts_with("{\"totalSize\""), "{text}");
    assert!(serde_json::from_str::<Value>(&text).is_err());
    assert_eq!(
        sim_stats_over_http(&c, &sim).await.faults_injected["malformed"],
        1
    );
}

#[tokio::test]
async fn sim_endpoints_survive_every_fault_at_once() {
    let sim = SimHandle::start(faulty(|f| {
        f.http_503 = 1.0;
        f.http_429 = 1.0;
        f.drop_connection = 1.0;
        f.slow = 1.0;
        f.malformed_json = 1.0;
    }))
    .await
    .unwrap();
    let c = client();
    let stats = sim_stats_over_http(&c, &sim).await;
    assert_eq!(stats.total_requests, 0);
    let url = sim.base_url().replace("/api", "/_sim/vms");
    let vms: Vec<powerbook::sim::SimVm> = c.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(vms.len(), sim.vm_states().len());
}

fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_powerbook"))
}

#[tokio::test]
async fn powerbook_sim_binary_prints_its_url_first_and_serves() {
    use std::io::BufRead;
    let mut child = bin()
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--speed",
            "100",
            "--seed",
            "3",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_owned();
    let port = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|r| r.strip_suffix("/api"))
        .and_then(|p| p.parse::<u16>().ok());
    assert!(port.is_some_and(|p| p > 0), "{url}");
    let c = client();
    let (status, body) = get_json(
        &c,
        &format!("{url}/cloud/virtualmachines?vmlabel=storefront%20web%201"),
        VMS,
    )
    .await;
    // Ctrl-C (SIGINT) stops it with exit code 0.
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !interrupted {
        child.kill().unwrap();
    }
    let exit = child.wait().unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["collection"][0]["name"], "web-01");
    if interrupted {
        assert_eq!(exit.code(), Some(0));
    }
}

/// A child process killed when the test ends, even by a failed assertion.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `powerbook sim` with `args`; returns the child and the URL it printed.
fn spawn_sim(args: &[&str]) -> (KillOnDrop, String) {
    use std::io::BufRead;
    let mut child = bin()
        .args(["sim", "--listen", "127.0.0.1:0", "--speed", "100"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    (KillOnDrop(child), url)
}

#[tokio::test]
async fn powerbook_sim_flags_set_token_lifetime_public_links_and_missing_status_links() {
    const PUBLIC: &str = "https://cloud.example.com/api";
    let (_sim, url) = spawn_sim(&[
        "--token-ttl",
        "1500ms",
        "--public-url",
        PUBLIC,
        "--fault-no-status-link",
        "1",
    ]);
    let c = client();
    let r = c
        .get(format!("{url}/login"))
        .basic_auth("admin", Some("xabiquo"))
        .header("Accept", "application/vnd.abiquo.user+json; version=5.0")
        .send()
        .await
        .unwrap();
    let token = r.headers()["x-abiquo-token"].to_str().unwrap().to_owned();
    let list = |auth: String| {
        c.get(format!(
            "{url}/cloud/virtualmachines?vmlabel=storefront%20web%201"
        ))
        .header("Accept", VMS)
        .header("Authorization", auth)
        .send()
    };
    let r = list(format!("Token {token}")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let edit = body["collection"][0]["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == "edit")
        .unwrap()["href"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(edit.starts_with(&format!("{PUBLIC}/cloud/")), "{edit}");
    // The link's path is served on the simulator's own address; its 202 has no status link.
    let vm = edit.replace(PUBLIC, &url);
    let r = put_state(&c, &vm, r#"{"state":"OFF"}"#).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(accepted["links"], serde_json::json!([]));

    tokio::time::sleep(Duration::from_millis(1800)).await;
    let expired = list(format!("Token {token}")).await.unwrap().status();
    let stats: powerbook::sim::SimStats = c
        .get(url.replace("/api", "/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(expired, StatusCode::UNAUTHORIZED);
    assert_eq!(stats.faults_injected.get("token_expired"), Some(&1));
    assert_eq!(stats.faults_injected.get("no_status_link"), Some(&1));
}

#[test]
fn powerbook_sim_refuses_remote_addresses_and_bad_inventories() {
    let out = bin()
        .args(["sim", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-remote"));

    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("bad.toml");
    std::fs::write(&inv, "[[vdc]]\nname = \"a\"\nflavour = \"x\"\n").unwrap();
    let out = bin()
        .args(["sim", "--inventory"])
        .arg(&inv)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3:"), "{err}");
    assert!(out.stdout.is_empty());

    let out = bin().args(["sim", "--fault-503", "1.5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn task_goes_pending_then_started_then_finished() {
    let mut cfg = one_vapp("KVM", vec![SimVmSpec::new(1, "a", VmState::On)]);
    cfg.speed = 1.0;
    cfg.task_duration = Duration::from_millis(600);
    let sim = SimHandle::start(cfg).await.unwrap();
    let c = client();
    let vm = href_of(&sim, "a");
    let a: AcceptedRequest = put_state(&c, &vm, r#"{"state":"PAUSED"}"#)
        .await
        .json()
        .await
        .unwrap();
    let href = a.status_href().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (_, t) = get_json(&c, &href, TASK).await;
    assert_eq!(t["state"], "STARTED");
    assert_eq!(t["jobs"]["collection"][0]["state"], "STARTED");
    assert_eq!(t["jobs"]["collection"][0]["rollbackState"], "UNKNOWN");
    assert!(
        t["links"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["rel"] != "acknowledge")
    );
    let task = wait_task(&c, &href).await;
    assert_eq!(task.state, TaskState::FinishedSuccessfully);
    let rec = &sim.stats().mutations["a"][0];
    let (started, finished) = (rec.started_ms.unwrap(), rec.finished_ms.unwrap());
    assert_eq!(started - rec.accepted_ms, 50, "PENDING for min(10%, 50 ms)");
    assert_eq!(finished - rec.accepted_ms, 600);
    wait_vm_state(&sim, "a", VmState::Paused).await;
}

#[tokio::test]
async fn inventory_file_settings_failures_and_forbidden_vms_apply() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inv.toml");
    std::fs::write(
        &path,
        r#"
[settings]
task_duration = "20ms"
task_jitter = "0ms"
locked_code = "VM-2"
[settings.durations]
reset = "40ms"

[[vdc]]
name = "dc"
hypervisor = "XEN_3"
  [[vdc.vapp]]
  name = "app"
    [[vdc.vapp.vm]]
    name = "flaky"
    fail_rate = 1.0
    [[vdc.vapp.vm]]
    name = "theirs"
    forbidden = true
    [[vdc.vapp.vm]]
    name = "busy"
    state = "LOCKED"
"#,
    )
    .unwrap();
    let sim = SimHandle::start(SimConfig::from_inventory_file(&path).unwrap())
        .await
        .unwrap();
    let c = client();
    let flaky = href_of(&sim, "flaky");
    let a: AcceptedRequest = reset(&c, &flaky).await.json().await.unwrap();
    let task = wait_task(&c, a.status_href().unwrap()).await;
    assert_eq!(task.state, TaskState::FinishedUnsuccessfully);
    let rec = &sim.stats().mutations["flaky"][0];
    assert_eq!(
        rec.finished_ms.unwrap() - rec.accepted_ms,
        40,
        "per-action duration"
    );
    // XEN cannot pause (VM-6); forbidden → 403; LOCKED → the configured VM-2.
    let pause = r#"{"state":"PAUSED"}"#;
    assert_eq!(
        error_code(put_state(&c, &flaky, pause).await).await,
        (409, "VM-6".into())
    );
    let theirs = href_of(&sim, "theirs");
    assert_eq!(
        error_code(reset(&c, &theirs).await).await,
        (403, "GEN-4".into())
    );
    let busy = href_of(&sim, "busy");
    assert_eq!(
        error_code(reset(&c, &busy).await).await,
        (409, "VM-2".into())
    );
}

#[tokio::test]
async fn powerbook_sim_latency_delays_every_api_answer() {
    let (_sim, url) = spawn_sim(&["--latency", "100ms", "--latency-jitter", "0ms"]);
    let c = client();
    // A first request opens the connection, so the timed ones measure the answer alone.
    let first = c.get(format!("{url}/version")).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let t = std::time::Instant::now();
    let version = c.get(format!("{url}/version")).send().await.unwrap();
    let took = t.elapsed();
    assert_eq!(version.status(), StatusCode::OK);
    assert!(took >= Duration::from_millis(100), "version in {took:?}");

    let t = std::time::Instant::now();
    let login = c
        .get(format!("{url}/login"))
        .basic_auth("admin", Some("xabiquo"))
        .header("Accept", "application/vnd.abiquo.user+json; version=5.0")
        .send()
        .await
        .unwrap();
    let took = t.elapsed();
    assert_eq!(login.status(), StatusCode::OK);
    assert!(took >= Duration::from_millis(100), "login in {took:?}");
}

/// Three mistakes in three places of one inventory.
const BROKEN_INVENTORY: &str = r#"[[vdc]]
name = "a"
hypervisr = "KVM"
  [[vdc.vapp]]
  name = "x"
    [[vdc.vapp.vm]]
    name = "v"
    state = "RUNNING"
    [[vdc.vapp.vm]]
    name = "v"
"#;

#[test]
fn sim_and_rehearsals_report_every_inventory_error_at_once() {
    let t = crate::support::Test::new()
        .file("broken.toml", BROKEN_INVENTORY)
        .runbook(crate::support::ALL_OFF);
    let lines = [
        "broken.toml: 3 errors in the inventory",
        "broken.toml:3:1: unknown key `hypervisr` in a [[vdc]]; did you mean `hypervisor`?",
        "broken.toml:8:13: unknown VM state `RUNNING`; expected one of",
        "broken.toml:10:12: duplicate VM name `v` (also at line 7)",
    ];
    let mut sim = t
        .clone()
        .args(["sim", "--inventory", "broken.toml"])
        .code(2);
    let mut run = t
        .clone()
        .args(["run", "runbook.toml", "--simulate", "--yes"])
        .args(["--simulate-inventory", "broken.toml"])
        .code(2);
    let mut plan = t
        .clone()
        .args(["plan", "runbook.toml", "--simulate"])
        .args(["--simulate-inventory", "broken.toml"])
        .code(2);
    for line in lines {
        sim = sim.stderr_contains(line);
        run = run.stderr_contains(line);
        plan = plan.stderr_contains(line);
    }
    sim.run();
    run.run();
    plan.run();
}
