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

/// Who waits for whom, as adjacency lists both ways. Every walk over it is iterative and
/// linear in steps plus edges, so a 100,000-step chain neither overflows the stack nor
/// needs a quadratic reachability table.
pub struct Graph {
    /// `waits[i]`: the steps step i waits for directly.
    waits: Vec<Vec<usize>>,
    /// `released[j]`: the steps that wait for step j directly.
    released: Vec<Vec<usize>>,
}

impl Graph {
    pub fn new(edges: &[Vec<Edge>]) -> Self {
        let n = edges.len();
        let waits: Vec<Vec<usize>> = edges
            .iter()
            .map(|es| es.iter().map(|e| e.to).filter(|&t| t < n).collect())
            .collect();
        let mut released = vec![Vec::new(); n];
        for (i, ws) in waits.iter().enumerate() {
            for &j in ws {
                released[j].push(i);
            }
        }
        Self { waits, released }
    }

    pub fn len(&self) -> usize {
        self.waits.len()
    }

    /// The steps step `i` waits for directly.
    pub fn waits_for(&self, i: usize) -> &[usize] {
        self.waits.get(i).map_or(&[], Vec::as_slice)
    }

    /// The steps that wait for step `j` directly.
    pub fn released_by(&self, j: usize) -> &[usize] {
        self.released.get(j).map_or(&[], Vec::as_slice)
    }

    /// Steps in an order where each comes after every step it waits for; `None` when there is
    /// a cycle. Depth first among the steps that are ready (a stack, not a queue), so that
    /// a step tends to follow the one it waits for: walks that keep per-step state until
    /// every waiting step is done keep little of it alive.
    pub fn topological_order(&self) -> Option<Vec<usize>> {
        let n = self.len();
        let mut pending: Vec<usize> = self.waits.iter().map(Vec::len).collect();
        let mut ready: Vec<usize> = (0..n).rev().filter(|&i| pending[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(j) = ready.pop() {
            order.push(j);
            for &i in self.released[j].iter().rev() {
                pending[i] -= 1;
                if pending[i] == 0 {
                    ready.push(i);
                }
            }
        }
        (order.len() == n).then_some(order)
    }

    /// One cycle per strongly connected group of steps, each as the list of steps in waiting
    /// order starting at the group's first step (`[a, b]` means a waits for b waits for a),
    /// ordered by that first step.
    pub fn cycles(&self) -> Vec<Vec<usize>> {
        let mut groups: Vec<Vec<usize>> = self
            .components()
            .into_iter()
            .filter(|g| g.len() > 1 || g.iter().any(|&i| self.waits[i].contains(&i)))
            .collect();
        for g in &mut groups {
            g.sort_unstable();
        }
        groups.sort_unstable_by_key(|g| g.first().copied());
        let mut component = vec![usize::MAX; self.len()];
        for (c, g) in groups.iter().enumerate() {
            for &i in g {
                component[i] = c;
            }
        }
        let mut scratch = vec![None; self.len()];
        groups
            .iter()
            .enumerate()
            .filter_map(|(c, g)| {
                let start = *g.first()?;
                Some(self.path_back(start, |t| component[t] == c, &mut scratch))
            })
            .collect()
    }

    /// Strongly connected components (Tarjan's algorithm, with an explicit stack).
    fn components(&self) -> Vec<Vec<usize>> {
        const UNSEEN: usize = usize::MAX;
        let n = self.len();
        let mut index = vec![UNSEEN; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut calls: Vec<(usize, usize)> = Vec::new();
        let mut next = 0;
        let mut out = Vec::new();
        for root in 0..n {
            if index[root] != UNSEEN {
                continue;
            }
            index[root] = next;
            low[root] = next;
            next += 1;
            stack.push(root);
            on_stack[root] = true;
            calls.push((root, 0));
            while let Some(&mut (v, ref mut edge)) = calls.last_mut() {
                if let Some(&w) = self.waits[v].get(*edge) {
                    *edge += 1;
                    if index[w] == UNSEEN {
                        index[w] = next;
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        calls.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut group = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        group.push(w);
                        if w == v {
                            break;
                        }
                    }
                    out.push(group);
                }
            }
        }
        out
    }

    /// Shortest path from `start` back to itself through steps `inside` (breadth first).
    /// `prev` is all `None` on entry and is left so; only the entries visited are touched.
    fn path_back(
        &self,
        start: usize,
        inside: impl Fn(usize) -> bool,
        prev: &mut [Option<usize>],
    ) -> Vec<usize> {
        let mut visited = Vec::new();
        let mut queue = VecDeque::from([start]);
        let mut path = vec![start];
        'search: while let Some(k) = queue.pop_front() {
            for &t in &self.waits[k] {
                if t == start {
                    path = vec![k];
                    let mut cur = k;
                    while let Some(p) = prev[cur] {
                        path.push(p);
                        cur = p;
                    }
                    if cur != start {
                        path.push(start);
                    }
                    path.reverse();
                    break 'search;
                }
                if inside(t) && prev[t].is_none() {
                    prev[t] = Some(k);
                    visited.push(t);
                    queue.push_back(t);
                }
            }
        }
        for t in visited {
            prev[t] = None;
        }
        path
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
    fn steps_come_after_the_steps_they_wait_for() {
        // 0; 1 after 0; 2 at start; 3 after 1 and 2
        let g = Graph::new(&edges(&[&[], &[0], &[], &[1, 2]]));
        assert!(g.cycles().is_empty());
        let order = g.topological_order().unwrap();
        let at = |i: usize| order.iter().position(|&s| s == i).unwrap();
        assert_eq!(order.len(), 4);
        assert!(at(0) < at(1) && at(1) < at(3) && at(2) < at(3));
        assert!(
            Graph::new(&edges(&[&[1], &[0]]))
                .topological_order()
                .is_none()
        );
    }

    #[test]
    fn a_long_chain_is_walked_without_recursion() {
        let n = 200_000;
        let chain: Vec<Vec<Edge>> = (0..n)
            .map(|i| match i {
                0 => vec![Edge {
                    to: n - 1,
                    span: None,
                }],
                _ => vec![Edge {
                    to: i - 1,
                    span: None,
                }],
            })
            .collect();
        let g = Graph::new(&chain);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].len(), n);
        assert_eq!(cycles[0][..3], [0, n - 1, n - 2]);
        assert!(g.topological_order().is_none());
    }

    #[test]
    fn cycles_are_found_once_per_group_in_waiting_order() {
        // 0 waits for 2, 2 waits for 1, 1 waits for 0; 3 waits for itself
        let g = Graph::new(&edges(&[&[2], &[0], &[1], &[3]]));
        assert_eq!(g.cycles(), vec![vec![0, 2, 1], vec![3]]);
        // Two groups joined by an edge stay two cycles; a step outside any cycle is in none.
        let g = Graph::new(&edges(&[&[1], &[0], &[0, 3], &[2], &[2]]));
        assert_eq!(g.cycles(), vec![vec![0, 1], vec![2, 3]]);
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
