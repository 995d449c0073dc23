//! Watching tasks through their VMs. The API shows a VM LOCKED while a task runs on it, so
//! one page of the VM listing tells, for every task in flight on the VMs it holds, whether
//! it has ended. VMs are acted on in listing order, so the VMs in flight crowd onto a few
//! pages: when several of a page's VMs may be finishing, one read of the page (from the
//! first of them to its last VM in flight) stands in for their polls. It is made up to four
//! times as often as each VM would poll, never more often than they all would: ends are
//! seen sooner, for fewer requests. A task seen ended is still read at its link once, for
//! its outcome. A VM the watch does not cover (few in flight on its page, overdue, not on
//! its page any more, a page that cannot be read) is polled as before.
//!
//! Only a look sent after the task was accepted counts: the API locks the VM before it
//! answers 202, so such a look showing it unlocked means the task is over. The end is
//! trusted (the VM's slots freed, its state taken as confirmed) only when a look saw the
//! VM LOCKED first; an API that does not lock VMs gets its tasks read, as before.

use crate::abiquo::api::CloudApi;
use crate::abiquo::error::ClientError;
use crate::abiquo::model::{VmSeen, VmState};
use crate::pacing::{PollPolicy, TaskDurations};
use crate::runbook::model::Action;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

/// Never two looks at one page closer than this.
const LOOK_MIN: Duration = Duration::from_millis(10);
/// Pages are gone through again at most this often on news (VMs registering, looks
/// answering): thousands of VMs in flight would otherwise cost a core.
const RECHECK: Duration = Duration::from_millis(5);
/// A look pays when at least this many of its page's VMs may be finishing (each still
/// costs one read of its task at the end); at a wave's end, one does.
const SHARED: usize = 3;
/// Looks at a page per gap its VMs' own polls would keep (fewer when fewer VMs may be
/// finishing on it: a page is never read more often than its VMs would poll); blind, per a
/// fifth of the time since a task started.
const LOOKS_PER_GAP: u32 = 4;
/// Looks in flight at once, run-wide, and per page (a slow API is not piled on).
const LOOKS_IN_FLIGHT: usize = 32;
const LOOKS_PER_PAGE: usize = 8;
/// Consecutive failed looks after which a page is left to its VMs' own polls.
const FAILURES_MAX: u32 = 3;

/// A VM seen out of LOCKED by a look sent after its task was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlocked {
    pub state: VmState,
    pub deallocated: Option<bool>,
    /// About when the API answered that look (half its round trip after sending).
    pub at: Instant,
    /// The last look before it that still saw the VM LOCKED, if any.
    pub locked_at: Option<Instant>,
}

/// The run's watch: VMs with a task in flight, by collection, and the loop that looks.
pub struct TaskWatch {
    /// VMs waiting for their slots: while none is, what is in flight is the end of a wave,
    /// and every VM that may be finishing is looked at (the last end decides when the run
    /// goes on).
    waiting: AtomicUsize,
    state: Mutex<State>,
    changed: Notify,
    policy: PollPolicy,
    durations: TaskDurations,
    /// VMs per page of the listing.
    page: usize,
}

#[derive(Default)]
struct State {
    /// By the offset the page starts at.
    groups: HashMap<usize, Group>,
    next_id: u64,
}

#[derive(Default)]
struct Group {
    members: HashMap<u64, Member>,
    last_sent: Option<Instant>,
    failures: u32,
    in_flight: usize,
}

impl Group {
    /// Its reads failed too often: its VMs are left to their own polls.
    fn given_up(&self) -> bool {
        self.failures >= FAILURES_MAX
    }
}

struct Member {
    vm: Arc<str>,
    /// Its place in the listing.
    position: usize,
    action: Action,
    since: Instant,
    locked_at: Option<Instant>,
    tx: Option<oneshot::Sender<Unlocked>>,
}

