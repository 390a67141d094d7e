//! The `.gitlab-ci.yml` front end: YAML text to a validated [`Pipeline`], or
//! every error found, each with its file, line and column.
//!
//! Layers, bottom up: [`tree`] turns saphyr-parser's events into a located
//! tree (aliases, merge keys, limits); [`values`] reads the value shapes
//! keywords share; [`job`] reads jobs and `default:` (with [`run`] for the
//! keywords of how a job runs and [`graph`] for `needs`, `dependencies` and
//! `parallel`); this module reads the top level and assembles the
//! [`Pipeline`], after [`link`] has expanded `parallel` jobs and checked the
//! relations between jobs over the whole file. [`keywords`] lists GitLab's
//! keywords so that an unsupported one is refused by name, never ignored.
//!
//! Osprey accepts a subset of GitLab's language, and every keyword it accepts
//! means what it means on GitLab. Deliberate differences, all stricter:
//! duplicate mapping keys are an error (GitLab keeps the last silently), and a
//! second YAML document is an error.

mod cache;
mod conditions;
mod directory;
mod duration;
mod extends;
mod graph;
mod include;
mod job;
mod keywords;
mod link;
mod reference;
mod run;
mod scalar;
mod tree;
mod values;

#[cfg(test)]
mod tests;

use crate::pipeline::{Pipeline, PipelineDefinition, DEFAULT_STAGES};

pub use directory::DirectoryLoader;
pub use include::{IncludeLoader, LoadError, NoFiles};
use job::Defaults;
use keywords::{suggest, GLOBAL_SUPPORTED, GLOBAL_UNSUPPORTED, JOB_SUPPORTED};
pub(crate) use run::check_environment_name;
use std::fmt;
use tree::{Location, Node};
use values::{Context, VariablesScope};

/// One problem in a pipeline file, located.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LintError {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for LintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Parses and validates a pipeline file that cannot include others and whose
/// jobs all exist on every ref: the keywords that need a ref to mean
/// anything (`rules`, `only`, `except`, `workflow`, `inherit:variables`,
/// `expand: false`) and `include` are refused as not supported. `file`
/// names it in errors. Callers that can plan use [`parse_pipeline_with`].
///
/// On failure every error found is returned, sorted by position. Inputs that
/// are too large once aliases are expanded (more than a million nodes) or
/// nested more than 128 levels deep are refused with one located error.
pub fn parse_pipeline(file: &str, text: &str) -> Result<Pipeline, Vec<LintError>> {
    let mut report = Report::default();
    let definition = definition(&mut report, text, None);
    let planner_only = std::mem::take(&mut report.planner_only);
    for (location, message) in planner_only {
        report.error(location, message);
    }
    match definition {
        Some(definition) if report.errors.is_empty() => Ok(definition.pipeline),
        _ => Err(report.finish(&[file.to_owned()])),
    }
}

/// Parses and validates a pipeline file, reading the files it includes
/// through `loader`, into a definition that [`crate::plan::plan`] turns into
/// the jobs of one ref. `file` names the main file in errors; errors in an
/// included file name that file's path.
pub fn parse_pipeline_with(
    file: &str,
    text: &str,
    loader: &dyn IncludeLoader,
) -> Result<PipelineDefinition, Vec<LintError>> {
    let mut report = Report {
        files: vec![file.to_owned()],
        ..Report::default()
    };
    let definition = definition(&mut report, text, Some(loader));
    match definition {
        Some(definition) if report.errors.is_empty() => Ok(definition),
        _ => {
            let files = std::mem::take(&mut report.files);
            Err(report.finish(&files))
        }
    }
}

