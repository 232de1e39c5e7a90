//! How one record is shown: a row's columns, its fields and raw JSON, cut to sizes a page
//! can carry, and the links it offers (context, request view, the whole record). Records
//! come typed from the contract ([`Hit`]); one that could not be read becomes a placeholder
//! row.

use std::borrow::Cow;

use sawmill_record::api::Hit;
use sawmill_record::time::format_rfc3339;
use sawmill_record::{Field, FieldKind, Record, Severity};
use serde_json::Value;
use time::OffsetDateTime;

use crate::client::{ReadHit, Unreadable};
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
#[derive(Clone, Debug, Default)]
pub struct TimeText {
    pub iso: String,
    pub text: String,
    /// Epoch microseconds, for placing marks on a timeline; `None` when unparseable.
    pub micros: Option<i64>,
}

/// `2026-11-27 10:00:00.123 +00:00`: milliseconds and the offset, as the issue asks. Cut
/// from the record form (`sawmill_record::time`), so a time outside RFC 3339 is clamped
/// there rather than panicking here.
pub fn format_utc(t: OffsetDateTime) -> String {
    let s = format_rfc3339(t);
    // `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`: date, time, milliseconds.
    format!("{} {}.{} +00:00", &s[..10], &s[11..19], &s[20..23])
}

/// RFC 3339 in UTC with microseconds, the precision the index keeps: for the page's script
/// (`<time datetime>`) and for zoom links, where nanoseconds would only be noise.
pub fn format_iso(t: OffsetDateTime) -> String {
    let s = format_rfc3339(t);
    format!("{}Z", &s[..26])
}

impl TimeText {
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
pub fn severity_class(sev: Option<Severity>) -> &'static str {
    match sev {
        Some(Severity::Emerg | Severity::Alert | Severity::Crit) => "sev-crit",
        Some(Severity::Err) => "sev-err",
        Some(Severity::Warning) => "sev-warning",
        Some(Severity::Notice) => "sev-notice",
        Some(Severity::Info) => "sev-info",
        Some(Severity::Debug) => "sev-debug",
        None => "sev-none",
    }
}

/// Field `f` of `r` as text, as a CSV cell shows it: strings as they are, numbers and flags
/// as JSON writes them, the `fields` object as JSON; `None` when the record has none.
pub fn field_text<'a>(r: &'a Record<'_>, f: &Field) -> Option<Cow<'a, str>> {
    let owned = |s: String| Some(Cow::Owned(s));
    match (f.kind, f.name) {
        (FieldKind::Time, "ts") => owned(format_rfc3339(r.ts?.0)),
        (FieldKind::Time, "received") => owned(format_rfc3339(r.received?.0)),
        (FieldKind::Text, "message") => Some(Cow::Borrowed(&r.message)),
        (FieldKind::Exact, name) => r.exact(name).map(Cow::Borrowed),
        (FieldKind::Number, "pid") => owned(r.pid?.to_string()),
        (FieldKind::Flag, "truncated") => r.truncated.then_some(Cow::Borrowed("true")),
        (FieldKind::Object, "fields") if !r.fields.is_empty() => {
            owned(serde_json::to_string(&*r.fields).unwrap_or_default())
        }
        (FieldKind::Key, "_src") => r.key.as_ref().map(|k| Cow::Borrowed(&*k.src)),
        (FieldKind::Key, "_seq") => owned(r.key.as_ref()?.seq.to_string()),
        _ => None,
    }
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
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub time: TimeText,
    pub severity: &'static str,
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
    /// A placeholder for a hit that could not be read: no links, its JSON as given.
    pub unreadable: bool,
}

