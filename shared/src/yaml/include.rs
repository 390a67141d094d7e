//! `include:` of `local` files: each included file is read through the
//! caller's [`IncludeLoader`], parsed (its own includes first), and the
//! files are deep-merged as GitLab merges them: included files in order (a
//! later one wins), then the including file's own keys over them.
//!
//! Limits are GitLab's: 150 included files in all, nesting up to 100 levels.
//! Stricter than GitLab: including the same file twice is an error (GitLab
//! reports "already included" for most such cases), and a wildcard that
//! matches nothing is an error.

use super::extends::deep_merge;
use super::keywords::{classify, did_you_mean, Classified};
use super::tree::{self, Location, Node, Value};
use super::Report;
use std::collections::HashSet;

/// GitLab's limit on included files per pipeline.
const MAX_INCLUDES: usize = 150;

/// GitLab's limit on include nesting.
const MAX_NESTING: usize = 100;

/// Reads files of the repository at the pipeline's commit. The coordinator
/// reads from git; the CLI from the working tree. Paths are relative to the
/// repository root, `/`-separated, without a leading `/`.
pub trait IncludeLoader {
    /// The text of one file.
    fn read(&self, path: &str) -> Result<String, LoadError>;
    /// Every file path in the repository, for wildcard includes and `exists:`.
    fn list(&self) -> Result<Vec<String>, LoadError>;
}

/// Why an included file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("does not exist")]
    NotFound,
    #[error("{0}")]
    Other(String),
}

/// A repository with no files: every include fails, `exists:` is false.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFiles;

impl IncludeLoader for NoFiles {
    fn read(&self, _path: &str) -> Result<String, LoadError> {
        Err(LoadError::NotFound)
    }

    fn list(&self) -> Result<Vec<String>, LoadError> {
        Ok(Vec::new())
    }
}

/// For [`super::parse_pipeline`]: `include:` cannot be followed there.
pub(crate) fn refuse(report: &mut Report, root: Node) -> Node {
    if let Some((key, _)) = include_entry(&root) {
        report.needs_planner(
            key.location,
            "keyword include is not supported by Osprey yet".to_owned(),
        );
    }
    without_include(root)
}

/// Reads and merges every file `root` (the main file) includes.
pub(crate) fn apply(
    report: &mut Report,
    root: Node,
    loader: &dyn IncludeLoader,
    used: &mut usize,
) -> Node {
    let main = report
        .files
        .first()
        .map(|f| normalize(f))
        .unwrap_or_default();
    let mut state = State {
        loader,
        used,
        count: 0,
        seen: HashSet::new(),
        stack: vec![main],
        listing: None,
    };
    state.expand(report, root)
}

struct State<'l, 'u> {
    loader: &'l dyn IncludeLoader,
    used: &'u mut usize,
    count: usize,
    seen: HashSet<String>,
    /// The files being expanded, outermost first, for cycle errors.
    stack: Vec<String>,
    /// The repository's files, listed once for wildcards.
    listing: Option<Result<Vec<String>, LoadError>>,
}

impl State<'_, '_> {
    /// `root` with everything it includes merged under it.
    fn expand(&mut self, report: &mut Report, root: Node) -> Node {
        let Some((_, value)) = include_entry(&root) else {
            return root;
        };
        let value = value.clone();
        let mut merged: Option<Node> = None;
        for (location, path) in self.paths(report, &value) {
            if let Some(included) = self.load(report, location, &path) {
                merged = Some(match merged {
                    Some(base) => deep_merge(&base, &included),
                    None => included,
                });
            }
        }
        let own = without_include(root);
        match merged {
            Some(base) => {
                let mut out = deep_merge(&base, &own);
                out.location = own.location;
                out
            }
            None => own,
        }
    }

