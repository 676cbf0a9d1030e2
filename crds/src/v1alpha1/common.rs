//! Value types shared by `VirtualService` and `RealServer`: durations, IP address strings,
//! forwarding methods and the typed errors of their parsers.
//!
//! Addresses and durations are kept as the strings the user wrote (so `kubectl get -o yaml`
//! shows them unchanged and an object stored before a validation change still decodes: a
//! watcher that fails to decode one object fails the whole list) and are parsed on demand.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Why a duration string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("empty duration")]
    Empty,
    /// A number was expected at this byte offset.
    #[error("expected a number at offset {0} in duration {1:?}")]
    ExpectedNumber(usize, String),
    /// A number has no unit after it.
    #[error("missing unit after the number in duration {0:?}")]
    MissingUnit(String),
    /// The unit is not one of ns, us, µs, ms, s, m, h.
    #[error("unknown unit {unit:?} in duration {input:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole duration string.
        input: String,
    },
    /// The value exceeds what Go's `time.Duration` (and therefore the API server's CEL) holds.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Why an address string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not an IPv4 or IPv6 address")]
pub struct AddressError {
    /// The string as written.
    pub value: String,
}

/// Largest duration Go's `time.Duration` holds, in nanoseconds; CEL's `duration()` uses it.
const MAX_DURATION_NANOS: u128 = i64::MAX as u128;

/// Pattern the API server enforces on every duration field. It is the non-negative subset of
/// Go's `time.ParseDuration` syntax, so CEL's `duration()` never fails on a stored value.
pub const DURATION_PATTERN: &str = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$";

/// A duration written the way Kubernetes and Go write them: `"5s"`, `"500ms"`, `"1m30s"`,
/// `"1.5s"`. Non-negative; units ns, us (µs), ms, s, m, h.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct GoDuration(String);

impl GoDuration {
    /// Wraps a duration string after checking that it parses.
    pub fn new(value: impl Into<String>) -> Result<Self, DurationError> {
        let value = value.into();
        parse_go_duration(&value)?;
        Ok(Self(value))
    }

    /// Formats a `std::time::Duration` in the largest unit that represents it exactly.
    pub fn from_std(d: Duration) -> Self {
        let nanos = d.as_nanos();
        let text = if nanos == 0 {
            "0s".to_owned()
        } else if nanos.is_multiple_of(3_600_000_000_000) {
            format!("{}h", nanos / 3_600_000_000_000)
        } else if nanos.is_multiple_of(60_000_000_000) {
            format!("{}m", nanos / 60_000_000_000)
        } else if nanos.is_multiple_of(1_000_000_000) {
            format!("{}s", nanos / 1_000_000_000)
        } else if nanos.is_multiple_of(1_000_000) {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            format!("{}us", nanos / 1_000)
        } else {
            format!("{nanos}ns")
        };
        Self(text)
    }

    /// The string as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the string into a `std::time::Duration`.
    pub fn to_std(&self) -> Result<Duration, DurationError> {
        parse_go_duration(&self.0)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for GoDuration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 32,
            "pattern": DURATION_PATTERN,
        })
    }
}

/// Parses Go's duration syntax without sign: a sequence of `<number>[.<fraction>]<unit>`, or `0`.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    if input == "0" {
        return Ok(Duration::ZERO);
    }
    let overflow = || DurationError::Overflow(input.to_owned());
    let mut total: u128 = 0;
    let mut rest = input;
    while !rest.is_empty() {
        let offset = input.len() - rest.len();
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_num) = match after_int.strip_prefix('.') {
            Some(frac) => {
                let frac_len = frac.bytes().take_while(u8::is_ascii_digit).count();
                // Go also takes "1.s"; the schema pattern does not, so neither do we.
                if frac_len == 0 {
                    return Err(DurationError::ExpectedNumber(
                        offset + int_len + 1,
                        input.to_owned(),
                    ));
                }
                frac.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() {
            return Err(DurationError::ExpectedNumber(offset, input.to_owned()));
        }
        let unit_len = after_num
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after_num.len(), |(i, _)| i);
        let (unit, remaining) = after_num.split_at(unit_len);
        let scale: u128 = match unit {
            "" => return Err(DurationError::MissingUnit(input.to_owned())),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => {
                return Err(DurationError::UnknownUnit {
                    unit: other.to_owned(),
                    input: input.to_owned(),
                });
            }
        };
        let whole: u128 = int_part.parse().map_err(|_| overflow())?;
        let mut value = whole.checked_mul(scale).ok_or_else(overflow)?;
        // Fractions are truncated to whole nanoseconds, as Go does.
        let mut place = scale;
        for digit in frac_part.bytes() {
            place /= 10;
            if place == 0 {
                break;
            }
            value += u128::from(digit - b'0') * place;
        }
        total = total.checked_add(value).ok_or_else(overflow)?;
        if total > MAX_DURATION_NANOS {
            return Err(overflow());
        }
        rest = remaining;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| overflow())?;
    // The remainder of a division by 10^9 always fits in u32.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// An IPv4 or IPv6 address as written by the user, validated by the API server with CEL
