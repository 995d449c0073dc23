//! Steps that may run at the same time on the same VMs with different actions, found without
//! looking at every pair of steps and reported in groups.
//!
//! Two steps conflict when neither waits for the other (directly or not), their actions
//! differ, and a target of one may overlap a target of the other ([`may_overlap`]). The work
//! is split so that it follows the input, not its square:
//!
//! 1. Identical selectors are merged. Selectors without globs or ids are compared through a
//!    hash index (a selector can only overlap one whose fields are a subset of its own with
//!    the same values); only selectors with a glob or an id are compared one by one.
//! 2. Only steps whose selectors overlap one used with another action take part further.
//! 3. The steps are walked in execution order carrying, per step, the set (a bitset over the
//!    steps taking part) of those it waits for; each step then finds an earlier step that it
//!    does not wait for among those acting differently on an overlapping selector. A second
//!    walk, backwards, does the same with the steps waiting for it.
//!
//! A group is one pair of overlapping selectors: every step on one of them that may run at
//! the same time as a step acting differently on the other. Budgets on work and memory keep
//! hostile input bounded; past them the analysis stops and says it is incomplete.

use super::graph::{Graph, may_overlap};
use super::model::{Action, NameOrId, Selector, Step};
use std::collections::HashMap;

/// Units of work the analysis may spend, one per bitset word or list entry looked at: about
/// a second. Real runbooks use a tiny fraction of it.
const WORK_BUDGET: u64 = 1_500_000_000;
/// Units one selector comparison with a glob costs (a glob match is ~100 times a word).
const COMPARISON_COST: u64 = 100;
/// Largest total of the bitsets alive at once, in 64-bit words (64 MiB).
const MEMORY_BUDGET_WORDS: usize = 8 << 20;

/// One step of a group, with the target that overlaps and one step it may clash with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub step: usize,
    pub target: usize,
    pub partner: usize,
    pub partner_target: usize,
}

/// Steps that may act on the same VMs at the same time with different actions, in file
/// order (at least two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub members: Vec<Member>,
}

#[derive(Debug)]
pub struct Conflicts {
    pub groups: Vec<Group>,
    /// False when a budget ran out: some conflicts may be missing.
    pub complete: bool,
}

/// The conflict groups of steps whose graph has no cycle, in file order of their first
/// member.
pub fn find(steps: &[Step], graph: &Graph) -> Conflicts {
    let mut work = Work {
        left: WORK_BUDGET,
        exhausted: false,
    };
    let groups = Analysis::new(steps, &mut work)
        .map(|a| a.groups(graph, &mut work))
        .unwrap_or_default();
    Conflicts {
        groups,
        complete: !work.exhausted,
    }
}

struct Work {
    left: u64,
    exhausted: bool,
}

impl Work {
    /// Spends `n` units; false once the budget is gone.
    fn spend(&mut self, n: u64) -> bool {
        match self.left.checked_sub(n) {
            Some(left) if !self.exhausted => {
                self.left = left;
                true
            }
            _ => {
                self.exhausted = true;
                false
            }
        }
    }
}

/// One field of a selector as a hashable value; fields not set are `None`.
type Key = [Option<(u8, String)>; 7];

fn key(s: &Selector) -> Key {
    let name_or_id = |v: &Option<NameOrId>| {
        v.as_ref().map(|v| match v {
            NameOrId::Id(id) => (0, id.to_string()),
            NameOrId::Name(p) => (1, p.as_str().to_owned()),
        })
    };
    let text = |v: Option<&str>| v.map(|v| (1, v.to_owned()));
    [
        name_or_id(&s.vdc),
        name_or_id(&s.vapp),
        text(s.vm.as_ref().map(|p| p.as_str())),
        text(s.label.as_ref().map(|p| p.as_str())),
        text(s.state.as_ref().map(|s| s.as_str())),
        // Hypervisors compare without case.
        s.hypervisor.as_ref().map(|h| (1, h.to_ascii_uppercase())),
        text(s.href.as_deref()),
    ]
}

/// No glob and no id: two such selectors overlap exactly when the fields of one are a subset
/// of the other's with equal values, which a hash lookup can answer.
fn is_plain(s: &Selector) -> bool {
    let name = |v: &Option<NameOrId>| match v {
        Some(NameOrId::Id(_)) => false,
        Some(NameOrId::Name(p)) => p.is_literal(),
        None => true,
    };
    name(&s.vdc)
        && name(&s.vapp)
        && s.vm.as_ref().is_none_or(|p| p.is_literal())
        && s.label.as_ref().is_none_or(|p| p.is_literal())
}

