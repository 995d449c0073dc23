//! Scale benchmark: the real executor against the simulator over loopback, one table row
//! per case.
//!
//! `cargo bench --bench scale` runs the full cases (about 6 minutes); `-- --quick` a small
//! smoke set (well under a minute); `-- --inproc` runs the simulator inside the executor's
//! process instead of as a `powerbook sim` child (peak RSS is then the two combined);
//! `-- --only 10000` runs only the cases with that many VMs; `-- --fixed` polls with the
//! fixed backoff of earlier versions, and `-- --no-watch` follows every task at its link
//! instead of watching the listing's pages, for comparison; `-- --whole-plan-first` lists
//! every VM and plans before acting, where by default the step starts on the first pages
//! of the listing as `powerbook run --yes` does.
//!
//! Every case runs in a fresh child process of this binary (`--case JSON`), so its peak RSS
//! (VmHWM) and CPU time are its own. The executor is measured as `powerbook run` uses it:
//! one pooled client, the collector and the progress bars (drawing to a counting sink at
//! their real refresh rate) consuming the events. Cases with added latency start the
//! simulator with `--latency` (half of each answer's delay before processing, half after).
//!
//! Figures:
//! - wall: from before the login to the executor's return (login, listing, planning, acting).
//! - ideal: the makespan of a perfect client, from the simulator's own records: every task's
//!   real duration (finished − accepted), in creation order (accepted time), each started the
//!   instant one of `concurrency` slots frees (greedy list scheduling), with no listing, no
//!   latency and no client overhead.
//! - first action: from the same start to the simulator accepting the first power request.
//! - requests per VM: every `/api` request the simulator counted over the whole run, by kind.
//! - detection lag: from the simulator finishing a task to the executor's `TaskFinished`
//!   event reaching the consumer.
//! - peak RSS: VmHWM of the executor's process and of the simulator's (when a child).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use powerbook::abiquo::CloudApi;
use powerbook::abiquo::auth::Credentials;
use powerbook::abiquo::client::{Client, ClientConfig};
use powerbook::abiquo::so_far::ListingSoFar;
use powerbook::exec::event::Event;
use powerbook::exec::head::Streaming;
use powerbook::exec::{Hooks, RunControl, RunOptions, Start, execute_from};
use powerbook::report::progress::Progress;
use powerbook::report::{Collector, Reporter, WholePlanFirst};
use powerbook::sim::{SimConfig, SimHandle, SimStats};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Case {
    vms: usize,
    concurrency: usize,
    sequential: bool,
    task_ms: u64,
    jitter_ms: u64,
    inproc: bool,
    /// Adaptive polling (`--fixed`: the old fixed backoff, for comparison).
    adaptive: bool,
    /// Added to every API answer by the simulator (`--latency`).
    #[serde(default)]
    latency_ms: u64,
    /// Uniform jitter of that delay (`--latency-jitter`).
    #[serde(default)]
    latency_jitter_ms: u64,
    /// Tasks watched through the listing's pages (`--no-watch`: every task polled).
    #[serde(default = "yes")]
    watch: bool,
    /// The first step starts on the first pages of the listing, as `powerbook run --yes`
    /// does (`--whole-plan-first`: the whole listing and plan first).
    #[serde(default = "yes")]
    early: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    case: Case,
    ok: usize,
    mean_task_ms: f64,
    wall_ms: f64,
    ideal_ms: f64,
    requests: u64,
    /// Requests the simulator counted over the whole run, by kind (see [`kind_of`]).
    by_kind: BTreeMap<String, u64>,
    /// From the start (before login) to the first accepted power request.
    first_action_ms: f64,
    /// Login, listing and planning, before executing.
    plan_ms: f64,
    task_polls: u64,
    tasks: usize,
    mean_delay_ms: f64,
    p95_delay_ms: f64,
    /// Executor process (with the simulator when in-process).
    rss_kib: u64,
    /// The same after listing the VMs and planning, before executing.
    plan_rss_kib: u64,
    sim_rss_kib: Option<u64>,
    cpu_s: f64,
    sim_cpu_s: Option<f64>,
    sim_connections: Option<u64>,
    progress_us: f64,
    progress_draws: u64,
    /// From a slot freeing in the cloud (the k-th task end) to the next task accepted in
    /// it (the (concurrency+k)-th acceptance): what the client adds per round, mean and p95.
    #[serde(default)]
    handoff_ms: (f64, f64),
    /// From the first to the last acceptance of the first round.
    #[serde(default)]
    first_round_ms: f64,
    /// From the last task end in the cloud to the executor's return.
    #[serde(default)]
    tail_ms: f64,
}

