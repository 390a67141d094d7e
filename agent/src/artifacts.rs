//! Artifact and cache archives on the agent's disk: collecting a job's
//! `paths` (and with `untracked` the files its checkout did not track) into
//! one tar, paths relative to the project dir. Nothing outside the project
//! dir and nothing under its `.git/` is ever collected. Extraction is
//! [`crate::archive`]; transfers to and from the coordinator are the
//! client's; this module is blocking file work, called through
//! `spawn_blocking`.
//!
//! "Untracked" is decided without git: once the job's script has run, the
//! project's `.git/` is the job's to write (Docker bind-mounts the project
//! dir; an artifact may carry one), and a git process reading it would run
//! whatever its `core.fsmonitor`, hooks or pager say, as the agent's user. So
//! the tracked paths are listed at checkout, while `.git/` is still the
//! agent's own ([`TrackedFiles`]), and untracked is every other file found
//! by walking the project dir.

use crate::client::ArchiveFile;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Running size + sha256 of a byte stream.
#[derive(Default)]
pub struct Sha256Writer {
    hasher: Sha256,
    size: u64,
}

impl Sha256Writer {
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.size += data.len() as u64;
    }

    /// Size and lower-case hex digest.
    pub fn finish(self) -> (u64, String) {
        (self.size, hex::encode(self.hasher.finalize()))
    }
}

/// Size and sha256 of the first `limit` bytes of a file (all of it for `None`).
pub fn digest_file(path: &Path, limit: Option<u64>) -> std::io::Result<(u64, String)> {
    let file = std::fs::File::open(path)?;
    let mut reader: Box<dyn Read> = match limit {
        Some(limit) => Box::new(file.take(limit)),
        None => Box::new(file),
    };
    let mut digest = Sha256Writer::default();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    Ok(digest.finish())
}

/// What collection found.
#[derive(Debug)]
pub struct Collected {
    /// `None` when no pattern matched anything: nothing to upload.
    pub archive: Option<ArchiveFile>,
    /// Relative paths stored, in order.
    pub entries: Vec<PathBuf>,
    /// Human-readable warnings for the job log (refused or unmatched patterns).
    pub warnings: Vec<String>,
}

/// Collects `patterns` (files, folders recursively, globs; relative to
/// `project_dir`) into a tar at `archive_path`. A pattern or match outside the
/// project dir (absolute, `..`, or through a symlink) is refused with a
/// warning, as GitLab does; symlinks inside are stored as links.
pub fn collect(
    project_dir: &Path,
    patterns: &[String],
    archive_path: &Path,
) -> Result<Collected, ArtifactError> {
    collect_selection(
        project_dir,
        &Selection {
            patterns: patterns.to_vec(),
            ..Selection::default()
        },
        archive_path,
    )
}

/// What `artifacts:` asks for, as [`collect_selection`] takes it.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `paths`: files, folders and globs.
    pub patterns: Vec<String>,
    /// Exact relative paths (the untracked files), never read as globs.
    pub literal: Vec<String>,
    /// `exclude`: globs over relative paths (`*` stops at `/`, `**` does
    /// not); an entry goes when it or a folder above it matches.
    pub exclude: Vec<String>,
}

