//! The step graph (who waits for whom): cycles, which steps may run at the same time, and
//! whether two selectors may pick the same VMs.

use super::model::{NameOrId, Pattern, Selector};
use std::collections::VecDeque;
use std::ops::Range;

/// Step `from` (the owner of the edge list) waits for step `to`.
#[derive(Debug, Clone)]
pub struct Edge {
    pub to: usize,
    /// Where the edge is written (`after` entry); `None` when implied by step order.
    pub span: Option<Range<usize>>,
}

/// Transitive "waits for" relation of the steps. Quadratic in the number of steps, which is
/// fine for runbooks (tens of steps) and still quick for thousands.
pub struct Graph {
    /// `reach[i][j]`: step i waits, directly or not, for step j.
    reach: Vec<Vec<bool>>,
    edges: Vec<Vec<usize>>,
}

impl Graph {
    pub fn new(edges: &[Vec<Edge>]) -> Self {
        let n = edges.len();
        let edges: Vec<Vec<usize>> = edges
            .iter()
            .map(|es| es.iter().map(|e| e.to).filter(|&t| t < n).collect())
            .collect();
        let reach = (0..n)
            .map(|start| {
                let mut seen = vec![false; n];
                let mut queue: VecDeque<usize> = edges[start].iter().copied().collect();
                while let Some(k) = queue.pop_front() {
                    if !seen[k] {
                        seen[k] = true;
                        queue.extend(edges[k].iter().copied());
                    }
                }
                seen
            })
            .collect();
        Self { reach, edges }
    }

    fn waits_for(&self, i: usize, j: usize) -> bool {
        self.reach
            .get(i)
            .and_then(|r| r.get(j))
            .copied()
            .unwrap_or(false)
    }

    /// Neither step waits for the other, so they may run at the same time.
    pub fn concurrent(&self, i: usize, j: usize) -> bool {
        i != j && !self.waits_for(i, j) && !self.waits_for(j, i)
    }

    /// One cycle per strongly connected group of steps, each as the list of steps in waiting
    /// order starting at the group's first step (`[a, b]` means a waits for b waits for a).
    pub fn cycles(&self) -> Vec<Vec<usize>> {
        let n = self.reach.len();
        let mut done = vec![false; n];
        let mut cycles = Vec::new();
        for start in 0..n {
            if done[start] || !self.waits_for(start, start) {
                continue;
            }
            let group: Vec<bool> = (0..n)
                .map(|j| j == start || (self.waits_for(start, j) && self.waits_for(j, start)))
                .collect();
            for (j, in_group) in group.iter().enumerate() {
                if *in_group {
                    done[j] = true;
                }
            }
            cycles.push(self.path_back(start, &group));
        }
        cycles
    }

    /// Shortest path from `start` back to itself inside `group` (breadth first).
    fn path_back(&self, start: usize, group: &[bool]) -> Vec<usize> {
        let n = self.reach.len();
        let mut prev: Vec<Option<usize>> = vec![None; n];
        let mut queue = VecDeque::from([start]);
        while let Some(k) = queue.pop_front() {
            for &t in &self.edges[k] {
                if t == start {
                    let mut path = vec![k];
                    let mut cur = k;
                    while let Some(p) = prev[cur] {
                        path.push(p);
                        cur = p;
                    }
                    if cur != start {
                        path.push(start);
                    }
                    path.reverse();
                    return path;
                }
                if group[t] && prev[t].is_none() && t != start {
                    prev[t] = Some(k);
                    queue.push_back(t);
                }
            }
        }
        vec![start]
    }
}

/// Whether two selectors provably may pick the same VMs, judged from the text alone.
///
/// The rule: one selector must constrain a subset of the fields the other constrains (so they
/// describe comparable sets), and every field they both set must be able to match the same
/// value: equal ids, states, hypervisors or hrefs; literal names that are equal or match the
/// other's glob; two globs whose fixed prefixes and suffixes agree. Selectors on unrelated
/// fields (`vapp` in one, `vm` in the other) are not reported: only the inventory can tell.
pub fn may_overlap(a: &Selector, b: &Selector) -> bool {
    let fa = fields(a);
    let fb = fields(b);
    let subset = |x: &[bool; 7], y: &[bool; 7]| x.iter().zip(y).all(|(p, q)| !p || *q);
    if !(subset(&fa, &fb) || subset(&fb, &fa)) {
        return false;
    }
    both(&a.vdc, &b.vdc, name_or_id_meet)
        && both(&a.vapp, &b.vapp, name_or_id_meet)
        && both(&a.vm, &b.vm, patterns_meet)
        && both(&a.label, &b.label, patterns_meet)
        && both(&a.state, &b.state, |x, y| x == y)
        && both(&a.hypervisor, &b.hypervisor, |x, y| {
            x.eq_ignore_ascii_case(y)
        })
        && both(&a.href, &b.href, |x, y| x == y)
}

