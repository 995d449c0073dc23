//! Adaptive polling end to end: the executor against the in-process simulator, counted by
//! the simulator itself.
use crate::support::Test;
use powerbook::abiquo::auth::Credentials;
use powerbook::abiquo::client::{Client, ClientConfig};
use powerbook::exec::event::Event;
use powerbook::exec::{RunControl, RunOptions, execute};
use powerbook::runbook::model::Action;
use powerbook::sim::SimConfig;
use std::time::Duration;

const VMS: usize = 60;
const CONCURRENCY: usize = 20;

#[test]
fn a_run_learns_task_durations_and_polls_few_times_over_few_connections() {
    let t = Test::new()
        .sim_config(SimConfig::generated(VMS))
        .configure(|c| {
            c.task_duration = Duration::from_millis(500);
            c.task_jitter = Duration::from_millis(50);
        });
    let sim = t.sim();
    t.block_on(async {
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
        // Tasks whose end the executor noticed.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let noticed = tokio::spawn(async move {
            let mut finished = 0;
            while let Some(event) = rx.recv().await {
                finished += usize::from(matches!(event, Event::TaskFinished { .. }));
            }
            finished
        });
        let summary = execute(&client, &plan, &options, &tx, &RunControl::new()).await;
        drop(tx);
        assert_eq!(noticed.await.unwrap(), VMS);
        assert_eq!(summary.counts.ok, VMS);

        let stats = sim.stats();
        let polls: u64 = stats.task_gets.values().sum();
        let per_task = polls as f64 / stats.task_gets.len() as f64;
        // Fixed backoff from 250 ms needs 2–3 polls for these tasks and detects them up to
        // 250 ms late; learned polling goes near the finish with a small budget.
        assert!(per_task <= 4.0, "{per_task} polls per task");
        let window = options.durations.window(Action::Off).unwrap();
        assert!(
            // First-poll hits count just below the window, so `lo` sits a little low.
            window.lo >= Duration::from_millis(300) && window.hi <= Duration::from_millis(700),
            "learned {window:?} for 450–550 ms tasks"
        );
        assert_eq!(stats.mutation_count(), VMS, "one power action per VM");
        // Quiet until the expected finish: fixed backoff (polls at 250 and 625 ms) needs two
        // polls for every one of these tasks and finds none finished at its first poll. Once
        // the first round has taught the durations, the first poll lands just past the
        // earliest expected finish, so some tasks are found finished by it (how late the rest
        // are noticed is a figure of `cargo bench --bench scale`, not a timed test).
        let mut records: Vec<_> = stats.mutations.values().flatten().collect();
        records.sort_by_key(|r| r.accepted_ms);
        let later: Vec<u64> = records
            .iter()
            .skip(CONCURRENCY)
            .map(|r| stats.task_gets[&r.task_id])
            .collect();
        let first_poll_hits = later.iter().filter(|&&n| n == 1).count();
        assert!(
            first_poll_hits * 10 >= later.len(),
            "{first_poll_hits} of {} later tasks found finished at their first poll: {later:?}",
            later.len()
        );
        // One pooled client with keep-alive: connections follow concurrency, not requests.
        assert!(
            stats.connections <= (CONCURRENCY as u64) * 2 + 4,
            "{} connections for {} requests",
            stats.connections,
            stats.total_requests
        );
    });
}
