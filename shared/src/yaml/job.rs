//! One job's mapping to a [`JobDef`], with `default:` applied, and the
//! `default:` section itself (it shares the job keywords' shapes).

use super::cache;
use super::conditions::{self, InheritDefault, RulesScope};
use super::graph::{self, JobLinks};
use super::keywords::{
    classify, did_you_mean, suggest, Classified, ARTIFACTS_UNSUPPORTED, DEFAULT_SUPPORTED,
    DEFAULT_UNSUPPORTED, GLOBAL_SUPPORTED, GLOBAL_UNSUPPORTED, JOB_SUPPORTED, JOB_UNSUPPORTED,
};
use super::tree::{Node, ScalarKind};
use super::values::{self, Context, VariablesScope};
use super::{run, Report};
use crate::pipeline::{
    Artifacts, Cache, ImageRef, InheritVariables, JobConditions, JobDef, JobFilter, Retry,
    ServiceRef, When, DEFAULT_JOB_STAGE,
};

/// Values from `default:` (or the deprecated top-level forms) that a job
/// inherits unless it sets its own; a job's own value replaces the default
/// entirely, as in GitLab.
#[derive(Debug, Default, Clone)]
pub(crate) struct Defaults {
    pub before_script: Option<Vec<String>>,
    pub after_script: Option<Vec<String>>,
    pub image: Option<ImageRef>,
    pub services: Option<Vec<ServiceRef>>,
    pub tags: Option<Vec<String>>,
    pub timeout_seconds: Option<u64>,
    pub retry: Option<Retry>,
    pub interruptible: Option<bool>,
    pub caches: Option<Vec<Cache>>,
}

impl Defaults {
    /// Reads one keyword shared by `default:`, jobs and the top level into
    /// `self`. Returns false when `key` is not one of them.
    fn read(&mut self, report: &mut Report, cx: Context, key: &str, value: &Node) -> bool {
        match key {
            "before_script" => self.before_script = values::script(report, cx, value, key),
            "after_script" => self.after_script = values::script(report, cx, value, key),
            "image" => self.image = values::image(report, cx, value),
            "services" => self.services = Some(values::services(report, cx, value)),
            "tags" => self.tags = values::string_list(report, cx, value, key),
            "timeout" => self.timeout_seconds = values::timeout(report, cx, value),
            "retry" => self.retry = run::retry(report, cx, value),
            "interruptible" => {
                self.interruptible = values::boolean(report, cx, value, "interruptible");
            }
            "cache" => self.caches = cache::caches(report, cx, value),
            _ => return false,
        }
        true
    }

    /// Reads a deprecated top-level `before_script`, `after_script`, `image`
    /// or `services`.
    pub(crate) fn read_global(&mut self, report: &mut Report, key: &str, value: &Node) {
        self.read(report, Context { prefix: "" }, key, value);
    }
}

/// Reads `default:`. The location of each key set is returned so a clash
/// with a top-level form can point at both.
pub(crate) fn default_section(
    report: &mut Report,
    node: &Node,
) -> (Defaults, Vec<(String, super::tree::Location)>) {
    let cx = Context {
        prefix: "default: ",
    };
    let mut defaults = Defaults::default();
    let mut set = Vec::new();
    let Some(entries) = node.as_mapping() else {
        report.error(
            node.location,
            format!("default must be a mapping, found {}", node.describe()),
        );
        return (defaults, set);
    };
    for (key, value) in entries {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        match classify(name, DEFAULT_SUPPORTED, DEFAULT_UNSUPPORTED) {
            Classified::Supported => {
                defaults.read(report, cx, name, value);
                set.push((name.to_owned(), key.location));
            }
            Classified::Unsupported => report.error(
                key.location,
                format!("default: keyword {name} is not supported by Osprey yet"),
            ),
            Classified::Unknown { suggestion } => report.error(
                key.location,
                format!(
                    "default: unknown keyword {name}{}",
                    did_you_mean(suggestion)
                ),
            ),
        }
    }
    (defaults, set)
}

