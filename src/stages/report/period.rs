//! Calendar periods in a time zone: the period an instant falls in, where it starts and
//! ends, and its name.
//!
//! A period is a span of the local calendar (an hour, a day, an ISO week from Monday, a
//! month) turned into instants: it starts at the first instant whose local time is its
//! first local time and ends where the next period starts. So a day in a zone with
//! daylight saving time is 23 or 25 hours long on the days the clocks change; a local
//! midnight that does not exist (clocks moved forward at 00:00) starts the day at the
//! first local time that does; the hour that repeats when clocks go back is one hourly
//! period of two hours, and the hour skipped when they go forward is none. The periods of
//! one calendar never overlap and leave no gap.

use chrono::{Datelike, Days, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::Timestamp;

/// The calendar period totals are kept over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// An hour of the local clock (named `2026-03-14T09:00`).
    Hourly,
    /// A local calendar day, midnight to midnight (named `2026-03-14`).
    Daily,
    /// An ISO week, Monday 00:00 to the next Monday 00:00 (named `2026-W11`).
    Weekly,
    /// A local calendar month, from the 1st at 00:00 (named `2026-03`).
    Monthly,
}

impl Period {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
        }
    }

    /// What one period is called in a sentence: `hour`, `day`, `week`, `month`.
    pub fn noun(self) -> &'static str {
        match self {
            Period::Hourly => "hour",
            Period::Daily => "day",
            Period::Weekly => "week",
            Period::Monthly => "month",
        }
    }
}

/// One period: `[start, end)` and its name in the local calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Its first instant.
    pub start: Timestamp,
    /// The first instant of the next period.
    pub end: Timestamp,
    /// Its name: `2026-03-14T09:00`, `2026-03-14`, `2026-W11` or `2026-03`.
    pub label: String,
}

/// The periods of one kind in one time zone.
#[derive(Debug, Clone, Copy)]
pub struct Calendar {
    /// The kind of period.
    pub period: Period,
    /// The time zone.
    pub tz: Tz,
}

/// The longest run of local times that do not exist which [`Calendar::first_instant`]
/// steps over (Samoa skipped a whole day in 2011).
const MAX_GAP_MINUTES: u32 = 48 * 60;

impl Calendar {
    /// A calendar of `period`s in `tz`.
    pub fn new(period: Period, tz: Tz) -> Calendar {
        Calendar { period, tz }
    }

