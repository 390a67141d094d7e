//! `cache:` of a job, of `default:` or (deprecated) of the top level: one
//! mapping or a list of up to four, each with `key` (a string or
//! `{files, prefix}`), `paths`, `untracked`, `policy`, `when`,
//! `fallback_keys` and `unprotect`. `cache: []` and `cache: {}` mean no
//! cache (a job uses them to drop the default's).
//!
//! Values are checked as GitLab's CI config validator checks them. The
//! planner expands variables in keys and derives `key:files` keys; see
//! [`crate::plan`].

use super::keywords::{did_you_mean, suggest};
use super::tree::{Node, ScalarKind};
use super::values::{self, Context};
use super::Report;
use crate::pipeline::{cache_key_problem, Cache, CacheKeyFiles, CachePolicy, CacheWhen};

/// GitLab's limit on caches per job.
pub(crate) const MAX_CACHES: usize = 4;
/// GitLab's limit on `cache:fallback_keys`.
const MAX_FALLBACK_KEYS: usize = 5;
/// GitLab's limit on `cache:key:files`.
const MAX_KEY_FILES: usize = 2;

/// Keys of one cache entry Osprey implements. `unprotect` is accepted and
/// has no effect: it shares a cache between protected and unprotected refs,
/// and Osprey has no protected refs, so every cache is already shared.
const CACHE_KEYS: &[&str] = &[
    "key",
    "paths",
    "untracked",
    "policy",
    "when",
    "fallback_keys",
    "unprotect",
];

/// `cache:key` hash keys Osprey implements.
const KEY_KEYS: &[&str] = &["files", "prefix"];
/// `cache:key` hash keys GitLab has and Osprey does not implement yet.
const KEY_UNSUPPORTED: &[&str] = &["files_commits"];

/// Reads `cache:` (a mapping or a list of mappings).
pub(crate) fn caches(report: &mut Report, cx: Context, node: &Node) -> Option<Vec<Cache>> {
    if let Some(entries) = node.as_mapping() {
        if entries.is_empty() {
            return Some(Vec::new());
        }
        return cache(report, cx, node).map(|cache| vec![cache]);
    }
    let Some(items) = node.as_sequence() else {
        cx.error(
            report,
            node.location,
            format!(
                "cache must be a mapping or a list of mappings, found {}",
                node.describe()
            ),
        );
        return None;
    };
    if items.len() > MAX_CACHES {
        cx.error(
            report,
            node.location,
            format!(
                "cache: no more than {MAX_CACHES} caches can be created, found {}",
                items.len()
            ),
        );
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if item.as_mapping().is_none() {
            cx.error(
                report,
                item.location,
                format!("each cache must be a mapping, found {}", item.describe()),
            );
            continue;
        }
        if let Some(cache) = cache(report, cx, item) {
            out.push(cache);
        }
    }
    Some(out)
}

/// One cache mapping.
fn cache(report: &mut Report, cx: Context, node: &Node) -> Option<Cache> {
    let errors_before = report.len();
    let mut cache = Cache::default();
    for (key, field) in node.as_mapping().unwrap_or_default() {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        if !CACHE_KEYS.contains(&name) {
            let suggestion = suggest(name, CACHE_KEYS.iter().copied());
            cx.error(
                report,
                key.location,
                format!("cache: unknown key {name}{}", did_you_mean(suggestion)),
            );
            continue;
        }
        match name {
            "key" => key_value(report, cx, field, &mut cache),
            "paths" => {
                if let Some(paths) = values::string_list(report, cx, field, "cache:paths") {
                    cache.paths = paths;
                }
            }
            "untracked" => {
                cache.untracked =
                    values::boolean(report, cx, field, "cache:untracked").unwrap_or(false);
            }
            "unprotect" => {
                values::boolean(report, cx, field, "cache:unprotect");
            }
            "policy" => {
                if let Some(policy) = policy(report, cx, field) {
                    cache.policy = policy;
                }
            }
            "when" => {
                if let Some(when) = when(report, cx, field) {
                    cache.when = when;
                }
            }
            _ => cache.fallback_keys = fallback_keys(report, cx, field),
        }
    }
    (report.len() == errors_before).then_some(cache)
}

/// A key written as a string (or a number, which GitLab takes as its text).
fn key_text(report: &mut Report, cx: Context, node: &Node, what: &str) -> Option<String> {
    let text = match node.as_scalar() {
        Some(s) if matches!(s.kind, ScalarKind::String | ScalarKind::Integer) => s.text.clone(),
        _ => {
            cx.error(
                report,
                node.location,
                format!("{what} must be a string, found {}", node.describe()),
            );
            return None;
        }
    };
    // A key with variables is checked again once expanded (by the agent,
    // which skips an invalid one with a warning, as GitLab's runner does).
    if let Some(problem) = cache_key_problem(&text) {
        cx.error(report, node.location, format!("{what} {text:?} {problem}"));
        return None;
    }
    Some(text)
}

