//! UTC calendar dates from Unix time, by Howard Hinnant's civil-from-days
//! arithmetic: image configs, run records and API timestamps need RFC 3339
//! strings, and a few lines here spare a date crate.

/// Seconds from a setting as a [`Duration`], never panicking: negative
/// and NaN are zero, and what does not fit is the longest duration
/// (`Duration::from_secs_f64` panics on both).
pub fn duration_from_secs(secs: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(std::time::Duration::MAX)
}

/// The civil date (year, month 1-12, day 1-31) of `days` since 1970-01-01
/// (negative before it).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=12, 1..=31).
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

/// `secs` since the epoch as RFC 3339 in UTC, whole seconds
/// (`2026-12-02T06:52:40Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Now, as [`rfc3339`]: the form of Kubernetes timestamps and kiln's
/// annotations.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn settings_seconds_never_panic() {
        use super::duration_from_secs as d;
        use std::time::Duration;
        assert_eq!(d(1.5).as_millis(), 1500);
        assert_eq!(d(-3.0), Duration::ZERO);
        assert_eq!(d(f64::NAN), Duration::ZERO);
        assert_eq!(d(1e20), Duration::MAX);
        assert_eq!(d(f64::INFINITY), Duration::MAX);
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(1_796_194_360), "2026-12-02T06:52:40Z");
        assert_eq!(super::civil_from_days(-1), (1969, 12, 31));
    }
}