/// `isIP(self)`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct IpAddress(String);

impl IpAddress {
    /// Wraps an address string after checking that it parses.
    pub fn new(value: impl Into<String>) -> Result<Self, AddressError> {
        let value = value.into();
        parse_ip(&value)?;
        Ok(Self(value))
    }

    /// The string as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the address.
    pub fn parse(&self) -> Result<IpAddr, AddressError> {
        parse_ip(&self.0)
    }
}

impl From<IpAddr> for IpAddress {
    fn from(ip: IpAddr) -> Self {
        Self(ip.to_string())
    }
}

impl fmt::Display for IpAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for IpAddress {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "IpAddress".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 45,
            "x-kubernetes-validations": [{
                "rule": "isIP(self)",
                "message": "must be an IPv4 or IPv6 address",
                "reason": "FieldValueInvalid",
            }],
        })
    }
}

fn parse_ip(value: &str) -> Result<IpAddr, AddressError> {
    value.parse().map_err(|_| AddressError {
        value: value.to_owned(),
    })
}

/// How IPVS forwards packets to a real server (ipvsadm `-m` / `-g` / `-i`; keepalived `lb_kind`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ForwardingMethod {
    /// Masquerading (ipvsadm -m, keepalived lb_kind NAT): the director rewrites the destination;
    /// replies must route back through the director.
    #[serde(rename = "NAT")]
    Nat,
    /// Direct routing (ipvsadm -g, keepalived lb_kind DR): the director rewrites only the MAC;
    /// real servers hold the VIP on a loopback with ARP suppressed.
    #[default]
    DirectRouting,
    /// IP tunnelling (ipvsadm -i, keepalived lb_kind TUN): packets are encapsulated to the real
    /// server, which decapsulates and answers the client directly.
    Tunnel,
}

impl ForwardingMethod {
    /// The name used in the API and in printer columns.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nat => "NAT",
            Self::DirectRouting => "DirectRouting",
            Self::Tunnel => "Tunnel",
        }
    }
}

/// A reference to one key of a Secret in the object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the referring object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data whose value is used.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("5s", Duration::from_secs(5)),
            ("500ms", Duration::from_millis(500)),
            ("1m30s", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            ("40.95s", Duration::from_millis(40_950)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1h2m3s4ms", Duration::from_millis(3_723_004)),
            ("0.0000000001s", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_durations() {
        assert_eq!(parse_go_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_go_duration("5"),
            Err(DurationError::MissingUnit(_))
        ));
        assert!(matches!(
            parse_go_duration("5d"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_go_duration("-5s"),
            Err(DurationError::ExpectedNumber(0, _))
        ));
        assert!(matches!(
            parse_go_duration("s"),
            Err(DurationError::ExpectedNumber(0, _))
        ));
        assert!(matches!(
            parse_go_duration("5s.5s"),
            Err(DurationError::ExpectedNumber(2, _))
        ));
        assert!(matches!(
            parse_go_duration("3000000h"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse_go_duration("99999999999999999999999999999999999999999s"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn duration_round_trips_through_from_std() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(10),
            Duration::from_millis(1500),
            Duration::from_secs(5),
            Duration::from_secs(90),
            Duration::from_secs(7200),
            Duration::from_nanos(1_000_001),
        ] {
            let text = GoDuration::from_std(d);
            assert_eq!(text.to_std(), Ok(d), "{text}");
        }
        assert_eq!(
            GoDuration::from_std(Duration::from_secs(90)).as_str(),
            "90s"
        );
    }

    #[test]
    fn go_duration_new_checks_syntax() {
        assert!(GoDuration::new("3s").is_ok());
        assert!(GoDuration::new("3 s").is_err());
    }

    #[test]
    fn ip_address_parses_both_families() {
        let v4 = IpAddress::new("192.0.2.100").and_then(|a| a.parse());
        assert_eq!(
            v4,
            Ok("192.0.2.100".parse().unwrap_or(IpAddr::from([0; 4])))
        );
        let v6 = IpAddress::new("2001:db8::10").and_then(|a| a.parse());
        assert!(matches!(v6, Ok(IpAddr::V6(_))));
        assert_eq!(
            IpAddress::new("192.0.2.300"),
            Err(AddressError {
                value: "192.0.2.300".into()
            })
        );
    }

    #[test]
    fn duration_pattern_agrees_with_the_parser() {
        // The API server checks the pattern and CEL's duration() parses; our parser must accept
        // exactly what the pattern lets through, or the agent would reject stored objects.
        let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
        for text in [
            "0", "0s", "5s", "1m30s", "1.5s", "500ms", "10us", "10µs", "7ns", "1h", "40.95s", "",
            "5", "-5s", "5d", "s", "1.s", ".5s", "5 s", "5S", "1h-1m", "0ms0s", "00",
        ] {
            assert_eq!(
                pattern.is_match(text),
                parse_go_duration(text).is_ok(),
                "pattern and parser disagree on {text:?}"
            );
        }
    }
}
