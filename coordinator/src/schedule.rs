//! Cron expressions of pipeline schedules: parsing (5 fields, 6 with
//! seconds first, or `@daily`-style nicknames) in an IANA time zone, and
//! the next time one fires. Pure; the schedule runner keeps the clock.
//!
//! `croner` works on chrono times; the codebase uses `time`, so both ends
//! are converted here, through Unix nanoseconds.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use std::fmt;
use time::OffsetDateTime;

/// A parsed cron expression and the time zone it is read in.
#[derive(Clone)]
pub struct Cron {
    expression: String,
    timezone: Tz,
    cron: croner::Cron,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cron")
            .field("expression", &self.expression)
            .field("timezone", &self.timezone.name())
            .finish()
    }
}

impl Cron {
    /// Parses `expr` in `timezone` (an IANA name; empty means UTC).
    pub fn parse(expr: &str, timezone: &str) -> Result<Cron, String> {
        let zone_name = timezone.trim();
        let timezone: Tz = if zone_name.is_empty() {
            Tz::UTC
        } else {
            zone_name.parse().map_err(|_| {
                format!("unknown time zone {zone_name:?}: use an IANA name such as UTC or Europe/Lisbon")
            })?
        };
        let expression = expr.trim();
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|error| {
                format!(
                    "invalid cron expression {expression:?}: {error} (expected 5 fields \
                     `minute hour day month weekday`, 6 with seconds first, or @hourly/@daily/@weekly/@monthly/@yearly)"
                )
            })?;
        Ok(Cron {
            expression: expression.to_owned(),
            timezone,
            cron,
        })
    }

    /// The expression as given (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The IANA name of its time zone.
    pub fn timezone(&self) -> &str {
        self.timezone.name()
    }

    /// The first time strictly after `after` that the expression matches;
    /// `None` if it never does again (or beyond what croner searches).
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let nanos = after.unix_timestamp_nanos();
        let seconds = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
        let subsec = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
        let start = DateTime::<Utc>::from_timestamp(seconds, subsec)?.with_timezone(&self.timezone);
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        let next_nanos = i128::from(next.timestamp()) * 1_000_000_000
            + i128::from(next.timestamp_subsec_nanos());
        let next = OffsetDateTime::from_unix_timestamp_nanos(next_nanos).ok()?;
        // croner works in whole seconds; never hand back `after` itself.
        (next > after).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn next(expr: &str, zone: &str, after: OffsetDateTime) -> OffsetDateTime {
        Cron::parse(expr, zone).unwrap().next_after(after).unwrap()
    }

    #[test]
    fn every_five_minutes() {
        assert_eq!(
            next("*/5 * * * *", "UTC", datetime!(2026-05-01 10:02:00 UTC)),
            datetime!(2026-05-01 10:05:00 UTC)
        );
        // Strictly after: on the boundary, the one after it.
        assert_eq!(
            next("*/5 * * * *", "", datetime!(2026-05-01 10:05:00 UTC)),
            datetime!(2026-05-01 10:10:00 UTC)
        );
        // Just past the boundary.
        assert_eq!(
            next("*/5 * * * *", "UTC", datetime!(2026-05-01 10:05:00.25 UTC)),
            datetime!(2026-05-01 10:10:00 UTC)
        );
        // Just before it.
        assert_eq!(
            next("*/5 * * * *", "UTC", datetime!(2026-05-01 10:04:59.5 UTC)),
            datetime!(2026-05-01 10:05:00 UTC)
        );
    }

    #[test]
    fn seconds_come_first_in_six_fields() {
        assert_eq!(
            next("*/2 * * * * *", "UTC", datetime!(2026-05-01 10:00:01 UTC)),
            datetime!(2026-05-01 10:00:02 UTC)
        );
        assert_eq!(
            next("*/2 * * * * *", "UTC", datetime!(2026-05-01 10:00:02 UTC)),
            datetime!(2026-05-01 10:00:04 UTC)
        );
        assert_eq!(
            next("30 0 12 * * *", "UTC", datetime!(2026-05-01 10:00:00 UTC)),
            datetime!(2026-05-01 12:00:30 UTC)
        );
    }

    #[test]
    fn nicknames() {
        assert_eq!(
            next("@daily", "UTC", datetime!(2026-05-01 10:00:00 UTC)),
            datetime!(2026-05-02 00:00:00 UTC)
        );
        assert_eq!(
            next("@hourly", "UTC", datetime!(2026-05-01 10:00:00 UTC)),
            datetime!(2026-05-01 11:00:00 UTC)
        );
    }

    #[test]
    fn time_zones() {
        // Lisbon is UTC+1 in summer.
        let cron = Cron::parse("0 9 * * *", "Europe/Lisbon").unwrap();
        assert_eq!(cron.timezone(), "Europe/Lisbon");
        assert_eq!(
            cron.next_after(datetime!(2026-07-01 00:00:00 UTC)).unwrap(),
            datetime!(2026-07-01 08:00:00 UTC)
        );
        // And UTC+0 in winter.
        assert_eq!(
            cron.next_after(datetime!(2026-01-10 09:30:00 UTC)).unwrap(),
            datetime!(2026-01-11 09:00:00 UTC)
        );
        // The input's offset does not matter, only the instant.
        assert_eq!(
            cron.next_after(datetime!(2026-07-01 02:00:00 +02:00))
                .unwrap(),
            datetime!(2026-07-01 08:00:00 UTC)
        );
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let error = Cron::parse("61 * * * *", "UTC").unwrap_err();
        assert!(
            error.contains("invalid cron expression \"61 * * * *\""),
            "{error}"
        );
        let error = Cron::parse("* * *", "UTC").unwrap_err();
        assert!(error.contains("invalid cron expression"), "{error}");
        let error = Cron::parse("0 0 0 1 1 * 2030", "UTC");
        assert!(error.is_err(), "no 7th field (year)");
        let error = Cron::parse("0 9 * * *", "Mars/Olympus").unwrap_err();
        assert!(
            error.contains("unknown time zone \"Mars/Olympus\""),
            "{error}"
        );
    }

    #[test]
    fn a_date_that_never_comes_gives_none() {
        let cron = Cron::parse("0 0 30 2 *", "UTC").unwrap();
        assert_eq!(cron.next_after(datetime!(2026-01-01 00:00:00 UTC)), None);
    }
}
