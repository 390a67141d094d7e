//! The values of a planned job that hold variables and are not variables
//! themselves: `image:`, `services:` (name and alias), `tags:`,
//! `environment:` name and url, and `resource_group:`. They are
//! expanded with the job's final variables (predefined ones included), and
//! the environment is handed to the job as GitLab does, through
//! `CI_ENVIRONMENT_NAME`, `CI_ENVIRONMENT_SLUG`, `CI_ENVIRONMENT_URL` (when
//! set), `CI_ENVIRONMENT_ACTION` and `CI_ENVIRONMENT_TIER`.

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
    let tier = environment
        .tier
        .get_or_insert_with(|| guess_tier(&environment.name).to_owned())
        .clone();
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
    add("CI_ENVIRONMENT_TIER", tier);
}

/// The tier of an environment without `deployment_tier`, guessed from its
/// name as GitLab does (the first of its patterns that matches, in its
/// order: development, testing, staging, production, else other).
pub fn guess_tier(name: &str) -> &'static str {
    let name = name.to_lowercase();
    let any = |words: &[&str]| words.iter().any(|word| name.contains(word));
    if any(&["dev", "review/", "trunk"]) {
        "development"
    } else if any(&[
        "test", "tst", "int", "accept", "acpt", "qa", "qc", "control", "quality",
    ]) {
        "testing"
    } else if any(&["stag", "stg", "model", "modl", "pre", "demo", "non"]) {
        "staging"
    } else if any(&["prod", "prd", "live"]) {
        "production"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::guess_tier;

    #[test]
    fn tiers_are_guessed_as_gitlab_does() {
        for (name, tier) in [
            ("production", "production"),
            ("prd", "production"),
            ("live", "production"),
            ("dev", "development"),
            ("review/feature-1", "development"),
            ("homolog", "other"),
            ("qa", "testing"),
            ("staging", "staging"),
            ("pre-prod", "staging"),
            ("Integration", "testing"),
        ] {
            assert_eq!(guess_tier(name), tier, "{name}");
        }
    }
}
