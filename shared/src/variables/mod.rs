//! CI/CD variables as GitLab defines them: the expression language of
//! `rules:if` and `only:variables` ([`expression`]), expansion of `$VAR` in
//! values ([`expand`]), and the predefined variables that describe a ref
//! ([`predefined`]). Pure functions; the planner and the coordinator call them.

pub mod expand;
pub mod expression;
pub mod predefined;

pub use expand::{expand, resolve, ExpandError, RawVariable};
pub use expression::{Expression, ExpressionError, Pattern};

use crate::pipeline::Variable;

/// The predefined variables that follow from the ref alone (the list is
/// [`predefined::pipeline_predefined`]): what `osprey lint --plan` and
/// `osprey-agent exec` know without a coordinator.
pub fn predefined(
    git_ref: &str,
    is_tag: bool,
    source: &str,
    default_branch: Option<&str>,
) -> Vec<Variable> {
    predefined::pipeline_predefined(&predefined::Facts {
        git_ref,
        is_tag,
        source,
        default_branch,
        ..predefined::Facts::default()
    })
}

/// GitLab's `CI_COMMIT_REF_SLUG`: lowercased, every character outside
/// `0-9a-z` replaced by `-`, at most 63 bytes, no leading or trailing `-`.
pub fn ref_slug(git_ref: &str) -> String {
    let replaced: String = git_ref
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cut: String = replaced.chars().take(63).collect();
    cut.trim_matches('-').to_owned()
}

/// Whether a variable's value should be hidden when shown: names that look
/// like credentials (GitLab masks by setting; we cannot know it, so we guess
/// by name and err on the side of hiding).
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_uppercase();
    ["TOKEN", "PASSWORD", "SECRET", "KEY"]
        .iter()
        .any(|word| upper.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_follows_gitlab() {
        assert_eq!(ref_slug("feature/ABC_1.2"), "feature-abc-1-2");
        assert_eq!(ref_slug("-x-"), "x");
        assert_eq!(ref_slug(&"a".repeat(70)).len(), 63);
    }

    #[test]
    fn secret_names() {
        assert!(looks_secret("DOCKER_PASSWORD"));
        assert!(looks_secret("api_token"));
        assert!(looks_secret("SSH_PRIVATE_KEY"));
        assert!(!looks_secret("DEPLOY_ENV"));
    }
}
