//! `cache:` of a job as the model holds it. Before planning, [`Cache::key`]
//! is the key as written (variables not expanded; the files' hash not yet
//! taken); the planner replaces it with the final key the agent uses.

use serde::{Deserialize, Serialize};

/// GitLab's key when none is given.
pub const DEFAULT_CACHE_KEY: &str = "default";

/// One entry of `cache:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    /// The key: as written before planning, final after it.
    pub key: String,
    /// `key: {files, prefix}`: the key is derived from these files at the
    /// pipeline's commit (kept after planning, for display).
    #[serde(default)]
    pub key_files: Option<CacheKeyFiles>,
    /// Files, folders and globs relative to the project dir.
    #[serde(default)]
    pub paths: Vec<String>,
    /// `untracked: true`: every file git does not track is cached too.
    #[serde(default)]
    pub untracked: bool,
    #[serde(default)]
    pub policy: CachePolicy,
    #[serde(default)]
    pub when: CacheWhen,
    /// Keys tried in order when the key has no cache (expanded by the planner).
    #[serde(default)]
    pub fallback_keys: Vec<String>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            key: DEFAULT_CACHE_KEY.to_owned(),
            key_files: None,
            paths: Vec::new(),
            untracked: false,
            policy: CachePolicy::default(),
            when: CacheWhen::default(),
            fallback_keys: Vec::new(),
        }
    }
}

/// `cache:key:files` and `cache:key:prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKeyFiles {
    /// One or two paths relative to the repository root.
    pub files: Vec<String>,
    pub prefix: Option<String>,
}

/// `cache:policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CachePolicy {
    /// Restore before the script, save after it (GitLab's default).
    #[default]
    PullPush,
    /// Restore only.
    Pull,
    /// Save only.
    Push,
}

impl CachePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CachePolicy::PullPush => "pull-push",
            CachePolicy::Pull => "pull",
            CachePolicy::Push => "push",
        }
    }

    pub fn parse(text: &str) -> Option<CachePolicy> {
        match text {
            "pull-push" => Some(CachePolicy::PullPush),
            "pull" => Some(CachePolicy::Pull),
            "push" => Some(CachePolicy::Push),
            _ => None,
        }
    }

    /// Whether the job restores the cache before its script.
    pub fn pulls(self) -> bool {
        matches!(self, CachePolicy::PullPush | CachePolicy::Pull)
    }

    /// Whether the job saves the cache after its script.
    pub fn pushes(self) -> bool {
        matches!(self, CachePolicy::PullPush | CachePolicy::Push)
    }
}

/// `cache:when`: for which job results the cache is saved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheWhen {
    #[default]
    OnSuccess,
    OnFailure,
    Always,
}

impl CacheWhen {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheWhen::OnSuccess => "on_success",
            CacheWhen::OnFailure => "on_failure",
            CacheWhen::Always => "always",
        }
    }

    pub fn parse(text: &str) -> Option<CacheWhen> {
        match text {
            "on_success" => Some(CacheWhen::OnSuccess),
            "on_failure" => Some(CacheWhen::OnFailure),
            "always" => Some(CacheWhen::Always),
            _ => None,
        }
    }

    /// Whether a job that `succeeded` (or not) saves the cache.
    pub fn saves(self, succeeded: bool) -> bool {
        match self {
            CacheWhen::OnSuccess => succeeded,
            CacheWhen::OnFailure => !succeeded,
            CacheWhen::Always => true,
        }
    }
}

/// Why GitLab refuses a cache key, or `None` when it is valid: it must not
/// be empty, contain `/` (or `%2F`), or be only dots (or `%2E`).
pub fn cache_key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return Some("must not be empty");
    }
    let lower = key.to_ascii_lowercase();
    if key.contains('/') || lower.contains("%2f") {
        return Some("must not contain '/' or '%2F'");
    }
    let without_dots = lower.replace("%2e", "").replace('.', "");
    if without_dots.is_empty() {
        return Some("must not be only '.' or '%2E'");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_as_gitlab_checks_them() {
        assert_eq!(cache_key_problem("default"), None);
        assert_eq!(cache_key_problem("a.b-c_1"), None);
        assert!(cache_key_problem("feature/x").is_some());
        assert!(cache_key_problem("a%2fb").is_some());
        assert!(cache_key_problem("..").is_some());
        assert!(cache_key_problem(".%2E").is_some());
        assert!(cache_key_problem("").is_some());
    }

    #[test]
    fn when_and_policy_decide_pull_and_push() {
        assert!(CachePolicy::PullPush.pulls() && CachePolicy::PullPush.pushes());
        assert!(CachePolicy::Pull.pulls() && !CachePolicy::Pull.pushes());
        assert!(!CachePolicy::Push.pulls() && CachePolicy::Push.pushes());
        assert!(CacheWhen::OnSuccess.saves(true) && !CacheWhen::OnSuccess.saves(false));
        assert!(!CacheWhen::OnFailure.saves(true) && CacheWhen::OnFailure.saves(false));
        assert!(CacheWhen::Always.saves(true) && CacheWhen::Always.saves(false));
    }

    #[test]
    fn older_definitions_without_caches_still_load() {
        let cache: Cache = serde_json::from_str(r#"{"key":"k"}"#).unwrap();
        assert_eq!(cache.policy, CachePolicy::PullPush);
        assert_eq!(cache.when, CacheWhen::OnSuccess);
    }
}