/// The whole front end: tree, includes, `extends:`, `!reference`, keywords.
fn definition(
    report: &mut Report,
    text: &str,
    loader: Option<&dyn IncludeLoader>,
) -> Option<PipelineDefinition> {
    let mut used = 0;
    let root = match tree::parse_file(text, 0, &mut used) {
        Ok((root, tree_errors)) => {
            for error in tree_errors {
                report.error(error.location, error.message);
            }
            root
        }
        Err(tree_errors) => {
            for error in tree_errors {
                report.error(error.location, error.message);
            }
            return None;
        }
    };
    let root = match (root, loader) {
        (Some(root), Some(loader)) => Some(include::apply(report, root, loader, &mut used)),
        (Some(root), None) => Some(include::refuse(report, root)),
        (None, _) => None,
    };
    let root = root.map(|root| extends::apply(report, root));
    let root = root.map(|root| reference::apply(report, root));
    pipeline(report, root.as_ref())
}

/// Errors collected over one parse.
#[derive(Debug, Default)]
pub(crate) struct Report {
    errors: Vec<(Location, String)>,
    /// Problems that are errors only for [`parse_pipeline`], which cannot
    /// plan: the keywords whose meaning depends on the ref.
    planner_only: Vec<(Location, String)>,
    /// Names of the files read, indexed by [`Location::file`].
    files: Vec<String>,
}

impl Report {
    pub(crate) fn error(&mut self, location: Location, message: String) {
        self.errors.push((location, message));
    }

    /// Records a keyword that only a caller able to plan can accept.
    pub(crate) fn needs_planner(&mut self, location: Location, message: String) {
        self.planner_only.push((location, message));
    }

    /// Registers a file read for this parse and returns its number.
    pub(crate) fn add_file(&mut self, name: &str) -> usize {
        self.files.push(name.to_owned());
        self.files.len() - 1
    }

    /// Errors so far; lets a reader tell whether a value was reported.
    pub(crate) fn len(&self) -> usize {
        self.errors.len()
    }

    /// Sorted by position (stable, so one spot's errors keep their order), with
    /// exact repeats dropped: a template merged into several jobs can yield
    /// the same error more than once only if the job name is the same.
    fn finish(mut self, files: &[String]) -> Vec<LintError> {
        self.errors.sort_by_key(|(location, _)| *location);
        self.errors.dedup();
        self.errors
            .into_iter()
            .map(|(location, message)| LintError {
                file: files.get(location.file).cloned().unwrap_or_default(),
                line: location.line,
                column: location.column,
                message,
            })
            .collect()
    }
}

