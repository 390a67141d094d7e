//! `extends:` on the located tree, before any keyword is read, and the deep
//! merge it shares with `include:`.
//!
//! GitLab's rules: a job's parents are merged in order (a later parent wins),
//! then the job's own keys over them; mappings merge key by key at every
//! depth, anything else (lists included) is replaced whole; `key: null` in
//! the child removes the inherited key. Up to 11 levels of `extends` are
//! followed; a cycle or an unknown parent is an error.

use super::keywords::{did_you_mean, suggest, GLOBAL_SUPPORTED, GLOBAL_UNSUPPORTED};
use super::tree::{Location, Node, Value};
use super::Report;
use std::collections::HashMap;
use std::rc::Rc;

/// GitLab follows at most 11 levels of `extends` (its MAX_NESTING_LEVELS
/// counts from 0 to 10).
const MAX_EXTENDS_LEVELS: usize = 11;

/// Merges `over` into `base`: mappings key by key (recursively), anything
/// else replaced by `over`. A null in `over` removes the key. Entries keep
/// `base`'s order, new keys follow in `over`'s order, as Ruby's
/// `Hash#deep_merge` does.
pub(crate) fn deep_merge(base: &Node, over: &Node) -> Node {
    let (Some(base_entries), Some(over_entries)) = (base.as_mapping(), over.as_mapping()) else {
        return over.clone();
    };
    let mut merged: Vec<(Node, Node)> = base_entries.to_vec();
    let mut removed: Vec<String> = Vec::new();
    for (key, value) in over_entries {
        let name = key.as_scalar().map(|s| s.text.as_str());
        let existing = merged
            .iter()
            .position(|(k, _)| k.as_scalar().map(|s| s.text.as_str()) == name);
        if value.is_null() {
            if let Some(name) = name {
                removed.push(name.to_owned());
            }
            continue;
        }
        match existing {
            Some(at) => {
                let value = deep_merge(&merged[at].1, value);
                merged[at] = (key.clone(), value);
            }
            None => merged.push((key.clone(), value.clone())),
        }
    }
    merged.retain(|(k, _)| !k.as_scalar().is_some_and(|s| removed.contains(&s.text)));
    Node {
        location: over.location,
        value: Value::Mapping(merged.into()),
    }
}

/// Whether a top-level key names a job (visible or hidden) rather than a
/// global keyword.
pub(crate) fn is_job_key(name: &str) -> bool {
    !GLOBAL_SUPPORTED.contains(&name) && !GLOBAL_UNSUPPORTED.contains(&name)
}

/// Resolves `extends:` in every job of the top-level mapping `root`.
pub(crate) fn apply(report: &mut Report, root: Node) -> Node {
    let Some(entries) = root.as_mapping() else {
        return root;
    };
    let jobs: HashMap<&str, &Node> = entries
        .iter()
        .filter_map(|(k, v)| {
            let name = k.as_scalar()?.text.as_str();
            (is_job_key(name) && v.as_mapping().is_some()).then_some((name, v))
        })
        .collect();
    if !jobs.values().any(|job| extends_of(job).is_some()) {
        return root;
    }
    let mut resolver = Resolver {
        jobs: &jobs,
        done: HashMap::new(),
        report,
    };
    let mut out = Vec::with_capacity(entries.len());
    for (key, value) in entries.iter() {
        let name = key.as_scalar().map(|s| s.text.as_str());
        let resolved = match name {
            Some(name) if jobs.contains_key(name) => {
                let mut chain = Vec::new();
                resolver.resolve(name, &mut chain).0
            }
            _ => value.clone(),
        };
        out.push((key.clone(), resolved));
    }
    Node {
        location: root.location,
        value: Value::Mapping(out.into()),
    }
}

/// The `extends:` value of a job mapping.
fn extends_of(job: &Node) -> Option<&Node> {
    job.as_mapping()?
        .iter()
        .find(|(k, _)| k.as_scalar().is_some_and(|s| s.text == "extends"))
        .map(|(_, v)| v)
}

