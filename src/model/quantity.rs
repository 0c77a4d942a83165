//! Kubernetes resource quantities ("32Gi", "500m", "1e3") parsed to plain integers.
//!
//! Only what the decisions read: bytes for memory, millicores for CPU, counts for extended
//! resources. Parsing is strict: anything the API server itself would reject is an error.

use std::fmt;

/// A quantity that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {0:?}")]
pub struct QuantityError(pub String);

/// Parses a quantity to its value times `scale` (1 for bytes and counts, 1000 for millicores),
/// rounded up as the scheduler does for fractional requests.
pub fn parse_scaled(text: &str, scale: u32) -> Result<i64, QuantityError> {
    let err = || QuantityError(text.to_owned());
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() {
        return Err(err());
    }
    let (mantissa_scale, exp10): (f64, i32) = match suffix {
        "" => (1.0, 0),
        "Ki" => (1024f64, 0),
        "Mi" => (1024f64.powi(2), 0),
        "Gi" => (1024f64.powi(3), 0),
        "Ti" => (1024f64.powi(4), 0),
        "Pi" => (1024f64.powi(5), 0),
        "Ei" => (1024f64.powi(6), 0),
        "n" => (1.0, -9),
        "u" => (1.0, -6),
        "m" => (1.0, -3),
        "k" => (1.0, 3),
        "M" => (1.0, 6),
        "G" => (1.0, 9),
        "T" => (1.0, 12),
        "P" => (1.0, 15),
        "E" => (1.0, 18),
        other if other.starts_with(['e', 'E']) => (1.0, other[1..].parse::<i32>().map_err(|_| err())?),
        _ => return Err(err()),
    };
    let value: f64 = number.parse().map_err(|_| err())?;
    if !value.is_finite() {
        return Err(err());
    }
    let scaled = value * mantissa_scale * 10f64.powi(exp10) * f64::from(scale);
    if scaled.abs() >= i64::MAX as f64 {
        return Err(err());
    }
    Ok(scaled.ceil() as i64)
}

/// Bytes rendered the way an operator reads them: "31.3 GiB".
pub struct Bytes(pub i64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
        write!(f, "{:.1} GiB", self.0 as f64 / GIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_the_api_server_emits() {
        let cases: &[(&str, u32, i64)] = &[
            ("32Gi", 1, 32 * 1024 * 1024 * 1024),
            ("512Mi", 1, 512 * 1024 * 1024),
            ("1G", 1, 1_000_000_000),
            ("1e3", 1, 1000),
            ("128974848", 1, 128_974_848),
            ("129e6", 1, 129_000_000),
            ("123Mi", 1, 128_974_848),
            ("100m", 1000, 100),
            ("2", 1000, 2000),
            ("0.5", 1000, 500),
            ("1.5Gi", 1, 1_610_612_736),
            ("100m", 1, 1), // fractional bytes round up, as the scheduler does
        ];
        for (text, scale, want) in cases {
            assert_eq!(parse_scaled(text, *scale), Ok(*want), "{text}");
        }
    }

    #[test]
    fn rejects_what_the_api_server_rejects() {
        for text in ["", "Gi", "12Xi", "1..2", "abc", "1e", "9e99"] {
            assert!(parse_scaled(text, 1).is_err(), "{text:?} should not parse");
        }
    }
}
