//! Real git repositories in temp dirs, for pipelines to run against.

use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

/// A git repository (`master` branch) in a temp dir, removed on drop.
pub struct TestRepo {
    dir: TempDir,
}

impl TestRepo {
    /// `git init -b master` with a local identity, nothing committed.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("osprey-repo-")
            .tempdir()
            .expect("create a temp dir for the test repository");
        let repo = Self { dir };
        repo.git(&["init", "-q", "-b", "master"]);
        repo.git(&["config", "user.name", "Osprey Tests"]);
        repo.git(&["config", "user.email", "tests@osprey.invalid"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    /// A repository whose first commit holds `.gitlab-ci.yml` with `ci_yaml`.
    pub fn with_pipeline(ci_yaml: &str) -> Self {
        let repo = Self::new();
        repo.write(".gitlab-ci.yml", ci_yaml);
        repo.commit("pipeline");
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The path as the string the API takes.
    pub fn url(&self) -> String {
        self.path().display().to_string()
    }

    /// Writes a file (creating parent dirs), relative to the work tree.
    pub fn write(&self, relative: &str, contents: &str) -> PathBuf {
        let path = self.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dirs in the repository");
        }
        std::fs::write(&path, contents).expect("write a file in the repository");
        path
    }

    /// Commits everything; returns the new commit's sha.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// A lightweight tag on HEAD.
    pub fn tag(&self, name: &str) {
        self.git(&["tag", name]);
    }

    /// Creates a branch at HEAD (without checking it out).
    pub fn branch(&self, name: &str) {
        self.git(&["branch", name]);
    }

    /// Runs git in the repository; panics with its stderr on failure.
    pub fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("run git");
        assert!(
            output.status.success(),
            "git {} failed in {}: {}",
            args.join(" "),
            self.path().display(),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Default for TestRepo {
    fn default() -> Self {
        Self::new()
    }
}
