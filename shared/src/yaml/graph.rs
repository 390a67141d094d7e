//! Readers for the keywords that relate jobs to each other: `needs:`,
//! `dependencies:` and `parallel:` (which turns one job into several).
//!
//! Each job's values are read here while the job is read, as written and
//! located; [`super::link`] then resolves and checks them over the whole
//! file.

use super::keywords::{did_you_mean, suggest};
use super::tree::{Location, Node, ScalarKind};
use super::values::{self, Context};
use super::Report;
use crate::pipeline::Need;

/// GitLab's bounds for `parallel: N`.
const PARALLEL_MIN: u32 = 2;
const PARALLEL_MAX: u32 = 200;

/// GitLab's limit on the jobs one `parallel: matrix` generates.
const MATRIX_MAX_JOBS: usize = 200;

/// The located relations of one job, as written.
#[derive(Debug, Default)]
pub(crate) struct JobLinks {
    /// `needs:` key, and each entry with where it was written.
    pub needs: Option<LocatedNeeds>,
    /// `needs:` of the job's rules: the rule's index in the job's
    /// [`crate::pipeline::JobFilter::Rules`], and its needs as written.
    pub rule_needs: RuleNeeds,
    /// `dependencies:` key, and each name with where it was written.
    pub dependencies: Option<(Location, Vec<(String, Location)>)>,
    pub parallel: Option<Parallel>,
}

/// A `needs:` key and each entry with where it was written.
pub(crate) type LocatedNeeds = (Location, Vec<(Need, Location)>);

/// The `needs:` of a job's rules, each with the rule's index in its `rules:`.
pub(crate) type RuleNeeds = Vec<(usize, LocatedNeeds)>;

/// One `parallel:matrix` entry: variables in key order, each with its values.
pub(crate) type MatrixEntry = Vec<(String, Vec<String>)>;

/// `parallel:` of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parallel {
    Count(u32),
    Matrix(Vec<MatrixEntry>),
}

/// `needs:` of a job, or of a rule (`what` is `needs` or `rules:needs`, for
/// messages): a list of names or `{job, artifacts, optional}`.
pub(crate) fn needs(
    report: &mut Report,
    cx: Context,
    node: &Node,
    what: &str,
) -> Vec<(Need, Location)> {
    let Some(items) = node.as_sequence() else {
        cx.error(
            report,
            node.location,
            format!(
                "{what} must be a list of job names or {{job: ...}} mappings, found {}",
                node.describe()
            ),
        );
        return Vec::new();
    };
    let mut out: Vec<(Need, Location)> = Vec::with_capacity(items.len());
    for item in items {
        let Some(need) = need(report, cx, item, what) else {
            continue;
        };
        if out.iter().any(|(n, _)| n.job == need.job) {
            cx.error(
                report,
                item.location,
                format!("{what}: {} is listed more than once", need.job),
            );
            continue;
        }
        out.push((need, item.location));
    }
    out
}

fn need(report: &mut Report, cx: Context, node: &Node, what: &str) -> Option<Need> {
    if let Some(name) = node.as_str() {
        return Some(Need {
            job: name.to_owned(),
            artifacts: true,
            optional: false,
        });
    }
    let Some(fields) = node.as_mapping() else {
        cx.error(
            report,
            node.location,
            format!(
                "each entry of {what} must be a job name or a mapping with job, found {}",
                node.describe()
            ),
        );
        return None;
    };
    let mut need = Need {
        job: String::new(),
        artifacts: true,
        optional: false,
    };
    let mut job = None;
    let mut refused = false;
    for (key, field) in fields {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        let supported = ["job", "artifacts", "optional"];
        if !cx.supported_key(
            report,
            key.location,
            what,
            name,
            &supported,
            &["pipeline", "project", "ref", "parallel"],
        ) {
            refused = true;
            continue;
        }
        match name {
            "job" => job = values::string(report, cx, field, &format!("{what}:job")),
            "artifacts" => {
                need.artifacts = values::boolean(report, cx, field, &format!("{what}:artifacts"))
                    .unwrap_or(true);
            }
            _ => {
                need.optional = values::boolean(report, cx, field, &format!("{what}:optional"))
                    .unwrap_or(false);
            }
        }
    }
    if refused {
        return None;
    }
    let Some(job) = job else {
        cx.error(
            report,
            node.location,
            format!("each entry of {what} needs a job"),
        );
        return None;
    };
    need.job = job;
    Some(need)
}