/// Validates a visible job and reads the conditions that decide whether it
/// exists for a ref. `name_node` is its key (errors about the job as a
/// whole point there); `stages` is the full list including `.pre`/`.post`,
/// or `None` when `stages:` itself is invalid (then stages are not checked).
/// The job's `needs`, `dependencies` and `parallel` come back as written, for
/// [`super::link::link`] to resolve over the whole file.
pub(crate) fn job(
    report: &mut Report,
    name_node: &Node,
    name: &str,
    body: &[(Node, Node)],
    defaults: &Defaults,
    stages: Option<&[String]>,
) -> (JobDef, JobConditions, JobLinks) {
    let prefix = format!("job {name}: ");
    let cx = Context { prefix: &prefix };
    let mut own = Defaults::default();
    let mut job = JobDef {
        name: name.to_owned(),
        stage: DEFAULT_JOB_STAGE.to_owned(),
        before_script: Vec::new(),
        script: Vec::new(),
        after_script: Vec::new(),
        tags: Vec::new(),
        allow_failure: false,
        when: When::OnSuccess,
        variables: Vec::new(),
        artifacts: Artifacts::default(),
        image: None,
        services: Vec::new(),
        timeout_seconds: None,
        ..JobDef::default()
    };
    let mut has_script = false;
    let mut stage_node = None;
    let mut rules = None;
    let mut only = None;
    let mut except = None;
    let mut inherit_default = InheritDefault::All;
    let mut inherit_variables = InheritVariables::All;
    let mut raw_variables = Vec::new();
    let mut links = JobLinks::default();
    let mut allow_failure_set = false;
    let mut when_node = None;
    let mut start_in = None;
    for (key, value) in body {
        let Some(keyword) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        match classify(keyword, JOB_SUPPORTED, JOB_UNSUPPORTED) {
            Classified::Supported => {}
            Classified::Unsupported => {
                cx.error(
                    report,
                    key.location,
                    format!("keyword {keyword} is not supported by Osprey yet"),
                );
                continue;
            }
            Classified::Unknown { suggestion } => {
                cx.error(
                    report,
                    key.location,
                    format!("unknown keyword {keyword}{}", did_you_mean(suggestion)),
                );
                continue;
            }
        }
        if own.read(report, cx, keyword, value) {
            continue;
        }
        match keyword {
            "script" => {
                has_script = true;
                let errors_before = report.len();
                if let Some(lines) = values::script(report, cx, value, "script") {
                    if lines.is_empty() && report.len() == errors_before {
                        cx.error(report, value.location, "script must not be empty");
                    }
                    job.script = lines;
                }
            }
            "stage" => {
                if let Some(stage) = values::string(report, cx, value, "stage") {
                    job.stage = stage;
                    stage_node = Some(value);
                }
            }
            "allow_failure" => {
                allow_failure_set = true;
                if let Some((allowed, codes)) = run::allow_failure(report, cx, value) {
                    job.allow_failure = allowed;
                    job.allow_failure_exit_codes = codes;
                }
            }
            "when" => {
                when_node = Some(value);
                if let Some(when) = run::when(report, cx, value) {
                    job.when = when;
                }
            }
            "start_in" => start_in = Some((key, run::start_in(report, cx, value, "start_in"))),
            "resource_group" => job.resource_group = run::resource_group(report, cx, value),
            "environment" => job.environment = run::environment(report, cx, value),
            "coverage" => job.coverage = run::coverage(report, cx, value),
            "needs" => {
                links.needs = Some((key.location, graph::needs(report, cx, value, "needs")));
            }
            "dependencies" => {
                links.dependencies = Some((key.location, graph::dependencies(report, cx, value)));
            }
            "parallel" => links.parallel = graph::parallel(report, cx, value),
            "variables" => {
                (job.variables, raw_variables) =
                    values::variables_and_raw(report, cx, value, VariablesScope::Job);
            }
            "artifacts" => job.artifacts = artifacts(report, cx, value),
            "rules" | "only" | "except" => {
                report.needs_planner(
                    key.location,
                    format!("{prefix}keyword {keyword} is not supported by Osprey yet"),
                );
                match keyword {
                    "rules" => {
                        rules = conditions::rules(report, cx, value, RulesScope::Job).map(
                            |(rules, needs)| {
                                links.rule_needs = needs;
                                (rules, key.location)
                            },
                        );
                    }
                    "only" => only = conditions::policy(report, cx, value, "only"),
                    _ => except = conditions::policy(report, cx, value, "except"),
                }
            }
            "inherit" => {
                (inherit_default, inherit_variables) = conditions::inherit(report, cx, value);
                if inherit_variables != InheritVariables::All {
                    report.needs_planner(
                        key.location,
                        format!("{prefix}inherit:variables is not supported by Osprey yet"),
                    );
                }
            }
            // Applied (and checked) by extends.rs before jobs are read.
            "extends" => {}
            // Everything in JOB_SUPPORTED is handled above or by Defaults::read.
            _ => {}
        }
    }
    if !has_script {
        let hint = suggest(
            name,
            GLOBAL_SUPPORTED.iter().chain(GLOBAL_UNSUPPORTED).copied(),
        )
        .map_or_else(String::new, |k| {
            format!(" (or did you mean the top-level keyword {k}?)")
        });
        cx.error(
            report,
            name_node.location,
            format!("script is required{hint}"),
        );
    }
    // GitLab: manual jobs may fail unless they say otherwise (a manual job
    // set by `rules:when` is not, see the planner).
    if job.when == When::Manual && !allow_failure_set {
        job.allow_failure = true;
    }
    match (job.when, start_in) {
        (When::Delayed, Some((_, seconds))) => job.start_in_seconds = seconds,
        (When::Delayed, None) => cx.error(
            report,
            when_node.map_or(name_node.location, |n| n.location),
            "when: delayed needs start_in",
        ),
        (_, Some((key, _))) => cx.error(
            report,
            key.location,
            "start_in may only be used with when: delayed",
        ),
        (_, None) => {}
    }
    let stages = stages.unwrap_or_default();
    if !stages.is_empty() && !stages.contains(&job.stage) {
        let known = stages.iter().map(String::as_str);
        let suggestion = did_you_mean(suggest(&job.stage, known));
        match stage_node {
            Some(node) => cx.error(
                report,
                node.location,
                format!("stage {} is not defined in stages{suggestion}", job.stage),
            ),
            None => cx.error(
                report,
                name_node.location,
                format!(
                    "the default stage {DEFAULT_JOB_STAGE} is not defined in stages; \
                     set stage: or add {DEFAULT_JOB_STAGE} to stages"
                ),
            ),
        }
    }
    let filter = match (rules, &only, &except) {
        (Some((rules, _)), None, None) => JobFilter::Rules(rules),
        (Some((_, at)), _, _) => {
            // GitLab: "config key may not be used with `rules`: only, except".
            cx.error(report, at, "rules may not be used with only or except");
            JobFilter::Rules(Vec::new())
        }
        (None, _, _) => JobFilter::OnlyExcept { only, except },
    };
    // `inherit:default` decides which defaults apply; a job's own value
    // always wins.
    let inherited = |keyword: &str| inherit_default.inherits(keyword);
    job.before_script = own
        .before_script
        .or_else(|| {
            defaults
                .before_script
                .clone()
                .filter(|_| inherited("before_script"))
        })
        .unwrap_or_default();
    job.after_script = own
        .after_script
        .or_else(|| {
            defaults
                .after_script
                .clone()
                .filter(|_| inherited("after_script"))
        })
        .unwrap_or_default();
    job.image = own
        .image
        .or_else(|| defaults.image.clone().filter(|_| inherited("image")));
    job.services = own
        .services
        .or_else(|| defaults.services.clone().filter(|_| inherited("services")))
        .unwrap_or_default();
    job.tags = own
        .tags
        .or_else(|| defaults.tags.clone().filter(|_| inherited("tags")))
        .unwrap_or_default();
    job.timeout_seconds = own
        .timeout_seconds
        .or(defaults.timeout_seconds.filter(|_| inherited("timeout")));
    job.retry = own
        .retry
        .or_else(|| defaults.retry.clone().filter(|_| inherited("retry")))
        .unwrap_or_default();
    job.interruptible = own
        .interruptible
        .or(defaults
            .interruptible
            .filter(|_| inherited("interruptible")))
        .unwrap_or(false);
    job.caches = own
        .caches
        .or_else(|| defaults.caches.clone().filter(|_| inherited("cache")))
        .unwrap_or_default();
    let conditions = JobConditions {
        name: name.to_owned(),
        filter,
        inherit_variables,
        raw_variables,
    };
    (job, conditions, links)
}