/// Reads the top level. `None` when there is nothing pipeline-shaped at all.
fn pipeline(report: &mut Report, root: Option<&Node>) -> Option<PipelineDefinition> {
    let Some(root) = root.filter(|node| !node.is_null()) else {
        report.error(
            Location::START,
            "the file is empty: jobs config should contain at least one visible job".to_owned(),
        );
        return None;
    };
    let Some(entries) = root.as_mapping() else {
        report.error(
            root.location,
            format!(
                "a pipeline file must be a mapping of keywords and jobs, found {}",
                root.describe()
            ),
        );
        return None;
    };

    // Globals first: jobs need the stages and defaults wherever they appear.
    let global = Context { prefix: "" };
    let mut stages_node = None;
    let mut variables = Vec::new();
    let mut raw_variables = Vec::new();
    let mut workflow = None;
    let mut defaults = Defaults::default();
    let mut default_keys = Vec::new();
    for (key, value) in entries.iter() {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        match name {
            "stages" => stages_node = Some(value),
            "variables" => {
                (variables, raw_variables) =
                    values::variables_and_raw(report, global, value, VariablesScope::Global);
            }
            "workflow" => {
                report.needs_planner(
                    key.location,
                    "keyword workflow is not supported by Osprey yet".to_owned(),
                );
                workflow = conditions::workflow(report, value);
            }
            "default" => (defaults, default_keys) = job::default_section(report, value),
            _ => {}
        }
    }
    for (key, value) in entries.iter() {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        if matches!(
            name,
            "before_script" | "after_script" | "image" | "services" | "cache"
        ) {
            match default_keys.iter().find(|(k, _)| k == name) {
                Some((_, at)) => report.error(
                    key.location,
                    format!(
                        "{name} is set both here and in default: (line {}); keep only one",
                        at.line
                    ),
                ),
                None => defaults.read_global(report, name, value),
            }
        }
    }
    let errors_before = report.len();
    let stages = stages(report, stages_node);
    // A broken `stages:` would make every job's stage look undefined.
    let stages_valid = report.len() == errors_before;

    let mut jobs = Vec::new();
    let mut job_conditions = Vec::new();
    let mut job_links = Vec::new();
    let mut job_locations = Vec::new();
    let mut visible = 0usize;
    for (key, value) in entries.iter() {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        if GLOBAL_SUPPORTED.contains(&name) {
            continue;
        }
        if GLOBAL_UNSUPPORTED.contains(&name) {
            report.error(
                key.location,
                format!("keyword {name} is not supported by Osprey yet"),
            );
            continue;
        }
        if name.starts_with('.') {
            hidden(report, key, name, value);
            continue;
        }
        if name == "pages" && value.as_mapping().is_some() {
            // On GitLab a job named `pages` publishes a Pages site; running it
            // as an ordinary job would silently drop that meaning.
            report.error(
                key.location,
                "job pages: GitLab Pages deployment is not supported by Osprey yet".to_owned(),
            );
        }
        match value.as_mapping() {
            Some(body) => {
                visible += 1;
                let known = stages_valid.then_some(stages.as_slice());
                let (job, conditions, links) = job::job(report, key, name, body, &defaults, known);
                jobs.push(job);
                job_conditions.push(conditions);
                job_links.push(links);
                job_locations.push(key.location);
            }
            None => not_a_job(report, key, name, value),
        }
    }
    let known = stages_valid.then_some(stages.as_slice());
    let (jobs, job_conditions) = link::link(
        report,
        jobs,
        job_conditions,
        job_links,
        &job_locations,
        known,
    );
    if visible == 0 {
        report.error(
            root.location,
            "jobs config should contain at least one visible job".to_owned(),
        );
    }
    Some(PipelineDefinition {
        pipeline: Pipeline {
            stages,
            variables,
            jobs,
        },
        workflow,
        jobs: job_conditions,
        raw_variables,
    })
}

/// `stages:` with GitLab's `.pre` first and `.post` last (moved there if
/// listed elsewhere) and repeats dropped, as GitLab does.
fn stages(report: &mut Report, node: Option<&Node>) -> Vec<String> {
    let listed = match node {
        None => return DEFAULT_STAGES.iter().map(|s| (*s).to_owned()).collect(),
        Some(node) => {
            values::string_list(report, Context { prefix: "" }, node, "stages").unwrap_or_default()
        }
    };
    let mut stages = vec![".pre".to_owned()];
    for stage in listed {
        if stage != ".pre" && stage != ".post" && !stages.contains(&stage) {
            stages.push(stage);
        }
    }
    stages.push(".post".to_owned());
    stages
}

/// Hidden keys (`.name`) are templates for anchors and merges. GitLab only
/// requires them not to be blank, so anchored script lists are fine too.
fn hidden(report: &mut Report, key: &Node, name: &str, value: &Node) {
    let blank = value.is_null()
        || value.as_mapping().is_some_and(<[_]>::is_empty)
        || value.as_sequence().is_some_and(<[_]>::is_empty);
    if blank {
        report.error(
            key.location,
            format!("hidden job {name}: config can't be blank"),
        );
    }
}

/// A top-level key that is no keyword and whose value is not a mapping:
/// usually a misspelt or misplaced keyword.
fn not_a_job(report: &mut Report, key: &Node, name: &str, value: &Node) {
    let global = suggest(
        name,
        GLOBAL_SUPPORTED.iter().chain(GLOBAL_UNSUPPORTED).copied(),
    );
    let message = if let Some(keyword) = global {
        format!("unknown top-level keyword {name} (did you mean {keyword}?)")
    } else if JOB_SUPPORTED.contains(&name) {
        format!("keyword {name} is not valid at the top level; set it in default: or in each job")
    } else {
        format!(
            "job {name}: config should be a mapping of job keywords, found {}",
            value.describe()
        )
    };
    report.error(key.location, message);
}
