//! What decides which jobs a pipeline has: `workflow:rules`, each job's
//! `rules:` or `only:`/`except:`, and the `inherit:variables` and
//! `expand: false` settings the planner needs to resolve variables.
//!
//! Kept beside [`Pipeline`] rather than inside it so that the model other
//! crates build and store stays as it is: [`crate::plan::plan`] turns a
//! [`PipelineDefinition`] into the plain [`Pipeline`] of one ref.

use super::{Need, Pipeline, Variable, When};
use serde::{Deserialize, Serialize};

/// A validated pipeline file before planning: every visible job, plus the
/// conditions that decide which of them a given ref gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDefinition {
    /// Every visible job, with its own `when`/`allow_failure`; its
    /// `variables` are the global ones, each job's its own.
    pub pipeline: Pipeline,
    /// `workflow: rules`, if the file has them.
    #[serde(default)]
    pub workflow: Option<Vec<Rule>>,
    /// One entry per job of `pipeline.jobs`, in the same order.
    pub jobs: Vec<JobConditions>,
    /// Global variables with `expand: false`.
    #[serde(default)]
    pub raw_variables: Vec<String>,
}

/// The planning-only settings of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobConditions {
    pub name: String,
    pub filter: JobFilter,
    #[serde(default)]
    pub inherit_variables: InheritVariables,
    /// Job variables with `expand: false`.
    #[serde(default)]
    pub raw_variables: Vec<String>,
}

/// How a job decides whether it exists for a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobFilter {
    /// `rules:`; the first rule that matches decides, no match means no job.
    Rules(Vec<Rule>),
    /// `only:`/`except:`. A job with neither (and no `rules:`) has both
    /// `None`: GitLab then applies `only: [branches, tags]` unless the file
    /// has `workflow: rules`.
    OnlyExcept {
        only: Option<RefPolicy>,
        except: Option<RefPolicy>,
    },
}

/// One entry of `rules:` (or of `workflow: rules`). Every clause present
/// must hold for the rule to match; a rule with none always matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// The `if:` expression as written (validated when parsed).
    #[serde(rename = "if", default)]
    pub condition: Option<String>,
    /// `changes:` globs.
    #[serde(default)]
    pub changes: Option<Vec<String>>,
    /// `exists:` globs.
    #[serde(default)]
    pub exists: Option<Vec<String>>,
    #[serde(default)]
    pub when: Option<RuleWhen>,
    #[serde(default)]
    pub allow_failure: Option<bool>,
    /// `start_in:` (seconds) of a rule with `when: delayed`.
    #[serde(default)]
    pub start_in_seconds: Option<u64>,
    /// `variables:` set when this rule matches, over the job's own.
    #[serde(default)]
    pub variables: Vec<Variable>,
    /// `needs:` of a job's rule: when this rule matches, the job's `needs`
    /// are replaced by these (`Some([])` for `needs: []`). Resolved like the
    /// job's own: `parallel` names expanded, undefined optional ones dropped.
    #[serde(default)]
    pub needs: Option<Vec<Need>>,
}

/// `when:` in a rule: a job `when`, or `never` (the job is not created).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleWhen {
    Run(When),
    Never,
}

/// `only:` or `except:` in the `{refs, variables, changes}` form (the list
/// form is `refs`). Keys present must all match (AND); within a key any
/// entry matching is enough (OR), as GitLab evaluates them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefPolicy {
    #[serde(default)]
    pub refs: Option<Vec<String>>,
    /// Expressions, as `rules:if`.
    #[serde(default)]
    pub variables: Option<Vec<String>>,
    #[serde(default)]
    pub changes: Option<Vec<String>>,
}

/// `inherit:variables`: which global variables a job receives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InheritVariables {
    #[default]
    All,
    None,
    Only(Vec<String>),
}

impl InheritVariables {
    pub fn inherits(&self, name: &str) -> bool {
        match self {
            InheritVariables::All => true,
            InheritVariables::None => false,
            InheritVariables::Only(names) => names.iter().any(|n| n == name),
        }
    }
}
