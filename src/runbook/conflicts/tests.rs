use super::*;
use crate::runbook::graph::Edge;

/// The conflict groups of a runbook body, as step names, and whether the check finished.
fn groups(steps_toml: &str) -> (Vec<Vec<String>>, bool) {
    let src = format!("name = \"t\"\n{steps_toml}");
    let runbook = match crate::runbook::parse("t.toml", &src) {
        Ok(loaded) => loaded.runbook,
        Err(f) => panic!("{}", f.render()),
    };
    let edges: Vec<Vec<Edge>> = runbook
        .steps
        .iter()
        .map(|s| s.after.iter().map(|&to| Edge { to, span: None }).collect())
        .collect();
    let found = find(&runbook.steps, &Graph::new(&edges));
    let names = found
        .groups
        .iter()
        .map(|g| {
            g.members
                .iter()
                .map(|m| runbook.steps[m.step].name.clone())
                .collect()
        })
        .collect();
    (names, found.complete)
}

fn step(name: &str, action: &str, target: &str, after: Option<&str>) -> String {
    let after = after.map_or(String::new(), |a| format!("after = [{a}]\n"));
    format!("[[step]]\nname = \"{name}\"\naction = \"{action}\"\ntargets = [{target}]\n{after}")
}

const ALL_WEB: &str = "{ vm = \"web-*\" }";

#[test]
fn parallel_steps_alternating_actions_on_one_selector_are_one_group() {
    let body: String = (0..6)
        .map(|i| step(&format!("s{i}"), ["on", "off"][i % 2], ALL_WEB, Some("")))
        .collect();
    let (found, complete) = groups(&body);
    assert!(complete);
    assert_eq!(found, vec![vec!["s0", "s1", "s2", "s3", "s4", "s5"]]);
}

#[test]
fn a_chain_on_one_selector_never_conflicts() {
    // No `after`: each step waits for the one above.
    let body: String = (0..50)
        .map(|i| step(&format!("s{i}"), ["on", "off"][i % 2], ALL_WEB, None))
        .collect();
    assert_eq!(groups(&body), (vec![], true));
}

#[test]
fn only_the_steps_that_may_overlap_in_time_join_the_group() {
    // a → (b, c) → d all on web-*; e starts at once with b's and c's action.
    let body = [
        step("a", "on", ALL_WEB, Some("")),
        step("b", "off", ALL_WEB, Some("\"a\"")),
        step("c", "off", ALL_WEB, Some("\"a\"")),
        step("d", "on", ALL_WEB, Some("\"b\", \"c\"")),
        step("e", "off", ALL_WEB, Some("")),
    ]
    .concat();
    let (found, complete) = groups(&body);
    assert!(complete);
    // b and c act like e; a and d are ordered with b and c but not with e.
    assert_eq!(found, vec![vec!["a", "d", "e"]]);
}

#[test]
fn a_step_is_found_whether_its_partner_comes_before_or_after_it() {
    // The partner of `first` is later in execution order, that of `second` earlier.
    let body = [
        step("first", "on", ALL_WEB, Some("")),
        step("middle", "on", "{ vm = \"db-*\" }", Some("")),
        step("second", "off", "{ vm = \"web-01\" }", Some("\"middle\"")),
    ]
    .concat();
    assert_eq!(groups(&body).0, vec![vec!["first", "second"]]);
}

#[test]
fn plain_selectors_overlap_through_a_subset_of_equal_fields() {
    let wide = "{ vdc = \"prod\" }";
    let narrow = "{ vdc = \"prod\", vm = \"web-01\" }";
    let elsewhere = "{ vdc = \"staging\", vm = \"web-01\" }";
    let overlap = [
        step("a", "on", wide, Some("")),
        step("b", "off", narrow, Some("")),
    ]
    .concat();
    assert_eq!(groups(&overlap).0, vec![vec!["a", "b"]]);
    let disjoint = [
        step("a", "on", wide, Some("")),
        step("b", "off", elsewhere, Some("")),
    ]
    .concat();
    assert_eq!(groups(&disjoint).0, Vec::<Vec<String>>::new());
    // Same fields, different values: no overlap; unrelated fields: not provable.
    let other_vm = [
        step("a", "on", "{ vm = \"web-01\" }", Some("")),
        step("b", "off", "{ vm = \"web-02\" }", Some("")),
        step("c", "off", "{ vapp = \"web\" }", Some("")),
    ]
    .concat();
    assert_eq!(groups(&other_vm).0, Vec::<Vec<String>>::new());
}

#[test]
fn steps_meeting_on_several_selector_pairs_are_reported_once() {
    let two = "{ vm = \"web-*\" }, { vm = \"db-*\" }";
    let body = [
        step("a", "on", two, Some("")),
        step("b", "off", two, Some("")),
    ]
    .concat();
    assert_eq!(groups(&body).0, vec![vec!["a", "b"]]);
}

#[test]
fn each_member_names_the_target_that_overlaps_and_a_partner() {
    let body = [
        step("a", "on", "{ vm = \"db-*\" }, { vm = \"web-*\" }", Some("")),
        step("b", "off", "{ vm = \"web-01\" }", Some("")),
    ]
    .concat();
    let src = format!("name = \"t\"\n{body}");
    let runbook = crate::runbook::parse("t.toml", &src).unwrap().runbook;
    let edges = vec![Vec::new(), Vec::new()];
    let found = find(&runbook.steps, &Graph::new(&edges));
    assert_eq!(
        found.groups[0].members,
        vec![
            Member {
                step: 0,
                target: 1,
                partner: 1,
                partner_target: 0
            },
            Member {
                step: 1,
                target: 0,
                partner: 0,
                partner_target: 1
            },
        ]
    );
}

#[test]
fn the_work_budget_stops_spending_once_gone() {
    let mut work = Work {
        left: 10,
        exhausted: false,
    };
    assert!(work.spend(6));
    assert!(!work.spend(6));
    assert!(work.exhausted);
    assert!(!work.spend(0), "nothing more once exhausted");
}
