//! How YAML 1.1 (GitLab's Psych) resolves the type of a plain scalar, for
//! the types pipelines care about. Split from `tree.rs`, which calls it.

use super::tree::ScalarKind;

/// Resolves a plain scalar the way YAML 1.1 (GitLab's Psych) does, for the
/// types pipelines care about.
pub(crate) fn resolve_plain(text: &str) -> ScalarKind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarKind::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return ScalarKind::Bool(true)
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return ScalarKind::Bool(false)
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return ScalarKind::Float,
        _ => {}
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let digits = |s: &str, radix: u32| {
        !s.is_empty()
            && s.chars().all(|c| c == '_' || c.is_digit(radix))
            && s.chars().any(|c| c.is_digit(radix))
    };
    if let Some(hex) = unsigned.strip_prefix("0x") {
        if digits(hex, 16) {
            return ScalarKind::Integer;
        }
    }
    if let Some(bin) = unsigned.strip_prefix("0b") {
        if digits(bin, 2) {
            return ScalarKind::Integer;
        }
    }
    if digits(unsigned, 10) && !unsigned.starts_with('_') {
        return ScalarKind::Integer;
    }
    if is_float(unsigned) {
        return ScalarKind::Float;
    }
    ScalarKind::String
}

/// `[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?` with a dot or an exponent, or
/// `\.[0-9]+...` — YAML 1.1's float without the sexagesimal form.
fn is_float(text: &str) -> bool {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    if let Some(exponent) = exponent {
        let exponent = exponent.strip_prefix(['-', '+']).unwrap_or(exponent);
        if exponent.is_empty() || !exponent.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (mantissa, None),
    };
    if fraction.is_none() && exponent.is_none() {
        return false;
    }
    let ok = |s: &str| s.chars().all(|c| c == '_' || c.is_ascii_digit());
    let has_digit = whole.chars().any(|c| c.is_ascii_digit())
        || fraction.is_some_and(|f| f.chars().any(|c| c.is_ascii_digit()));
    has_digit && ok(whole) && fraction.is_none_or(ok) && !whole.starts_with('_')
}
