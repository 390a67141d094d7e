//! The artifact store in a local directory: key `a/b.tar` is the file
//! `ROOT/a/b.tar`. A put writes a temporary file beside the target (a hard
//! link to the source when both are on one file system, else a synced copy)
//! and renames it over the target, so readers see one whole version; a
//! reader that opened the previous file keeps reading it whole. Temporary
//! files are named `.NAME.UUID.tmp` and never listed.

use super::{validate_key, ArtifactStore, ArtifactStoreError, ArtifactStoreResult, StoredObject};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

/// Objects as files under a root directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn new(root: PathBuf) -> Self {
        FileStore { root }
    }

    fn path(&self, key: &str) -> ArtifactStoreResult<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Runs blocking file work off the runtime.
async fn blocking<T: Send + 'static>(
    operation: &'static str,
    key: &str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> ArtifactStoreResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ArtifactStoreError::backend(operation, key, error))?
        .map_err(|error| ArtifactStoreError::backend(operation, key, error))
}

fn put_file(source: &Path, target: &Path) -> std::io::Result<()> {
    let dir = target.parent().expect("a key has a file name");
    std::fs::create_dir_all(dir)?;
    let name = target
        .file_name()
        .expect("a key has a file name")
        .to_string_lossy();
    let temporary = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        if std::fs::hard_link(source, &temporary).is_err() {
            std::fs::copy(source, &temporary)?;
            std::fs::File::open(&temporary)?.sync_all()?;
        }
        std::fs::rename(&temporary, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

fn open_file(path: &Path, tail: u64) -> std::io::Result<Option<(std::fs::File, u64, Vec<u8>)>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let size = file.metadata()?.len();
    let tail = tail.min(size);
    let mut bytes = vec![0u8; tail as usize];
    if tail > 0 {
        file.seek(std::io::SeekFrom::Start(size - tail))?;
        file.read_exact(&mut bytes)?;
        file.rewind()?;
    }
    Ok(Some((file, size, bytes)))
}

fn list_files(root: &Path, dir: &Path, keys: &mut Vec<String>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            list_files(root, &path, keys)?;
        } else if !is_temporary(&entry.file_name().to_string_lossy()) {
            let relative = path.strip_prefix(root).expect("listed under the root");
            let segments: Vec<_> = relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect();
            keys.push(segments.join("/"));
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl ArtifactStore for FileStore {
    async fn put(&self, key: &str, source: &Path) -> ArtifactStoreResult<()> {
        let target = self.path(key)?;
        let source = source.to_owned();
        blocking("put", key, move || put_file(&source, &target)).await
    }

    async fn get_with_tail(
        &self,
        key: &str,
        tail: u64,
    ) -> ArtifactStoreResult<Option<StoredObject>> {
        let path = self.path(key)?;
        let opened = blocking("get", key, move || open_file(&path, tail)).await?;
        Ok(opened.map(|(file, size, tail)| StoredObject {
            size,
            tail,
            reader: Box::pin(tokio::fs::File::from_std(file)),
        }))
    }

    async fn delete(&self, key: &str) -> ArtifactStoreResult<()> {
        let path = self.path(key)?;
        blocking("delete", key, move || match std::fs::remove_file(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        })
        .await
    }

    async fn list(&self, prefix: &str) -> ArtifactStoreResult<Vec<String>> {
        let trimmed = prefix.trim_end_matches('/');
        let dir = if trimmed.is_empty() {
            self.root.clone()
        } else {
            self.path(trimmed)?
        };
        let root = self.root.clone();
        blocking("list", prefix, move || {
            let mut keys = Vec::new();
            list_files(&root, &dir, &mut keys)?;
            Ok(keys)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hostile_keys_touch_nothing_outside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "secret").unwrap();
        let store = FileStore::new(root);
        let source = dir.path().join("source");
        std::fs::write(&source, "bytes").unwrap();
        for key in ["../outside.txt", "/etc/passwd", "a/../../outside.txt", ""] {
            assert!(matches!(
                store.put(key, &source).await,
                Err(ArtifactStoreError::InvalidKey { .. })
            ));
            assert!(store.get(key).await.is_err(), "{key:?}");
            assert!(store.delete(key).await.is_err(), "{key:?}");
        }
        assert!(store.list("../").await.is_err());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
    }

    #[tokio::test]
    async fn temporary_files_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cache/r")).unwrap();
        std::fs::write(dir.path().join("cache/r/.k.tar.123.tmp"), "half").unwrap();
        std::fs::write(dir.path().join("cache/r/k.tar"), "whole").unwrap();
        let store = FileStore::new(dir.path().to_owned());
        assert_eq!(store.list("cache/").await.unwrap(), vec!["cache/r/k.tar"]);
    }
}
