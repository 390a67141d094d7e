//! The located YAML tree: saphyr-parser's event stream turned into nodes that
//! each know their line and column, with aliases expanded, `<<` merge keys
//! applied and hard limits on size and depth.
//!
//! We build this ourselves instead of using saphyr's `MarkedYaml` loader
//! because we need, together: spans on every node including aliased ones, the
//! scalar's text exactly as written (`1.10` stays `1.10`), YAML 1.1 merge keys
//! (saphyr implements YAML 1.2, which has none), duplicate-key detection, and
//! limit errors located where the limit was crossed.
//!
//! This module owns YAML structure only; it knows nothing of GitLab keywords.

use super::scalar::resolve_plain;
use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};
use std::rc::Rc;

/// Most nodes a document may expand to once aliases are resolved. A real
/// pipeline has a few thousand; this refuses "billion laughs" documents long
/// before they cost real time or memory.
pub(crate) const MAX_NODES: usize = 1_000_000;

/// Deepest nesting of collections accepted. Pipelines nest five or six deep.
pub(crate) const MAX_DEPTH: usize = 128;

/// A 1-based line and column (in characters) in one of the files read for
/// a pipeline: `file` indexes the parse's file table (0 is the main file),
/// so errors in included files point into those files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Location {
    pub file: usize,
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub(crate) const START: Location = Location {
        file: 0,
        line: 1,
        column: 1,
    };

    pub(crate) fn start_of(file: usize) -> Location {
        Location {
            file,
            ..Location::START
        }
    }

    fn of(span: &Span, file: usize) -> Location {
        Location {
            file,
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// A problem found while building the tree, before any keyword is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeError {
    pub location: Location,
    pub message: String,
}

/// One YAML node. Children are reference-counted so that expanding an alias
/// or a merge key costs one pointer, not a copy of the subtree: the node
/// budget bounds the work done walking the tree, and memory stays at the size
/// of the text.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub location: Location,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Scalar(Rc<Scalar>),
    Sequence(Rc<[Node]>),
    Mapping(Rc<[(Node, Node)]>),
    /// A `!reference [job, key, ...]` sequence, resolved by `reference.rs`
    /// once `extends:` is applied; none is left when keywords are read.
    Reference(Rc<[Node]>),
}

/// A scalar as written, plus how YAML resolves its type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scalar {
    /// The text after YAML unescaping and folding; for a plain scalar this is
    /// the source text itself.
    pub text: String,
    pub kind: ScalarKind,
    /// Unquoted and not a block scalar: only a plain `<<` is a merge key.
    pub plain: bool,
}

/// The type a scalar resolves to. Plain scalars are resolved as GitLab's YAML
/// loader (Ruby's Psych, YAML 1.1) does for the types pipelines use: `yes`,
/// `on` and friends are booleans; quoted and block scalars are strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScalarKind {
    Null,
    Bool(bool),
    Integer,
    Float,
    String,
}

impl ScalarKind {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            ScalarKind::Null => "null",
            ScalarKind::Bool(_) => "boolean",
            ScalarKind::Integer => "integer",
            ScalarKind::Float => "number",
            ScalarKind::String => "string",
        }
    }
}

impl Node {
    /// What the node is, for "found X" in error messages.
    pub(crate) fn describe(&self) -> &'static str {
        match &self.value {
            Value::Scalar(scalar) => scalar.kind.describe(),
            Value::Sequence(_) => "list",
            Value::Mapping(_) => "mapping",
            Value::Reference(_) => "!reference",
        }
    }

    pub(crate) fn as_scalar(&self) -> Option<&Scalar> {
        match &self.value {
            Value::Scalar(scalar) => Some(scalar),
            _ => None,
        }
    }

    /// The text of a scalar that resolves to a string.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(scalar) if scalar.kind == ScalarKind::String => Some(&scalar.text),
            _ => None,
        }
    }

    pub(crate) fn as_mapping(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Mapping(entries) => Some(entries),
            _ => None,
        }
    }

    pub(crate) fn as_sequence(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Sequence(items) => Some(items),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s) if s.kind == ScalarKind::Null)
    }
}

