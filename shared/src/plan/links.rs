//! `needs:` and `dependencies:` against the jobs one ref actually gets.
//!
//! The front end has already expanded `parallel` names, checked that every
//! name is a job of the file, the stage order, the limit of 50, and cycles
//! among job-level `needs`. What is left depends on the ref:
//! - a needed job may not have been created (`rules`/`only`/`except`). As on
//!   GitLab, a missing `optional: true` need is dropped (a job whose needs
//!   are all dropped starts at once, like `needs: []`), any other missing
//!   need or dependency makes the pipeline fail to be created;
//! - a matching rule may have replaced a job's `needs` (`rules:needs`), so
//!   GitLab's "a dependency should be part of needs" and the cycle check are
//!   repeated on the needs as planned.

use super::PlanError;
use crate::pipeline::{dag, JobDef};
use std::collections::{HashMap, HashSet};

/// Drops optional needs of jobs that were not created and reports the
/// other references to missing jobs, dependencies outside the planned needs
/// and cycles.
pub(super) fn check(jobs: &mut [JobDef], errors: &mut Vec<PlanError>) {
    let created: HashSet<String> = jobs.iter().map(|j| j.name.clone()).collect();
    for job in jobs.iter_mut() {
        // Before optional needs are dropped: a dependency on a job that was
        // not created is reported below as such.
        if let (Some(needs), Some(dependencies)) = (&job.needs, &job.dependencies) {
            for dependency in dependencies {
                if !needs.iter().any(|need| need.job == *dependency) {
                    errors.push(PlanError {
                        job: Some(job.name.clone()),
                        message: format!(
                            "dependency {dependency} should be part of needs (the needs of \
                             the rule that matched)"
                        ),
                    });
                }
            }
        }
        if let Some(needs) = &mut job.needs {
            needs.retain(|need| {
                if created.contains(&need.job) {
                    return true;
                }
                if !need.optional {
                    errors.push(PlanError {
                        job: Some(job.name.clone()),
                        message: format!(
                            "needs {0}, but {0} does not exist in the pipeline; this might be \
                             because of the only, except, or rules keywords; to need a job \
                             that sometimes does not exist in the pipeline, use needs:optional",
                            need.job
                        ),
                    });
                }
                false
            });
        }
        if let Some(dependencies) = &job.dependencies {
            for dependency in dependencies {
                if !created.contains(dependency) {
                    errors.push(PlanError {
                        job: Some(job.name.clone()),
                        message: format!(
                            "depends on {0}, but {0} does not exist in the pipeline; this might \
                             be because of the only, except, or rules keywords",
                            dependency
                        ),
                    });
                }
            }
        }
    }
    check_cycles(jobs, errors);
}

/// Job-level needs alone cannot form a cycle (the front end refused the
/// file), so any cycle here goes through needs set by `rules:needs`.
fn check_cycles(jobs: &[JobDef], errors: &mut Vec<PlanError>) {
    let index: HashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| (job.name.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = jobs
        .iter()
        .map(|job| {
            job.needs
                .iter()
                .flatten()
                .filter_map(|need| index.get(need.job.as_str()).copied())
                .collect()
        })
        .collect();
    let mut reported = HashSet::new();
    for cycle in dag::cycles(&edges) {
        let at = cycle[cycle.len() - 2];
        if reported.insert(at) {
            let names: Vec<&str> = cycle.iter().map(|i| jobs[*i].name.as_str()).collect();
            errors.push(PlanError {
                job: Some(jobs[at].name.clone()),
                message: format!(
                    "needs: circular dependency through rules:needs: {}",
                    names.join(" -> ")
                ),
            });
        }
    }
}
