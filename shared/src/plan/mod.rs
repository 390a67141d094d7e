//! Which jobs a pipeline has for one ref: `workflow: rules`, each job's
//! `rules:` or `only:`/`except:` (with GitLab's default of
//! `only: [branches, tags]`), and the variables each created job gets.
//!
//! A pure function of the [`PipelineDefinition`] and a [`PlanContext`]; the
//! coordinator calls it when it creates a pipeline, `osprey lint --plan`
//! shows its result. It does not run anything: `when` and `allow_failure`
//! are decided here, their effect is the engine's business.

mod cache;
mod environment;
mod links;
mod render;
mod slug;

pub use cache::files_key;
pub use environment::guess_tier;
pub use render::{render, MASK};
pub use slug::environment_slug;

use crate::pipeline::{
    JobConditions, JobDef, JobFilter, Pipeline, PipelineDefinition, RefPolicy, Rule, RuleWhen,
    Variable, When,
};
use crate::variables::{resolve, Expression, Pattern, RawVariable};
use crate::yaml::{IncludeLoader, LoadError};
use std::cell::OnceCell;
use std::collections::HashMap;

/// What started a pipeline: GitLab's `CI_PIPELINE_SOURCE` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineSource {
    #[default]
    Push,
    Web,
    Api,
    Schedule,
    Trigger,
    Pipeline,
    ParentPipeline,
    MergeRequestEvent,
    ExternalPullRequestEvent,
    External,
    Chat,
}

impl PipelineSource {
    pub const ALL: [PipelineSource; 11] = [
        PipelineSource::Push,
        PipelineSource::Web,
        PipelineSource::Api,
        PipelineSource::Schedule,
        PipelineSource::Trigger,
        PipelineSource::Pipeline,
        PipelineSource::ParentPipeline,
        PipelineSource::MergeRequestEvent,
        PipelineSource::ExternalPullRequestEvent,
        PipelineSource::External,
        PipelineSource::Chat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PipelineSource::Push => "push",
            PipelineSource::Web => "web",
            PipelineSource::Api => "api",
            PipelineSource::Schedule => "schedule",
            PipelineSource::Trigger => "trigger",
            PipelineSource::Pipeline => "pipeline",
            PipelineSource::ParentPipeline => "parent_pipeline",
            PipelineSource::MergeRequestEvent => "merge_request_event",
            PipelineSource::ExternalPullRequestEvent => "external_pull_request_event",
            PipelineSource::External => "external",
            PipelineSource::Chat => "chat",
        }
    }

    pub fn parse(text: &str) -> Option<PipelineSource> {
        PipelineSource::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether GitLab evaluates `changes:` in this kind of pipeline; in the
    /// others `changes:` is always true.
    fn compares_changes(self) -> bool {
        matches!(
            self,
            PipelineSource::Push
                | PipelineSource::MergeRequestEvent
                | PipelineSource::ExternalPullRequestEvent
        )
    }
}

/// Everything about the pipeline being created that planning depends on.
pub struct PlanContext<'a> {
    /// Branch or tag name (not `refs/heads/...`).
    pub git_ref: String,
    pub is_tag: bool,
    pub source: PipelineSource,
    /// Files changed by the push (between the ref's previous commit and the
    /// new one). `None` when unknown, e.g. a new branch: `changes:` is then
    /// true, as in GitLab.
    pub changed_files: Option<Vec<String>>,
    /// The repository at the pipeline's commit, for `exists:`.
    pub files: &'a dyn IncludeLoader,
    /// Predefined variables (`CI_COMMIT_REF_NAME`...): lowest precedence,
    /// used by expressions and expansion but not copied into jobs (the
    /// coordinator sets them on each job itself).
    pub predefined: Vec<Variable>,
    /// Pipeline variables given by the user (`--var`, API, schedule):
    /// highest precedence, copied into every job.
    pub variables: Vec<Variable>,
    /// Project variables (secrets): seen by `rules:`, `workflow:rules` and
    /// `only/except: variables` with their precedence (above the file's
    /// variables, below the pipeline's), never expanded into what a job
    /// keeps — they join the job when it is dispatched.
    pub project_variables: Vec<Variable>,
}

/// The outcome of planning.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Plan {
    /// The pipeline is created with these jobs. `pipeline.variables` is
    /// empty: each job's `variables` holds every variable it receives from
    /// the file, its rules and the user, already expanded.
    Created { pipeline: Pipeline },
    /// No pipeline: workflow rules or job rules leave nothing to run.
    NotCreated { reason: String },
}

