//! The text form of a [`Plan`], shared by `osprey lint --plan` and the
//! conformance suite so that what the suite checks is what users see.

use super::{Plan, PlanContext};
use crate::variables::looks_secret;
use std::fmt::Write as _;

/// What a masked value is shown as.
pub const MASK: &str = "[masked]";

/// Renders `plan` for `ctx`: a header line naming the ref, then each stage
/// that has jobs, each job with `when`, `allow_failure` and its variables
/// (values of names that look like credentials masked).
pub fn render(plan: &Plan, ctx: &PlanContext) -> String {
    let kind = if ctx.is_tag { "tag" } else { "branch" };
    let mut out = format!("{kind} {} (source {})\n", ctx.git_ref, ctx.source.as_str());
    let pipeline = match plan {
        Plan::NotCreated { reason } => {
            let _ = writeln!(out, "no pipeline: {reason}");
            return out;
        }
        Plan::Created { pipeline } => pipeline,
    };
    for stage in &pipeline.stages {
        let jobs: Vec<_> = pipeline.jobs.iter().filter(|j| &j.stage == stage).collect();
        if jobs.is_empty() {
            continue;
        }
        let _ = writeln!(out, "stage {stage}");
        for job in jobs {
            let allow = if job.allow_failure {
                ", allow_failure"
            } else {
                ""
            };
            let _ = writeln!(out, "  {}: when {}{allow}", job.name, job.when.as_str());
            for variable in &job.variables {
                let value = if looks_secret(&variable.key) {
                    MASK
                } else {
                    variable.value.as_str()
                };
                let _ = writeln!(out, "    {}={value}", variable.key);
            }
        }
    }
    out
}
