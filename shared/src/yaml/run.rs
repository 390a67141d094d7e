//! Readers for the job keywords that say how a job runs once it exists:
//! `when` (with `start_in`), `allow_failure` (with `exit_codes`), `retry`,
//! `interruptible`, `resource_group`, `environment` and `coverage`.
//!
//! Values are checked here as GitLab checks them; the ones that hold
//! variables (`resource_group`, environment `name`/`url`) are kept as written
//! and expanded by the planner, which knows the job's variables.

use super::duration::parse_duration;
use super::keywords::{did_you_mean, suggest};
use super::tree::{Node, ScalarKind};
use super::values::{self, Context};
use super::Report;
use crate::pipeline::{Environment, Retry, When};

/// The longest `start_in` GitLab accepts: one week.
pub(crate) const MAX_START_IN_SECONDS: u64 = 604_800;

/// Most retries GitLab allows after the first attempt.
const MAX_RETRIES: u32 = 2;

/// `environment:action` values.
const ENVIRONMENT_ACTIONS: &[&str] = &["start", "prepare", "stop", "verify", "access"];

/// `environment:` keys GitLab has that Osprey does not implement yet.
const ENVIRONMENT_UNSUPPORTED: &[&str] = &["kubernetes"];
/// GitLab's `environment:deployment_tier` values.
pub(crate) const DEPLOYMENT_TIERS: &[&str] =
    &["production", "staging", "testing", "development", "other"];

/// `when:` of a job (`never` is only valid in rules).
pub(crate) fn when(report: &mut Report, cx: Context, value: &Node) -> Option<When> {
    let text = values::string(report, cx, value, "when")?;
    if let Some(when) = When::parse(&text) {
        return Some(when);
    }
    let known = [
        "on_success",
        "on_failure",
        "always",
        "manual",
        "delayed",
        "never",
    ];
    let message = if text == "never" {
        "when: never is only valid in rules (and workflow:rules)".to_owned()
    } else {
        format!(
            "when must be on_success, on_failure, always, manual or delayed, found {text}{}",
            did_you_mean(suggest(&text, known))
        )
    };
    cx.error(report, value.location, message);
    None
}

/// `start_in:` (of a job or a rule): a GitLab duration of at most one week.
/// `what` is `start_in` or `rules:start_in`.
pub(crate) fn start_in(report: &mut Report, cx: Context, node: &Node, what: &str) -> Option<u64> {
    let text = match node.as_scalar() {
        Some(s) if matches!(s.kind, ScalarKind::String | ScalarKind::Integer) => &s.text,
        _ => {
            cx.error(
                report,
                node.location,
                format!(
                    "{what} must be a duration such as 30 minutes, found {}",
                    node.describe()
                ),
            );
            return None;
        }
    };
    match parse_duration(text) {
        Ok(seconds) if seconds <= MAX_START_IN_SECONDS => Some(seconds),
        Ok(_) => {
            cx.error(
                report,
                node.location,
                format!("{what} {text:?} is longer than GitLab's limit of one week"),
            );
            None
        }
        Err(error) => {
            // The duration error reads as "timeout ..." elsewhere; the rest
            // of its text is generic.
            cx.error(report, node.location, format!("{what} {}", error.0));
            None
        }
    }
}

/// `allow_failure:` as a boolean or `{exit_codes: N | [N, ...]}`. Returns
/// the boolean and the exit codes; with exit codes the boolean is false, as
/// on GitLab (only the listed codes are allowed to fail).
pub(crate) fn allow_failure(
    report: &mut Report,
    cx: Context,
    value: &Node,
) -> Option<(bool, Vec<i32>)> {
    let Some(entries) = value.as_mapping() else {
        return values::boolean(report, cx, value, "allow_failure").map(|b| (b, Vec::new()));
    };
    let mut codes = None;
    for (key, field) in entries {
        let text = key.as_scalar().map_or("", |s| s.text.as_str());
        if text == "exit_codes" {
            codes = exit_codes(report, cx, field, "allow_failure:exit_codes");
        } else {
            let suggestion = suggest(text, ["exit_codes"]);
            cx.error(
                report,
                key.location,
                format!(
                    "allow_failure: unknown key {text}{}",
                    did_you_mean(suggestion)
                ),
            );
        }
    }
    match codes {
        Some(codes) => Some((false, codes)),
        None if entries.is_empty() => {
            cx.error(report, value.location, "allow_failure needs exit_codes");
            None
        }
        None => None,
    }
}

