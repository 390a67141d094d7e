//! `!reference [job, key, ...]` tags, resolved once `extends:` has been
//! applied (GitLab's order: includes, extends, then references).
//!
//! A reference is replaced by the value at that path of the merged
//! configuration. The value may hold references itself, followed up to 10
//! levels as GitLab does. A reference inside a script list becomes a nested
//! list, which the script reader flattens; inside `rules:` one level of
//! nesting is flattened the same way.

use super::tree::{Node, Value, MAX_NODES};
use super::Report;
use std::rc::Rc;

/// GitLab resolves `!reference` tags nested up to 10 levels deep.
const MAX_REFERENCE_NESTING: usize = 10;

/// Replaces every `!reference` in `root` (a mapping) by its target.
pub(crate) fn apply(report: &mut Report, root: Node) -> Node {
    if !contains_reference(&root, 0) {
        return root;
    }
    let mut resolver = Resolver {
        root: &root,
        report,
        budget: MAX_NODES,
        exhausted: false,
        too_deep: false,
    };
    resolver.walk(&root, 0)
}

fn contains_reference(node: &Node, depth: usize) -> bool {
    // The tree is at most MAX_DEPTH deep; the bound only guards the stack.
    if depth > super::tree::MAX_DEPTH {
        return false;
    }
    match &node.value {
        Value::Reference(_) => true,
        Value::Scalar(_) => false,
        Value::Sequence(items) => items.iter().any(|n| contains_reference(n, depth + 1)),
        Value::Mapping(entries) => entries
            .iter()
            .any(|(_, v)| contains_reference(v, depth + 1)),
    }
}

struct Resolver<'a, 'r> {
    root: &'a Node,
    report: &'r mut Report,
    /// Nodes that resolution may still create; references to large values
    /// from many places would otherwise multiply the tree.
    budget: usize,
    exhausted: bool,
    too_deep: bool,
}

impl Resolver<'_, '_> {
    /// Copies `node` with its references resolved. `level` is how many
    /// references were followed to reach it.
    fn walk(&mut self, node: &Node, level: usize) -> Node {
        match &node.value {
            Value::Scalar(_) => node.clone(),
            Value::Sequence(items) => {
                if !items.iter().any(|n| contains_reference(n, 0)) {
                    return node.clone();
                }
                let items: Vec<Node> = items.iter().map(|n| self.walk(n, level)).collect();
                Node {
                    location: node.location,
                    value: Value::Sequence(items.into()),
                }
            }
            Value::Mapping(entries) => {
                if !entries.iter().any(|(_, v)| contains_reference(v, 0)) {
                    return node.clone();
                }
                let entries: Vec<(Node, Node)> = entries
                    .iter()
                    .map(|(k, v)| (k.clone(), self.walk(v, level)))
                    .collect();
                Node {
                    location: node.location,
                    value: Value::Mapping(entries.into()),
                }
            }
            Value::Reference(path) => self.follow(node, path, level),
        }
    }

    fn follow(&mut self, node: &Node, path: &Rc<[Node]>, level: usize) -> Node {
        let empty = Node {
            location: node.location,
            value: Value::Sequence(Rc::from(Vec::new())),
        };
        if level >= MAX_REFERENCE_NESTING {
            // Reported once: every job reaching the same chain would repeat it.
            if !self.too_deep {
                self.too_deep = true;
                self.report.error(
                    node.location,
                    format!(
                        "!reference tags nest deeper than GitLab's limit of \
                         {MAX_REFERENCE_NESTING} levels"
                    ),
                );
            }
            return empty;
        }
        let mut names = Vec::with_capacity(path.len());
        for item in path.iter() {
            match item.as_scalar() {
                Some(scalar) => names.push(scalar.text.clone()),
                None => {
                    self.report.error(
                        item.location,
                        format!(
                            "!reference path entries must be names, found {}",
                            item.describe()
                        ),
                    );
                    return empty;
                }
            }
        }
        if names.is_empty() {
            self.report.error(
                node.location,
                "!reference needs a path such as [job, key]".to_owned(),
            );
            return empty;
        }
        let shown = format!("!reference [{}]", names.join(", "));
        let mut target = self.root;
        for (depth, name) in names.iter().enumerate() {
            let found = target.as_mapping().and_then(|entries| {
                entries
                    .iter()
                    .find(|(k, _)| k.as_scalar().is_some_and(|s| &s.text == name))
                    .map(|(_, v)| v)
            });
            match found {
                Some(next) => target = next,
                None => {
                    let message = if depth == 0 {
                        format!("{shown}: job {name} is not defined")
                    } else {
                        format!("{shown}: {} has no key {name}", names[..depth].join(":"))
                    };
                    self.report.error(node.location, message);
                    return empty;
                }
            }
        }
        let size = size(target, self.budget);
        if size >= self.budget {
            if !self.exhausted {
                self.report.error(
                    node.location,
                    format!("!reference tags expand the file to more than {MAX_NODES} YAML nodes; refusing to load it"),
                );
                self.exhausted = true;
            }
            return empty;
        }
        self.budget -= size;
        let target = target.clone();
        let mut resolved = self.walk(&target, level + 1);
        // Errors about the value as a whole point at the tag that put it here.
        resolved.location = node.location;
        resolved
    }
}

/// Nodes under `node`, counting shared subtrees each time they appear;
/// stops counting at `limit`.
fn size(node: &Node, limit: usize) -> usize {
    let mut total = 1usize;
    let children: Box<dyn Iterator<Item = &Node>> = match &node.value {
        Value::Scalar(_) => return 1,
        Value::Sequence(items) | Value::Reference(items) => Box::new(items.iter()),
        Value::Mapping(entries) => Box::new(entries.iter().flat_map(|(k, v)| [k, v])),
    };
    for child in children {
        total = total.saturating_add(size(child, limit - total.min(limit)));
        if total >= limit {
            return limit;
        }
    }
    total
}
