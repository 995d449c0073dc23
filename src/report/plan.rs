//! Human output of `powerbook plan`: overview, step graph, one table per step, estimate,
//! warnings. Nothing here does I/O.

use crate::plan::document::PlanDocument;
use crate::plan::estimate::DurationSource;
use crate::plan::text::duration;
use crate::plan::{Disposition, PlannedStep, StepCounts};
use crate::report::style::{RenderOptions, Show, new_table, plural, wrap};
use crate::runbook::model::Order;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// "N to act on" then every other disposition that occurs: the same words for the run
/// and for each step.
fn counts_line(c: &StepCounts) -> String {
    let mut parts = vec![format!("{} to act on", c.act)];
    for (n, what) in [
        (c.skip, "skipped"),
        (c.refuse, "REFUSED"),
        (c.excluded, "excluded"),
        (c.protected, "protected"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(", ")
}

/// The whole human plan.
pub fn render(doc: &PlanDocument, opts: RenderOptions) -> String {
    render_as(doc, opts, false)
}

/// The plan as `run` shows it before asking to proceed: everything but the VMs that will
/// simply be acted on or skipped (the refused ones are listed).
pub fn confirmation(doc: &PlanDocument, opts: RenderOptions) -> String {
    let opts = RenderOptions {
        show: Show::Problems,
        ..opts
    };
    render_as(doc, opts, true)
}

fn render_as(doc: &PlanDocument, opts: RenderOptions, brief: bool) -> String {
    let plan = &doc.plan;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan for runbook '{}' against {}",
        plan.runbook_name, plan.endpoint
    );
    // `run` knows the VMs its steps select, not how many the cloud listed.
    let seen = if brief {
        format!("{} selected", plural(doc.vms_listed, "VM", "VMs"))
    } else {
        format!("{} listed", plural(doc.vms_listed, "VM", "VMs"))
    };
    let _ = writeln!(
        out,
        "{seen}; {} in {}",
        counts_line(&doc.totals),
        plural(plan.steps.len(), "step", "steps"),
    );
    let mut limits = vec![format!(
        "at most {} in flight across the run",
        plural(plan.concurrency, "VM", "VMs")
    )];
    if let Some(rps) = doc.requests_per_second {
        limits.push(format!("at most {rps} API requests per second"));
    }
    if let Some(d) = doc.deadline_ms {
        // One word, so that wrapping never splits the deadline ("1h30m").
        limits.push(format!(
            "nothing new starts after {}",
            duration(d).replace(' ', "")
        ));
    }
    let line = format!("Concurrency: {}", limits.join("; "));
    let _ = writeln!(out, "{}", wrap(&line, usize::from(opts.width), 2));
    if let Some(t) = doc.run_threshold() {
        let _ = writeln!(out, "Run-wide failures: {}", t.text);
    }
    out.push('\n');
    let order = execution_order(doc);
    out.push_str(&graph(doc, &order, usize::from(opts.width)));
    for (i, &pos) in order.iter().enumerate() {
        if let Some(s) = plan.steps.get(pos) {
            out.push('\n');
            out.push_str(&step_section(doc, i, s, opts, brief));
        }
    }
    out.push('\n');
    out.push_str(&estimate_lines(doc, opts));
    if !doc.warnings.is_empty() {
        out.push('\n');
        let _ = writeln!(out, "WARNINGS ({}):", doc.warnings.len());
        for w in &doc.warnings {
            let _ = writeln!(
                out,
                "  ! {}",
                wrap(&w.message, usize::from(opts.width) - 4, 4)
            );
        }
    }
    out
}

/// Positions in `plan.steps` by estimated start, then plan order.
fn execution_order(doc: &PlanDocument) -> Vec<usize> {
    let start = |pos: usize| {
        let index = doc.plan.steps.get(pos).map(|s| s.index);
        doc.estimate
            .steps
            .iter()
            .find(|e| Some(e.step) == index)
            .map_or(0, |e| e.start_ms)
    };
    let mut order: Vec<usize> = (0..doc.plan.steps.len()).collect();
    order.sort_by_key(|&pos| (start(pos), pos));
    order
}

/// Steps in execution order with what each waits for and what runs beside it; a line wider
/// than `columns` goes on under its own column.
fn graph(doc: &PlanDocument, order: &[usize], columns: usize) -> String {
    let plan = &doc.plan;
    let name_of = |index: usize| {
        plan.steps
            .iter()
            .find(|s| s.index == index)
            .map_or_else(|| format!("#{index}"), |s| format!("'{}'", s.name))
    };
    let width = plan
        .steps
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0);
    let action_width = plan
        .steps
        .iter()
        .map(|s| s.action.as_str().len())
        .max()
        .unwrap_or(0);
    let mut out = String::from("Step graph, in execution order:\n");
    for (n, s) in order.iter().filter_map(|&p| plan.steps.get(p)).enumerate() {
        let est = doc.estimate.steps.iter().find(|e| e.step == s.index);
        let start = est.map_or(0, |e| e.start_ms);
        let mut when = if s.after.is_empty() {
            "starts at once".to_owned()
        } else {
            let deps: Vec<String> = s
                .after
                .iter()
                .map(|&d| {
                    let gates: Vec<String> = s
                        .after_gates
                        .iter()
                        .filter(|e| e.after == d)
                        .map(|e| e.gate.check.to_string())
                        .collect();
                    match gates.len() {
                        0 => name_of(d),
                        1 => format!("{} (gate {})", name_of(d), gates[0]),
                        _ => format!("{} (gates {})", name_of(d), gates.join(", ")),
                    }
                })
                .collect();
            format!("after {}", deps.join(" and "))
        };
        // Steps whose estimated spans overlap run side by side.
        if let Some(e) = est {
            let beside: Vec<String> = doc
                .estimate
                .steps
                .iter()
                .filter(|o| {
                    o.step != s.index
                        && !depends(plan, s.index, o.step)
                        && !depends(plan, o.step, s.index)
                        && o.start_ms < e.start_ms + e.duration_ms.max(1)
                        && e.start_ms < o.start_ms + o.duration_ms.max(1)
                })
                .map(|o| format!("'{}'", o.name))
                .collect();
            if !beside.is_empty() {
                when.push_str(&format!(", alongside {}", beside.join(", ")));
            }
        }
        let head = format!(
            "  {}. {:<width$}  {:<action_width$}  +{:<8} ",
            n + 1,
            s.name,
            s.action.as_str(),
            duration(start),
        );
        let indent = head.chars().count();
        let room = columns.saturating_sub(indent).max(40);
        let when = wrap(&when, room, 0).replace('\n', &format!("\n{}", " ".repeat(indent)));
        let _ = writeln!(out, "{head}{when}");
    }
    out
}

