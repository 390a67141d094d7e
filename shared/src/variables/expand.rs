//! Expansion of `$VAR` and `${VAR}` in variable values, and resolution of a
//! whole collection of variables that refer to each other.
//!
//! GitLab's rules, followed here: `$$` is a literal `$`; a reference to a
//! variable that is not in the collection is kept as written (the runner may
//! still know it, e.g. `$CI_JOB_ID`); a variable with `expand: false` is used
//! as written, both as a value and when another variable refers to it; a
//! cycle of references is an error.

use std::collections::HashMap;

/// Longest chain of variables referring to each other that is followed.
const MAX_REFERENCE_DEPTH: usize = 64;

/// Longest expanded value produced; stops `A: $B$B`, `B: $C$C`... from
/// doubling its way to gigabytes.
const MAX_EXPANDED_LENGTH: usize = 1 << 20;

/// One variable of a collection, in precedence order (later wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawVariable {
    pub key: String,
    pub value: String,
    /// `expand: false`: the value is used as written.
    pub raw: bool,
}

/// Why a collection could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("circular variable reference: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("variable {0} expands to more than {MAX_EXPANDED_LENGTH} characters")]
    TooLong(String),
}

/// A reference found in a value.
enum Piece<'a> {
    Text(&'a str),
    Dollar,
    Variable { name: &'a str, written: &'a str },
}

/// Splits a value into literal text, `$$` escapes and references.
fn pieces(value: &str) -> Vec<Piece<'_>> {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    let name_len = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count()
    };
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let piece_end;
        let piece = if bytes.get(i + 1) == Some(&b'$') {
            piece_end = i + 2;
            Piece::Dollar
        } else if bytes.get(i + 1) == Some(&b'{') {
            let len = name_len(i + 2);
            if len == 0 || bytes.get(i + 2 + len) != Some(&b'}') {
                i += 1;
                continue;
            }
            piece_end = i + 3 + len;
            Piece::Variable {
                name: &value[i + 2..i + 2 + len],
                written: &value[i..piece_end],
            }
        } else {
            let len = name_len(i + 1);
            if len == 0 {
                i += 1;
                continue;
            }
            piece_end = i + 1 + len;
            Piece::Variable {
                name: &value[i + 1..piece_end],
                written: &value[i..piece_end],
            }
        };
        if text_start < i {
            out.push(Piece::Text(&value[text_start..i]));
        }
        out.push(piece);
        i = piece_end;
        text_start = i;
    }
    if text_start < bytes.len() {
        out.push(Piece::Text(&value[text_start..]));
    }
    out
}

/// Expands one value with `lookup`; unknown references stay as written.
pub fn expand(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(value.len());
    for piece in pieces(value) {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Dollar => out.push('$'),
            Piece::Variable { name, written } => match lookup(name) {
                Some(found) => out.push_str(&found),
                None => out.push_str(written),
            },
        }
    }
    out
}

/// Resolves a collection: the last definition of each name wins, and every
/// value is expanded against the others. Returns the variables in the order
/// each name first appeared, with their final values.
pub fn resolve(variables: &[RawVariable]) -> Result<Vec<(String, String)>, ExpandError> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_name: HashMap<&str, &RawVariable> = HashMap::new();
    for variable in variables {
        if by_name.insert(&variable.key, variable).is_none() {
            order.push(&variable.key);
        }
    }
    let mut done: HashMap<String, String> = HashMap::new();
    for name in &order {
        let mut chain = Vec::new();
        resolve_one(name, &by_name, &mut done, &mut chain)?;
    }
    Ok(order
        .into_iter()
        .map(|name| {
            let value = done.get(name).cloned().unwrap_or_default();
            (name.to_owned(), value)
        })
        .collect())
}

fn resolve_one(
    name: &str,
    by_name: &HashMap<&str, &RawVariable>,
    done: &mut HashMap<String, String>,
    chain: &mut Vec<String>,
) -> Result<String, ExpandError> {
    if let Some(value) = done.get(name) {
        return Ok(value.clone());
    }
    let Some(variable) = by_name.get(name) else {
        return Ok(format!("${name}"));
    };
    if variable.raw {
        done.insert(name.to_owned(), variable.value.clone());
        return Ok(variable.value.clone());
    }
    if chain.iter().any(|n| n == name) || chain.len() >= MAX_REFERENCE_DEPTH {
        let mut cycle = chain.clone();
        cycle.push(name.to_owned());
        return Err(ExpandError::Cycle(cycle));
    }
    chain.push(name.to_owned());
    let mut out = String::new();
    for piece in pieces(&variable.value) {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Dollar => out.push('$'),
            Piece::Variable {
                name: other,
                written,
            } => {
                if by_name.contains_key(other) {
                    out.push_str(&resolve_one(other, by_name, done, chain)?);
                } else {
                    out.push_str(written);
                }
            }
        }
        if out.len() > MAX_EXPANDED_LENGTH {
            return Err(ExpandError::TooLong(name.to_owned()));
        }
    }
    chain.pop();
    done.insert(name.to_owned(), out.clone());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(key: &str, value: &str) -> RawVariable {
        RawVariable {
            key: key.to_owned(),
            value: value.to_owned(),
            raw: false,
        }
    }

    #[test]
    fn expand_forms_and_escape() {
        let lookup = |name: &str| (name == "A").then(|| "x".to_owned());
        assert_eq!(expand("$A-${A}-$$A-$B-${B}-$", &lookup), "x-x-$A-$B-${B}-$");
        assert_eq!(expand("${A", &lookup), "${A");
        assert_eq!(expand("é$A€", &lookup), "éx€");
    }

    #[test]
    fn collection_resolves_references_in_any_order() {
        let resolved = resolve(&[
            var("URL", "https://$HOST/$PATH_PART"),
            var("HOST", "example.com"),
            var("PATH_PART", "api"),
            var("HOST", "override.example.com"),
        ])
        .unwrap();
        assert_eq!(
            resolved,
            [
                (
                    "URL".to_owned(),
                    "https://override.example.com/api".to_owned()
                ),
                ("HOST".to_owned(), "override.example.com".to_owned()),
                ("PATH_PART".to_owned(), "api".to_owned()),
            ]
        );
    }

    #[test]
    fn raw_variables_are_not_expanded() {
        let mut raw = var("RAW", "$HOST");
        raw.raw = true;
        let resolved = resolve(&[var("HOST", "h"), raw, var("USES", "[$RAW]")]).unwrap();
        assert_eq!(resolved[1].1, "$HOST");
        assert_eq!(resolved[2].1, "[$HOST]");
    }

    #[test]
    fn cycles_are_errors() {
        let error = resolve(&[var("A", "$B"), var("B", "${A}")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "circular variable reference: A -> B -> A"
        );
    }

    #[test]
    fn doubling_is_bounded() {
        let mut vars = vec![var("V0", "xxxxxxxxxxxxxxxx")];
        for i in 1..40 {
            vars.push(var(&format!("V{i}"), &format!("$V{0}$V{0}", i - 1)));
        }
        assert!(matches!(resolve(&vars), Err(ExpandError::TooLong(_))));
    }
}