fn action_bit(a: Action) -> u8 {
    1 << (a as u8)
}

/// The steps using one selector with one action, in execution order of the steps taking
/// part (`rank`), each with the target that names the selector.
struct Side {
    selector: usize,
    action: Action,
    members: Vec<(usize, usize)>,
    ranks: Vec<usize>,
    /// The ranks as a bitset, when the side is large enough for words to beat a list.
    bits: Option<Vec<u64>>,
}

struct Analysis<'s> {
    steps: &'s [Step],
    sides: Vec<Side>,
    /// Per selector, its sides.
    sides_of: Vec<Vec<usize>>,
    /// Per selector, the selectors it may overlap (itself included).
    partners: Vec<Vec<usize>>,
    /// Per step, the sides it is in (it takes part when there is any).
    taking_part: Vec<Vec<usize>>,
}

impl<'s> Analysis<'s> {
    /// Merges selectors, finds which overlap and which steps take part; `None` when no two
    /// steps can conflict whatever the order.
    fn new(steps: &'s [Step], work: &mut Work) -> Option<Self> {
        let mut ids: HashMap<Key, usize> = HashMap::new();
        let mut selectors: Vec<&Selector> = Vec::new();
        let mut keys: Vec<Key> = Vec::new();
        // (selector, action) → side, and the sides' members (a step once per side).
        let mut side_ids: HashMap<(usize, Action), usize> = HashMap::new();
        let mut sides: Vec<Side> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            for (t, selector) in step.targets.iter().enumerate() {
                let k = key(selector);
                let id = *ids.entry(k.clone()).or_insert_with(|| {
                    selectors.push(selector);
                    keys.push(k);
                    selectors.len() - 1
                });
                let side = *side_ids.entry((id, step.action)).or_insert_with(|| {
                    sides.push(Side {
                        selector: id,
                        action: step.action,
                        members: Vec::new(),
                        ranks: Vec::new(),
                        bits: None,
                    });
                    sides.len() - 1
                });
                let members = &mut sides[side].members;
                if members.last().is_none_or(|&(s, _)| s != i) {
                    members.push((i, t));
                }
            }
        }
        let mut sides_of = vec![Vec::new(); selectors.len()];
        for (i, side) in sides.iter().enumerate() {
            sides_of[side.selector].push(i);
        }
        let mut actions = vec![0u8; selectors.len()];
        for side in &sides {
            actions[side.selector] |= action_bit(side.action);
        }
        // Only selectors used by two actions somewhere need partners; the others cannot
        // make a conflict through identical selectors, and overlaps between two selectors
        // used by one action each still need both listed, so all selectors are indexed.
        let partners = overlaps(&selectors, &keys, &ids, work);
        let mut partner_actions = vec![0u8; selectors.len()];
        for (s, ps) in partners.iter().enumerate() {
            for &p in ps {
                partner_actions[s] |= actions[p];
            }
        }
        let mut taking_part = vec![Vec::new(); steps.len()];
        let mut any = false;
        for (i, side) in sides.iter().enumerate() {
            if partner_actions[side.selector] & !action_bit(side.action) != 0 {
                any = true;
                for &(step, _) in &side.members {
                    taking_part[step].push(i);
                }
            }
        }
        any.then_some(Self {
            steps,
            sides,
            sides_of,
            partners,
            taking_part,
        })
    }

    fn groups(mut self, graph: &Graph, work: &mut Work) -> Vec<Group> {
        let Some(order) = graph.topological_order() else {
            return Vec::new();
        };
        // Ranks: the steps taking part, numbered in execution order.
        let mut rank = vec![None; self.steps.len()];
        let mut ranked = Vec::new();
        for &i in &order {
            if !self.taking_part[i].is_empty() {
                rank[i] = Some(ranked.len());
                ranked.push(i);
            }
        }
        let words = ranked.len().div_ceil(64);
        for side in &mut self.sides {
            side.ranks = side.members.iter().filter_map(|&(s, _)| rank[s]).collect();
            let order: Vec<usize> = {
                let mut o: Vec<usize> = (0..side.ranks.len()).collect();
                o.sort_unstable_by_key(|&k| side.ranks[k]);
                o
            };
            side.members = order.iter().map(|&k| side.members[k]).collect();
            side.ranks = order.iter().map(|&k| side.ranks[k]).collect();
            if side.ranks.len().saturating_mul(64) >= ranked.len() && !side.ranks.is_empty() {
                let mut bits = vec![0u64; words];
                for &r in &side.ranks {
                    bits[r / 64] |= 1 << (r % 64);
                }
                side.bits = Some(bits);
            }
        }
        let mut found: HashMap<(usize, usize), Vec<Member>> = HashMap::new();
        let walks = [
            (order.clone(), Direction::Earlier),
            (
                order.into_iter().rev().collect::<Vec<_>>(),
                Direction::Later,
            ),
        ];
        for (walk, direction) in walks {
            let complete = self.walk(graph, &walk, &rank, words, direction, work, &mut found);
            if !complete {
                break;
            }
        }
        let mut groups: Vec<(Vec<usize>, Group)> = found
            .into_values()
            .filter_map(|mut members| {
                // Stable: of a step's entries the first found is kept, the same every time.
                members.sort_by_key(|m| m.step);
                members.dedup_by_key(|m| m.step);
                let steps = members.iter().map(|m| m.step).collect();
                (members.len() >= 2).then_some((steps, Group { members }))
            })
            .collect();
        // The map's order is random: sort by everything that is shown.
        groups.sort_unstable_by(|a, b| {
            let shown = |g: &Group| -> Vec<(usize, usize, usize)> {
                g.members
                    .iter()
                    .map(|m| (m.target, m.partner, m.partner_target))
                    .collect()
            };
            a.0.cmp(&b.0).then_with(|| shown(&a.1).cmp(&shown(&b.1)))
        });
        // Steps with several targets can meet on several selector pairs: one group for them.
        groups.dedup_by(|a, b| a.0 == b.0);
        groups.into_iter().map(|(_, g)| g).collect()
    }

    /// One walk over the steps in `walk` order, carrying for each step the ranks of the steps
    /// it is ordered with on this side (waits for when walking forward, is waited for by when
    /// walking back). Returns false when a budget ran out.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        graph: &Graph,
        walk: &[usize],
        rank: &[Option<usize>],
        words: usize,
        direction: Direction,
        work: &mut Work,
        found: &mut HashMap<(usize, usize), Vec<Member>>,
    ) -> bool {
        let n = self.steps.len();
        // What the walk came from: the steps waited for, or the steps waiting.
        let before = |i: usize| match direction {
            Direction::Earlier => graph.waits_for(i),
            Direction::Later => graph.released_by(i),
        };
        let after = |i: usize| match direction {
            Direction::Earlier => graph.released_by(i),
            Direction::Later => graph.waits_for(i),
        };
        let mut pending: Vec<usize> = (0..n).map(|i| after(i).len()).collect();
        let mut sets: Vec<Option<Vec<u64>>> = vec![None; n];
        let mut live = 0usize;
        for &v in walk {
            // The set of v: union of its predecessors' sets, plus the predecessors taking part.
            let mut set: Option<Vec<u64>> = None;
            for &p in before(v) {
                let inherited = if pending[p] == 1 && set.is_none() {
                    // v is the last to need p's set: take it over instead of copying.
                    sets[p].take()
                } else {
                    None
                };
                match (inherited, &mut set) {
                    (Some(s), slot) => *slot = Some(s),
                    (None, slot) => {
                        if let Some(theirs) = &sets[p] {
                            if !work.spend(words as u64) {
                                return false;
                            }
                            let mine = slot.get_or_insert_with(|| {
                                live += words;
                                vec![0; words]
                            });
                            for (m, t) in mine.iter_mut().zip(theirs) {
                                *m |= t;
                            }
                        }
                    }
                }
                if let Some(r) = rank[p] {
                    let mine = set.get_or_insert_with(|| {
                        live += words;
                        vec![0; words]
                    });
                    mine[r / 64] |= 1 << (r % 64);
                }
            }
            for &p in before(v) {
                pending[p] = pending[p].saturating_sub(1);
                if pending[p] == 0 && sets[p].take().is_some() {
                    live -= words;
                }
            }
            if live > MEMORY_BUDGET_WORDS {
                work.exhausted = true;
                return false;
            }
            if let Some(r) = rank[v]
                && !self.visit(v, r, set.as_deref(), direction, work, found)
            {
                return false;
            }
            if pending[v] > 0 {
                sets[v] = set;
            } else if set.is_some() {
                live -= words;
            }
        }
        true
    }

    /// Looks, for step `v` (rank `r`) and each of its sides, for a step on an overlapping
    /// selector with another action, on this walk's side of `v`, that `v` is not ordered
    /// with (`ordered`). Records `v` in the group of each selector pair where one exists.
    fn visit(
        &self,
        v: usize,
        r: usize,
        ordered: Option<&[u64]>,
        direction: Direction,
        work: &mut Work,
        found: &mut HashMap<(usize, usize), Vec<Member>>,
    ) -> bool {
        for &mine in &self.taking_part[v] {
            let side = &self.sides[mine];
            let Some(&(_, target)) = side
                .ranks
                .binary_search(&r)
                .ok()
                .and_then(|k| side.members.get(k))
            else {
                continue;
            };
            for &p in &self.partners[side.selector] {
                for &theirs in &self.sides_of[p] {
                    let other = &self.sides[theirs];
                    if other.action == side.action {
                        continue;
                    }
                    let Some(k) = free_member(other, r, ordered, direction, work) else {
                        if work.exhausted {
                            return false;
                        }
                        continue;
                    };
                    let (partner, partner_target) = other.members[k];
                    let pair = (side.selector.min(p), side.selector.max(p));
                    found.entry(pair).or_default().push(Member {
                        step: v,
                        target,
                        partner,
                        partner_target,
                    });
                }
            }
        }
        true
    }
}