/// A JSON value as a field shows it: strings without their quotes.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A hit as JSON, keys in order: what the raw view and the export show, and whose
/// top-level keys (`fields` spread out as `fields.KEY`) are the rows of the fields table.
/// The same text the indexer stored, since a hit writes back what it read.
pub fn json_of(h: &Hit) -> serde_json::Map<String, Value> {
    match serde_json::to_value(h) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// The fields table of a record: `(name, value)` for every key of [`json_of`] but the
/// message, with `fields` spread out.
pub fn field_list(json: &serde_json::Map<String, Value>) -> Vec<(String, &Value)> {
    let mut out = Vec::with_capacity(json.len());
    for (k, v) in json {
        match (k.as_str(), v) {
            ("message" | "_message_cut", _) => {}
            ("fields", Value::Object(m)) => {
                out.extend(m.iter().map(|(fk, fv)| (format!("fields.{fk}"), fv)));
            }
            _ => out.push((k.clone(), v)),
        }
    }
    out
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
    let ts = h.record.ts.map(|t| format_rfc3339(t.0)).unwrap_or_default();
    let mut s = format!("r={replica}&ts={}", enc(&ts));
    if let Some(k) = &h.record.key {
        s.push_str(&format!("&src={}&seq={}", enc(&k.src), k.seq));
    }
    s.push_str(&format!("&tz={}", tz.as_str()));
    s
}

/// Rows for `hits` from `replica`, placeholders for those that could not be read.
pub fn rows<'a>(
    hits: impl IntoIterator<Item = &'a ReadHit>,
    replica: usize,
    terms: &Terms,
    tz: Tz,
) -> Vec<Row> {
    hits.into_iter()
        .map(|h| Row::of(h, replica, terms, tz))
        .collect()
}

impl Row {
    /// A row for a hit as read: the record, or a placeholder saying why it is none.
    pub fn of(h: &ReadHit, replica: usize, terms: &Terms, tz: Tz) -> Row {
        match h {
            ReadHit::Hit(h) => Row::new(h, replica, terms, tz),
            ReadHit::Unreadable(u) => Row::unreadable(u),
        }
    }

    pub fn new(h: &Hit, replica: usize, terms: &Terms, tz: Tz) -> Row {
        let r = &h.record;
        let (message, cut_here) = cut(&r.message, MESSAGE_CUT);
        let mut ids = Vec::new();
        for v in [&r.request_id, &r.trace_id].into_iter().flatten() {
            if let Some(href) = id_href(v, tz).filter(|_| !v.is_empty()) {
                ids.push(IdLink {
                    href,
                    value: cut(v, COLUMN_CUT).0,
                });
            }
        }
        let json = json_of(h);
        let fields = field_list(&json)
            .into_iter()
            .map(|(name, v)| {
                let text = text_of(v);
                let (link, external) = match name.as_str() {
                    "trace_id" | "request_id" => (id_href(&text, tz), false),
                    _ => (safe_link(&text), true),
                };
                let (value, cut) = cut(&text, VALUE_CUT);
                FieldRow {
                    name: cut_name(&name),
                    value,
                    cut,
                    link,
                    external,
                }
            })
            .collect();
        let pretty = serde_json::to_string_pretty(&json).unwrap_or_default();
        let (raw, raw_cut) = cut(&pretty, RAW_CUT);
        let rq = record_query(h, replica, tz);
        let eid = enc(&h.id);
        Row {
            time: r.ts.map(|t| TimeText::from_time(t.0)).unwrap_or_default(),
            sev_class: severity_class(r.severity),
            error: r.severity.is_some_and(Severity::is_error),
            severity: r.severity.map_or("", Severity::name),
            service: cut(r.service.as_deref().unwrap_or(""), COLUMN_CUT).0,
            host: cut(r.host.as_deref().unwrap_or(""), COLUMN_CUT).0,
            message: terms.segments(&message),
            // The indexer may have cut it already, at the page's request.
            message_cut: cut_here || h.message_cut,
            fields,
            raw: raw.split('"').map(str::to_string).collect(),
            raw_cut,
            trace_href: ids.first().map(|l| l.href.clone()),
            ids,
            context_href: format!("/context/{eid}?{rq}#anchor"),
            record_href: format!("/record/{eid}?{rq}"),
            ..Row::default()
        }
    }

