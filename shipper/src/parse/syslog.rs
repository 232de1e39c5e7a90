//! Parsing syslog datagrams: RFC 5424 (through `syslog_loose`), RFC 3164, the host-less
//! form glibc's `syslog(3)` writes to `/dev/log`, and whatever else arrives, which is kept.

use chrono::TimeZone;
use sawmill_record::Severity;
use serde_json::Value;
use time::{OffsetDateTime, UtcOffset};

use super::enrich::{absorb, enrich};
use crate::event::Event;

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
        ev.severity = Some(Severity::from_rank(pri));
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
    ///
    /// After the time, as rsyslog's `pmrfc3164` reads it: a host name when the first word
    /// looks like one (letters, digits, `.`, `_`, `-`, ending in a letter or digit, then a
    /// space; or an IPv6 address), then the tag, which ends at the first `:` or space.
    /// glibc's `syslog(3)` sends no host (`myapp[42]: text`): `[` and `:` are not host name
    /// characters, so that word is read as the tag.
    fn parse_3164(&self, ev: &mut Event, s: &str, received: OffsetDateTime) -> bool {
        let (ts, after) = match self
            .timestamp_3164(s, received)
            .or_else(|| rfc3339_token(s))
        {
            Some((ts, after)) => (Some(ts), after.trim_start_matches(' ')),
            None => (None, s),
        };
        ev.ts = ts;
        if ts.is_none() {
            // No header. Only a leading `name:` word is taken as a tag (`<12>app: text`);
            // anything else, such as Python's `<12>python warning`, stays whole.
            match split_tag(after) {
                Some((tag, true, rest))
                    if !tag.is_empty() && (rest.is_empty() || rest.starts_with(' ')) =>
                {
                    set_tag(ev, tag);
                    ev.message = strip_one_space(rest).to_string();
                }
                _ => ev.message = s.to_string(),
            }
            return true;
        }
        let after = match host_of(after) {
            Some((host, rest)) => {
                ev.host = Some(host.to_string());
                rest.trim_start_matches(' ')
            }
            None => after,
        };
        match split_tag(after) {
            Some((tag, _, rest)) => {
                set_tag(ev, tag);
                ev.message = strip_one_space(rest).to_string();
            }
            None => ev.message = after.to_string(),
        }
        false
    }

    /// `Nov 27 07:57:02` (month in any case, day maybe space-padded, optional fraction), as
    /// rsyslog also takes it from network devices: with the year before the time (`Mar  7
    /// 2008 19:06:53`, Cisco) and with a colon after it (`Mar  7 19:06:53: host`).
    fn timestamp_3164<'a>(
        &self,
        s: &'a str,
        received: OffsetDateTime,
    ) -> Option<(OffsetDateTime, &'a str)> {
        // Bytes, not `str` slices: a multi-byte character anywhere here is simply no match.
        let b = s.as_bytes();
        let head = b.get(..3)?;
        let month = MONTHS
            .iter()
            .position(|m| head.eq_ignore_ascii_case(m.as_bytes()))? as u32
            + 1;
        let mut i = 3;
        if b.get(i) != Some(&b' ') {
            return None;
        }
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        let (day, n) = number(&b[i..], 2)?;
        i += n;
        if b.get(i) != Some(&b' ') {
            return None;
        }
        i += 1;
        let mut year = None;
        if let Some((y, 4)) = number(&b[i..], 4) {
            if b.get(i + 4) == Some(&b' ') && (1970..2100).contains(&y) {
                year = Some(y as i32);
                i += 5;
            }
        }
        let two = |at: usize| match number(b.get(at..at + 2)?, 2)? {
            (v, 2) => Some(v),
            _ => None,
        };
        let (h, m, sec) = (two(i)?, two(i + 3)?, two(i + 6)?);
        if b.get(i + 2) != Some(&b':') || b.get(i + 5) != Some(&b':') {
            return None;
        }
        i += 8;
        let mut nanos = 0u32;
        if b.get(i) == Some(&b'.') {
            let fs = i + 1;
            let mut fe = fs;
            while fe < b.len() && b[fe].is_ascii_digit() {
                fe += 1;
            }
            // Nanoseconds: the first nine digits, right-padded with zeros.
            let digits = &b[fs..fe.min(fs + 9)];
            nanos = digits.iter().fold(0, |v, d| v * 10 + (d - b'0') as u32)
                * 10u32.pow(9 - digits.len() as u32);
            i = fe;
        }
        if b.get(i) == Some(&b':') {
            i += 1;
        }
        if i < b.len() && b[i] != b' ' {
            return None;
        }
        let ts = match year {
            Some(y) => self.local_to_utc(
                chrono::NaiveDate::from_ymd_opt(y, month, day)?
                    .and_hms_nano_opt(h, m, sec, nanos)?,
            )?,
            None => self.year_closest(month, day, h, m, sec, nanos, received)?,
        };
        Some((ts, &s[i..]))
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
        severity: Some(Severity::Notice),
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

/// rsyslog keeps tags up to this many bytes; a longer "tag" is text, kept in the message.
const MAX_TAG: usize = 510;

/// The tag that starts `s`: everything up to the first `:` or space (rsyslog's rule, so
/// `-`, `_`, `.`, `/`, `(` and `[pid]` belong to it), whether a `:` ended it, and what
/// follows. `None` when the run is longer than [`MAX_TAG`].
fn split_tag(s: &str) -> Option<(&str, bool, &str)> {
    let end = s.find([':', ' ']).unwrap_or(s.len());
    if end > MAX_TAG {
        return None;
    }
    match s[end..].strip_prefix(':') {
        Some(rest) => Some((&s[..end], true, rest)),
        None => Some((&s[..end], false, &s[end..])),
    }
}

/// Sets `service` and `pid` from a tag as rsyslog derives `programname` and `procid`:
/// the name ends at `[`, `/` or a control character (`postfix/smtpd[7]` is `postfix`,
/// pid 7). When the tag says more than name and `[procid]`, the whole tag is kept in
/// `fields.tag`; a procid that is not a number goes to `fields.procid`.
fn set_tag(ev: &mut Event, tag: &str) {
    let end = tag
        .find(|c: char| c == '[' || c == '/' || c.is_control())
        .unwrap_or(tag.len());
    if end > 0 {
        ev.service = Some(tag[..end].to_string());
    }
    let rest = &tag[end..];
    if rest.is_empty() {
        return;
    }
    let procid = tag
        .strip_suffix(']')
        .and_then(|t| t.rfind('[').map(|open| &t[open + 1..]));
    match procid.map(|p| (p, p.parse::<u64>())) {
        Some((_, Ok(pid))) => ev.pid = Some(pid),
        Some((p, Err(_))) if !p.is_empty() => {
            ev.fields
                .insert("procid".into(), Value::String(p.to_string()));
        }
        _ => {}
    }
    let name_and_procid = end > 0 && procid.is_some_and(|p| rest.len() == p.len() + 2);
    if !name_and_procid {
        ev.fields
            .insert("tag".into(), Value::String(tag.to_string()));
    }
}

/// The host name that starts `s`, by rsyslog's test, and what follows it.
fn host_of(s: &str) -> Option<(&str, &str)> {
    let (w, rest) = word(s);
    let b = w.as_bytes();
    let name = !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        // A word that ends the message is a host name whatever its last character.
        && (rest.is_empty() || b[b.len() - 1].is_ascii_alphanumeric());
    // rsyslog stops at the first `:`, which splits an IPv6 address; take it whole.
    let ipv6 = w.contains(':') && w.parse::<std::net::Ipv6Addr>().is_ok();
    (name || ipv6).then_some((w, rest))
}

/// Up to `max` leading ASCII digits of `b`, and how many there were (at least one).
fn number(b: &[u8], max: usize) -> Option<(u32, usize)> {
    let n = b
        .iter()
        .take(max)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if n == 0 {
        return None;
    }
    let v = b[..n].iter().fold(0u32, |v, d| v * 10 + (d - b'0') as u32);
    Some((v, n))
}

/// A leading RFC 3339 token, as rsyslog's precise forwarding format sends.
fn rfc3339_token(s: &str) -> Option<(OffsetDateTime, &str)> {
    let (w, rest) = word(s);
    if w.len() < 20 || !w.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let t = sawmill_record::time::parse_rfc3339(w)?;
    // `9999-12-31T23:00:00-23:00` parses but is past year 9999 in UTC, where a record's
    // time cannot go: not a timestamp then (it panicked when the record was written).
    let t = t.checked_to_offset(UtcOffset::UTC)?;
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
            from_sawmill_run(ev, element);
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

/// `sawmill run`'s own element: which stream a line came from, the host and service when
/// they could not be header fields, and the run's fields (its id, the task's metadata, how
/// it ended), of which `exit_code` and `duration_ms` are numbers.
fn from_sawmill_run(ev: &mut Event, element: &syslog_loose::StructuredElement<&str>) {
    // A record's host and service are one word: anything else is no name.
    let name =
        |v: &str| !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c.is_control());
    for (k, v) in element.params() {
        match *k {
            "stream" => {
                ev.stream = match v.as_str() {
                    "stdout" => Some("stdout"),
                    "stderr" => Some("stderr"),
                    _ => ev.stream,
                };
            }
            "service" if name(&v) => ev.service = Some(v),
            "host" if name(&v) => ev.host = Some(v),
            // Not a name: the header's stands.
            "service" | "host" => {}
            "exit_code" | "duration_ms" => {
                let value = v.parse::<i64>().map_or(Value::String(v), Value::from);
                ev.fields.entry(k.to_string()).or_insert(value);
            }
            _ => {
                ev.fields.entry(k.to_string()).or_insert(Value::String(v));
            }
        }
    }
}

#[cfg(test)]
#[path = "../../../tests/e2e/corpus.rs"]
mod corpus;

#[cfg(test)]
mod fuzz;

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

    /// What one datagram becomes: host, service, pid, message, and the time when one is
    /// expected (received 2026-11-27 08:00 UTC, zone UTC).
    type Expect<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Option<u64>,
        &'a str,
        Option<OffsetDateTime>,
    );

    fn check_forms(cases: &[(&str, Expect)]) {
        use time::macros::datetime;
        let parser = Parser {
            zone: Zone::Fixed(UtcOffset::UTC),
            ..Parser::default()
        };
        let received = datetime!(2026-11-27 08:00:00 UTC);
        let mut wrong = Vec::new();
        for (raw, want) in cases {
            let ev = parser.parse(raw.as_bytes(), received).event;
            let got = (
                ev.host.as_deref(),
                ev.service.as_deref(),
                ev.pid,
                ev.message.as_str(),
                want.4.and(ev.ts),
            );
            if got != *want {
                wrong.push(format!("{raw:?}\n     got {got:?}\n    want {want:?}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {} forms read wrong:\n{}",
            wrong.len(),
            cases.len(),
            wrong.join("\n")
        );
    }

    #[test]
    fn rfc3164_variants_read_as_rsyslog_reads_them() {
        use time::macros::datetime;
        let aug10 = Some(datetime!(2026-08-10 22:18:24 UTC));
        let nov7 = Some(datetime!(2026-11-07 19:06:53 UTC));
        let in2008 = Some(datetime!(2008-03-07 19:06:53 UTC));
        check_forms(&[
            // A tag that ends at a space, not a colon.
            (
                "<6>Aug 10 22:18:24 host tag text",
                (Some("host"), Some("tag"), None, "text", aug10),
            ),
            (
                "<6>Aug 10 22:18:24 host tag[42] text",
                (Some("host"), Some("tag"), Some(42), "text", aug10),
            ),
            // rsyslog ends a tag only at `:` or a space: `-`, `_`, `.` belong to it.
            (
                "<6>Aug 10 22:18:24 host my-app_v2.1 text",
                (Some("host"), Some("my-app_v2.1"), None, "text", aug10),
            ),
            // … and the program name ends at `/` (rsyslog's `programname`).
            (
                "<6>Aug 10 22:18:24 host postfix/smtpd[7]: text",
                (Some("host"), Some("postfix"), Some(7), "text", aug10),
            ),
            (
                "<6>Aug 10 22:18:24 host tag",
                (Some("host"), Some("tag"), None, "", aug10),
            ),
            // A year inside the timestamp, as network devices send it.
            (
                "<189>Mar  7 2008 19:06:53 router sshd: text",
                (Some("router"), Some("sshd"), None, "text", in2008),
            ),
            (
                "<189>Mar 7 2008 19:06:53 router sshd text",
                (Some("router"), Some("sshd"), None, "text", in2008),
            ),
            // A colon right after the time (Cisco), with and without a host.
            (
                "<13>Nov 7 19:06:53: host tag: text",
                (Some("host"), Some("tag"), None, "text", nov7),
            ),
            (
                "<189>Mar  7 2008 19:06:53: %SYS-5-CONFIG_I: Configured from console",
                (
                    None,
                    Some("%SYS-5-CONFIG_I"),
                    None,
                    "Configured from console",
                    in2008,
                ),
            ),
            // glibc's syslog(3) sends no host.
            (
                "<13>Nov 27 07:57:02 myapp[42]: text",
                (None, Some("myapp"), Some(42), "text", None),
            ),
            (
                "<13>Nov 27 07:57:02 myapp: text",
                (None, Some("myapp"), None, "text", None),
            ),
            (
                "<13>Nov 27 07:57:02 my.app: text",
                (None, Some("my.app"), None, "text", None),
            ),
            // The forms read before.
            (
                "<155>Nov 27 07:57:02 vm myapp: hello 3164",
                (Some("vm"), Some("myapp"), None, "hello 3164", None),
            ),
            (
                "<167>Mar 27 19:06:53 source_server sshd(pam_unix)[12750]: session opened",
                (
                    Some("source_server"),
                    Some("sshd(pam_unix)"),
                    Some(12750),
                    "session opened",
                    None,
                ),
            ),
            (
                "<13>Nov 27 07:57:02 fe80::1 app: v6",
                (Some("fe80::1"), Some("app"), None, "v6", None),
            ),
            (
                "<13>2026-11-27T07:57:02.5Z host app: precise",
                (
                    Some("host"),
                    Some("app"),
                    None,
                    "precise",
                    Some(datetime!(2026-11-27 07:57:02.5 UTC)),
                ),
            ),
            (
                "<13>Nov 27 07:57:02.123 host app: fraction",
                (
                    Some("host"),
                    Some("app"),
                    None,
                    "fraction",
                    Some(datetime!(2026-11-27 07:57:02.123 UTC)),
                ),
            ),
            ("<14>Aug 30 23:00:05", (None, None, None, "", None)),
            (
                "<14>Aug 30 23:00:05 host",
                (Some("host"), None, None, "", None),
            ),
            // Without a timestamp only `name:` is a tag; Python's form stays whole.
            (
                "<12>python warning request_id=r-9",
                (None, None, None, "python warning request_id=r-9", None),
            ),
            (
                "<12>app: no time",
                (None, Some("app"), None, "no time", None),
            ),
            (
                "<12>http://x/y failed",
                (None, None, None, "http://x/y failed", None),
            ),
            // Not a timestamp: kept whole.
            (
                "<13>Nov 27 07:57:02x app: y",
                (None, None, None, "Nov 27 07:57:02x app: y", None),
            ),
        ]);
    }

    #[test]
    fn a_tag_longer_than_rsyslog_keeps_is_left_in_the_message() {
        let long = "t".repeat(MAX_TAG + 1);
        let raw = format!("<13>Nov 27 07:57:02 host {long}: text");
        let want = format!("{long}: text");
        check_forms(&[(&raw, (Some("host"), None, None, &want, None))]);
    }

    #[test]
    fn a_tag_that_says_more_than_its_name_is_kept_whole() {
        let parser = Parser::default();
        let now = OffsetDateTime::now_utc();
        let ev = parser
            .parse(b"<13>Nov 27 07:57:02 h postfix/smtpd[7]: x", now)
            .event;
        assert_eq!(ev.fields.get("tag"), Some(&Value::from("postfix/smtpd[7]")));
        let ev = parser
            .parse(b"<13>Nov 27 07:57:02 h app[main]: x", now)
            .event;
        assert_eq!((ev.service.as_deref(), ev.pid), (Some("app"), None));
        assert_eq!(ev.fields.get("procid"), Some(&Value::from("main")));
        assert_eq!(ev.fields.get("tag"), None);
        let ev = parser.parse(b"<13>Nov 27 07:57:02 h app[9]: x", now).event;
        assert_eq!(ev.fields.get("tag"), None, "name and pid need no tag field");
    }

    /// Regressions found by the fuzz tests (`fuzz.rs`); each one panicked the batcher.
    #[test]
    fn inputs_the_fuzz_tests_found_make_records() {
        let parser = Parser::default();
        let now = OffsetDateTime::now_utc();
        let cases: [&[u8]; 5] = [
            // A multi-byte character where the month goes (`s[..3]` split it) or in the time.
            b"<0> \xf0\x90\x80\x80 aAA0AaA0a0",
            b"<0>  - \xc2\xa1 0 A - 0000",
            b"<13>\xc3\xa9\xc3\xa9 27 07:57:02 x",
            b"<13>Nov 27 07:5\xc3\xa9:02 host app: x",
            // A time past year 9999 once in UTC: writing the record panicked.
            b"<0>9999-12-31T23:00:00-23:00 host app: x",
        ];
        for data in cases {
            let ev = parser.parse(data, now).event;
            let mut out = Vec::new();
            ev.write_record(&mut out, None, "h");
            let rec: Value = serde_json::from_slice(&out).unwrap();
            assert!(rec["message"].is_string(), "{rec}");
        }
        let ev = parser.parse(cases[4], now).event;
        assert_eq!(
            (ev.ts, ev.message.as_str()),
            (None, "9999-12-31T23:00:00-23:00 host app: x")
        );
    }

    #[test]
    fn sawmill_runs_element_gives_fields_numbers_and_names() {
        let parser = Parser::default();
        let now = OffsetDateTime::now_utc();
        let ev = parser
            .parse(
                br#"<11>1 2026-11-27T10:00:00Z - - 42 - [sawmill@32473 service="a/very/long/marathon/app" host="agent-7" exit_code="3" duration_ms="1234" run_id="00ff" k8s_pod="p\]1"] exited"#,
                now,
            )
            .event;
        assert_eq!(
            (ev.service.as_deref(), ev.host.as_deref(), ev.stream),
            (
                Some("a/very/long/marathon/app"),
                Some("agent-7"),
                Some("syslog")
            )
        );
        assert_eq!(
            Value::Object(ev.fields),
            serde_json::json!({"exit_code": 3, "duration_ms": 1234, "run_id": "00ff", "k8s_pod": "p]1"})
        );
        // Whoever else sends the element: a name with a space is none, a code that is not
        // a number stays text.
        let ev = parser
            .parse(
                br#"<14>1 - h app - - [sawmill@32473 service="two words" host="" exit_code="x"] m"#,
                now,
            )
            .event;
        assert_eq!(
            (ev.service.as_deref(), ev.host.as_deref()),
            (Some("app"), Some("h"))
        );
        assert_eq!(
            Value::Object(ev.fields),
            serde_json::json!({"exit_code": "x"})
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
