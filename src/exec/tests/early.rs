//! A run that starts on the first pages of its listing: the head step's first wave acts
//! while later pages arrive, every VM is acted on once and reported once, under the numbers
//! the whole plan gives it.

use super::*;
use crate::abiquo::error::ClientError;
use crate::abiquo::so_far::ListingSoFar;
use crate::exec::Start;
use crate::exec::fake::{CallKind, Reply, TaskScript};
use crate::exec::head::Streaming;
use crate::plan::Listed;
use crate::plan::head::head_step;
use tokio::time::Instant;

/// How the listing of a test arrives.
struct Pages {
    size: usize,
    /// Before each page.
    delay: Duration,
    /// The listing fails after this many pages.
    fail_after: Option<usize>,
    /// What the whole listing returns, when not what the pages brought (it changed).
    whole: Option<Vec<ListedVm>>,
    /// Ctrl-C this long after the start.
    interrupt_after: Option<Duration>,
}

impl Pages {
    fn of(size: usize) -> Self {
        Pages {
            size,
            delay: Duration::from_secs(1),
            fail_after: None,
            whole: None,
            interrupt_after: None,
        }
    }
}

/// Runs `toml` over the fake, starting on the first pages; the run, its whole plan (the
/// `Planned` event's) and when the last page arrived.
async fn run_early(fake: &FakeCloud, toml: &str, pages: Pages) -> (Run, Option<Plan>, Instant) {
    let runbook = crate::runbook::parse("test.toml", toml)
        .unwrap_or_else(|f| panic!("{f:?}"))
        .runbook;
    let index = head_step(&runbook).expect("the runbook starts early");
    let endpoint = crate::abiquo::api::CloudApi::endpoint(fake).to_owned();
    let vms: Vec<ListedVm> = fake.listing().iter().map(ListedVm::from).collect();
    let so_far = ListingSoFar::default();
    let listed = Listed::growing(Instant::now());
    let last_page = std::sync::Mutex::new(Instant::now());
    let listing = async {
        for (n, page) in vms.chunks(pages.size).enumerate() {
            tokio::time::sleep(pages.delay).await;
            if pages.fail_after == Some(n) {
                so_far.end();
                return Err(ClientError::Timeout {
                    url: "http://127.0.0.1/api/cloud/virtualmachines".into(),
                    secs: 30,
                });
            }
            so_far.extend(page.iter().cloned());
            *last_page.lock().unwrap() = Instant::now();
        }
        let listed = so_far.end();
        Ok(pages.whole.clone().unwrap_or(listed))
    };
    let streaming = Streaming::new(
        &runbook,
        index,
        &endpoint,
        (&so_far, &listed),
        listing,
        Box::new(|plan| (plan, None)),
    );
    let start = Start::Streaming(Box::new(streaming.unwrap()));
    let (tx, mut rx) = mpsc::channel(100_000);
    let options = RunOptions {
        drain_timeout: Duration::from_secs(10),
        ..RunOptions::default()
    };
    let control = RunControl::new();
    let ctrl_c = async {
        if let Some(after) = pages.interrupt_after {
            tokio::time::sleep(after).await;
            control.interrupt();
        }
    };
    let (sinks, hooks): ([&dyn crate::exec::sink::EventSink; 1], _) = ([&tx], Hooks::default());
    let run = crate::exec::execute_from(fake, start, &options, &sinks, &control, &hooks);
    let (summary, ()) = tokio::join!(run, ctrl_c);
    drop(tx);
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    let plan = events.iter().find_map(|e| match e {
        Event::Planned { plan, .. } => Some((**plan).clone()),
        _ => None,
    });
    let last = *last_page.lock().unwrap();
    (Run { events, summary }, plan, last)
}

fn fleet(n: usize, state: VmState) -> FakeCloud {
    (0..n).fold(FakeCloud::new(), |f, i| {
        f.with_vm(&format!("vm-{i:03}"), state.clone())
    })
}

