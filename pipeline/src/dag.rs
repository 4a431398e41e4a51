//! The step DAG as plain data: topological order and cycle detection.
//!
//! Kept free of the pipeline model so the scheduler and the validator use the
//! same, separately tested, graph code.

use std::collections::VecDeque;

/// A cycle found in the graph: node indices in edge order, the first node
/// repeated at the end so a message can print `a -> b -> a`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle(pub Vec<usize>);

/// Returns the nodes in a topological order (upstream before downstream),
/// stable with respect to declaration order among ready nodes, or a cycle.
///
/// `upstream[i]` lists the nodes node `i` depends on; indices must be in range.
pub fn topological_order(upstream: &[Vec<usize>]) -> Result<Vec<usize>, Cycle> {
    let n = upstream.len();
    let mut indegree: Vec<usize> = upstream.iter().map(Vec::len).collect();
    let mut downstream = vec![Vec::new(); n];
    for (node, ups) in upstream.iter().enumerate() {
        for &up in ups {
            downstream[up].push(node);
        }
    }
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(node) = ready.pop_front() {
        order.push(node);
        for &down in &downstream[node] {
            indegree[down] -= 1;
            if indegree[down] == 0 {
                ready.push_back(down);
            }
        }
    }
    if order.len() == n {
        Ok(order)
    } else {
        Err(find_cycle(upstream, &indegree))
    }
}

/// Walks upstream edges from a node left with a positive in-degree until a node
/// repeats; every such node lies on or leads into a cycle.
fn find_cycle(upstream: &[Vec<usize>], indegree: &[usize]) -> Cycle {
    let Some(start) = (0..upstream.len()).find(|&i| indegree[i] > 0) else {
        return Cycle(Vec::new());
    };
    let mut seen_at = vec![None; upstream.len()];
    let mut path = Vec::new();
    let mut node = start;
    loop {
        if let Some(pos) = seen_at[node] {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            // Walking upstream gives the reverse of the dependency direction.
            cycle.reverse();
            cycle.push(cycle[0]);
            return Cycle(cycle);
        }
        seen_at[node] = Some(path.len());
        path.push(node);
        // Follow an upstream node that is itself still blocked.
        match upstream[node].iter().find(|&&up| indegree[up] > 0) {
            Some(&up) => node = up,
            None => return Cycle(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_diamond() {
        // 0 -> 1, 0 -> 2, {1,2} -> 3
        let ups = vec![vec![], vec![0], vec![0], vec![1, 2]];
        assert_eq!(topological_order(&ups).unwrap(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn finds_two_node_cycle() {
        // 0 needs 1, 1 needs 0, 2 independent
        let ups = vec![vec![1], vec![0], vec![]];
        let cycle = topological_order(&ups).unwrap_err();
        assert_eq!(cycle.0.len(), 3);
        assert_eq!(cycle.0.first(), cycle.0.last());
        assert!(cycle.0.contains(&0) && cycle.0.contains(&1));
    }

    #[test]
    fn self_loop_is_a_cycle() {
        let ups = vec![vec![0]];
        assert_eq!(topological_order(&ups).unwrap_err(), Cycle(vec![0, 0]));
    }

    #[test]
    fn cycle_downstream_of_valid_node_names_only_cycle_members() {
        // 0 fine; 1 <- 0 and 1 <- 3; 2 <- 1; 3 <- 2  => cycle 1 -> 2 -> 3 -> 1
        let ups = vec![vec![], vec![0, 3], vec![1], vec![2]];
        let cycle = topological_order(&ups).unwrap_err().0;
        assert!(!cycle.contains(&0));
        assert_eq!(cycle.len(), 4);
    }
}
