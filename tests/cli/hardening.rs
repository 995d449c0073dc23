//! Hostile and misconfigured servers, one scripted server on 127.0.0.1 per case: links and
//! redirects to other origins, https answers linking to http, a server that never answers,
//! untrusted and self-signed certificates, plain http off loopback, 202s without a `status`
//! link, huge answers and lying `totalSize`s.

use crate::servers::{
    self, Tamper, counting, expiring_tokens, passthrough, proxy, redirector, silent, tls_front,
};
use crate::support::{ALL_OFF, FAST_POLLING, Test};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Three VMs (one vApp, no paging), all ON, short tasks.
fn three_vms() -> Test {
    Test::new().generated(3, 40).runbook(ALL_OFF)
}

fn run_via(t: &Test, endpoint: &str) -> Test {
    t.clone()
        .env("ABIQUO_API_URL", format!("{endpoint}/api"))
        .args(["run", "runbook.toml", "--yes"])
        .args(FAST_POLLING)
}

#[test]
fn links_to_another_port_are_refused_and_never_get_credentials() {
    let t = three_vms();
    let (elsewhere, counter) = counting(&t);
    let front = passthrough(&t);
    front.link_to(&elsewhere);
    let out = run_via(&t, &front.origin)
        .code(1)
        .stdout_contains("not the endpoint's origin")
        .mutations(0)
        .run();
    assert!(
        out.stdout.contains(&elsewhere.replace("http://", "")),
        "{}",
        out.context()
    );
    assert_eq!(counter.requests(), 0, "{}", out.context());
    assert_eq!(counter.with_credentials(), 0);
}

#[test]
fn allow_origin_trusts_another_public_name_of_the_same_api() {
    let t = three_vms();
    let public = passthrough(&t);
    let front = passthrough(&t);
    front.link_to(&public.origin);
    run_via(&t, &front.origin)
        .args(["--allow-origin", &public.origin])
        .success()
        .mutations(3)
        .run();
    assert!(public.counter.with_credentials() > 0);
}

#[test]
fn https_answers_linking_to_http_never_step_down() {
    let t = three_vms();
    let pem = servers::self_signed();
    let cert = t.write("server.pem", &pem.cert);
    let (clear, counter) = counting(&t);
    let rewriter = passthrough(&t);
    rewriter.link_to(&clear);
    let https = tls_front(&t, &rewriter.origin, &pem);
    let out = run_via(&t, &https)
        .arg("--ca-cert")
        .arg(&cert)
        .code(1)
        .stdout_contains("down from https to http")
        .mutations(0)
        .run();
    assert_eq!(counter.with_credentials(), 0, "{}", out.context());
    assert_eq!(counter.requests(), 0);
}

#[test]
fn redirects_to_another_origin_are_not_followed() {
    let t = Test::new().runbook(ALL_OFF);
    let (elsewhere, counter) = counting(&t);
    let (redirecting, _) = redirector(&t, format!("{elsewhere}/api/login"));
    let out = t
        .clone()
        .env("ABIQUO_API_URL", format!("{redirecting}/api"))
        .env("ABIQUO_API_USERNAME", "admin")
        .env("ABIQUO_API_PASSWORD", "xabiquo")
        .args(["run", "runbook.toml", "--yes"])
        .code(3)
        .stderr_contains("redirects (302)")
        .stderr_contains("not followed")
        .run();
    assert_eq!(counter.requests(), 0, "{}", out.context());
}

#[test]
fn a_server_that_never_answers_fails_within_the_retry_budget_and_says_so() {
    let t = Test::new().runbook(ALL_OFF);
    let (mute, _) = silent(&t);
    let started = Instant::now();
    let out = t
        .clone()
        .env("ABIQUO_API_URL", format!("{mute}/api"))
        .env("ABIQUO_API_USERNAME", "admin")
        .env("ABIQUO_API_PASSWORD", "xabiquo")
        .args(["run", "runbook.toml", "--yes"])
        .args(["--request-timeout", "1s", "--retry-budget", "3s"])
        .code(3)
        .stderr_contains("API not answering (no answer within 1s), retry 1/7")
        .stderr_contains("gave up after")
        .run();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "{took:?}\n{}",
        out.context()
    );
}

#[test]
fn an_unreachable_endpoint_prints_its_retries() {
    let t = Test::new().runbook(ALL_OFF);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    t.clone()
        .env("ABIQUO_API_URL", format!("http://127.0.0.1:{port}/api"))
        .env("ABIQUO_API_USERNAME", "admin")
        .env("ABIQUO_API_PASSWORD", "xabiquo")
        .args(["run", "runbook.toml", "--yes", "--retry-budget", "2s"])
        .code(3)
        .stderr_contains("API not answering (")
        .stderr_contains("retry 1/7")
        .stderr_contains("gave up after")
        .run();
}

#[test]
fn an_untrusted_certificate_fails_at_once_with_hints() {
    let t = three_vms();
    let pem = servers::self_signed();
    let https = https_front(&t, &pem);
    let started = Instant::now();
    let out = run_via(&t, &https)
        .code(3)
        .stderr_contains("is not trusted")
        .stderr_contains("--ca-cert")
        .stderr_contains("--insecure")
        .stderr_lacks("retry")
        .mutations(0)
        .run();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{}",
        out.context()
    );
}

/// An https front whose answers link to itself (the simulator speaks http behind it).
fn https_front(t: &Test, server: &servers::Pem) -> String {
    let rewriter = passthrough(t);
    let https = tls_front(t, &rewriter.origin, server);
    rewriter.link_to(&https);
    https
}