/// A problem found while planning (the file itself was valid).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{}{message}", job.as_ref().map(|j| format!("job {j}: ")).unwrap_or_default())]
pub struct PlanError {
    pub job: Option<String>,
    pub message: String,
}

/// Plans `definition` for the pipeline described by `ctx`.
pub fn plan(definition: &PipelineDefinition, ctx: &PlanContext) -> Result<Plan, Vec<PlanError>> {
    let planner = Planner {
        ctx,
        listing: OnceCell::new(),
    };
    let mut errors = Vec::new();
    let source = &definition.pipeline;
    let mut globals: Vec<RawVariable> = raw(&source.variables, &definition.raw_variables);
    if let Some(rules) = &definition.workflow {
        let lookup = planner.lookup(&globals, None, &mut errors);
        match planner.first_match(rules, &lookup, &mut errors, None) {
            Some(rule) if rule.when != Some(RuleWhen::Never) => {
                // workflow:rules:variables override the global ones.
                globals.extend(raw(&rule.variables, &[]));
            }
            Some(_) => {
                return finish(
                    errors,
                    Plan::NotCreated {
                        reason: "workflow:rules: a rule with when: never matched".to_owned(),
                    },
                )
            }
            None => {
                return finish(
                    errors,
                    Plan::NotCreated {
                        reason: "workflow:rules: no rule matched".to_owned(),
                    },
                )
            }
        }
    }
    let mut jobs = Vec::new();
    for (job, conditions) in source.jobs.iter().zip(&definition.jobs) {
        let inherited: Vec<RawVariable> = globals
            .iter()
            .filter(|v| conditions.inherit_variables.inherits(&v.key))
            .cloned()
            .collect();
        if let Some(planned) = planner.job(
            job,
            conditions,
            &inherited,
            definition.workflow.is_some(),
            &mut errors,
        ) {
            jobs.push(planned);
        }
    }
    links::check(&mut jobs, &mut errors);
    let outcome = if jobs.is_empty() {
        Plan::NotCreated {
            reason: "no job matches this ref: the rules configuration prevented any jobs \
                     from being added to the pipeline"
                .to_owned(),
        }
    } else if jobs.iter().all(|j| j.stage == ".pre" || j.stage == ".post") {
        // GitLab does not create a pipeline of only .pre/.post jobs.
        Plan::NotCreated {
            reason: "only .pre and .post jobs match this ref; GitLab creates no pipeline for them"
                .to_owned(),
        }
    } else {
        Plan::Created {
            pipeline: Pipeline {
                stages: source.stages.clone(),
                variables: Vec::new(),
                jobs,
            },
        }
    };
    finish(errors, outcome)
}

fn finish(mut errors: Vec<PlanError>, plan: Plan) -> Result<Plan, Vec<PlanError>> {
    // A job's variables are resolved twice (for its rules, then for the job).
    errors.dedup();
    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(errors)
    }
}

/// `CI_JOB_NAME`, `CI_JOB_STAGE` and `CI_NODE_*` of a job being planned.
fn job_predefined(job: &JobDef) -> Vec<Variable> {
    crate::variables::predefined::job_predefined(&crate::variables::predefined::JobFacts {
        name: &job.name,
        stage: &job.stage,
        node: job.node,
    })
}

fn raw(variables: &[Variable], raw_names: &[String]) -> Vec<RawVariable> {
    variables
        .iter()
        .map(|v| RawVariable {
            key: v.key.clone(),
            value: v.value.clone(),
            raw: raw_names.contains(&v.key),
        })
        .collect()
}

struct Planner<'c, 'a> {
    ctx: &'c PlanContext<'a>,
    /// The repository's files, listed on the first `exists:`.
    listing: OnceCell<Result<Vec<String>, LoadError>>,
}

/// Final variable values, by name.
type Lookup = HashMap<String, String>;

impl Planner<'_, '_> {
    /// Resolves predefined, then `yaml` (in precedence order), then the
    /// user's variables into name → expanded value.
    fn lookup(
        &self,
        yaml: &[RawVariable],
        job: Option<&JobDef>,
        errors: &mut Vec<PlanError>,
    ) -> Lookup {
        let mut all = raw(&self.ctx.predefined, &[]);
        if let Some(job) = job {
            all.extend(raw(&job_predefined(job), &[]));
        }
        all.extend(yaml.iter().cloned());
        all.extend(raw(&self.ctx.project_variables, &[]));
        all.extend(raw(&self.ctx.variables, &[]));
        match resolve(&all) {
            Ok(resolved) => resolved.into_iter().collect(),
            Err(error) => {
                errors.push(PlanError {
                    job: job.map(|job| job.name.clone()),
                    message: error.to_string(),
                });
                all.into_iter().map(|v| (v.key, v.value)).collect()
            }
        }
    }