    /// The local paths an `include:` value names, wildcards expanded.
    fn paths(&mut self, report: &mut Report, value: &Node) -> Vec<(Location, String)> {
        let items: Vec<&Node> = match &value.value {
            Value::Sequence(items) => items.iter().collect(),
            _ => vec![value],
        };
        let mut out = Vec::new();
        for item in items {
            let Some(path) = local_path(report, item) else {
                continue;
            };
            if !path.contains(['*', '?', '[', '{']) {
                out.push((item.location, path));
                continue;
            }
            for matched in self.wildcard(report, item.location, &path) {
                out.push((item.location, matched));
            }
        }
        out
    }

    fn wildcard(&mut self, report: &mut Report, location: Location, pattern: &str) -> Vec<String> {
        let matcher = match globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
        {
            Ok(glob) => glob.compile_matcher(),
            Err(error) => {
                report.error(
                    location,
                    format!("include: invalid wildcard {pattern}: {}", error.kind()),
                );
                return Vec::new();
            }
        };
        let loader = self.loader;
        let listing = self.listing.get_or_insert_with(|| loader.list());
        let files = match listing {
            Ok(files) => files,
            Err(error) => {
                report.error(
                    location,
                    format!("include: cannot list the repository's files: {error}"),
                );
                return Vec::new();
            }
        };
        let mut matched: Vec<String> = files
            .iter()
            .filter(|f| matcher.is_match(f.as_str()))
            .cloned()
            .collect();
        matched.sort();
        if matched.is_empty() {
            report.error(location, format!("include: {pattern} matches no file"));
        }
        matched
    }

    /// Reads, parses and expands one included file.
    fn load(&mut self, report: &mut Report, location: Location, path: &str) -> Option<Node> {
        if !(path.ends_with(".yml") || path.ends_with(".yaml")) {
            report.error(
                location,
                format!("include: {path} does not have a YAML extension (.yml or .yaml)"),
            );
            return None;
        }
        if let Some(at) = self.stack.iter().position(|p| p == path) {
            let mut cycle = self.stack[at..].to_vec();
            cycle.push(path.to_owned());
            report.error(location, format!("include cycle: {}", cycle.join(" -> ")));
            return None;
        }
        if !self.seen.insert(path.to_owned()) {
            report.error(location, format!("include: {path} is already included"));
            return None;
        }
        self.count += 1;
        if self.count > MAX_INCLUDES {
            report.error(
                location,
                format!("include: more than GitLab's limit of {MAX_INCLUDES} included files"),
            );
            return None;
        }
        if self.stack.len() > MAX_NESTING {
            report.error(
                location,
                format!("include: nesting deeper than GitLab's limit of {MAX_NESTING} levels"),
            );
            return None;
        }
        let text = match self.loader.read(path) {
            Ok(text) => text,
            Err(error) => {
                report.error(location, format!("include: local file {path} {error}"));
                return None;
            }
        };
        let file = report.add_file(path);
        let root = match tree::parse_file(&text, file, self.used) {
            Ok((root, errors)) => {
                for error in errors {
                    report.error(error.location, error.message);
                }
                root
            }
            Err(errors) => {
                for error in errors {
                    report.error(error.location, error.message);
                }
                return None;
            }
        };
        let Some(root) = root.filter(|r| r.as_mapping().is_some()) else {
            report.error(
                Location::start_of(file),
                "an included file must be a mapping of keywords and jobs".to_owned(),
            );
            return None;
        };
        self.stack.push(path.to_owned());
        let expanded = self.expand(report, root);
        self.stack.pop();
        Some(expanded)
    }
}