fn cases(quick: bool, inproc: bool, adaptive: bool, watch: bool, early: bool) -> Vec<Case> {
    let case = |vms, concurrency, sequential, task_ms, jitter_ms, latency_ms| Case {
        vms,
        concurrency,
        sequential,
        task_ms,
        jitter_ms,
        inproc,
        adaptive,
        latency_ms,
        latency_jitter_ms: 0,
        watch,
        early,
    };
    if quick {
        vec![
            case(200, 50, false, 500, 50, 50),
            case(2_000, 500, false, 500, 50, 0),
            case(10, 1, true, 500, 50, 0),
        ]
    } else {
        vec![
            // A real API's answers: +80 ms each.
            case(2_000, 200, false, 2_000, 200, 80),
            case(2_000, 200, false, 2_000, 200, 0),
            case(2_000, 200, false, 1_000, 100, 0),
            // Many short tasks: the client's own cost per VM.
            case(10_000, 500, false, 500, 50, 0),
            // A whole region: listing, planning and memory at scale.
            case(100_000, 1_000, false, 500, 50, 0),
            // One at a time: every round trip of a VM adds up.
            case(10, 1, true, 1_000, 100, 80),
        ]
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let case: Case = serde_json::from_str(&args[i + 1]).expect("case JSON");
        let row = run_case(case);
        println!("ROW {}", serde_json::to_string(&row).unwrap());
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let inproc = args.iter().any(|a| a == "--inproc");
    let adaptive = !args.iter().any(|a| a == "--fixed");
    let watch = !args.iter().any(|a| a == "--no-watch");
    let early = !args.iter().any(|a| a == "--whole-plan-first");
    // `--only 10000`: just the cases with that many VMs.
    let only: Option<usize> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok());
    let exe = std::env::current_exe().expect("own path");
    let mut rows = Vec::new();
    for case in cases(quick, inproc, adaptive, watch, early)
        .into_iter()
        .filter(|c| only.is_none_or(|n| n == c.vms))
    {
        eprintln!("case: {}", serde_json::to_string(&case).unwrap());
        let out = std::process::Command::new(&exe)
            .arg("--case")
            .arg(serde_json::to_string(&case).unwrap())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run case");
        let text = String::from_utf8_lossy(&out.stdout);
        let row: Row = text
            .lines()
            .find_map(|l| l.strip_prefix("ROW "))
            .map(|l| serde_json::from_str(l).expect("row JSON"))
            .unwrap_or_else(|| panic!("case failed ({}):\n{text}", out.status));
        rows.push(row);
    }
    print_table(&rows);
}

/// Request kinds, in table order.
const KINDS: [&str; 10] = [
    "login",
    "list page",
    "watch look",
    "GET vdc/vapp",
    "GET vm",
    "GET state",
    "PUT state",
    "GET task",
    "GET tasks",
    "other",
];

/// The kind of a request counted by the simulator as `"METHOD /api/route-template"`.
fn kind_of(key: &str) -> &'static str {
    let (method, route) = key.split_once(' ').unwrap_or((key, ""));
    match (method, route) {
        ("GET", "/api/login") => "login",
        ("GET", r) if r.ends_with("/virtualmachines") => "list page",
        ("GET", r) if r.ends_with("/virtualmachines/{vm}") => "GET vm",
        ("GET", r) if r.ends_with("/{vm}/state") => "GET state",
        ("PUT", r) if r.ends_with("/{vm}/state") => "PUT state",
        ("GET", r) if r.ends_with("/tasks/{task}") => "GET task",
        ("GET", r) if r.ends_with("/tasks") => "GET tasks",
        ("GET", r) if r.starts_with("/api/cloud/virtualdatacenters") => "GET vdc/vapp",
        _ => "other",
    }
}

