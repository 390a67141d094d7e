//! The rules of project variables and refs, as GitLab has them: which keys,
//! masked values, environment scopes and project names are valid, which
//! scope of a variable a job gets, and which refs are protected. Pure
//! functions; error texts never hold a variable's value.

use std::collections::HashMap;

/// Longest key, scope or pattern accepted (GitLab's limit for keys).
const MAX_KEY_LEN: usize = 255;
const MIN_MASKED_LEN: usize = 8;

/// A masked variable's value must be at least 8 characters, on one line,
/// without spaces (GitLab's rule), so it can be found in a log and masked.
pub fn validate_masked(key: &str, value: &str) -> Result<(), String> {
    if value.chars().count() < MIN_MASKED_LEN {
        return Err(format!(
            "variable {key}: a masked variable's value must be at least {MIN_MASKED_LEN} characters"
        ));
    }
    if value.contains(['\n', '\r']) {
        return Err(format!(
            "variable {key}: a masked variable's value must be a single line"
        ));
    }
    if value.chars().any(char::is_whitespace) {
        return Err(format!(
            "variable {key}: a masked variable's value must not contain spaces"
        ));
    }
    Ok(())
}

/// A key is 1 to 255 of `A-Z a-z 0-9 _` (GitLab's rule).
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a variable key must not be empty".to_owned());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "a variable key must be at most {MAX_KEY_LEN} characters"
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "invalid variable key {key:?}: only letters, digits and _ are allowed"
        ));
    }
    Ok(())
}