struct Resolver<'a, 'r> {
    jobs: &'a HashMap<&'a str, &'a Node>,
    /// Jobs already resolved, without their `extends:` key, with how many
    /// levels of `extends` they sit on.
    done: HashMap<String, (Node, usize)>,
    report: &'r mut Report,
}

impl Resolver<'_, '_> {
    /// The job `name` with its parents merged in, and its depth (0 for a
    /// job without `extends`). `chain` holds the jobs being resolved below
    /// it, for cycle errors.
    fn resolve(&mut self, name: &str, chain: &mut Vec<String>) -> (Node, usize) {
        if let Some(done) = self.done.get(name) {
            return done.clone();
        }
        let Some(job) = self.jobs.get(name).copied() else {
            let empty = Node {
                location: Location::START,
                value: Value::Mapping(Rc::from(Vec::new())),
            };
            return (empty, 0);
        };
        let own = without_extends(job);
        let Some(extends) = extends_of(job) else {
            self.done.insert(name.to_owned(), (own.clone(), 0));
            return (own, 0);
        };
        let parents = self.parent_names(name, extends);
        chain.push(name.to_owned());
        let mut base: Option<Node> = None;
        let mut depth = 0;
        for parent in parents {
            if chain.contains(&parent) {
                let mut cycle = chain.clone();
                cycle.push(parent.clone());
                self.report.error(
                    extends.location,
                    format!(
                        "job {name}: circular dependency in extends: {}",
                        cycle.join(" -> ")
                    ),
                );
                continue;
            }
            if !self.jobs.contains_key(parent.as_str()) {
                let suggestion = suggest(&parent, self.jobs.keys().copied());
                self.report.error(
                    extends.location,
                    format!(
                        "job {name}: extends {parent}, which is not defined{}",
                        did_you_mean(suggestion)
                    ),
                );
                continue;
            }
            let (resolved, parent_depth) = self.resolve(&parent, chain);
            depth = depth.max(parent_depth + 1);
            base = Some(match base {
                Some(base) => deep_merge(&base, &resolved),
                None => resolved,
            });
        }
        chain.pop();
        if depth > MAX_EXTENDS_LEVELS {
            self.report.error(
                extends.location,
                format!(
                    "job {name}: extends nests {depth} levels deep, more than GitLab's \
                     limit of {MAX_EXTENDS_LEVELS}"
                ),
            );
        }
        let merged = match base {
            Some(base) => {
                let mut merged = deep_merge(&base, &own);
                // The job's own key (not a parent's) locates errors about it.
                merged.location = job.location;
                merged
            }
            // Nothing could be merged (errors reported): keep the job as
            // written so that it is not also reported as blank.
            None => job.clone(),
        };
        self.done.insert(name.to_owned(), (merged.clone(), depth));
        (merged, depth)
    }

    fn parent_names(&mut self, name: &str, extends: &Node) -> Vec<String> {
        if let Some(parent) = extends.as_str() {
            return vec![parent.to_owned()];
        }
        if let Some(items) = extends.as_sequence() {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(parent) => out.push(parent.to_owned()),
                    None => self.report.error(
                        item.location,
                        format!(
                            "job {name}: each entry of extends must be a job name, found {}",
                            item.describe()
                        ),
                    ),
                }
            }
            return out;
        }
        self.report.error(
            extends.location,
            format!(
                "job {name}: extends must be a job name or a list of job names, found {}",
                extends.describe()
            ),
        );
        Vec::new()
    }
}

fn without_extends(job: &Node) -> Node {
    let entries = job.as_mapping().unwrap_or_default();
    let kept: Vec<(Node, Node)> = entries
        .iter()
        .filter(|(k, _)| k.as_scalar().is_none_or(|s| s.text != "extends"))
        .cloned()
        .collect();
    Node {
        location: job.location,
        value: Value::Mapping(kept.into()),
    }
}
