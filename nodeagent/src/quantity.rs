//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2`, `1e3`), read into
//! whole milli-units so that CPU (millicores), memory (bytes) and counted
//! resources (GPUs, pods) compare with plain integer arithmetic, rounded up
//! as the API machinery's `MilliValue` rounds.

/// A quantity that is not one, or too large for the agent's arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantity {text:?}: {why}")]
pub struct QuantityError {
    text: String,
    why: &'static str,
}

/// `text` in milli-units: `"1"` is 1000, `"250m"` 250, `"1Ki"` 1 024 000.
/// Fractions below a milli-unit round up (`"0.0001"` is 1).
pub fn parse_milli(text: &str) -> Result<u128, QuantityError> {
    let fail = |why| QuantityError {
        text: text.to_string(),
        why,
    };
    let text_trimmed = text.trim();
    let unsigned = text_trimmed.strip_prefix('+').unwrap_or(text_trimmed);
    if unsigned.starts_with('-') {
        return Err(fail("negative quantities are not resources"));
    }
    let split = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(fail("no number"));
    }
    let digits = format!("{whole}{fraction}");
    let mantissa: u128 = digits.parse().map_err(|_| fail("not a number"))?;
    let scale = Scale::of(suffix).ok_or_else(|| fail("unknown suffix"))?;
    // value = mantissa / 10^fraction_digits * scale, times 1000 for milli.
    let fraction_digits = i32::try_from(fraction.len()).map_err(|_| fail("too many digits"))?;
    let too_large = || fail("too large");
    match scale {
        Scale::Decimal(power) => {
            let power = power + 3 - fraction_digits;
            if power >= 0 {
                let factor = 10u128
                    .checked_pow(power.unsigned_abs())
                    .ok_or_else(too_large)?;
                mantissa.checked_mul(factor).ok_or_else(too_large)
            } else {
                Ok(divide_up(mantissa, power.unsigned_abs()))
            }
        }
        Scale::Binary(shift) => {
            let scaled = mantissa
                .checked_mul(1000)
                .and_then(|m| m.checked_mul(1u128.checked_shl(shift)?))
                .ok_or_else(too_large)?;
            Ok(divide_up(scaled, fraction_digits.unsigned_abs()))
        }
    }
}

/// `value / 10^power`, rounded up; 1 when the divisor is beyond u128 and
/// the value is not 0 (a tiny positive amount still asks for something).
fn divide_up(value: u128, power: u32) -> u128 {
    match 10u128.checked_pow(power) {
        Some(divisor) => value.div_ceil(divisor),
        None => u128::from(value > 0),
    }
}

/// What a suffix multiplies by.
enum Scale {
    /// 10^n (`m`, none, `k`, `M` ... `E`, `e<n>`).
    Decimal(i32),
    /// 2^n (`Ki` ... `Ei`).
    Binary(u32),
}

impl Scale {
    fn of(suffix: &str) -> Option<Scale> {
        Some(match suffix {
            "m" => Scale::Decimal(-3),
            "" => Scale::Decimal(0),
            "k" => Scale::Decimal(3),
            "M" => Scale::Decimal(6),
            "G" => Scale::Decimal(9),
            "T" => Scale::Decimal(12),
            "P" => Scale::Decimal(15),
            "E" => Scale::Decimal(18),
            "Ki" => Scale::Binary(10),
            "Mi" => Scale::Binary(20),
            "Gi" => Scale::Binary(30),
            "Ti" => Scale::Binary(40),
            "Pi" => Scale::Binary(50),
            "Ei" => Scale::Binary(60),
            _ => {
                let exponent = suffix
                    .strip_prefix('e')
                    .or_else(|| suffix.strip_prefix('E'))?;
                let exponent: i32 = exponent.parse().ok()?;
                // Beyond this nothing a node offers is meant.
                if exponent.abs() > 30 {
                    return None;
                }
                Scale::Decimal(exponent)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_milli;

    #[test]
    fn suffixes_scale_as_in_kubernetes() {
        let cases = [
            ("1", 1000),
            ("250m", 250),
            ("0.5", 500),
            (".5", 500),
            ("1.5", 1500),
            ("2k", 2_000_000),
            ("1M", 1_000_000_000),
            ("1G", 1_000_000_000_000),
            ("1Ki", 1_024_000),
            ("1Mi", 1_048_576_000),
            ("8Gi", 8 * 1_073_741_824_000),
            ("1.5Gi", 1_610_612_736_000),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("+3", 3000),
            ("100Mi", 104_857_600_000),
        ];
        for (text, milli) in cases {
            assert_eq!(parse_milli(text), Ok(milli), "{text}");
        }
    }

    #[test]
    fn fractions_of_a_milli_unit_round_up() {
        assert_eq!(parse_milli("0.0001"), Ok(1));
        assert_eq!(parse_milli("1.0001m"), Ok(2));
        assert_eq!(parse_milli("0"), Ok(0));
        assert_eq!(parse_milli("0.1Ki"), Ok(102_400));
    }

    #[test]
    fn nonsense_is_an_error() {
        for text in ["", "m", "-1", "1x", "1Kib", "1..2", "1e", "ten", "1e99"] {
            assert!(parse_milli(text).is_err(), "{text}");
        }
    }
}
