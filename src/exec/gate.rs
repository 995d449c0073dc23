//! Gates: a check that must pass before a step (or its next wave) starts — a port that
//! answers, a URL that answers with a status, a command that exits 0 — retried every
//! interval until it passes or its timeout ends. Nothing here talks to the Abiquo API, and
//! no credential is ever sent to a gate's address.

use crate::runbook::model::{Gate, GateCheck, GateVm};
use futures::StreamExt;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Output of a command kept with the gate's outcome (journal, report), at most.
const OUTPUT_CAP: usize = 1024;
/// One attempt never takes longer than this, whatever the gate's interval.
const ATTEMPT_MAX: Duration = Duration::from_secs(30);

/// Who answers an `approve` gate: the operator on the run's terminal, or `--approve-gates`.
pub trait Approver: Send + Sync {
    /// Asks whether to go on past `message`: `Ok` with how it was approved, `Err` with why
    /// not.
    fn approve(&self, message: String) -> BoxFuture<'static, Result<String, String>>;
}

/// An [`Approver`] shared by the run.
#[derive(Clone)]
pub struct Approval(pub Arc<dyn Approver>);

impl std::fmt::Debug for Approval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Approval")
    }
}

/// How a gate went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateOutcome {
    pub passed: bool,
    pub attempts: u32,
    pub elapsed_ms: u64,
    /// The last attempt's answer: why it failed, or what the command printed.
    pub detail: String,
}

/// Checks `gate` until it passes, its timeout ends, or `stop` is cancelled. An `approve`
/// gate asks `approval` once (and fails without one).
pub async fn check(
    gate: &Gate,
    approval: Option<&Approval>,
    stop: &CancellationToken,
) -> GateOutcome {
    let started = Instant::now();
    let timeout = Duration::from_millis(gate.timeout_ms);
    if let GateCheck::Approve { message } = &gate.check {
        let Some(approval) = approval else {
            let why = "no one to approve it: not a terminal, and no --approve-gates".into();
            return outcome(false, 1, started, why);
        };
        let asked = approval.0.approve(message.clone());
        let answer = tokio::select! {
            a = tokio::time::timeout(timeout, asked) => a,
            () = stop.cancelled() => {
                return outcome(false, 1, started, "stopped before it was approved".into());
            }
        };
        return match answer {
            Ok(Ok(how)) => outcome(true, 1, started, how),
            Ok(Err(why)) => outcome(false, 1, started, why),
            Err(_) => outcome(
                false,
                1,
                started,
                format!(
                    "not approved within {}",
                    humantime::format_duration(timeout)
                ),
            ),
        };
    }
    let interval = Duration::from_millis(gate.interval_ms).max(Duration::from_millis(10));
    let deadline = started + timeout;
    let http = match &gate.check {
        GateCheck::Http { .. } => http_client(),
        _ => None,
    };
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let bound = left.clamp(Duration::from_millis(10), ATTEMPT_MAX);
        let attempt = tokio::select! {
            r = tokio::time::timeout(bound, once(&gate.check, http.as_ref())) => r,
            () = stop.cancelled() => {
                return outcome(false, attempts, started, "stopped before it passed".into());
            }
        };
        let detail = match attempt {
            Ok(Ok(said)) => return outcome(true, attempts, started, said),
            Ok(Err(why)) => why,
            Err(_) => format!("no answer within {}", humantime::format_duration(bound)),
        };
        let next = Instant::now() + interval;
        if next >= deadline {
            let why = format!(
                "did not pass within {} ({attempts} attempts): {detail}",
                humantime::format_duration(timeout)
            );
            return outcome(false, attempts, started, why);
        }
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = stop.cancelled() => {
                return outcome(false, attempts, started, "stopped before it passed".into());
            }
        }
    }
}

/// VMs a per-VM gate checks at once, at most.
const VM_CHECKS_AT_ONCE: usize = 32;
/// Failed VMs a per-VM gate's outcome names, at most.
const VM_FAILURES_NAMED: usize = 3;

