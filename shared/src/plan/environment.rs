//! The values of a planned job that hold variables and are not variables
//! themselves: `image:`, `services:` (name and alias), `tags:`,
//! `environment:` name and url, and `resource_group:`. They are
//! expanded with the job's final variables (predefined ones included), and
//! the environment is handed to the job as GitLab does, through
//! `CI_ENVIRONMENT_NAME`, `CI_ENVIRONMENT_SLUG`, `CI_ENVIRONMENT_URL` (when
//! set) and `CI_ENVIRONMENT_ACTION`.

use super::slug::environment_slug;
use super::PlanError;
use crate::pipeline::{JobDef, Variable};
use crate::variables::expand;
use crate::yaml::check_environment_name;
use std::collections::HashMap;

/// Expands `job`'s environment and resource group with `lookup` (name →
/// final value) and adds the environment's variables to the job.
pub(super) fn apply(
    job: &mut JobDef,
    lookup: &HashMap<String, String>,
    errors: &mut Vec<PlanError>,
) {
    let get = |name: &str| lookup.get(name).cloned();
    if let Some(image) = &mut job.image {
        image.name = expand(&image.name, &get);
    }
    for service in &mut job.services {
        service.name = expand(&service.name, &get);
        service.alias = service.alias.as_deref().map(|alias| expand(alias, &get));
    }
    // A tag that expands to nothing is dropped rather than required.
    job.tags = job
        .tags
        .iter()
        .map(|tag| expand(tag, &get))
        .filter(|tag| !tag.trim().is_empty())
        .collect();
    if let Some(group) = &job.resource_group {
        let expanded = expand(group, &get);
        if expanded.trim().is_empty() {
            errors.push(PlanError {
                job: Some(job.name.clone()),
                message: format!("resource_group {group:?} expands to nothing"),
            });
        }
        job.resource_group = Some(expanded);
    }
    let Some(environment) = &mut job.environment else {
        return;
    };
    environment.name = expand(&environment.name, &get);
    if let Err(message) = check_environment_name(&environment.name) {
        errors.push(PlanError {
            job: Some(job.name.clone()),
            message: format!("environment {message} (after expanding variables)"),
        });
        return;
    }
    environment.url = environment.url.as_deref().map(|url| expand(url, &get));
    let mut add = |key: &str, value: String| {
        job.variables.retain(|v| v.key != key);
        job.variables.push(Variable {
            key: key.to_owned(),
            value,
        });
    };
    let (name, url, action) = (
        environment.name.clone(),
        environment.url.clone(),
        environment.action.clone(),
    );
    add("CI_ENVIRONMENT_NAME", name.clone());
    add("CI_ENVIRONMENT_SLUG", environment_slug(&name));
    if let Some(url) = url {
        add("CI_ENVIRONMENT_URL", url);
    }
    add("CI_ENVIRONMENT_ACTION", action);
}