/// Parses the first document of `text` into a tree. `Ok(None)` is an empty
/// stream. Non-fatal problems (duplicate keys, bad merge values, unsupported
/// tags) come back in the error list alongside the tree; a YAML syntax error
/// or a crossed limit stops the build and returns only the errors.
///
/// `file` numbers the file within the parse (for locations); `used` counts
/// the nodes the files read before it created, so the node limit holds for
/// all of them together and 150 included files cannot each cost it whole.
pub(crate) fn parse_file(
    text: &str,
    file: usize,
    used: &mut usize,
) -> Result<(Option<Node>, Vec<TreeError>), Vec<TreeError>> {
    let mut builder = Builder {
        file,
        total: *used,
        ..Builder::default()
    };
    let result = parse_with(&mut builder, text);
    *used = builder.total;
    result
}

fn parse_with(
    builder: &mut Builder,
    text: &str,
) -> Result<(Option<Node>, Vec<TreeError>), Vec<TreeError>> {
    let mut parser = Parser::new_from_str(text);
    let mut documents = 0usize;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|error| vec![scan_error(&error, text, builder.file)])?;
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    // GitLab reads one document (plus a `spec:` header we do not support).
                    builder.errors.push(TreeError {
                        location: Location::of(&span, builder.file),
                        message: "a pipeline file holds one YAML document; found a second one"
                            .to_owned(),
                    });
                    break;
                }
            }
            other => {
                if let Err(error) = builder.on_event(other, span) {
                    builder.errors.push(error);
                    return Err(std::mem::take(&mut builder.errors));
                }
            }
        }
    }
    Ok((builder.root.take(), std::mem::take(&mut builder.errors)))
}

fn scan_error(error: &ScanError, text: &str, file: usize) -> TreeError {
    let marker = error.marker();
    let message = match alias_name_at(text, marker.index()) {
        // saphyr's message does not say which alias it could not resolve.
        Some(name) if error.info().ends_with("unknown anchor") => {
            format!("invalid YAML: unknown anchor *{name}")
        }
        _ => format!("invalid YAML: {}", error.info()),
    };
    TreeError {
        location: Location {
            file,
            line: marker.line(),
            column: marker.col() + 1,
        },
        message,
    }
}

/// The name of the alias (`*name`) starting at character `index` of `text`.
fn alias_name_at(text: &str, index: usize) -> Option<String> {
    let mut chars = text.chars().skip(index);
    if chars.next() != Some('*') {
        return None;
    }
    let name: String = chars
        .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | '[' | ']' | '{' | '}'))
        .collect();
    (!name.is_empty()).then_some(name)
}

/// A collection under construction.
enum Open {
    Sequence {
        location: Location,
        anchor: usize,
        items: Vec<Node>,
        size: usize,
        reference: bool,
    },
    Mapping {
        location: Location,
        anchor: usize,
        key: Option<Node>,
        entries: Vec<(Node, Node)>,
        size: usize,
    },
}

#[derive(Default)]
struct Builder {
    file: usize,
    stack: Vec<Open>,
    /// Finished anchored nodes by saphyr's anchor id, with their expanded size.
    anchors: std::collections::HashMap<usize, (Node, usize)>,
    /// Nodes created so far, counting each alias as the size of its target.
    total: usize,
    root: Option<Node>,
    errors: Vec<TreeError>,
}

