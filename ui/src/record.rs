//! How one record is shown: a row's columns, its fields and raw JSON, cut to sizes a page
//! can carry, and the links it offers (context, request view, the whole record).

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::client::Hit;
use crate::highlight::{Segment, Terms};
use crate::url::{enc, Tz};

/// A message longer than this is cut in lists, with a "show all" link to the record page.
pub const MESSAGE_CUT: usize = 4096;
/// List pages ask the indexer to cut messages to this many bytes (`max_message_bytes`): room
/// for the [`MESSAGE_CUT`] characters a row shows, at up to four bytes each. A Discover page
/// over records of a megabyte fetched a hundred megabytes without it.
pub const LIST_MESSAGE_BYTES: usize = 4 * MESSAGE_CUT;
/// Field values and the raw JSON in an expanded row are cut at these sizes.
pub const VALUE_CUT: usize = 1024;
pub const RAW_CUT: usize = 8192;
/// Short columns (service, host) in a row.
pub const COLUMN_CUT: usize = 200;

/// An instant as a page shows it: always with its UTC offset. `iso` lets the page's script
/// show it in the browser's zone instead when `tz=local`.
#[derive(Clone, Debug)]
pub struct TimeText {
    pub iso: String,
    pub text: String,
    /// Epoch microseconds, for placing marks on a timeline; `None` when unparseable.
    pub micros: Option<i64>,
}

pub fn parse_ts(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// `2026-11-27 10:00:00.123 +00:00`: milliseconds and the offset, as the issue asks.
pub fn format_utc(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} +00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// RFC 3339 in UTC with microseconds, the precision the index keeps.
pub fn format_iso(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

impl TimeText {
    pub fn from_str(s: &str) -> TimeText {
        match parse_ts(s) {
            Some(t) => TimeText::from_time(t),
            None => TimeText {
                iso: String::new(),
                text: cut(s, COLUMN_CUT).0,
                micros: None,
            },
        }
    }

    pub fn from_time(t: OffsetDateTime) -> TimeText {
        TimeText {
            iso: format_iso(t),
            text: format_utc(t),
            micros: Some((t.unix_timestamp_nanos() / 1000) as i64),
        }
    }
}

/// At most `max` characters of `s`, and whether it was cut.
pub fn cut(s: &str, max: usize) -> (String, bool) {
    match s.char_indices().nth(max) {
        Some((i, _)) => (s[..i].to_string(), true),
        None => (s.to_string(), false),
    }
}

/// The CSS class of a severity: one of a fixed set, never text from the log.
pub fn severity_class(sev: &str) -> &'static str {
    match sev {
        "emerg" | "alert" | "crit" => "sev-crit",
        "err" => "sev-err",
        "warning" => "sev-warning",
        "notice" => "sev-notice",
        "info" => "sev-info",
        "debug" => "sev-debug",
        _ => "sev-none",
    }
}

pub fn is_error(sev: &str) -> bool {
    matches!(sev, "emerg" | "alert" | "crit" | "err")
}

/// One field of an expanded record.
#[derive(Clone, Debug)]
pub struct FieldRow {
    pub name: String,
    pub value: String,
    pub cut: bool,
    /// A link the value stands for: the request view of a correlation id, or an http(s)
    /// URL found in the log. Nothing else becomes a link.
    pub link: Option<String>,
    /// The link leaves the UI (an http(s) URL from the log).
    pub external: bool,
}

/// A correlation id of a record and its request view.
#[derive(Clone, Debug)]
pub struct IdLink {
    pub value: String,
    pub href: String,
}

/// A record ready for a template.
#[derive(Clone, Debug)]
pub struct Row {
    pub time: TimeText,
    pub severity: String,
    pub sev_class: &'static str,
    pub error: bool,
    pub service: String,
    pub host: String,
    pub message: Vec<Segment>,
    pub message_cut: bool,
    pub fields: Vec<FieldRow>,
    /// The pretty-printed JSON split at its double quotes, which the template puts back as
    /// literal text: quotes need no escaping between tags, and escaping each of them would
    /// make a page of rows a third larger. Every part is still escaped.
    pub raw: Vec<String>,
    pub raw_cut: bool,
    pub ids: Vec<IdLink>,
    pub context_href: String,
    pub record_href: String,
    /// The request view of this record's request, when it has an id.
    pub trace_href: Option<String>,
    /// Time since the first record of a request view (`+12.4 ms`); empty elsewhere.
    pub offset: String,
    /// The record a context view is centred on.
    pub anchor: bool,
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn str_field(h: &Hit, k: &str) -> String {
    h.get(k).map(text_of).unwrap_or_default()
}

/// Only absolute http and https URLs become links; `javascript:` and the like stay text.
pub fn safe_link(value: &str) -> Option<String> {
    let v = value.trim();
    let lower = v.get(..8).unwrap_or(v).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return None;
    }
    if v.len() > 2048
        || v.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>\"'`".contains(c))
    {
        return None;
    }
    Some(v.to_string())
}

/// Ids longer than this get no link: a link repeats the whole id, and one 1 MB id would
/// make every row megabytes long.
const LINKED_ID_MAX: usize = 1024;

pub fn trace_href(id: &str, tz: Tz) -> String {
    format!("/trace/{}?tz={}", enc(id), tz.as_str())
}

/// A row's link to the request view for an id, unless the id is too long to link.
fn id_href(id: &str, tz: Tz) -> Option<String> {
    (id.len() <= LINKED_ID_MAX).then(|| trace_href(id, tz))
}

