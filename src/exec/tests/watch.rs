//! Watching tasks through the listing's pages: VMs in flight together on one page are seen
//! finishing by reads of that page instead of polls of each task; a VM the watch does not
//! cover, or an API that does not lock VMs, is polled as before.

use super::*;
use crate::exec::fake::{CallKind, Reply, TaskScript};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `n` VMs `vm-00`… ON, each answering its power request with a task of 1.9 s to 2.1 s
/// (inside the learned window: none ends before the watch starts looking, nor overdue).
fn cloud(n: usize) -> FakeCloud {
    let fake = (0..n).fold(FakeCloud::new(), |f, i| {
        f.with_vm(&format!("vm-{i:02}"), VmState::On)
    });
    for i in 0..n {
        let took = ms(1900 + (i as u64 * 37) % 200);
        fake.script(
            &format!("vm-{i:02}"),
            [Reply::Accept(TaskScript::ok_after(took))],
        );
    }
    fake
}

/// A run of `off` on every VM, `concurrency` at once, with the tasks' window (1.8 s to
/// 2.2 s) already learned.
fn learned(fake: FakeCloud, concurrency: usize) -> Harness {
    let toml = one_step("off", "vm-*", &format!("concurrency = {concurrency}"));
    let h = harness(fake, &toml).with_listing();
    for i in 0..20 {
        h.options
            .durations
            .record(Action::Off, ms(1800 + (i * 37) % 400));
    }
    h
}

fn count(h: &Harness, kind: CallKind) -> usize {
    h.fake.calls().iter().filter(|c| c.kind == kind).count()
}

#[tokio::test(start_paused = true)]
async fn vms_in_flight_on_one_page_are_seen_finishing_by_reads_of_the_page_not_polls() {
    let n = 20;
    let h = learned(cloud(n), n);
    let run = h.run().await;
    for i in 0..n {
        let vm = format!("vm-{i:02}");
        assert_eq!(run.outcome(&vm), &VmOutcome::Ok, "{vm}");
        assert_eq!(run.result(&vm).state_after, Some(VmState::Off), "{vm}");
        assert_eq!(
            h.fake.polls(&vm),
            1,
            "{vm}: its task is read once, when it ended"
        );
    }
    let looks = count(&h, CallKind::ListPage);
    assert!(
        (1..n).contains(&looks),
        "{looks} looks for {n} VMs finishing over 0.4 s"
    );
    // The looks confirmed where the VMs ended: no read per VM. The last ones, too few in
    // flight for a look to pay, were polled and are confirmed by one listing after the wave.
    assert_eq!(count(&h, CallKind::GetVm), 0);
    assert!(count(&h, CallKind::ListVms) <= 1);
    // Every finish was seen within a look's spacing (10 ms to half a poll gap).
    for i in 0..n {
        let vm = format!("vm-{i:02}");
        let (_, ended) = h.fake.task_spans(&vm)[0];
        let ended = ended.expect("ended");
        let read = h
            .fake
            .calls()
            .iter()
            .rfind(|c| c.vm == vm && c.kind == CallKind::GetTask)
            .map(|c| c.at)
            .expect("task read");
        assert!(read - ended <= ms(80), "{vm}: seen {:?} late", read - ended);
    }
}

#[tokio::test(start_paused = true)]
async fn a_slot_frees_when_its_vm_is_seen_unlocked_before_its_task_is_read() {
    // Three slots for six VMs, and task reads that take half a second: the fourth VM is
    // sent its request as soon as a look sees the first one's task over, not once that
    // task has been read.
    let fake = cloud(6);
    fake.slow_task_reads(ms(500));
    let h = learned(fake, 3);
    let run = h.run().await;
    assert!(run.results().iter().all(|r| r.outcome == VmOutcome::Ok));
    let (_, ended) = h.fake.task_spans("vm-00")[0];
    let ended = ended.expect("ended");
    let sent = h
        .fake
        .calls()
        .iter()
        .find(|c| c.vm == "vm-03" && c.kind == CallKind::Power)
        .map(|c| c.at)
        .expect("vm-03 was sent its request");
    assert!(
        sent >= ended && sent - ended < ms(100),
        "{:?}",
        sent - ended
    );
    assert!(h.fake.max_in_flight(|_| true) <= 3);
}

