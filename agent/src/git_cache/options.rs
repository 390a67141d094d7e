//! GitLab's checkout variables (`GIT_STRATEGY`, `GIT_DEPTH`,
//! `GIT_CLEAN_FLAGS`, `GIT_CHECKOUT`, `GIT_SUBMODULE_STRATEGY`), read from a
//! job's variables with GitLab's meanings and defaults. A value the agent
//! cannot honour fails the job with a message naming the variable, rather
//! than silently doing something else.

use osprey_proto::v1::JobSpec;

/// How the project dir gets the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Reuse the slot's dir: fetch from the mirror, checkout, clean (default).
    Fetch,
    /// Remove the dir, then fetch into a new repository.
    Clone,
    /// No git at all; the dir is left as it is (created empty if missing).
    None,
    /// The dir is emptied and not populated.
    Empty,
}

/// Which submodules are brought up to date after the checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submodules {
    None,
    Normal,
    Recursive,
}

/// The checkout a job asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitOptions {
    pub strategy: Strategy,
    /// Shallow depth of the work tree; `None` = full history.
    pub depth: Option<u32>,
    /// Arguments of `git clean`; `None` = no clean.
    pub clean_flags: Option<Vec<String>>,
    pub checkout: bool,
    pub submodules: Submodules,
}

impl Default for GitOptions {
    fn default() -> Self {
        Self {
            strategy: Strategy::Fetch,
            depth: None,
            clean_flags: Some(vec!["-ffdx".to_owned()]),
            checkout: true,
            submodules: Submodules::None,
        }
    }
}

/// A checkout variable with a value the agent refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct BadVariable {
    pub variable: &'static str,
    pub message: String,
}

fn bad(variable: &'static str, message: String) -> BadVariable {
    BadVariable { variable, message }
}

impl GitOptions {
    /// Reads the options from the job's variables; the last definition of a
    /// key wins, as in the job's environment. An empty value is unset.
    pub fn from_spec(spec: &JobSpec) -> Result<Self, BadVariable> {
        let lookup = |key: &str| {
            spec.variables
                .iter()
                .rev()
                .find(|variable| variable.key == key)
                .map(|variable| variable.value.trim())
                .filter(|value| !value.is_empty())
        };
        Self::from_lookup(lookup)
    }

    fn from_lookup<'a>(lookup: impl Fn(&str) -> Option<&'a str>) -> Result<Self, BadVariable> {
        let mut options = Self::default();
        if let Some(value) = lookup("GIT_STRATEGY") {
            options.strategy = match value {
                "fetch" => Strategy::Fetch,
                "clone" => Strategy::Clone,
                "none" => Strategy::None,
                "empty" => Strategy::Empty,
                other => {
                    return Err(bad(
                        "GIT_STRATEGY",
                        format!("unknown value {other:?} (expected fetch, clone, none or empty)"),
                    ))
                }
            };
        }
        if let Some(value) = lookup("GIT_DEPTH") {
            let depth: u32 = value.parse().map_err(|_| {
                bad(
                    "GIT_DEPTH",
                    format!("{value:?} is not a non-negative number"),
                )
            })?;
            options.depth = (depth > 0).then_some(depth);
        }
        if let Some(value) = lookup("GIT_CLEAN_FLAGS") {
            options.clean_flags = parse_clean_flags(value)?;
        }
        if let Some(value) = lookup("GIT_CHECKOUT") {
            options.checkout = match value {
                "true" => true,
                "false" => false,
                other => {
                    return Err(bad(
                        "GIT_CHECKOUT",
                        format!("unknown value {other:?} (expected true or false)"),
                    ))
                }
            };
        }
        if let Some(value) = lookup("GIT_SUBMODULE_STRATEGY") {
            options.submodules = match value {
                "none" => Submodules::None,
                "normal" => Submodules::Normal,
                "recursive" => Submodules::Recursive,
                other => {
                    return Err(bad(
                        "GIT_SUBMODULE_STRATEGY",
                        format!("unknown value {other:?} (expected none, normal or recursive)"),
                    ))
                }
            };
        }
        Ok(options)
    }
}

