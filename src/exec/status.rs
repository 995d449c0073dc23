//! The final verdict of a run, decided in one place: its exit code, its status word in
//! `powerbook runs`, and whether it is worth resuming.

use crate::exec::event::{ResultCounts, Summary};
use crate::exit::Outcome;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalStatus {
    /// Every VM succeeded, was skipped or was already as asked.
    Finished,
    /// The run got to its end but some VMs failed (or were cut short).
    Failed,
    /// Stopped early: failure threshold, deadline, API gone.
    Aborted,
    /// Stopped by Ctrl-C.
    Interrupted,
    /// No end record: the run crashed or is still running.
    Incomplete,
}

impl FinalStatus {
    /// The verdict of a run from its end record (`None`: it has none) and the latest result
    /// counts of its VMs. Precedence: interrupted > aborted > some failed > finished.
    pub fn of(summary: Option<&Summary>, counts: &ResultCounts) -> Self {
        match summary {
            None => FinalStatus::Incomplete,
            Some(s) if s.interrupted => FinalStatus::Interrupted,
            Some(s) if s.aborted.is_some() => FinalStatus::Aborted,
            Some(_) if counts.failed > 0 || counts.interrupted > 0 => FinalStatus::Failed,
            Some(_) => FinalStatus::Finished,
        }
    }

    /// The verdict of a run that just ended, from its own summary.
    pub fn of_summary(summary: &Summary) -> Self {
        Self::of(Some(summary), &summary.counts)
    }

    /// The verdict of a run whose every VM already has its final result (nothing is left
    /// to resume, whatever stopped it): only failures count.
    pub fn settled(counts: &ResultCounts) -> Self {
        if counts.failed > 0 {
            FinalStatus::Failed
        } else {
            FinalStatus::Finished
        }
    }

    /// The exit code. An incomplete run did not get to its end, like an aborted one.
    pub fn outcome(self) -> Outcome {
        match self {
            FinalStatus::Finished => Outcome::Success,
            FinalStatus::Failed => Outcome::SomeFailed,
            FinalStatus::Aborted | FinalStatus::Incomplete => Outcome::Aborted,
            FinalStatus::Interrupted => Outcome::Interrupted,
        }
    }

    /// The status word of `powerbook runs` (part of its JSON output: keep the words).
    pub fn word(self) -> &'static str {
        match self {
            FinalStatus::Finished => "succeeded",
            FinalStatus::Failed => "failed",
            FinalStatus::Aborted => "aborted",
            FinalStatus::Interrupted => "interrupted",
            FinalStatus::Incomplete => "incomplete",
        }
    }

    /// Whether the run stopped before its end, so `powerbook resume` has work left.
    pub fn resume_hint_due(self) -> bool {
        matches!(
            self,
            FinalStatus::Aborted | FinalStatus::Interrupted | FinalStatus::Incomplete
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abiquo::client::ClientStats;

    fn summary(failed: usize, aborted: bool, interrupted: bool) -> Summary {
        Summary {
            counts: ResultCounts {
                ok: 1,
                failed,
                ..ResultCounts::default()
            },
            wall_ms: 0,
            aborted: aborted.then(|| "x".to_owned()),
            interrupted,
            api: ClientStats::default(),
        }
    }

    fn exit_code(s: &Summary) -> u8 {
        FinalStatus::of_summary(s).outcome().code()
    }

    #[test]
    fn exit_codes_follow_the_documented_policy() {
        assert_eq!(exit_code(&summary(0, false, false)), 0);
        assert_eq!(exit_code(&summary(1, false, false)), 1);
        assert_eq!(exit_code(&summary(1, true, false)), 3);
        assert_eq!(exit_code(&summary(1, true, true)), 130);
    }

    #[test]
    fn status_words_and_resume_hints_follow_the_verdict() {
        let counts = ResultCounts::default();
        let cases = [
            (FinalStatus::of(None, &counts), "incomplete", true),
            (
                FinalStatus::of_summary(&summary(0, false, true)),
                "interrupted",
                true,
            ),
            (
                FinalStatus::of_summary(&summary(0, true, false)),
                "aborted",
                true,
            ),
            (
                FinalStatus::of_summary(&summary(1, false, false)),
                "failed",
                false,
            ),
            (
                FinalStatus::of_summary(&summary(0, false, false)),
                "succeeded",
                false,
            ),
        ];
        for (status, word, hint) in cases {
            assert_eq!((status.word(), status.resume_hint_due()), (word, hint));
        }
        let cut_short = ResultCounts {
            interrupted: 1,
            ..ResultCounts::default()
        };
        assert_eq!(
            FinalStatus::of(Some(&summary(0, false, false)), &cut_short),
            FinalStatus::Failed
        );
        assert_eq!(FinalStatus::settled(&cut_short), FinalStatus::Finished);
    }
}
