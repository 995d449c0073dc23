//! Restore runbooks: from a journal, a runbook that returns every VM the run touched to the
//! power state it had before, undoing the run's steps in reverse order.

use crate::abiquo::model::VmState;
use crate::exec::event::{PathTaken, VmOutcome};
use crate::journal::{RunView, VmTrack};
use crate::runbook::model::Action;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How long a restore's graceful shutdown may take before the hard off.
const SHUTDOWN_FALLBACK: &str = "2m";

/// One VM to bring back.
#[derive(Debug, Clone, PartialEq)]
struct Back {
    name: String,
    href: String,
    before: VmState,
    /// When the run first acted on it (ms since the epoch).
    first_ms: u64,
    /// Its place in the step's targets (restore keeps the run's order).
    target: usize,
}

/// Whether the run sent a power action to the VM in this step (a task was accepted, or the
/// result says it went a way other than skipping).
fn touched(t: &VmTrack) -> bool {
    t.first_intent.is_some()
        && (t.task_href.is_some()
            || t.finished.as_ref().is_some_and(|r| {
                matches!(r.outcome, VmOutcome::Ok)
                    && matches!(
                        r.path,
                        PathTaken::Direct | PathTaken::Graceful | PathTaken::Forced
                    )
            }))
}

/// Why the run touched nothing, for [`restore_runbook`].
pub const NOTHING_TOUCHED: &str = "the run touched no VM: there is nothing to restore";

/// The restore runbook's TOML text; `Ok(None)` when the run touched no VM. `Err` only (a bug)
/// when the generated text would not validate.
pub fn restore_runbook(view: &RunView, journal_path: &str) -> Result<Option<String>, String> {
    // The earliest touch of each VM decides its state before the run and its restore step.
    let mut first: BTreeMap<String, (usize, Back)> = BTreeMap::new();
    // The latest state seen after the run, per VM.
    let mut last_after: BTreeMap<String, (u64, VmState)> = BTreeMap::new();
    let mut deallocated_before: BTreeMap<String, bool> = BTreeMap::new();
    for (&(step, target), t) in &view.vms {
        let Some((intent, at)) = &t.first_intent else {
            continue;
        };
        if !touched(t) {
            continue;
        }
        let href = t.vm.href.to_string();
        if let Some(r) = &t.finished
            && let Some(after) = &r.state_after
        {
            let at_last = t.intent.as_ref().map_or(*at, |(_, ms)| *ms);
            if last_after.get(&href).is_none_or(|(ms, _)| *ms <= at_last) {
                last_after.insert(href.clone(), (at_last, after.clone()));
            }
        }
        let back = Back {
            name: t.vm.name.to_string(),
            href: href.clone(),
            before: intent.from.clone(),
            first_ms: *at,
            target,
        };
        if first.get(&href).is_none_or(|(_, b)| b.first_ms > *at) {
            let dealloc = view
                .plan
                .as_ref()
                .and_then(|p| p.steps.iter().find(|s| s.index == step))
                .and_then(|s| s.targets.get(target))
                .and_then(|pv| pv.deallocated)
                .unwrap_or(false);
            deallocated_before.insert(href.clone(), dealloc);
            first.insert(href, (step, back));
        }
    }
    if first.is_empty() {
        return Ok(None);
    }
    // Group by step, steps in the order the run first acted in them, then reversed.
    let mut by_step: BTreeMap<usize, Vec<Back>> = BTreeMap::new();
    for (step, back) in first.into_values() {
        by_step.entry(step).or_default().push(back);
    }
    for vms in by_step.values_mut() {
        vms.sort_by_key(|b| b.target);
    }
    let mut steps: Vec<(usize, Vec<Back>)> = by_step.into_iter().collect();
    steps.sort_by_key(|(_, vms)| vms.iter().map(|b| b.first_ms).min().unwrap_or(0));
    steps.reverse();

    let name = &view.header.runbook_name;
    let step_name = |index: usize| {
        view.plan
            .as_ref()
            .and_then(|p| p.steps.iter().find(|s| s.index == index))
            .map_or_else(|| format!("step {index}"), |s| s.name.to_string())
    };
    let mut out = String::new();
    let _ = writeln!(out, "#:schema ./runbook.schema.json");
    let _ = writeln!(
        out,
        "# Restore runbook written by powerbook {} from the journal {journal_path}.",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "# It returns the VMs that run '{name}' (started {}) touched to their power state \
         before it,\n# undoing its steps in reverse order. Check it with `powerbook plan` \
         before running it.",
        view.header.started_at
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "name = {}", quote(&format!("restore: {name}")));
    let _ = writeln!(
        out,
        "description = {}",
        quote(&format!(
            "Undo run '{name}' of {} (journal {journal_path})",
            view.header.started_at
        ))
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "[api]\nendpoint = {}", quote(&view.header.endpoint));
    let mut unrestorable = Vec::new();
    for (step, vms) in steps {
        let mut by_action: BTreeMap<Action, Vec<Back>> = BTreeMap::new();
        for b in vms {
            let after = last_after.get(&b.href).map(|(_, s)| s.clone());
            let dealloc = deallocated_before.get(&b.href).copied().unwrap_or(false);
            match restore_action(&b.before, dealloc, after.as_ref()) {
                Some(a) => by_action.entry(a).or_default().push(b),
                None => unrestorable.push(b),
            }
        }
        let original = step_name(step);
        for (action, vms) in by_action {
            let _ = writeln!(out);
            let _ = writeln!(out, "[[step]]");
            let _ = writeln!(
                out,
                "name = {}",
                quote(&format!("undo '{original}': {action}"))
            );
            let _ = writeln!(out, "action = \"{action}\"");
            if action == Action::Shutdown {
                let _ = writeln!(
                    out,
                    "fallback = {{ action = \"off\", after = \"{SHUTDOWN_FALLBACK}\" }}"
                );
            }
            let _ = writeln!(out, "on_failure = \"continue\"");
            let _ = writeln!(out, "targets = [");
            for b in vms {
                let _ = writeln!(
                    out,
                    "  {{ href = {} }}, # {} (was {})",
                    quote(&b.href),
                    b.name.replace(['\n', '\r'], " "),
                    b.before
                );
            }
            let _ = writeln!(out, "]");
        }
    }
    if !unrestorable.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "# Not restorable with a power action (their state before the run):"
        );
        for b in unrestorable {
            let _ = writeln!(
                out,
                "#   {} was {} ({})",
                b.name.replace(['\n', '\r'], " "),
                b.before,
                b.href
            );
        }
    }
    crate::runbook::parse("restore.toml", &out)
        .map_err(|f| format!("the generated restore runbook is invalid (a bug): {f}"))?;
    Ok(Some(out))
}

