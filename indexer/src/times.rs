//! Parsing and printing instants: RFC 3339, epoch numbers and `now-15m` forms.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcOffset};

/// Epoch numbers are told apart by magnitude, as Vector and Loki do: seconds, ms, µs or ns.
pub fn from_epoch_number(n: f64) -> Option<OffsetDateTime> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let nanos: i128 = if n < 1e11 {
        (n * 1e9) as i128
    } else if n < 1e14 {
        (n * 1e6) as i128
    } else if n < 1e17 {
        (n * 1e3) as i128
    } else {
        n as i128
    };
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

/// [`from_epoch_number`] for integers, exactly: f64 cannot hold nanoseconds since 1970.
pub fn from_epoch_integer(n: i64) -> Option<OffsetDateTime> {
    if n < 0 {
        return None;
    }
    let n = n as i128;
    let nanos = if n < 100_000_000_000 {
        n * 1_000_000_000
    } else if n < 100_000_000_000_000 {
        n * 1_000_000
    } else if n < 100_000_000_000_000_000 {
        n * 1_000
    } else {
        n
    };
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

/// A record's `ts`: an RFC 3339 string or an epoch number.
pub fn parse_ts_value(v: &Value) -> Result<OffsetDateTime, String> {
    match v {
        Value::String(s) => parse_rfc3339(s),
        Value::Number(n) => n
            .as_i64()
            .and_then(from_epoch_integer)
            .or_else(|| n.as_f64().and_then(from_epoch_number))
            .ok_or_else(|| format!("`ts` {n} is not a valid epoch time")),
        other => Err(format!(
            "`ts` must be an RFC 3339 string or an epoch number, not {other}"
        )),
    }
}

pub fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, String> {
    // Accept a space instead of `T`, as RFC 3339 itself allows.
    let normalized;
    let s = if s.len() > 10 && s.as_bytes()[10] == b' ' {
        normalized = format!("{}T{}", &s[..10], &s[11..]);
        normalized.as_str()
    } else {
        s
    };
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("`{s}` is not an RFC 3339 time ({e})"))?;
    // `9999-12-31T23:59:59-23:00` parses, but lies past the year 9999 in UTC, which `time`
    // cannot hold: `to_offset` panicked on it, in a request's parsing task or handler.
    t.checked_to_offset(UtcOffset::UTC)
        .ok_or_else(|| format!("`{s}` is outside the years 0000 to 9999 in UTC"))
}

/// A query-string instant: RFC 3339, epoch milliseconds, `now`, or `now-15m` / `now+1h`
/// with units ms, s, m, h, d, w.
pub fn parse_instant(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(now);
        }
        let (sign, rest) = match rest.as_bytes()[0] {
            b'-' => (-1, &rest[1..]),
            b'+' => (1, &rest[1..]),
            _ => return Err(bad_instant(s)),
        };
        let split = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| bad_instant(s))?;
        let (num, unit) = rest.split_at(split);
        let n: i64 = num.parse().map_err(|_| bad_instant(s))?;
        let out_of_range = || format!("`{s}` is out of range");
        let d = match unit {
            "ms" => Duration::milliseconds(n),
            _ => {
                let mult = match unit {
                    "s" => 1,
                    "m" => 60,
                    "h" => 3600,
                    "d" => 86400,
                    "w" => 7 * 86400,
                    _ => return Err(bad_instant(s)),
                };
                Duration::seconds(n.checked_mul(mult).ok_or_else(out_of_range)?)
            }
        };
        return now.checked_add(d * sign).ok_or_else(out_of_range);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = s.parse().map_err(|_| bad_instant(s))?;
        return OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
            .map_err(|_| format!("`{s}` is out of range"));
    }
    parse_rfc3339(s).map_err(|_| bad_instant(s))
}

fn bad_instant(s: &str) -> String {
    format!("`{s}` is not a time: use RFC 3339 (2026-11-27T10:00:00Z), epoch milliseconds, or now, now-15m, now-2h, now-7d")
}

/// A span such as `7d`, `12h`, `30m`, `500ms`: used by `--retention` and `--commit-interval`.
pub fn parse_span(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` needs a unit: ms, s, m, h, d or w (e.g. 7d)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a span such as 7d or 12h"))?;
    let secs = match unit {
        "ms" => return Ok(std::time::Duration::from_millis(n)),
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86400),
        "w" => n.checked_mul(7 * 86400),
        _ => {
            return Err(format!(
                "`{s}` has unknown unit `{unit}`: use ms, s, m, h, d or w"
            ))
        }
    };
    let secs = secs.ok_or_else(|| format!("`{s}` is too long"))?;
    Ok(std::time::Duration::from_secs(secs))
}

/// A size such as `10GiB`, `500MB`, `1048576`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as 10GiB or 500MB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "`{s}` has unknown unit `{unit}`: use B, KiB, MiB, GiB, TiB (or KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// `30s`, `1ms`: a duration as the flags take it.
pub fn span_text(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        format!("{}us", d.as_micros())
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn relative_instants_move_from_now() {
        let now = datetime!(2026-11-27 10:00:00 UTC);
        assert_eq!(
            parse_instant("now-15m", now).unwrap(),
            datetime!(2026-11-27 9:45:00 UTC)
        );
        assert_eq!(
            parse_instant("now+1h", now).unwrap(),
            datetime!(2026-11-27 11:00:00 UTC)
        );
        assert_eq!(parse_instant("now", now).unwrap(), now);
        assert!(parse_instant("yesterday", now).is_err());
        assert!(parse_instant("now-15x", now).is_err());
        // Regression: huge spans panicked inside `time` instead of answering 400.
        assert!(parse_instant("now-99999999999999999w", now).is_err());
        assert!(parse_span("99999999999999999w").is_err());
    }

    #[test]
    fn epoch_numbers_are_told_apart_by_magnitude() {
        let want = datetime!(2026-11-27 10:00:00 UTC);
        let secs = want.unix_timestamp() as f64;
        assert_eq!(from_epoch_number(secs).unwrap(), want);
        assert_eq!(from_epoch_number(secs * 1e3).unwrap(), want);
        assert_eq!(from_epoch_number(secs * 1e9).unwrap(), want);
        // Regression: epoch milliseconds went through f64 and came out a few ns early.
        let ms = 1_764_237_600_123i64;
        let t = parse_ts_value(&serde_json::json!(ms)).unwrap();
        assert_eq!(t.unix_timestamp_nanos(), ms as i128 * 1_000_000);
        assert_eq!(
            parse_ts_value(&serde_json::json!(1_764_237_600_123_456_789i64))
                .unwrap()
                .nanosecond(),
            123_456_789
        );
    }

    #[test]
    fn rfc3339_is_printed_in_utc_with_nanoseconds() {
        let t = parse_rfc3339("2026-11-27T11:00:00.5+01:00").unwrap();
        assert_eq!(
            sawmill_record::time::format_rfc3339(t),
            "2026-11-27T10:00:00.500000000Z"
        );
    }

    #[test]
    fn spans_and_sizes_parse() {
        assert_eq!(parse_span("7d").unwrap().as_secs(), 7 * 86400);
        assert_eq!(parse_bytes("10GiB").unwrap(), 10 << 30);
        assert!(parse_bytes("10XB").is_err());
    }

    #[test]
    fn a_time_past_year_9999_in_utc_is_an_error_not_a_panic() {
        let e = parse_rfc3339("9999-12-31T23:59:59-23:00").unwrap_err();
        assert!(e.contains("outside the years 0000 to 9999"), "{e}");
        assert!(parse_rfc3339("9999-12-31T23:59:59+01:00").is_ok());
    }
}