/// Whether step `a` waits (directly or not) for step `b` (runbook indices).
fn depends(plan: &crate::plan::Plan, a: usize, b: usize) -> bool {
    let mut stack = vec![a];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(i) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        let Some(step) = plan.steps.iter().find(|s| s.index == i) else {
            continue;
        };
        if step.after.contains(&b) {
            return true;
        }
        stack.extend(step.after.iter().copied());
    }
    false
}

fn step_section(
    doc: &PlanDocument,
    pos: usize,
    s: &PlannedStep,
    opts: RenderOptions,
    brief: bool,
) -> String {
    let mut out = String::new();
    let how = match s.order {
        Order::Sequential => "sequential, one VM at a time".to_owned(),
        Order::Parallel => format!("parallel, {} at a time", plural(s.concurrency, "VM", "VMs")),
    };
    let _ = writeln!(
        out,
        "Step {}/{} '{}': {}, {how}",
        pos + 1,
        doc.plan.steps.len(),
        s.name,
        s.action
    );
    let _ = writeln!(
        out,
        "  {}: {}",
        plural(s.targets.len(), "VM", "VMs"),
        counts_line(&s.counts())
    );
    if s.waves.len() > 1 {
        let sizes: Vec<String> = s.waves.iter().map(|w| w.len().to_string()).collect();
        let pause = if s.wave_pause_ms > 0 {
            format!(", {} pause between waves", duration(s.wave_pause_ms))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  Waves: {} waves of {} VMs{pause}",
            s.waves.len(),
            sizes.join(", ")
        );
    } else if let Some(w) = s.waves.first() {
        let _ = writeln!(out, "  Waves: 1 wave of {}", plural(w.len(), "VM", "VMs"));
    }
    if let Some(t) = doc.step_threshold(&s.name) {
        let _ = writeln!(out, "  Failures: {}", t.text);
    }
    let edge_gates = s.after_gates.iter().map(|e| {
        let after = doc
            .plan
            .steps
            .iter()
            .find(|d| d.index == e.after)
            .map_or_else(|| format!("#{}", e.after), |d| format!("'{}'", d.name));
        (format!("after {after}"), Some(&e.gate))
    });
    let own = [
        ("before the step".to_owned(), s.gate.as_ref()),
        (
            "before each wave after the first".to_owned(),
            s.wave_gate.as_ref(),
        ),
    ];
    for (when, gate) in edge_gates.chain(own) {
        if let Some(g) = gate {
            let _ = writeln!(
                out,
                "  Gate {when}: {} (every {}, for at most {})",
                g.check,
                duration(g.interval_ms),
                duration(g.timeout_ms)
            );
        }
    }
    if let Some(e) = doc.estimate.steps.iter().find(|e| e.step == s.index) {
        let source = match (e.task_source, e.history_samples) {
            (DurationSource::History, Some(n)) => format!("earlier runs, {n} VMs"),
            (src, _) => src.as_str().to_owned(),
        };
        let _ = writeln!(
            out,
            "  Estimate: starts at +{}, takes {} ({} per {} task: {source}; {})",
            duration(e.start_ms),
            duration(e.duration_ms),
            duration(e.task_ms),
            s.action,
            plural(
                usize::try_from(e.api_requests).unwrap_or(usize::MAX),
                "request",
                "requests"
            )
        );
    }
    if s.targets.is_empty() {
        out.push_str("  (no VM matches this step's targets)\n");
        return out;
    }
    out.push_str(&targets_table(s, opts, brief));
    out
}

