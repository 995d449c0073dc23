//! Adaptive polling end to end: the executor against the in-process simulator, counted by
//! the simulator itself.
use powerbook::abiquo::auth::Credentials;
use powerbook::abiquo::client::{Client, ClientConfig};
use powerbook::exec::cmd::execute_with_reporters;
use powerbook::exec::{RunControl, RunOptions};
use powerbook::runbook::model::Action;
use powerbook::sim::{SimConfig, SimHandle};
use std::time::Duration;

const VMS: usize = 60;
const CONCURRENCY: usize = 20;

#[test]
fn a_run_learns_task_durations_and_polls_few_times_over_few_connections() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut config = SimConfig::generated(VMS);
        config.task_duration = Duration::from_millis(500);
        config.task_jitter = Duration::from_millis(50);
        let sim = SimHandle::start(config).await.unwrap();
        let runbook = powerbook::runbook::parse(
            "perf.toml",
            &format!(
                "name = \"perf\"\n[limits]\nconcurrency = {CONCURRENCY}\n\
                 [[step]]\nname = \"off\"\naction = \"off\"\ntargets = [{{ vm = \"vm-*\" }}]\n\
                 concurrency = {CONCURRENCY}\n"
            ),
        )
        .unwrap()
        .runbook;
        let client = Client::new(ClientConfig::new(
            sim.base_url(),
            "5.0",
            Credentials::Basic {
                user: "admin".into(),
                password: "xabiquo".into(),
            },
        ))
        .unwrap();
        client.login().await.unwrap();
        let plan = powerbook::plan::resolve(&client, &runbook).await.unwrap();
        let options = RunOptions::default();
        let (_, summary) = execute_with_reporters(
            &client,
            &plan,
            &runbook,
            &options,
            &RunControl::new(),
            false,
        )
        .await;
        assert_eq!(summary.counts.ok, VMS);

        let stats = sim.stats();
        let polls: u64 = stats.task_gets.values().sum();
        let per_task = polls as f64 / stats.task_gets.len() as f64;
        // Fixed backoff from 250 ms needs 2–3 polls for these tasks and detects them up to
        // 250 ms late; learned polling goes near the finish with a small budget.
        assert!(per_task <= 4.0, "{per_task} polls per task");
        let window = options.durations.window(Action::Off).unwrap();
        assert!(
            window.lo >= Duration::from_millis(400) && window.hi <= Duration::from_millis(650),
            "learned {window:?} for 450–550 ms tasks"
        );
        assert_eq!(stats.mutation_count(), VMS, "one power action per VM");
        let wall = u128::from(summary.wall_ms);
        // Three rounds of ~0.5 s tasks: near the ideal, nowhere near cold polling's cost.
        assert!(wall < 3_000, "wall {wall} ms");
        // One pooled client with keep-alive: connections follow concurrency, not requests.
        assert!(
            stats.connections <= (CONCURRENCY as u64) * 2 + 4,
            "{} connections for {} requests",
            stats.connections,
            stats.total_requests
        );
        sim.shutdown().await;
    });
}
