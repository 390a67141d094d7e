//! File variables (`file: true`): the value is the content of a file the job
//! reads, and the variable holds the file's path. As GitLab Runner does, the
//! files live in a private directory of the attempt beside, never inside, the
//! project dir (`builds/<job>-<attempt>.tmp/`, see
//! [`crate::workspace::AttemptDirs::tmp_dir`]), so that artifacts, caches and
//! `untracked:` never see them.
//!
//! The directory is 0700 and each file 0600, created with `O_EXCL`: nothing
//! already there (a link planted by an earlier job) is written through. It is
//! removed when its [`FileVariablesDir`] is dropped, after the job's scripts,
//! whatever their end; the job guard removes it if the agent dies mid-script,
//! and the agent's start-up clean-up removes what is left after that.
//!
//! This module logs nothing and its errors name keys and paths, never contents.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FileVariableError {
    #[error("cannot create the directory of file variables {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write file variable {key} to {path}: {source}")]
    File {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The attempt's directory of file variables; removed (with its files) on drop.
#[derive(Debug)]
pub struct FileVariablesDir {
    dir: PathBuf,
    names: HashSet<String>,
    /// Variable index in the spec -> its file.
    paths: HashMap<usize, PathBuf>,
}

impl FileVariablesDir {
    /// Creates `dir` (0700). One already there, left by a crashed attempt,
    /// is removed first.
    pub fn create(dir: &Path) -> Result<Self, FileVariableError> {
        let failed = |source| FileVariableError::Dir {
            path: dir.to_owned(),
            source,
        };
        match std::fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(dir).map_err(failed)?,
            Ok(_) => std::fs::remove_file(dir).map_err(failed)?,
            Err(_) => {}
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
        // Not left to the umask.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
        Ok(Self {
            dir: dir.to_owned(),
            names: HashSet::new(),
            paths: HashMap::new(),
        })
    }

    /// The directory (on the host).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes `content` to a new file (0600) named after `key`, as the
    /// variable at `index` of the spec; returns the file's path.
    pub fn write(
        &mut self,
        index: usize,
        key: &str,
        content: &[u8],
    ) -> Result<PathBuf, FileVariableError> {
        let name = self.file_name(key);
        let path = self.dir.join(&name);
        let failed = |source| FileVariableError::File {
            key: key.to_owned(),
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(failed)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(failed)?;
        file.write_all(content).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        self.names.insert(name);
        self.paths.insert(index, path.clone());
        Ok(path)
    }

    /// The file of the variable at `index` of the spec, if it is a file variable.
    pub fn path_of(&self, index: usize) -> Option<&Path> {
        self.paths.get(&index).map(PathBuf::as_path)
    }

    /// `key` as one path segment, unique in the dir: a key given twice (a
    /// later definition overriding an earlier one) gets a second file.
    fn file_name(&self, key: &str) -> String {
        let base: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = if base.is_empty() {
            "variable".to_owned()
        } else {
            base
        };
        (1..)
            .map(|n| {
                if n == 1 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                }
            })
            .find(|name| !self.names.contains(name))
            .unwrap_or(base)
    }
}

impl Drop for FileVariablesDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %err, dir = %self.dir.display(), "cannot remove the file variables of a job");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn files_are_private_and_go_with_their_dir() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("1-abc.tmp");
        let mut files = FileVariablesDir::create(&dir).unwrap();
        let path = files.write(3, "KUBECONFIG", b"apiVersion: v1\n").unwrap();
        assert_eq!(path, dir.join("KUBECONFIG"));
        assert_eq!(files.path_of(3), Some(path.as_path()));
        assert_eq!(files.path_of(0), None);
        assert_eq!(std::fs::read(&path).unwrap(), b"apiVersion: v1\n");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);
        drop(files);
        assert!(!dir.exists(), "removed with its files");
    }

    #[test]
    fn a_key_given_twice_gets_two_files_and_odd_keys_one_segment() {
        let root = tempfile::tempdir().unwrap();
        let mut files = FileVariablesDir::create(&root.path().join("d")).unwrap();
        let first = files.write(0, "KEY", b"one").unwrap();
        let second = files.write(1, "KEY", b"two").unwrap();
        assert_ne!(first, second);
        assert_eq!(std::fs::read(&second).unwrap(), b"two");
        let odd = files.write(2, "../x y", b"z").unwrap();
        assert_eq!(odd.parent(), Some(files.path()));
        assert_eq!(odd.file_name().unwrap(), "___x_y");
    }

    #[test]
    fn a_leftover_dir_is_replaced_and_nothing_in_it_is_written_through() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("d");
        let outside = root.path().join("outside");
        std::fs::write(&outside, "keep").unwrap();
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("KEY")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut files = FileVariablesDir::create(&dir).unwrap();
        files.write(0, "KEY", b"secret").unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn errors_name_the_key_not_the_content() {
        let root = tempfile::tempdir().unwrap();
        let mut files = FileVariablesDir::create(&root.path().join("d")).unwrap();
        std::fs::remove_dir(files.path()).unwrap();
        let err = files
            .write(0, "TOKEN", b"hunter22")
            .unwrap_err()
            .to_string();
        assert!(err.contains("TOKEN") && !err.contains("hunter22"), "{err}");
    }
}
