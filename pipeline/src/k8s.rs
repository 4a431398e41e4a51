//! Kubernetes naming and quantity rules, checked by kiln before any request is
//! sent, so a typo in `kiln.yaml` fails at `kiln validate` with its line
//! instead of as a 422 from the API server mid-run.
//!
//! Written by hand: `k8s-openapi`'s `Quantity` is an unchecked string and the
//! validation helpers live only in the Go code base.

/// Why a label or annotation key or a label value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LabelError {
    /// The part of a key before `/` is not a DNS subdomain.
    #[error("label key {key:?} has an invalid prefix: {source}")]
    Prefix {
        /// The key as written.
        key: String,
        /// What is wrong with the prefix.
        source: DnsSubdomainError,
    },
    /// A key ends in `/`.
    #[error("label key {key:?} has an empty name part")]
    EmptyName {
        /// The key as written.
        key: String,
    },
    /// The name part of a key breaks the label rules.
    #[error("label key {key:?}: {source}")]
    Key {
        /// The key as written.
        key: String,
        /// What is wrong with its name part.
        source: LabelTextError,
    },
    /// A label value breaks the label rules.
    #[error("label value {value:?}: {source}")]
    Value {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        source: LabelTextError,
    },
}

/// What is wrong with a label name or value (the text, not which one it is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LabelTextError {
    /// Over 63 characters.
    #[error("must be at most 63 characters, found {len}")]
    TooLong {
        /// The length found.
        len: usize,
    },
    /// Not alphanumeric at an end.
    #[error("must start and end with a letter or digit")]
    Ends,
    /// A character other than an alphanumeric, `-`, `_` or `.`.
    #[error("may contain only letters, digits, '-', '_' and '.', found {found:?}")]
    Char {
        /// The first such character.
        found: char,
    },
}

/// Why a name is not a DNS subdomain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DnsSubdomainError {
    /// Empty or over 253 characters.
    #[error("{name:?} must be 1 to 253 characters")]
    Length {
        /// The name as written.
        name: String,
    },
    /// One of the dot-separated parts is not a DNS label.
    #[error("{name:?}: {source}")]
    Label {
        /// The name as written.
        name: String,
        /// What is wrong with the part.
        source: DnsLabelError,
    },
}

/// Why a name is not a DNS label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DnsLabelError {
    /// Empty or over 63 characters.
    #[error("{name:?} must be 1 to 63 characters")]
    Length {
        /// The name as written.
        name: String,
    },
    /// A character other than lower-case alphanumerics and `-`, or `-` at an end.
    #[error(
        "{name:?} must consist of lower-case letters, digits and '-', and start and end with a letter or digit"
    )]
    Chars {
        /// The name as written.
        name: String,
    },
}

/// Why text is not a Kubernetes resource quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QuantityError {
    /// The number part does not parse.
    #[error(
        "expected a Kubernetes quantity such as \"500m\", \"2\", \"4Gi\" or \"1e3\", found {text:?}"
    )]
    Number {
        /// The quantity as written.
        text: String,
    },
    /// The suffix is neither an SI or binary unit nor an exponent.
    #[error(
        "expected a Kubernetes quantity such as \"500m\", \"2\", \"4Gi\" or \"1e3\", found {text:?} (unknown suffix {suffix:?})"
    )]
    Suffix {
        /// The quantity as written.
        text: String,
        /// The suffix after the number.
        suffix: String,
    },
}

/// Checks a label or annotation key: an optional DNS-subdomain prefix and `/`,
/// then a name of at most 63 characters.
pub(crate) fn check_label_key(key: &str) -> Result<(), LabelError> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        check_dns_subdomain(prefix).map_err(|source| LabelError::Prefix {
            key: key.into(),
            source,
        })?;
    }
    if name.is_empty() {
        return Err(LabelError::EmptyName { key: key.into() });
    }
    check_label_text(name).map_err(|source| LabelError::Key {
        key: key.into(),
        source,
    })
}

/// Checks a label value: empty, or at most 63 alphanumerics with `-`, `_`, `.`
/// inside.
pub(crate) fn check_label_value(value: &str) -> Result<(), LabelError> {
    if value.is_empty() {
        return Ok(());
    }
    check_label_text(value).map_err(|source| LabelError::Value {
        value: value.into(),
        source,
    })
}

