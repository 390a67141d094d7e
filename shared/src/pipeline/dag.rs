//! The cycle search over `needs:` edges, shared by the whole-file check of
//! job-level `needs` ([`crate::yaml`]) and the planner, which sees the
//! `needs` a ref's matching rules set. Pure graph code: callers map jobs to
//! indices and word the errors.

/// Every back edge found by a depth-first search over `edges` (node →
/// nodes it needs), as the cycle it closes: `[a, b, ..., a]`, where the
/// next-to-last node is the one whose edge closed it. Each back edge is
/// reported once; a node in several cycles may appear in several.
pub(crate) fn cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    // Iterative, so a long chain cannot overflow the stack:
    // 0 unvisited, 1 on the path, 2 done.
    let mut state = vec![0u8; edges.len()];
    let mut found = Vec::new();
    for start in 0..edges.len() {
        if state[start] != 0 {
            continue;
        }
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some(&target) = edges[node].get(*next) {
                *next += 1;
                match state.get(target) {
                    Some(0) => {
                        state[target] = 1;
                        path.push((target, 0));
                    }
                    Some(1) => {
                        let from = path.iter().position(|(n, _)| *n == target).unwrap_or(0);
                        let mut cycle: Vec<usize> = path[from..].iter().map(|(n, _)| *n).collect();
                        cycle.push(target);
                        found.push(cycle);
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                path.pop();
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::cycles;

    #[test]
    fn finds_each_cycle_with_the_node_that_closes_it() {
        // 0 -> 1 -> 2 -> 0, 3 -> 3, 4 -> 0 (no cycle of its own).
        let edges = vec![vec![1], vec![2], vec![0], vec![3], vec![0]];
        assert_eq!(cycles(&edges), vec![vec![0, 1, 2, 0], vec![3, 3]]);
    }

    #[test]
    fn a_dag_has_none() {
        let edges = vec![vec![], vec![0], vec![0, 1], vec![2, 1]];
        assert!(cycles(&edges).is_empty());
    }
}
