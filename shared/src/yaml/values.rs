//! Typed readers for the value shapes keywords share: strings, lists of
//! strings, scripts, booleans, `variables:`, `image:`, `services:` and
//! durations. Each reader reports a located error and returns `None` (or
//! skips the bad element) instead of failing, so one pass finds every error.

use super::duration::parse_duration;
use super::keywords::{classify, did_you_mean, Classified, IMAGE_UNSUPPORTED};
use super::tree::{Location, Node, ScalarKind, Value};
use super::Report;
use crate::pipeline::{ImageRef, ServiceRef, Variable};

/// GitLab accepts script lists nested up to ten levels and flattens them
/// (nesting appears when anchored lists are spliced into a script).
const MAX_SCRIPT_NESTING: usize = 10;

/// Who a value belongs to, for messages: `job build: `, `default: ` or nothing.
#[derive(Clone, Copy)]
pub(crate) struct Context<'a> {
    pub prefix: &'a str,
}

impl Context<'_> {
    pub(crate) fn error(&self, report: &mut Report, location: Location, message: impl AsRef<str>) {
        report.error(location, format!("{}{}", self.prefix, message.as_ref()));
    }

    /// Checks `name`, a key of the `scope:` mapping: true when Osprey runs it;
    /// else reports `scope:name is not supported by Osprey yet` (a GitLab key)
    /// or `scope: unknown key name` with a did-you-mean, and returns false.
    pub(crate) fn supported_key(
        &self,
        report: &mut Report,
        location: Location,
        scope: &str,
        name: &str,
        supported: &[&'static str],
        unsupported: &[&'static str],
    ) -> bool {
        match classify(name, supported, unsupported) {
            Classified::Supported => true,
            Classified::Unsupported => {
                self.error(
                    report,
                    location,
                    format!("{scope}:{name} is not supported by Osprey yet"),
                );
                false
            }
            Classified::Unknown { suggestion } => {
                self.error(
                    report,
                    location,
                    format!("{scope}: unknown key {name}{}", did_you_mean(suggestion)),
                );
                false
            }
        }
    }

    fn wrong_type(&self, report: &mut Report, node: &Node, what: &str, expected: &str) {
        let hint = match node.as_scalar().map(|s| s.kind) {
            Some(ScalarKind::Bool(_) | ScalarKind::Integer | ScalarKind::Float)
                if expected.starts_with("a string") =>
            {
                " (quote it to use it as a string)"
            }
            _ => "",
        };
        self.error(
            report,
            node.location,
            format!("{what} must be {expected}, found {}{hint}", node.describe()),
        );
    }
}

/// A scalar that YAML resolves to a string.
pub(crate) fn string(report: &mut Report, cx: Context, node: &Node, what: &str) -> Option<String> {
    match node.as_str() {
        Some(text) => Some(text.to_owned()),
        None => {
            cx.wrong_type(report, node, what, "a string");
            None
        }
    }
}

/// A list of strings; bad elements are reported and skipped.
pub(crate) fn string_list(
    report: &mut Report,
    cx: Context,
    node: &Node,
    what: &str,
) -> Option<Vec<String>> {
    let Some(items) = node.as_sequence() else {
        cx.wrong_type(report, node, what, "a list of strings");
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item.as_str() {
            Some(text) => out.push(text.to_owned()),
            None => cx.wrong_type(report, item, &format!("each entry of {what}"), "a string"),
        }
    }
    Some(out)
}

/// `script`, `before_script`, `after_script`: a string or a list of strings,
/// with nested lists flattened as GitLab does.
pub(crate) fn script(
    report: &mut Report,
    cx: Context,
    node: &Node,
    what: &str,
) -> Option<Vec<String>> {
    if let Some(line) = node.as_str() {
        return Some(vec![line.to_owned()]);
    }
    if node.as_sequence().is_none() {
        cx.wrong_type(report, node, what, "a string or a list of strings");
        return None;
    }
    let mut lines = Vec::new();
    flatten_script(report, cx, node, what, 0, &mut lines);
    Some(lines)
}

fn flatten_script(
    report: &mut Report,
    cx: Context,
    node: &Node,
    what: &str,
    depth: usize,
    lines: &mut Vec<String>,
) {
    for item in node.as_sequence().unwrap_or_default() {
        match &item.value {
            Value::Sequence(_) if depth + 1 < MAX_SCRIPT_NESTING => {
                flatten_script(report, cx, item, what, depth + 1, lines);
            }
            // An empty list adds no line however deep it is (a `!reference`
            // that failed to resolve leaves one).
            Value::Sequence(inner) if inner.is_empty() => {}
            Value::Sequence(_) => cx.error(
                report,
                item.location,
                format!("{what} nests lists more than {MAX_SCRIPT_NESTING} levels deep"),
            ),
            Value::Reference(_) => cx.error(
                report,
                item.location,
                format!("{what}: !reference could not be resolved"),
            ),
            _ => match item.as_str() {
                Some(line) => lines.push(line.to_owned()),
                None => cx.wrong_type(report, item, &format!("each line of {what}"), "a string"),
            },
        }
    }
}

/// A boolean; YAML 1.1 words (`yes`, `off`...) count, as in GitLab.
pub(crate) fn boolean(report: &mut Report, cx: Context, node: &Node, what: &str) -> Option<bool> {
    match node.as_scalar().map(|s| s.kind) {
        Some(ScalarKind::Bool(value)) => Some(value),
        _ => {
            cx.error(
                report,
                node.location,
                format!("{what} must be a boolean, found {}", node.describe()),
            );
            None
        }
    }
}

/// `timeout:` as a GitLab human duration or a number of seconds.
pub(crate) fn timeout(report: &mut Report, cx: Context, node: &Node) -> Option<u64> {
    let text = match node.as_scalar() {
        Some(s) if matches!(s.kind, ScalarKind::String | ScalarKind::Integer) => &s.text,
        _ => {
            cx.wrong_type(report, node, "timeout", "a duration such as 1h 30m");
            return None;
        }
    };
    match parse_duration(text) {
        Ok(seconds) => Some(seconds),
        Err(error) => {
            cx.error(report, node.location, format!("timeout {}", error.0));
            None
        }
    }
}

/// Which `variables:` forms a place accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum VariablesScope {
    /// Top level: `{value, description}` allowed.
    Global,
    /// A job: `{value}` only, as in GitLab.
    Job,
    /// A service: plain values only.
    Service,
}