    fn job(
        &self,
        job: &JobDef,
        conditions: &JobConditions,
        globals: &[RawVariable],
        has_workflow: bool,
        errors: &mut Vec<PlanError>,
    ) -> Option<JobDef> {
        let mut yaml = globals.to_vec();
        yaml.extend(raw(&job.variables, &conditions.raw_variables));
        let lookup = self.lookup(&yaml, Some(job), errors);
        let mut planned = job.clone();
        match &conditions.filter {
            JobFilter::Rules(rules) => {
                let rule = self.first_match(rules, &lookup, errors, Some(&job.name))?;
                match rule.when {
                    Some(RuleWhen::Never) => return None,
                    Some(RuleWhen::Run(when)) => {
                        planned.when = when;
                        planned.start_in_seconds = rule.start_in_seconds;
                    }
                    None => {}
                }
                if let Some(allowed) = rule.allow_failure {
                    planned.allow_failure = allowed;
                }
                // GitLab: the matching rule's `needs` replace the job's
                // entirely; `links::check` then treats them as the job's own.
                if let Some(needs) = &rule.needs {
                    planned.needs = Some(needs.clone());
                }
                yaml.extend(raw(&rule.variables, &[]));
            }
            JobFilter::OnlyExcept { only, except } => {
                // GitLab's default `only: [branches, tags]` is dropped when
                // the file has workflow rules.
                let default_only = RefPolicy {
                    refs: Some(vec!["branches".to_owned(), "tags".to_owned()]),
                    ..RefPolicy::default()
                };
                let only = match only {
                    Some(only) => Some(only),
                    None if has_workflow => None,
                    None => Some(&default_only),
                };
                let name = Some(job.name.as_str());
                if let Some(only) = only {
                    if !self.policy(only, &lookup, errors, name) {
                        return None;
                    }
                }
                if let Some(except) = except {
                    if self.policy(except, &lookup, errors, name) {
                        return None;
                    }
                }
            }
        }
        if planned.when != When::Delayed {
            planned.start_in_seconds = None;
        }
        yaml.extend(raw(&self.ctx.variables, &[]));
        // Resolve against the predefined ones, but hand the job only its own.
        let mut all = raw(&self.ctx.predefined, &[]);
        all.extend(raw(&job_predefined(job), &[]));
        all.extend(yaml.iter().cloned());
        match resolve(&all) {
            Ok(resolved) => {
                let own: std::collections::HashSet<&str> =
                    yaml.iter().map(|v| v.key.as_str()).collect();
                let full: Lookup = resolved.iter().cloned().collect();
                planned.variables = resolved
                    .into_iter()
                    .filter(|(key, _)| own.contains(key.as_str()))
                    .map(|(key, value)| Variable { key, value })
                    .collect();
                environment::apply(&mut planned, &full, errors);
                cache::apply(&mut planned, &full, self.ctx.files, errors);
            }
            Err(error) => errors.push(PlanError {
                job: Some(job.name.clone()),
                message: error.to_string(),
            }),
        }
        Some(planned)
    }