impl TaskWatch {
    /// A watch over a listing of `page` VMs per page.
    pub fn new(policy: PollPolicy, durations: TaskDurations, page: usize) -> Self {
        Self {
            waiting: AtomicUsize::new(0),
            state: Mutex::default(),
            changed: Notify::new(),
            policy,
            durations,
            page: page.max(1),
        }
    }

    /// Counts a VM as waiting for its slots until the guard is dropped.
    pub fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(self)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Watches the VM at `vm_href`, listed at `position`, for the end of the task of
    /// `action` accepted at `since`. `release` runs once the VM is seen out of LOCKED (the
    /// slots a final task holds).
    pub fn register<'w>(
        &'w self,
        position: usize,
        vm_href: &Arc<str>,
        action: Action,
        since: Instant,
        release: Option<&'w (dyn Fn() + Sync)>,
    ) -> Watched<'w> {
        let group = position / self.page * self.page;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut state = self.lock();
            state.next_id += 1;
            let id = state.next_id;
            state.groups.entry(group).or_default().members.insert(
                id,
                Member {
                    vm: Arc::clone(vm_href),
                    position,
                    action,
                    since,
                    locked_at: None,
                    tx: Some(tx),
                },
            );
            id
        };
        // A permit is kept if the loop is busy: it looks at the new member next time round.
        self.changed.notify_one();
        Watched {
            watch: self,
            group,
            id,
            rx: Some(rx),
            release,
        }
    }

    fn unregister(&self, group: usize, id: u64) {
        let mut state = self.lock();
        if let Some(g) = state.groups.get_mut(&group) {
            g.members.remove(&id);
            if g.members.is_empty() && g.in_flight == 0 {
                state.groups.remove(&group);
            }
        }
    }

    fn locked_at(&self, group: usize, id: u64) -> Option<Instant> {
        let state = self.lock();
        let g = state.groups.get(&group)?;
        if g.given_up() {
            return None;
        }
        g.members.get(&id)?.locked_at
    }

    /// Reads the pages whose VMs may be finishing, for as long as the run goes.
    pub async fn run<A: CloudApi>(&self, client: &A) {
        let mut looks = FuturesUnordered::new();
        // When the pages were last gone through, and when that said to wake; news since
        // (a VM registered, a look answered) is taken in at most every `RECHECK`.
        let mut checked: Option<Instant> = None;
        let mut planned: Option<Instant> = None;
        let mut news = true;
        loop {
            let now = Instant::now();
            let recheck = checked.map(|t| t + RECHECK);
            let wake = if planned.is_some_and(|p| p <= now)
                || (news && recheck.is_none_or(|r| r <= now))
            {
                let (start, wake) = self.due(now, LOOKS_IN_FLIGHT.saturating_sub(looks.len()));
                for (group, range) in start {
                    looks.push(async move {
                        let sent = Instant::now();
                        let seen = client
                            .list_vm_states_range(range.0, range.1 - range.0)
                            .await;
                        (group, range, sent, Instant::now(), seen)
                    });
                }
                (checked, planned, news) = (Some(now), wake, false);
                wake
            } else if news {
                earliest(planned, recheck)
            } else {
                planned
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                () = self.changed.notified() => news = true,
                Some((group, range, sent, received, seen)) = looks.next(), if !looks.is_empty() => {
                    self.apply(group, range, sent, received, seen);
                    news = true;
                }
            }
        }
    }

    /// The pages to look at now (at most `room`), each with the part of it to read (from
    /// its first VM that may be finishing to its last in flight), and when to wake next.
    #[allow(clippy::type_complexity)]
    fn due(&self, now: Instant, room: usize) -> (Vec<(usize, (usize, usize))>, Option<Instant>) {
        let lead = self.durations.half_round_trip();
        let mut windows = HashMap::new();
        let mut window = |action: Action| {
            *windows
                .entry(action)
                .or_insert_with(|| self.durations.window(action))
        };
        // At the end of a wave a look at a single VM pays: it ends the wave sooner.
        let shared = if self.waiting.load(Ordering::SeqCst) == 0 {
            1
        } else {
            SHARED
        };
        let mut state = self.lock();
        let mut start = Vec::new();
        let mut wake: Option<Instant> = None;
        let mut wake_at = |at: Instant| wake = earliest(wake, Some(at));
        for (&group, g) in &mut state.groups {
            if g.given_up() || g.in_flight >= LOOKS_PER_PAGE {
                continue;
            }
            // Members that may be finishing (the others say when they start to).
            let mut eligible = 0usize;
            // The shortest gap the VMs' own polls would keep now, and the shortest the
            // watch aims at.
            let mut gap = self.policy.max;
            let mut aim = self.policy.max;
            let mut range = (usize::MAX, 0);
            for m in g.members.values().filter(|m| m.tx.is_some()) {
                // To the page's last VM in flight: those that start finishing before the
                // next look are seen LOCKED by this one, so their polls wait for the next.
                range.1 = range.1.max(m.position + 1);
                let w = window(m.action);
                let elapsed = now.saturating_duration_since(m.since) + lead;
                let from = match w {
                    Some(w) => w.lo,
                    None => self.policy.initial,
                };
                if elapsed >= from {
                    eligible += 1;
                    range.0 = range.0.min(m.position);
                    let own = self.policy.next_delay(elapsed, w);
                    gap = gap.min(own);
                    // Blind, own polls back off far apart: the watch looks at a small share
                    // of the time since the task started, so the first ends of a run are
                    // seen early and teach every wait the window.
                    let share = match w {
                        Some(_) => own,
                        None => elapsed.mul_f64(self.policy.max_relative_gap.clamp(0.01, 1.0)),
                    };
                    aim = aim.min(share / LOOKS_PER_GAP);
                } else {
                    wake_at(now + (from - elapsed));
                }
            }
            if eligible < shared {
                continue;
            }
            // Never more reads of the page than its VMs would poll themselves.
            let neutral = gap / u32::try_from(eligible).unwrap_or(u32::MAX).max(1);
            let every = aim
                .max(neutral)
                .clamp(LOOK_MIN, self.policy.max.max(LOOK_MIN));
            let next = g.last_sent.map_or(now, |t| t + every);
            if next > now {
                wake_at(next);
            } else if start.len() < room {
                g.last_sent = Some(now);
                g.in_flight += 1;
                start.push((group, range));
                wake_at(now + every);
            }
        }
        (start, wake)
    }

    /// What a look answered: members seen out of LOCKED are told; the others noted LOCKED.
    fn apply(
        &self,
        group: usize,
        (from, to): (usize, usize),
        sent: Instant,
        received: Instant,
        seen: Result<Vec<VmSeen>, ClientError>,
    ) {
        let took = received.saturating_duration_since(sent);
        let at = sent + took / 2;
        let mut state = self.lock();
        let Some(g) = state.groups.get_mut(&group) else {
            return;
        };
        g.in_flight = g.in_flight.saturating_sub(1);
        match seen {
            Err(e) => {
                g.failures += 1;
                if g.given_up() || e.is_fatal_for_run() {
                    g.failures = FAILURES_MAX;
                    tracing::debug!(
                        "not watching the listing's page at {group} any more ({e}); its VMs \
                         are polled"
                    );
                }
            }
            Ok(seen) => {
                if !g.given_up() {
                    g.failures = 0;
                }
                let by_href: HashMap<&str, &VmSeen> =
                    seen.iter().map(|s| (s.href.as_str(), s)).collect();
                for m in g.members.values_mut() {
                    if m.since >= sent || m.tx.is_none() || !(from..to).contains(&m.position) {
                        continue;
                    }
                    match by_href.get(&*m.vm) {
                        None => m.locked_at = None,
                        Some(s) if s.state == VmState::Locked => {
                            m.locked_at = Some(m.locked_at.map_or(at, |t| t.max(at)));
                        }
                        Some(s) => {
                            if let Some(tx) = m.tx.take() {
                                let _ = tx.send(Unlocked {
                                    state: s.state.clone(),
                                    deallocated: s.deallocated,
                                    at,
                                    locked_at: m.locked_at,
                                });
                            }
                        }
                    }
                }
            }
        }
        if g.members.is_empty() && g.in_flight == 0 {
            state.groups.remove(&group);
        }
        drop(state);
        self.durations.record_round_trip(took);
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    a.into_iter().chain(b).min()
}

