//! Which GitLab CI keywords exist, which of them Osprey implements, and the
//! "did you mean" suggestions for names that are close to one.
//!
//! The lists follow GitLab's CI/CD YAML reference. A keyword GitLab knows but
//! Osprey does not implement must be refused by name (never ignored), so the
//! lists of unsupported keywords matter as much as the supported ones.

/// Top-level keywords Osprey implements.
pub(crate) const GLOBAL_SUPPORTED: &[&str] = &[
    "stages",
    "variables",
    "default",
    "before_script",
    "after_script",
    "image",
    "services",
    "workflow",
    "include",
    "cache",
];

/// Top-level keywords GitLab has and Osprey does not implement yet.
/// `types` is the removed old name of `stages`; `spec` is the header of
/// `include:inputs` files.
pub(crate) const GLOBAL_UNSUPPORTED: &[&str] = &["types", "spec"];

/// Job keywords Osprey implements.
pub(crate) const JOB_SUPPORTED: &[&str] = &[
    "script",
    "stage",
    "before_script",
    "after_script",
    "tags",
    "allow_failure",
    "when",
    "variables",
    "artifacts",
    "image",
    "services",
    "timeout",
    "rules",
    "only",
    "except",
    "extends",
    "inherit",
    "start_in",
    "retry",
    "needs",
    "dependencies",
    "parallel",
    "interruptible",
    "resource_group",
    "environment",
    "coverage",
    "cache",
];

/// Job keywords GitLab has and Osprey does not implement yet.
pub(crate) const JOB_UNSUPPORTED: &[&str] = &[
    "dast_configuration",
    "hooks",
    "id_tokens",
    "identity",
    "manual_confirmation",
    "pages",
    "publish",
    "release",
    "run",
    "secrets",
    "trigger",
    "type",
];

/// `default:` keywords Osprey implements.
pub(crate) const DEFAULT_SUPPORTED: &[&str] = &[
    "before_script",
    "after_script",
    "image",
    "services",
    "tags",
    "timeout",
    "interruptible",
    "retry",
    "cache",
];

/// Every `default:` keyword GitLab has (the names `inherit:default` takes).
pub(crate) const DEFAULT_KEYWORDS_ALL: &[&str] = &[
    "after_script",
    "artifacts",
    "before_script",
    "cache",
    "hooks",
    "id_tokens",
    "image",
    "interruptible",
    "retry",
    "services",
    "tags",
    "timeout",
];

/// `default:` keywords GitLab has and Osprey does not implement yet.
pub(crate) const DEFAULT_UNSUPPORTED: &[&str] = &["artifacts", "hooks", "id_tokens"];

/// `artifacts:` keys Osprey implements.
pub(crate) const ARTIFACTS_SUPPORTED: &[&str] =
    &["paths", "exclude", "untracked", "when", "name", "expire_in"];

/// `artifacts:` keys GitLab has and Osprey does not implement yet.
pub(crate) const ARTIFACTS_UNSUPPORTED: &[&str] = &["access", "expose_as", "public", "reports"];

/// `image:` and `services:` entry keys GitLab has and Osprey does not implement.
pub(crate) const IMAGE_UNSUPPORTED: &[&str] = &["docker", "pull_policy", "kubernetes"];

/// How a key relates to a set of keywords.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Classified {
    Supported,
    Unsupported,
    Unknown { suggestion: Option<&'static str> },
}

/// Sorts `key` into supported, known-but-unsupported, or unknown (with the
/// closest keyword of either list as a suggestion).
pub(crate) fn classify(
    key: &str,
    supported: &[&'static str],
    unsupported: &[&'static str],
) -> Classified {
    if supported.contains(&key) {
        Classified::Supported
    } else if unsupported.contains(&key) {
        Classified::Unsupported
    } else {
        Classified::Unknown {
            suggestion: suggest(key, supported.iter().chain(unsupported).copied()),
        }
    }
}

/// " (did you mean X?)" or nothing.
pub(crate) fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map_or_else(String::new, |s| format!(" (did you mean {s}?)"))
}

/// The candidate closest to `word`, if it is close enough to be a typo:
/// at most one edit for short words, two for longer ones.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let allowed = if word.chars().count() <= 4 { 1 } else { 2 };
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= allowed && *candidate != word)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance: Levenshtein plus swaps of two adjacent
/// characters, so `scirpt` is one edit from `script`. Case-insensitive,
/// because `Script` for `script` is a typo worth pointing at.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    // Names longer than this are not typos of a keyword; skip the quadratic work.
    if a.len().abs_diff(b.len()) > 3 || a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let width = b.len() + 1;
    let mut table = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        table[i * width] = i;
    }
    for (j, cell) in table.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (table[(i - 1) * width + j] + 1)
                .min(table[i * width + j - 1] + 1)
                .min(table[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[(i - 2) * width + j - 2] + 1);
            }
            table[i * width + j] = best;
        }
    }
    table[a.len() * width + b.len()]
}
