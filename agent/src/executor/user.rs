//! The user a shell agent runs its jobs as (`user = "NAME"` in the agent
//! config, as gitlab-runner's shell executor runs as `gitlab-runner`):
//! resolved once at start-up, checked to be one the agent may switch to, and
//! given the job's project dir before each job. The switch itself happens in
//! the job guard ([`crate::guard`]), which drops to this user before it
//! starts the script. What stays the agent's is out of this user's reach:
//! spool and records are 0700/0600 (work dir code), `credentials.json` 0600,
//! and the archives sit beside the project dir in the attempt's build dir,
//! which stays the agent's (0711: the job reaches its project dir through it
//! but can neither list nor change what else is there).

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A resolved account: what the job's processes get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary one included (as `id -G`).
    pub groups: Vec<u32>,
    /// `HOME` of the job.
    pub home: PathBuf,
}

/// Why `user` cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unknown user {0:?}")]
    Unknown(String),
    #[error("cannot look up user {name:?}: {errno}")]
    Lookup { name: String, errno: nix::Error },
    #[error(
        "cannot run jobs as {name:?}: the agent runs as uid {current}, and only root may switch users"
    )]
    NotPermitted { name: String, current: u32 },
}

impl JobUser {
    /// Looks `name` up in the system's user database and checks that this
    /// process may become it (it is root, or already that user).
    pub fn resolve(name: &str) -> Result<Self, UserError> {
        let lookup = |errno| UserError::Lookup {
            name: name.to_owned(),
            errno,
        };
        let user = nix::unistd::User::from_name(name)
            .map_err(lookup)?
            .ok_or_else(|| UserError::Unknown(name.to_owned()))?;
        let c_name = CString::new(name).map_err(|_| UserError::Unknown(name.to_owned()))?;
        let groups = nix::unistd::getgrouplist(&c_name, user.gid)
            .map_err(lookup)?
            .into_iter()
            .map(|gid| gid.as_raw())
            .collect();
        let current = nix::unistd::geteuid().as_raw();
        if current != 0 && current != user.uid.as_raw() {
            return Err(UserError::NotPermitted {
                name: name.to_owned(),
                current,
            });
        }
        Ok(Self {
            name: name.to_owned(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
            home: user.dir,
        })
    }

    /// Whether the job runs as someone else than the agent.
    pub fn is_other(&self) -> bool {
        nix::unistd::geteuid().as_raw() != self.uid
    }

    /// Makes `project_dir` and everything in it this user's, so the job can
    /// write there; its parent (the slot's build dir, which also holds the
    /// script files) becomes traversable but not listable. Symlinks are
    /// changed themselves, never followed: the tree was partly written by
    /// earlier jobs' artifacts. Contents go before their dir, so every dir
    /// on the path being changed is still the agent's: another job of this
    /// user cannot swap one for a symlink mid-walk.
    pub fn take_over(&self, project_dir: &Path) -> std::io::Result<()> {
        if let Some(build_dir) = project_dir.parent() {
            std::fs::set_permissions(build_dir, std::fs::Permissions::from_mode(0o711))?;
        }
        let walk = walkdir::WalkDir::new(project_dir)
            .follow_links(false)
            .contents_first(true);
        for entry in walk {
            let entry = entry.map_err(std::io::Error::other)?;
            std::os::unix::fs::lchown(entry.path(), Some(self.uid), Some(self.gid))?;
        }
        Ok(())
    }

    /// Gives the job's file variables (`dir` and the files in it, which the
    /// agent just created: no links) to this user, keeping their modes (0700,
    /// 0600), so the job can read them and no one else can.
    pub fn take_over_files(&self, dir: &Path) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            std::os::unix::fs::lchown(entry?.path(), Some(self.uid), Some(self.gid))?;
        }
        std::os::unix::fs::lchown(dir, Some(self.uid), Some(self.gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_dir_becomes_the_users_and_links_are_not_followed() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown to another user needs root");
            return;
        }
        let nobody = JobUser::resolve("nobody").expect("nobody exists");
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "agent's").unwrap();
        let project = dir.path().join("build").join("project");
        std::fs::create_dir_all(project.join("sub")).unwrap();
        std::fs::write(project.join("sub/file"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, project.join("link")).unwrap();
        nobody.take_over(&project).unwrap();
        for path in ["", "sub", "sub/file"] {
            let meta = std::fs::symlink_metadata(project.join(path)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (nobody.uid, nobody.gid), "{path}");
        }
        assert_eq!(
            std::fs::symlink_metadata(project.join("link"))
                .unwrap()
                .uid(),
            nobody.uid
        );
        assert_eq!(
            std::fs::metadata(&outside).unwrap().uid(),
            0,
            "followed the link"
        );
        let build = std::fs::metadata(dir.path().join("build")).unwrap();
        assert_eq!((build.uid(), build.mode() & 0o777), (0, 0o711));
    }

    #[test]
    fn unknown_users_are_named() {
        let err = JobUser::resolve("no-such-user-osprey").unwrap_err();
        assert_eq!(err, UserError::Unknown("no-such-user-osprey".into()));
        assert_eq!(err.to_string(), "unknown user \"no-such-user-osprey\"");
    }

    #[test]
    fn the_current_user_is_always_allowed() {
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .expect("the test runs as a known user");
        let user = JobUser::resolve(&me.name).expect("resolves");
        assert_eq!(user.uid, me.uid.as_raw());
        assert!(user.groups.contains(&me.gid.as_raw()), "{user:?}");
        assert!(!user.is_other());
    }

    #[test]
    fn only_root_may_switch_users() {
        let root = nix::unistd::geteuid().is_root();
        match JobUser::resolve("nobody") {
            Ok(user) => assert!(root, "non-root switched to {user:?}"),
            Err(UserError::NotPermitted { .. }) => assert!(!root),
            Err(other) => panic!("{other}"),
        }
    }
}