/// Every target of a small step (or with `--show all`); of a larger one the refused ones,
/// then what the rest will do, counted.
fn targets_table(s: &PlannedStep, opts: RenderOptions, brief: bool) -> String {
    let all = opts.show.lists_all(s.targets.len());
    let is_listed = |d: &Disposition| all || matches!(d, Disposition::Refuse { .. });
    let listed: Vec<usize> = (0..s.targets.len())
        .filter(|&i| is_listed(&s.targets[i].disposition))
        .collect();
    let mut out = String::new();
    if !listed.is_empty() {
        if !all {
            let _ = writeln!(out, "  Refused ({}):", listed.len());
        }
        out.push_str(&rows_table(s, &listed, opts));
        out.push('\n');
    }
    if listed.len() < s.targets.len() && !brief {
        let mut what: BTreeMap<String, usize> = BTreeMap::new();
        for target in s.targets.iter().filter(|t| !is_listed(&t.disposition)) {
            *what.entry(plan_text(&target.disposition)).or_default() += 1;
        }
        let mut what: Vec<(String, usize)> = what.into_iter().collect();
        what.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let more = if listed.is_empty() { "" } else { " more" };
        let _ = writeln!(
            out,
            "  {}{more} VMs not listed (`--show all` lists every one):",
            s.targets.len() - listed.len()
        );
        for (text, n) in what {
            let line = format!("{n:>6} × {text}");
            let _ = writeln!(out, "  {}", wrap(&line, usize::from(opts.width) - 2, 11));
        }
    }
    out
}

/// What the plan will do with a target, in words.
fn plan_text(d: &Disposition) -> String {
    match d {
        d @ Disposition::Act { .. } => d.reason(),
        Disposition::Skip { reason } => format!("skip: {reason}"),
        Disposition::Refuse {
            code: Some(code),
            reason,
        } => format!("REFUSED {code}: {reason}"),
        Disposition::Refuse { code: None, reason } => format!("REFUSED: {reason}"),
        Disposition::Excluded => "skip: excluded".into(),
        Disposition::Protected { cause } => match cause {
            Some(c) => format!("skip: protected ({c})"),
            None => "skip: protected".into(),
        },
    }
}