    /// The period `t` falls in. An instant so far from now that the calendar cannot be
    /// worked out (beyond the years chrono holds) is a period of its own millisecond.
    pub fn span_of(&self, t: Timestamp) -> Span {
        self.try_span_of(t).unwrap_or_else(|| Span {
            start: t,
            end: crate::time::later_by(t, chrono::Duration::milliseconds(1)),
            label: t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
    }

    fn try_span_of(&self, t: Timestamp) -> Option<Span> {
        let local = t.with_timezone(&self.tz).naive_local();
        let date = local.date();
        let (first, next, label) = match self.period {
            Period::Hourly => {
                let first = date.and_hms_opt(local.hour(), 0, 0)?;
                let next = first.checked_add_signed(chrono::Duration::hours(1))?;
                (first, next, first.format("%Y-%m-%dT%H:00").to_string())
            }
            Period::Daily => (
                date.and_hms_opt(0, 0, 0)?,
                date.succ_opt()?.and_hms_opt(0, 0, 0)?,
                date.format("%Y-%m-%d").to_string(),
            ),
            Period::Weekly => {
                let monday = date.checked_sub_days(Days::new(u64::from(
                    date.weekday().num_days_from_monday(),
                )))?;
                let week = date.iso_week();
                (
                    monday.and_hms_opt(0, 0, 0)?,
                    monday
                        .checked_add_days(Days::new(7))?
                        .and_hms_opt(0, 0, 0)?,
                    format!("{}-W{:02}", week.year(), week.week()),
                )
            }
            Period::Monthly => {
                let first = NaiveDate::from_ymd_opt(date.year(), date.month(), 1)?;
                let next = if date.month() == 12 {
                    NaiveDate::from_ymd_opt(date.year().checked_add(1)?, 1, 1)?
                } else {
                    NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)?
                };
                (
                    first.and_hms_opt(0, 0, 0)?,
                    next.and_hms_opt(0, 0, 0)?,
                    first.format("%Y-%m").to_string(),
                )
            }
        };
        let start = self.first_instant(first)?;
        let end = self.first_instant(next)?;
        // Every instant lies in the period its local time names; the guard keeps a
        // tz database oddity from making a period that does not hold `t`.
        (start <= t && t < end).then_some(Span { start, end, label })
    }

    /// The first instant whose local time is `local` — the earlier one when the clocks
    /// went back over it, the first local time after it when it does not exist.
    fn first_instant(&self, local: NaiveDateTime) -> Option<Timestamp> {
        if let Some(t) = self.tz.from_local_datetime(&local).earliest() {
            return Some(t.with_timezone(&Utc));
        }
        let mut probe = local;
        for _ in 0..MAX_GAP_MINUTES {
            probe = probe.checked_add_signed(chrono::Duration::minutes(1))?;
            if let Some(t) = self.tz.from_local_datetime(&probe).earliest() {
                return Some(t.with_timezone(&Utc));
            }
        }
        None
    }
}

/// `name` as an IANA time zone (`UTC`, `Europe/Berlin`, `Asia/Taipei`); the error says
/// what is wrong and names the closest zone when one is close.
pub fn parse_time_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        let hint =
            crate::diagnostic::suggest(name, chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()))
                .map(|z| format!("; did you mean `{z}`?"))
                .unwrap_or_else(|| ": write e.g. `UTC`, `Europe/Berlin` or `Asia/Taipei`".into());
        format!("`{name}` is not an IANA time zone name{hint}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Timestamp {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn span(period: Period, tz: &str, t: &str) -> (String, String, String) {
        let s = Calendar::new(period, tz.parse().unwrap()).span_of(utc(t));
        let f = |t: Timestamp| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        (s.label, f(s.start), f(s.end))
    }

    fn hours(period: Period, tz: &str, t: &str) -> i64 {
        let s = Calendar::new(period, tz.parse().unwrap()).span_of(utc(t));
        (s.end - s.start).num_hours()
    }

    #[test]
    fn days_and_months_are_local_and_dst_days_are_23_or_25_hours() {
        // 22:30 UTC on March 31 is already April 1 in Berlin (CEST, +2).
        assert_eq!(
            span(Period::Monthly, "Europe/Berlin", "2026-03-31T22:30:00Z"),
            (
                "2026-04".into(),
                "2026-03-31T22:00:00Z".into(),
                "2026-04-30T22:00:00Z".into()
            )
        );
        // March began in winter time (+1) and ends in summer time (+2): 31 days less an hour.
        assert_eq!(
            span(Period::Monthly, "Europe/Berlin", "2026-03-31T21:59:59Z"),
            (
                "2026-03".into(),
                "2026-02-28T23:00:00Z".into(),
                "2026-03-31T22:00:00Z".into()
            )
        );
        assert_eq!(
            hours(Period::Monthly, "Europe/Berlin", "2026-03-15T00:00:00Z"),
            31 * 24 - 1
        );
        // The clocks go forward on March 29 and back on October 25, 2026.
        assert_eq!(
            span(Period::Daily, "Europe/Berlin", "2026-03-29T12:00:00Z"),
            (
                "2026-03-29".into(),
                "2026-03-28T23:00:00Z".into(),
                "2026-03-29T22:00:00Z".into()
            )
        );
        assert_eq!(
            hours(Period::Daily, "Europe/Berlin", "2026-03-29T12:00:00Z"),
            23
        );
        assert_eq!(
            hours(Period::Daily, "Europe/Berlin", "2026-10-25T12:00:00Z"),
            25
        );
        assert_eq!(
            hours(Period::Daily, "Europe/Berlin", "2026-10-26T12:00:00Z"),
            24
        );
        assert_eq!(
            hours(Period::Daily, "America/New_York", "2026-03-08T12:00:00Z"),
            23
        );
        // Month lengths: February of a common and a leap year, a 30- and a 31-day month.
        assert_eq!(
            hours(Period::Monthly, "UTC", "2026-02-10T00:00:00Z"),
            28 * 24
        );
        assert_eq!(
            hours(Period::Monthly, "UTC", "2028-02-10T00:00:00Z"),
            29 * 24
        );
        assert_eq!(
            hours(Period::Monthly, "Asia/Taipei", "2026-04-10T00:00:00Z"),
            30 * 24
        );
        assert_eq!(
            hours(Period::Monthly, "Asia/Taipei", "2026-12-31T15:59:59Z"),
            31 * 24
        );
        assert_eq!(
            span(Period::Monthly, "Asia/Taipei", "2026-12-31T16:00:00Z"),
            (
                "2027-01".into(),
                "2026-12-31T16:00:00Z".into(),
                "2027-01-31T16:00:00Z".into()
            )
        );
    }

    #[test]
    fn weeks_are_iso_weeks_from_monday() {
        // Thursday January 1, 2026 is in ISO week 1, which began on Monday December 29.
        assert_eq!(
            span(Period::Weekly, "UTC", "2026-01-01T10:00:00Z"),
            (
                "2026-W01".into(),
                "2025-12-29T00:00:00Z".into(),
                "2026-01-05T00:00:00Z".into()
            )
        );
        // Sunday December 27, 2026 is the last day of week 52.
        assert_eq!(
            span(Period::Weekly, "UTC", "2026-12-27T23:59:59Z").0,
            "2026-W52"
        );
        // A week over the change to summer time is an hour short.
        assert_eq!(
            hours(Period::Weekly, "Europe/Berlin", "2026-03-27T00:00:00Z"),
            7 * 24 - 1
        );
    }

    #[test]
    fn the_repeated_hour_is_one_period_and_the_skipped_one_none() {
        // October 25, 2026 in Berlin: 02:00-03:00 happens twice (00:00Z to 02:00Z).
        assert_eq!(
            span(Period::Hourly, "Europe/Berlin", "2026-10-25T01:30:00Z"),
            (
                "2026-10-25T02:00".into(),
                "2026-10-25T00:00:00Z".into(),
                "2026-10-25T02:00:00Z".into()
            )
        );
        // March 29: 01:00 is followed by 03:00.
        assert_eq!(
            span(Period::Hourly, "Europe/Berlin", "2026-03-29T00:30:00Z"),
            (
                "2026-03-29T01:00".into(),
                "2026-03-29T00:00:00Z".into(),
                "2026-03-29T01:00:00Z".into()
            )
        );
        assert_eq!(
            span(Period::Hourly, "Europe/Berlin", "2026-03-29T01:00:00Z").0,
            "2026-03-29T03:00"
        );
        // An hour of a zone half an hour off UTC.
        assert_eq!(
            span(Period::Hourly, "Asia/Kolkata", "2026-03-01T10:45:00Z"),
            (
                "2026-03-01T16:00".into(),
                "2026-03-01T10:30:00Z".into(),
                "2026-03-01T11:30:00Z".into()
            )
        );
    }

    #[test]
    fn a_midnight_that_does_not_exist_starts_the_day_when_the_clocks_move() {
        // Santiago moves its clocks from 24:00 to 01:00: September 6, 2026 starts at 01:00
        // local (04:00Z), the day before ends there, and it lasts 23 hours.
        let cal = Calendar::new(Period::Daily, "America/Santiago".parse().unwrap());
        let day = cal.span_of(utc("2026-09-06T12:00:00Z"));
        assert_eq!(day.label, "2026-09-06");
        assert_eq!(day.start, utc("2026-09-06T04:00:00Z"));
        assert_eq!((day.end - day.start).num_hours(), 23);
        let before = cal.span_of(utc("2026-09-06T03:59:59Z"));
        assert_eq!(
            (before.label.as_str(), before.end),
            ("2026-09-05", day.start)
        );
        // Samoa skipped December 30, 2011: the 29th ends where the 31st begins.
        let samoa = Calendar::new(Period::Daily, "Pacific/Apia".parse().unwrap());
        let d29 = samoa.span_of(utc("2011-12-30T09:00:00Z"));
        assert_eq!(d29.label, "2011-12-29");
        let d31 = samoa.span_of(d29.end);
        assert_eq!((d31.label.as_str(), d31.start), ("2011-12-31", d29.end));
    }

    #[test]
    fn periods_follow_each_other_without_gap_or_overlap() {
        for (period, tz) in [
            (Period::Hourly, "Europe/Berlin"),
            (Period::Hourly, "Australia/Lord_Howe"),
            (Period::Daily, "America/Santiago"),
            (Period::Weekly, "America/New_York"),
            (Period::Monthly, "Europe/Berlin"),
        ] {
            let cal = Calendar::new(period, tz.parse().unwrap());
            let mut s = cal.span_of(utc("2026-01-01T00:00:00Z"));
            while s.start < utc("2027-01-01T00:00:00Z") {
                let next = cal.span_of(s.end);
                assert_eq!(next.start, s.end, "{tz} {period:?} after {}", s.label);
                assert!(
                    next.label > s.label,
                    "{tz} {period:?}: {} then {}",
                    s.label,
                    next.label
                );
                assert_eq!(cal.span_of(s.end - chrono::Duration::milliseconds(1)), s);
                s = next;
            }
        }
    }

    #[test]
    fn time_zone_names_are_checked_and_a_close_one_is_suggested() {
        assert!(parse_time_zone("Europe/Berlin").is_ok());
        assert!(parse_time_zone("UTC").is_ok());
        assert_eq!(
            parse_time_zone("Europe/Berln").unwrap_err(),
            "`Europe/Berln` is not an IANA time zone name; did you mean `Europe/Berlin`?"
        );
        assert_eq!(
            parse_time_zone("CEST+2").unwrap_err(),
            "`CEST+2` is not an IANA time zone name: write e.g. `UTC`, `Europe/Berlin` or `Asia/Taipei`"
        );
    }
}