/// `cache:key` as a string or `{files, prefix}`.
fn key_value(report: &mut Report, cx: Context, node: &Node, cache: &mut Cache) {
    let Some(entries) = node.as_mapping() else {
        if let Some(key) = key_text(report, cx, node, "cache:key") {
            cache.key = key;
        }
        return;
    };
    let mut files = None;
    let mut prefix = None;
    for (key, field) in entries {
        let Some(name) = key.as_scalar().map(|s| s.text.as_str()) else {
            continue;
        };
        if !cx.supported_key(
            report,
            key.location,
            "cache:key",
            name,
            KEY_KEYS,
            KEY_UNSUPPORTED,
        ) {
            continue;
        }
        if name == "files" {
            files = key_files(report, cx, field);
        } else {
            prefix = key_text(report, cx, field, "cache:key:prefix");
        }
    }
    match files {
        Some(files) => {
            cache.key_files = Some(CacheKeyFiles { files, prefix });
        }
        None if !entries
            .iter()
            .any(|(k, _)| matches!(k.as_str(), Some("files" | "files_commits"))) =>
        {
            cx.error(
                report,
                node.location,
                "cache:key must be a string or a mapping with files",
            );
        }
        None => {}
    }
}

/// `cache:key:files`: one or two paths.
fn key_files(report: &mut Report, cx: Context, node: &Node) -> Option<Vec<String>> {
    let files = values::string_list(report, cx, node, "cache:key:files")?;
    if files.is_empty() || files.len() > MAX_KEY_FILES {
        cx.error(
            report,
            node.location,
            format!(
                "cache:key:files must list 1 to {MAX_KEY_FILES} files, found {}",
                files.len()
            ),
        );
        return None;
    }
    for (file, item) in files.iter().zip(node.as_sequence().unwrap_or_default()) {
        if file.contains(['*', '?', '[', '{']) {
            cx.error(
                report,
                item.location,
                format!("cache:key:files: patterns such as {file:?} are not supported by Osprey yet; name the files"),
            );
            return None;
        }
        if file.trim().is_empty() {
            cx.error(
                report,
                item.location,
                "cache:key:files: a path must not be empty",
            );
            return None;
        }
    }
    Some(files)
}

fn policy(report: &mut Report, cx: Context, node: &Node) -> Option<CachePolicy> {
    let text = values::string(report, cx, node, "cache:policy")?;
    if let Some(policy) = CachePolicy::parse(&text) {
        return Some(policy);
    }
    let message = if text.contains('$') {
        "cache:policy with variables is not supported by Osprey yet".to_owned()
    } else {
        format!(
            "cache:policy must be pull-push, pull or push, found {text}{}",
            did_you_mean(suggest(&text, ["pull-push", "pull", "push"]))
        )
    };
    cx.error(report, node.location, message);
    None
}

fn when(report: &mut Report, cx: Context, node: &Node) -> Option<CacheWhen> {
    let text = values::string(report, cx, node, "cache:when")?;
    if let Some(when) = CacheWhen::parse(&text) {
        return Some(when);
    }
    cx.error(
        report,
        node.location,
        format!(
            "cache:when must be on_success, on_failure or always, found {text}{}",
            did_you_mean(suggest(&text, ["on_success", "on_failure", "always"]))
        ),
    );
    None
}

