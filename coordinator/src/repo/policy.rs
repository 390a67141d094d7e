//! Which repository URLs the coordinator's git may touch (`--repo-allow`),
//! decided from the text alone before any git process runs.
//!
//! With no pattern configured, `https://` and `ssh://` URLs and scp-like
//! `user@host:path` are allowed; local paths, `file://`, `http://`, `git://`
//! and every other transport are refused. Configured patterns replace that
//! default: a URL is allowed when one pattern matches it whole, where `*`
//! matches any run of characters (including `/`) and `?` one character
//! (`/srv/git/*`, `https://git.example.com/*`, `ssh://*`). Whatever the
//! patterns, `ext::` (git runs a command) and URLs that could be read as an
//! option or that carry control characters are refused, as are local paths
//! with `..` segments (which would step out of an allowed directory).

use crate::error::{CoreError, CoreResult};

/// The patterns used when none is configured.
pub const DEFAULT_ALLOW: &[&str] = &["https://*", "ssh://*", "scp-like user@host:path"];

/// What kind of address a repository string is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// An absolute path on the coordinator's host, read in place.
    LocalPath,
    /// `scheme://...` (https, ssh, file, git, http...), mirrored.
    Url,
    /// `[user@]host:path`, as ssh; mirrored.
    ScpLike,
}

/// The `--repo-allow` patterns; empty means the default.
#[derive(Debug, Clone, Default)]
pub struct RepoPolicy {
    pub allow: Vec<String>,
}

impl RepoPolicy {
    /// Classifies `repo` and refuses it unless allowed; names the URL and
    /// the flag so the operator knows what to change.
    pub fn check(&self, repo: &str) -> CoreResult<RepoKind> {
        let refuse = |why: &str| {
            CoreError::InvalidArgument(format!(
                "repository {:?} is not allowed: {why} (see --repo-allow)",
                osprey_shared::redact::url_credentials(repo)
            ))
        };
        if repo.is_empty() || repo.starts_with('-') || repo.chars().any(char::is_control) {
            return Err(refuse("not a repository URL"));
        }
        let Some(kind) = classify(repo) else {
            if repo.contains("::") {
                return Err(refuse(
                    "git transports of the form `name::` are never allowed",
                ));
            }
            return Err(refuse("not an absolute path or a URL"));
        };
        if kind == RepoKind::LocalPath && repo.split('/').any(|segment| segment == "..") {
            return Err(refuse("a path with `..` segments"));
        }
        let allowed = if self.allow.is_empty() {
            kind == RepoKind::ScpLike || repo.starts_with("https://") || repo.starts_with("ssh://")
        } else {
            self.allow.iter().any(|pattern| glob_match(pattern, repo))
        };
        if allowed {
            Ok(kind)
        } else {
            Err(refuse("it matches no allowed pattern"))
        }
    }
}

/// `None` for what is neither a path nor a URL (relative paths, `ext::`).
fn classify(repo: &str) -> Option<RepoKind> {
    if repo.starts_with('/') {
        return Some(RepoKind::LocalPath);
    }
    if let Some((scheme, _)) = repo.split_once("://") {
        let valid = !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        return valid.then_some(RepoKind::Url);
    }
    // git's rule: a colon before any slash makes `host:path`; `a::b` is a
    // transport helper instead.
    let (host, path) = repo.split_once(':')?;
    if host.is_empty() || host.contains('/') || path.starts_with(':') || path.is_empty() {
        return None;
    }
    Some(RepoKind::ScpLike)
}

/// Whole-string glob: `*` any run of characters, `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Iterative matching with one backtrack point (the last `*`): linear
    // enough for URLs, no recursion to blow up on many stars.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some('?') => {
                p += 1;
                t += 1;
            }
            Some(&c) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(patterns: &[&str]) -> RepoPolicy {
        RepoPolicy {
            allow: patterns.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn the_default_allows_https_ssh_and_scp_like_only() {
        let default = RepoPolicy::default();
        for allowed in [
            "https://git.example.com/team/app.git",
            "ssh://git@git.example.com/team/app.git",
            "git@git.example.com:team/app.git",
        ] {
            assert!(default.check(allowed).is_ok(), "{allowed}");
        }
        for refused in [
            "/srv/git/app",
            "file:///srv/git/app",
            "http://127.0.0.1:9/app",
            "git://git.example.com/app",
            "ext::sh -c touch% /tmp/pwned",
            "fd::3",
            "relative/path",
            "-uhttps://x",
            "https://x\n/y",
        ] {
            let error = default.check(refused).unwrap_err().to_string();
            assert!(error.contains("--repo-allow"), "{refused}: {error}");
        }
    }

    #[test]
    fn patterns_replace_the_default_and_never_allow_ext_or_dot_dot() {
        let local = policy(&["/srv/git/*", "https://git.example.com/*"]);
        assert_eq!(local.check("/srv/git/app").unwrap(), RepoKind::LocalPath);
        assert!(local.check("https://git.example.com/a/b.git").is_ok());
        assert!(local.check("https://github.com/a/b.git").is_err());
        assert!(local.check("/srv/git/../../etc").is_err());
        assert!(local.check("/etc/passwd").is_err());
        let everything = policy(&["*"]);
        assert!(everything.check("ext::sh -c id").is_err());
        assert!(everything.check("git://host/app").is_ok());
    }

    #[test]
    fn globs_match_whole_strings() {
        assert!(glob_match("/*", "/tmp/a/b"));
        assert!(glob_match("https://h/*.git", "https://h/a/b.git"));
        assert!(!glob_match("https://h/*.git", "https://h/a/b.git/x"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("abc", "abcd"));
        assert!(glob_match("*a*a*a*", "xaxaxa"));
        assert!(!glob_match("*a*a*a*b", &"a".repeat(200)));
    }
}