/// An exit code or a list of them.
fn exit_codes(report: &mut Report, cx: Context, node: &Node, what: &str) -> Option<Vec<i32>> {
    let items = match node.as_sequence() {
        Some(items) => items,
        None => std::slice::from_ref(node),
    };
    if items.is_empty() {
        cx.error(report, node.location, format!("{what} must not be empty"));
        return None;
    }
    let mut codes = Vec::with_capacity(items.len());
    for item in items {
        let code = item
            .as_scalar()
            .filter(|s| s.kind == ScalarKind::Integer)
            .and_then(|s| s.text.replace('_', "").parse::<i32>().ok());
        match code {
            Some(code) => codes.push(code),
            None => cx.error(
                report,
                item.location,
                format!(
                    "{what} must be an integer or a list of integers, found {}",
                    item.describe()
                ),
            ),
        }
    }
    Some(codes)
}

/// `retry:` as `0..=2` or `{max, when, exit_codes}`.
pub(crate) fn retry(report: &mut Report, cx: Context, node: &Node) -> Option<Retry> {
    let Some(entries) = node.as_mapping() else {
        let max = retry_max(report, cx, node, "retry")?;
        return Some(Retry {
            max,
            ..Retry::default()
        });
    };
    let mut retry = Retry::default();
    for (key, field) in entries {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        match name {
            "max" => retry.max = retry_max(report, cx, field, "retry:max").unwrap_or_default(),
            "when" => retry.when = retry_when(report, cx, field),
            "exit_codes" => {
                retry.exit_codes =
                    exit_codes(report, cx, field, "retry:exit_codes").unwrap_or_default();
            }
            other => cx.error(
                report,
                key.location,
                format!(
                    "retry: unknown key {other}{}",
                    did_you_mean(suggest(other, ["max", "when", "exit_codes"]))
                ),
            ),
        }
    }
    Some(retry)
}

fn retry_max(report: &mut Report, cx: Context, node: &Node, what: &str) -> Option<u32> {
    let value = node
        .as_scalar()
        .filter(|s| s.kind == ScalarKind::Integer)
        .and_then(|s| s.text.parse::<i64>().ok());
    match value {
        Some(n) if (0..=i64::from(MAX_RETRIES)).contains(&n) => u32::try_from(n).ok(),
        Some(n) => {
            cx.error(
                report,
                node.location,
                format!("{what} must be between 0 and {MAX_RETRIES}, found {n}"),
            );
            None
        }
        None => {
            cx.error(
                report,
                node.location,
                format!(
                    "{what} must be an integer between 0 and {MAX_RETRIES}, found {}",
                    node.describe()
                ),
            );
            None
        }
    }
}

/// `retry:when`: one failure reason or a list; unknown ones are dropped
/// after an error.
fn retry_when(report: &mut Report, cx: Context, node: &Node) -> Vec<String> {
    let items = match node.as_sequence() {
        Some(items) => items,
        None => std::slice::from_ref(node),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Some(text) = values::string(report, cx, item, "retry:when") else {
            continue;
        };
        if text == "always" || text.parse::<crate::FailureReason>().is_ok() {
            out.push(text);
        } else {
            cx.error(
                report,
                item.location,
                format!(
                    "retry:when: unknown failure reason {text}{}",
                    did_you_mean(suggest(
                        &text,
                        std::iter::once("always").chain(
                            crate::FailureReason::ALL
                                .iter()
                                .map(|reason| reason.as_str())
                        )
                    ))
                ),
            );
        }
    }
    out
}

/// `resource_group:`: a non-empty string (variables allowed).
pub(crate) fn resource_group(report: &mut Report, cx: Context, node: &Node) -> Option<String> {
    let text = values::string(report, cx, node, "resource_group")?;
    if text.trim().is_empty() {
        cx.error(report, node.location, "resource_group must not be empty");
        return None;
    }
    Some(text)
}

