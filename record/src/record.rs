//! A record on the wire (DESIGN.md "Record format"): what the shipper sends, what the
//! indexer stores, and what a search returns inside each hit.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::severity::{Severity, UnknownSeverity};
use crate::time::Stamp;

/// What makes a record unique to its sender, so a resent batch is stored once: a sender's
/// stable id and its sequence number for the record. Optional: a record without one is
/// stored every time it arrives (a sender that could not make a number durable must send
/// none rather than risk reusing it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key<'a> {
    #[serde(rename = "_src")]
    pub src: Cow<'a, str>,
    #[serde(rename = "_seq")]
    pub seq: u64,
}

/// One record. Strings borrow when written (the shipper serialises straight from its
/// events) and are owned when read (`Record<'static>`).
///
/// On ingest the indexer is more lenient than this type (numbers for strings, ECS objects,
/// level words for `severity`, epoch numbers for `ts`) and normalises to it; what it stores
/// and returns always has this shape.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record<'a> {
    /// When it happened; the indexer uses `received` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<Stamp>,
    /// When the first Sawmill part saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<Stamp>,
    pub message: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// A syslog facility name (`user`, `local0`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Cow<'a, str>>,
    /// `syslog`, `stdout`, `stderr` or `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u64>,
    /// The message was cut to a size limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Everything else, searchable as `fields.KEY`.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub fields: Cow<'a, Map<String, Value>>,
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Key<'a>>,
    /// An explicit document id (Elasticsearch `_id` on the way in), scoped by index.
    #[serde(rename = "_key", default, skip_serializing_if = "Option::is_none")]
    pub doc_key: Option<Cow<'a, str>>,
}

/// Cuts `s` to at most `max` bytes, on a character boundary; whether it cut. How the
/// shipper and the indexer both bound a message (flagging the record `truncated`) and
/// other strings.
pub fn cut_str(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

// serde's `skip_serializing_if` passes the field as declared.
#[allow(clippy::ptr_arg)]
fn is_empty(m: &Cow<'_, Map<String, Value>>) -> bool {
    m.is_empty()
}

impl<'a> Record<'a> {
    /// The value of exact field `name` (see [`crate::fields::EXACT`]).
    pub fn exact(&self, name: &str) -> Option<&str> {
        match name {
            "host" => self.host.as_deref(),
            "service" => self.service.as_deref(),
            "severity" => self.severity.map(Severity::name),
            "facility" => self.facility.as_deref(),
            "container" => self.container.as_deref(),
            "image" => self.image.as_deref(),
            "stream" => self.stream.as_deref(),
            "trace_id" => self.trace_id.as_deref(),
            "request_id" => self.request_id.as_deref(),
            _ => None,
        }
    }

    /// Sets exact field `name` (see [`crate::fields::EXACT`]) to `value`, parsing `severity`
    /// with [`Severity::parse`]; a name that is no exact field is ignored. Lets a reader that
    /// walks the field table (the indexer's ingest) fill a record without naming each field.
    pub fn set_exact(&mut self, name: &str, value: Cow<'a, str>) -> Result<(), UnknownSeverity> {
        let slot = match name {
            "host" => &mut self.host,
            "service" => &mut self.service,
            "severity" => {
                self.severity = Some(Severity::parse(&value)?);
                return Ok(());
            }
            "facility" => &mut self.facility,
            "container" => &mut self.container,
            "image" => &mut self.image,
            "stream" => &mut self.stream,
            "trace_id" => &mut self.trace_id,
            "request_id" => &mut self.request_id,
            _ => return Ok(()),
        };
        *slot = Some(value);
        Ok(())
    }

    /// Appends the record as one NDJSON line to `out`.
    pub fn write_ndjson(&self, out: &mut Vec<u8>) {
        // Serialising strings, numbers and a JSON map into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, self);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{FieldKind, EXACT, FIELDS};
    use time::macros::datetime;

    fn full() -> Record<'static> {
        let mut fields = Map::new();
        fields.insert("user".into(), Value::from(42));
        Record {
            ts: Some(Stamp(datetime!(2026-11-30 07:00:00 UTC))),
            received: Some(Stamp(datetime!(2026-11-30 07:00:01 UTC))),
            message: "hello".into(),
            host: Some("h".into()),
            service: Some("s".into()),
            severity: Some(Severity::Err),
            facility: Some("user".into()),
            container: Some("c".into()),
            image: Some("i".into()),
            stream: Some("stdout".into()),
            trace_id: Some("t".into()),
            request_id: Some("r".into()),
            pid: Some(7),
            truncated: true,
            fields: Cow::Owned(fields),
            key: Some(Key {
                src: "src".into(),
                seq: 9,
            }),
            doc_key: None,
        }
    }

    #[test]
    fn the_type_writes_every_field_of_the_table_and_no_other() {
        let v = serde_json::to_value(full()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
        let mut got = keys.clone();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want);
        let r = full();
        for name in EXACT {
            assert!(r.exact(name).is_some(), "{name}");
        }
        assert!(FIELDS
            .iter()
            .any(|f| f.kind == FieldKind::Exact && f.name == "severity"));
    }

    #[test]
    fn every_exact_field_can_be_set_by_name() {
        let mut r = Record::default();
        for name in EXACT {
            let value = if name == "severity" { "ERROR" } else { name };
            r.set_exact(name, value.into()).unwrap();
        }
        for name in EXACT {
            let want = if name == "severity" { "err" } else { name };
            assert_eq!(r.exact(name), Some(want), "{name}");
        }
        let e = r.set_exact("severity", "loud".into()).unwrap_err();
        assert_eq!(e.0, "loud");
        r.set_exact("nope", "x".into()).unwrap();
    }

    #[test]
    fn the_key_is_optional_both_ways() {
        let mut r = full();
        r.key = None;
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains("_src") && !line.contains("_seq"), "{line}");
        let back: Record<'static> = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
        let keyed: Record<'static> =
            serde_json::from_value(serde_json::to_value(full()).unwrap()).unwrap();
        assert_eq!(keyed, full());
    }

    #[test]
    fn a_minimal_record_is_just_a_message() {
        let r: Record<'static> = serde_json::from_str(r#"{"message":"m"}"#).unwrap();
        assert_eq!(r.message, "m");
        assert_eq!(r.key, None);
        let mut out = Vec::new();
        r.write_ndjson(&mut out);
        assert_eq!(out, b"{\"message\":\"m\"}\n");
    }
}
