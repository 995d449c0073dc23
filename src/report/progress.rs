//! Live progress on stderr. On a terminal: one bar per running step that counts only the VMs
//! that really finished (ok, skipped or failed, including those an earlier run finished),
//! with tasks in flight, failures, VMs left undone, the wave and its pause, elapsed time and
//! an estimate of what is left. Off a terminal: a line when a step starts, pauses between
//! waves and finishes. Purely presentational.

use crate::exec::event::{Event, ResultCounts, VmOutcome};
use crate::report::Reporter;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars on a terminal.
    Bars,
    /// A line per step start, wave pause and step end (stderr is a file or pipe).
    Lines,
    /// Nothing (`-q`).
    Off,
}

/// What a step's bar says besides its count.
#[derive(Debug, Default)]
struct StepState {
    name: String,
    total: usize,
    counts: ResultCounts,
    in_flight: usize,
    waves: usize,
    wave: usize,
    /// The step is between waves, until this instant.
    pausing_until: Option<Instant>,
    started: Option<Instant>,
}

impl StepState {
    fn message(&self) -> String {
        let mut parts = Vec::new();
        if self.in_flight > 0 {
            parts.push(format!("{} in flight", self.in_flight));
        }
        if self.counts.failed > 0 {
            parts.push(format!("{} failed", self.counts.failed));
        }
        let undone = self.counts.not_started + self.counts.interrupted;
        if undone > 0 {
            parts.push(format!("{undone} not done"));
        }
        if self.waves > 1 {
            match self.pausing_until {
                Some(until) => parts.push(format!(
                    "wave {}/{} — pausing {}s",
                    self.wave + 1,
                    self.waves,
                    until.saturating_duration_since(Instant::now()).as_secs()
                )),
                None => parts.push(format!("wave {}/{}", self.wave + 1, self.waves)),
            }
        }
        parts.join(" · ")
    }

    /// Results that count as finished: the bar's position.
    fn done(&self) -> usize {
        self.counts.ok + self.counts.skipped + self.counts.failed
    }
}

pub struct Progress {
    mode: ProgressMode,
    multi: MultiProgress,
    bars: HashMap<usize, ProgressBar>,
    steps: HashMap<usize, StepState>,
    /// Test mode: lines without times.
    timeless: bool,
}

impl Progress {
    /// `visible` = bars on a terminal; otherwise nothing is drawn (tests, libraries).
    pub fn new(visible: bool) -> Self {
        Self::with_mode(if visible {
            ProgressMode::Bars
        } else {
            ProgressMode::Off
        })
    }

    pub fn with_mode(mode: ProgressMode) -> Self {
        let target = match mode {
            // Redraws are rate limited: events can come thousands per second.
            ProgressMode::Bars => ProgressDrawTarget::stderr_with_hz(10),
            ProgressMode::Lines | ProgressMode::Off => ProgressDrawTarget::hidden(),
        };
        let mut p = Self::with_target(target);
        p.mode = mode;
        p
    }

    /// Draws bars to `target` (the scale benchmark measures the cost of drawing with it).
    pub fn with_target(target: ProgressDrawTarget) -> Self {
        Self {
            mode: ProgressMode::Bars,
            multi: MultiProgress::with_draw_target(target),
            bars: HashMap::new(),
            steps: HashMap::new(),
            timeless: false,
        }
    }

    /// The bars, for who must hold them still while asking on the terminal.
    pub fn bars(&self) -> MultiProgress {
        self.multi.clone()
    }

    /// Lines without elapsed times, for deterministic test output.
    pub fn timeless(mut self) -> Self {
        self.timeless = true;
        self
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{prefix:>16.bold} [{bar:24}] {pos}/{len} {elapsed:>4} eta {eta:<4} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
    }

    fn line(&self, text: &str) {
        if self.mode == ProgressMode::Lines {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{text}");
        }
    }

    fn elapsed(&self, started: Option<Instant>) -> String {
        match started {
            Some(at) if !self.timeless => {
                format!(" in {}", crate::plan::text::duration(ms(at.elapsed())))
            }
            _ => String::new(),
        }
    }