/// `variables:` in file order. Values keep their source text: `1.10` is
/// `"1.10"`, `yes` is `"yes"` (GitLab's Psych would give `"1.1"` and
/// `"true"`; the text the user wrote is the less surprising answer).
pub(crate) fn variables(
    report: &mut Report,
    cx: Context,
    node: &Node,
    scope: VariablesScope,
) -> Vec<Variable> {
    variables_and_raw(report, cx, node, scope).0
}

/// [`variables`], plus the names of those set with `expand: false`.
pub(crate) fn variables_and_raw(
    report: &mut Report,
    cx: Context,
    node: &Node,
    scope: VariablesScope,
) -> (Vec<Variable>, Vec<String>) {
    let Some(entries) = node.as_mapping() else {
        cx.wrong_type(report, node, "variables", "a mapping of names to values");
        return (Vec::new(), Vec::new());
    };
    let mut out = Vec::with_capacity(entries.len());
    let mut raw = Vec::new();
    for (key, value) in entries {
        let Some(name) = key.as_scalar().map(|s| s.text.clone()) else {
            continue; // the tree already reported a non-scalar key
        };
        let value = match &value.value {
            Value::Mapping(fields) if scope != VariablesScope::Service => {
                let (value, is_raw) =
                    variable_fields(report, cx, &name, value.location, fields, scope);
                if is_raw {
                    raw.push(name.clone());
                }
                value
            }
            _ => variable_value(report, cx, &name, key.location, value),
        };
        if let Some(value) = value {
            out.push(Variable { key: name, value });
        }
    }
    (out, raw)
}

fn variable_value(
    report: &mut Report,
    cx: Context,
    name: &str,
    key_location: Location,
    node: &Node,
) -> Option<String> {
    match node.as_scalar() {
        Some(scalar) if scalar.kind != ScalarKind::Null => Some(scalar.text.clone()),
        _ => {
            cx.error(
                report,
                // An empty value has no text of its own: point at the key.
                if node.is_null() {
                    key_location
                } else {
                    node.location
                },
                format!(
                    "variable {name} must be a string, number or boolean, found {}",
                    node.describe()
                ),
            );
            None
        }
    }
}

