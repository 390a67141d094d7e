//! The whole-file step for `needs:`, `dependencies:` and `parallel:`, as
//! GitLab's normalizer and YAML processor do it: expands `parallel` jobs
//! into their instances (`build 1/3`, `test: [aws, app1]`), replaces a
//! `needs`/`dependencies` name of a parallel job by all its instances, and
//! checks the result (defined jobs, stage order, cycles, GitLab's limit of
//! 50 needs). Each rule's `needs:` is resolved and checked the same way and
//! stored on its rule; cycles are only searched among job-level needs, since
//! which rule matches depends on the ref. What can only be checked on a ref
//! (whether a needed job was created, cycles through `rules:needs`) is the
//! planner's job.

use super::graph::{JobLinks, LocatedNeeds, Parallel};
use super::keywords::{did_you_mean, suggest};
use super::tree::Location;
use super::values::Context;
use super::Report;
use crate::pipeline::{dag, JobConditions, JobDef, JobFilter, Need, Variable};
use std::collections::{HashMap, HashSet};

/// GitLab's limit on `needs:` entries of one job (after expansion).
const MAX_NEEDS: usize = 50;

/// Osprey's limits on what `parallel` may multiply, so that a small file
/// cannot expand into gigabytes: jobs in the file after expansion, and the
/// script lines and variables they hold together.
const MAX_EXPANDED_JOBS: usize = 5_000;
const MAX_EXPANDED_WEIGHT: usize = 2_000_000;

/// What one copy of a job costs, roughly: its lines and variables.
fn weight(job: &JobDef) -> usize {
    1 + job.before_script.len() + job.script.len() + job.after_script.len() + job.variables.len()
}

/// One job of the expanded file.
struct Instance {
    /// Index of the job as written.
    source: usize,
    name: String,
    node: Option<(u32, u32)>,
    variables: Vec<Variable>,
}

/// The instances of a `parallel` job, with GitLab's names.
fn instances(name: &str, parallel: &Parallel) -> Vec<(String, Vec<Variable>)> {
    match parallel {
        Parallel::Count(total) => (1..=*total)
            .map(|i| (format!("{name} {i}/{total}"), Vec::new()))
            .collect(),
        Parallel::Matrix(entries) => {
            let mut out = Vec::new();
            for entry in entries {
                // The cartesian product, first variable varying slowest.
                let mut combos: Vec<Vec<Variable>> = vec![Vec::new()];
                for (key, values) in entry {
                    let mut next = Vec::with_capacity(combos.len() * values.len());
                    for combo in &combos {
                        for value in values {
                            let mut combo = combo.clone();
                            combo.push(Variable {
                                key: key.clone(),
                                value: value.clone(),
                            });
                            next.push(combo);
                        }
                    }
                    combos = next;
                }
                for combo in combos {
                    let shown: Vec<&str> = combo.iter().map(|v| v.value.as_str()).collect();
                    out.push((format!("{name}: [{}]", shown.join(", ")), combo));
                }
            }
            out
        }
    }
}

