//! Durations on the command line (`--poll 30s`, `--expires 30d`): a number
//! of seconds, or numbers each with a unit `s`, `m`, `h`, `d` or `w`,
//! written together or apart (`1h30m`, `1h 30m`).

/// Parses a duration to whole seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let invalid = || format!("{text:?} is not a duration (write e.g. 90, 30s, 5m, 1h30m or 30d)");
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(invalid());
    }
    if let Ok(seconds) = trimmed.parse::<u64>() {
        return Ok(seconds);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in trimmed.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        if c.is_whitespace() {
            if number.is_empty() {
                continue;
            }
            return Err(invalid());
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(invalid()),
        };
        let value: u64 = number.parse().map_err(|_| invalid())?;
        number.clear();
        total = value
            .checked_mul(unit)
            .and_then(|seconds| total.checked_add(seconds))
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
    }
    if !number.is_empty() {
        // A bare number after units (`1h30`) is ambiguous.
        return Err(invalid());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        assert_eq!(parse_duration("60"), Ok(60));
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("5m"), Ok(300));
        assert_eq!(parse_duration("1h"), Ok(3_600));
        assert_eq!(parse_duration("30d"), Ok(2_592_000));
        assert_eq!(parse_duration("2w"), Ok(1_209_600));
        assert_eq!(parse_duration("1h30m"), Ok(5_400));
        assert_eq!(parse_duration("1h 30m"), Ok(5_400));
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in [
            "",
            "m",
            "1x",
            "1h30",
            "-5s",
            "1.5h",
            "1 h",
            "99999999999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