fn rows_table(s: &PlannedStep, rows: &[usize], opts: RenderOptions) -> String {
    let mut wave_of = BTreeMap::new();
    for (w, wave) in s.waves.iter().enumerate() {
        for &t in wave {
            wave_of.insert(t, w + 1);
        }
    }
    let mut t = new_table(opts);
    t.set_header(vec!["VM", "VDC / vApp", "State", "Wave", "Plan"]);
    for &i in rows {
        let target = &s.targets[i];
        let place = match (&target.vm.vdc, &target.vm.vapp) {
            (Some(d), Some(a)) => format!("{d} / {a}"),
            (Some(d), None) => d.to_string(),
            (None, Some(a)) => a.to_string(),
            (None, None) => "-".into(),
        };
        let mut state = target.state_seen.to_string();
        if target.deallocated == Some(true) {
            state.push_str(" (deallocated)");
        }
        if target.state_expected != target.state_seen {
            state = format!("{state} → {} (earlier step)", target.state_expected);
        }
        let plan = plan_text(&target.disposition);
        t.add_row(vec![
            target.vm.name.to_string(),
            place,
            state,
            wave_of
                .get(&i)
                .map_or_else(|| "-".into(), ToString::to_string),
            plan,
        ]);
    }
    t.to_string()
}

