//! GitLab's human durations (`timeout: 1h 30m`, `10 minutes`, `3600`, `90s`)
//! to seconds.
//!
//! GitLab parses these with the ChronicDuration gem. We accept the part of
//! its grammar people write in pipelines: numbers (decimals allowed), each
//! followed by an optional unit (a bare number means seconds), separated by
//! spaces, commas or `and`, in any order of units. ChronicDuration's clock
//! form (`1:30`) and years are not accepted; both give an error naming the
//! value rather than a guess.

/// The longest timeout GitLab accepts: one month, as Rails counts it.
pub(crate) const MAX_TIMEOUT_SECONDS: u64 = 2_629_746;

/// Why a duration was refused; the text completes "timeout ...".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DurationError(pub String);

/// Parses a GitLab duration to whole seconds (fractions are dropped), at
/// most [`MAX_TIMEOUT_SECONDS`].
pub(crate) fn parse_duration(text: &str) -> Result<u64, DurationError> {
    parse_duration_up_to(text, MAX_TIMEOUT_SECONDS, "GitLab's limit of one month")
}

/// The longest `artifacts:expire_in` accepted: ten years of 365 days.
pub(crate) const MAX_EXPIRY_SECONDS: u64 = 10 * 365 * 86_400;

/// Parses `artifacts:expire_in` (a duration; `never` is the caller's).
pub(crate) fn parse_expiry(text: &str) -> Result<u64, DurationError> {
    parse_duration_up_to(text, MAX_EXPIRY_SECONDS, "Osprey's limit of ten years")
}

fn parse_duration_up_to(text: &str, max: u64, max_text: &str) -> Result<u64, DurationError> {
    let invalid = || {
        DurationError(format!(
            "{text:?} is not a duration (write e.g. 3600, 90s, 10 minutes or 1h 30m)"
        ))
    };
    let mut total = 0f64;
    let mut pending: Option<f64> = None;
    let mut any = false;
    for token in tokens(text).ok_or_else(invalid)? {
        match token {
            Token::Number(value) => {
                if let Some(seconds) = pending.replace(value) {
                    total += seconds;
                }
                any = true;
            }
            Token::Word(word) if word.eq_ignore_ascii_case("and") => {}
            Token::Word(word) => {
                let unit = unit_seconds(&word.to_ascii_lowercase()).ok_or_else(invalid)?;
                let value = pending.take().ok_or_else(invalid)?;
                total += value * unit;
            }
        }
    }
    if let Some(seconds) = pending {
        total += seconds;
    }
    if !any {
        return Err(invalid());
    }
    if total > max as f64 {
        return Err(DurationError(format!("{text:?} is longer than {max_text}")));
    }
    // Safe: 0 <= total <= max here.
    let seconds = total.floor() as u64;
    if seconds == 0 {
        return Err(DurationError(format!(
            "{text:?} must be at least one second"
        )));
    }
    Ok(seconds)
}

enum Token<'a> {
    Number(f64),
    Word(&'a str),
}

/// Splits into numbers and words; `None` on any other character.
fn tokens(text: &str) -> Option<Vec<Token<'_>>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(first) = rest.chars().next() {
        if first.is_whitespace() || first == ',' {
            rest = &rest[first.len_utf8()..];
        } else if first.is_ascii_digit() || first == '.' {
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let number: f64 = rest[..end].parse().ok()?;
            if !number.is_finite() {
                return None;
            }
            out.push(Token::Number(number));
            rest = &rest[end..];
        } else if first.is_ascii_alphabetic() {
            let end = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            out.push(Token::Word(&rest[..end]));
            rest = &rest[end..];
        } else {
            return None;
        }
    }
    Some(out)
}

fn unit_seconds(unit: &str) -> Option<f64> {
    Some(match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "wk" | "wks" | "week" | "weeks" => 604_800.0,
        // ChronicDuration's month is 30 days.
        "mo" | "mos" | "month" | "months" => 2_592_000.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_duration_forms() {
        assert_eq!(parse_duration("3600"), Ok(3600));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("10 minutes"), Ok(600));
        assert_eq!(parse_duration("1h 30m"), Ok(5400));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("2 hours and 5 mins"), Ok(7500));
        assert_eq!(parse_duration("1.5h"), Ok(5400));
        assert_eq!(parse_duration("3 days, 4 hrs"), Ok(273_600));
        assert_eq!(parse_duration("1 week"), Ok(604_800));
    }

    #[test]
    fn bad_durations_are_refused() {
        for text in [
            "",
            "soon",
            "h",
            "10 fortnights",
            "1:30",
            "0",
            "2 months",
            "1..2h",
            "-5m",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} accepted");
        }
    }
}