#[tokio::test(start_paused = true)]
async fn a_page_with_too_few_vms_in_flight_is_read_only_once_no_vm_waits_for_a_slot() {
    // Two slots for six VMs: two in flight on the page do not pay for a look while VMs
    // wait for slots; at the wave's end they do, so the last ends are seen sooner.
    let h = learned(cloud(6), 2);
    let run = h.run().await;
    assert!(run.results().iter().all(|r| r.outcome == VmOutcome::Ok));
    let calls = h.fake.calls();
    let last_request = calls
        .iter()
        .filter(|c| c.kind == CallKind::Power)
        .map(|c| c.at)
        .max()
        .expect("requests");
    let looks: Vec<_> = calls
        .iter()
        .filter(|c| c.kind == CallKind::ListPage)
        .map(|c| c.at)
        .collect();
    assert!(!looks.is_empty(), "the last two VMs are watched");
    assert!(
        looks.iter().all(|&at| at >= last_request),
        "no look while VMs waited for slots"
    );
    // The first four were polled.
    assert!(h.fake.polls("vm-00") >= 2);
}

#[tokio::test(start_paused = true)]
async fn with_the_watch_off_every_task_is_polled_at_its_link() {
    let n = 20;
    let mut h = learned(cloud(n), n);
    h.options.watch = false;
    let run = h.run().await;
    assert!(run.results().iter().all(|r| r.outcome == VmOutcome::Ok));
    // At most the page that confirms the wave at its end.
    assert!(count(&h, CallKind::ListPage) <= 1);
    let polls: usize = (0..n).map(|i| h.fake.polls(&format!("vm-{i:02}"))).sum();
    assert!(polls > n, "{polls} polls");
}

#[tokio::test(start_paused = true)]
async fn an_api_that_does_not_lock_vms_gets_its_tasks_read_to_their_end() {
    // The VMs never show LOCKED: a look sees them "unlocked" at once, still ON. That is
    // only a hint: each task is read until it really ended, and the VM's state is not
    // taken from the look.
    let n = 10;
    let fake = (0..n).fold(FakeCloud::new(), |f, i| {
        f.with_vm(&format!("vm-{i:02}"), VmState::On)
    });
    for i in 0..n {
        fake.script(
            &format!("vm-{i:02}"),
            [Reply::Accept(TaskScript::ok_after(ms(2000)).unlocked())],
        );
    }
    let h = learned(fake, n);
    let run = h.run().await;
    for i in 0..n {
        let vm = format!("vm-{i:02}");
        assert_eq!(run.outcome(&vm), &VmOutcome::Ok, "{vm}");
        assert_eq!(run.result(&vm).state_after, Some(VmState::Off), "{vm}");
        assert_eq!(run.result(&vm).task_state, ok_task(), "{vm}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_task_seen_by_a_look_is_read_for_its_jobs() {
    let n = 6;
    let fake = cloud(0);
    let fake = (0..n).fold(fake, |f, i| f.with_vm(&format!("vm-{i:02}"), VmState::On));
    for i in 0..n {
        let script = if i == 3 {
            TaskScript {
                finish: crate::exec::fake::Finish::After(ms(2000)),
                ..TaskScript::fails_after_polls(1, "POWER_OFF")
            }
        } else {
            TaskScript::ok_after(ms(1900 + i as u64 * 20))
        };
        fake.script(&format!("vm-{i:02}"), [Reply::Accept(script)]);
    }
    let h = learned(fake, n);
    let run = h.run().await;
    assert!(
        run.failure("vm-03").contains("POWER_OFF"),
        "{}",
        run.failure("vm-03")
    );
    assert_eq!(run.result("vm-03").failed_jobs.len(), 1);
    assert_eq!(run.result("vm-03").state_after, Some(VmState::On));
    assert!(count(&h, CallKind::ListPage) >= 1);
}
