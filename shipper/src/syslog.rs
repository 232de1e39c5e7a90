//! Parsing syslog datagrams: RFC 5424 (through `syslog_loose`), RFC 3164, the host-less
//! form glibc's `syslog(3)` writes to `/dev/log`, and whatever else arrives, which is kept.

use chrono::TimeZone;
use serde_json::Value;
use time::{OffsetDateTime, UtcOffset};

use crate::enrich::{absorb, enrich};
use crate::event::Event;

pub const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];
pub const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// The zone of timestamps that carry none (RFC 3164).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    /// The machine's zone (`TZ`, `/etc/localtime`).
    Local,
    Fixed(UtcOffset),
}

impl std::str::FromStr for Zone {
    type Err = String;
    fn from_str(s: &str) -> Result<Zone, String> {
        match s {
            "local" => Ok(Zone::Local),
            "UTC" | "utc" | "Z" => Ok(Zone::Fixed(UtcOffset::UTC)),
            _ => {
                let fmt = time::macros::format_description!(
                    "[offset_hour sign:mandatory]:[offset_minute]"
                );
                UtcOffset::parse(s, &fmt).map(Zone::Fixed).map_err(|_| {
                    format!("`{s}` is not a zone: use local, UTC or an offset such as +02:00")
                })
            }
        }
    }
}

/// How datagrams are read.
#[derive(Clone, Debug)]
pub struct Parser {
    /// Longer messages are cut to this many bytes and flagged `truncated`.
    pub max_message_bytes: usize,
    pub zone: Zone,
}

impl Default for Parser {
    fn default() -> Self {
        Parser {
            max_message_bytes: 64 * 1024,
            zone: Zone::Local,
        }
    }
}

/// A parsed datagram, and whether its header had to be guessed or given up on.
pub struct Parsed {
    pub event: Event,
    pub fallback: bool,
}

impl Parser {
    pub fn parse(&self, data: &[u8], received: OffsetDateTime) -> Parsed {
        let truncated = data.len() > self.max_message_bytes;
        let data = &data[..data.len().min(self.max_message_bytes)];
        let mut text = String::from_utf8_lossy(data).into_owned();
        // Python's SysLogHandler ends with NUL, TCP framing with a newline: not content.
        while text.ends_with(['\0', '\n', '\r']) {
            text.pop();
        }
        // A NUL inside stays visible instead of ending the string somewhere downstream.
        if text.contains('\0') {
            text = text.replace('\0', "\u{2400}");
        }
        let mut parsed = self.parse_text(&text, received);
        parsed.event.truncated = truncated;
        parsed.event.received = Some(received);
        parsed.event.stream.get_or_insert("syslog");
        enrich(&mut parsed.event);
        parsed
    }

    fn parse_text(&self, text: &str, received: OffsetDateTime) -> Parsed {
        let (pri, rest) = match split_pri(text) {
            Pri::Valid(p, rest) => (Some(p), rest),
            Pri::Missing => (None, text),
            // `<999>msg`, `<>x`: not a header; the whole text is the message.
            Pri::Invalid => {
                return Parsed {
                    event: defaults(text.to_string()),
                    fallback: true,
                }
            }
        };
        let mut ev = Event::default();
        let pri = pri.unwrap_or(13);
        ev.severity = Some(SEVERITIES[(pri & 7) as usize]);
        ev.facility = Some(FACILITIES[(pri >> 3) as usize]);
        let rest_trim = rest.trim_start_matches(' ');
        if rest_trim.starts_with("1 ") {
            if let Ok(m) = syslog_loose::parse_message_with_year_exact(
                text,
                |_| received.year(),
                syslog_loose::Variant::RFC5424,
            ) {
                from_5424(&mut ev, m);
                return Parsed {
                    event: ev,
                    fallback: false,
                };
            }
        }
        let fallback = self.parse_3164(&mut ev, rest_trim, received) || pri_missing(text);
        Parsed {
            event: ev,
            fallback,
        }
    }

    /// Fills `ev` from an RFC 3164 header; true when there was no header to read.
    fn parse_3164(&self, ev: &mut Event, s: &str, received: OffsetDateTime) -> bool {
        let (ts, after) = match self.timestamp_3164(s, received) {
            Some((ts, after)) => (Some(ts), after.trim_start_matches(' ')),
            None => match rfc3339_token(s) {
                Some((ts, after)) => (Some(ts), after.trim_start_matches(' ')),
                None => (None, s),
            },
        };
        ev.ts = ts;
        let (first, after_first) = word(after);
        if let Some((tag, pid)) = tag_of(first) {
            // `myapp[42]: text`: the local form, or a client that sends no host.
            ev.service = Some(tag);
            ev.pid = pid;
            ev.message = strip_one_space(after_first).to_string();
            return ts.is_none();
        }
        if ts.is_none() {
            ev.message = s.to_string();
            return true;
        }
        if !first.is_empty() {
            ev.host = Some(first.to_string());
        }
        let rest = after_first.trim_start_matches(' ');
        let (second, after_second) = word(rest);
        match tag_of(second) {
            Some((tag, pid)) => {
                ev.service = Some(tag);
                ev.pid = pid;
                ev.message = strip_one_space(after_second).to_string();
            }
            None => ev.message = rest.to_string(),
        }
        false
    }

