//! Durations as people write them in config files: `10s`, `500ms`, `5m`,
//! `1h`, or sums such as `1m30s`; `0` alone is zero.

use std::{fmt, time::Duration};

use serde::{Deserialize, Deserializer, Serializer, de};

/// The longest duration accepted, so deadlines computed from it cannot
/// overflow a clock.
const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a text is not a duration. The message quotes the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidDuration {
    text: String,
    too_long: bool,
}

impl fmt::Display for InvalidDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.too_long {
            write!(f, "{:?} is too long (at most 8760h)", self.text)
        } else {
            write!(f, "{:?} is not a duration (use 10s, 500ms, 5m)", self.text)
        }
    }
}

impl std::error::Error for InvalidDuration {}

/// Parses `10s`, `500ms`, `5m`, `1h`, `1h30m` (units `ms`, `s`, `m`, `h`,
/// each number followed by its unit) or `0`.
pub(crate) fn parse(text: &str) -> Result<Duration, InvalidDuration> {
    let invalid = |too_long| InvalidDuration {
        text: text.to_owned(),
        too_long,
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(invalid(false));
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid(false));
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid(true))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let millis_per_unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(invalid(false)),
        };
        rest = &rest[unit_len..];
        let millis = number.checked_mul(millis_per_unit).ok_or(invalid(true))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or(invalid(true))?;
    }
    if total > MAX {
        return Err(invalid(true));
    }
    Ok(total)
}

/// Writes `duration` in the largest unit that divides it: `90m`, `25s`,
/// `500ms`, `0s`. Below a millisecond is dropped (parsing never yields it).
pub(crate) fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    match millis {
        0 => "0s".to_owned(),
        _ if millis % 3_600_000 == 0 => format!("{}h", millis / 3_600_000),
        _ if millis % 60_000 == 0 => format!("{}m", millis / 60_000),
        _ if millis % 1_000 == 0 => format!("{}s", millis / 1_000),
        _ => format!("{millis}ms"),
    }
}

/// `#[serde(with = "duration")]` for a [`Duration`] field.
pub(crate) fn serialize<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*duration))
}

/// `#[serde(with = "duration")]` for a [`Duration`] field.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("8760h"), Ok(MAX));
    }

    #[test]
    fn refuses_anything_else_quoting_it() {
        for bad in [
            "", "10", "10x", "s", "1.5s", " 10s", "10 s", "-1s", "10S", "1h30", "ms10",
        ] {
            let error = parse(bad).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("{bad:?} is not a duration (use 10s, 500ms, 5m)")
            );
        }
        for huge in ["8761h", "99999999999999999999s", "18446744073709551615h"] {
            assert!(
                parse(huge).unwrap_err().to_string().contains("too long"),
                "{huge}"
            );
        }
    }

    #[test]
    fn formats_in_the_largest_exact_unit_and_round_trips() {
        for (duration, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(25), "25s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(600), "10m"),
            (Duration::from_secs(7200), "2h"),
        ] {
            assert_eq!(format(duration), text);
            assert_eq!(parse(text), Ok(duration));
        }
    }
}
