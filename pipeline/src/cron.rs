//! Cron expressions as Kubernetes CronJobs accept them: five fields or a
//! `@hourly`-style macro. Checked up front so a bad schedule fails at
//! `kiln validate`, not when the API server rejects the CronJob.

/// Why a cron expression was rejected, in words fit for a user.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// The expression is empty or white space.
    #[error("expected a cron expression such as \"5 2 * * *\", found an empty string")]
    Empty,
    /// Not a macro, and not five fields.
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week), found {fields} in {expr:?}"
    )]
    FieldCount {
        /// How many fields the expression has.
        fields: usize,
        /// The expression as given.
        expr: String,
    },
    /// The cron parser refused a field or the macro.
    #[error("invalid cron expression {expr:?}: {source}")]
    Invalid {
        /// The expression as given.
        expr: String,
        /// The parser's reason.
        source: croner::errors::CronError,
    },
}

/// Checks a cron expression.
///
/// # Errors
///
/// [`CronError`] says why the expression was rejected.
pub fn check(expr: &str) -> Result<(), CronError> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(CronError::Empty);
    }
    if !trimmed.starts_with('@') {
        let fields = trimmed.split_whitespace().count();
        if fields != 5 {
            return Err(CronError::FieldCount {
                fields,
                expr: expr.into(),
            });
        }
    }
    trimmed
        .parse::<croner::Cron>()
        .map(|_| ())
        .map_err(|source| CronError::Invalid {
            expr: expr.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    #[rstest]
    #[case("5 2 * * *")]
    #[case("*/15 * * * 1-5")]
    #[case("@hourly")]
    #[case("0 0 1 jan *")]
    fn accepts(#[case] expr: &str) {
        super::check(expr).unwrap();
    }

    #[rstest]
    #[case("", "empty")]
    #[case("* * * *", "found 4")]
    #[case("0 0 * * * *", "found 6")]
    #[case("61 * * * *", "invalid cron")]
    #[case("* 25 * * *", "invalid cron")]
    #[case("@sometimes", "invalid cron")]
    fn rejects(#[case] expr: &str, #[case] needle: &str) {
        let err = super::check(expr).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
}