/// The replica-independent part of a record's links: the record's id on the replica that
/// gave it, and its time (to find it again on another replica after a failover).
pub fn record_query(h: &Hit, replica: usize, tz: Tz) -> String {
    let mut s = format!("r={replica}&ts={}", enc(&str_field(h, "ts")));
    if let (Some(src), Some(seq)) = (
        h.get("_src").and_then(Value::as_str),
        h.get("_seq").and_then(Value::as_u64),
    ) {
        s.push_str(&format!("&src={}&seq={seq}", enc(src)));
    }
    s.push_str(&format!("&tz={}", tz.as_str()));
    s
}

impl Row {
    pub fn new(h: &Hit, replica: usize, terms: &Terms, tz: Tz) -> Row {
        let id = str_field(h, "_id");
        let severity = str_field(h, "severity");
        let (message, cut_here) = cut(&str_field(h, "message"), MESSAGE_CUT);
        // The indexer may have cut it already, at the page's request.
        let message_cut = cut_here || h.get("_message_cut") == Some(&Value::Bool(true));
        let mut ids = Vec::new();
        for name in ["request_id", "trace_id"] {
            let Some(v) = h.get(name).map(text_of).filter(|v| !v.is_empty()) else {
                continue;
            };
            if let Some(href) = id_href(&v, tz) {
                ids.push(IdLink {
                    href,
                    value: cut(&v, COLUMN_CUT).0,
                });
            }
        }
        let mut fields = Vec::new();
        let mut push = |name: String, v: &Value| {
            let text = text_of(v);
            let (link, external) = match name.as_str() {
                "trace_id" | "request_id" => (id_href(&text, tz), false),
                _ => (safe_link(&text), true),
            };
            let (value, cut) = cut(&text, VALUE_CUT);
            fields.push(FieldRow {
                name: cut_name(&name),
                value,
                cut,
                link,
                external,
            });
        };
        for (k, v) in h {
            match (k.as_str(), v) {
                ("message" | "_message_cut", _) => {}
                ("fields", Value::Object(m)) => {
                    for (fk, fv) in m {
                        push(format!("fields.{fk}"), fv);
                    }
                }
                _ => push(k.clone(), v),
            }
        }
        let pretty = serde_json::to_string_pretty(h).unwrap_or_default();
        let (raw, raw_cut) = cut(&pretty, RAW_CUT);
        let rq = record_query(h, replica, tz);
        let eid = enc(&id);
        Row {
            time: TimeText::from_str(&str_field(h, "ts")),
            sev_class: severity_class(&severity),
            error: is_error(&severity),
            severity: cut(&severity, 16).0,
            service: cut(&str_field(h, "service"), COLUMN_CUT).0,
            host: cut(&str_field(h, "host"), COLUMN_CUT).0,
            message: terms.segments(&message),
            message_cut,
            fields,
            raw: raw.split('"').map(str::to_string).collect(),
            raw_cut,
            trace_href: ids.first().map(|l| l.href.clone()),
            ids,
            context_href: format!("/context/{eid}?{rq}#anchor"),
            record_href: format!("/record/{eid}?{rq}"),
            offset: String::new(),
            anchor: false,
        }
    }
}

fn cut_name(name: &str) -> String {
    let (n, was_cut) = cut(name, COLUMN_CUT);
    if was_cut {
        format!("{n}…")
    } else {
        n
    }
}

/// `+12.4 ms`, `+1.250 s`, `+2 min 3.0 s`: time since the first record of a request.
pub fn offset_text(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "+" };
    let us = micros.unsigned_abs();
    if us < 1_000_000 {
        format!("{sign}{:.1} ms", us as f64 / 1000.0)
    } else if us < 60_000_000 {
        format!("{sign}{:.3} s", us as f64 / 1e6)
    } else {
        format!(
            "{sign}{} min {:.1} s",
            us / 60_000_000,
            (us % 60_000_000) as f64 / 1e6
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_show_milliseconds_and_the_offset() {
        let t = TimeText::from_str("2026-11-27T10:00:00.123456789Z");
        assert_eq!(t.text, "2026-11-27 10:00:00.123 +00:00");
        assert_eq!(t.iso, "2026-11-27T10:00:00.123456Z");
        // Something that is not a time is shown as it is, not dropped.
        assert_eq!(TimeText::from_str("yesterday").text, "yesterday");
    }

    #[test]
    fn only_http_urls_become_links() {
        assert_eq!(
            safe_link("https://example.com/x").as_deref(),
            Some("https://example.com/x")
        );
        assert_eq!(safe_link("javascript:alert(1)"), None);
        assert_eq!(safe_link("JaVaScRiPt:alert(1)"), None);
        assert_eq!(safe_link("data:text/html,<b>"), None);
        assert_eq!(
            safe_link("http://example.com/<script>alert('xss')</script>"),
            None
        );
    }

    #[test]
    fn huge_messages_are_cut_and_offer_the_whole_record() {
        let big = "x".repeat(1 << 20);
        let h =
            json!({"_id": "7", "ts": "2026-11-27T10:00:00Z", "message": big, "request_id": "a/b"});
        let row = Row::new(h.as_object().unwrap(), 1, &Terms::default(), Tz::Utc);
        assert!(row.message_cut);
        assert_eq!(
            row.message.iter().map(|s| s.text.len()).sum::<usize>(),
            MESSAGE_CUT
        );
        assert!(row.raw.concat().len() <= RAW_CUT && row.raw_cut);
        assert_eq!(row.trace_href.as_deref(), Some("/trace/a%2Fb?tz=utc"));
        assert!(
            row.record_href.starts_with("/record/7?r=1&ts="),
            "{}",
            row.record_href
        );
    }

    #[test]
    fn offsets_read_like_a_trace() {
        assert_eq!(offset_text(12_400), "+12.4 ms");
        assert_eq!(offset_text(1_250_000), "+1.250 s");
        assert_eq!(offset_text(0), "+0.0 ms");
    }
}