/// `dependencies:`: a list of job names (`[]` for none).
pub(crate) fn dependencies(
    report: &mut Report,
    cx: Context,
    node: &Node,
) -> Vec<(String, Location)> {
    let Some(items) = node.as_sequence() else {
        cx.error(
            report,
            node.location,
            format!(
                "dependencies must be a list of job names, found {}",
                node.describe()
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if let Some(name) = values::string(report, cx, item, "each entry of dependencies") {
            out.push((name, item.location));
        }
    }
    out
}

/// `parallel:` as `N` or `{matrix: [...]}`.
pub(crate) fn parallel(report: &mut Report, cx: Context, node: &Node) -> Option<Parallel> {
    let Some(fields) = node.as_mapping() else {
        let count = node
            .as_scalar()
            .filter(|s| s.kind == ScalarKind::Integer)
            .and_then(|s| s.text.parse::<i64>().ok());
        return match count {
            Some(n) if (i64::from(PARALLEL_MIN)..=i64::from(PARALLEL_MAX)).contains(&n) => {
                u32::try_from(n).ok().map(Parallel::Count)
            }
            _ => {
                cx.error(
                    report,
                    node.location,
                    format!(
                        "parallel must be an integer from {PARALLEL_MIN} to {PARALLEL_MAX} \
                         or a mapping with matrix, found {}",
                        node.as_scalar()
                            .map_or_else(|| node.describe().to_owned(), |s| s.text.clone())
                    ),
                );
                None
            }
        };
    };
    let mut matrix = None;
    for (key, field) in fields {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        if name == "matrix" {
            matrix = self::matrix(report, cx, field);
        } else {
            cx.error(
                report,
                key.location,
                format!(
                    "parallel: unknown key {name}{}",
                    did_you_mean(suggest(name, ["matrix"]))
                ),
            );
        }
    }
    matrix.map(Parallel::Matrix)
}

fn matrix(report: &mut Report, cx: Context, node: &Node) -> Option<Vec<MatrixEntry>> {
    let Some(items) = node.as_sequence().filter(|items| !items.is_empty()) else {
        cx.error(
            report,
            node.location,
            format!(
                "parallel:matrix must be a non-empty list of mappings of variables to values, found {}",
                node.describe()
            ),
        );
        return None;
    };
    let errors_before = report.len();
    let mut entries = Vec::with_capacity(items.len());
    let mut total = 0usize;
    for item in items {
        let Some(fields) = item.as_mapping().filter(|f| !f.is_empty()) else {
            cx.error(
                report,
                item.location,
                format!(
                    "each entry of parallel:matrix must be a mapping of variables to values, found {}",
                    item.describe()
                ),
            );
            continue;
        };
        let mut entry = Vec::with_capacity(fields.len());
        let mut jobs = 1usize;
        for (key, value) in fields {
            let Some(name) = key.as_scalar().map(|s| s.text.clone()) else {
                continue;
            };
            let values = matrix_values(report, cx, &name, value);
            jobs = jobs.saturating_mul(values.len());
            entry.push((name, values));
        }
        total = total.saturating_add(jobs);
        entries.push(entry);
    }
    if total > MATRIX_MAX_JOBS {
        cx.error(
            report,
            node.location,
            format!("parallel:matrix generates {total} jobs, more than GitLab's limit of {MATRIX_MAX_JOBS}"),
        );
    }
    (report.len() == errors_before).then_some(entries)
}

fn matrix_values(report: &mut Report, cx: Context, name: &str, node: &Node) -> Vec<String> {
    let items = match node.as_sequence() {
        Some(items) => items,
        None => std::slice::from_ref(node),
    };
    if items.is_empty() {
        cx.error(
            report,
            node.location,
            format!("parallel:matrix: {name} needs at least one value"),
        );
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item.as_scalar().filter(|s| s.kind != ScalarKind::Null) {
            Some(scalar) => out.push(scalar.text.clone()),
            None => cx.error(
                report,
                item.location,
                format!(
                    "parallel:matrix: each value of {name} must be a string or a number, found {}",
                    item.describe()
                ),
            ),
        }
    }
    out
}