fn estimate_lines(doc: &PlanDocument, opts: RenderOptions) -> String {
    let e = &doc.estimate;
    let mut out = String::new();
    let path = if e.critical_path.len() > 1 {
        format!(
            " (longest chain: {})",
            e.critical_path
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(" → ")
        )
    } else {
        String::new()
    };
    let line = format!(
        "Estimate: about {} for the run{path}, about {} API requests{}",
        duration(e.total_ms),
        e.api_requests,
        if e.rate_limited {
            " (paced by the request rate limit)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "{}", wrap(&line, usize::from(opts.width), 2));
    let guessed: Vec<String> = doc
        .plan
        .steps
        .iter()
        .zip(&e.steps)
        .filter(|(_, est)| est.task_source == DurationSource::Default)
        .map(|(s, est)| format!("{} {}", s.action, duration(est.task_ms)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !guessed.is_empty() {
        let line = format!(
            "Task durations marked \"default\" are guesses ({}): set them in the runbook's \
             [estimates] or a step's expected_duration.",
            guessed.join(", ")
        );
        let _ = writeln!(out, "  {}", wrap(&line, usize::from(opts.width) - 2, 2));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abiquo::model::VmState;
    use crate::plan::estimate::{EstimateInputs, estimate};
    use crate::plan::tests::{build, runbook, sel_vm, step, vm};
    use crate::runbook::model::Action;

    /// A plan of `n` web VMs reset: every 100th is OFF, so its reset is refused (VM-26).
    fn plan_text(n: usize, show: Show) -> String {
        let vms: Vec<_> = (1..=n as u64)
            .map(|i| {
                let state = if i % 100 == 0 {
                    VmState::Off
                } else {
                    VmState::On
                };
                vm(i, &format!("web-{i:05}"), "web", state, "KVM")
            })
            .collect();
        let mut reset = step("reset", Action::Reset, vec![sel_vm("web-*")]);
        reset.after = vec![];
        let rb = runbook(vec![reset]);
        let plan = build(&rb, &vms, "http://127.0.0.1:9/api");
        let est = estimate(&plan, &rb, &EstimateInputs::default());
        let doc = PlanDocument::new(&rb, "rb.toml".into(), vms.len(), plan, est);
        render(
            &doc,
            RenderOptions {
                test_mode: true,
                show,
                ..RenderOptions::default()
            },
        )
    }

    #[test]
    fn plans_of_10_500_and_10000_vms_list_refusals_and_count_the_rest() {
        let ten = plan_text(10, Show::Auto);
        insta::assert_snapshot!("plan_10_vms", ten);
        assert!(ten.contains("web-00001"), "{ten}");
        let five_hundred = plan_text(500, Show::Auto);
        insta::assert_snapshot!("plan_500_vms", five_hundred);
        assert!(five_hundred.contains("Refused (5):"), "{five_hundred}");
        assert!(!five_hundred.contains("web-00001 "), "{five_hundred}");
        assert!(
            five_hundred.contains("495 × ON → reset → ON"),
            "{five_hundred}"
        );
        let ten_thousand = plan_text(10_000, Show::Auto);
        insta::assert_snapshot!("plan_10000_vms", ten_thousand);
        for text in [&ten, &five_hundred, &ten_thousand] {
            let widest = text.lines().map(|l| l.chars().count()).max().unwrap_or(0);
            assert!(widest <= 120, "{widest} columns");
        }
        assert!(plan_text(500, Show::All).contains("web-00001 "));
    }

    #[test]
    fn the_graph_never_calls_a_dependency_alongside_even_when_it_takes_no_time() {
        let vms = vec![vm(1, "web-01", "web", VmState::On, "KVM")];
        let mut empty = step("empty", Action::Off, vec![sel_vm("db-*")]);
        empty.after = vec![0];
        let mut last = step("last", Action::On, vec![sel_vm("web-*")]);
        last.after = vec![1];
        let mut side = step("side", Action::Off, vec![sel_vm("web-*")]);
        side.after = vec![0];
        let rb = runbook(vec![
            step("first", Action::Off, vec![sel_vm("web-*")]),
            empty,
            last,
            side,
        ]);
        let plan = build(&rb, &vms, "http://x/api");
        let est = estimate(&plan, &rb, &EstimateInputs::default());
        let doc = PlanDocument::new(&rb, "rb.toml".into(), 1, plan, est);
        let text = graph(&doc, &execution_order(&doc), 120);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.contains(&format!(". {name} ")))
                .unwrap()
                .to_owned()
        };
        assert!(line("first").ends_with("starts at once"), "{text}");
        assert!(line("last").contains("after 'empty'"), "{text}");
        assert!(!line("last").contains("alongside 'empty'"), "{text}");
        assert!(line("last").contains("alongside 'side'"), "{text}");
        let side = line("side");
        let beside = side.split("alongside").nth(1).unwrap_or_default();
        assert!(!beside.contains("'first'"), "{text}");
    }

    #[test]
    fn the_plan_shows_each_edge_gate_on_its_edge_in_the_graph_and_the_step() {
        use crate::runbook::model::{EdgeGate, Gate, GateCheck};
        let vms = vec![
            vm(1, "db-01", "db", VmState::Off, "KVM"),
            vm(2, "app-01", "app", VmState::Off, "KVM"),
        ];
        let mut network = step("network", Action::On, vec![sel_vm("net-*")]);
        network.after = vec![];
        let mut db = step("db", Action::On, vec![sel_vm("db-*")]);
        db.after = vec![];
        let mut app = step("app", Action::On, vec![sel_vm("app-*")]);
        app.after = vec![0, 1];
        app.after_gates = vec![EdgeGate {
            after: 1,
            gate: Gate {
                check: GateCheck::Tcp {
                    address: "db:5432".into(),
                },
                timeout_ms: 600_000,
                interval_ms: 10_000,
            },
        }];
        let rb = runbook(vec![network, db, app]);
        let plan = build(&rb, &vms, "http://x/api");
        let est = estimate(&plan, &rb, &EstimateInputs::default());
        let doc = PlanDocument::new(&rb, "rb.toml".into(), 2, plan, est);
        let text = render(
            &doc,
            RenderOptions {
                test_mode: true,
                ..RenderOptions::default()
            },
        );
        let app_line = text
            .lines()
            .find(|l| l.contains(". app "))
            .unwrap_or_default();
        assert!(
            app_line.ends_with("after 'network' and 'db' (gate tcp db:5432)"),
            "{text}"
        );
        assert!(
            text.contains("  Gate after 'db': tcp db:5432 (every 10.0s, for at most 10m)\n"),
            "{text}"
        );
    }

    #[test]
    fn a_graph_line_too_wide_goes_on_under_its_own_column() {
        use crate::runbook::model::{EdgeGate, Gate, GateCheck};
        let vms = vec![vm(1, "db-01", "db", VmState::Off, "KVM")];
        let mut app = step("app", Action::On, vec![sel_vm("app-*")]);
        app.after = vec![0];
        app.after_gates = vec![EdgeGate {
            after: 0,
            gate: Gate {
                check: GateCheck::Approve {
                    message: "the databases are up and replicating: ".repeat(3),
                },
                timeout_ms: 60_000,
                interval_ms: 5_000,
            },
        }];
        let rb = runbook(vec![step("db", Action::On, vec![sel_vm("db-*")]), app]);
        let plan = build(&rb, &vms, "http://x/api");
        let est = estimate(&plan, &rb, &EstimateInputs::default());
        let doc = PlanDocument::new(&rb, "rb.toml".into(), 1, plan, est);
        let text = graph(&doc, &execution_order(&doc), 80);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{text}");
        let column = lines[2].find("after").unwrap();
        assert!(lines.len() > 3, "{text}");
        assert!(
            lines[3..]
                .iter()
                .all(|l| l.find(|c: char| c != ' ') == Some(column)),
            "{text}"
        );
    }
}