/// Checks a per-VM gate (`{vm.ip}`, `{vm.name}`, `{vm.id}`) for each of `vms`, a few at
/// once, all within the gate's one timeout. It passes when every VM passes.
pub async fn check_each(gate: &Gate, vms: &[GateVm<'_>], stop: &CancellationToken) -> GateOutcome {
    let started = Instant::now();
    if vms.is_empty() {
        let why = "no VM to check (none of them ended ok)".to_owned();
        return outcome(true, 0, started, why);
    }
    let deadline = started + Duration::from_millis(gate.timeout_ms);
    let results: Vec<(&str, GateOutcome)> = futures::stream::iter(vms)
        .map(|vm| async move {
            let one = match gate.check.for_vm(*vm) {
                Ok(check) => Gate {
                    check,
                    timeout_ms: ms(deadline.saturating_duration_since(Instant::now())),
                    interval_ms: gate.interval_ms,
                },
                Err(why) => return (vm.name, outcome(false, 0, started, why)),
            };
            (vm.name, check(&one, None, stop).await)
        })
        .buffer_unordered(VM_CHECKS_AT_ONCE)
        .collect()
        .await;
    let attempts = results.iter().map(|(_, o)| o.attempts).sum();
    let mut failed: Vec<&(&str, GateOutcome)> = results.iter().filter(|(_, o)| !o.passed).collect();
    if failed.is_empty() {
        let said = format!("{} passed", vm_count(vms.len()));
        return outcome(true, attempts, started, said);
    }
    failed.sort_by_key(|(name, _)| *name);
    let mut named: Vec<String> = failed
        .iter()
        .take(VM_FAILURES_NAMED)
        .map(|(name, o)| format!("{name}: {}", o.detail))
        .collect();
    if failed.len() > VM_FAILURES_NAMED {
        named.push(format!("and {} more", failed.len() - VM_FAILURES_NAMED));
    }
    let why = format!(
        "{} of {} did not pass: {}",
        failed.len(),
        vm_count(vms.len()),
        named.join("; ")
    );
    outcome(false, attempts, started, why)
}

/// `1 VM`, `12 VMs`.
fn vm_count(n: usize) -> String {
    format!("{n} VM{}", if n == 1 { "" } else { "s" })
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn outcome(passed: bool, attempts: u32, started: Instant, detail: String) -> GateOutcome {
    GateOutcome {
        passed,
        attempts,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        detail,
    }
}

/// A client of its own for health URLs: no credentials, no redirects followed, TLS
/// verified.
fn http_client() -> Option<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .ok()
}

/// One attempt: `Ok` with what it saw when the check passed, `Err` with why not.
async fn once(check: &GateCheck, http: Option<&reqwest::Client>) -> Result<String, String> {
    match check {
        GateCheck::Tcp { address } => tokio::net::TcpStream::connect(address.as_str())
            .await
            .map(|_| format!("{address} accepted a connection"))
            .map_err(|e| format!("{address}: {e}")),
        GateCheck::Http { url, status } => {
            let client = http.ok_or("cannot build an HTTP client")?;
            let answer = client
                .get(url)
                .send()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let got = answer.status().as_u16();
            if got == *status {
                Ok(format!("{url} answered {got}"))
            } else {
                Err(format!("{url} answered {got}, not {status}"))
            }
        }
        GateCheck::Approve { .. } => Err("an approval is asked, not polled".into()),
        GateCheck::Command { argv } => {
            let (program, args) = argv.split_first().ok_or("no program")?;
            let out = tokio::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| format!("cannot run {program}: {e}"))?;
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let text = capped(text.trim());
            if out.status.success() {
                Ok(text)
            } else {
                Err(format!("{program} exited {}: {text}", out.status))
            }
        }
    }
}