#[derive(Clone, Copy)]
enum Direction {
    /// Among the steps before in execution order (the walk forward).
    Earlier,
    /// Among the steps after (the walk back).
    Later,
}

/// The index in `side` of a member ranked on the walk's side of `r` that is not in
/// `ordered`, if any.
fn free_member(
    side: &Side,
    r: usize,
    ordered: Option<&[u64]>,
    direction: Direction,
    work: &mut Work,
) -> Option<usize> {
    let is_ordered =
        |x: usize| ordered.is_some_and(|o| o.get(x / 64).is_some_and(|w| w & (1 << (x % 64)) != 0));
    let split = side.ranks.partition_point(|&x| x < r);
    // Skip v itself (it is never on a side with another action, but be exact).
    let range = match direction {
        Direction::Earlier => 0..split,
        Direction::Later => {
            side.ranks[split..]
                .first()
                .map_or(split, |&x| split + usize::from(x == r))..side.ranks.len()
        }
    };
    match &side.bits {
        Some(bits) => {
            let (lo, hi) = match direction {
                Direction::Earlier => (0, r),
                Direction::Later => (r + 1, bits.len() * 64),
            };
            if !work.spend((hi.saturating_sub(lo)).div_ceil(64).max(1) as u64) || lo >= hi {
                return None;
            }
            let first_word = lo / 64;
            let last_word = hi.div_ceil(64).min(bits.len());
            for (w, &word) in bits.iter().enumerate().take(last_word).skip(first_word) {
                let mut word = word & !ordered.and_then(|o| o.get(w).copied()).unwrap_or(0);
                let base = w * 64;
                if base < lo {
                    word &= !0u64 << (lo - base);
                }
                if hi < base + 64 {
                    word &= (1u64 << (hi - base)) - 1;
                }
                if word != 0 {
                    let x = base + word.trailing_zeros() as usize;
                    return side.ranks.binary_search(&x).ok();
                }
            }
            None
        }
        None => {
            if !work.spend(range.len().max(1) as u64) {
                return None;
            }
            range.into_iter().find(|&k| !is_ordered(side.ranks[k]))
        }
    }
}