/// As [`collect`], with literal paths and exclusions (GitLab applies
/// `exclude` after `paths` and `untracked`). A bad exclude glob is a warning.
pub fn collect_selection(
    project_dir: &Path,
    selection: &Selection,
    archive_path: &Path,
) -> Result<Collected, ArtifactError> {
    let root = project_dir.canonicalize().map_err(io(project_dir))?;
    let mut warnings = Vec::new();
    let mut files = BTreeSet::new();
    for literal in &selection.literal {
        let path = root.join(literal);
        if is_relative_inside(Path::new(literal)) && path.symlink_metadata().is_ok() {
            add_match(&root, &path, &mut files, &mut warnings);
        }
    }
    for pattern in &selection.patterns {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            continue;
        }
        if !is_relative_inside(Path::new(pattern)) {
            warnings.push(format!("{pattern}: refused: outside the project dir"));
            continue;
        }
        let matches = expand(&root, pattern);
        if matches.is_empty() {
            warnings.push(format!("{pattern}: no matching files"));
        }
        for found in matches {
            add_match(&root, &found, &mut files, &mut warnings);
        }
    }
    let excluded = exclude_matcher(&selection.exclude, &mut warnings);
    if let Some(excluded) = &excluded {
        let before = files.len();
        files.retain(|relative| !relative.ancestors().any(|path| excluded.is_match(path)));
        if before > files.len() {
            warnings.push(format!(
                "{} entries left out by artifacts:exclude",
                before - files.len()
            ));
        }
    }
    // GitLab never archives `.git/`: it would configure the git of whoever
    // extracts it.
    let before = files.len();
    let git_dir = root.join(".git");
    files.retain(|relative| {
        // A link into `.git/` is left out too: extraction would refuse it.
        let into_git = || {
            let path = root.join(relative);
            path.symlink_metadata()
                .is_ok_and(|meta| meta.file_type().is_symlink())
                && path
                    .canonicalize()
                    .is_ok_and(|real| real.starts_with(&git_dir))
        };
        !in_git_dir(relative) && !into_git()
    });
    if before > files.len() {
        warnings.push(format!(
            "{} entries under .git/ left out: .git is never archived",
            before - files.len()
        ));
    }
    if files.is_empty() {
        return Ok(Collected {
            archive: None,
            entries: Vec::new(),
            warnings,
        });
    }
    let file = std::fs::File::create(archive_path).map_err(io(archive_path))?;
    let mut builder = tar::Builder::new(file);
    builder.follow_symlinks(false);
    for relative in &files {
        let full = root.join(relative);
        builder
            .append_path_with_name(&full, relative)
            .map_err(io(&full))?;
    }
    builder
        .into_inner()
        .and_then(|file| file.sync_all())
        .map_err(io(archive_path))?;
    let (size, sha256) = digest_file(archive_path, None).map_err(io(archive_path))?;
    Ok(Collected {
        archive: Some(ArchiveFile {
            path: archive_path.to_owned(),
            size,
            sha256,
        }),
        entries: files.into_iter().collect(),
        warnings,
    })
}

fn exclude_matcher(patterns: &[String], warnings: &mut Vec<String>) -> Option<globset::GlobSet> {
    if patterns.is_empty() {
        return None;
    }
    let mut builder = globset::GlobSetBuilder::new();
    for pattern in patterns {
        match globset::GlobBuilder::new(pattern.trim_end_matches('/'))
            .literal_separator(true)
            .build()
        {
            Ok(glob) => {
                builder.add(glob);
            }
            Err(error) => warnings.push(format!("exclude {pattern}: ignored: {error}")),
        }
    }
    builder.build().ok()
}

/// The paths the checked-out commit tracks, relative to the project dir:
/// what `git ls-tree -r --name-only HEAD` listed at checkout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackedFiles(HashSet<PathBuf>);

impl TrackedFiles {
    /// From `git ls-tree -r -z --name-only` output (NUL-separated paths).
    pub fn from_nul_separated(listing: &[u8]) -> Self {
        Self(
            listing
                .split(|byte| *byte == 0)
                .filter(|name| !name.is_empty())
                .map(|name| PathBuf::from(OsStr::from_bytes(name)))
                .collect(),
        )
    }

    pub fn contains(&self, relative: &Path) -> bool {
        self.0.contains(relative)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Every file (or symlink) under `project_dir` that `tracked` does not list,
/// relative to it: what GitLab's `artifacts:untracked` and `cache:untracked`
/// add, as `git ls-files --others` would list them. As GitLab says of both,
/// `.gitignore` does not apply: ignored files are included. Links are not
/// followed and `.git/` is not entered. Runs no process. Blocking.
pub fn untracked_files(project_dir: &Path, tracked: &TrackedFiles) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    let walk = walkdir::WalkDir::new(project_dir)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| !(entry.depth() == 1 && entry.file_name() == ".git"));
    for entry in walk {
        let entry = entry.map_err(|error| format!("cannot list untracked files: {error}"))?;
        if entry.file_type().is_dir() {
            continue;
        }
        let Ok(relative) = entry.path().strip_prefix(project_dir) else {
            continue;
        };
        if !tracked.contains(relative) {
            found.push(relative.to_string_lossy().into_owned());
        }
    }
    Ok(found)
}