/// Expands `parallel` jobs and resolves and checks `needs`/`dependencies`
/// over the whole file. `stages` is `None` when `stages:` was invalid.
/// `locations` holds each job's key, for errors about the job as a whole.
pub(crate) fn link(
    report: &mut Report,
    jobs: Vec<JobDef>,
    conditions: Vec<JobConditions>,
    links: Vec<JobLinks>,
    locations: &[Location],
    stages: Option<&[String]>,
) -> (Vec<JobDef>, Vec<JobConditions>) {
    let mut expanded = Vec::with_capacity(jobs.len());
    // Base name of a parallel job → its instances' names.
    let mut parallel_names: HashMap<&str, Vec<String>> = HashMap::new();
    let (mut count, mut total_weight) = (0usize, 0usize);
    for (job, links) in jobs.iter().zip(&links) {
        let copies = match &links.parallel {
            None => 1,
            Some(Parallel::Count(n)) => usize::try_from(*n).unwrap_or(usize::MAX),
            Some(Parallel::Matrix(entries)) => entries
                .iter()
                .map(|e| e.iter().map(|(_, v)| v.len()).product::<usize>())
                .sum(),
        };
        count = count.saturating_add(copies);
        total_weight = total_weight.saturating_add(copies.saturating_mul(weight(job)));
    }
    let too_big = count > MAX_EXPANDED_JOBS || total_weight > MAX_EXPANDED_WEIGHT;
    if too_big {
        report.error(
            Location::START,
            format!(
                "parallel: the file expands to {count} jobs holding {total_weight} script lines \
                 and variables; Osprey's limits are {MAX_EXPANDED_JOBS} jobs and \
                 {MAX_EXPANDED_WEIGHT} lines"
            ),
        );
    }
    for (index, (job, links)) in jobs.iter().zip(&links).enumerate() {
        // Past the limits, jobs stay unexpanded: the file is refused anyway.
        let parallel = links.parallel.as_ref().filter(|_| !too_big);
        match parallel {
            None => expanded.push(Instance {
                source: index,
                name: job.name.clone(),
                node: None,
                variables: Vec::new(),
            }),
            Some(parallel) => {
                let list = instances(&job.name, parallel);
                let total = u32::try_from(list.len()).unwrap_or(u32::MAX);
                let mut names = Vec::with_capacity(list.len());
                for (i, (name, variables)) in list.into_iter().enumerate() {
                    let i = u32::try_from(i + 1).unwrap_or(u32::MAX);
                    names.push(name.clone());
                    expanded.push(Instance {
                        source: index,
                        name,
                        node: Some((i, total)),
                        variables,
                    });
                }
                parallel_names.insert(job.name.as_str(), names);
            }
        }
    }
    // Stage index of every job name after expansion.
    let mut stage_of: HashMap<&str, Option<usize>> = HashMap::new();
    let stage_index = |job: &JobDef| stages.and_then(|s| s.iter().position(|x| *x == job.stage));
    // Two jobs with one name are the tree's error (a duplicate key), unless a
    // parallel job generated the name.
    let mut generated: HashSet<&str> = HashSet::new();
    for instance in &expanded {
        let job = &jobs[instance.source];
        let clash = stage_of
            .insert(instance.name.as_str(), stage_index(job))
            .is_some();
        let from_parallel = instance.node.is_some();
        if from_parallel {
            generated.insert(instance.name.as_str());
        }
        if clash && (from_parallel || generated.contains(instance.name.as_str())) {
            let at = locations
                .get(instance.source)
                .copied()
                .unwrap_or(Location::START);
            report.error(
                at,
                format!(
                    "job {}: parallel: the job name {} is used by another job",
                    job.name, instance.name
                ),
            );
        }
    }
    let all_names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    // A name as written → the names it stands for after expansion.
    let resolve = |name: &str| -> Option<Vec<String>> {
        if let Some(names) = parallel_names.get(name) {
            return Some(names.clone());
        }
        stage_of.contains_key(name).then(|| vec![name.to_owned()])
    };
    let mut resolved_needs: Vec<Option<Vec<Need>>> = Vec::with_capacity(jobs.len());
    let mut resolved_rule_needs: Vec<Vec<(usize, Vec<Need>)>> = Vec::with_capacity(jobs.len());
    let mut resolved_dependencies: Vec<Option<Vec<String>>> = Vec::with_capacity(jobs.len());
    for (job, links) in jobs.iter().zip(&links) {
        let prefix = format!("job {}: ", job.name);
        let cx = Context { prefix: &prefix };
        let own_stage = stage_index(job);
        let later = |name: &str, strictly: bool| match (own_stage, stage_of.get(name)) {
            (Some(own), Some(Some(other))) => {
                if strictly {
                    *other >= own
                } else {
                    *other > own
                }
            }
            _ => false,
        };
        let mut needs_of = |(key, entries): &LocatedNeeds, keyword: &str| {
            let mut out = Vec::new();
            for (need, at) in entries {
                let Some(names) = resolve(&need.job) else {
                    if need.optional {
                        // Absent from the file: absent from every plan too.
                        continue;
                    }
                    cx.error(
                        report,
                        *at,
                        format!(
                            "{keyword}undefined need: {}{}",
                            need.job,
                            did_you_mean(suggest(&need.job, all_names.iter().copied()))
                        ),
                    );
                    continue;
                };
                for name in names {
                    if later(&name, false) {
                        cx.error(
                            report,
                            *at,
                            format!(
                                "{keyword}need {name} is not defined in current or prior stages"
                            ),
                        );
                    }
                    out.push(Need {
                        job: name,
                        ..need.clone()
                    });
                }
            }
            if out.len() > MAX_NEEDS {
                cx.error(
                    report,
                    *key,
                    format!(
                        "{keyword}one job can only need {MAX_NEEDS} others, but you have listed {}",
                        out.len()
                    ),
                );
                // Keep the graph small: the file is refused anyway.
                out.truncate(MAX_NEEDS + 1);
            }
            out
        };
        let needs = links.needs.as_ref().map(|located| needs_of(located, ""));
        // GitLab checks each rule's needs as it checks the job's own; which
        // of them apply (and whether they form a cycle) is the planner's.
        let rule_needs: Vec<(usize, Vec<Need>)> = links
            .rule_needs
            .iter()
            .map(|(rule, located)| (*rule, needs_of(located, "rules:needs: ")))
            .collect();
        let dependencies = links.dependencies.as_ref().map(|(_, entries)| {
            let mut out = Vec::new();
            for (name, at) in entries {
                let Some(names) = resolve(name) else {
                    cx.error(
                        report,
                        *at,
                        format!(
                            "undefined dependency: {name}{}",
                            did_you_mean(suggest(name, all_names.iter().copied()))
                        ),
                    );
                    continue;
                };
                for name in names {
                    if later(&name, true) {
                        cx.error(
                            report,
                            *at,
                            format!("dependency {name} is not defined in prior stages"),
                        );
                    } else if needs
                        .as_ref()
                        .is_some_and(|needs| !needs.iter().any(|n| n.job == name))
                    {
                        cx.error(
                            report,
                            *at,
                            format!("dependency {name} should be part of needs"),
                        );
                    }
                    out.push(name);
                }
            }
            out
        });
        resolved_needs.push(needs);
        resolved_rule_needs.push(rule_needs);
        resolved_dependencies.push(dependencies);
    }
    check_cycles(report, &jobs, &expanded, &resolved_needs, &links);
    let mut out_jobs = Vec::with_capacity(expanded.len());
    let mut out_conditions = Vec::with_capacity(expanded.len());
    for instance in expanded {
        let mut job = jobs[instance.source].clone();
        let mut condition = conditions[instance.source].clone();
        job.name.clone_from(&instance.name);
        condition.name = instance.name;
        job.node = instance.node;
        // Matrix values are job variables, set over the job's own.
        job.variables.extend(instance.variables);
        job.needs.clone_from(&resolved_needs[instance.source]);
        if let JobFilter::Rules(rules) = &mut condition.filter {
            for (index, needs) in &resolved_rule_needs[instance.source] {
                if let Some(rule) = rules.get_mut(*index) {
                    rule.needs = Some(needs.clone());
                }
            }
        }
        job.dependencies
            .clone_from(&resolved_dependencies[instance.source]);
        out_jobs.push(job);
        out_conditions.push(condition);
    }
    (out_jobs, out_conditions)
}

/// Reports each `needs` cycle once, at the `needs:` of the job (as written)
/// where it is found.
fn check_cycles(
    report: &mut Report,
    jobs: &[JobDef],
    expanded: &[Instance],
    needs: &[Option<Vec<Need>>],
    links: &[JobLinks],
) {
    let index: HashMap<&str, usize> = expanded
        .iter()
        .enumerate()
        .map(|(i, instance)| (instance.name.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = expanded
        .iter()
        .map(|instance| {
            needs[instance.source]
                .iter()
                .flatten()
                .filter_map(|n| index.get(n.job.as_str()).copied())
                .collect()
        })
        .collect();
    let mut reported: HashSet<usize> = HashSet::new();
    for cycle in dag::cycles(&edges) {
        let source = expanded[cycle[cycle.len() - 2]].source;
        if reported.insert(source) {
            let names: Vec<&str> = cycle.iter().map(|n| expanded[*n].name.as_str()).collect();
            let at = links[source].needs.as_ref().map(|(key, _)| *key);
            report.error(
                at.unwrap_or(Location::START),
                format!(
                    "job {}: needs: circular dependency: {}",
                    jobs[source].name,
                    names.join(" -> ")
                ),
            );
        }
    }
}
