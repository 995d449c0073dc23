//! How good is `powerbook plan`'s estimate? Plans a runbook over a generated 200-VM
//! inventory with known task durations, runs it against the in-process simulator, and prints
//! the estimate, the actual wall time and their ratio (overall and per step).
//!
//! `cargo bench --bench plan_estimate` (env: PLAN_ESTIMATE_VMS=200, PLAN_ESTIMATE_SEED=1).
//! The runbook mixes what the estimate must model: waves with a pause, two independent steps
//! sharing the run-wide concurrency, a dependent step, graceful and hard actions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use powerbook::abiquo::auth::Credentials;
use powerbook::abiquo::client::{Client, ClientConfig};
use powerbook::commands::session::execute_with_reporters;
use powerbook::exec::poll::PollPolicy;
use powerbook::exec::{RunControl, RunOptions};
use powerbook::plan::estimate::{EstimateInputs, estimate};
use powerbook::sim::{SimConfig, SimHandle};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Task durations the simulator uses (means, ±20% jitter) and the runbook declares.
const SHUTDOWN_MS: u64 = 1500;
const OFF_MS: u64 = 800;
const ON_MS: u64 = 1000;

fn runbook_text() -> String {
    format!(
        r#"
name = "estimate bench"
[limits]
concurrency = 40

[estimates]
shutdown = "{SHUTDOWN_MS}ms"
off = "{OFF_MS}ms"
on = "{ON_MS}ms"

[[step]]
name = "front down"
action = "shutdown"
targets = [{{ vapp = "vapp-00[1-5]" }}]
concurrency = 20
waves = {{ size = "50%", pause = "2s" }}

[[step]]
name = "back off"
after = []
action = "off"
targets = [{{ vapp = "vapp-00[6-9]" }}, {{ vapp = "vapp-010" }}]
concurrency = 30

[[step]]
name = "front up"
after = ["front down"]
action = "on"
targets = [{{ vapp = "vapp-00[12]" }}]
"#
    )
}

fn main() {
    let vms = usize::try_from(env_or("PLAN_ESTIMATE_VMS", 200)).unwrap();
    let seed = env_or("PLAN_ESTIMATE_SEED", 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut config = SimConfig::generated(vms);
        config.seed = seed;
        config.task_duration = Duration::from_millis(ON_MS);
        config.task_jitter = Duration::from_millis(ON_MS / 5);
        config.durations = BTreeMap::from([
            ("shutdown".to_owned(), Duration::from_millis(SHUTDOWN_MS)),
            ("off".to_owned(), Duration::from_millis(OFF_MS)),
            ("on".to_owned(), Duration::from_millis(ON_MS)),
        ]);
        let sim = SimHandle::start(config).await.unwrap();
        let runbook = powerbook::runbook::parse("bench.toml", &runbook_text())
            .unwrap_or_else(|f| panic!("invalid bench runbook: {f}"))
            .runbook;
        let client_config = ClientConfig::new(
            sim.base_url(),
            "5.0",
            Credentials::Basic {
                user: "admin".into(),
                password: "xabiquo".into(),
            },
        );
        let page_size = client_config.page_size;
        let client = Client::new(client_config).unwrap();

        // What `plan` does: time its own reads to learn the request round trip.
        let t = Instant::now();
        client.login().await.unwrap();
        let login = t.elapsed();
        let t = Instant::now();
        let listed = client.list_vms().await.unwrap();
        let pages = u32::try_from(listed.len().div_ceil(page_size).max(1)).unwrap();
        let request = login.min(t.elapsed() / pages).max(Duration::from_millis(1));
        let plan = powerbook::plan::build(&runbook, &listed, client.endpoint());
        let options = RunOptions::default();
        let inputs = EstimateInputs {
            poll: options.poll,
            request,
            listed_vms: listed.len(),
            page_size,
            history: None,
            simulated: None,
        };
        let est = estimate(&plan, &runbook, &inputs);
        assert_eq!(options.poll, PollPolicy::default());

        let control = RunControl::new();
        let (report, summary) =
            execute_with_reporters(&client, &plan, &options, &control, false).await;
        let failed = summary.counts.failed + summary.counts.not_started;
        assert_eq!(failed, 0, "the bench run must succeed: {:#?}", summary);

        println!(
            "plan_estimate: {} VMs, {} acted on, request round trip {:?}",
            listed.len(),
            summary.counts.ok,
            request
        );
        // Per step: the estimated span against the simulator's task timeline (first task
        // accepted to last task finished), and the per-VM time against the report's mean.
        let stats = sim.stats();
        println!(
            "{:<12} {:>14} {:>14} {:>12} {:>12}",
            "step", "span estimate", "span tasks", "VM estimate", "VM mean"
        );
        for e in &est.steps {
            let mine: Vec<_> = report.results.iter().filter(|r| r.step == e.step).collect();
            // A VM may be in several steps: keep the records of this step's action.
            let sent = match e.name.as_str() {
                "front down" => "OFF graceful",
                "back off" => "OFF",
                _ => "ON",
            };
            let records: Vec<_> = mine
                .iter()
                .filter_map(|r| stats.mutations.get(&*r.vm.name))
                .flatten()
                .filter(|m| m.action == sent)
                .collect();
            let first = records.iter().map(|m| m.accepted_ms).min().unwrap_or(0);
            let last = records
                .iter()
                .filter_map(|m| m.finished_ms)
                .max()
                .unwrap_or(0);
            let mean =
                mine.iter().map(|r| r.duration_ms).sum::<u64>() as f64 / mine.len().max(1) as f64;
            println!(
                "{:<12} {:>12}ms {:>12}ms {:>10}ms {:>10.0}ms",
                e.name,
                e.duration_ms,
                last.saturating_sub(first),
                e.vm_ms,
                mean
            );
        }
        let ratio = summary.wall_ms as f64 / est.total_ms.max(1) as f64;
        println!(
            "run:         estimate {} ms, actual {} ms, actual/estimate {:.3} ({})",
            est.total_ms,
            summary.wall_ms,
            ratio,
            if (0.8..=1.2).contains(&ratio) {
                "within 20%"
            } else {
                "OUTSIDE 20%"
            }
        );
        println!(
            "requests:    estimate {}, actual {} (client) / {} (simulator)",
            est.api_requests,
            summary.api.requests + 1 + u64::from(pages),
            sim.stats().total_requests
        );
        sim.shutdown().await;
    });
}
