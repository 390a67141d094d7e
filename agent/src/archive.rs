//! Extracting a tar (a dependency's artifacts, a restored cache) into the
//! project dir so that it can reach nothing else: no entry or link ends
//! outside the project dir or inside its `.git/`, no setuid, setgid or sticky
//! bit survives, and only regular files, directories, symlinks and hard links
//! to files of the same archive are written. Collection is in
//! [`crate::artifacts`]; this module only reads archives. Blocking.
//!
//! Each entry's path is resolved the way the kernel would resolve it once the
//! earlier entries are on disk: every symlink on the way is followed, whether
//! it came from this archive or was already in the project dir (a tracked
//! link of the repository, an earlier archive). A lexical check of each link
//! on its own is not enough: `d -> .` then `d/e -> ..` are each harmless-
//! looking, together `e` points above the project dir. The whole archive is
//! checked before anything is written, so a hostile archive changes nothing.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Links followed while resolving one path before it is refused (Linux's own limit).
const MAX_LINK_HOPS: usize = 40;

/// The permission bits an extracted file or directory may keep: setuid,
/// setgid and sticky are stripped.
const MODE_MASK: u32 = 0o777;

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("archive entry {0:?} is outside the project dir")]
    HostileEntry(String),
    #[error("archive entry {0:?} is a link to outside the project dir")]
    HostileLink(String),
    /// GitLab never archives `.git/`, and nothing may write there: it is how
    /// a job would configure a git process.
    #[error("archive entry {0:?} is inside .git/, which archives never hold")]
    GitDir(String),
    #[error("archive entry {entry:?} is a {kind}, which archives may not hold")]
    Unsupported { entry: String, kind: &'static str },
    #[error(
        "archive entry {0:?} is a hard link to something other than a file extracted before it"
    )]
    BadHardLink(String),
    #[error("archive entry {0:?} would replace a directory or pass through a file")]
    Conflict(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What an earlier entry of the archive left at a (resolved) path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Symlink(PathBuf),
}

/// What one entry will do, at its resolved path relative to the project dir.
#[derive(Debug)]
enum Action {
    Dir {
        mode: u32,
    },
    File,
    Symlink(PathBuf),
    HardLink(PathBuf),
    /// The project dir itself (`./`), or a pax global header: nothing to write.
    Skip,
}

#[derive(Debug)]
struct Planned {
    raw: PathBuf,
    at: PathBuf,
    action: Action,
}

/// Why a path could not be resolved inside the project dir.
enum Escape {
    Outside,
    TooManyLinks,
    ThroughFile,
}

/// The project dir as it will be after the entries planned so far: the
/// archive's own entries over what is on disk.
struct Tree<'a> {
    root: &'a Path,
    overlay: HashMap<PathBuf, Node>,
}

impl Tree<'_> {
    fn node(&self, at: &Path) -> Option<Node> {
        if let Some(node) = self.overlay.get(at) {
            return Some(node.clone());
        }
        let path = self.root.join(at);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        Some(if meta.file_type().is_symlink() {
            // An unreadable link is taken as leading outside.
            Node::Symlink(std::fs::read_link(&path).unwrap_or_else(|_| PathBuf::from("/")))
        } else if meta.is_dir() {
            Node::Dir
        } else {
            Node::File
        })
    }

    /// `path` (relative to the root) with `..` and every symlink on the way
    /// applied, as a path under the root; its last component is followed
    /// only with `follow_last`.
    fn resolve(&self, path: &Path, follow_last: bool) -> Result<PathBuf, Escape> {
        let mut pending: Vec<OsString> = Vec::new();
        push_components(&mut pending, path)?;
        let mut resolved = PathBuf::new();
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            if component == ".." {
                if !resolved.pop() {
                    return Err(Escape::Outside);
                }
                continue;
            }
            resolved.push(&component);
            let last = pending.is_empty();
            if last && !follow_last {
                break;
            }
            match self.node(&resolved) {
                Some(Node::Symlink(target)) => {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return Err(Escape::TooManyLinks);
                    }
                    resolved.pop();
                    push_components(&mut pending, &target)?;
                }
                Some(Node::File) if !last => return Err(Escape::ThroughFile),
                _ => {}
            }
        }
        Ok(resolved)
    }
}