/// At most [`OUTPUT_CAP`] bytes, cut at a character boundary.
fn capped(text: &str) -> String {
    if text.len() <= OUTPUT_CAP {
        return text.to_owned();
    }
    let mut end = OUTPUT_CAP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(check: GateCheck, timeout_ms: u64) -> Gate {
        Gate {
            check,
            timeout_ms,
            interval_ms: 50,
        }
    }

    #[tokio::test]
    async fn a_port_that_opens_late_passes_the_gate_when_it_opens() {
        let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = probe.local_addr().unwrap();
        drop(probe);
        let open_later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let listener = tokio::net::TcpListener::bind(address).await.unwrap();
            let _ = listener.accept().await;
        });
        let g = gate(
            GateCheck::Tcp {
                address: address.to_string(),
            },
            5_000,
        );
        let o = check(&g, None, &CancellationToken::new()).await;
        assert!(o.passed, "{o:?}");
        assert!(o.attempts > 1 && o.elapsed_ms >= 250, "{o:?}");
        open_later.abort();
    }

    #[tokio::test]
    async fn a_per_vm_gate_checks_each_vm_with_its_own_values_and_names_those_that_fail() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accept = tokio::spawn(async move {
            while let Ok((c, _)) = listener.accept().await {
                drop(c);
            }
        });
        let vm = |id, name, ip| GateVm { id, name, ip };
        let tcp = gate(
            GateCheck::Tcp {
                address: format!("{{vm.ip}}:{port}"),
            },
            2_000,
        );
        let stop = CancellationToken::new();
        let up = [
            vm(1, "web-01", Some("127.0.0.1")),
            vm(2, "web-02", Some("127.0.0.1")),
        ];
        let o = check_each(&tcp, &up, &stop).await;
        assert!(o.passed, "{o:?}");
        assert_eq!(o.detail, "2 VMs passed");

        let without_nic = [vm(1, "web-01", Some("127.0.0.1")), vm(3, "web-03", None)];
        let o = check_each(&tcp, &without_nic, &stop).await;
        assert!(!o.passed, "{o:?}");
        assert!(
            o.detail
                .starts_with("1 of 2 VMs did not pass: web-03: web-03 has no IP address"),
            "{o:?}"
        );

        // Names and ids reach commands as arguments: only VMs 1 and 2 pass.
        let by_id = gate(
            GateCheck::Command {
                argv: vec!["test".into(), "{vm.id}".into(), "-lt".into(), "3".into()],
            },
            300,
        );
        let three = [up[0], up[1], vm(3, "web-03", None)];
        let o = check_each(&by_id, &three, &stop).await;
        assert!(!o.passed, "{o:?}");
        assert!(
            o.detail.starts_with("1 of 3 VMs did not pass: web-03:"),
            "{o:?}"
        );
        assert!(check_each(&by_id, &[], &stop).await.passed);
        accept.abort();
    }

    #[tokio::test]
    async fn a_gate_that_never_passes_fails_at_its_timeout() {
        let g = gate(
            GateCheck::Command {
                argv: vec!["false".into()],
            },
            300,
        );
        let started = std::time::Instant::now();
        let o = check(&g, None, &CancellationToken::new()).await;
        assert!(!o.passed, "{o:?}");
        assert!(o.detail.contains("did not pass within"), "{o:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_command_that_exits_0_passes_and_its_output_is_kept() {
        let g = gate(
            GateCheck::Command {
                argv: vec!["echo".into(), "db ready".into()],
            },
            2_000,
        );
        let o = check(&g, None, &CancellationToken::new()).await;
        assert!(o.passed, "{o:?}");
        assert_eq!(o.detail, "db ready");
        assert_eq!(capped(&"é".repeat(1000)).len(), 1024 + "…".len());
    }

    struct Says(Result<String, String>);
    impl Approver for Says {
        fn approve(&self, _: String) -> BoxFuture<'static, Result<String, String>> {
            let answer = self.0.clone();
            Box::pin(async move { answer })
        }
    }

    #[tokio::test]
    async fn an_approve_gate_passes_only_when_someone_approves() {
        let g = gate(
            GateCheck::Approve {
                message: "canary ok?".into(),
            },
            1_000,
        );
        let stop = CancellationToken::new();
        let yes = Approval(Arc::new(Says(Ok("approved on the terminal".into()))));
        let no = Approval(Arc::new(Says(Err("answered no".into()))));
        assert!(check(&g, Some(&yes), &stop).await.passed);
        let refused = check(&g, Some(&no), &stop).await;
        assert_eq!(
            (refused.passed, refused.detail.as_str()),
            (false, "answered no")
        );
        let alone = check(&g, None, &stop).await;
        assert!(
            !alone.passed && alone.detail.contains("--approve-gates"),
            "{alone:?}"
        );
    }

    #[tokio::test]
    async fn a_stopped_run_stops_waiting_for_its_gate() {
        let g = gate(
            GateCheck::Command {
                argv: vec!["false".into()],
            },
            60_000,
        );
        let stop = CancellationToken::new();
        stop.cancel();
        let o = check(&g, None, &stop).await;
        assert!(!o.passed);
        assert!(o.detail.contains("stopped"), "{o:?}");
    }
}