fn fields(s: &Selector) -> [bool; 7] {
    [
        s.vdc.is_some(),
        s.vapp.is_some(),
        s.vm.is_some(),
        s.label.is_some(),
        s.state.is_some(),
        s.hypervisor.is_some(),
        s.href.is_some(),
    ]
}

fn both<T>(a: &Option<T>, b: &Option<T>, meet: impl Fn(&T, &T) -> bool) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => meet(x, y),
        _ => true,
    }
}

fn name_or_id_meet(a: &NameOrId, b: &NameOrId) -> bool {
    match (a, b) {
        (NameOrId::Id(x), NameOrId::Id(y)) => x == y,
        (NameOrId::Name(x), NameOrId::Name(y)) => patterns_meet(x, y),
        // An id and a name may denote the same thing; assume they do.
        _ => true,
    }
}

fn patterns_meet(a: &Pattern, b: &Pattern) -> bool {
    match (a.is_literal(), b.is_literal()) {
        (true, true) => a.as_str() == b.as_str(),
        (true, false) => b.matches(a.as_str()),
        (false, true) => a.matches(b.as_str()),
        (false, false) => {
            let (pa, sa) = fixed_ends(a.as_str());
            let (pb, sb) = fixed_ends(b.as_str());
            (pa.starts_with(pb) || pb.starts_with(pa)) && (sa.ends_with(sb) || sb.ends_with(sa))
        }
    }
}

/// The literal text before the first and after the last glob metacharacter.
fn fixed_ends(glob: &str) -> (&str, &str) {
    let meta = ['*', '?', '[', ']', '{', '}'];
    let prefix = glob.find(meta).map_or(glob, |i| &glob[..i]);
    let suffix = glob.rfind(meta).map_or(glob, |i| &glob[i + 1..]);
    (prefix, suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(list: &[&[usize]]) -> Vec<Vec<Edge>> {
        list.iter()
            .map(|es| es.iter().map(|&to| Edge { to, span: None }).collect())
            .collect()
    }

    fn sel(vdc: Option<&str>, vapp: Option<&str>, vm: Option<&str>) -> Selector {
        let p = |s: Option<&str>| s.map(|s| Pattern::new(s).unwrap());
        Selector {
            vdc: p(vdc).map(NameOrId::Name),
            vapp: p(vapp).map(NameOrId::Name),
            vm: p(vm),
            ..Selector::default()
        }
    }

    #[test]
    fn chain_has_no_cycle_and_parallel_branches_are_concurrent() {
        // 0; 1 after 0; 2 at start; 3 after 1 and 2
        let g = Graph::new(&edges(&[&[], &[0], &[], &[1, 2]]));
        assert!(g.cycles().is_empty());
        assert!(!g.concurrent(0, 1));
        assert!(g.concurrent(0, 2));
        assert!(g.concurrent(1, 2));
        assert!(!g.concurrent(3, 0));
    }

    #[test]
    fn cycles_are_found_once_per_group_in_waiting_order() {
        // 0 waits for 2, 2 waits for 1, 1 waits for 0; 3 waits for itself
        let g = Graph::new(&edges(&[&[2], &[0], &[1], &[3]]));
        assert_eq!(g.cycles(), vec![vec![0, 2, 1], vec![3]]);
    }

    #[test]
    fn selectors_on_comparable_fields_overlap_when_values_can_meet() {
        let web = sel(Some("prod"), Some("web-*"), None);
        assert!(may_overlap(&web, &web));
        assert!(may_overlap(
            &web,
            &sel(Some("prod"), Some("web-frontend"), None)
        ));
        assert!(may_overlap(&sel(Some("prod"), None, None), &web));
        assert!(!may_overlap(&web, &sel(Some("prod"), Some("batch"), None)));
        assert!(!may_overlap(
            &web,
            &sel(Some("staging"), Some("web-*"), None)
        ));
        assert!(!may_overlap(
            &sel(None, None, Some("web-*")),
            &sel(None, None, Some("db-*"))
        ));
        assert!(may_overlap(
            &sel(None, None, Some("web-*")),
            &sel(None, None, Some("*-01"))
        ));
        // vm in one, vapp in the other: unknown without the inventory, not reported.
        assert!(!may_overlap(
            &sel(Some("prod"), None, Some("db-*")),
            &sel(Some("prod"), Some("batch"), None)
        ));
    }
}