/// The action that brings a VM back to `before`; `after` is where the run left it.
fn restore_action(before: &VmState, deallocated: bool, after: Option<&VmState>) -> Option<Action> {
    match before {
        VmState::On if after == Some(&VmState::Paused) => Some(Action::Resume),
        VmState::On => Some(Action::On),
        VmState::Off if deallocated => Some(Action::Deallocate),
        VmState::Off => Some(Action::Shutdown),
        VmState::Paused => Some(Action::Pause),
        _ => None,
    }
}

/// A one-line TOML basic string (JSON's escapes are a subset of TOML's).
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_actions_follow_the_state_before() {
        assert_eq!(
            restore_action(&VmState::On, false, Some(&VmState::Off)),
            Some(Action::On)
        );
        assert_eq!(
            restore_action(&VmState::On, false, Some(&VmState::Paused)),
            Some(Action::Resume)
        );
        assert_eq!(
            restore_action(&VmState::Off, false, Some(&VmState::On)),
            Some(Action::Shutdown)
        );
        assert_eq!(
            restore_action(&VmState::Off, true, Some(&VmState::On)),
            Some(Action::Deallocate)
        );
        assert_eq!(
            restore_action(&VmState::Paused, false, Some(&VmState::On)),
            Some(Action::Pause)
        );
        assert_eq!(restore_action(&VmState::Configured, false, None), None);
    }

    #[test]
    fn quoting_escapes_toml_strings() {
        assert_eq!(quote("a \"b\"\n"), r#""a \"b\"\n""#);
    }
}