fn artifacts(report: &mut Report, cx: Context, value: &Node) -> Artifacts {
    let mut artifacts = Artifacts::default();
    let Some(entries) = value.as_mapping() else {
        // `artifacts:` with nothing under it is null; GitLab refuses it too.
        let found = match value.as_scalar().map(|s| s.kind) {
            Some(ScalarKind::Null) => "nothing".to_owned(),
            _ => value.describe().to_owned(),
        };
        cx.error(
            report,
            value.location,
            format!("artifacts must be a mapping with paths, found {found}"),
        );
        return artifacts;
    };
    for (key, field) in entries {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        use super::keywords::ARTIFACTS_SUPPORTED;
        use crate::pipeline::{ArtifactsExpiry, ArtifactsWhen};
        if cx.supported_key(
            report,
            key.location,
            "artifacts",
            name,
            ARTIFACTS_SUPPORTED,
            ARTIFACTS_UNSUPPORTED,
        ) {
            match name {
                "paths" | "exclude" => {
                    let what = format!("artifacts:{name}");
                    if let Some(list) = values::string_list(report, cx, field, &what) {
                        if name == "paths" {
                            artifacts.paths = list;
                        } else {
                            artifacts.exclude = list;
                        }
                    }
                }
                "untracked" => {
                    if let Some(flag) = values::boolean(report, cx, field, "artifacts:untracked") {
                        artifacts.untracked = flag;
                    }
                }
                "when" => match values::string(report, cx, field, "artifacts:when").as_deref() {
                    Some("on_success") => artifacts.when = ArtifactsWhen::OnSuccess,
                    Some("on_failure") => artifacts.when = ArtifactsWhen::OnFailure,
                    Some("always") => artifacts.when = ArtifactsWhen::Always,
                    Some(other) => cx.error(
                        report,
                        field.location,
                        format!("artifacts:when must be on_success, on_failure or always, found {other:?}"),
                    ),
                    None => {}
                },
                "name" => artifacts.name = values::string(report, cx, field, "artifacts:name"),
                _ => match values::string(report, cx, field, "artifacts:expire_in").as_deref() {
                    Some("never") => artifacts.expire_in = Some(ArtifactsExpiry::Never),
                    Some(text) => match super::duration::parse_expiry(text) {
                        Ok(seconds) => artifacts.expire_in = Some(ArtifactsExpiry::After(seconds)),
                        Err(error) => cx.error(
                            report,
                            field.location,
                            format!("artifacts:expire_in {} (or never)", error.0),
                        ),
                    },
                    None => {}
                },
            }
        }
    }
    artifacts
}