impl Tree<'_> {
    /// Each link of the archive, resolved in the tree the whole archive
    /// leaves: a link checked when it was planned can lead outside through
    /// a later one (`l -> a/../x`, then `a -> .`).
    fn check_links(&self) -> Result<(), ExtractError> {
        for (at, node) in &self.overlay {
            let Node::Symlink(target) = node else {
                continue;
            };
            let from = at.parent().unwrap_or(Path::new("")).join(target);
            match self.resolve(&from, true) {
                Ok(dest) if !in_git_dir(&dest) => {}
                _ => return Err(ExtractError::HostileLink(at.display().to_string())),
            }
        }
        Ok(())
    }
}

/// Pushes the components of a relative `path` onto `pending` (a stack: the
/// first component ends on top). Absolute paths lead outside.
fn push_components(pending: &mut Vec<OsString>, path: &Path) -> Result<(), Escape> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => parts.push(name.to_owned()),
            Component::ParentDir => parts.push(OsString::from("..")),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(Escape::Outside),
        }
    }
    pending.extend(parts.into_iter().rev());
    Ok(())
}

fn in_git_dir(at: &Path) -> bool {
    at.components().next() == Some(Component::Normal(".git".as_ref()))
}

/// Extracts the tar at `archive` into `project_dir`; returns the number of
/// entries written. Refuses the whole archive, before writing anything, when
/// one entry breaks a rule of this module.
pub fn extract(archive: &Path, project_dir: &Path) -> Result<usize, ExtractError> {
    let root = project_dir.canonicalize().map_err(io(project_dir))?;
    let open = || std::fs::File::open(archive).map(tar::Archive::new);
    let mut checked = open().map_err(io(archive))?;
    let mut tree = Tree {
        root: &root,
        overlay: HashMap::new(),
    };
    let mut plan = Vec::new();
    for entry in checked.entries().map_err(io(archive))? {
        let entry = entry.map_err(io(archive))?;
        plan.push(plan_entry(&mut tree, &entry).map_err(|error| match error {
            PlanError::Io(source) => ExtractError::Io {
                path: archive.to_owned(),
                source,
            },
            PlanError::Refused(refused) => refused,
        })?);
    }
    tree.check_links()?;
    let mut reader = open().map_err(io(archive))?;
    // Only the permission bits: setuid, setgid and sticky are dropped.
    reader.set_preserve_permissions(false);
    reader.set_overwrite(true);
    let mut dirs = Vec::new();
    let mut written = 0;
    let mut entries = reader.entries().map_err(io(archive))?;
    for planned in &plan {
        let mut entry = entries
            .next()
            .ok_or_else(|| changed(archive))?
            .map_err(io(archive))?;
        if entry.path().map_err(io(archive))? != planned.raw {
            return Err(changed(archive));
        }
        if write_entry(&root, &mut entry, planned, &mut dirs)? {
            written += 1;
        }
    }
    // Last, deepest first, so that a read-only directory was writable while
    // its entries went in.
    for (dir, mode) in dirs.iter().rev() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode)).map_err(io(dir))?;
    }
    Ok(written)
}

fn changed(archive: &Path) -> ExtractError {
    ExtractError::Io {
        path: archive.to_owned(),
        source: std::io::Error::other("archive changed while it was extracted"),
    }
}

enum PlanError {
    Io(std::io::Error),
    Refused(ExtractError),
}

impl From<std::io::Error> for PlanError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