impl Builder {
    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<(), TreeError> {
        let location = Location::of(&span, self.file);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let kind = self.resolve(&text, style, tag.as_deref(), location);
                let node = Node {
                    location,
                    value: Value::Scalar(Rc::new(Scalar {
                        text: text.into_owned(),
                        kind,
                        plain: style == ScalarStyle::Plain,
                    })),
                };
                self.count(1, location)?;
                self.finish(node, anchor, 1)
            }
            Event::Alias(id) => {
                let Some((node, size)) = self.anchors.get(&id).cloned() else {
                    // saphyr rejects unknown anchors, so this is an alias
                    // inside the node its anchor names.
                    return Err(TreeError {
                        location,
                        message: "invalid YAML: alias refers to a node that contains it".to_owned(),
                    });
                };
                self.count(size, location)?;
                self.finish(node, 0, size)
            }
            Event::SequenceStart(anchor, tag) => {
                self.open(location, tag.as_deref())?;
                self.stack.push(Open::Sequence {
                    location,
                    anchor,
                    items: Vec::new(),
                    size: 1,
                    reference: tag.as_deref().is_some_and(is_reference),
                });
                Ok(())
            }
            Event::MappingStart(anchor, tag) => {
                self.open(location, tag.as_deref())?;
                self.refuse_reference_on(tag.as_deref(), location, "a mapping");
                self.stack.push(Open::Mapping {
                    location,
                    anchor,
                    key: None,
                    entries: Vec::new(),
                    size: 1,
                });
                Ok(())
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Open::Sequence {
                    location,
                    anchor,
                    items,
                    size,
                    reference,
                }) => {
                    let node = Node {
                        location,
                        value: if reference {
                            Value::Reference(items.into())
                        } else {
                            Value::Sequence(items.into())
                        },
                    };
                    self.finish(node, anchor, size)
                }
                _ => Err(unbalanced(location)),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Open::Mapping {
                    location,
                    anchor,
                    entries,
                    size,
                    ..
                }) => {
                    let entries = self.merge_and_check(entries);
                    let node = Node {
                        location,
                        value: Value::Mapping(entries.into()),
                    };
                    self.finish(node, anchor, size)
                }
                _ => Err(unbalanced(location)),
            },
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => Ok(()),
            Event::StreamEnd | Event::DocumentStart(_) => Ok(()),
        }
    }

    fn open(&mut self, location: Location, tag: Option<&Tag>) -> Result<(), TreeError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(TreeError {
                location,
                message: format!("YAML nesting is deeper than the limit of {MAX_DEPTH} levels"),
            });
        }
        self.check_tag(tag, location);
        self.count(1, location)
    }

    fn count(&mut self, nodes: usize, location: Location) -> Result<(), TreeError> {
        self.total = self.total.saturating_add(nodes);
        if self.total > MAX_NODES {
            return Err(TreeError {
                location,
                message: format!(
                    "document expands to more than {MAX_NODES} YAML nodes \
                     (aliases nested too deeply?); refusing to load it"
                ),
            });
        }
        Ok(())
    }

    /// Hands a finished node to its parent (or makes it the root) and records
    /// its anchor.
    fn finish(&mut self, node: Node, anchor: usize, size: usize) -> Result<(), TreeError> {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Sequence {
                items, size: total, ..
            }) => {
                items.push(node);
                *total = total.saturating_add(size);
            }
            Some(Open::Mapping {
                key,
                entries,
                size: total,
                ..
            }) => {
                *total = total.saturating_add(size);
                match key.take() {
                    None => *key = Some(node),
                    Some(k) => entries.push((k, node)),
                }
            }
        }
        Ok(())
    }

    /// Tags other than YAML's own (`!!str`...) are application-defined; GitLab
    /// defines `!reference` on sequences (see [`Value::Reference`]).
    fn check_tag(&mut self, tag: Option<&Tag>, location: Location) {
        if let Some(tag) = tag {
            if !tag.is_yaml_core_schema() && !is_reference(tag) {
                self.errors.push(TreeError {
                    location,
                    message: format!(
                        "YAML tag {}{} is not supported by Osprey yet",
                        tag.handle, tag.suffix
                    ),
                });
            }
        }
    }

    fn resolve(
        &mut self,
        text: &str,
        style: ScalarStyle,
        tag: Option<&Tag>,
        location: Location,
    ) -> ScalarKind {
        self.check_tag(tag, location);
        self.refuse_reference_on(tag, location, "a scalar");
        if let Some(tag) = tag {
            if tag.is_yaml_core_schema() && tag.suffix == "str" {
                return ScalarKind::String;
            }
        }
        match style {
            ScalarStyle::Plain => resolve_plain(text),
            ScalarStyle::SingleQuoted
            | ScalarStyle::DoubleQuoted
            | ScalarStyle::Literal
            | ScalarStyle::Folded => ScalarKind::String,
        }
    }

    /// Applies `<<` merge keys and reports duplicate and non-scalar keys.
    ///
    /// Merge semantics are YAML 1.1's: keys written in the mapping win over
    /// merged ones, and among merged sources the earlier wins. Merged entries
    /// take the place of the `<<` entry, so order (of jobs, of variables)
    /// follows the text.
    fn merge_and_check(&mut self, entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
        let mut explicit: std::collections::HashMap<String, Location> =
            std::collections::HashMap::new();
        for (key, _) in &entries {
            if is_merge_key(key) {
                continue;
            }
            match key.as_scalar() {
                Some(scalar) => {
                    if let Some(first) = explicit.get(&scalar.text) {
                        self.errors.push(TreeError {
                            location: key.location,
                            message: format!(
                                "duplicate key {} (first defined at line {})",
                                scalar.text, first.line
                            ),
                        });
                    } else {
                        explicit.insert(scalar.text.clone(), key.location);
                    }
                }
                None => self.errors.push(TreeError {
                    location: key.location,
                    message: format!("mapping keys must be scalars, found {}", key.describe()),
                }),
            }
        }
        if !entries.iter().any(|(key, _)| is_merge_key(key)) {
            return entries;
        }
        let mut seen: std::collections::HashSet<String> = explicit.into_keys().collect();
        let mut merged = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            if !is_merge_key(&key) {
                merged.push((key, value));
                continue;
            }
            let sources: Vec<Node> = match &value.value {
                Value::Mapping(_) => vec![value.clone()],
                Value::Sequence(items) => items.to_vec(),
                Value::Scalar(_) | Value::Reference(_) => {
                    self.errors.push(merge_error(&value));
                    continue;
                }
            };
            for source in sources {
                let Some(source_entries) = source.as_mapping() else {
                    self.errors.push(merge_error(&source));
                    continue;
                };
                for (k, v) in source_entries {
                    if let Some(text) = k.as_scalar().map(|s| s.text.clone()) {
                        if seen.insert(text) {
                            merged.push((k.clone(), v.clone()));
                        }
                    }
                }
            }
        }
        merged
    }
}

impl Builder {
    fn refuse_reference_on(&mut self, tag: Option<&Tag>, location: Location, found: &str) {
        if tag.is_some_and(is_reference) {
            self.errors.push(TreeError {
                location,
                message: format!("!reference takes a list such as [job, key], found {found}"),
            });
        }
    }
}

/// GitLab's `!reference` tag (primary handle `!`, suffix `reference`).
fn is_reference(tag: &Tag) -> bool {
    tag.handle == "!" && tag.suffix == "reference"
}

fn is_merge_key(key: &Node) -> bool {
    // A quoted '<<' is an ordinary string key; only the plain one merges.
    matches!(&key.value, Value::Scalar(s) if s.plain && s.text == "<<")
}

fn merge_error(node: &Node) -> TreeError {
    TreeError {
        location: node.location,
        message: format!(
            "merge key << takes a mapping or a list of mappings, found {}",
            node.describe()
        ),
    }
}

fn unbalanced(location: Location) -> TreeError {
    TreeError {
        location,
        message: "invalid YAML: unbalanced collection end".to_owned(),
    }
}