/// `environment:` as a name or `{name, url, action}`.
pub(crate) fn environment(report: &mut Report, cx: Context, node: &Node) -> Option<Environment> {
    if node.as_mapping().is_none() {
        let name = values::string(report, cx, node, "environment")?;
        return environment_name(report, cx, node, name).map(|name| Environment {
            name,
            url: None,
            action: "start".to_owned(),
            tier: None,
            auto_stop_in: None,
            on_stop: None,
        });
    }
    let mut name = None;
    let mut has_name = false;
    let mut url = None;
    let mut action = "start".to_owned();
    let mut tier = None;
    let mut auto_stop_in = None;
    let mut on_stop = None;
    for (key, field) in node.as_mapping().unwrap_or_default() {
        let Some(text) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        if !cx.supported_key(
            report,
            key.location,
            "environment",
            text,
            &[
                "name",
                "url",
                "action",
                "deployment_tier",
                "auto_stop_in",
                "on_stop",
            ],
            ENVIRONMENT_UNSUPPORTED,
        ) {
            continue;
        }
        match text {
            "name" => {
                has_name = true;
                name = values::string(report, cx, field, "environment:name")
                    .and_then(|n| environment_name(report, cx, field, n));
            }
            "url" => url = values::string(report, cx, field, "environment:url"),
            "on_stop" => on_stop = values::string(report, cx, field, "environment:on_stop"),
            "deployment_tier" => {
                let value = values::string(report, cx, field, "environment:deployment_tier");
                match value {
                    Some(value) if DEPLOYMENT_TIERS.contains(&value.as_str()) => tier = Some(value),
                    Some(value) => cx.error(
                        report,
                        field.location,
                        format!(
                            "environment:deployment_tier must be one of {}, found {value}{}",
                            DEPLOYMENT_TIERS.join(", "),
                            did_you_mean(suggest(&value, DEPLOYMENT_TIERS.iter().copied()))
                        ),
                    ),
                    None => {}
                }
            }
            "auto_stop_in" => {
                match values::string(report, cx, field, "environment:auto_stop_in").as_deref() {
                    Some("never") | None => {}
                    Some(text) => match super::duration::parse_expiry(text) {
                        Ok(seconds) => auto_stop_in = Some(seconds),
                        Err(error) => cx.error(
                            report,
                            field.location,
                            format!("environment:auto_stop_in {}", error.0),
                        ),
                    },
                }
            }
            _ => {
                if let Some(value) = values::string(report, cx, field, "environment:action") {
                    if ENVIRONMENT_ACTIONS.contains(&value.as_str()) {
                        action = value;
                    } else {
                        cx.error(
                            report,
                            field.location,
                            format!(
                                "environment:action must be one of {}, found {value}{}",
                                ENVIRONMENT_ACTIONS.join(", "),
                                did_you_mean(suggest(&value, ENVIRONMENT_ACTIONS.iter().copied()))
                            ),
                        );
                    }
                }
            }
        }
    }
    if !has_name {
        cx.error(report, node.location, "environment needs a name");
    }
    Some(Environment {
        name: name?,
        url,
        action,
        tier,
        auto_stop_in,
        on_stop,
    })
}

fn environment_name(report: &mut Report, cx: Context, node: &Node, name: String) -> Option<String> {
    match check_environment_name(&name) {
        Ok(()) => Some(name),
        Err(message) => {
            cx.error(report, node.location, format!("environment {message}"));
            None
        }
    }
}

/// GitLab's rule for environment names: letters, digits, spaces and
/// `- _ / $ { } .`, not starting or ending with `/`, at most 255 characters.
/// `$`, `{` and `}` are allowed so that variables can be used; the planner
/// checks the expanded name again.
pub(crate) fn check_environment_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_alphanumeric() || " -_/${}.".contains(c);
    if name.trim().is_empty() {
        return Err("name must not be empty".to_owned());
    }
    if name.chars().count() > 255 {
        return Err("name is longer than 255 characters".to_owned());
    }
    if !name.chars().all(allowed) || name.starts_with('/') || name.ends_with('/') {
        return Err(format!(
            "name {name:?} can contain only letters, digits, '-', '_', '/', '$', '{{', '}}', \
             '.', and spaces, but it cannot start or end with '/'"
        ));
    }
    Ok(())
}

/// `coverage: '/regex/'`: the regex between the slashes, compiled to check it.
pub(crate) fn coverage(report: &mut Report, cx: Context, node: &Node) -> Option<String> {
    let text = values::string(report, cx, node, "coverage")?;
    let inner = text
        .strip_prefix('/')
        .and_then(|rest| rest.strip_suffix('/'))
        .filter(|inner| !inner.is_empty());
    let Some(inner) = inner else {
        cx.error(
            report,
            node.location,
            format!("coverage must be a regular expression between slashes such as '/Total: \\d+%/', found {text}"),
        );
        return None;
    };
    match crate::variables::Pattern::parse(&text) {
        Ok(_) => Some(inner.to_owned()),
        Err(message) => {
            cx.error(report, node.location, format!("coverage: {message}"));
            None
        }
    }
}