#[test]
fn ca_cert_pins_a_self_signed_server_certificate() {
    let t = three_vms();
    let pem = servers::self_signed();
    let cert = t.write("server.pem", &pem.cert);
    let https = https_front(&t, &pem);
    run_via(&t, &https)
        .arg("--ca-cert")
        .arg(&cert)
        .success()
        .mutations(3)
        .run();
}

#[test]
fn ca_cert_trusts_a_private_ca() {
    let t = three_vms();
    let (ca, server) = servers::ca_and_server();
    let ca_file = t.write("ca.pem", &ca.cert);
    let https = https_front(&t, &server);
    run_via(&t, &https)
        .arg("--ca-cert")
        .arg(&ca_file)
        .success()
        .mutations(3)
        .run();
}

#[test]
fn plain_http_off_loopback_is_refused_unless_allowed() {
    Test::new()
        .runbook(ALL_OFF)
        .env("ABIQUO_API_URL", "http://abiquo.example.com/api")
        .env("ABIQUO_API_USERNAME", "admin")
        .env("ABIQUO_API_PASSWORD", "xabiquo")
        .args(["run", "runbook.toml", "--yes"])
        .code(2)
        .stderr_contains("refusing to send credentials in clear text")
        .stderr_contains("--allow-http")
        .run();
}

#[test]
fn an_accepted_request_without_a_status_link_is_reconciled_through_the_vm_tasks() {
    let t = three_vms();
    let strip: Tamper = Arc::new(|_, body: &mut String| {
        let Ok(mut json) = serde_json::from_str::<serde_json::Value>(body) else {
            return;
        };
        let is_accepted = json.get("message").is_some() || json.get("entity").is_some();
        if let Some(links) = json.get_mut("links").and_then(|l| l.as_array_mut())
            && is_accepted
        {
            links.retain(|l| l.get("rel").and_then(|r| r.as_str()) != Some("status"));
            *body = json.to_string();
        }
    });
    let front = proxy(&t, strip);
    let out = run_via(&t, &front.origin)
        .args(["--output", "json"])
        .success()
        .mutations(3)
        .actions_per_vm(&["OFF"])
        .run();
    assert!(out.stdout.contains("\"ok\""), "{}", out.context());
    let journal = journal_text(&t);
    assert_eq!(
        journal.matches("\"adopted\":true").count(),
        3,
        "every task was found through the VM's tasks\n{journal}"
    );
}

#[test]
fn a_huge_answer_is_cut_off_with_a_clear_error() {
    let t = three_vms();
    let pad: Tamper = Arc::new(|path, body: &mut String| {
        if path.contains("/cloud/virtualmachines?") {
            let filler = "x".repeat(3 << 20);
            *body = body.replacen('{', &format!("{{\"padding\":\"{filler}\","), 1);
        }
    });
    let front = proxy(&t, pad);
    run_via(&t, &front.origin)
        .args(["--max-response-size", "1MiB"])
        .code(3)
        .stderr_contains("is larger than 1 MiB")
        .stderr_contains("--max-response-size")
        .mutations(0)
        .run();
}

#[test]
fn a_total_size_that_disagrees_with_the_listing_is_refused() {
    let t = three_vms();
    let lie: Tamper = Arc::new(|path, body: &mut String| {
        if path.contains("/cloud/virtualmachines?") {
            *body = body.replace("\"totalSize\":3", "\"totalSize\":5");
        }
    });
    let front = proxy(&t, lie);
    run_via(&t, &front.origin)
        .code(3)
        .stderr_contains("totalSize 5 but sent 3")
        .mutations(0)
        .run();
}

#[test]
fn a_session_token_that_expires_mid_run_is_renewed_and_the_run_finishes() {
    // Ten rounds of 200 ms tasks: the run outlives the 1 s token however fast the machine.
    let t = Test::new().generated(1000, 200).runbook(
        r#"
name = "all off"
[limits]
concurrency = 100
[[step]]
name = "off"
action = "off"
targets = [{ vdc = "*" }]
"#,
    );
    let (front, tokens) = expiring_tokens(&t, Duration::from_secs(1));
    let out = run_via(&t, &front.origin)
        .timeout(Duration::from_secs(240))
        .success()
        .mutations(1000)
        .actions_per_vm(&["OFF"])
        .run();
    assert!(
        tokens.refused() > 0,
        "the token never expired\n{}",
        out.context()
    );
    let logins = t
        .stats()
        .requests
        .get("GET /api/login")
        .copied()
        .unwrap_or(0);
    assert!(logins >= 2, "{logins} logins\n{}", out.context());
}

/// The one journal a test's runs directory holds.
fn journal_text(t: &Test) -> String {
    let runs = t.path("runs");
    let mut files: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::read_to_string(files.remove(0)).unwrap()
}

#[test]
fn a_run_on_a_single_connection_finishes_and_zero_connections_is_a_usage_error() {
    let t = Test::new().generated(12, 40).runbook(ALL_OFF);
    t.clone()
        .args(["run", "runbook.toml", "--yes", "--max-connections", "0"])
        .code(2)
        .stderr_contains("--max-connections")
        .mutations(0)
        .run();
    let out = t
        .clone()
        .args(["run", "runbook.toml", "--yes", "--max-connections", "1"])
        .args(FAST_POLLING)
        .code(0)
        .actions_per_vm(&["OFF"])
        .mutations(12)
        .run();
    let connections = t.sim().stats().connections;
    assert!(
        connections <= 2,
        "{connections} connections\n{}",
        out.context()
    );
}
