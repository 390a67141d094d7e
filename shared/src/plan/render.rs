//! The text form of a [`Plan`], shared by `osprey lint --plan` and the
//! conformance suite so that what the suite checks is what users see.

use super::{Plan, PlanContext};
use crate::pipeline::{JobDef, When};
use crate::variables::looks_secret;
use std::fmt::Write as _;

/// What a masked value is shown as.
pub const MASK: &str = "[masked]";

/// Renders `plan` for `ctx`: a header line naming the ref, then each stage
/// that has jobs, each job with `when` (and `start_in`), `allow_failure`,
/// its `parallel` instance, a line per keyword that changes how it runs
/// (`needs`, `dependencies`, `retry`, exit codes allowed to fail,
/// `environment`, `resource_group`, `interruptible`, `coverage`, `cache`) and its
/// variables (values of names that look like credentials masked).
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
            let delay = match (job.when, job.start_in_seconds) {
                (When::Delayed, Some(seconds)) => format!(" (start_in {})", human(seconds)),
                _ => String::new(),
            };
            let node = job
                .node
                .map(|(index, total)| format!(", parallel {index}/{total}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}: when {}{delay}{allow}{node}",
                job.name,
                job.when.as_str()
            );
            details(&mut out, job);
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

/// One line per run-time keyword the job sets.
fn details(out: &mut String, job: &JobDef) {
    if let Some(needs) = &job.needs {
        let list: Vec<String> = needs
            .iter()
            .map(|need| {
                let mut notes = Vec::new();
                if need.optional {
                    notes.push("optional");
                }
                if !need.artifacts {
                    notes.push("no artifacts");
                }
                if notes.is_empty() {
                    need.job.clone()
                } else {
                    format!("{} ({})", need.job, notes.join(", "))
                }
            })
            .collect();
        let _ = writeln!(out, "    needs: [{}]", list.join(", "));
    }
    if let Some(dependencies) = &job.dependencies {
        let _ = writeln!(out, "    dependencies: [{}]", dependencies.join(", "));
    }
    if !job.allow_failure_exit_codes.is_empty() {
        let _ = writeln!(
            out,
            "    allow_failure exit_codes: [{}]",
            join_codes(&job.allow_failure_exit_codes)
        );
    }
    let retry = &job.retry;
    if retry.max > 0 || !retry.when.is_empty() || !retry.exit_codes.is_empty() {
        let mut line = format!("    retry: max {}", retry.max);
        if !retry.when.is_empty() {
            let _ = write!(line, ", when [{}]", retry.when.join(", "));
        }
        if !retry.exit_codes.is_empty() {
            let _ = write!(line, ", exit_codes [{}]", join_codes(&retry.exit_codes));
        }
        let _ = writeln!(out, "{line}");
    }
    if let Some(environment) = &job.environment {
        let url = environment
            .url
            .as_ref()
            .map(|url| format!(", url {url}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "    environment: {} (action {}{url})",
            environment.name, environment.action
        );
    }
    if let Some(group) = &job.resource_group {
        let _ = writeln!(out, "    resource_group: {group}");
    }
    if !job.tags.is_empty() {
        let _ = writeln!(out, "    tags: [{}]", job.tags.join(", "));
    }
    if let Some(image) = &job.image {
        let _ = writeln!(out, "    image: {}", image.name);
    }
    for service in &job.services {
        let _ = writeln!(
            out,
            "    service: {} (alias {})",
            service.name,
            service.effective_alias()
        );
    }
    if job.interruptible {
        let _ = writeln!(out, "    interruptible");
    }
    if let Some(coverage) = &job.coverage {
        let _ = writeln!(out, "    coverage: /{coverage}/");
    }
    for cache in &job.caches {
        let _ = writeln!(out, "    {}", super::cache::describe(cache));
    }
}

fn join_codes(codes: &[i32]) -> String {
    codes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Seconds as GitLab writes durations: `1h 30m`, `45s`.
fn human(seconds: u64) -> String {
    let units = [
        ("w", 604_800),
        ("d", 86_400),
        ("h", 3_600),
        ("m", 60),
        ("s", 1),
    ];
    let mut rest = seconds;
    let mut parts = Vec::new();
    for (unit, size) in units {
        if rest >= size {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}
