//! Time on the wire: instants as whole seconds since the Unix epoch (UTC), calendar dates as
//! `YYYY-MM-DD` text. The protocol never reads a clock; callers pass `now` in.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An instant, in whole seconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This many seconds later (saturating).
    pub fn plus_secs(self, secs: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs))
    }

    /// This many seconds earlier (saturating at the epoch).
    pub fn minus_secs(self, secs: u64) -> Timestamp {
        Timestamp(self.0.saturating_sub(secs))
    }

    /// The calendar date (UTC) this instant falls on.
    pub fn date(self) -> Date {
        let secs = i64::try_from(self.0).unwrap_or(i64::MAX);
        let dt = ::time::OffsetDateTime::from_unix_timestamp(secs)
            .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH);
        Date(dt.date())
    }

    /// RFC 3339 text, e.g. `2026-11-26T22:02:34Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = i64::try_from(self.0).unwrap_or(i64::MAX);
        ::time::OffsetDateTime::from_unix_timestamp(secs)
            .ok()
            .and_then(|dt| {
                dt.format(&::time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| format!("@{}", self.0))
    }

    /// Parses RFC 3339 text (any offset) into a timestamp.
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, DateError> {
        let dt = ::time::OffsetDateTime::parse(s, &::time::format_description::well_known::Rfc3339)
            .map_err(|_| DateError::Timestamp(s.chars().take(40).collect()))?;
        u64::try_from(dt.unix_timestamp())
            .map(Timestamp)
            .map_err(|_| DateError::Timestamp(s.chars().take(40).collect()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// A calendar date with no time zone, `YYYY-MM-DD` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Date(::time::Date);

/// A date or timestamp that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// Not a real `YYYY-MM-DD` calendar date.
    #[error("{0:?} is not a date in the form YYYY-MM-DD")]
    Date(String),
    /// Not an RFC 3339 timestamp at or after 1970.
    #[error("{0:?} is not an RFC 3339 timestamp such as 2026-11-26T09:30:00Z")]
    Timestamp(String),
}

const DATE_FORMAT: &[::time::format_description::FormatItem<'static>] =
    ::time::macros::format_description!("[year]-[month]-[day]");

impl Date {
    /// Builds a date from its parts, if it exists in the calendar.
    pub fn from_ymd(year: i32, month: u8, day: u8) -> Result<Date, DateError> {
        let m = ::time::Month::try_from(month)
            .map_err(|_| DateError::Date(format!("{year:04}-{month:02}-{day:02}")))?;
        ::time::Date::from_calendar_date(year, m, day)
            .map(Date)
            .map_err(|_| DateError::Date(format!("{year:04}-{month:02}-{day:02}")))
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Result<Date, DateError> {
        if s.len() != 10 {
            return Err(DateError::Date(s.chars().take(40).collect()));
        }
        ::time::Date::parse(s, DATE_FORMAT)
            .map(Date)
            .map_err(|_| DateError::Date(s.to_owned()))
    }

    /// This date plus (or minus) a number of days, clamped to the supported range.
    pub fn add_days(self, days: i64) -> Date {
        Date(
            self.0
                .checked_add(::time::Duration::days(days))
                .unwrap_or(if days < 0 {
                    ::time::Date::MIN
                } else {
                    ::time::Date::MAX
                }),
        )
    }

    /// The year.
    pub fn year(self) -> i32 {
        self.0.year()
    }

    /// Midnight UTC at the start of this date, as a timestamp (the epoch for earlier dates).
    pub fn start_timestamp(self) -> Timestamp {
        let secs = self.0.midnight().assume_utc().unix_timestamp();
        Timestamp(u64::try_from(secs).unwrap_or(0))
    }
}

impl TryFrom<String> for Date {
    type Error = DateError;
    fn try_from(s: String) -> Result<Date, DateError> {
        Date::parse(&s)
    }
}

impl From<Date> for String {
    fn from(d: Date) -> String {
        d.to_string()
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}",
            self.0.year(),
            u8::from(self.0.month()),
            self.0.day()
        )
    }
}

impl std::str::FromStr for Date {
    type Err = DateError;
    fn from_str(s: &str) -> Result<Date, DateError> {
        Date::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_only_real_days() {
        assert_eq!(Date::parse("2024-02-29").unwrap().to_string(), "2024-02-29");
        assert!(Date::parse("2023-02-29").is_err());
        assert!(Date::parse("2023-2-1").is_err());
        assert!(Date::parse("yesterday").is_err());
    }

    #[test]
    fn timestamps_format_and_parse() {
        let t = Timestamp(1_790_000_000);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()).unwrap(), t);
        assert_eq!(t.date().to_string(), "2026-09-21");
        assert!(Timestamp::parse_rfc3339("1969-12-31T23:59:59Z").is_err());
    }
}
