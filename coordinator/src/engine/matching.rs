//! Matching pending jobs to connected agents: a pure function, so its
//! invariants (tags always satisfied, never over capacity) are tested without I/O.

use std::collections::BTreeSet;

/// What matching needs to know of a connected agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSlotView<'a, K> {
    pub key: K,
    pub tags: &'a BTreeSet<String>,
    pub run_untagged: bool,
    pub capacity: usize,
    pub busy: usize,
    /// False while the agent shows no life (silent past the limit, or an
    /// offer to it timed out): it gets no offers, whatever its free slots.
    pub responsive: bool,
}

/// Whether an agent may run a job with these tags at all (ignoring capacity).
/// A tagged job needs every one of its tags on the agent; an untagged job
/// needs an agent that runs untagged jobs (GitLab's rule).
pub fn can_run(
    job_tags: &BTreeSet<String>,
    agent_tags: &BTreeSet<String>,
    run_untagged: bool,
) -> bool {
    if job_tags.is_empty() {
        run_untagged
    } else {
        job_tags.is_subset(agent_tags)
    }
}

/// The agent that should take a job now: a responsive eligible agent with a
/// free slot, the least loaded first (by busy/capacity, then by fewest busy).
pub fn pick_agent<K: Clone>(
    job_tags: &BTreeSet<String>,
    agents: &[AgentSlotView<'_, K>],
) -> Option<K> {
    agents
        .iter()
        .filter(|agent| agent.responsive && agent.busy < agent.capacity)
        .filter(|agent| can_run(job_tags, agent.tags, agent.run_untagged))
        .min_by(|a, b| {
            // Compare busy/capacity without floats: a.busy * b.cap vs b.busy * a.cap.
            (a.busy * b.capacity)
                .cmp(&(b.busy * a.capacity))
                .then(a.busy.cmp(&b.busy))
        })
        .map(|agent| agent.key.clone())
}

/// Why no connected agent can take a job, for `pending_reason`; `None` when
/// some agent could (it is only busy).
pub fn pending_reason<'a>(
    job_tags: &BTreeSet<String>,
    agents: impl IntoIterator<Item = (&'a BTreeSet<String>, bool)>,
) -> Option<String> {
    let mut best_missing: Option<Vec<&String>> = None;
    for (tags, run_untagged) in agents {
        if can_run(job_tags, tags, run_untagged) {
            return None;
        }
        let missing: Vec<&String> = job_tags.difference(tags).collect();
        if best_missing
            .as_ref()
            .is_none_or(|best| missing.len() < best.len())
        {
            best_missing = Some(missing);
        }
    }
    Some(if job_tags.is_empty() {
        "no connected agent runs untagged jobs".to_owned()
    } else {
        let tags: Vec<&str> = job_tags.iter().map(String::as_str).collect();
        match best_missing {
            Some(missing) if !missing.is_empty() => {
                let missing: Vec<&str> = missing.iter().map(|tag| tag.as_str()).collect();
                format!(
                    "no connected agent has tags [{}] (closest agent lacks: {})",
                    tags.join(", "),
                    missing.join(", ")
                )
            }
            _ => format!("no connected agent has tags [{}]", tags.join(", ")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|tag| (*tag).to_owned()).collect()
    }

    #[test]
    fn tagged_jobs_need_all_their_tags() {
        assert!(can_run(
            &tags(&["docker"]),
            &tags(&["docker", "linux"]),
            false
        ));
        assert!(!can_run(
            &tags(&["docker", "gpu"]),
            &tags(&["docker"]),
            true
        ));
        assert!(!can_run(&tags(&[]), &tags(&["docker"]), false));
        assert!(can_run(&tags(&[]), &tags(&["docker"]), true));
    }

    #[test]
    fn the_least_loaded_eligible_agent_with_a_free_slot_wins() {
        let docker = tags(&["docker"]);
        let none = tags(&[]);
        let agents = [
            AgentSlotView {
                key: "full",
                tags: &docker,
                run_untagged: true,
                capacity: 1,
                busy: 1,
                responsive: true,
            },
            AgentSlotView {
                key: "busy",
                tags: &docker,
                run_untagged: true,
                capacity: 4,
                busy: 2,
                responsive: true,
            },
            AgentSlotView {
                key: "idle",
                tags: &docker,
                run_untagged: true,
                capacity: 4,
                busy: 0,
                responsive: true,
            },
            AgentSlotView {
                key: "untagged",
                tags: &none,
                run_untagged: true,
                capacity: 4,
                busy: 0,
                responsive: true,
            },
        ];
        assert_eq!(pick_agent(&tags(&["docker"]), &agents), Some("idle"));
        assert_eq!(pick_agent(&tags(&["gpu"]), &agents), None);
    }

    #[test]
    fn an_unresponsive_agent_gets_nothing_while_another_is_idle() {
        let none = tags(&[]);
        let view = |key, busy, responsive| AgentSlotView {
            key,
            tags: &none,
            run_untagged: true,
            capacity: 2,
            busy,
            responsive,
        };
        // The silent agent is the least loaded; the responsive one still wins.
        let agents = [view("silent", 0, false), view("alive", 1, true)];
        assert_eq!(pick_agent(&tags(&[]), &agents), Some("alive"));
        assert_eq!(pick_agent(&tags(&[]), &agents[..1]), None);
    }

    #[test]
    fn pending_reason_names_the_missing_tags() {
        let docker = tags(&["docker"]);
        let reason = pending_reason(&tags(&["docker", "gpu"]), [(&docker, false)]).unwrap();
        assert!(reason.contains("gpu"), "{reason}");
        assert_eq!(pending_reason(&tags(&["docker"]), [(&docker, false)]), None);
        assert!(pending_reason(&tags(&[]), [(&docker, false)])
            .unwrap()
            .contains("untagged"));
    }

    /// Property: however jobs and agents are drawn, repeated picks never put an
    /// agent over capacity, never give a job to an agent lacking its tags or
    /// showing no life, and pick whenever some agent could take the job.
    #[test]
    fn repeated_picks_respect_capacity_and_tags() {
        let universe = ["a", "b", "c"];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..500 {
            let agent_tags: Vec<BTreeSet<String>> = (0..4)
                .map(|_| {
                    universe
                        .iter()
                        .filter(|_| next() % 2 == 0)
                        .map(|tag| (*tag).to_owned())
                        .collect()
                })
                .collect();
            let mut busy = [0usize; 4];
            let capacity: Vec<usize> = (0..4).map(|_| (next() % 3) as usize + 1).collect();
            for _ in 0..20 {
                let job: BTreeSet<String> = universe
                    .iter()
                    .filter(|_| next() % 3 == 0)
                    .map(|tag| (*tag).to_owned())
                    .collect();
                let responsive: Vec<bool> = (0..4).map(|_| next() % 4 != 0).collect();
                let views: Vec<_> = (0..4)
                    .map(|i| AgentSlotView {
                        key: i,
                        tags: &agent_tags[i],
                        run_untagged: i % 2 == 0,
                        capacity: capacity[i],
                        busy: busy[i],
                        responsive: responsive[i],
                    })
                    .collect();
                let some_can = (0..4).any(|i| {
                    responsive[i]
                        && busy[i] < capacity[i]
                        && can_run(&job, &agent_tags[i], i % 2 == 0)
                });
                match pick_agent(&job, &views) {
                    Some(i) => {
                        assert!(can_run(&job, &agent_tags[i], i % 2 == 0));
                        assert!(responsive[i], "an unresponsive agent was picked");
                        busy[i] += 1;
                        assert!(busy[i] <= capacity[i]);
                    }
                    // Liveness: a job is left waiting only when no agent could take it.
                    None => assert!(!some_can, "no pick although an agent could take the job"),
                }
            }
        }
    }
}
