//! The executor's scheduling replayed on a virtual clock: when each step starts and ends,
//! given the time each of its VMs takes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// One step as the replay sees it.
pub(super) struct StepJob {
    /// Positions (in plan order) of the steps it waits for.
    pub after: Vec<usize>,
    pub concurrency: usize,
    pub pause: Duration,
    /// Per wave, the time each VM takes.
    pub waves: Vec<Vec<Duration>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Waiting,
    /// In wave `wave`, next VM `next`.
    Running {
        wave: usize,
        next: usize,
    },
    Pausing {
        until: Duration,
        wave: usize,
    },
    Done,
}

/// Replays the executor's scheduling on a virtual clock; returns (start, end) per step.
pub(super) fn replay(jobs: &[StepJob], run_limit: usize) -> Vec<(Duration, Duration)> {
    let n = jobs.len();
    let mut phase = vec![Phase::Waiting; n];
    let mut times = vec![(Duration::ZERO, Duration::ZERO); n];
    let mut in_flight = vec![0usize; n];
    let mut free = run_limit;
    // (end time, step) of each VM in flight; pauses end through `Phase::Pausing`.
    let mut events: BinaryHeap<Reverse<(Duration, usize)>> = BinaryHeap::new();
    let mut now = Duration::ZERO;
    loop {
        // Settle everything that can happen at `now`.
        let mut changed = true;
        while changed {
            changed = false;
            for i in 0..n {
                match phase[i] {
                    Phase::Waiting if jobs[i].after.iter().all(|&d| phase[d] == Phase::Done) => {
                        times[i].0 = now;
                        phase[i] = Phase::Running { wave: 0, next: 0 };
                        changed = true;
                    }
                    Phase::Pausing { until, wave } if until <= now => {
                        phase[i] = Phase::Running { wave, next: 0 };
                        changed = true;
                    }
                    Phase::Running { wave, mut next } => {
                        let Some(vms) = jobs[i].waves.get(wave) else {
                            phase[i] = Phase::Done;
                            times[i].1 = now;
                            changed = true;
                            continue;
                        };
                        while next < vms.len() && in_flight[i] < jobs[i].concurrency && free > 0 {
                            free -= 1;
                            in_flight[i] += 1;
                            events.push(Reverse((now + vms[next], i)));
                            next += 1;
                            changed = true;
                        }
                        phase[i] = Phase::Running { wave, next };
                        if next >= vms.len() && in_flight[i] == 0 {
                            let following = wave + 1;
                            phase[i] = if following >= jobs[i].waves.len() {
                                times[i].1 = now;
                                Phase::Done
                            } else if jobs[i].pause.is_zero() {
                                Phase::Running {
                                    wave: following,
                                    next: 0,
                                }
                            } else {
                                Phase::Pausing {
                                    until: now + jobs[i].pause,
                                    wave: following,
                                }
                            };
                            changed = true;
                        }
                    }
                    _ => {}
                }
            }
        }
        // Next moment something happens: a VM ends or a pause does.
        let next_vm = events.peek().map(|Reverse((t, _))| *t);
        let next_pause = phase
            .iter()
            .filter_map(|p| match p {
                Phase::Pausing { until, .. } => Some(*until),
                _ => None,
            })
            .min();
        let Some(next) = [next_vm, next_pause].into_iter().flatten().min() else {
            break;
        };
        now = next.max(now);
        while let Some(Reverse((t, i))) = events.peek().copied() {
            if t > now {
                break;
            }
            events.pop();
            in_flight[i] = in_flight[i].saturating_sub(1);
            free += 1;
        }
    }
    // Steps never started (a dependency that cannot finish) end where they are.
    for i in 0..n {
        if phase[i] != Phase::Done {
            times[i] = (now, now);
        }
    }
    times
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::estimate::ms;

    fn job(after: &[usize], concurrency: usize, waves: &[&[u64]], pause: u64) -> StepJob {
        StepJob {
            after: after.to_vec(),
            concurrency,
            pause: Duration::from_millis(pause),
            waves: waves
                .iter()
                .map(|w| w.iter().map(|&m| Duration::from_millis(m)).collect())
                .collect(),
        }
    }

    fn secs(times: &[(Duration, Duration)]) -> Vec<(u64, u64)> {
        times
            .iter()
            .map(|(s, e)| (ms(*s) / 1000, ms(*e) / 1000))
            .collect()
    }

    #[test]
    fn a_wave_takes_as_many_rounds_as_its_concurrency_needs() {
        // 5 VMs of 10s, 2 at a time: 3 rounds.
        let t = replay(&[job(&[], 2, &[&[10_000; 5]], 0)], 50);
        assert_eq!(secs(&t), [(0, 30)]);
    }

    #[test]
    fn waves_follow_each_other_with_their_pause() {
        let t = replay(&[job(&[], 10, &[&[10_000; 2], &[10_000; 2]], 5_000)], 50);
        assert_eq!(secs(&t), [(0, 25)]);
    }

    #[test]
    fn dependent_steps_wait_and_independent_ones_overlap() {
        let t = replay(
            &[
                job(&[], 10, &[&[10_000]], 0),
                job(&[0], 10, &[&[20_000]], 0),
                job(&[], 10, &[&[5_000]], 0),
            ],
            50,
        );
        assert_eq!(secs(&t), [(0, 10), (10, 30), (0, 5)]);
    }

    #[test]
    fn the_run_wide_limit_is_shared_by_parallel_steps() {
        // Two steps of 4 VMs each, 4 slots in the run: 8 VMs of 10s need 2 rounds.
        let t = replay(
            &[
                job(&[], 4, &[&[10_000; 4]], 0),
                job(&[], 4, &[&[10_000; 4]], 0),
            ],
            4,
        );
        let end = t.iter().map(|(_, e)| ms(*e)).max().unwrap();
        assert_eq!(end, 20_000);
    }

    #[test]
    fn steps_without_waves_end_at_once() {
        let t = replay(&[job(&[], 1, &[], 0), job(&[0], 1, &[&[1_000]], 0)], 5);
        assert_eq!(secs(&t), [(0, 0), (0, 1)]);
    }

    proptest::proptest! {
        // No regression files: the top level of the repository is fixed.
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Dependents start after what they wait for; a step lasts at least its slowest VM
        /// per wave plus the pauses, and the run never takes longer than doing it all in
        /// series.
        #[test]
        fn replay_respects_order_and_bounds(
            specs in proptest::collection::vec(
                (
                    proptest::collection::vec(proptest::collection::vec(1u64..5_000, 0..6), 0..4),
                    1usize..5,
                    0u64..2_000,
                    proptest::option::of(0usize..8),
                ),
                1..6,
            ),
            run_limit in 1usize..8,
        ) {
            let jobs: Vec<StepJob> = specs
                .iter()
                .enumerate()
                .map(|(i, (waves, c, pause, dep))| StepJob {
                    after: dep.filter(|&d| d < i).into_iter().collect(),
                    concurrency: *c,
                    pause: Duration::from_millis(*pause),
                    waves: waves
                        .iter()
                        .map(|w| w.iter().map(|&m| Duration::from_millis(m)).collect())
                        .collect(),
                })
                .collect();
            let t = replay(&jobs, run_limit);
            let mut serial = Duration::ZERO;
            for (i, job) in jobs.iter().enumerate() {
                let (start, end) = t[i];
                for &d in &job.after {
                    proptest::prop_assert!(start >= t[d].1);
                }
                let mut least = Duration::ZERO;
                for (w, wave) in job.waves.iter().enumerate() {
                    least += wave.iter().copied().max().unwrap_or_default();
                    serial += wave.iter().copied().sum::<Duration>();
                    if w > 0 {
                        least += job.pause;
                        serial += job.pause;
                    }
                }
                proptest::prop_assert!(end >= start + least, "step {i}: {t:?}");
            }
            let total = t.iter().map(|(_, e)| *e).max().unwrap_or_default();
            proptest::prop_assert!(total <= serial, "{total:?} > {serial:?}");
        }
    }
}