fn fallback_keys(report: &mut Report, cx: Context, node: &Node) -> Vec<String> {
    let Some(items) = node.as_sequence() else {
        cx.error(
            report,
            node.location,
            format!(
                "cache:fallback_keys must be a list of strings, found {}",
                node.describe()
            ),
        );
        return Vec::new();
    };
    if items.len() > MAX_FALLBACK_KEYS {
        cx.error(
            report,
            node.location,
            format!(
                "cache:fallback_keys: no more than {MAX_FALLBACK_KEYS} keys, found {}",
                items.len()
            ),
        );
    }
    items
        .iter()
        .filter_map(|item| key_text(report, cx, item, "cache:fallback_keys entry"))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::pipeline::{Cache, CacheKeyFiles, CachePolicy, CacheWhen, Pipeline};
    use crate::yaml::parse_pipeline;

    fn ok(text: &str) -> Pipeline {
        parse_pipeline(".gitlab-ci.yml", text).unwrap_or_else(|e| panic!("{e:#?}"))
    }

    fn errors(text: &str) -> Vec<String> {
        match parse_pipeline(".gitlab-ci.yml", text) {
            Ok(pipeline) => panic!("expected errors, got {pipeline:#?}"),
            Err(errors) => errors
                .iter()
                .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
                .collect(),
        }
    }

    fn caches<'p>(pipeline: &'p Pipeline, name: &str) -> &'p [Cache] {
        &pipeline
            .jobs
            .iter()
            .find(|j| j.name == name)
            .unwrap()
            .caches
    }

    #[test]
    fn a_single_cache_with_every_key() {
        let p = ok(r#"
build:
  script: make
  cache:
    key: deps-$CI_COMMIT_REF_SLUG
    paths: [vendor/, "*.jar"]
    untracked: true
    policy: pull
    when: always
    fallback_keys: [deps-main]
    unprotect: true
"#);
        assert_eq!(
            caches(&p, "build"),
            [Cache {
                key: "deps-$CI_COMMIT_REF_SLUG".into(),
                key_files: None,
                paths: vec!["vendor/".into(), "*.jar".into()],
                untracked: true,
                policy: CachePolicy::Pull,
                when: CacheWhen::Always,
                fallback_keys: vec!["deps-main".into()],
            }]
        );
    }

    #[test]
    fn defaults_lists_and_disabling() {
        let p = ok(r#"
default:
  cache:
    paths: [vendor/]
inherits:
  script: a
own:
  script: b
  cache:
    - key: {files: [Cargo.lock], prefix: rust}
      paths: [target/]
    - key: 7
      policy: push
      when: on_failure
off_list:
  script: c
  cache: []
off_map:
  script: d
  cache: {}
not_inherited:
  script: e
  inherit:
    default: false
"#);
        let inherited = caches(&p, "inherits");
        assert_eq!(inherited.len(), 1);
        assert_eq!(inherited[0].key, "default");
        assert_eq!(inherited[0].policy, CachePolicy::PullPush);
        assert_eq!(inherited[0].when, CacheWhen::OnSuccess);
        let own = caches(&p, "own");
        assert_eq!(own.len(), 2);
        assert_eq!(
            own[0].key_files,
            Some(CacheKeyFiles {
                files: vec!["Cargo.lock".into()],
                prefix: Some("rust".into())
            })
        );
        assert_eq!(own[1].key, "7");
        assert_eq!(own[1].when, CacheWhen::OnFailure);
        assert!(caches(&p, "off_list").is_empty());
        assert!(caches(&p, "off_map").is_empty());
        assert!(caches(&p, "not_inherited").is_empty());
    }

    #[test]
    fn the_top_level_form_is_a_default() {
        let p = ok("cache:\n  paths: [x]\nj:\n  script: a\n");
        assert_eq!(caches(&p, "j")[0].paths, ["x"]);
        assert_eq!(
            errors("cache:\n  paths: [x]\ndefault:\n  cache:\n    paths: [y]\nj:\n  script: a\n"),
            ["1:1: cache is set both here and in default: (line 4); keep only one"]
        );
    }

    #[test]
    fn invalid_caches_are_located() {
        let text = r#"
j:
  script: a
  cache:
    - key: feature/x
      paths: vendor
    - key: ".."
      policy: pull_push
      when: never
    - key: {files: [a, b, c]}
      fallback_keys: [ok, "a/b"]
    - key: {prefix: p}
      untracked: "yes"
      pahts: [x]
    - key: {files_commits: [a]}
"#;
        assert_eq!(
            errors(text),
            [
                "5:5: job j: cache: no more than 4 caches can be created, found 5",
                "5:12: job j: cache:key \"feature/x\" must not contain '/' or '%2F'",
                "6:14: job j: cache:paths must be a list of strings, found string",
                "7:12: job j: cache:key \"..\" must not be only '.' or '%2E'",
                "8:15: job j: cache:policy must be pull-push, pull or push, found pull_push (did you mean pull-push?)",
                "9:13: job j: cache:when must be on_success, on_failure or always, found never",
                "10:20: job j: cache:key:files must list 1 to 2 files, found 3",
                "11:27: job j: cache:fallback_keys entry \"a/b\" must not contain '/' or '%2F'",
                "12:12: job j: cache:key must be a string or a mapping with files",
                "13:18: job j: cache:untracked must be a boolean, found string",
                "14:7: job j: cache: unknown key pahts (did you mean paths?)",
                "15:13: job j: cache:key:files_commits is not supported by Osprey yet",
            ]
        );
        assert_eq!(
            errors("j:\n  script: a\n  cache: vendor/\n"),
            ["3:10: job j: cache must be a mapping or a list of mappings, found string"]
        );
        assert_eq!(
            errors("j:\n  script: a\n  cache:\n    policy: $POLICY\n"),
            ["4:13: job j: cache:policy with variables is not supported by Osprey yet"]
        );
    }
}
