//! Live progress on stderr: one bar per running step (done/total, failures). Hidden when
//! stderr is not a terminal and in test mode; purely presentational.

use crate::exec::event::{Event, VmOutcome};
use crate::report::Reporter;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;

pub struct Progress {
    multi: MultiProgress,
    bars: HashMap<usize, (ProgressBar, usize)>,
    totals: HashMap<usize, usize>,
    visible: bool,
}

impl Progress {
    /// `visible` = draw at all (the caller checks the terminal and test mode).
    pub fn new(visible: bool) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
            bars: HashMap::new(),
            totals: HashMap::new(),
            visible,
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{prefix:>16.bold} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }
}

impl Reporter for Progress {
    fn event(&mut self, event: &Event) {
        if !self.visible {
            return;
        }
        match event {
            Event::RunStarted { plan, .. } => {
                for s in &plan.steps {
                    self.totals.insert(s.index, s.targets.len());
                }
            }
            Event::StepStarted { step, name, .. } => {
                let total = self.totals.get(step).copied().unwrap_or(0);
                let bar = self.multi.add(ProgressBar::new(total as u64));
                bar.set_style(Self::style());
                bar.set_prefix(name.clone());
                self.bars.insert(*step, (bar, 0));
            }
            Event::VmFinished { result } => {
                if let Some((bar, failed)) = self.bars.get_mut(&result.step) {
                    if matches!(result.outcome, VmOutcome::Failed { .. }) {
                        *failed += 1;
                        bar.set_message(format!("{failed} failed"));
                    }
                    bar.inc(1);
                }
            }
            Event::StepFinished { step, .. } => {
                if let Some((bar, _)) = self.bars.get(step) {
                    bar.finish();
                }
            }
            Event::RunAborted { reason } => {
                let _ = self.multi.println(format!(
                    "run aborted: {reason}; waiting for tasks in flight"
                ));
            }
            Event::RunInterrupted { drain_ms } => {
                let _ = self.multi.println(format!(
                    "interrupted: starting nothing new, draining tasks in flight (up to {}s; \
                     Ctrl-C again to exit now)",
                    drain_ms / 1000
                ));
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        for (bar, _) in self.bars.values() {
            bar.finish();
        }
        let _ = self.multi.clear();
    }
}
