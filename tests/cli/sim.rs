//! The simulator over real HTTP on loopback.

use powerbook::abiquo::model::{
    AcceptedRequest, Collection, Task, TaskState, VirtualMachine, VmState,
};
use powerbook::sim::{SimConfig, SimHandle};
use reqwest::StatusCode;
use serde_json::Value;
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
