//! Adaptive polling end to end: the executor against the in-process simulator, counted by
//! the simulator itself.
use powerbook::abiquo::auth::Credentials;
use powerbook::abiquo::client::{Client, ClientConfig};
use powerbook::exec::event::Event;
use powerbook::exec::{RunControl, RunOptions, execute};
use powerbook::runbook::model::Action;
use powerbook::sim::{SimConfig, SimHandle};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap())
}

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
        // When each task's end was noticed, by task id.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let noticed = tokio::spawn(async move {
            let mut at = HashMap::new();
            while let Some(event) = rx.recv().await {
                if let Event::TaskFinished { task_href, .. } = event {
                    let id = task_href.rsplit('/').next().unwrap().to_owned();
                    at.insert(id, epoch_ms());
                }
            }
            at
        });
        let summary = execute(&client, &plan, &options, &tx, &RunControl::new()).await;
        drop(tx);
        let noticed = noticed.await.unwrap();
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
        // Detection delay: the simulator's finish to the executor's TaskFinished. Fixed
        // backoff (polls at 250 and 625 ms) notices these tasks ~140 ms late on average;
        // once the first round has taught the durations, learned polling within a few tens
        // of ms.
        let mut records: Vec<_> = stats.mutations.values().flatten().collect();
        records.sort_by_key(|r| r.accepted_ms);
        let delays: Vec<u64> = records
            .iter()
            .skip(CONCURRENCY)
            .map(|r| {
                let finished = stats.started_epoch_ms + r.finished_ms.unwrap();
                noticed[&r.task_id].saturating_sub(finished)
            })
            .collect();
        let mean = delays.iter().sum::<u64>() / delays.len() as u64;
        assert!(mean <= 60, "mean detection delay {mean} ms: {delays:?}");
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
