//! Reads the keywords that decide which jobs exist: `rules:`, `only:`,
//! `except:`, `workflow:` and `inherit:`. Expressions and regexes are
//! compiled here so that a bad one is a lint error at its value, not a
//! planning failure later.

use super::graph::{LocatedNeeds, RuleNeeds};
use super::keywords::{classify, did_you_mean, Classified, DEFAULT_KEYWORDS_ALL};
use super::tree::Node;
use super::values::{self, Context, VariablesScope};
use super::Report;
use crate::pipeline::{InheritVariables, RefPolicy, Rule, RuleWhen, When};
use crate::variables::{Expression, Pattern};

/// Where a list of rules sits: rules of a job or of `workflow:`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RulesScope {
    Job,
    Workflow,
}

/// `rules:` of a job or of `workflow:`, with the `needs:` of each rule that
/// has them as written (by index in the rules), for [`super::link`] to
/// resolve over the whole file.
pub(crate) fn rules(
    report: &mut Report,
    cx: Context,
    node: &Node,
    scope: RulesScope,
) -> Option<(Vec<Rule>, RuleNeeds)> {
    let Some(items) = node.as_sequence() else {
        cx.error(
            report,
            node.location,
            format!("rules must be a list of rules, found {}", node.describe()),
        );
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut needs = Vec::new();
    // `rules: [{...}, [nested list]]` happens with `!reference`; GitLab
    // flattens one level of nesting.
    let flattened = items.iter().flat_map(|item| match item.as_sequence() {
        Some(nested) => nested.iter().collect::<Vec<_>>(),
        None => vec![item],
    });
    for item in flattened {
        if let Some((rule, located)) = rule(report, cx, item, scope) {
            if let Some(located) = located {
                needs.push((out.len(), located));
            }
            out.push(rule);
        }
    }
    Some((out, needs))
}

fn rule(
    report: &mut Report,
    cx: Context,
    node: &Node,
    scope: RulesScope,
) -> Option<(Rule, Option<LocatedNeeds>)> {
    let Some(entries) = node.as_mapping() else {
        cx.error(
            report,
            node.location,
            format!(
                "each rule must be a mapping such as {{if: ..., when: ...}}, found {}",
                node.describe()
            ),
        );
        return None;
    };
    let (supported, unsupported): (&[&str], &[&str]) = match scope {
        RulesScope::Job => (
            &[
                "if",
                "changes",
                "exists",
                "when",
                "allow_failure",
                "variables",
                "start_in",
                "needs",
            ],
            &["interruptible"],
        ),
        RulesScope::Workflow => (
            &["if", "changes", "exists", "when", "variables"],
            &["auto_cancel"],
        ),
    };
    let mut rule = Rule::default();
    let mut start_in = None;
    let mut needs = None;
    for (key, value) in entries {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        if !cx.supported_key(report, key.location, "rules", name, supported, unsupported) {
            continue;
        }
        match name {
            "if" => rule.condition = expression(report, cx, value, "rules:if"),
            "changes" => rule.changes = globs_or_paths(report, cx, value, "changes"),
            "exists" => rule.exists = globs_or_paths(report, cx, value, "exists"),
            "when" => rule.when = rule_when(report, cx, value, scope),
            "allow_failure" => {
                if value.as_mapping().is_some() {
                    cx.error(
                        report,
                        value.location,
                        "rules:allow_failure:exit_codes is not supported by Osprey yet",
                    );
                } else {
                    rule.allow_failure = values::boolean(report, cx, value, "rules:allow_failure");
                }
            }
            "start_in" => {
                start_in = Some((
                    key.location,
                    super::run::start_in(report, cx, value, "rules:start_in"),
                ));
            }
            "needs" => {
                let located = super::graph::needs(report, cx, value, "rules:needs");
                // As written until the whole file is known (see link.rs).
                rule.needs = Some(located.iter().map(|(need, _)| need.clone()).collect());
                needs = Some((key.location, located));
            }
            _ => rule.variables = values::variables(report, cx, value, VariablesScope::Job),
        }
    }
    // As for a job: `start_in` goes with `when: delayed` and only with it.
    match (rule.when, start_in) {
        (Some(RuleWhen::Run(When::Delayed)), Some((_, seconds))) => rule.start_in_seconds = seconds,
        (Some(RuleWhen::Run(When::Delayed)), None) => cx.error(
            report,
            node.location,
            "rules:when: delayed needs rules:start_in",
        ),
        (_, Some((at, _))) => cx.error(
            report,
            at,
            "rules:start_in may only be used with rules:when: delayed",
        ),
        (_, None) => {}
    }
    Some((rule, needs))
}

/// An expression, compiled to check it; kept as written.
fn expression(report: &mut Report, cx: Context, node: &Node, what: &str) -> Option<String> {
    let text = values::string(report, cx, node, what)?;
    match Expression::parse(&text) {
        Ok(_) => Some(text),
        Err(error) => {
            cx.error(
                report,
                node.location,
                format!("{what}: invalid expression {text:?}: {error}"),
            );
            None
        }
    }
}

/// `changes:`/`exists:` as a list of globs or `{paths: [...]}`.
fn globs_or_paths(
    report: &mut Report,
    cx: Context,
    node: &Node,
    what: &str,
) -> Option<Vec<String>> {
    let Some(entries) = node.as_mapping() else {
        return globs(report, cx, node, &format!("rules:{what}"));
    };
    let mut paths = None;
    for (key, value) in entries {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        let unsupported: &[&str] = if what == "changes" {
            &["compare_to"]
        } else {
            &["project", "ref"]
        };
        if cx.supported_key(
            report,
            key.location,
            &format!("rules:{what}"),
            name,
            &["paths"],
            unsupported,
        ) {
            paths = globs(report, cx, value, &format!("rules:{what}:paths"));
        }
    }
    if paths.is_none() {
        cx.error(report, node.location, format!("rules:{what} needs paths"));
    }
    paths
}

/// A list of glob patterns, each checked to compile.
fn globs(report: &mut Report, cx: Context, node: &Node, what: &str) -> Option<Vec<String>> {
    let list = values::string_list(report, cx, node, what)?;
    for (pattern, item) in list.iter().zip(node.as_sequence().unwrap_or_default()) {
        if let Err(error) = globset::Glob::new(pattern) {
            cx.error(
                report,
                item.location,
                format!("{what}: invalid glob {pattern}: {}", error.kind()),
            );
        }
    }
    Some(list)
}

fn rule_when(report: &mut Report, cx: Context, node: &Node, scope: RulesScope) -> Option<RuleWhen> {
    let text = values::string(report, cx, node, "rules:when")?;
    let parsed = match (text.as_str(), scope) {
        ("never", _) => Some(RuleWhen::Never),
        ("always", RulesScope::Workflow) => Some(RuleWhen::Run(When::Always)),
        (_, RulesScope::Workflow) => None,
        (other, RulesScope::Job) => When::parse(other).map(RuleWhen::Run),
    };
    if parsed.is_none() {
        let message = match scope {
            RulesScope::Workflow => {
                format!("workflow:rules:when must be always or never, found {text}")
            }
            RulesScope::Job => format!(
                "rules:when must be on_success, on_failure, always, manual, delayed or never, \
                 found {text}"
            ),
        };
        cx.error(report, node.location, message);
    }
    parsed
}

/// `only:` or `except:` (`what` names which).
pub(crate) fn policy(
    report: &mut Report,
    cx: Context,
    node: &Node,
    what: &str,
) -> Option<RefPolicy> {
    if node.as_sequence().is_some() {
        let refs = refs(report, cx, node, what)?;
        return Some(RefPolicy {
            refs: Some(refs),
            ..RefPolicy::default()
        });
    }
    let Some(entries) = node.as_mapping() else {
        cx.error(
            report,
            node.location,
            format!(
                "{what} must be a list of refs or a mapping with refs, variables or changes, found {}",
                node.describe()
            ),
        );
        return None;
    };
    let mut policy = RefPolicy::default();
    for (key, value) in entries {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        if !cx.supported_key(
            report,
            key.location,
            what,
            name,
            &["refs", "variables", "changes"],
            &["kubernetes"],
        ) {
            continue;
        }
        match name {
            "refs" => policy.refs = refs(report, cx, value, &format!("{what}:refs")),
            "changes" => policy.changes = globs(report, cx, value, &format!("{what}:changes")),
            _ => {
                let what = format!("{what}:variables");
                let list = values::string_list(report, cx, value, &what);
                let items = value.as_sequence().unwrap_or_default();
                policy.variables = list.map(|list| {
                    let mut valid = Vec::with_capacity(list.len());
                    for (text, item) in list.into_iter().zip(items) {
                        match Expression::parse(&text) {
                            Ok(_) => valid.push(text),
                            Err(error) => cx.error(
                                report,
                                item.location,
                                format!("{what}: invalid expression {text:?}: {error}"),
                            ),
                        }
                    }
                    valid
                });
            }
        }
    }
    Some(policy)
}

fn refs(report: &mut Report, cx: Context, node: &Node, what: &str) -> Option<Vec<String>> {
    let list = values::string_list(report, cx, node, what)?;
    let items = node.as_sequence().unwrap_or_default();
    for (text, item) in list.iter().zip(items) {
        if text.starts_with('/') {
            if let Err(message) = Pattern::parse(text) {
                cx.error(report, item.location, format!("{what}: {message}"));
            }
        } else if text.contains('@') {
            cx.error(
                report,
                item.location,
                format!("{what}: refs with @project ({text}) are not supported by Osprey yet"),
            );
        }
    }
    Some(list)
}

/// Which `default:` keywords a job inherits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InheritDefault {
    All,
    None,
    Only(Vec<String>),
}

