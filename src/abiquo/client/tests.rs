//! Client tests against a scripted HTTP server on loopback. One file on purpose: every case
//! shares the one scripted server, and splitting by theme would spread its setup thin.

use super::*;
use crate::abiquo::model::{Link, PowerRequest, PowerState, VmState};
use crate::abiquo::tasks::task_id_of;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap as AxHeaders, StatusCode};
use axum::response::Response;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

#[derive(Debug, Clone)]
struct Seen {
    /// `http://host:port/api`, from the Host header.
    base: String,
    method: String,
    uri: String,
    headers: AxHeaders,
    body: Vec<u8>,
}

impl Seen {
    fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<bin>").to_owned())
            .collect()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }
}

/// Scripted reply: status, extra headers, body.
type Reply = (u16, Vec<(&'static str, String)>, String);
type Responder = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;

#[derive(Clone)]
struct MockState {
    seen: Arc<Mutex<Vec<Seen>>>,
    hits: Arc<AtomicUsize>,
    respond: Responder,
}

struct Mock {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Mock {
    async fn start(respond: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Mock {
        let state = MockState {
            seen: Arc::new(Mutex::new(Vec::new())),
            hits: Arc::new(AtomicUsize::new(0)),
            respond: Arc::new(respond),
        };
        let seen = state.seen.clone();
        let app = axum::Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Mock {
            base: format!("http://{addr}/api"),
            seen,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self, method: &str, path_part: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.uri.contains(path_part))
            .count()
    }

    fn vm(&self, state: VmState) -> VirtualMachine {
        let vm_href = format!(
            "{}/cloud/virtualdatacenters/1/virtualappliances/2/virtualmachines/3",
            self.base
        );
        VirtualMachine {
            id: 3,
            uuid: None,
            name: "web-01".into(),
            label: None,
            description: None,
            state,
            id_state: None,
            cpu: None,
            ram: None,
            protected: false,
            protected_cause: None,
            deallocated: None,
            links: vec![
                Link::new("edit", vm_href.clone()),
                Link::new("state", format!("{vm_href}/state")),
                Link::new("reset", format!("{vm_href}/action/reset")),
                Link::new("tasks", format!("{vm_href}/tasks")),
            ],
        }
    }

    fn client(&self) -> Client {
        self.client_with(|_| {})
    }

    fn client_with(&self, tweak: impl FnOnce(&mut ClientConfig)) -> Client {
        let mut config = ClientConfig::new(
            &self.base,
            "5.0",
            Credentials::Basic {
                user: "admin".into(),
                password: "xabiquo".into(),
            },
        );
        config.retry = fast_retry();
        config.reconcile_wait = Duration::from_millis(300);
        tweak(&mut config);
        Client::new(config).unwrap()
    }
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial: Duration::from_millis(5),
        factor: 2.0,
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(5),
        budget: Duration::from_secs(30),
    }
}

async fn handle(State(st): State<MockState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let seen = Seen {
        base: format!("http://{host}/api"),
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body,
    };
    let n = st.hits.fetch_add(1, Ordering::SeqCst);
    let (status, headers, body) = (st.respond)(&seen, n);
    st.seen.lock().unwrap().push(seen);
    let mut resp = Response::builder().status(StatusCode::from_u16(status).unwrap());
    for (k, v) in headers {
        resp = resp.header(k, v);
    }
    resp.body(Body::from(body)).unwrap()
}

/// `/login`'s answer: the user, and the session token in `X-Abiquo-Token`.
fn logged_in(token: String) -> Reply {
    (
        200,
        vec![("x-abiquo-token", token)],
        r#"{"id":1,"nick":"admin","name":"Admin","links":[]}"#.into(),
    )
}

fn ok(body: String) -> Reply {
    (200, vec![], body)
}

fn accepted(task_href: &str) -> Reply {
    (
        202,
        vec![(
            "content-type",
            "application/vnd.abiquo.acceptedrequest+json; version=5.0".into(),
        )],
        serde_json::json!({
            "message": "You can keep track of the progress in the link",
            "links": [{"rel": "status", "href": task_href}]
        })
        .to_string(),
    )
}

fn task_json(base: &str, id: &str, task_type: &str, created: i64) -> serde_json::Value {
    serde_json::json!({
        "taskId": id, "type": task_type, "state": "STARTED", "ownerId": "3", "userId": "1",
        "creationTimestamp": created, "timestamp": created,
        "jobs": {"links": [], "collection": []},
        "links": [{"rel": "self", "href": format!("{base}/cloud/virtualdatacenters/1/virtualappliances/2/virtualmachines/3/tasks/{id}")}]
    })
}

fn vm_json(mock_base: &str, state: &str) -> String {
    let vm = Mock {
        base: mock_base.to_owned(),
        seen: Arc::new(Mutex::new(Vec::new())),
    }
    .vm(VmState::from(state));
    serde_json::to_string(&vm).unwrap()
}

#[tokio::test]
async fn state_put_sends_vendor_types_and_exactly_one_content_type() {
    let mock = Mock::start(|s, _| {
        accepted(&format!(
            "{}{}/tasks/t-1",
            s.base,
            s.uri.trim_start_matches("/api")
        ))
    })
    .await;
    let client = mock.client();
    let answer = client
        .power(
            &mock.vm(VmState::On),
            PowerRequest::State {
                target: PowerState::Off,
                graceful: true,
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(answer, MutationAnswer::Accepted { ref task_href } if task_href.ends_with("/tasks/t-1"))
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    let put = &seen[0];
    assert_eq!(put.method, "PUT");
    assert!(put.uri.ends_with("/virtualmachines/3/state"));
    assert_eq!(
        put.header_all("content-type"),
        vec!["application/vnd.abiquo.virtualmachinestate+json; version=5.0"]
    );
    assert_eq!(
        put.header("accept").as_deref(),
        Some("application/vnd.abiquo.acceptedrequest+json; version=5.0")
    );
    let body: serde_json::Value = serde_json::from_slice(&put.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"state": "OFF", "gracefulShutdown": true, "links": []})
    );
}

#[tokio::test]
async fn hard_off_body_has_no_graceful_flag() {
    let mock = Mock::start(|s, _| {
        accepted(&format!(
            "{}{}/tasks/t-1",
            s.base,
            s.uri.trim_start_matches("/api")
        ))
    })
    .await;
    mock.client()
        .power(
            &mock.vm(VmState::On),
            PowerRequest::State {
                target: PowerState::Off,
                graceful: false,
            },
        )
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&mock.seen()[0].body).unwrap();
    assert_eq!(body, serde_json::json!({"state": "OFF", "links": []}));
}

#[tokio::test]
async fn reset_posts_to_the_reset_link_without_a_content_type() {
    let mock = Mock::start(|s, _| accepted(&format!("{}/x/tasks/r-1", s.base))).await;
    mock.client()
        .power(&mock.vm(VmState::On), PowerRequest::Reset)
        .await
        .unwrap();
    let seen = mock.seen();
    assert_eq!(seen[0].method, "POST");
    assert!(seen[0].uri.ends_with("/virtualmachines/3/action/reset"));
    assert!(seen[0].header_all("content-type").is_empty());
    assert_eq!(
        seen[0].header("accept").as_deref(),
        Some("application/vnd.abiquo.acceptedrequest+json; version=5.0")
    );
}

#[tokio::test]
async fn api_version_is_sent_as_configured() {
    let mock = Mock::start(|s, _| ok(vm_json(&s.base, "ON"))).await;
    let client = mock.client_with(|c| c.version = "3.10".into());
    let _ = client.get_vm(&mock.vm(VmState::On)).await;
    assert_eq!(
        mock.seen()[0].header("accept").as_deref(),
        Some("application/vnd.abiquo.virtualmachine+json; version=3.10")
    );
}

#[tokio::test]
async fn conflict_is_reported_as_abiquo_code_and_message() {
    let mock = Mock::start(|_, _| {
        (
            409,
            vec![("content-type", "application/vnd.abiquo.errors+json".into())],
            r#"{"collection":[{"code":"VM-4","message":"The virtual machine cannot change to the required state"}]}"#.into(),
        )
    })
    .await;
    let err = mock
        .client()
        .power(
            &mock.vm(VmState::Off),
            PowerRequest::State {
                target: PowerState::Off,
                graceful: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "VM-4: The virtual machine cannot change to the required state"
    );
    assert_eq!(mock.count("PUT", "/state"), 1, "a 409 is never retried");
}

#[tokio::test]
async fn gets_retry_on_429_and_503_and_honour_retry_after() {
    let mock = Mock::start(|s, n| match n {
        0 => (429, vec![("retry-after", "1".into())], String::new()),
        1 => (503, vec![], "busy".into()),
        _ => ok(vm_json(&s.base, "ON")),
    })
    .await;
    let started = Instant::now();
    let vm = mock.client().get_vm(&mock.vm(VmState::On)).await.unwrap();
    assert_eq!(vm.state, VmState::On);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 must be waited for ({:?})",
        started.elapsed()
    );
    assert_eq!(mock.seen().len(), 3);
}

#[tokio::test]
async fn retries_stop_after_max_attempts() {
    let mock = Mock::start(|_, _| (503, vec![], "down".into())).await;
    let client = mock.client();
    let err = client.get_vm(&mock.vm(VmState::On)).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(mock.seen().len(), 5);
    assert_eq!(client.stats().requests, 5);
    assert_eq!(client.stats().retries, 4);
}

#[tokio::test]
async fn malformed_get_bodies_are_retried() {
    let mock = Mock::start(|s, n| {
        if n == 0 {
            ok("{\"id\": 3, \"name\": ".into())
        } else {
            ok(vm_json(&s.base, "OFF"))
        }
    })
    .await;
    let vm = mock.client().get_vm(&mock.vm(VmState::On)).await.unwrap();
    assert_eq!(vm.state, VmState::Off);
    assert_eq!(mock.seen().len(), 2);
}

#[tokio::test]
async fn login_token_replaces_the_password_afterwards() {
    let mock = Mock::start(|s, _| {
        if s.uri.ends_with("/login") {
            logged_in("tok-1".to_owned())
        } else {
            ok(vm_json(&s.base, "ON"))
        }
    })
    .await;
    let client = mock.client();
    let user = client.login().await.unwrap();
    assert_eq!(user.nick, "admin");
    client.get_vm(&mock.vm(VmState::On)).await.unwrap();
    let seen = mock.seen();
    assert_eq!(
        seen[0].header("authorization").as_deref(),
        Some("Basic YWRtaW46eGFiaXF1bw==")
    );
    assert_eq!(
        seen[0].header("accept").as_deref(),
        Some("application/vnd.abiquo.user+json; version=5.0")
    );
    assert_eq!(
        seen[1].header("authorization").as_deref(),
        Some("Token tok-1")
    );
}

#[tokio::test]
async fn expired_session_token_logs_in_again_once() {
    let logins = Arc::new(AtomicUsize::new(0));
    let l = logins.clone();
    let mock = Mock::start(move |s, _| {
        if s.uri.ends_with("/login") {
            let n = l.fetch_add(1, Ordering::SeqCst) + 1;
            logged_in(format!("tok-{n}"))
        } else if s.header("authorization").as_deref() == Some("Token tok-1") {
            (
                401,
                vec![],
                r#"{"collection":[{"code":"GEN-5","message":"Token expired"}]}"#.into(),
            )
        } else {
            ok(vm_json(&s.base, "ON"))
        }
    })
    .await;
    let client = mock.client();
    client.login().await.unwrap();
    client.get_vm(&mock.vm(VmState::On)).await.unwrap();
    assert_eq!(logins.load(Ordering::SeqCst), 2);
    let last = mock.seen().last().cloned().unwrap();
    assert_eq!(last.header("authorization").as_deref(), Some("Token tok-2"));
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized_and_fatal() {
    let mock = Mock::start(|_, _| {
        (
            401,
            vec![("www-authenticate", "Basic realm=\"Abiquo API\"".into())],
            r#"{"collection":[{"code":"GEN-5","message":"Invalid credentials"}]}"#.into(),
        )
    })
    .await;
    let err = mock.client().login().await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthorized { .. }));
    assert!(err.is_fatal_for_run());
    assert_eq!(mock.seen().len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn lost_answer_adopts_our_task_instead_of_resending() {
    let mock = Mock::start(|s, _| {
        let base = s.base.clone();
        if s.method == "PUT" {
            (500, vec![], "proxy error".into())
        } else if s.uri.ends_with("/tasks") {
            let now = epoch_secs();
            ok(serde_json::json!({"links": [], "collection": [
                task_json(&base, "new-task", "POWER_OFF", now),
                task_json(&base, "old-task", "POWER_OFF", now - 3600),
            ]})
            .to_string())
        } else {
            ok(vm_json(&base, "LOCKED"))
        }
    })
    .await;
    let client = mock.client();
    let answer = client
        .power(
            &mock.vm(VmState::On),
            PowerRequest::State {
                target: PowerState::Off,
                graceful: false,
            },
        )
        .await
        .unwrap();
    match answer {
        MutationAnswer::Adopted { task_href } => assert!(task_href.ends_with("/tasks/new-task")),
        other => panic!("expected adoption, got {other:?}"),
    }
    assert_eq!(mock.count("PUT", "/state"), 1);
    assert_eq!(client.stats().adopted, 1);
}

#[tokio::test]
async fn every_lost_answer_is_reconciled_before_a_resend() {
    let mock = Mock::start(|s, _| {
        if s.method == "PUT" {
            (502, vec![], String::new())
        } else if s.uri.ends_with("/tasks") {
            ok(r#"{"links":[],"collection":[]}"#.into())
        } else {
            ok(vm_json(&s.base, "ON"))
        }
    })
    .await;
    let client = mock.client();
    let err = client
        .power(
            &mock.vm(VmState::On),
            PowerRequest::State {
                target: PowerState::Off,
                graceful: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(502));
    assert_eq!(
        mock.count("PUT", "/state"),
        5,
        "bounded by the attempt budget"
    );
    assert_eq!(
        mock.count("GET", "/tasks"),
        5,
        "every lost answer is reconciled, the last one too, before giving up"
    );
    assert_eq!(client.stats().reconciliations, 5);
}

#[tokio::test]
async fn lost_answer_then_success_on_resend() {
    let puts = Arc::new(AtomicUsize::new(0));
    let p = puts.clone();
    let mock = Mock::start(move |s, _| {
        let base = s.base.clone();
        if s.method == "PUT" {
            if p.fetch_add(1, Ordering::SeqCst) == 0 {
                (504, vec![], String::new())
            } else {
                accepted(&format!("{base}/x/tasks/t-2"))
            }
        } else if s.uri.ends_with("/tasks") {
            ok(r#"{"links":[],"collection":[]}"#.into())
        } else {
            ok(vm_json(&base, "ON"))
        }
    })
    .await;
    let answer = mock
        .client()
        .power(
            &mock.vm(VmState::On),
            PowerRequest::State {
                target: PowerState::Off,
                graceful: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(answer.task_href().map(task_id_of), Some("t-2"));
    assert_eq!(puts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn lost_answer_with_vm_already_in_target_state_is_not_resent() {
    let mock = Mock::start(|s, _| {
        let base = s.base.clone();
        if s.method == "PUT" {
            (500, vec![], String::new())
        } else if s.uri.ends_with("/tasks") {
            ok(r#"{"links":[],"collection":[]}"#.into())
        } else {
            ok(vm_json(&base, "OFF"))
        }
    })
    .await;
    let answer = mock
        .client()
        .power(
            &mock.vm(VmState::On),
            PowerRequest::State {
                target: PowerState::Off,
                graceful: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        answer,
        MutationAnswer::AlreadyDone {
            state: VmState::Off
        }
    );
    assert_eq!(mock.count("PUT", "/state"), 1);
}

#[tokio::test]
async fn lost_reset_answer_with_a_reset_task_is_never_resent() {
    let mock = Mock::start(|s, _| {
        let base = s.base.clone();
        if s.method == "POST" {
            (500, vec![], String::new())
        } else if s.uri.ends_with("/tasks") {
            ok(serde_json::json!({"links": [], "collection": [
                task_json(&base, "reset-1", "RESET", epoch_secs()),
            ]})
            .to_string())
        } else {
            ok(vm_json(&base, "ON"))
        }
    })
    .await;
    let answer = mock
        .client()
        .power(&mock.vm(VmState::On), PowerRequest::Reset)
        .await
        .unwrap();
    assert_eq!(answer.task_href().map(task_id_of), Some("reset-1"));
    assert_eq!(mock.count("POST", "/action/reset"), 1);
}

#[tokio::test]
async fn a_vm_locked_by_someone_else_ends_in_answer_lost() {
    let mock = Mock::start(|s, _| {
        let base = s.base.clone();
        if s.method == "PUT" {
            (500, vec![], String::new())
        } else if s.uri.ends_with("/tasks") {
            ok(r#"{"links":[],"collection":[]}"#.into())
        } else {
            ok(vm_json(&base, "LOCKED"))
        }
    })
    .await;
    let err = mock
        .client()
        .power(
            &mock.vm(VmState::On),
            PowerRequest::State {
                target: PowerState::Off,
                graceful: false,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::AnswerLost { .. }), "{err}");
    assert_eq!(mock.count("PUT", "/state"), 1);
}

#[tokio::test]
async fn listing_follows_next_links_to_the_end() {
    let mock = Mock::start(|s, _| {
        let base = s.base.clone();
        let page = |names: &[&str], next: Option<&str>| {
            let vms: Vec<serde_json::Value> = names
                .iter()
                .map(|n| serde_json::json!({"id": 1, "name": n, "state": "ON", "links": []}))
                .collect();
            let mut links = vec![];
            if let Some(n) = next {
                links.push(serde_json::json!({"rel": "next", "href": format!("{base}/cloud/virtualmachines?startwith={n}&limit=2")}));
            }
            ok(serde_json::json!({"totalSize": 5, "links": links, "collection": vms}).to_string())
        };
        if s.uri.contains("startwith=4") {
            page(&["e"], None)
        } else if s.uri.contains("startwith=2") {
            page(&["c", "d"], Some("4"))
        } else {
            page(&["a", "b"], Some("2"))
        }
    })
    .await;
    let client = mock.client_with(|c| c.page_size = 2);
    let vms = client.list_vms().await.unwrap();
    let names: Vec<_> = vms.iter().map(|v| &*v.name).collect();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    let seen = mock.seen();
    assert!(
        seen[0]
            .uri
            .contains("/cloud/virtualmachines?startwith=0&limit=2")
    );
    assert_eq!(
        seen[0].header("accept").as_deref(),
        Some("application/vnd.abiquo.virtualmachines+json; version=5.0")
    );
}

#[tokio::test]
async fn a_look_reads_part_of_the_listing_and_keeps_each_vms_link_and_state() {
    let mock = Mock::start(|s, _| {
        let base = s.base.clone();
        let vm = |id: u32, state: &str, extra: serde_json::Value| {
            let mut vm = serde_json::json!({"id": id, "name": format!("vm-{id}"), "state": state,
                "cpu": 2, "links": [
                    {"rel": "virtualdatacenter", "href": format!("{base}/cloud/virtualdatacenters/1"), "title": "dc"},
                    {"rel": "edit", "href": format!("{base}/cloud/virtualdatacenters/1/virtualappliances/1/virtualmachines/{id}"), "type": "application/vnd.abiquo.virtualmachine+json"},
                ]});
            if let (Some(vm), Some(extra)) = (vm.as_object_mut(), extra.as_object()) {
                vm.extend(extra.clone());
            }
            vm
        };
        ok(serde_json::json!({"totalSize": 250, "links": [], "collection": [
            vm(201, "LOCKED", serde_json::json!({})),
            vm(202, "OFF", serde_json::json!({"deallocated": true})),
            {"id": 203, "name": "no-link", "state": "ON", "links": []},
        ]})
        .to_string())
    })
    .await;
    let seen = mock.client().list_vm_states_range(200, 500).await.unwrap();
    assert_eq!(seen.len(), 2, "a VM without an edit link cannot be matched");
    assert_eq!(seen[0].state, VmState::Locked);
    assert!(seen[0].href.ends_with("/virtualmachines/201"));
    assert_eq!(
        (seen[1].state.clone(), seen[1].deallocated),
        (VmState::Off, Some(true))
    );
    let asked = &mock.seen()[0].uri;
    assert!(
        // At most a page, whatever was asked.
        asked.contains("/cloud/virtualmachines?startwith=200&limit=100&by=name&asc=true"),
        "{asked}"
    );
}

#[tokio::test]
async fn a_paging_loop_is_an_error_not_a_hang() {
    let mock = Mock::start(|s, _| {
        let base = s.base.clone();
        ok(serde_json::json!({"links": [{"rel": "next", "href": format!("{base}/cloud/virtualmachines?startwith=0&limit=100&by=name&asc=true")}],
            "collection": [{"id": 1, "name": "a", "state": "ON", "links": []}]})
        .to_string())
    })
    .await;
    let err = mock.client().list_vms().await.unwrap_err();
    assert!(err.to_string().contains("loop"), "{err}");
}

#[tokio::test]
async fn unreachable_endpoint_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut config = ClientConfig::new(
        &format!("http://{addr}/api"),
        "5.0",
        Credentials::Token("t".into()),
    );
    config.retry = fast_retry();
    let client = Client::new(config).unwrap();
    let err = client.login().await.unwrap_err();
    assert!(matches!(err.root(), ClientError::Transport { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()));
    assert!(
        err.to_string().contains("gave up after 5 attempts"),
        "{err}"
    );
}

#[tokio::test]
async fn requests_per_second_is_enforced_across_clones() {
    let mock = Mock::start(|s, _| ok(vm_json(&s.base, "ON"))).await;
    let client = mock.client_with(|c| c.requests_per_second = NonZeroU32::new(10));
    let vm = mock.vm(VmState::On);
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..20 {
        let c = client.clone();
        let vm = vm.clone();
        handles.push(tokio::spawn(async move { c.get_vm(&vm).await }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    // Burst of 10, then 10 more at 100 ms intervals.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.stats().requests, 20);
}

#[test]
fn client_debug_and_errors_never_show_secrets() {
    let config = ClientConfig::new(
        "http://127.0.0.1:1/api",
        "5.0",
        Credentials::Basic {
            user: "admin".into(),
            password: "hunter2-secret".into(),
        },
    );
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2-secret"), "{shown}");
    let client = Client::new(config).unwrap();
    let shown = format!("{client:?}");
    assert!(!shown.contains("hunter2-secret"), "{shown}");
}

#[test]
fn endpoints_with_credentials_or_odd_schemes_are_refused() {
    let creds = Credentials::Token("t".into());
    for bad in ["ftp://h/api", "not a url", "https://user:pw@h/api"] {
        let err = Client::new(ClientConfig::new(bad, "5.0", creds.clone())).unwrap_err();
        assert!(matches!(err, ClientError::Config(_)), "{bad}: {err}");
        assert!(!err.to_string().contains(":pw@"));
    }
}

#[tokio::test]
async fn a_malformed_link_fails_at_once_without_retries() {
    let mock = Mock::start(|s, _| ok(vm_json(&s.base, "ON"))).await;
    let client = mock.client();
    let err = client.get_vm_at("not a url").await.unwrap_err();
    assert!(matches!(err, ClientError::Config(_)), "{err}");
    assert_eq!(client.stats().retries, 0);
}

/// Tokens expire after a few requests each: concurrent callers that all hit the expiry share
/// one new login, and none of them fails while it is under way.
#[tokio::test]
async fn concurrent_requests_survive_a_token_expiry_with_one_login() {
    let logins = Arc::new(AtomicUsize::new(0));
    let l = logins.clone();
    let mock = Mock::start(move |s, _| {
        if s.uri.ends_with("/login") {
            let n = l.fetch_add(1, Ordering::SeqCst) + 1;
            std::thread::sleep(Duration::from_millis(50));
            logged_in(format!("tok-{n}"))
        } else if s.header("authorization").as_deref() == Some("Token tok-1") {
            (401, vec![], String::new())
        } else {
            ok(vm_json(&s.base, "ON"))
        }
    })
    .await;
    let client = mock.client();
    client.login().await.unwrap();
    let vm = mock.vm(VmState::On);
    let reads = (0..40).map(|_| client.get_vm(&vm));
    for read in futures::future::join_all(reads).await {
        read.unwrap();
    }
    assert_eq!(logins.load(Ordering::SeqCst), 2);
}

/// A 401 on a power request: log in again, look at the VM's tasks, and only then send it
/// again (a proxy may have answered 401 for a request that got through).
#[tokio::test]
async fn a_mutation_refused_401_is_reconciled_after_a_new_login() {
    let logins = Arc::new(AtomicUsize::new(0));
    let l = logins.clone();
    let mock = Mock::start(move |s, _| {
        if s.uri.ends_with("/login") {
            let n = l.fetch_add(1, Ordering::SeqCst) + 1;
            logged_in(format!("tok-{n}"))
        } else if s.header("authorization").as_deref() == Some("Token tok-1") {
            (401, vec![], String::new())
        } else if s.method == "PUT" {
            accepted(&format!("{}/tasks/t-1", s.base))
        } else if s.uri.ends_with("/tasks") {
            ok(r#"{"links":[],"collection":[]}"#.into())
        } else {
            ok(vm_json(&s.base, "ON"))
        }
    })
    .await;
    let client = mock.client();
    client.login().await.unwrap();
    let answer = client
        .power(
            &mock.vm(VmState::On),
            PowerRequest::State {
                target: PowerState::Off,
                graceful: false,
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(answer, MutationAnswer::Accepted { .. }),
        "{answer:?}"
    );
    let order: Vec<String> = mock
        .seen()
        .iter()
        .filter(|s| !s.uri.ends_with("/login"))
        .map(|s| format!("{} {}", s.method, s.uri.rsplit('/').next().unwrap_or("")))
        .collect();
    assert_eq!(order, ["PUT state", "GET tasks", "GET 3", "PUT state"]);
    assert_eq!(client.stats().reconciliations, 1);
}

#[tokio::test]
async fn a_link_to_another_origin_is_refused_without_a_request() {
    let mock = Mock::start(|s, _| ok(vm_json(&s.base, "ON"))).await;
    let client = mock.client();
    let err = client
        .get_vm_at("http://127.0.0.1:9/api/cloud/virtualdatacenters/1")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::ForeignLink { .. }), "{err}");
    assert!(err.to_string().contains("http://127.0.0.1:9"), "{err}");
    assert_eq!(client.stats().requests, 0);
    assert!(mock.seen().is_empty());
}

#[tokio::test]
async fn a_total_size_larger_than_what_arrived_is_read_again_then_refused() {
    let mock = Mock::start(|s, _| {
        ok(serde_json::json!({
            "totalSize": 3,
            "links": [],
            "collection": [serde_json::from_str::<serde_json::Value>(&vm_json(&s.base, "ON")).unwrap()]
        })
        .to_string())
    })
    .await;
    let client = mock.client();
    let err = client.list_vms().await.unwrap_err();
    assert!(err.to_string().contains("totalSize 3 but sent 1"), "{err}");
    assert_eq!(mock.count("GET", "/cloud/virtualmachines"), 2);
}

/// Once a token has expired, the next ones are renewed before they reach that age.
#[tokio::test]
async fn tokens_are_renewed_before_the_lifetime_seen_once() {
    let born: Arc<Mutex<std::collections::HashMap<String, Instant>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let (b, r) = (born.clone(), refused.clone());
    let mock = Mock::start(move |s, n| {
        if s.uri.ends_with("/login") {
            let token = format!("tok-{n}");
            b.lock().unwrap().insert(token.clone(), Instant::now());
            return logged_in(token);
        }
        let token = s.header("authorization").unwrap_or_default();
        let token = token.trim_start_matches("Token ");
        let expired = b
            .lock()
            .unwrap()
            .get(token)
            .is_none_or(|at| at.elapsed() > Duration::from_millis(1100));
        if expired {
            r.fetch_add(1, Ordering::SeqCst);
            (401, vec![], String::new())
        } else {
            ok(vm_json(&s.base, "ON"))
        }
    })
    .await;
    let client = mock.client();
    client.login().await.unwrap();
    let vm = mock.vm(VmState::On);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        client.get_vm(&vm).await.unwrap();
    }
    assert_eq!(
        refused.load(Ordering::SeqCst),
        1,
        "only the first expiry is seen"
    );
}

/// A server that counts requests in flight: all of them, and listings alone.
async fn counting_server() -> (Mock, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (all, lists) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (peak, lists_peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (p, lp) = (Arc::clone(&peak), Arc::clone(&lists_peak));
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (all, lists, p, lp) = (
            Arc::clone(&all),
            Arc::clone(&lists),
            Arc::clone(&p),
            Arc::clone(&lp),
        );
        async move {
            let listing = uri.path().ends_with("/virtualmachines");
            p.fetch_max(all.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            if listing {
                lp.fetch_max(lists.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
            all.fetch_sub(1, Ordering::SeqCst);
            let (media, body) = if listing {
                lists.fetch_sub(1, Ordering::SeqCst);
                let page = serde_json::json!({"totalSize": 0, "links": [], "collection": []});
                ("virtualmachines", page.to_string())
            } else {
                let task = task_json("http://127.0.0.1/api", "t-1", "POWER_OFF", 0);
                ("task", task.to_string())
            };
            Response::builder()
                .header(
                    "content-type",
                    format!("application/vnd.abiquo.{media}+json"),
                )
                .body(Body::from(body))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mock = Mock {
        base: format!("http://{addr}/api"),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    (mock, peak, lists_peak)
}

/// 12 task reads and 12 listing pages asked for at once, through `max` connections.
async fn read_tasks_and_pages_at_once(mock: &Mock, max: usize) {
    let client = mock.client_with(|c| {
        c.max_connections = max;
        c.page_size = 10;
    });
    let hrefs: Vec<String> = (0..12)
        .map(|i| format!("{}/tasks/{i}", mock.base))
        .collect();
    let tasks = futures::future::join_all(hrefs.iter().map(|href| client.get_task(href)));
    let pages = futures::future::join_all((0..12).map(|i| client.list_vm_states_range(i * 10, 10)));
    let (tasks, pages) = tokio::join!(tasks, pages);
    for read in tasks {
        read.unwrap();
    }
    for page in pages {
        page.unwrap();
    }
}

#[tokio::test]
async fn requests_in_flight_never_exceed_max_connections() {
    let (mock, peak, lists_peak) = counting_server().await;
    read_tasks_and_pages_at_once(&mock, 8).await;
    assert_eq!(peak.load(Ordering::SeqCst), 8, "24 reads, 8 at a time");
    assert_eq!(
        lists_peak.load(Ordering::SeqCst),
        2,
        "a quarter of the connections serve listings"
    );
}

#[tokio::test]
async fn one_connection_is_shared_by_listings_and_everything_else() {
    let (mock, peak, _) = counting_server().await;
    read_tasks_and_pages_at_once(&mock, 1).await;
    assert_eq!(peak.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn vdcs_are_listed_from_the_entry_point_and_vapps_through_each_vdcs_link() {
    let mock = Mock::start(|s, _| {
        let base = s.base.clone();
        let vapps = format!("{base}/cloud/virtualdatacenters/7/virtualappliances?owner=me");
        if s.uri.contains("/virtualappliances") {
            let (names, next): (&[&str], _) = if s.uri.contains("startwith=1") {
                (&["web"], None)
            } else {
                (&["empty"], Some(format!("{vapps}&startwith=1&limit=1")))
            };
            let items: Vec<serde_json::Value> = names
                .iter()
                .map(|n| serde_json::json!({"id": 3, "name": n, "links": []}))
                .collect();
            let links: Vec<serde_json::Value> = next
                .map(|href| serde_json::json!({"rel": "next", "href": href}))
                .into_iter()
                .collect();
            return ok(serde_json::json!({"links": links, "collection": items}).to_string());
        }
        ok(
            serde_json::json!({"totalSize": 1, "links": [], "collection": [
            {"id": 7, "name": "prod", "hypervisorType": "KVM", "links": [
                {"rel": "virtualappliances", "href": vapps}]}]})
            .to_string(),
        )
    })
    .await;
    let client = mock.client_with(|c| c.page_size = 1);
    let vdcs = client.list_vdcs().await.unwrap();
    assert_eq!(vdcs.len(), 1);
    assert_eq!(vdcs[0].hypervisor_type.as_deref(), Some("KVM"));
    let vapps = client.list_vapps(&vdcs[0]).await.unwrap();
    let names: Vec<_> = vapps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["empty", "web"]);
    let seen = mock.seen();
    assert!(seen.iter().all(|s| s.method == "GET"));
    assert!(
        seen[0]
            .uri
            .ends_with("/cloud/virtualdatacenters?startwith=0&limit=1&by=name&asc=true"),
        "{}",
        seen[0].uri
    );
    assert_eq!(
        seen[0].header("accept").as_deref(),
        Some("application/vnd.abiquo.virtualdatacenters+json; version=5.0")
    );
    // The link's own query is kept; paging is added after it.
    assert!(
        seen[1]
            .uri
            .ends_with("/virtualappliances?owner=me&startwith=0&limit=1&by=name&asc=true"),
        "{}",
        seen[1].uri
    );
    assert_eq!(
        seen[1].header("accept").as_deref(),
        Some("application/vnd.abiquo.virtualappliances+json; version=5.0")
    );

    let mut linkless = vdcs[0].clone();
    linkless.links.clear();
    let err = client.list_vapps(&linkless).await.unwrap_err();
    assert!(err.to_string().contains("virtualappliances"), "{err}");
}