/// One `include:` entry as a local path: a string or `{local: path}`.
fn local_path(report: &mut Report, item: &Node) -> Option<String> {
    if let Some(text) = item.as_str() {
        if text.starts_with("http://") || text.starts_with("https://") {
            report.error(
                item.location,
                "include:remote is not supported by Osprey yet".to_owned(),
            );
            return None;
        }
        return Some(normalize(text));
    }
    let Some(entries) = item.as_mapping() else {
        report.error(
            item.location,
            format!(
                "each include must be a path or a mapping with local, found {}",
                item.describe()
            ),
        );
        return None;
    };
    let mut path = None;
    for (key, value) in entries {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        let unsupported = [
            "remote",
            "template",
            "project",
            "file",
            "ref",
            "component",
            "rules",
            "inputs",
            "integrity",
            "cache",
        ];
        match classify(name, &["local"], &unsupported) {
            Classified::Supported => match value.as_str() {
                Some(text) => path = Some(normalize(text)),
                None => report.error(
                    value.location,
                    format!("include:local must be a path, found {}", value.describe()),
                ),
            },
            Classified::Unsupported => report.error(
                key.location,
                format!("include:{name} is not supported by Osprey yet"),
            ),
            Classified::Unknown { suggestion } => report.error(
                key.location,
                format!("include: unknown key {name}{}", did_you_mean(suggestion)),
            ),
        }
    }
    path
}

/// `/ci/a.yml` and `./ci/a.yml` both name `ci/a.yml`.
fn normalize(path: &str) -> String {
    let trimmed = path.trim_start_matches("./").trim_start_matches('/');
    trimmed.to_owned()
}

fn include_entry(root: &Node) -> Option<&(Node, Node)> {
    root.as_mapping()?
        .iter()
        .find(|(k, _)| k.as_scalar().is_some_and(|s| s.text == "include"))
}

fn without_include(root: Node) -> Node {
    let Some(entries) = root.as_mapping() else {
        return root;
    };
    if include_entry(&root).is_none() {
        return root;
    }
    let kept: Vec<(Node, Node)> = entries
        .iter()
        .filter(|(k, _)| k.as_scalar().is_none_or(|s| s.text != "include"))
        .cloned()
        .collect();
    Node {
        location: root.location,
        value: Value::Mapping(kept.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::{IncludeLoader, LoadError};
    use crate::yaml::parse_pipeline_with;

    /// `f{n}.yml` includes `f{n+1}.yml`, without end.
    struct Chain;

    impl IncludeLoader for Chain {
        fn read(&self, path: &str) -> Result<String, LoadError> {
            let n: usize = path
                .trim_start_matches('f')
                .trim_end_matches(".yml")
                .parse()
                .map_err(|_| LoadError::NotFound)?;
            Ok(format!("include: f{}.yml\njob{n}:\n  script: x\n", n + 1))
        }

        fn list(&self) -> Result<Vec<String>, LoadError> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn nesting_is_capped_like_gitlab() {
        let errors = parse_pipeline_with(".gitlab-ci.yml", "include: f0.yml\n", &Chain)
            .expect_err("endless chain");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].file, "f99.yml");
        assert_eq!(
            errors[0].message,
            "include: nesting deeper than GitLab's limit of 100 levels"
        );
    }

    /// One file including 151 others.
    struct Wide;

    impl IncludeLoader for Wide {
        fn read(&self, path: &str) -> Result<String, LoadError> {
            Ok(format!("{}:\n  script: x\n", path.trim_end_matches(".yml")))
        }

        fn list(&self) -> Result<Vec<String>, LoadError> {
            Ok((0..151).map(|n| format!("w/{n:03}.yml")).collect())
        }
    }

    #[test]
    fn total_is_capped_like_gitlab_and_wildcards_sort() {
        let errors = parse_pipeline_with(".gitlab-ci.yml", "include: 'w/*.yml'\n", &Wide)
            .expect_err("too many");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].to_string(),
            ".gitlab-ci.yml:1:10: include: more than GitLab's limit of 150 included files"
        );
        let ok = parse_pipeline_with(".gitlab-ci.yml", "include: 'w/00*.yml'\n", &Wide)
            .expect("ten files");
        let names: Vec<&str> = ok.pipeline.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names[..3], ["w/000", "w/001", "w/002"]);
    }
}
