//! [`DirectoryLoader`]: an [`IncludeLoader`] over a directory of the local
//! file system, for the tools that read a working tree rather than a commit
//! (`osprey lint`, `osprey-agent exec`). The coordinator reads from git.
//!
//! The one piece of I/O in this crate, and read-only: it is the shared
//! implementation of a trait defined here, so the two command-line tools do
//! not each carry a copy that could drift (which files are listed for
//! `exists:` and wildcard includes, which paths are refused).

use super::{IncludeLoader, LoadError};
use std::path::{Path, PathBuf};

/// Directories never listed: version control data and build output.
const SKIPPED_DIRS: [&str; 3] = [".git", "target", "node_modules"];

/// Most files listed, so that a huge tree cannot stall the caller.
const MAX_LISTED: usize = 200_000;

/// The files under `root`, read as the repository's.
#[derive(Debug, Clone)]
pub struct DirectoryLoader {
    root: PathBuf,
}

impl DirectoryLoader {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory of a pipeline file, `.` for a bare file name.
    pub fn of_file(file: &Path) -> Self {
        let root = file
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::new(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl IncludeLoader for DirectoryLoader {
    fn read(&self, path: &str) -> Result<String, LoadError> {
        // `Path::join` with an absolute path replaces the root.
        if path.starts_with('/') || path.split('/').any(|part| part == "..") {
            return Err(LoadError::Other(
                "paths may not leave the repository".into(),
            ));
        }
        match std::fs::read_to_string(self.root.join(path)) {
            Ok(text) => Ok(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(LoadError::NotFound),
            Err(error) => Err(LoadError::Other(error.to_string())),
        }
    }

    fn list(&self) -> Result<Vec<String>, LoadError> {
        let mut out = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| LoadError::Other(e.to_string()))?;
            for entry in entries.flatten() {
                let path = entry.path();
                let file_name = entry.file_name();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    if !SKIPPED_DIRS.iter().any(|d| file_name == *d) {
                        pending.push(path);
                    }
                    continue;
                }
                if let Ok(relative) = path.strip_prefix(&self.root) {
                    out.push(relative.to_string_lossy().replace('\\', "/"));
                }
                if out.len() >= MAX_LISTED {
                    return Err(LoadError::Other(format!(
                        "more than {MAX_LISTED} files under {}",
                        self.root.display()
                    )));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory removed on drop (no tempfile dependency in this crate).
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tree() -> (Scratch, DirectoryLoader) {
        let dir =
            Scratch(std::env::temp_dir().join(format!("osprey-dir-{}", uuid::Uuid::new_v4())));
        for (path, text) in [
            (".gitlab-ci.yml", "a: {script: [x]}"),
            ("ci/build.yml", "b: {script: [y]}"),
            (".git/config", "[core]"),
            ("target/debug/out", "binary"),
        ] {
            let full = dir.0.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        let loader = DirectoryLoader::new(&dir.0);
        (dir, loader)
    }

    #[test]
    fn reads_and_lists_the_tree_without_vcs_or_build_output() {
        let (_dir, loader) = tree();
        assert_eq!(loader.read("ci/build.yml").unwrap(), "b: {script: [y]}");
        assert_eq!(loader.read("ci/missing.yml"), Err(LoadError::NotFound));
        assert_eq!(
            loader.list().unwrap(),
            vec![".gitlab-ci.yml".to_owned(), "ci/build.yml".to_owned()]
        );
    }

    #[test]
    fn refuses_paths_outside_the_root() {
        let (_dir, loader) = tree();
        for path in ["../etc/passwd", "ci/../../x", "/etc/passwd"] {
            assert!(
                matches!(loader.read(path), Err(LoadError::Other(_))),
                "{path}"
            );
        }
    }

    #[test]
    fn the_root_of_a_bare_file_name_is_the_current_directory() {
        assert_eq!(
            DirectoryLoader::of_file(Path::new(".gitlab-ci.yml")).root(),
            Path::new(".")
        );
        assert_eq!(
            DirectoryLoader::of_file(Path::new("repo/.gitlab-ci.yml")).root(),
            Path::new("repo")
        );
    }
}
