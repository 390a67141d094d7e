//! Artifact archives on the agent's disk: collecting a job's `artifacts:paths`
//! into one tar (paths relative to the project dir) and extracting the
//! archives of its dependencies. Both refuse anything outside the project dir.
//! Transfers to and from the coordinator are the client's; this module is
//! blocking file work, called through `spawn_blocking`.

use crate::client::ArchiveFile;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("archive entry {0:?} is outside the project dir")]
    HostileEntry(String),
    #[error("archive entry {0:?} is a link to outside the project dir")]
    HostileLink(String),
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

/// Files git does not track under `project_dir`, relative to it: what
/// GitLab's `artifacts:untracked` and `cache:untracked` add. As GitLab says of
/// both, `.gitignore` does not apply: ignored files are included. Blocking.
pub fn untracked_files(project_dir: &Path) -> Result<Vec<String>, String> {
    let output = std::process::Command::new("git")
        .args(["ls-files", "--others", "-z"])
        .current_dir(project_dir)
        .output()
        .map_err(|error| format!("cannot run git ls-files: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "git ls-files failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(output
        .stdout
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect())
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

/// Extracts the tar at `archive` into `project_dir`. Refuses (before writing
/// anything) an archive with an absolute or `..` path, or a link pointing outside.
pub fn extract(archive: &Path, project_dir: &Path) -> Result<usize, ArtifactError> {
    let open = || std::fs::File::open(archive).map(tar::Archive::new);
    // First pass: validate every entry, so a hostile archive changes nothing.
    let mut checked = open().map_err(io(archive))?;
    for entry in checked.entries().map_err(io(archive))? {
        let entry = entry.map_err(io(archive))?;
        let path = entry.path().map_err(io(archive))?.into_owned();
        if !is_relative_inside(&path) {
            return Err(ArtifactError::HostileEntry(path.display().to_string()));
        }
        if let Some(target) = entry.link_name().map_err(io(archive))? {
            let base = path.parent().unwrap_or(Path::new(""));
            if target.is_absolute() || !stays_inside(&base.join(&target)) {
                return Err(ArtifactError::HostileLink(path.display().to_string()));
            }
        }
    }
    let mut unpacked = 0;
    let mut archive_reader = open().map_err(io(archive))?;
    archive_reader.set_preserve_permissions(true);
    archive_reader.set_overwrite(true);
    for entry in archive_reader.entries().map_err(io(archive))? {
        let mut entry = entry.map_err(io(archive))?;
        // `unpack_in` also refuses to write through a symlink leading outside.
        if entry.unpack_in(project_dir).map_err(io(project_dir))? {
            unpacked += 1;
        }
    }
    Ok(unpacked)
}

/// True when a relative path, with `..` applied lexically, never climbs above its start.
fn stays_inside(path: &Path) -> bool {
    let mut depth: i64 = 0;
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
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
        let run = |args: &[&str]| {
            let status = std::process::Command::new("git")
                .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
                .args(args)
                .current_dir(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "git {args:?}");
        };
        run(&["init", "-q"]);
        fs::write(dir.path().join(".gitignore"), "*.tmp\n").unwrap();
        fs::write(dir.path().join("tracked"), "t").unwrap();
        run(&["add", "."]);
        run(&["commit", "-qm", "init"]);
        fs::create_dir(dir.path().join("new")).unwrap();
        fs::write(dir.path().join("new/file"), "n").unwrap();
        fs::write(dir.path().join("scratch.tmp"), "s").unwrap();
        let mut files = untracked_files(dir.path()).unwrap();
        files.sort();
        assert_eq!(files, vec!["new/file", "scratch.tmp"]);
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
        assert_eq!(extract(&archive, &target).unwrap(), 7);
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

    /// Writes a tar with one entry whose raw name is `name` (bypassing the
    /// builder's own checks, as a hostile archive would).
    fn raw_tar(path: &Path, name: &str, link: Option<&str>) {
        let mut header = tar::Header::new_gnu();
        let bytes = name.as_bytes();
        header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        header.set_size(if link.is_some() { 0 } else { 4 });
        header.set_mode(0o644);
        if let Some(link) = link {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        let mut builder = tar::Builder::new(fs::File::create(path).unwrap());
        let data: &[u8] = if link.is_some() { b"" } else { b"evil" };
        builder.append(&header, data).unwrap();
        builder.finish().unwrap();
    }

    #[test]
    fn extraction_refuses_escaping_entries() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("p");
        fs::create_dir(&project).unwrap();
        let archive = dir.path().join("evil.tar");
        for (name, link) in [
            ("../evil", None),
            ("a/../../evil", None),
            ("/tmp/osprey-evil-abs", None),
            ("link", Some("../../etc")),
            ("link", Some("/etc")),
        ] {
            raw_tar(&archive, name, link);
            let err = extract(&archive, &project).unwrap_err();
            assert!(
                matches!(
                    err,
                    ArtifactError::HostileEntry(_) | ArtifactError::HostileLink(_)
                ),
                "{name}: {err}"
            );
        }
        assert!(!dir.path().join("evil").exists());
        assert!(!Path::new("/tmp/osprey-evil-abs").exists());
        assert_eq!(fs::read_dir(&project).unwrap().count(), 0);
    }
}