/// Every result names the VM the whole plan has under its number.
fn assert_numbered_as_planned(run: &Run, plan: &Plan) {
    for r in run.results() {
        let step = plan.steps.iter().find(|s| s.index == r.step).unwrap();
        assert_eq!(
            step.targets[r.target].vm.name, r.vm.name,
            "target {}",
            r.target
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_step_acts_on_the_first_pages_before_the_listing_ends() {
    let fake = fleet(250, VmState::On);
    let toml = one_step("off", "vm-*", "concurrency = 20");
    let (run, plan, last_page) = run_early(&fake, &toml, Pages::of(100)).await;
    let plan = plan.expect("the whole plan");
    let first_power = fake
        .calls()
        .iter()
        .filter(|c| c.kind == CallKind::Power)
        .map(|c| c.at)
        .min()
        .unwrap();
    assert!(first_power < last_page, "acted before the last page");
    let planned_at = run
        .events
        .iter()
        .position(|e| matches!(e, Event::Planned { .. }))
        .unwrap();
    let acting_at = run
        .events
        .iter()
        .position(|e| matches!(e, Event::VmActing { .. }))
        .unwrap();
    assert!(
        acting_at < planned_at,
        "a request went out before the plan was whole"
    );
    // Each VM once: one request, one result, all ok, under the whole plan's numbers.
    assert_eq!(fake.total_mutations(), 250);
    assert_eq!(run.results().len(), 250);
    assert_eq!(run.summary.counts.ok, 250);
    assert_numbered_as_planned(&run, &plan);
    // Each VM started early was journaled as a target before anything was sent for it.
    for e in &run.events[..planned_at] {
        if let Event::VmActing { target, .. } = e {
            let listed = run
                .events
                .iter()
                .position(|l| matches!(l, Event::TargetListed { target: t, .. } if t == target));
            let acting = run.events.iter().position(|a| std::ptr::eq(a, e));
            assert!(listed < acting, "target {target} listed before acting");
        }
    }
    assert!(fake.max_in_flight(|_| true) <= 20);
}

#[tokio::test(start_paused = true)]
async fn a_first_wave_of_a_given_size_is_not_exceeded_while_the_listing_goes_on() {
    let fake = fleet(250, VmState::On);
    let toml = one_step("off", "vm-*", "waves = { sizes = [3, 100] }");
    let (run, plan, _) = run_early(&fake, &toml, Pages::of(100)).await;
    let plan = plan.expect("the whole plan");
    let before_plan: Vec<usize> = run
        .events
        .iter()
        .take_while(|e| !matches!(e, Event::Planned { .. }))
        .filter_map(|e| match e {
            Event::VmActing { target, .. } => Some(*target),
            _ => None,
        })
        .collect();
    assert_eq!(before_plan, [0, 1, 2], "only the first wave starts early");
    // Nothing past it is taken (nor journaled) before the plan is whole.
    let handed = run.count(|e| matches!(e, Event::TargetListed { .. }));
    assert_eq!(handed, 3);
    assert_eq!(plan.steps[0].waves.len(), 4);
    assert_eq!(run.summary.counts.ok, 250);
    assert_numbered_as_planned(&run, &plan);
}

#[tokio::test(start_paused = true)]
async fn a_failure_on_the_first_pages_starts_nothing_more_until_the_plan_is_whole() {
    let fake = fleet(250, VmState::On);
    fake.script(
        "vm-000",
        [Reply::Accept(TaskScript::fails_after_polls(1, "POWER_OFF"))],
    );
    let toml = one_step("off", "vm-*", "concurrency = 1\nmax_failures = 0");
    let (run, plan, _) = run_early(&fake, &toml, Pages::of(100)).await;
    assert!(plan.is_some());
    let before_plan = run
        .events
        .iter()
        .take_while(|e| !matches!(e, Event::Planned { .. }))
        .filter(|e| matches!(e, Event::VmActing { .. }))
        .count();
    // The one that failed, and the one already waiting for its slot (as in any wave):
    // none was taken after the failure.
    assert!(
        before_plan <= 2,
        "the failure stopped the early start: {before_plan}"
    );
    // The whole plan's threshold then stops the run: nothing more is sent.
    assert!(run.summary.aborted.is_some(), "{:?}", run.summary);
    assert_eq!(fake.total_mutations(), before_plan);
    assert_eq!(run.results().len(), 250, "every VM is reported");
}

#[tokio::test(start_paused = true)]
async fn a_listing_that_fails_midway_finishes_what_started_and_stops() {
    let fake = fleet(250, VmState::On);
    let pages = Pages {
        fail_after: Some(1),
        ..Pages::of(100)
    };
    let (run, plan, _) = run_early(&fake, &one_step("off", "vm-*", ""), pages).await;
    assert!(plan.is_none(), "no whole plan");
    let reason = run.summary.aborted.clone().unwrap_or_default();
    assert!(reason.contains("cannot list the VMs"), "{reason}");
    // What started finished and is reported; nothing past the first page was touched.
    let started = fake.total_mutations();
    assert!(started > 0 && started <= 100, "{started}");
    let ok = run
        .results()
        .iter()
        .filter(|r| r.outcome == VmOutcome::Ok)
        .count();
    assert_eq!(ok, started);
    assert!(run.results().iter().all(|r| r.target < 100));
}

#[tokio::test(start_paused = true)]
async fn a_listing_that_changed_keeps_the_vms_already_handed_out_under_their_numbers() {
    let fake = fleet(250, VmState::On);
    // Read again, the listing lacks vm-001 and has the rest in another order.
    let mut whole: Vec<ListedVm> = fake.listing().iter().map(ListedVm::from).collect();
    whole.remove(1);
    whole.reverse();
    let pages = Pages {
        whole: Some(whole),
        ..Pages::of(100)
    };
    let toml = one_step("off", "vm-*", "concurrency = 5");
    let (run, plan, _) = run_early(&fake, &toml, pages).await;
    let plan = plan.expect("the whole plan");
    assert_numbered_as_planned(&run, &plan);
    assert_eq!(&*plan.steps[0].targets[1].vm.name, "vm-001", "kept");
    // Every VM still acted on once.
    assert_eq!(fake.total_mutations(), 250);
    assert_eq!(run.results().len(), 250);
    assert_eq!(run.summary.counts.ok, 250);
}

#[tokio::test(start_paused = true)]
async fn ctrl_c_while_the_vms_are_listed_ends_the_run_without_waiting_for_the_last_page() {
    let fake = fleet(1_000, VmState::On);
    let pages = Pages {
        delay: Duration::from_secs(10),
        interrupt_after: Some(Duration::from_secs(15)),
        ..Pages::of(100)
    };
    let started = Instant::now();
    let (run, plan, _) = run_early(&fake, &one_step("off", "vm-*", ""), pages).await;
    assert!(plan.is_none(), "the listing was not waited for");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(run.summary.interrupted);
    // What started finished and is reported; nothing else was touched.
    let started = fake.total_mutations();
    assert!(started > 0 && started <= 100, "{started}");
    assert_eq!(run.summary.counts.ok, started);
}
