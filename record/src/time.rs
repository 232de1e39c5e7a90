//! The one form of an instant in a record: RFC 3339 in UTC to the nanosecond,
//! `2026-11-30T07:00:00.123456789Z`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Writes `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` into `buf` and returns its length. Fixed-width
/// digits by hand: every shipped record carries two stamps, and `time`'s general formatter
/// was a visible share of the shipper's batching time. RFC 3339 holds years 0000 to 9999;
/// a time outside them in UTC (`9999-12-31T23:00:00-23:00` has no UTC form at all) is
/// clamped rather than panicking.
pub fn write_rfc3339(t: OffsetDateTime, buf: &mut [u8; 30]) -> usize {
    let t = match t.checked_to_offset(time::UtcOffset::UTC) {
        Some(u) if (0..=9999).contains(&u.year()) => u,
        _ if t.year() > 0 => time::macros::datetime!(9999-12-31 23:59:59.999999999 UTC),
        _ => time::macros::datetime!(0000-01-01 00:00:00 UTC),
    };
    let mut i = 0;
    // Each field right to left, then its separator.
    let mut put = |mut v: u32, width: usize, sep: u8| {
        for d in buf[i..i + width].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        buf[i + width] = sep;
        i += width + 1;
    };
    put(t.year() as u32, 4, b'-');
    put(t.month() as u32, 2, b'-');
    put(t.day() as u32, 2, b'T');
    put(t.hour() as u32, 2, b':');
    put(t.minute() as u32, 2, b':');
    put(t.second() as u32, 2, b'.');
    put(t.nanosecond(), 9, b'Z');
    i
}

/// `t` in the record form (see [`write_rfc3339`]).
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    let mut buf = [0u8; 30];
    let n = write_rfc3339(t, &mut buf);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Epoch microseconds in the record form; the empty string outside what `time` holds.
pub fn format_micros(us: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000)
        .map(format_rfc3339)
        .unwrap_or_default()
}

/// Any RFC 3339 instant, in any offset.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// An instant that serialises in the record form, written without an intermediate `String`,
/// and deserialises from any RFC 3339 text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(pub OffsetDateTime);

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 30];
        let n = write_rfc3339(self.0, &mut buf);
        s.serialize_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Stamp, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        parse_rfc3339(&s)
            .map(Stamp)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not an RFC 3339 time")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn printed_in_utc_with_nanoseconds_and_read_back() {
        let t = datetime!(2026-11-30 08:00:00.000123 +01:00);
        let s = format_rfc3339(t);
        assert_eq!(s, "2026-11-30T07:00:00.000123000Z");
        assert_eq!(parse_rfc3339(&s), Some(t));
        assert_eq!(format_micros(1_000_001), "1970-01-01T00:00:01.000001000Z");
    }

    #[test]
    fn times_outside_rfc3339_are_clamped_not_panicked_on() {
        let late = datetime!(9999-12-31 23:00:00 -23:00);
        assert_eq!(format_rfc3339(late), "9999-12-31T23:59:59.999999999Z");
        let early = datetime!(0000-01-01 00:00:00 +01:00);
        assert_eq!(format_rfc3339(early), "0000-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn stamps_round_trip_through_json() {
        let s = Stamp(datetime!(2026-01-02 03:04:05.5 UTC));
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, "\"2026-01-02T03:04:05.500000000Z\"");
        assert_eq!(serde_json::from_str::<Stamp>(&j).unwrap(), s);
        assert!(serde_json::from_str::<Stamp>("\"yesterday\"").is_err());
    }
}