fn case_label(c: &Case) -> String {
    let conc = if c.sequential {
        "sequential".to_owned()
    } else {
        format!("c={}", c.concurrency)
    };
    let mut label = format!(
        "{} VMs, {conc}, {} ms tasks (±{})",
        c.vms, c.task_ms, c.jitter_ms
    );
    if c.latency_ms > 0 || c.latency_jitter_ms > 0 {
        label.push_str(&format!(", +{} ms", c.latency_ms));
        if c.latency_jitter_ms > 0 {
            label.push_str(&format!(" (±{})", c.latency_jitter_ms));
        }
    } else {
        label.push_str(", no latency");
    }
    if !c.adaptive {
        label.push_str(", fixed polling");
    }
    if !c.watch {
        label.push_str(", no watch");
    }
    if !c.early {
        label.push_str(", whole plan first");
    }
    label
}

fn print_table(rows: &[Row]) {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::ASCII_MARKDOWN);
    t.set_header([
        "case",
        "wall",
        "greedy ideal",
        "wall/ideal",
        "first action",
        "API req/VM",
        "detection lag",
        "peak RSS exec (sim)",
    ]);
    for r in rows {
        let rss = match r.sim_rss_kib {
            Some(s) => format!("{:.1} MiB ({:.1} MiB)", mib(r.rss_kib), mib(s)),
            None => format!("{:.1} MiB (in-process)", mib(r.rss_kib)),
        };
        let total: u64 = r.by_kind.values().sum();
        t.add_row([
            case_label(&r.case),
            format!("{:.2} s", r.wall_ms / 1000.0),
            format!("{:.2} s", r.ideal_ms / 1000.0),
            format!("{:.3}", r.wall_ms / r.ideal_ms),
            format!("{:.2} s", r.first_action_ms / 1000.0),
            format!("{:.2}", total as f64 / r.case.vms as f64),
            format!("{:.0} ms (p95 {:.0} ms)", r.mean_delay_ms, r.p95_delay_ms),
            rss,
        ]);
    }
    println!("{t}");

    let mut k = comfy_table::Table::new();
    k.load_style(comfy_table::presets::ASCII_MARKDOWN);
    let mut header = vec!["requests per VM".to_owned()];
    header.extend(KINDS.iter().map(|k| (*k).to_owned()));
    k.set_header(header);
    for r in rows {
        let mut row = vec![case_label(&r.case)];
        row.extend(KINDS.iter().map(|kind| {
            let n = r.by_kind.get(*kind).copied().unwrap_or(0);
            format!("{:.3}", n as f64 / r.case.vms as f64)
        }));
        k.add_row(row);
    }
    println!("{k}");

    let mut d = comfy_table::Table::new();
    d.load_style(comfy_table::presets::ASCII_MARKDOWN);
    d.set_header([
        "details",
        "login + plan",
        "mean task",
        "polls/task",
        "RSS after plan",
        "CPU/API req",
        "sim CPU",
        "sim conns",
        "progress cost",
        "handoff (p95)",
        "1st round, tail",
    ]);
    for r in rows {
        let wall_s = r.wall_ms / 1000.0;
        d.add_row([
            case_label(&r.case),
            format!("{:.2} s", r.plan_ms / 1000.0),
            format!("{:.0} ms", r.mean_task_ms),
            format!("{:.2}", r.task_polls as f64 / r.tasks.max(1) as f64),
            format!("{:.1} MiB", mib(r.plan_rss_kib)),
            format!("{:.0} µs", r.cpu_s / r.requests.max(1) as f64 * 1e6),
            r.sim_cpu_s.map_or_else(
                || "-".to_owned(),
                |s| format!("{:.0}% of a core", s / wall_s * 100.0),
            ),
            r.sim_connections
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            format!(
                "{:.1} ms, {} draws",
                r.progress_us / 1000.0,
                r.progress_draws
            ),
            format!("{:.0} ms ({:.0} ms)", r.handoff_ms.0, r.handoff_ms.1),
            format!("{:.0} ms, {:.0} ms", r.first_round_ms, r.tail_ms),
        ]);
    }
    println!("{d}");
    for r in rows {
        if r.ok != r.case.vms {
            println!(
                "warning: {}: {} of {} VMs ok",
                case_label(&r.case),
                r.ok,
                r.case.vms
            );
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `VmHWM` (peak resident set) of a process, KiB.
fn peak_rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (num(11) + num(12)) / 100.0 // USER_HZ
}

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The simulator: a `powerbook sim` child (its own RSS and CPU) or in-process.
enum Sim {
    Child(std::process::Child, String),
    InProc(SimHandle),
}

impl Sim {
    async fn start(case: &Case) -> Sim {
        let mut config = SimConfig::generated(case.vms);
        config.task_duration = Duration::from_millis(case.task_ms);
        config.task_jitter = Duration::from_millis(case.jitter_ms);
        config.latency = Duration::from_millis(case.latency_ms);
        config.latency_jitter = Duration::from_millis(case.latency_jitter_ms);
        if case.inproc {
            return Sim::InProc(SimHandle::start(config).await.expect("start simulator"));
        }
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_powerbook"))
            .args(["sim", "--listen", "127.0.0.1:0"])
            .args(["--generate", &case.vms.to_string()])
            .args(["--task-duration", &format!("{}ms", case.task_ms)])
            .args(["--task-jitter", &format!("{}ms", case.jitter_ms)])
            .args(["--latency", &format!("{}ms", case.latency_ms)])
            .args(["--latency-jitter", &format!("{}ms", case.latency_jitter_ms)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start powerbook sim");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_owned();
        Sim::Child(child, base)
    }

    fn base_url(&self) -> String {
        match self {
            Sim::Child(_, base) => base.clone(),
            Sim::InProc(h) => h.base_url().to_owned(),
        }
    }

    fn pid(&self) -> Option<String> {
        match self {
            Sim::Child(c, _) => Some(c.id().to_string()),
            Sim::InProc(_) => None,
        }
    }

    async fn stats(&self) -> SimStats {
        match self {
            Sim::InProc(h) => h.stats(),
            Sim::Child(_, base) => reqwest::Client::new()
                .get(base.replace("/api", "/_sim/stats"))
                .send()
                .await
                .expect("stats")
                .json()
                .await
                .expect("stats JSON"),
        }
    }

    async fn stop(self) {
        match self {
            Sim::InProc(h) => h.shutdown().await,
            Sim::Child(mut c, _) => {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn runbook_toml(case: &Case) -> String {
    let order = if case.sequential {
        "order = \"sequential\"\n"
    } else {
        ""
    };
    format!(
        "name = \"scale\"\n\
         [limits]\nconcurrency = {c}\n\
         [[step]]\nname = \"all off\"\naction = \"off\"\n\
         targets = [{{ vm = \"vm-*\" }}]\nconcurrency = {c}\n{order}\
         task_timeout = \"5m\"\non_failure = \"continue\"\n",
        c = case.concurrency
    )
}

/// Counts what the progress bars would write to a terminal.
#[derive(Debug, Default)]
struct Sink {
    writes: AtomicU64,
}

impl indicatif::TermLike for Sink {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, _: &str) -> std::io::Result<()> {
        Ok(())
    }
    fn write_str(&self, _: &str) -> std::io::Result<()> {
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        // Once per redraw.
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// What the event consumer saw.
#[derive(Default)]
struct Seen {
    /// Task id (hashed: the bench's own record must not weigh on the executor's peak RSS)
    /// → epoch ms when its TaskFinished arrived.
    finished_at: HashMap<u64, f64>,
    progress: Duration,
    ok: usize,
}

fn run_case(case: Case) -> Row {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let sim = Sim::start(&case).await;
        let base = sim.base_url();
        // The run starts before the login, as `powerbook run` does.
        let start_epoch = epoch_ms();
        let t0 = Instant::now();
        let runbook = powerbook::runbook::parse("scale.toml", &runbook_toml(&case))
            .unwrap_or_else(|f| panic!("bench runbook: {f}"))
            .runbook;
        let config = ClientConfig::new(
            &base,
            "5.0",
            Credentials::Basic {
                user: "admin".into(),
                password: "xabiquo".into(),
            },
        );
        let client = Client::new(config).expect("client");
        client.login().await.expect("login");
        let me = std::process::id().to_string();
        let early = case
            .early
            .then(|| powerbook::plan::head::head_step(&runbook).ok())
            .flatten();
        // Before a whole plan: the listing and planning happen as the run goes.
        let whole = match early {
            Some(_) => None,
            None => Some(
                powerbook::plan::resolve(&client, &runbook)
                    .await
                    .expect("plan"),
            ),
        };
        let planned_rss = Arc::new(AtomicU64::new(peak_rss_kib(&me)));
        // Listing pages read while executing are the watch's looks.
        let planned = sim.stats().await;
        let plan_ms = Arc::new(std::sync::Mutex::new(t0.elapsed().as_secs_f64() * 1000.0));
        let sim_pid = sim.pid();
        let sim_cpu0 = sim_pid.as_deref().map(cpu_seconds);
        let cpu0 = cpu_seconds(&me);
        let requests0 = client.stats().requests;

        let sink = Arc::new(Sink::default());
        let draws = Arc::clone(&sink);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(1024);
        let (at_plan, rss_at_plan, pid) =
            (Arc::clone(&plan_ms), Arc::clone(&planned_rss), me.clone());
        let consumer = tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut collector = Collector::new();
            let mut progress = Progress::with_target(
                indicatif::ProgressDrawTarget::term_like_with_hz(Box::new(SinkRef(sink)), 10),
            );
            let mut order = WholePlanFirst::default();
            while let Some(event) = rx.recv().await {
                if let Event::TaskFinished { task_href, .. } = &event {
                    let id = task_href.rsplit('/').next().unwrap_or_default();
                    seen.finished_at.insert(task_key(id), epoch_ms());
                }
                if let Event::VmFinished { result } = &event
                    && result.outcome == powerbook::exec::event::VmOutcome::Ok
                {
                    seen.ok += 1;
                }
                if let Event::Planned { .. } = &event {
                    *at_plan.lock().unwrap() = t0.elapsed().as_secs_f64() * 1000.0;
                    rss_at_plan.store(peak_rss_kib(&pid), Ordering::Relaxed);
                }
                let t = Instant::now();
                order.pass(event, |event| {
                    progress.event(event);
                    collector.event(event);
                });
                seen.progress += t.elapsed();
            }
            progress.finish();
            let _report = collector.into_report();
            seen
        });
        let mut options = RunOptions::default();
        options.poll.adaptive = case.adaptive;
        options.watch = case.watch;
        let so_far = ListingSoFar::default();
        let listed = powerbook::plan::Listed::growing(tokio::time::Instant::now());
        let start = match (&whole, early) {
            (Some(plan), _) => Start::Whole(plan),
            (None, Some(index)) => {
                let streaming = Streaming::new(
                    &runbook,
                    index,
                    client.endpoint(),
                    (&so_far, &listed),
                    Box::pin(client.list_vms_feeding(&so_far)),
                    Box::new(|plan| (plan, None)),
                );
                Start::Streaming(Box::new(streaming.expect("head step")))
            }
            (None, None) => unreachable!("a plan or an early start"),
        };
        let _summary = execute_from(
            &client,
            start,
            &options,
            &[&tx],
            &RunControl::new(),
            &Hooks::default(),
        )
        .await;
        let wall = t0.elapsed();
        drop(tx);
        let seen = consumer.await.expect("consumer");
        let cpu = cpu_seconds(&me) - cpu0;
        let sim_cpu = sim_pid
            .as_deref()
            .map(cpu_seconds)
            .zip(sim_cpu0)
            .map(|(a, b)| a - b);
        let requests = client.stats().requests - requests0;
        // Before the simulator's record of every task is fetched and parsed here.
        let rss = peak_rss_kib(&me);

        let stats = sim.stats().await;
        let sim_rss = sim_pid.as_deref().map(peak_rss_kib);
        sim.stop().await;

        // Task durations in creation order, and when the client saw each task end.
        let mut records: Vec<&powerbook::sim::MutationRecord> =
            stats.mutations.values().flatten().collect();
        records.sort_by_key(|r| r.accepted_ms);
        let first_action_ms = records.first().map_or(f64::NAN, |r| {
            (stats.started_epoch_ms + r.accepted_ms) as f64 - start_epoch
        });
        let slots = if case.sequential { 1 } else { case.concurrency };
        let accepted: Vec<f64> = records.iter().map(|r| r.accepted_ms as f64).collect();
        let mut ends: Vec<f64> = records
            .iter()
            .filter_map(|r| r.finished_ms.map(|f| f as f64))
            .collect();
        ends.sort_by(f64::total_cmp);
        let mut handoffs: Vec<f64> = accepted
            .iter()
            .skip(slots)
            .zip(&ends)
            .map(|(a, f)| a - f)
            .collect();
        handoffs.sort_by(f64::total_cmp);
        let handoff_ms = (
            handoffs.iter().sum::<f64>() / handoffs.len().max(1) as f64,
            handoffs
                .get(handoffs.len() * 95 / 100)
                .copied()
                .unwrap_or_default(),
        );
        let first_round_ms = accepted
            .get(slots.min(accepted.len()).saturating_sub(1))
            .zip(accepted.first())
            .map_or(0.0, |(last, first)| last - first);
        let tail_ms = ends.last().map_or(0.0, |last| {
            start_epoch + wall.as_secs_f64() * 1000.0 - (stats.started_epoch_ms as f64 + last)
        });
        let mut durations = Vec::new();
        let mut delays = Vec::new();
        for rec in records {
            let Some(fin) = rec.finished_ms else { continue };
            durations.push((fin - rec.accepted_ms) as f64);
            if let Some(at) = seen.finished_at.get(&task_key(&rec.task_id)) {
                delays.push(at - (stats.started_epoch_ms + fin) as f64);
            }
        }
        let mut by_kind = BTreeMap::new();
        for (key, n) in &stats.requests {
            let kind = kind_of(key);
            // Pages of the plan's listing; the rest are the watch's looks. A run that starts
            // early reads its listing while it acts: it is as many pages as the VMs fill.
            let before = match whole {
                Some(_) => planned.requests.get(key).copied().unwrap_or(0),
                None => (case.vms.div_ceil(CloudApi::page_size(&client)) as u64).min(*n),
            };
            if kind == "list page" && *n > before {
                *by_kind.entry("watch look".to_owned()).or_insert(0) += n - before;
                *by_kind.entry(kind.to_owned()).or_insert(0) += before;
            } else {
                *by_kind.entry(kind.to_owned()).or_insert(0) += n;
            }
        }
        let ideal_ms = makespan(&durations, slots);
        delays.sort_by(f64::total_cmp);
        let task_polls: u64 = stats.task_gets.values().sum();
        Row {
            ok: seen.ok,
            mean_task_ms: durations.iter().sum::<f64>() / durations.len().max(1) as f64,
            wall_ms: wall.as_secs_f64() * 1000.0,
            ideal_ms,
            requests,
            by_kind,
            first_action_ms,
            plan_ms: *plan_ms.lock().unwrap(),
            task_polls,
            tasks: stats.task_gets.len(),
            mean_delay_ms: delays.iter().sum::<f64>() / delays.len().max(1) as f64,
            p95_delay_ms: delays
                .get(delays.len() * 95 / 100)
                .copied()
                .unwrap_or_default(),
            rss_kib: rss,
            plan_rss_kib: planned_rss.load(Ordering::Relaxed),
            sim_rss_kib: sim_rss,
            cpu_s: cpu,
            sim_cpu_s: sim_cpu,
            sim_connections: (stats.connections > 0).then_some(stats.connections),
            progress_us: seen.progress.as_secs_f64() * 1e6,
            progress_draws: draws.writes.load(Ordering::Relaxed),
            handoff_ms,
            first_round_ms,
            tail_ms,
            case,
        }
    })
}

fn task_key(id: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(id)
}

/// Shares the counting sink with the bench after the progress bars took it.
#[derive(Debug)]
struct SinkRef(Arc<Sink>);

impl indicatif::TermLike for SinkRef {
    fn width(&self) -> u16 {
        self.0.width()
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_up(n)
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_down(n)
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_right(n)
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.0.move_cursor_left(n)
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.0.write_line(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.0.write_str(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.0.clear_line()
    }
    fn flush(&self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Greedy list scheduling: each task starts the instant a slot frees, in order.
fn makespan(durations: &[f64], slots: usize) -> f64 {
    let mut free: BinaryHeap<Reverse<u64>> = (0..slots.max(1)).map(|_| Reverse(0)).collect();
    let mut end = 0u64;
    for &d in durations {
        // Microseconds, so the heap can order integers.
        let Reverse(start) = free.pop().unwrap_or(Reverse(0));
        let finish = start + (d * 1000.0) as u64;
        end = end.max(finish);
        free.push(Reverse(finish));
    }
    end as f64 / 1000.0
}