/// For each selector, the selectors it may overlap, itself included.
fn overlaps(
    selectors: &[&Selector],
    keys: &[Key],
    ids: &HashMap<Key, usize>,
    work: &mut Work,
) -> Vec<Vec<usize>> {
    let n = selectors.len();
    let mut partners: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    let plain: Vec<bool> = selectors.iter().map(|s| is_plain(s)).collect();
    // Plain selectors: look up every proper subset of the fields with the same values.
    for i in (0..n).filter(|&i| plain[i]) {
        let set: Vec<usize> = (0..7).filter(|&f| keys[i][f].is_some()).collect();
        let subsets = (1u32 << set.len()) - 1;
        if !work.spend(u64::from(subsets)) {
            return partners;
        }
        for mask in 1..subsets {
            let mut sub: Key = Default::default();
            for (bit, &f) in set.iter().enumerate() {
                if mask & (1 << bit) != 0 {
                    sub[f] = keys[i][f].clone();
                }
            }
            if let Some(&j) = ids.get(&sub)
                && plain[j]
            {
                partners[i].push(j);
                partners[j].push(i);
            }
        }
    }
    // A glob or an id: compared with every other selector (each pair once).
    for i in (0..n).filter(|&i| !plain[i]) {
        if !work.spend(n as u64 * COMPARISON_COST) {
            return partners;
        }
        for j in 0..n {
            if j == i || (!plain[j] && j < i) {
                continue;
            }
            if may_overlap(selectors[i], selectors[j]) {
                partners[i].push(j);
                partners[j].push(i);
            }
        }
    }
    partners
}

#[cfg(test)]
mod tests;
