//! Protobuf / Go style durations as used in Istio configuration.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration written as in Istio YAML.
///
/// Accepts the protobuf JSON form (`"1.5s"`, `"0.100s"`) and Go's `time.ParseDuration` form
/// (`"100ms"`, `"1h"`, `"1m30s"`, `"2h45m0.5s"`), which is what Istio's legacy jsonpb decoder
/// accepted. Units: `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`; `"0"` alone means zero.
/// Serializes back to the protobuf JSON form (`"5s"`, `"0.100s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text is empty.
    #[error("empty duration; write e.g. \"5s\" or \"100ms\"")]
    Empty,
    /// A leading `-`.
    #[error("negative duration {0:?} is not allowed; use a value >= 0 such as \"1s\"")]
    Negative(String),
    /// Not a number followed by a unit.
    #[error(
        "invalid duration {0:?}; write a number with a unit (ns, us, ms, s, m, h), e.g. \"1.5s\" or \"1m30s\""
    )]
    Invalid(String),
    /// A unit that is not one of ns, us, µs, ms, s, m, h.
    #[error("unknown unit {unit:?} in duration {text:?}; use one of ns, us, ms, s, m, h")]
    UnknownUnit {
        /// The unit text.
        unit: String,
        /// The whole duration text.
        text: String,
    },
    /// Does not fit a std duration.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

impl Duration {
    /// Builds a duration from seconds.
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }

    /// Builds a duration from milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    /// The std duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }

    /// True when the duration is zero.
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3600 * 1_000_000_000,
        _ => return None,
    })
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let s = text.trim();
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let s = match s.strip_prefix('+') {
            Some(rest) => rest,
            None if s.starts_with('-') => return Err(DurationError::Negative(text.to_owned())),
            None => s,
        };
        if s == "0" {
            return Ok(Duration::default());
        }
        let invalid = || DurationError::Invalid(text.to_owned());
        let mut total: u128 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let int_len = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let int_part = &rest[..int_len];
            rest = &rest[int_len..];
            let mut frac_part = "";
            if let Some(after_dot) = rest.strip_prefix('.') {
                let frac_len = after_dot
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after_dot.len());
                frac_part = &after_dot[..frac_len];
                rest = &after_dot[frac_len..];
            }
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(invalid());
            }
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            if unit.is_empty() {
                return Err(invalid());
            }
            let per = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
                unit: unit.to_owned(),
                text: text.to_owned(),
            })?;
            let overflow = || DurationError::Overflow(text.to_owned());
            let whole: u128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| overflow())?
            };
            let mut nanos = whole.checked_mul(per).ok_or_else(overflow)?;
            // Fractional part: digits beyond nanosecond precision are truncated like Go does.
            let mut scale = per;
            for d in frac_part.chars() {
                scale /= 10;
                if scale == 0 {
                    break;
                }
                let digit = u128::from(d.to_digit(10).unwrap_or(0));
                nanos += digit * scale;
            }
            total = total.checked_add(nanos).ok_or_else(overflow)?;
        }
        let secs = u64::try_from(total / 1_000_000_000)
            .map_err(|_| DurationError::Overflow(text.to_owned()))?;
        let sub = u32::try_from(total % 1_000_000_000).unwrap_or(0);
        Ok(Duration(std::time::Duration::new(secs, sub)))
    }
}

impl fmt::Display for Duration {
    /// Protobuf JSON form: whole seconds as `"5s"`, otherwise 3, 6 or 9 fractional digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if nanos == 0 {
            write!(f, "{secs}s")
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{secs}.{:03}s", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(f, "{secs}.{:06}s", nanos / 1_000)
        } else {
            write!(f, "{secs}.{nanos:09}s")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"1.5s\" or \"100ms\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;

    fn p(s: &str) -> Result<D, DurationError> {
        s.parse::<Duration>().map(|d| d.0)
    }

    #[test]
    fn accepts_protobuf_and_go_forms() {
        assert_eq!(p("1s").unwrap(), D::from_secs(1));
        assert_eq!(p("0.5s").unwrap(), D::from_millis(500));
        assert_eq!(p("1.5s").unwrap(), D::from_millis(1500));
        assert_eq!(p("100ms").unwrap(), D::from_millis(100));
        assert_eq!(p("1h").unwrap(), D::from_secs(3600));
        assert_eq!(p("1m30s").unwrap(), D::from_secs(90));
        assert_eq!(
            p("2h45m0.5s").unwrap(),
            D::from_millis((2 * 3600 + 45 * 60) * 1000 + 500)
        );
        assert_eq!(p("0").unwrap(), D::ZERO);
        assert_eq!(p("0s").unwrap(), D::ZERO);
        assert_eq!(p("10us").unwrap(), D::from_micros(10));
        assert_eq!(p("7ns").unwrap(), D::from_nanos(7));
        assert_eq!(p(".5s").unwrap(), D::from_millis(500));
        assert_eq!(p("0.000000001s").unwrap(), D::from_nanos(1));
    }

    #[test]
    fn rejects_negative_and_garbage() {
        assert!(matches!(p("-1s"), Err(DurationError::Negative(_))));
        assert!(matches!(p(""), Err(DurationError::Empty)));
        assert!(matches!(p("5"), Err(DurationError::Invalid(_))));
        assert!(matches!(p("abc"), Err(DurationError::Invalid(_))));
        assert!(matches!(p("5 s"), Err(DurationError::UnknownUnit { .. })));
        assert!(matches!(p("1d"), Err(DurationError::UnknownUnit { .. })));
        assert!(matches!(p("s"), Err(DurationError::Invalid(_))));
        assert!(matches!(
            p("1.s.2"),
            Err(DurationError::Invalid(_)) | Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            p("99999999999999999999999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn displays_protobuf_form() {
        assert_eq!(Duration(D::from_secs(5)).to_string(), "5s");
        assert_eq!(Duration(D::from_millis(100)).to_string(), "0.100s");
        assert_eq!(Duration(D::from_micros(1500)).to_string(), "0.001500s");
        assert_eq!(Duration(D::from_nanos(1)).to_string(), "0.000000001s");
        let json = serde_json::to_string(&Duration(D::from_millis(2500))).unwrap();
        assert_eq!(json, "\"2.500s\"");
        let back: Duration = serde_json::from_str(&json).unwrap();
        assert_eq!(back.0, D::from_millis(2500));
    }
}
