//! The agent's identity: `WORK_DIR/credentials.json` holding the agent id and
//! token the coordinator handed out at registration. The registration token is
//! used once, when that file is missing; later starts reuse the stored token.

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the credentials file inside the work dir.
pub const FILE_NAME: &str = "credentials.json";

/// What registration returned.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub agent_id: String,
    pub agent_token: String,
}

impl std::fmt::Debug for Credentials {
    // The token is a secret: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt {path}: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no stored credentials and no registration token given")]
    NoRegistrationToken,
    #[error("registration failed: {0}")]
    Register(String),
}

/// The credentials file of `work_dir`.
pub fn path(work_dir: &Path) -> PathBuf {
    work_dir.join(FILE_NAME)
}

/// Reads stored credentials; `None` when the file does not exist.
pub fn load(work_dir: &Path) -> Result<Option<Credentials>, CredentialsError> {
    let path = path(work_dir);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CredentialsError::Read { path, source }),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| CredentialsError::Corrupt { path, source })
}

/// Stores credentials atomically (temp file, fsync, rename), readable by the
/// owner only.
pub fn store(work_dir: &Path, credentials: &Credentials) -> Result<(), CredentialsError> {
    let path = path(work_dir);
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(work_dir)?;
        let temp = work_dir.join(format!(".{FILE_NAME}.tmp"));
        let mut file = open_private(&temp)?;
        file.write_all(&serde_json::to_vec_pretty(credentials)?)?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)
    };
    write().map_err(|source| CredentialsError::Write {
        path: path.clone(),
        source,
    })
}

fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Returns the stored credentials, or registers with `register` (given the
/// registration token) and stores the answer before returning it.
pub async fn load_or_register<F, Fut>(
    work_dir: &Path,
    registration_token: Option<&str>,
    register: F,
) -> Result<Credentials, CredentialsError>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<Credentials, CredentialsError>>,
{
    if let Some(credentials) = load(work_dir)? {
        return Ok(credentials);
    }
    let token = registration_token
        .filter(|token| !token.is_empty())
        .ok_or(CredentialsError::NoRegistrationToken)?;
    let credentials = register(token.to_owned()).await?;
    store(work_dir, &credentials)?;
    Ok(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn registers_once_then_reuses_stored_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let calls = AtomicU32::new(0);
        let register = |token: String| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                assert_eq!(token, "reg-token");
                Ok(Credentials {
                    agent_id: "a1".into(),
                    agent_token: "secret".into(),
                })
            }
        };
        let first = load_or_register(dir.path(), Some("reg-token"), register)
            .await
            .unwrap();
        assert_eq!(first.agent_token, "secret");
        assert!(path(dir.path()).exists());

        let second = load_or_register(dir.path(), None, |_| async {
            Err(CredentialsError::Register("must not be called".into()))
        })
        .await
        .unwrap();
        assert_eq!(second, first);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(!format!("{second:?}").contains("secret"));
    }

    #[tokio::test]
    async fn missing_token_and_corrupt_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_or_register(dir.path(), None, |_| async {
            unreachable!("no token, no call")
        })
        .await
        .unwrap_err();
        assert!(matches!(err, CredentialsError::NoRegistrationToken));
        std::fs::write(path(dir.path()), b"{not json").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(CredentialsError::Corrupt { .. })
        ));
    }
}