    /// The first rule whose clauses all hold.
    fn first_match<'r>(
        &self,
        rules: &'r [Rule],
        lookup: &Lookup,
        errors: &mut Vec<PlanError>,
        job: Option<&str>,
    ) -> Option<&'r Rule> {
        rules.iter().find(|rule| {
            if let Some(condition) = &rule.condition {
                if !self.expression(condition, lookup, errors, job) {
                    return false;
                }
            }
            if let Some(globs) = &rule.changes {
                if !self.changes(globs, lookup, errors, job) {
                    return false;
                }
            }
            if let Some(globs) = &rule.exists {
                if !self.exists(globs, lookup, errors, job) {
                    return false;
                }
            }
            true
        })
    }

    fn expression(
        &self,
        text: &str,
        lookup: &Lookup,
        errors: &mut Vec<PlanError>,
        job: Option<&str>,
    ) -> bool {
        match Expression::parse(text) {
            Ok(expression) => expression.evaluate(&|name| lookup.get(name).cloned()),
            Err(error) => {
                errors.push(PlanError {
                    job: job.map(str::to_owned),
                    message: format!("invalid expression {text:?}: {error}"),
                });
                false
            }
        }
    }

    /// `only:`/`except:`: every key present holds (for `except`, the job is
    /// then excluded).
    fn policy(
        &self,
        policy: &RefPolicy,
        lookup: &Lookup,
        errors: &mut Vec<PlanError>,
        job: Option<&str>,
    ) -> bool {
        if let Some(refs) = &policy.refs {
            if !refs.iter().any(|pattern| self.ref_matches(pattern)) {
                return false;
            }
        }
        if let Some(expressions) = &policy.variables {
            if !expressions
                .iter()
                .any(|e| self.expression(e, lookup, errors, job))
            {
                return false;
            }
        }
        if let Some(globs) = &policy.changes {
            if !self.changes(globs, lookup, errors, job) {
                return false;
            }
        }
        true
    }

    /// One entry of `only:refs`: a keyword, a `/regex/` or a ref name.
    fn ref_matches(&self, pattern: &str) -> bool {
        let source = self.ctx.source;
        let by_source = |wanted: &[PipelineSource]| wanted.contains(&source);
        match pattern {
            "branches" => {
                !self.ctx.is_tag
                    && !by_source(&[
                        PipelineSource::MergeRequestEvent,
                        PipelineSource::ExternalPullRequestEvent,
                    ])
            }
            "tags" => self.ctx.is_tag,
            "api" => by_source(&[PipelineSource::Api]),
            "external" => by_source(&[PipelineSource::External]),
            "pipelines" => by_source(&[PipelineSource::Pipeline, PipelineSource::ParentPipeline]),
            "pushes" => by_source(&[PipelineSource::Push]),
            "schedules" => by_source(&[PipelineSource::Schedule]),
            "triggers" => by_source(&[PipelineSource::Trigger]),
            "web" => by_source(&[PipelineSource::Web]),
            "merge_requests" => by_source(&[PipelineSource::MergeRequestEvent]),
            "chats" => by_source(&[PipelineSource::Chat]),
            "external_pull_requests" => by_source(&[PipelineSource::ExternalPullRequestEvent]),
            regex if regex.starts_with('/') => {
                Pattern::parse(regex).is_ok_and(|p| p.is_match(&self.ctx.git_ref))
            }
            name => name == self.ctx.git_ref,
        }
    }

    fn changes(
        &self,
        globs: &[String],
        lookup: &Lookup,
        errors: &mut Vec<PlanError>,
        job: Option<&str>,
    ) -> bool {
        if !self.ctx.source.compares_changes() {
            return true;
        }
        let Some(changed) = &self.ctx.changed_files else {
            return true;
        };
        let Some(matcher) = matcher(globs, lookup, errors, job) else {
            return false;
        };
        changed.iter().any(|file| matcher.is_match(file))
    }

    fn exists(
        &self,
        globs: &[String],
        lookup: &Lookup,
        errors: &mut Vec<PlanError>,
        job: Option<&str>,
    ) -> bool {
        let Some(matcher) = matcher(globs, lookup, errors, job) else {
            return false;
        };
        match self.listing.get_or_init(|| self.ctx.files.list()) {
            Ok(files) => files.iter().any(|file| matcher.is_match(file)),
            Err(error) => {
                errors.push(PlanError {
                    job: job.map(str::to_owned),
                    message: format!("exists: cannot list the repository's files: {error}"),
                });
                false
            }
        }
    }
}

/// A matcher for GitLab's globs (`File.fnmatch` with `FNM_PATHNAME`,
/// `FNM_DOTMATCH` and `FNM_EXTGLOB`: `*` stays within a directory, `**/`
/// crosses them, dot files match, `{a,b}` alternates). CI/CD variables in
/// the patterns are expanded first, as GitLab does.
fn matcher(
    globs: &[String],
    lookup: &Lookup,
    errors: &mut Vec<PlanError>,
    job: Option<&str>,
) -> Option<globset::GlobSet> {
    let mut set = globset::GlobSetBuilder::new();
    for glob in globs {
        let expanded = crate::variables::expand(glob, &|name| lookup.get(name).cloned());
        let pattern = expanded.trim_start_matches("./").trim_start_matches('/');
        match globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
        {
            Ok(glob) => {
                set.add(glob);
            }
            Err(error) => errors.push(PlanError {
                job: job.map(str::to_owned),
                message: format!("invalid glob {expanded}: {}", error.kind()),
            }),
        }
    }
    set.build().ok()
}