/// The `{value: ..., description: ...}` form; true when `expand: false`.
fn variable_fields(
    report: &mut Report,
    cx: Context,
    name: &str,
    location: Location,
    fields: &[(Node, Node)],
    scope: VariablesScope,
) -> (Option<String>, bool) {
    let mut value = None;
    let mut raw = false;
    let mut has_value = false;
    for (key, field) in fields {
        let Some(field_name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        let supported: &[&str] = match scope {
            VariablesScope::Global => &["value", "description", "expand"],
            VariablesScope::Job | VariablesScope::Service => &["value", "expand"],
        };
        match classify(field_name, supported, &["options"]) {
            Classified::Supported => {}
            Classified::Unsupported => {
                cx.error(
                    report,
                    key.location,
                    format!("variables:{name}:{field_name} is not supported by Osprey yet"),
                );
                continue;
            }
            Classified::Unknown { .. } if field_name == "description" => {
                cx.error(
                    report,
                    key.location,
                    format!("variables:{name}:description is only allowed in top-level variables"),
                );
                continue;
            }
            Classified::Unknown { suggestion } => {
                cx.error(
                    report,
                    key.location,
                    format!(
                        "variables:{name}: unknown key {field_name}{}",
                        did_you_mean(suggestion)
                    ),
                );
                continue;
            }
        }
        match field_name {
            "value" => {
                has_value = true;
                value = variable_value(report, cx, name, key.location, field);
            }
            "description" => {
                // Shown by GitLab's "run pipeline" form only; nothing to run.
                string(report, cx, field, &format!("variables:{name}:description"));
            }
            _ => {
                // `expand: true` is GitLab's default; `false` changes meaning.
                let what = format!("variables:{name}:expand");
                if boolean(report, cx, field, &what) == Some(false) {
                    raw = true;
                    report.needs_planner(
                        field.location,
                        format!("{}{what}: false is not supported by Osprey yet", cx.prefix),
                    );
                }
            }
        }
    }
    if !has_value {
        cx.error(report, location, format!("variables:{name} needs a value"));
    }
    (value, raw)
}

/// `image:` as a string or `{name, entrypoint}`.
pub(crate) fn image(report: &mut Report, cx: Context, node: &Node) -> Option<ImageRef> {
    if let Some(name) = node.as_str() {
        return Some(ImageRef {
            name: name.to_owned(),
            entrypoint: None,
        });
    }
    let Some(fields) = node.as_mapping() else {
        cx.wrong_type(report, node, "image", "a string or a mapping with name");
        return None;
    };
    let mut name = None;
    let mut entrypoint = None;
    for (key, field) in fields {
        match image_key(report, cx, "image", key, &["name", "entrypoint"]) {
            Some("name") => name = string(report, cx, field, "image:name"),
            Some(_) => entrypoint = string_list(report, cx, field, "image:entrypoint"),
            None => {}
        }
    }
    let Some(name) = name else {
        cx.error(report, node.location, "image needs a name");
        return None;
    };
    Some(ImageRef { name, entrypoint })
}

/// `services:` entries as strings or `{name, alias, command, entrypoint, variables}`.
pub(crate) fn services(report: &mut Report, cx: Context, node: &Node) -> Vec<ServiceRef> {
    let Some(items) = node.as_sequence() else {
        cx.wrong_type(report, node, "services", "a list");
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if let Some(service) = service(report, cx, item) {
            out.push(service);
        }
    }
    out
}

fn service(report: &mut Report, cx: Context, node: &Node) -> Option<ServiceRef> {
    let mut service = ServiceRef {
        name: String::new(),
        alias: None,
        command: None,
        entrypoint: None,
        variables: Vec::new(),
    };
    if let Some(name) = node.as_str() {
        service.name = name.to_owned();
        return Some(service);
    }
    let Some(fields) = node.as_mapping() else {
        cx.wrong_type(
            report,
            node,
            "each entry of services",
            "a string or a mapping with name",
        );
        return None;
    };
    let mut name = None;
    let supported = ["name", "alias", "command", "entrypoint", "variables"];
    for (key, field) in fields {
        match image_key(report, cx, "services", key, &supported) {
            Some("name") => name = string(report, cx, field, "services:name"),
            Some("alias") => service.alias = string(report, cx, field, "services:alias"),
            Some("command") => service.command = string_list(report, cx, field, "services:command"),
            Some("entrypoint") => {
                service.entrypoint = string_list(report, cx, field, "services:entrypoint");
            }
            Some(_) => {
                service.variables = variables(report, cx, field, VariablesScope::Service);
            }
            None => {}
        }
    }
    let Some(name) = name else {
        cx.error(report, node.location, "each entry of services needs a name");
        return None;
    };
    service.name = name;
    Some(service)
}

/// Classifies a key of an `image:` or `services:` mapping; `None` when it was
/// reported (unknown or unsupported) or is not a scalar.
fn image_key<'k>(
    report: &mut Report,
    cx: Context,
    owner: &str,
    key: &'k Node,
    supported: &[&'static str],
) -> Option<&'k str> {
    let text = key.as_scalar().map(|s| s.text.as_str())?;
    cx.supported_key(
        report,
        key.location,
        owner,
        text,
        supported,
        IMAGE_UNSUPPORTED,
    )
    .then_some(text)
}