fn in_git_dir(relative: &Path) -> bool {
    relative.components().next() == Some(Component::Normal(".git".as_ref()))
}

/// Paths `pattern` names under `root`: the glob's matches, or the path itself.
fn expand(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let has_glob = pattern.contains(['*', '?', '[']);
    if !has_glob {
        let path = root.join(pattern);
        return if path.symlink_metadata().is_ok() {
            vec![path]
        } else {
            Vec::new()
        };
    }
    let full = root.join(pattern);
    let Some(full) = full.to_str() else {
        return Vec::new();
    };
    let options = glob::MatchOptions {
        require_literal_separator: true,
        ..glob::MatchOptions::default()
    };
    match glob::glob_with(full, options) {
        Ok(paths) => paths.filter_map(Result::ok).collect(),
        Err(_) => Vec::new(),
    }
}

/// Adds one match (a file, a link, or a folder walked recursively).
fn add_match(root: &Path, found: &Path, files: &mut BTreeSet<PathBuf>, warnings: &mut Vec<String>) {
    // The match's parent must resolve inside the root: a symlinked folder on
    // the way would lead outside.
    let Some(relative) = resolved_relative(root, found) else {
        warnings.push(format!(
            "{}: refused: outside the project dir",
            found.display()
        ));
        return;
    };
    let is_real_dir = found
        .symlink_metadata()
        .map(|meta| meta.is_dir())
        .unwrap_or(false);
    if !is_real_dir {
        files.insert(relative);
        return;
    }
    for entry in walkdir::WalkDir::new(found).follow_links(false) {
        let Ok(entry) = entry else { continue };
        if let Ok(inner) = entry.path().strip_prefix(root) {
            files.insert(inner.to_owned());
        }
    }
}

/// `found` relative to `root` when its parent directory resolves inside `root`.
fn resolved_relative(root: &Path, found: &Path) -> Option<PathBuf> {
    let parent = found.parent()?.canonicalize().ok()?;
    let name = found.file_name()?;
    let relative = parent.strip_prefix(root).ok()?.join(name);
    is_relative_inside(&relative).then_some(relative)
}

