//! Helpers for the simulator's own HTTP tests: a started simulator and plain requests.

use super::{SimConfig, SimHandle};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::Value;
use std::time::Duration;

pub const VM: &str = "application/vnd.abiquo.virtualmachine+json; version=5.0";
pub const VMS: &str = "application/vnd.abiquo.virtualmachines+json; version=5.0";
pub const TASK: &str = "application/vnd.abiquo.task+json; version=5.0";
pub const TASKS: &str = "application/vnd.abiquo.tasks+json; version=5.0";
pub const USER: &str = "application/vnd.abiquo.user+json; version=5.0";
const ACCEPTED: &str = "application/vnd.abiquo.acceptedrequest+json; version=5.0";
const STATE_CT: &str = "application/vnd.abiquo.virtualmachinestate+json; version=5.0";

/// The lab, tasks 100 times faster (~15 ms).
pub fn fast_lab() -> SimConfig {
    let mut c = SimConfig::lab();
    c.speed = 100.0;
    c
}

pub async fn start(config: SimConfig) -> SimHandle {
    SimHandle::start(config).await.unwrap()
}

pub fn client(timeout: Duration) -> Client {
    Client::builder().timeout(timeout).build().unwrap()
}

/// The VM's URL on the simulator's own address (whatever its links say).
pub fn vm_url(sim: &SimHandle, name: &str) -> String {
    let vm = sim
        .vm_states()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap();
    let path = vm.href.split_once("/api/").unwrap().1.to_owned();
    format!("{}/{path}", sim.base_url())
}

pub fn admin(r: RequestBuilder) -> RequestBuilder {
    r.basic_auth("admin", Some("xabiquo"))
}

/// Status, headers' `X-Abiquo-Token` and JSON body (Null when not JSON).
pub async fn send(r: RequestBuilder) -> (StatusCode, Option<String>, Value) {
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let token = resp
        .headers()
        .get("x-abiquo-token")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, token, resp.json().await.unwrap_or(Value::Null))
}

pub fn put_off(c: &Client, vm: &str) -> RequestBuilder {
    admin(c.put(format!("{vm}/state")))
        .header("Accept", ACCEPTED)
        .header("Content-Type", STATE_CT)
        .body(r#"{"state":"OFF"}"#)
}

pub fn post_reset(c: &Client, vm: &str) -> RequestBuilder {
    admin(c.post(format!("{vm}/action/reset"))).header("Accept", ACCEPTED)
}

/// Every `href` anywhere in a JSON document.
pub fn hrefs(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect(v, &mut out);
    out
}

fn collect(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if k == "href" => out.push(s.clone()),
                    _ => collect(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
        _ => {}
    }
}
