//! The final keys of a planned job's caches: variables expanded in `key`,
//! `key:prefix`, `key:files` and `fallback_keys`, and the key of a
//! `key:files` cache derived from those files at the pipeline's commit.
//!
//! GitLab derives a `key:files` key from the files' contents (since 18.4;
//! before, and with `key:files_commits`, from the SHA of the last commit
//! that changed them). Osprey hashes the contents: the key is the
//! lower-case hex sha256 over, for each named file that exists in order,
//! its path, a NUL byte and the sha256 of its contents; `<prefix>-` comes
//! first when a prefix is given. When none of the files exists the key is
//! `default` (`<prefix>-default`), as on GitLab. The digest differs from
//! GitLab's, so keys are not interchangeable with a GitLab runner's cache.

use super::PlanError;
use crate::pipeline::{Cache, JobDef, DEFAULT_CACHE_KEY};
use crate::variables::expand;
use crate::yaml::{IncludeLoader, LoadError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write as _;

/// Replaces the keys of `job`'s caches by their final values. `lookup` is
/// the job's variables (predefined ones included); `CI_JOB_NAME` and
/// `CI_JOB_STAGE` are added, since a key often names its job.
pub(super) fn apply(
    job: &mut JobDef,
    lookup: &HashMap<String, String>,
    files: &dyn IncludeLoader,
    errors: &mut Vec<PlanError>,
) {
    if job.caches.is_empty() {
        return;
    }
    let (name, stage) = (job.name.clone(), job.stage.clone());
    let get = |variable: &str| match variable {
        "CI_JOB_NAME" if !lookup.contains_key(variable) => Some(name.clone()),
        "CI_JOB_STAGE" if !lookup.contains_key(variable) => Some(stage.clone()),
        _ => lookup.get(variable).cloned(),
    };
    for cache in &mut job.caches {
        cache.fallback_keys = cache
            .fallback_keys
            .iter()
            .map(|key| expand(key, &get))
            .collect();
        let Some(key_files) = &mut cache.key_files else {
            cache.key = expand(&cache.key, &get);
            continue;
        };
        key_files.prefix = key_files.prefix.as_deref().map(|p| expand(p, &get));
        key_files.files = key_files.files.iter().map(|f| expand(f, &get)).collect();
        match files_key(&key_files.files, files) {
            Ok(hash) => {
                cache.key = match &key_files.prefix {
                    Some(prefix) => format!("{prefix}-{hash}"),
                    None => hash,
                };
            }
            Err(message) => errors.push(PlanError {
                job: Some(name.clone()),
                message,
            }),
        }
    }
}

/// The hash part of a `key:files` key (see the module docs).
pub fn files_key(paths: &[String], files: &dyn IncludeLoader) -> Result<String, String> {
    let mut hasher = Sha256::new();
    let mut found = false;
    for path in paths {
        let path = path.trim_start_matches("./").trim_start_matches('/');
        match files.read(path) {
            Ok(text) => {
                found = true;
                hasher.update(path.as_bytes());
                hasher.update([0]);
                hasher.update(Sha256::digest(text.as_bytes()));
            }
            Err(LoadError::NotFound) => {}
            Err(LoadError::Other(error)) => {
                return Err(format!("cache:key:files: cannot read {path}: {error}"))
            }
        }
    }
    if !found {
        return Ok(DEFAULT_CACHE_KEY.to_owned());
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// `cache` lines of `osprey lint --plan`.
pub(super) fn describe(cache: &Cache) -> String {
    let mut line = format!("cache: key {}", cache.key);
    if let Some(files) = &cache.key_files {
        let _ = write!(line, " (from {})", files.files.join(", "));
    }
    if !cache.paths.is_empty() {
        let _ = write!(line, ", paths [{}]", cache.paths.join(", "));
    }
    if cache.untracked {
        line.push_str(", untracked");
    }
    let _ = write!(
        line,
        ", policy {}, when {}",
        cache.policy.as_str(),
        cache.when.as_str()
    );
    if !cache.fallback_keys.is_empty() {
        let _ = write!(line, ", fallback_keys [{}]", cache.fallback_keys.join(", "));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::CacheKeyFiles;

    struct Repo(Vec<(&'static str, &'static str)>);

    impl IncludeLoader for Repo {
        fn read(&self, path: &str) -> Result<String, LoadError> {
            self.0
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, text)| (*text).to_owned())
                .ok_or(LoadError::NotFound)
        }
        fn list(&self) -> Result<Vec<String>, LoadError> {
            Ok(self.0.iter().map(|(p, _)| (*p).to_owned()).collect())
        }
    }

    fn job_with(cache: Cache) -> JobDef {
        JobDef {
            name: "build".into(),
            stage: "build".into(),
            caches: vec![cache],
            ..JobDef::default()
        }
    }

    fn planned(cache: Cache, repo: &Repo, vars: &[(&str, &str)]) -> (Cache, Vec<PlanError>) {
        let lookup = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut job = job_with(cache);
        let mut errors = Vec::new();
        apply(&mut job, &lookup, repo, &mut errors);
        (job.caches.remove(0), errors)
    }

    #[test]
    fn keys_and_fallback_keys_are_expanded_with_the_job_name() {
        let cache = Cache {
            key: "$CI_JOB_NAME-$CI_COMMIT_REF_SLUG".into(),
            fallback_keys: vec!["$CI_JOB_NAME-$CI_DEFAULT_BRANCH".into()],
            ..Cache::default()
        };
        let vars = [
            ("CI_COMMIT_REF_SLUG", "feat-x"),
            ("CI_DEFAULT_BRANCH", "main"),
        ];
        let (cache, errors) = planned(cache, &Repo(vec![]), &vars);
        assert!(errors.is_empty());
        assert_eq!(cache.key, "build-feat-x");
        assert_eq!(cache.fallback_keys, ["build-main"]);
    }

    #[test]
    fn files_keys_follow_the_contents_and_the_prefix() {
        let files = |prefix: Option<&str>| Cache {
            key_files: Some(CacheKeyFiles {
                files: vec!["Cargo.lock".into(), "./web/package-lock.json".into()],
                prefix: prefix.map(str::to_owned),
            }),
            ..Cache::default()
        };
        let repo = Repo(vec![("Cargo.lock", "v1"), ("web/package-lock.json", "{}")]);
        let (plain, _) = planned(files(None), &repo, &[]);
        assert_eq!(plain.key.len(), 64);
        assert!(plain.key.chars().all(|c| c.is_ascii_hexdigit()));
        let (prefixed, _) = planned(files(Some("$CI_JOB_NAME")), &repo, &[]);
        assert_eq!(prefixed.key, format!("build-{}", plain.key));
        // Same contents, same key; other contents, other key.
        let (again, _) = planned(files(None), &repo, &[]);
        assert_eq!(again.key, plain.key);
        let changed = Repo(vec![("Cargo.lock", "v2"), ("web/package-lock.json", "{}")]);
        let (other, _) = planned(files(None), &changed, &[]);
        assert_ne!(other.key, plain.key);
        // No file exists: GitLab's `default`.
        let (missing, errors) = planned(files(Some("deps")), &Repo(vec![]), &[]);
        assert!(errors.is_empty());
        assert_eq!(missing.key, "deps-default");
    }

    #[test]
    fn an_unreadable_key_file_is_a_planning_error() {
        struct Broken;
        impl IncludeLoader for Broken {
            fn read(&self, _: &str) -> Result<String, LoadError> {
                Err(LoadError::Other("git failed".into()))
            }
            fn list(&self) -> Result<Vec<String>, LoadError> {
                Ok(Vec::new())
            }
        }
        let mut job = job_with(Cache {
            key_files: Some(CacheKeyFiles {
                files: vec!["a".into()],
                prefix: None,
            }),
            ..Cache::default()
        });
        let mut errors = Vec::new();
        apply(&mut job, &HashMap::new(), &Broken, &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("cannot read a"), "{errors:?}");
    }
}