/// True for a relative path without `..`, root or prefix components.
fn is_relative_inside(path: &Path) -> bool {
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|component| matches!(component, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("project");
        fs::create_dir_all(p.join("out/sub")).unwrap();
        fs::write(p.join("out/a.txt"), "a").unwrap();
        fs::write(p.join("out/sub/b.txt"), "b").unwrap();
        fs::write(p.join("x.log"), "x").unwrap();
        fs::write(p.join("y.log"), "y").unwrap();
        fs::write(p.join("keep.bin"), "k").unwrap();
        fs::write(dir.path().join("secret"), "s").unwrap();
        dir
    }

    fn names(collected: &Collected) -> Vec<String> {
        collected
            .entries
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    }

    #[test]
    fn exclude_applies_after_paths_and_literal_paths_are_not_globs() {
        let dir = tree();
        let project = dir.path().join("project");
        fs::write(project.join("odd[1].txt"), "o").unwrap();
        let selection = Selection {
            patterns: vec!["out/".into(), "*.log".into()],
            literal: vec!["odd[1].txt".into(), "../secret".into()],
            exclude: vec!["out/sub".into(), "y.*".into(), "[".into()],
        };
        let collected = collect_selection(&project, &selection, &dir.path().join("a.tar")).unwrap();
        assert_eq!(
            names(&collected),
            vec!["odd[1].txt", "out", "out/a.txt", "x.log"],
            "{:?}",
            collected.warnings
        );
        assert!(
            collected
                .warnings
                .iter()
                .any(|w| w.starts_with("exclude [: ignored")),
            "{:?}",
            collected.warnings
        );
        assert!(collected
            .warnings
            .iter()
            .any(|w| w == "3 entries left out by artifacts:exclude"));
    }

    #[test]
    fn untracked_files_are_those_git_does_not_track_ignored_ones_included() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let output = std::process::Command::new("git")
                .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(output.status.success(), "git {args:?}");
            output.stdout
        };
        git(&["init", "-q"]);
        fs::write(dir.path().join(".gitignore"), "*.tmp\n").unwrap();
        fs::create_dir(dir.path().join("src")).unwrap();
        fs::write(dir.path().join("src/tracked"), "t").unwrap();
        git(&["add", "."]);
        git(&["commit", "-qm", "init"]);
        let tracked =
            TrackedFiles::from_nul_separated(&git(&["ls-tree", "-r", "-z", "--name-only", "HEAD"]));
        assert_eq!(tracked.len(), 2);
        fs::create_dir(dir.path().join("new")).unwrap();
        fs::write(dir.path().join("new/file"), "n").unwrap();
        fs::write(dir.path().join("src/more"), "m").unwrap();
        fs::write(dir.path().join("scratch.tmp"), "s").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("new/link")).unwrap();
        let with_git = String::from_utf8(git(&["ls-files", "--others", "-z"])).unwrap();
        let mut with_git: Vec<&str> = with_git.split('\0').filter(|n| !n.is_empty()).collect();
        with_git.sort();

        // What a job could plant: nothing of it may run.
        let marker = dir.path().join("ran");
        fs::write(
            dir.path().join(".git/config"),
            format!("[core]\n\tfsmonitor = \"touch {}\"\n", marker.display()),
        )
        .unwrap();
        let files = untracked_files(dir.path(), &tracked).unwrap();
        assert_eq!(files, ["new/file", "new/link", "scratch.tmp", "src/more"]);
        assert_eq!(files, with_git, "the same list as git ls-files --others");
        assert!(!marker.exists());
    }

    #[test]
    fn dot_git_is_never_collected() {
        let dir = tree();
        let project = dir.path().join("project");
        fs::create_dir_all(project.join(".git/hooks")).unwrap();
        fs::write(project.join(".git/config"), "c").unwrap();
        fs::write(project.join(".git/hooks/pre-commit"), "h").unwrap();
        std::os::unix::fs::symlink(".git", project.join("g")).unwrap();
        let selection = Selection {
            patterns: vec![".git".into(), "*".into(), "g/config".into()],
            literal: vec![".git/config".into()],
            exclude: Vec::new(),
        };
        let collected = collect_selection(&project, &selection, &dir.path().join("a.tar")).unwrap();
        let names = names(&collected);
        assert!(names.iter().all(|n| !n.starts_with(".git")), "{names:?}");
        assert!(names.contains(&"x.log".to_owned()), "{names:?}");
        assert!(
            !names.contains(&"g".to_owned()),
            "a link into .git: {names:?}"
        );
        assert!(
            collected
                .warnings
                .iter()
                .any(|w| w.contains(".git is never archived")),
            "{:?}",
            collected.warnings
        );
    }

    #[test]
    fn collects_files_folders_and_globs() {
        let dir = tree();
        let project = dir.path().join("project");
        let archive = dir.path().join("a.tar");
        let patterns = ["out", "*.log", "keep.bin", "missing/*"].map(String::from);
        let collected = collect(&project, &patterns, &archive).unwrap();
        assert_eq!(
            names(&collected),
            [
                "keep.bin",
                "out",
                "out/a.txt",
                "out/sub",
                "out/sub/b.txt",
                "x.log",
                "y.log"
            ]
        );
        assert!(collected.warnings.iter().any(|w| w.contains("missing/*")));
        let info = collected.archive.unwrap();
        assert_eq!(
            digest_file(&archive, None).unwrap(),
            (info.size, info.sha256)
        );

        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        assert_eq!(crate::archive::extract(&archive, &target).unwrap(), 7);
        assert_eq!(
            fs::read_to_string(target.join("out/sub/b.txt")).unwrap(),
            "b"
        );
    }

    #[test]
    fn hostile_patterns_are_refused() {
        let dir = tree();
        let project = dir.path().join("project");
        std::os::unix::fs::symlink(dir.path(), project.join("escape")).unwrap();
        let secret = dir.path().join("secret").display().to_string();
        let patterns = [
            "../secret",
            secret.as_str(),
            "escape/secret",
            "out/../../secret",
        ]
        .map(String::from);
        let collected = collect(&project, &patterns, &dir.path().join("a.tar")).unwrap();
        assert!(collected.archive.is_none(), "{:?}", collected.entries);
        assert_eq!(collected.warnings.len(), 4, "{:?}", collected.warnings);
        assert!(collected.warnings.iter().all(|w| w.contains("refused")));
    }
}
