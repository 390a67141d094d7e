//! Masking credentials that travel inside text we did not write: a
//! repository URL may carry a token (`https://oauth2:TOKEN@host/x.git`), and
//! git repeats URLs in its messages. Whatever of that reaches a log (the
//! coordinator's, a job's) or an API answer goes through here first.

use std::borrow::Cow;
use std::sync::LazyLock;

/// What replaces a URL's user and password.
pub const MASK: &str = "[MASKED]";

/// `text` with the user and password of every `scheme://user:pass@host` URL
/// in it replaced by [`MASK`]. scp-like `git@host:path` names only a user, no
/// secret, and is left as it is.
pub fn url_credentials(text: &str) -> Cow<'_, str> {
    static USERINFO: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@").expect("a valid pattern")
    });
    USERINFO.replace_all(text, format!("${{1}}{MASK}@").as_str())
}

#[cfg(test)]
mod tests {
    use super::url_credentials;

    #[test]
    fn credentials_in_urls_are_masked() {
        assert_eq!(
            url_credentials("fatal: https://oauth2:glpat-s3cret@git.example.com/a.git not found"),
            "fatal: https://[MASKED]@git.example.com/a.git not found"
        );
        assert_eq!(
            url_credentials("ssh://git@host/x and https://host/y"),
            "ssh://[MASKED]@host/x and https://host/y"
        );
        assert_eq!(
            url_credentials("git@host:group/x.git"),
            "git@host:group/x.git"
        );
        assert_eq!(url_credentials("no urls here"), "no urls here");
    }
}
