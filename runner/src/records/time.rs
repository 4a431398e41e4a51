//! Times as the database stores them (nanoseconds since the epoch, exact
//! for Linux's `SystemTime`) and as people and scripts read them (UTC), by
//! a few lines of calendar arithmetic rather than a date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serializer;

/// Nanoseconds since the epoch, negative before it; saturates in 2262.
pub(crate) fn to_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// The inverse of [`to_nanos`].
pub(crate) fn from_nanos(n: i64) -> SystemTime {
    let d = Duration::from_nanos(n.unsigned_abs());
    if n >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

/// Calendar date and time of day in UTC, and the milliseconds.
struct Utc {
    year: i64,
    month: u32,
    day: u32,
    hour: i64,
    minute: i64,
    second: i64,
    millis: i64,
}

fn utc(t: SystemTime) -> Utc {
    let nanos = to_nanos(t);
    let secs = nanos.div_euclid(1_000_000_000);
    let millis = nanos.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = kiln_pipeline::time::civil_from_days(days);
    Utc {
        year,
        month,
        day,
        hour: of_day / 3600,
        minute: of_day / 60 % 60,
        second: of_day % 60,
        millis,
    }
}

/// `2026-12-02 05:51:53Z`: for tables. UTC, so that no time zone database
/// is needed; the `Z` says so.
pub fn format_utc(t: SystemTime) -> String {
    let u = utc(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

/// RFC 3339 with milliseconds, `2026-12-02T05:51:53.120Z`: for JSON, which
/// scripts parse.
pub fn format_rfc3339(t: SystemTime) -> String {
    let u = utc(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second, u.millis
    )
}

pub(crate) fn serialize_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_rfc3339(*t))
}

pub(crate) fn serialize_opt_time<S: Serializer>(
    t: &Option<SystemTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format_rfc3339(*t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01 00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        assert_eq!(format_utc(t), "2023-11-14 22:13:20Z");
        assert_eq!(format_rfc3339(t), "2023-11-14T22:13:20.250Z");
        // A leap day, and the day before the epoch.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(format_utc(leap), "2000-02-29 00:00:00Z");
        assert_eq!(
            format_utc(UNIX_EPOCH - Duration::from_secs(1)),
            "1969-12-31 23:59:59Z"
        );
    }

    #[test]
    fn nanos_round_trip() {
        for t in [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            UNIX_EPOCH - Duration::new(5, 1),
        ] {
            assert_eq!(from_nanos(to_nanos(t)), t);
        }
    }
}