    /// `Nov 27 07:57:02` (month in any case, day maybe space-padded, optional fraction).
    fn timestamp_3164<'a>(
        &self,
        s: &'a str,
        received: OffsetDateTime,
    ) -> Option<(OffsetDateTime, &'a str)> {
        let b = s.as_bytes();
        if b.len() < 15 {
            return None;
        }
        let month = MONTHS.iter().position(|m| s[..3].eq_ignore_ascii_case(m))? as u32 + 1;
        let mut i = 3;
        if b[i] != b' ' {
            return None;
        }
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let day_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let day: u32 = s[day_start..i].parse().ok()?;
        if b.get(i) != Some(&b' ') || b.len() < i + 9 {
            return None;
        }
        let hms = &s[i + 1..i + 9];
        let (h, m, sec) = (
            hms[0..2].parse::<u32>().ok()?,
            hms[3..5].parse::<u32>().ok()?,
            hms[6..8].parse::<u32>().ok()?,
        );
        if &hms[2..3] != ":" || &hms[5..6] != ":" {
            return None;
        }
        let mut end = i + 9;
        let mut nanos = 0u32;
        if b.get(end) == Some(&b'.') {
            let fs = end + 1;
            let mut fe = fs;
            while fe < b.len() && b[fe].is_ascii_digit() {
                fe += 1;
            }
            let digits = &s[fs..fe.min(fs + 9)];
            nanos = format!("{digits:0<9}").parse().ok()?;
            end = fe;
        }
        let ts = self.year_closest(month, day, h, m, sec, nanos, received)?;
        Some((ts, &s[end..]))
    }

    /// Year-less times take the year that puts them closest to the moment of receipt.
    #[allow(clippy::too_many_arguments)]
    fn year_closest(
        &self,
        month: u32,
        day: u32,
        h: u32,
        m: u32,
        s: u32,
        nanos: u32,
        received: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        let y = received.year();
        (y - 1..=y + 1)
            .filter_map(|year| {
                chrono::NaiveDate::from_ymd_opt(year, month, day)?.and_hms_nano_opt(h, m, s, nanos)
            })
            .filter_map(|naive| self.local_to_utc(naive))
            .min_by_key(|t| (*t - received).abs())
    }

    fn local_to_utc(&self, naive: chrono::NaiveDateTime) -> Option<OffsetDateTime> {
        let utc_nanos = match self.zone {
            Zone::Local => chrono::Local
                .from_local_datetime(&naive)
                .earliest()?
                .timestamp_nanos_opt()?,
            Zone::Fixed(off) => {
                naive.and_utc().timestamp_nanos_opt()? - off.whole_seconds() as i64 * 1_000_000_000
            }
        };
        OffsetDateTime::from_unix_timestamp_nanos(utc_nanos as i128).ok()
    }
}

enum Pri<'a> {
    Valid(u8, &'a str),
    Missing,
    Invalid,
}

fn split_pri(text: &str) -> Pri<'_> {
    let Some(rest) = text.strip_prefix('<') else {
        return Pri::Missing;
    };
    let Some(close) = rest.find('>').filter(|c| *c <= 3) else {
        return Pri::Invalid;
    };
    let digits = &rest[..close];
    match digits.parse::<u8>() {
        Ok(p) if !digits.is_empty() && p <= 191 && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Pri::Valid(p, &rest[close + 1..])
        }
        _ => Pri::Invalid,
    }
}

fn pri_missing(text: &str) -> bool {
    matches!(split_pri(text), Pri::Missing)
}

/// A message that is all text: user.notice, as rsyslog does.
fn defaults(message: String) -> Event {
    Event {
        message,
        severity: Some("notice"),
        facility: Some("user"),
        ..Default::default()
    }
}

