//! `needs:` and `dependencies:` against the jobs one ref actually gets.
//!
//! The front end has already expanded `parallel` names, checked that every
//! name is a job of the file, the stage order, cycles and the limit of 50.
//! What is left depends on `rules`/`only`/`except`: a needed job may not have
//! been created. As on GitLab, a missing `optional: true` need is dropped
//! (a job whose needs are all dropped starts at once, like `needs: []`), any
//! other missing need or dependency makes the pipeline fail to be created.

use super::PlanError;
use crate::pipeline::JobDef;
use std::collections::HashSet;

/// Drops optional needs of jobs that were not created and reports the
/// other references to missing jobs.
pub(super) fn check(jobs: &mut [JobDef], errors: &mut Vec<PlanError>) {
    let created: HashSet<String> = jobs.iter().map(|j| j.name.clone()).collect();
    for job in jobs.iter_mut() {
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
}
