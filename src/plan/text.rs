//! Short texts the plan's reporters share: durations and the transition an acting VM will
//! make. The plan itself holds typed data; only reporters (the human plan, the `transition`
//! field of the JSON document, "skipped: …" reasons) turn it into words.

use crate::abiquo::model::{PowerRequest, PowerState, VmState};
use crate::plan::PlannedFallback;
use crate::runbook::model::Action;
use std::time::Duration;

/// `850ms`, `12.5s`, `6m 20s`, `1h 30m`.
pub fn duration(ms: u64) -> String {
    if ms == 0 {
        "0s".into()
    } else if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let secs = ms.div_ceil(1000);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        match (h, s) {
            (0, 0) => format!("{m}m"),
            (0, _) => format!("{m}m {s}s"),
            (_, _) if m == 0 => format!("{h}h"),
            _ => format!("{h}h {m}m"),
        }
    }
}

/// `ON → OFF (graceful, fallback hard off after 5m)`, `PAUSED → ON (resume)`,
/// `ON → reset → ON` and the like.
pub fn transition(
    from: &VmState,
    to: &VmState,
    request: PowerRequest,
    deallocate: bool,
    fallback: Option<&PlannedFallback>,
) -> String {
    let how = match request {
        PowerRequest::Reset => return format!("{from} → reset → {to}"),
        PowerRequest::State { graceful: true, .. } => match fallback {
            Some(f) => format!(
                " (graceful, fallback {} after {})",
                fallback_action(f.action),
                humantime::format_duration(Duration::from_millis(f.after_ms))
            ),
            None => " (graceful)".into(),
        },
        PowerRequest::State {
            target: PowerState::Off,
            ..
        } if deallocate => " (deallocated)".into(),
        PowerRequest::State {
            target: PowerState::Off,
            ..
        } => " (hard)".into(),
        PowerRequest::State {
            target: PowerState::On,
            ..
        } if *from == VmState::Paused => " (resume)".into(),
        PowerRequest::State { .. } => String::new(),
    };
    // A restart goes through OFF on its way back ON.
    let via = request.target_state();
    if via != *to && *from != via {
        return format!("{from} → {via} → {to}{how}");
    }
    format!("{from} → {to}{how}")
}

fn fallback_action(action: Action) -> String {
    match action {
        Action::Off => "hard off".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_short_and_round_up_to_the_second_past_a_minute() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_340), "12.3s");
        assert_eq!(duration(60_000), "1m");
        assert_eq!(duration(379_200), "6m 20s");
        assert_eq!(duration(5_400_000), "1h 30m");
        assert_eq!(duration(7_200_000), "2h");
    }
}