/// An environment scope: `*`, an environment name, or a name with `*`
/// wildcards (`review/*`). Environment names are letters, digits, spaces
/// and `- _ / . $ { }`.
pub fn validate_env_scope(scope: &str) -> Result<(), String> {
    if scope.is_empty() {
        return Err("an environment scope must not be empty (use * for every environment)".into());
    }
    if scope.len() > MAX_KEY_LEN {
        return Err(format!(
            "an environment scope must be at most {MAX_KEY_LEN} characters"
        ));
    }
    if scope.trim() != scope {
        return Err(format!(
            "invalid environment scope {scope:?}: it must not start or end with a space"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || " -_/.${}*".contains(c);
    if !scope.chars().all(allowed) {
        return Err(format!(
            "invalid environment scope {scope:?}: only letters, digits, spaces, - _ / . $ {{ }} and the wildcard * are allowed"
        ));
    }
    Ok(())
}

/// How specifically `scope` matches the job's environment `env`, or `None`
/// if it does not: `*` matches everything and ranks lowest, an exact name
/// ranks highest, a wildcard ranks in between by the length of its literal
/// part. A job without an environment matches `*` only.
pub fn scope_specificity(scope: &str, env: Option<&str>) -> Option<u32> {
    if scope == "*" {
        return Some(0);
    }
    let env = env?;
    if !scope.contains('*') {
        return (scope == env).then_some(u32::MAX);
    }
    if !wildcard_match(scope, env) {
        return None;
    }
    let literal = scope.chars().filter(|&c| c != '*').count();
    // 1..u32::MAX - 1: above `*`, below any exact name.
    Some(u32::try_from(literal).map_or(u32::MAX - 1, |n| n.saturating_add(1).min(u32::MAX - 1)))
}

/// For each key, the candidate whose scope matches `env` most specifically
/// (the first one on a tie). Keys come out in the order they first appear.
pub fn pick_scoped<'a, T>(
    candidates: impl IntoIterator<Item = (&'a str, &'a str, T)>,
    env: Option<&str>,
) -> Vec<(&'a str, T)> {
    let mut picked: Vec<(&'a str, u32, T)> = Vec::new();
    let mut index_of: HashMap<&'a str, usize> = HashMap::new();
    for (key, scope, value) in candidates {
        let Some(rank) = scope_specificity(scope, env) else {
            continue;
        };
        match index_of.get(key) {
            Some(&index) => {
                if rank > picked[index].1 {
                    picked[index] = (key, rank, value);
                }
            }
            None => {
                index_of.insert(key, picked.len());
                picked.push((key, rank, value));
            }
        }
    }
    picked
        .into_iter()
        .map(|(key, _, value)| (key, value))
        .collect()
}

/// Whether `git_ref` (a branch or tag name) matches one of the protected
/// patterns. As GitLab's protected branches and tags, `*` is the only
/// wildcard and matches any text, `/` included (`release/*` covers
/// `release/1.0/hotfix`); every other character is literal, so no
/// `?`/`[...]`/`{a,b}` glob syntax sneaks in.
pub fn ref_is_protected(git_ref: &str, patterns: &[String]) -> bool {
    patterns
        .iter()
        .any(|pattern| wildcard_match(pattern, git_ref))
}

/// A project name: `[a-z0-9][a-z0-9._-]{0,63}` (it appears in URLs).
pub fn validate_project_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok =
        bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !first_ok || !rest_ok || name.len() > 64 {
        return Err(format!(
            "invalid project name {name:?}: use 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit"
        ));
    }
    Ok(())
}

/// `*` matches any run of characters (including none and `/`); everything
/// else matches itself.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    // `split` always yields at least one part.
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = parts.collect();
    let Some((last, middle)) = middle.split_last() else {
        // No `*` at all: the whole text must be the literal.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_values_follow_gitlab_rules() {
        assert!(validate_masked("TOKEN", "abcdefgh").is_ok());
        assert!(validate_masked("TOKEN", "a-b_c:d+e@f.g").is_ok());
        let short = validate_masked("TOKEN", "seven77").unwrap_err();
        assert!(short.contains("at least 8 characters"), "{short}");
        assert!(short.contains("TOKEN"));
        assert!(!short.contains("seven77"));
        let lines = validate_masked("TOKEN", "abcdefgh\nijkl").unwrap_err();
        assert!(lines.contains("single line"), "{lines}");
        let spaces = validate_masked("TOKEN", "abcd efgh").unwrap_err();
        assert!(spaces.contains("spaces"), "{spaces}");
        assert!(!spaces.contains("abcd"));
        assert!(validate_masked("TOKEN", "abcd\tefgh").is_err());
    }

    #[test]
    fn keys_are_word_characters() {
        assert!(validate_key("DEPLOY_TOKEN_2").is_ok());
        assert!(validate_key("a").is_ok());
        assert!(validate_key(&"A".repeat(255)).is_ok());
        assert!(validate_key(&"A".repeat(256)).is_err());
        assert!(validate_key("").is_err());
        for bad in ["A-B", "A B", "A.B", "ÄB", "A$"] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_scopes() {
        for good in [
            "*",
            "production",
            "review/*",
            "*-prod",
            "review/$CI_COMMIT_REF_SLUG",
        ] {
            assert!(validate_env_scope(good).is_ok(), "{good}");
        }
        for bad in ["", " prod", "prod ", "pr\nod", "a|b"] {
            assert!(validate_env_scope(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn specificity_orders_star_wildcard_exact() {
        assert_eq!(scope_specificity("*", None), Some(0));
        assert_eq!(scope_specificity("*", Some("production")), Some(0));
        assert_eq!(scope_specificity("production", None), None);
        assert_eq!(scope_specificity("review/*", None), None);
        assert_eq!(
            scope_specificity("production", Some("production")),
            Some(u32::MAX)
        );
        assert_eq!(scope_specificity("production", Some("staging")), None);
        let review = scope_specificity("review/*", Some("review/feature-1")).unwrap();
        let narrower = scope_specificity("review/feature-*", Some("review/feature-1")).unwrap();
        assert!(0 < review && review < narrower && narrower < u32::MAX);
        assert_eq!(scope_specificity("review/*", Some("staging")), None);
        assert!(scope_specificity("*-prod", Some("eu-prod")).is_some());
        assert_eq!(scope_specificity("*-prod", Some("eu-prod-2")), None);
    }

    #[test]
    fn the_most_specific_scope_wins_per_key() {
        let candidates = vec![
            ("TOKEN", "*", 1),
            ("URL", "*", 2),
            ("TOKEN", "review/*", 3),
            ("TOKEN", "production", 4),
            ("ONLY_PROD", "production", 5),
        ];
        assert_eq!(
            pick_scoped(candidates.clone(), Some("review/x")),
            vec![("TOKEN", 3), ("URL", 2)]
        );
        assert_eq!(
            pick_scoped(candidates.clone(), Some("production")),
            vec![("TOKEN", 4), ("URL", 2), ("ONLY_PROD", 5)]
        );
        assert_eq!(
            pick_scoped(candidates, None),
            vec![("TOKEN", 1), ("URL", 2)]
        );
        // Order of candidates does not matter for which one wins.
        let reversed = vec![("K", "production", "exact"), ("K", "*", "any")];
        assert_eq!(
            pick_scoped(reversed, Some("production")),
            vec![("K", "exact")]
        );
    }

    #[test]
    fn protected_refs_use_gitlab_wildcards() {
        let patterns: Vec<String> = ["main", "release/*", "v*"].map(String::from).to_vec();
        assert!(ref_is_protected("main", &patterns));
        assert!(ref_is_protected("release/1.0", &patterns));
        assert!(ref_is_protected("release/1.0/hotfix", &patterns));
        assert!(ref_is_protected("v1.2.3", &patterns));
        assert!(!ref_is_protected("mainline", &patterns));
        assert!(!ref_is_protected("feature/main", &patterns));
        assert!(!ref_is_protected("release", &patterns));
        assert!(!ref_is_protected("main", &[]));
        // Glob syntax other than `*` is literal.
        assert!(!ref_is_protected("a", &["?".to_owned()]));
        assert!(ref_is_protected("[x]", &["[x]".to_owned()]));
        assert!(ref_is_protected("a-b-c", &["*-*-*".to_owned()]));
        assert!(!ref_is_protected("ab", &["a*b*b".to_owned()]));
    }

    #[test]
    fn project_names() {
        for good in ["osprey", "my-app.v2", "0day", "a_b", &"a".repeat(64)] {
            assert!(validate_project_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "_x",
            "Osprey",
            "a/b",
            "a b",
            &"a".repeat(65),
        ] {
            assert!(validate_project_name(bad).is_err(), "{bad:?}");
        }
    }
}