    fn refresh(&self, step: usize) {
        if let (Some(bar), Some(s)) = (self.bars.get(&step), self.steps.get(&step)) {
            bar.set_position(s.done() as u64);
            bar.set_message(s.message());
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Reporter for Progress {
    fn event(&mut self, event: &Event) {
        if self.mode == ProgressMode::Off {
            return;
        }
        match event {
            Event::RunStarted { plan, .. } => {
                for s in &plan.steps {
                    self.steps.insert(
                        s.index,
                        StepState {
                            name: s.name.to_string(),
                            total: s.targets.len(),
                            waves: s.waves.len(),
                            ..StepState::default()
                        },
                    );
                }
            }
            Event::StepStarted {
                step, name, waves, ..
            } => {
                let s = self.steps.entry(*step).or_default();
                s.name.clone_from(name);
                s.waves = *waves;
                s.started = Some(Instant::now());
                let (total, waves) = (s.total, s.waves);
                if self.mode == ProgressMode::Bars {
                    let bar = self.multi.add(ProgressBar::new(total as u64));
                    bar.set_style(Self::style());
                    bar.set_prefix(name.clone());
                    self.bars.insert(*step, bar);
                    self.refresh(*step);
                }
                self.line(&format!(
                    "step '{name}' started: {total} VMs in {waves} wave{}",
                    if waves == 1 { "" } else { "s" }
                ));
            }
            Event::WavePaused {
                step,
                wave,
                pause_ms,
            } => {
                let s = self.steps.entry(*step).or_default();
                s.pausing_until = Some(Instant::now() + Duration::from_millis(*pause_ms));
                s.wave = *wave;
                let text = format!(
                    "step '{}': wave {}/{} starts after a {} pause",
                    s.name,
                    wave + 1,
                    s.waves,
                    crate::plan::text::duration(*pause_ms)
                );
                self.refresh(*step);
                self.line(&text);
            }
            Event::WaveStarted { step, wave, .. } => {
                let s = self.steps.entry(*step).or_default();
                s.pausing_until = None;
                s.wave = *wave;
                self.refresh(*step);
            }
            Event::TaskAccepted { step, .. } => {
                self.steps.entry(*step).or_default().in_flight += 1;
                self.refresh(*step);
            }
            Event::TaskFinished { step, .. } => {
                let s = self.steps.entry(*step).or_default();
                s.in_flight = s.in_flight.saturating_sub(1);
                self.refresh(*step);
            }
            Event::VmFinished { result } => {
                let s = self.steps.entry(result.step).or_default();
                s.counts.add(&result.outcome);
                if matches!(result.outcome, VmOutcome::Interrupted { .. }) {
                    // Its task was left running in the cloud: no longer followed.
                    s.in_flight = s.in_flight.saturating_sub(1);
                }
                self.refresh(result.step);
            }
            Event::StepFinished { step, name, .. } => {
                let s = self.steps.entry(*step).or_default();
                s.in_flight = 0;
                s.pausing_until = None;
                let started = s.started;
                // What the bar counted, so the line and the bar never disagree.
                let counts = s.counts;
                let text = format!(
                    "step '{name}' finished{}: {} ok, {} skipped, {} failed, {} not done",
                    self.elapsed(started),
                    counts.ok,
                    counts.skipped,
                    counts.failed,
                    counts.not_started + counts.interrupted
                );
                self.refresh(*step);
                if let Some(bar) = self.bars.get(step) {
                    // Left as it is: a step cut short shows how far it got.
                    bar.abandon();
                }
                self.line(&text);
            }
            Event::RunAborted { reason } => {
                let text = format!("run aborted: {reason}; waiting for tasks in flight");
                let _ = self.multi.println(&text);
                self.line(&text);
            }
            Event::RunInterrupted { drain_ms } => {
                let text = format!(
                    "interrupted: starting nothing new, draining tasks in flight (up to {}s; \
                     Ctrl-C again to exit now)",
                    drain_ms / 1000
                );
                let _ = self.multi.println(&text);
                self.line(&text);
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> StepState {
        StepState {
            name: "web".into(),
            total: 10,
            waves: 3,
            ..StepState::default()
        }
    }

    #[test]
    fn not_started_vms_do_not_count_as_done() {
        let mut s = state();
        s.counts.ok = 4;
        s.counts.not_started = 6;
        assert_eq!(s.done(), 4);
        assert!(s.message().contains("6 not done"), "{}", s.message());
    }

    #[test]
    fn the_message_shows_what_is_in_flight_failed_and_the_wave_or_its_pause() {
        let mut s = state();
        s.in_flight = 3;
        s.counts.failed = 1;
        s.wave = 1;
        assert_eq!(s.message(), "3 in flight · 1 failed · wave 2/3");
        s.pausing_until = Some(Instant::now() + Duration::from_secs(30));
        let m = s.message();
        assert!(
            m.starts_with("3 in flight · 1 failed · wave 2/3 — pausing "),
            "{m}"
        );
    }
}