fn check_label_text(text: &str) -> Result<(), LabelTextError> {
    if text.len() > 63 {
        return Err(LabelTextError::TooLong { len: text.len() });
    }
    let bytes = text.as_bytes();
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(LabelTextError::Ends);
    }
    if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(LabelTextError::Char { found: bad });
    }
    Ok(())
}

/// Checks a DNS subdomain (RFC 1123): lower-case labels joined by dots, at most
/// 253 characters. Namespaces, service accounts and secrets are named so.
pub(crate) fn check_dns_subdomain(name: &str) -> Result<(), DnsSubdomainError> {
    if name.is_empty() || name.len() > 253 {
        return Err(DnsSubdomainError::Length { name: name.into() });
    }
    for part in name.split('.') {
        check_dns_label(part).map_err(|source| DnsSubdomainError::Label {
            name: name.into(),
            source,
        })?;
    }
    Ok(())
}

/// Checks a DNS label (RFC 1123): at most 63 lower-case alphanumerics or `-`,
/// starting and ending with an alphanumeric. Pod names' parts are named so.
pub(crate) fn check_dns_label(name: &str) -> Result<(), DnsLabelError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if name.is_empty() || name.len() > 63 {
        return Err(DnsLabelError::Length { name: name.into() });
    }
    let first = name.chars().next().unwrap_or('-');
    let last = name.chars().last().unwrap_or('-');
    if !ok_char(first) || !ok_char(last) || !name.chars().all(|c| ok_char(c) || c == '-') {
        return Err(DnsLabelError::Chars { name: name.into() });
    }
    Ok(())
}

/// A parsed resource quantity (`500m`, `4Gi`, `1e3`), as a float of base units:
/// enough to compare requests with limits and reject nonsense.
pub(crate) fn parse_quantity(text: &str) -> Result<f64, QuantityError> {
    let malformed = || QuantityError::Number { text: text.into() };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let digits = number.trim_start_matches(['+', '-']);
    let sign_count = number.len() - digits.len();
    if digits.is_empty()
        || sign_count > 1
        || digits.contains(['+', '-'])
        || digits.matches('.').count() > 1
        || digits == "."
    {
        return Err(malformed());
    }
    let value: f64 = number.parse().map_err(|_| malformed())?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().map_err(|_| malformed())?;
            10f64.powi(exp)
        }
        _ => {
            return Err(QuantityError::Suffix {
                text: text.into(),
                suffix: suffix.into(),
            });
        }
    };
    Ok(value * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("app")]
    #[case("app.kubernetes.io/name")]
    #[case("a_b-c.d")]
    fn label_keys_ok(#[case] key: &str) {
        check_label_key(key).unwrap();
    }

    #[rstest]
    #[case("-app")]
    #[case("Example.COM/x")]
    #[case("x/")]
    #[case("has space")]
    #[case(&"a".repeat(64))]
    fn label_keys_bad(#[case] key: &str) {
        assert!(check_label_key(key).is_err());
    }

    #[rstest]
    #[case("", true)]
    #[case("production", true)]
    #[case("v1.2_3-x", true)]
    #[case("ends-", false)]
    #[case("a/b", false)]
    fn label_values(#[case] v: &str, #[case] ok: bool) {
        assert_eq!(check_label_value(v).is_ok(), ok, "{v}");
    }

    #[rstest]
    #[case("2", 2.0)]
    #[case("500m", 0.5)]
    #[case("4Gi", 4.0 * 1024.0 * 1024.0 * 1024.0)]
    #[case("1e3", 1000.0)]
    #[case("1.5", 1.5)]
    #[case("128M", 128e6)]
    fn quantities(#[case] q: &str, #[case] v: f64) {
        assert!((parse_quantity(q).unwrap() - v).abs() < 1e-6);
    }

    #[rstest]
    #[case("")]
    #[case("abc")]
    #[case("4GB")]
    #[case("1..2")]
    #[case("Gi")]
    #[case("--1")]
    fn bad_quantities(#[case] q: &str) {
        assert!(parse_quantity(q).is_err(), "{q}");
    }
}