fn word(s: &str) -> (&str, &str) {
    match s.find(' ') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

fn strip_one_space(s: &str) -> &str {
    s.strip_prefix(' ').unwrap_or(s)
}

/// `name:` or `name[pid]:`, the tag that ends an RFC 3164 header.
fn tag_of(w: &str) -> Option<(String, Option<u64>)> {
    let name = w.strip_suffix(':')?;
    if name.is_empty() {
        return None;
    }
    if let Some(body) = name.strip_suffix(']') {
        if let Some(open) = body.rfind('[') {
            let pid = body[open + 1..].parse().ok();
            if open > 0 {
                return Some((body[..open].to_string(), pid));
            }
        }
    }
    Some((name.to_string(), None))
}

/// A leading RFC 3339 token, as rsyslog's precise forwarding format sends.
fn rfc3339_token(s: &str) -> Option<(OffsetDateTime, &str)> {
    let (w, rest) = word(s);
    if w.len() < 20 || !w.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let t = OffsetDateTime::parse(w, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t, rest))
}

fn from_5424(ev: &mut Event, m: syslog_loose::Message<&str>) {
    ev.ts = m
        .timestamp
        .and_then(|t| t.timestamp_nanos_opt())
        .and_then(|n| OffsetDateTime::from_unix_timestamp_nanos(n as i128).ok());
    ev.host = m.hostname.map(str::to_string);
    ev.service = m.appname.map(str::to_string);
    match m.procid {
        Some(syslog_loose::ProcId::PID(p)) if p >= 0 => ev.pid = Some(p as u64),
        Some(syslog_loose::ProcId::Name(n)) => {
            ev.fields
                .insert("procid".into(), Value::String(n.to_string()));
        }
        _ => {}
    }
    if let Some(id) = m.msgid {
        ev.fields
            .insert("msgid".into(), Value::String(id.to_string()));
    }
    for element in &m.structured_data {
        if element.id == "sawmill@32473" {
            // `sawmill run` says which stream a line came from.
            for (k, v) in element.params() {
                if *k == "stream" {
                    ev.stream = match v.as_str() {
                        "stdout" => Some("stdout"),
                        "stderr" => Some("stderr"),
                        _ => ev.stream,
                    };
                }
            }
            continue;
        }
        for (k, v) in element.params() {
            let v = Value::String(v);
            absorb(ev, k, &v);
            ev.fields.entry(k.to_string()).or_insert(v);
        }
    }
    // RFC 5424 marks UTF-8 messages with a byte order mark.
    ev.message = m.msg.strip_prefix('\u{feff}').unwrap_or(m.msg).to_string();
}

#[cfg(test)]
#[path = "../../tests/e2e/corpus.rs"]
mod corpus;

#[cfg(test)]
mod tests {
    use super::corpus::{input, mismatch, syslog_cases};
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn every_corpus_case_gives_its_record() {
        let parser = Parser {
            zone: Zone::Fixed(UtcOffset::UTC),
            ..Parser::default()
        };
        let now = OffsetDateTime::now_utc();
        let cases = syslog_cases();
        let mut failures = BTreeMap::new();
        for case in &cases {
            let rec = parser
                .parse(&input(case), now)
                .event
                .to_record("t", 0, "testhost");
            if let Some(m) = mismatch(&case["expect"], &rec, "testhost") {
                failures.insert(
                    case["name"].as_str().unwrap().to_string(),
                    format!("{m}\n    record: {rec}"),
                );
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} corpus cases fail:\n{}",
            failures.len(),
            cases.len(),
            failures
                .iter()
                .map(|(k, v)| format!("- {k}: {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    #[test]
    fn the_corpus_checker_reports_a_wrong_field() {
        let expect = serde_json::json!({"service": "a", "host": "$HOST", "fields.n": 1, "message_contains": ["x"]});
        let good =
            serde_json::json!({"service": "a", "host": "me", "fields": {"n": 1}, "message": "xy"});
        assert_eq!(mismatch(&expect, &good, "me"), None);
        let bad =
            serde_json::json!({"service": "b", "host": "me", "fields": {"n": 2}, "message": "y"});
        let m = mismatch(&expect, &bad, "me").unwrap();
        assert!(
            m.contains("service") && m.contains("fields.n") && m.contains("lacks"),
            "{m}"
        );
    }

    #[test]
    fn a_december_line_received_on_new_year_belongs_to_the_old_year() {
        let parser = Parser {
            zone: Zone::Fixed(UtcOffset::UTC),
            ..Parser::default()
        };
        let received = time::macros::datetime!(2027-01-01 00:00:05 UTC);
        let p = parser.parse(b"<13>Dec 31 23:59:59 app: late", received);
        assert_eq!(
            p.event.ts,
            Some(time::macros::datetime!(2026-12-31 23:59:59 UTC))
        );
        let parser = Parser {
            zone: "+02:00".parse().unwrap(),
            ..Parser::default()
        };
        let p = parser.parse(b"<13>Jan  1 01:00:00 app: zoned", received);
        assert_eq!(
            p.event.ts,
            Some(time::macros::datetime!(2026-12-31 23:00:00 UTC))
        );
    }
}
