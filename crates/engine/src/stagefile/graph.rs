//! Ordering stages: Kahn's algorithm with ties broken by Stagefile order, and, when that fails, one
//! dependency cycle to show the user.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

/// "stage `from` needs stage `to`", with the span that says so (a `needs` entry or an input).
#[derive(Clone, Debug)]
pub(super) struct Edge {
    pub to: usize,
    pub span: Range<usize>,
}

/// Keep one edge per target, the first one written, so each need is counted once.
pub(super) fn dedup_edges(edges: &mut Vec<Edge>) {
    let mut seen = std::collections::HashSet::with_capacity(edges.len());
    edges.retain(|e| seen.insert(e.to));
}

/// Stage indices (Stagefile order) in a topological order, or a cycle as the edges that form it,
/// starting at the stage written first.
pub(super) fn topo_order(needs: &[Vec<Edge>]) -> Result<Vec<usize>, Vec<(usize, Edge)>> {
    let n = needs.len();
    let mut waiting_on: Vec<usize> = needs.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (from, edges) in needs.iter().enumerate() {
        for e in edges {
            dependents[e.to].push(from);
        }
    }
    // A min-heap of ready stages: the earliest in the Stagefile goes first.
    let mut ready: BinaryHeap<Reverse<usize>> = (0..n)
        .filter(|&i| waiting_on[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(stage)) = ready.pop() {
        order.push(stage);
        for &d in &dependents[stage] {
            waiting_on[d] -= 1;
            if waiting_on[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    if order.len() == n {
        Ok(order)
    } else {
        Err(find_cycle(needs, &waiting_on))
    }
}

/// Every stage left waiting has a need that is also left waiting, so following such needs from any
/// of them must come back to a stage already visited: that loop is a cycle.
fn find_cycle(needs: &[Vec<Edge>], waiting_on: &[usize]) -> Vec<(usize, Edge)> {
    let stuck = |i: usize| waiting_on[i] > 0;
    let start = (0..needs.len()).find(|&i| stuck(i)).expect("a stuck stage");
    let mut position = vec![usize::MAX; needs.len()];
    let mut path: Vec<(usize, Edge)> = Vec::new();
    let mut current = start;
    while position[current] == usize::MAX {
        position[current] = path.len();
        let edge = needs[current]
            .iter()
            .find(|e| stuck(e.to))
            .expect("a stuck stage waits on a stuck stage")
            .clone();
        let next = edge.to;
        path.push((current, edge));
        current = next;
    }
    let mut cycle = path.split_off(position[current]);
    // Start at the stage written first, so the message is stable and reads from the top.
    let first = (0..cycle.len()).min_by_key(|&i| cycle[i].0).unwrap_or(0);
    cycle.rotate_left(first);
    cycle
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(needs: &[&[usize]]) -> Vec<Vec<Edge>> {
        needs
            .iter()
            .map(|ns| ns.iter().map(|&to| Edge { to, span: 0..0 }).collect())
            .collect()
    }

    #[test]
    fn ties_follow_stagefile_order() {
        // 0 needs 3; 1 and 2 are free; 3 is free.
        let order = topo_order(&graph(&[&[3], &[], &[], &[]])).unwrap();
        assert_eq!(order, [1, 2, 3, 0]);
    }

    #[test]
    fn reports_the_cycle_from_its_first_stage() {
        // 0 → 1 (free); 2 → 3 → 4 → 2; 5 needs 4.
        let needs = graph(&[&[1], &[], &[3], &[4], &[2], &[4]]);
        let cycle = topo_order(&needs).unwrap_err();
        let stages: Vec<(usize, usize)> = cycle.iter().map(|(s, e)| (*s, e.to)).collect();
        assert_eq!(stages, [(2, 3), (3, 4), (4, 2)]);
    }

    #[test]
    fn dedup_keeps_the_first_edge() {
        let mut edges = vec![
            Edge { to: 1, span: 0..1 },
            Edge { to: 1, span: 5..6 },
            Edge { to: 2, span: 7..8 },
        ];
        dedup_edges(&mut edges);
        let kept: Vec<_> = edges.iter().map(|e| (e.to, e.span.start)).collect();
        assert_eq!(kept, [(1, 0), (2, 7)]);
    }
}