/// Checks one entry against the tree so far and records what it will leave.
fn plan_entry<R: std::io::Read>(
    tree: &mut Tree<'_>,
    entry: &tar::Entry<'_, R>,
) -> Result<Planned, PlanError> {
    use tar::EntryType as T;
    let raw = entry.path()?.into_owned();
    let name = raw.display().to_string();
    let refuse = |error: ExtractError| Err(PlanError::Refused(error));
    let kind = entry.header().entry_type();
    // As tar itself does, an old-style entry whose name ends in `/` is a directory.
    let is_dir = kind == T::Directory || (kind == T::Regular && entry.path_bytes().ends_with(b"/"));
    let unsupported = |kind| {
        refuse(ExtractError::Unsupported {
            entry: name.clone(),
            kind,
        })
    };
    match kind {
        _ if is_dir => {}
        T::Regular | T::Continuous | T::Symlink | T::Link => {}
        T::XGlobalHeader => {
            return Ok(Planned {
                raw,
                at: PathBuf::new(),
                action: Action::Skip,
            })
        }
        T::Char => return unsupported("character device"),
        T::Block => return unsupported("block device"),
        T::Fifo => return unsupported("fifo"),
        T::GNUSparse => return unsupported("sparse file"),
        _ => return unsupported("special entry"),
    }
    let Ok(at) = tree.resolve(&raw, false) else {
        return refuse(ExtractError::HostileEntry(name));
    };
    if at.as_os_str().is_empty() {
        if is_dir {
            return Ok(Planned {
                raw,
                at,
                action: Action::Skip,
            });
        }
        return refuse(ExtractError::HostileEntry(name));
    }
    if in_git_dir(&at) {
        return refuse(ExtractError::GitDir(name));
    }
    if !is_dir && tree.node(&at) == Some(Node::Dir) {
        return refuse(ExtractError::Conflict(name));
    }
    let (action, node) = if is_dir {
        let mode = entry.header().mode()? & MODE_MASK;
        (Action::Dir { mode }, Node::Dir)
    } else if kind == T::Symlink {
        let Some(target) = entry.link_name()? else {
            return refuse(ExtractError::HostileLink(name));
        };
        let target = target.into_owned();
        let from = at.parent().unwrap_or(Path::new("")).join(&target);
        match tree.resolve(&from, true) {
            Ok(dest) if !in_git_dir(&dest) && !target.is_absolute() => {}
            _ => return refuse(ExtractError::HostileLink(name)),
        }
        (Action::Symlink(target.clone()), Node::Symlink(target))
    } else if kind == T::Link {
        let Some(target) = entry.link_name()? else {
            return refuse(ExtractError::BadHardLink(name));
        };
        // A hard link's target is named from the archive's root.
        let source = match tree.resolve(&target, false) {
            Ok(source) if tree.overlay.get(&source) == Some(&Node::File) => source,
            _ => return refuse(ExtractError::BadHardLink(name)),
        };
        (Action::HardLink(source), Node::File)
    } else {
        (Action::File, Node::File)
    };
    // Directories the entry implies are directories from now on: a later
    // link there would replace one.
    for ancestor in at.ancestors().skip(1) {
        if !ancestor.as_os_str().is_empty() {
            tree.overlay.entry(ancestor.to_owned()).or_insert(Node::Dir);
        }
    }
    tree.overlay.insert(at.clone(), node);
    Ok(Planned { raw, at, action })
}

/// Writes one planned entry; false when there was nothing to write.
fn write_entry<R: std::io::Read>(
    root: &Path,
    entry: &mut tar::Entry<'_, R>,
    planned: &Planned,
    dirs: &mut Vec<(PathBuf, u32)>,
) -> Result<bool, ExtractError> {
    if matches!(planned.action, Action::Skip) {
        return Ok(false);
    }
    let dst = root.join(&planned.at);
    let parent = dst.parent().unwrap_or(root);
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    // The plan resolved every link on the way; this is the kernel's view of
    // the same, in case the disk changed under us.
    let real_parent = parent.canonicalize().map_err(io(parent))?;
    if !real_parent.starts_with(root) {
        return Err(ExtractError::HostileEntry(
            planned.raw.display().to_string(),
        ));
    }
    let existing = std::fs::symlink_metadata(&dst).ok();
    let existing_dir = existing.as_ref().is_some_and(|meta| meta.is_dir());
    if let Action::Dir { mode } = planned.action {
        if !existing_dir {
            if existing.is_some() {
                std::fs::remove_file(&dst).map_err(io(&dst))?;
            }
            std::fs::create_dir(&dst).map_err(io(&dst))?;
        }
        dirs.push((dst, mode));
        return Ok(true);
    }
    if existing_dir {
        return Err(ExtractError::Conflict(planned.raw.display().to_string()));
    }
    if existing.is_some() {
        std::fs::remove_file(&dst).map_err(io(&dst))?;
    }
    match &planned.action {
        Action::File => {
            entry.unpack(&dst).map_err(io(&dst))?;
        }
        Action::Symlink(target) => std::os::unix::fs::symlink(target, &dst).map_err(io(&dst))?,
        Action::HardLink(source) => {
            std::fs::hard_link(root.join(source), &dst).map_err(io(&dst))?;
        }
        Action::Dir { .. } | Action::Skip => {}
    }
    Ok(true)
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