impl InheritDefault {
    pub(crate) fn inherits(&self, keyword: &str) -> bool {
        match self {
            InheritDefault::All => true,
            InheritDefault::None => false,
            InheritDefault::Only(keys) => keys.iter().any(|k| k == keyword),
        }
    }
}

/// `inherit:` with `default:` and `variables:` as `true`, `false` or a list.
pub(crate) fn inherit(
    report: &mut Report,
    cx: Context,
    node: &Node,
) -> (InheritDefault, InheritVariables) {
    let mut default = InheritDefault::All;
    let mut variables = InheritVariables::All;
    let Some(entries) = node.as_mapping() else {
        cx.error(
            report,
            node.location,
            format!(
                "inherit must be a mapping with default or variables, found {}",
                node.describe()
            ),
        );
        return (default, variables);
    };
    for (key, value) in entries {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        if name != "default" && name != "variables" {
            let suggestion = super::keywords::suggest(name, ["default", "variables"]);
            cx.error(
                report,
                key.location,
                format!("inherit: unknown key {name}{}", did_you_mean(suggestion)),
            );
            continue;
        }
        let what = format!("inherit:{name}");
        let choice = if value.as_sequence().is_some() {
            values::string_list(report, cx, value, &what).map(Err)
        } else {
            values::boolean(report, cx, value, &what).map(Ok)
        };
        if name == "default" {
            if let Some(Err(keys)) = &choice {
                for (text, item) in keys.iter().zip(value.as_sequence().unwrap_or_default()) {
                    if !DEFAULT_KEYWORDS_ALL.contains(&text.as_str()) {
                        let suggestion =
                            super::keywords::suggest(text, DEFAULT_KEYWORDS_ALL.iter().copied());
                        cx.error(
                            report,
                            item.location,
                            format!(
                                "{what}: {text} is not a default: keyword{}",
                                did_you_mean(suggestion)
                            ),
                        );
                    }
                }
            }
            default = match choice {
                Some(Ok(true)) | None => InheritDefault::All,
                Some(Ok(false)) => InheritDefault::None,
                Some(Err(keys)) => InheritDefault::Only(keys),
            };
        } else {
            variables = match choice {
                Some(Ok(true)) | None => InheritVariables::All,
                Some(Ok(false)) => InheritVariables::None,
                Some(Err(names)) => InheritVariables::Only(names),
            };
        }
    }
    (default, variables)
}

/// `workflow:` with `rules:`.
pub(crate) fn workflow(report: &mut Report, node: &Node) -> Option<Vec<Rule>> {
    let cx = Context {
        prefix: "workflow: ",
    };
    let Some(entries) = node.as_mapping() else {
        cx.error(
            report,
            node.location,
            format!(
                "workflow must be a mapping with rules, found {}",
                node.describe()
            ),
        );
        return None;
    };
    let mut out = None;
    for (key, value) in entries {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        match classify(name, &["rules"], &["name", "auto_cancel"]) {
            Classified::Supported => {
                out = rules(report, cx, value, RulesScope::Workflow).map(|(rules, _)| rules);
            }
            Classified::Unsupported => cx.error(
                report,
                key.location,
                format!("workflow:{name} is not supported by Osprey yet"),
            ),
            Classified::Unknown { suggestion } => cx.error(
                report,
                key.location,
                format!("unknown key {name}{}", did_you_mean(suggestion)),
            ),
        }
    }
    out
}
