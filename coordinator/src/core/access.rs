//! Who is calling: an API token resolved to a [`Principal`] (its role and
//! the project it is limited to), and what that principal may do. The admin
//! token comes from the configuration, or is generated 0600 into the data
//! dir on first start; other tokens are stored as their sha256 only.

use super::{Core, CoreSettings};
use crate::error::{CoreError, CoreResult};
use osprey_shared::api::{format_time, Role};
use std::io::Write;
use std::net::IpAddr;
use std::time::Instant;

/// Where the generated admin token is kept, under the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// `last_used_at` is written at most this often per token.
const TOUCH_INTERVAL: time::Duration = time::Duration::minutes(1);

/// The caller of an API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub role: Role,
    /// The one project the token is for; `None`: every project.
    pub project: Option<i64>,
    /// The API token's id; `None`: the admin token.
    pub token: Option<i64>,
}

impl Principal {
    pub const ADMIN: Principal = Principal {
        role: Role::Admin,
        project: None,
        token: None,
    };

    /// Who this is, as deployments record it: `admin` or `token:ID`.
    pub fn who(&self) -> String {
        match self.token {
            None => "admin".to_owned(),
            Some(id) => format!("token:{id}"),
        }
    }

    /// Allows a call that needs `role` on `project` (`None`: something of
    /// no project — tokens, agents, bare-repository pipelines — which only
    /// a token of every project reaches).
    pub fn require(&self, role: Role, project: Option<i64>) -> CoreResult<()> {
        let reaches = match (self.project, project) {
            (None, _) => true,
            (Some(mine), Some(wanted)) => mine == wanted,
            (Some(_), None) => false,
        };
        if !reaches {
            return Err(CoreError::PermissionDenied(
                "this token is limited to another project".to_owned(),
            ));
        }
        if self.role < role {
            return Err(CoreError::PermissionDenied(format!(
                "this token's role {} does not allow this; it needs {role}",
                self.role
            )));
        }
        Ok(())
    }

    /// Whether the principal sees `project` at all.
    pub fn sees(&self, project: i64) -> bool {
        self.project.is_none_or(|mine| mine == project)
    }
}

/// The admin token: configured, or read from `DATA_DIR/admin.token`,
/// generated there (0600) when missing.
pub fn admin_token(settings: &CoreSettings) -> CoreResult<String> {
    if let Some(token) = &settings.admin_token {
        if token.trim().len() < 16 {
            return Err(CoreError::InvalidArgument(
                "the admin token must be at least 16 characters".to_owned(),
            ));
        }
        return Ok(token.trim().to_owned());
    }
    let path = settings.data_dir.join(ADMIN_TOKEN_FILE);
    let internal = |error: std::io::Error| {
        CoreError::Internal(format!("admin token {}: {error}", path.display()))
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(internal(error)),
    }
    let token = format!("osp_{}", crate::auth::new_token());
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(internal)?
    };
    writeln!(file, "{token}").map_err(internal)?;
    file.sync_all().map_err(internal)?;
    tracing::warn!(path = %path.display(), "generated the admin API token; read it from this file");
    eprintln!(
        "osprey-coordinator: admin API token written to {}",
        path.display()
    );
    Ok(token)
}

impl Core {
    /// The principal a bearer token stands for. Addresses that keep
    /// presenting bad tokens are slowed down (429 with a delay), as agents'
    /// registrations are.
    pub async fn authenticate(
        &self,
        token: Option<&str>,
        peer: Option<IpAddr>,
    ) -> CoreResult<Principal> {
        let now = Instant::now();
        if let Some(peer) = peer {
            if let Err(wait) = self.inner.token_throttle.check(peer, now) {
                return Err(CoreError::Throttled {
                    message: format!(
                        "too many bad API tokens from this address: retry after {} ms",
                        wait.as_millis()
                    ),
                    retry_after: wait,
                });
            }
        }
        let Some(token) = token.filter(|token| !token.is_empty()) else {
            return Err(CoreError::Unauthenticated(
                "this API needs a token: Authorization: Bearer TOKEN".to_owned(),
            ));
        };
        let hash = crate::auth::token_hash(token);
        if crate::auth::hashes_equal(&hash, &self.inner.admin_sha256) {
            return Ok(Principal::ADMIN);
        }
        if let Some(row) = self.store().token_by_hash(&hash).await? {
            let now_text = format_time(time::OffsetDateTime::now_utc());
            let live = row
                .expires_at
                .as_deref()
                .is_none_or(|expiry| expiry > now_text.as_str());
            if let (true, Ok(role)) = (live, row.role.parse::<Role>()) {
                let stale = row.last_used_at.as_deref().is_none_or(|used| {
                    used < format_time(time::OffsetDateTime::now_utc() - TOUCH_INTERVAL).as_str()
                });
                if stale {
                    self.store().touch_token(row.id).await?;
                }
                if let Some(peer) = peer {
                    self.inner.token_throttle.succeeded(peer);
                }
                return Ok(Principal {
                    role,
                    project: row.project_id,
                    token: Some(row.id),
                });
            }
        }
        if let Some(peer) = peer {
            self.inner.token_throttle.failed(peer, now);
        }
        Err(CoreError::Unauthenticated(
            "invalid or expired API token".to_owned(),
        ))
    }
}