    /// The placeholder of a hit that is not a record of the contract: why, and its JSON.
    pub fn unreadable(u: &Unreadable) -> Row {
        let (raw, raw_cut) = cut(u.raw.get(), RAW_CUT);
        Row {
            sev_class: severity_class(None),
            message: vec![Segment {
                text: format!("record could not be read: {}", cut(&u.error, VALUE_CUT).0),
                hit: false,
            }],
            raw: raw.split('"').map(str::to_string).collect(),
            raw_cut,
            unreadable: true,
            ..Row::default()
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

    fn hit(v: Value) -> Hit {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn times_show_milliseconds_and_the_offset() {
        let t = TimeText::from_time(
            sawmill_record::time::parse_rfc3339("2026-11-27T10:00:00.123456789Z").unwrap(),
        );
        assert_eq!(t.text, "2026-11-27 10:00:00.123 +00:00");
        assert_eq!(t.iso, "2026-11-27T10:00:00.123456Z");
        // Something that is not a time is shown as it is, not dropped: the record is a
        // placeholder row with its JSON (see below).
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
        let row = Row::new(&hit(h), 1, &Terms::default(), Tz::Utc);
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

    /// A hit as the indexer writes it: its stored record (keys sorted, as serde_json's map
    /// writes them) with `_id` added.
    const STORED: &str = r#"{"_id":"12","_seq":7,"_src":"s","container":"c","facility":"user","fields":{"a":[1,2],"user":"u"},"host":"h","image":"i","message":"hello","pid":9,"received":"2026-11-27T10:00:01.000000000Z","request_id":"r","service":"api","severity":"err","stream":"stdout","trace_id":"t","truncated":true,"ts":"2026-11-27T10:00:00.123456789Z"}"#;

    #[test]
    fn a_hit_shows_and_exports_as_the_indexer_gave_it() {
        let h: Hit = serde_json::from_str(STORED).unwrap();
        assert_eq!(serde_json::to_string(&json_of(&h)).unwrap(), STORED);
        let names: Vec<String> = field_list(&json_of(&h))
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names[..4], ["_id", "_seq", "_src", "container"]);
        assert!(names.contains(&"fields.user".to_string()));
        assert!(!names.contains(&"message".to_string()));
        let row = Row::new(&h, 0, &Terms::default(), Tz::Utc);
        assert_eq!(
            (row.severity, row.sev_class, row.error),
            ("err", "sev-err", true)
        );
        assert_eq!(row.time.text, "2026-11-27 10:00:00.123 +00:00");
    }

    #[test]
    fn every_field_of_the_table_has_a_text() {
        let h: Hit = serde_json::from_str(STORED).unwrap();
        for f in &sawmill_record::FIELDS {
            let t = field_text(&h.record, f);
            assert!(t.is_some(), "`{}` has no text", f.name);
        }
        let f = |name| sawmill_record::fields::field(name).unwrap();
        assert_eq!(
            field_text(&h.record, f("ts")).unwrap(),
            "2026-11-27T10:00:00.123456789Z"
        );
        assert_eq!(
            field_text(&h.record, f("fields")).unwrap(),
            r#"{"a":[1,2],"user":"u"}"#
        );
        assert_eq!(field_text(&h.record, f("_seq")).unwrap(), "7");
    }

    #[test]
    fn a_hit_that_is_not_a_record_becomes_a_placeholder_row() {
        for odd in [
            r#"{"_id":"1","message":5}"#,
            r#"{"_id":"2","message":"m","severity":"loud"}"#,
            r#"{"_id":"3","message":"m","ts":"yesterday"}"#,
        ] {
            let h: ReadHit = serde_json::from_str(odd).unwrap();
            let ReadHit::Unreadable(u) = &h else {
                panic!("{odd} read as a record")
            };
            let row = Row::of(&h, 0, &Terms::default(), Tz::Utc);
            assert!(row.unreadable && row.context_href.is_empty());
            assert!(
                row.message[0]
                    .text
                    .starts_with("record could not be read: "),
                "{:?}",
                row.message
            );
            assert_eq!(row.raw.join("\""), u.raw.get());
        }
        // Level words as loggers spell them are still severities.
        let h: ReadHit =
            serde_json::from_str(r#"{"_id":"4","message":"m","severity":"ERROR"}"#).unwrap();
        assert_eq!(h.hit().unwrap().record.severity, Some(Severity::Err));
    }

    #[test]
    fn offsets_read_like_a_trace() {
        assert_eq!(offset_text(12_400), "+12.4 ms");
        assert_eq!(offset_text(1_250_000), "+1.250 s");
        assert_eq!(offset_text(0), "+0.0 ms");
    }
}