/// `none` disables the clean; otherwise only `-`-prefixed clusters of
/// `fdxXqn` and `-e PATTERN` pairs: nothing that could turn `git clean` into
/// another command (`--exec`-like long options, a path outside the dir).
fn parse_clean_flags(value: &str) -> Result<Option<Vec<String>>, BadVariable> {
    if value == "none" {
        return Ok(None);
    }
    let refuse = |token: &str| {
        bad(
            "GIT_CLEAN_FLAGS",
            format!("{token:?} is not allowed (only -f, -d, -x, -X, -q, -n and -e PATTERN)"),
        )
    };
    let mut flags = Vec::new();
    let mut tokens = value.split_whitespace();
    while let Some(token) = tokens.next() {
        if token == "-e" {
            let pattern = tokens
                .next()
                .ok_or_else(|| bad("GIT_CLEAN_FLAGS", "-e needs a pattern after it".to_owned()))?;
            flags.push(token.to_owned());
            flags.push(pattern.to_owned());
            continue;
        }
        let letters = token.strip_prefix('-').ok_or_else(|| refuse(token))?;
        if letters.is_empty() || !letters.chars().all(|c| "fdxXqn".contains(c)) {
            return Err(refuse(token));
        }
        flags.push(token.to_owned());
    }
    Ok(Some(flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<GitOptions, BadVariable> {
        GitOptions::from_lookup(|key| {
            pairs
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, value)| *value)
        })
    }

    #[test]
    fn defaults_are_gitlabs() {
        let options = parse(&[]).unwrap();
        assert_eq!(options, GitOptions::default());
        assert_eq!(options.strategy, Strategy::Fetch);
        assert_eq!(options.clean_flags, Some(vec!["-ffdx".to_owned()]));
        assert_eq!(parse(&[("GIT_DEPTH", "0")]).unwrap().depth, None);
    }

    #[test]
    fn each_variable_is_read() {
        let options = parse(&[
            ("GIT_STRATEGY", "none"),
            ("GIT_DEPTH", "3"),
            ("GIT_CLEAN_FLAGS", "-ffdx -e keep/ -q"),
            ("GIT_CHECKOUT", "false"),
            ("GIT_SUBMODULE_STRATEGY", "recursive"),
        ])
        .unwrap();
        assert_eq!(options.strategy, Strategy::None);
        assert_eq!(options.depth, Some(3));
        assert_eq!(
            options.clean_flags.unwrap(),
            ["-ffdx", "-e", "keep/", "-q"].map(String::from)
        );
        assert!(!options.checkout);
        assert_eq!(options.submodules, Submodules::Recursive);
        let none = parse(&[("GIT_CLEAN_FLAGS", "none")]).unwrap();
        assert_eq!(none.clean_flags, None);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let err = parse(&[("GIT_STRATEGY", "fetchh")]).unwrap_err();
        assert_eq!(err.variable, "GIT_STRATEGY");
        assert!(err.to_string().starts_with("GIT_STRATEGY:"), "{err}");
        assert!(err.to_string().contains("fetchh"), "{err}");
        for (key, value) in [
            ("GIT_DEPTH", "-1"),
            ("GIT_DEPTH", "many"),
            ("GIT_CHECKOUT", "no"),
            ("GIT_SUBMODULE_STRATEGY", "all"),
            ("GIT_CLEAN_FLAGS", "--exclude=x"),
            ("GIT_CLEAN_FLAGS", "-ffdx /etc"),
            ("GIT_CLEAN_FLAGS", "-fz"),
            ("GIT_CLEAN_FLAGS", "-"),
            ("GIT_CLEAN_FLAGS", "-fe x"),
            ("GIT_CLEAN_FLAGS", "-f -e"),
        ] {
            let err = parse(&[(key, value)]).unwrap_err();
            assert_eq!(err.variable, key, "{value}");
        }
    }
}