/// A VM waiting for its slots (see [`TaskWatch::waiting`]).
pub struct Waiting<'w>(&'w TaskWatch);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.0.waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The wave's last VM got its slots: pages with one VM left may be due now.
            self.0.changed.notify_one();
        }
    }
}

/// One VM's place in the watch, until dropped.
pub struct Watched<'w> {
    watch: &'w TaskWatch,
    group: usize,
    id: u64,
    rx: Option<oneshot::Receiver<Unlocked>>,
    release: Option<&'w (dyn Fn() + Sync)>,
}

impl Watched<'_> {
    /// When a look last saw the VM still LOCKED (while the watch covers it).
    pub fn locked_at(&self) -> Option<Instant> {
        self.watch.locked_at(self.group, self.id)
    }

    /// Until a look sees the VM out of LOCKED (never, once it has been told or the watch
    /// stopped). Cancel-safe.
    pub async fn unlocked(&mut self) -> Unlocked {
        let Some(rx) = self.rx.as_mut() else {
            return std::future::pending().await;
        };
        match rx.await {
            Ok(seen) => {
                self.rx = None;
                // Seen LOCKED first, the VM shows this API locks it for the task: its end
                // frees the slots. Otherwise it is only a hint to read the task now.
                if seen.locked_at.is_some()
                    && let Some(release) = self.release.take()
                {
                    release();
                }
                seen
            }
            Err(_) => {
                self.rx = None;
                std::future::pending().await
            }
        }
    }
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        self.watch.unregister(self.group, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// How many reads of the page `n` VMs, accepted 1.9 s ago (their tasks take 1.8 s to
    /// 2.2 s), get over the next 400 ms, with no VM waiting for a slot.
    fn reads_with(n: usize) -> usize {
        let durations = TaskDurations::new();
        for i in 0..20 {
            durations.record(Action::Off, ms(1800 + (i * 37) % 400));
        }
        let watch = TaskWatch::new(PollPolicy::default(), durations, 100);
        let start = Instant::now();
        let since = start.checked_sub(ms(1900)).unwrap_or(start);
        let _members: Vec<Watched<'_>> = (0..n)
            .map(|i| {
                let href: Arc<str> = format!("http://x/vm/{i}").into();
                watch.register(i, &href, Action::Off, since, None)
            })
            .collect();
        let mut reads = 0;
        for step in 0..400 {
            let (looks, _) = watch.due(start + ms(step), LOOKS_IN_FLIGHT);
            reads += looks.len();
            for (group, range) in looks {
                // Answered at once, showing none of the VMs: nothing ends.
                watch.apply(
                    group,
                    range,
                    start + ms(step),
                    start + ms(step),
                    Ok(Vec::new()),
                );
            }
        }
        reads
    }

    #[test]
    fn a_page_is_never_read_more_often_than_its_vms_would_poll() {
        // One VM at a wave's end: about its own polls' pace (a gap of ~90 ms in the window).
        let one = reads_with(1);
        assert!((2..=6).contains(&one), "{one} reads for one VM");
        // Twenty VMs: four reads per gap, far fewer than their twenty polls.
        let many = reads_with(20);
        assert!(many > one * 2 && many <= 24, "{many} reads for twenty VMs");
    }
}
