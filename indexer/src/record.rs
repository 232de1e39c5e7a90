//! The record format of DESIGN.md: turning an ingested JSON object into a normalized record.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::times::{format_rfc3339, parse_ts_value};

/// Fields that are indexed on their own as exact strings.
pub const STRING_FIELDS: [&str; 9] = [
    "host",
    "service",
    "severity",
    "facility",
    "container",
    "image",
    "stream",
    "trace_id",
    "request_id",
];

/// Severity names, most severe first, as syslog numbers them.
pub const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// What makes a record unique to its sender, so a resent batch is stored once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DedupKey {
    /// A shipper's stable id and per-sender sequence number.
    Seq { src: String, seq: u64 },
    /// An explicit document id (Elasticsearch `_id`), scoped by index.
    Id(String),
}

/// A normalized record, ready for the write-ahead log and the index.
#[derive(Clone, Debug)]
pub struct Record {
    pub ts: OffsetDateTime,
    pub message: String,
    /// `host`, `service`, … in the order of [`STRING_FIELDS`].
    pub strings: [Option<String>; STRING_FIELDS.len()],
    pub pid: Option<u64>,
    pub fields: Map<String, Value>,
    pub key: Option<DedupKey>,
    /// The record as stored and returned: normalized JSON, one object.
    pub source: String,
}

impl Record {
    pub fn string(&self, name: &str) -> Option<&str> {
        let i = STRING_FIELDS.iter().position(|f| *f == name)?;
        self.strings[i].as_deref()
    }

    /// Normalizes one ingested object. `Err` is the reason the line is rejected.
    pub fn from_object(mut obj: Map<String, Value>, now: OffsetDateTime) -> Result<Record, String> {
        let message = match obj.remove("message") {
            Some(Value::String(s)) => s,
            Some(Value::Null) | None => return Err("`message` is required".into()),
            // A structured message is still a message: keep its JSON text.
            Some(other) => other.to_string(),
        };
        let ts = match obj.remove("ts") {
            None | Some(Value::Null) => now,
            Some(v) => parse_ts_value(&v)?,
        };
        // The index keeps nanoseconds in an i64: years 1678 to 2261.
        if i64::try_from(ts.unix_timestamp_nanos()).is_err() {
            return Err(format!(
                "`ts` {} is outside the years 1678 to 2261 that can be indexed",
                format_rfc3339(ts)
            ));
        }
        let received = match obj.remove("received") {
            None | Some(Value::Null) => now,
            Some(v) => parse_ts_value(&v).map_err(|e| e.replace("`ts`", "`received`"))?,
        };
        let mut fields = match obj.remove("fields") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => return Err(format!("`fields` must be an object, not {other}")),
        };
        let mut strings: [Option<String>; STRING_FIELDS.len()] = Default::default();
        for (i, name) in STRING_FIELDS.iter().enumerate() {
            match obj.remove(*name) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => strings[i] = Some(s),
                Some(Value::Number(n)) => strings[i] = Some(n.to_string()),
                // ECS-style objects (`host: {name: ...}`) give their name; the rest is kept.
                Some(Value::Object(o)) => {
                    if let Some(Value::String(n)) = o.get("name") {
                        strings[i] = Some(n.clone());
                    }
                    fields.insert((*name).to_string(), Value::Object(o));
                }
                Some(other) => {
                    fields.insert((*name).to_string(), other);
                }
            }
        }
        let sev = &mut strings[2];
        if let Some(s) = sev.take() {
            *sev = Some(normalize_severity(&s)?.to_string());
        }
        let pid = match obj.remove("pid") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
            Some(Value::String(s)) if s.parse::<u64>().is_ok() => s.parse().ok(),
            Some(other) => {
                return Err(format!("`pid` must be a non-negative integer, not {other}"))
            }
        };
        let src = match obj.remove("_src") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            Some(other) => return Err(format!("`_src` must be a non-empty string, not {other}")),
        };
        let seq = match obj.remove("_seq") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
            Some(other) => {
                return Err(format!(
                    "`_seq` must be a non-negative integer, not {other}"
                ))
            }
        };
        let truncated = match obj.remove("truncated") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => true,
            Some(other) => return Err(format!("`truncated` must be a boolean, not {other}")),
        };
        let key = match (src, seq, obj.remove("_id")) {
            (Some(src), Some(seq), _) => Some(DedupKey::Seq { src, seq }),
            (None, None, Some(Value::String(id))) if !id.is_empty() => Some(DedupKey::Id(id)),
            (Some(_), None, _) => return Err("`_src` needs `_seq` beside it".into()),
            (None, Some(_), _) => return Err("`_seq` needs `_src` beside it".into()),
            _ => None,
        };
        // Whatever is left is kept, not dropped: unknown fields go into `fields`.
        for (k, v) in obj {
            fields.insert(k, v);
        }
        let mut out = Map::new();
        out.insert("ts".into(), Value::String(format_rfc3339(ts)));
        out.insert("received".into(), Value::String(format_rfc3339(received)));
        out.insert("message".into(), Value::String(message.clone()));
        for (i, name) in STRING_FIELDS.iter().enumerate() {
            if let Some(s) = &strings[i] {
                out.insert((*name).to_string(), Value::String(s.clone()));
            }
        }
        if let Some(pid) = pid {
            out.insert("pid".into(), Value::from(pid));
        }
        if truncated {
            // The sender cut the message to its size limit.
            out.insert("truncated".into(), Value::Bool(true));
        }
        if !fields.is_empty() {
            out.insert("fields".into(), Value::Object(fields.clone()));
        }
        match &key {
            Some(DedupKey::Seq { src, seq }) => {
                out.insert("_src".into(), Value::String(src.clone()));
                out.insert("_seq".into(), Value::from(*seq));
            }
            Some(DedupKey::Id(id)) => {
                out.insert("_key".into(), Value::String(id.clone()));
            }
            None => {}
        }
        let source = Value::Object(out).to_string();
        Ok(Record {
            ts,
            message,
            strings,
            pid,
            fields,
            key,
            source,
        })
    }

    /// Rebuilds a record from its stored JSON (write-ahead log replay).
    pub fn from_source(source: &str) -> Result<Record, String> {
        let mut obj: Map<String, Value> =
            serde_json::from_str(source).map_err(|e| format!("stored record is not JSON: {e}"))?;
        // `_key` is how an explicit id is stored; on the way in it is `_id`.
        if let Some(k) = obj.remove("_key") {
            obj.insert("_id".into(), k);
        }
        let mut r = Record::from_object(obj, OffsetDateTime::now_utc())?;
        // Keep the stored text byte for byte.
        r.source = source.to_string();
        Ok(r)
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary; whether it cut.
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

/// Cuts an ingested object's `message` to at most `max` bytes and flags the record
/// `truncated`, as the shipper does with long lines; whether it cut. A structured message is
/// stored as its JSON text (see [`Record::from_object`]), so that text is what is cut.
pub fn cut_message(obj: &mut Map<String, Value>, max: usize) -> bool {
    let cut = match obj.get_mut("message") {
        Some(Value::String(s)) => cut_str(s, max),
        Some(v @ (Value::Object(_) | Value::Array(_))) => {
            let mut text = v.to_string();
            let cut = cut_str(&mut text, max);
            if cut {
                *v = Value::String(text);
            }
            cut
        }
        _ => false,
    };
    if cut {
        obj.insert("truncated".into(), Value::Bool(true));
    }
    cut
}

/// Maps the usual spellings (`ERROR`, `warn`, `fatal`, `3`) to the syslog names.
pub fn normalize_severity(s: &str) -> Result<&'static str, String> {
    let lower = s.trim().to_ascii_lowercase();
    let name = match lower.as_str() {
        "emerg" | "emergency" | "panic" | "0" => "emerg",
        "alert" | "1" => "alert",
        "crit" | "critical" | "fatal" | "2" => "crit",
        "err" | "error" | "3" => "err",
        "warning" | "warn" | "4" => "warning",
        "notice" | "5" => "notice",
        "info" | "informational" | "information" | "6" => "info",
        "debug" | "trace" | "7" => "debug",
        _ => {
            return Err(format!(
                "`severity` `{s}` is not one of {}",
                SEVERITIES.join(", ")
            ))
        }
    };
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn unknown_fields_are_kept_in_fields() {
        let now = OffsetDateTime::now_utc();
        let r = Record::from_object(
            obj(json!({"message":"hi","user_id":42,"fields":{"a":"b"}})),
            now,
        )
        .unwrap();
        assert_eq!(r.fields.get("user_id"), Some(&json!(42)));
        assert_eq!(r.fields.get("a"), Some(&json!("b")));
        let stored: Value = serde_json::from_str(&r.source).unwrap();
        assert_eq!(stored["fields"]["user_id"], json!(42));
    }

    #[test]
    fn missing_message_and_bad_ts_are_rejected_with_reasons() {
        let now = OffsetDateTime::now_utc();
        let e = Record::from_object(obj(json!({"msg":"x"})), now).unwrap_err();
        assert!(e.contains("`message` is required"), "{e}");
        let e = Record::from_object(obj(json!({"message":"x","ts":"yesterday"})), now).unwrap_err();
        assert!(e.contains("yesterday"), "{e}");
    }

    #[test]
    fn messages_are_cut_on_a_character_boundary_and_flagged() {
        let mut o = obj(json!({"message": "aéé", "truncated": false}));
        assert!(cut_message(&mut o, 4));
        assert_eq!(o["message"], "aé");
        assert_eq!(o["truncated"], true);
        let mut o = obj(json!({"message": "abcd"}));
        assert!(!cut_message(&mut o, 4));
        assert_eq!(o.get("truncated"), None);
        let mut o = obj(json!({"message": {"k": "vvvv"}}));
        assert!(cut_message(&mut o, 6));
        assert_eq!(o["message"], "{\"k\":\"");
        let mut o = obj(json!({"message": 12345}));
        assert!(!cut_message(&mut o, 2));
    }

    #[test]
    fn source_round_trips_through_replay() {
        let now = OffsetDateTime::now_utc();
        let r = Record::from_object(
            obj(json!({"message":"m","ts":1_700_000_000_123u64,"severity":"ERROR","_src":"s","_seq":7,"pid":"12"})),
            now,
        )
        .unwrap();
        assert_eq!(r.string("severity"), Some("err"));
        let back = Record::from_source(&r.source).unwrap();
        assert_eq!(back.ts, r.ts);
        assert_eq!(
            back.key,
            Some(DedupKey::Seq {
                src: "s".into(),
                seq: 7
            })
        );
        assert_eq!(back.pid, Some(12));
        assert_eq!(back.source, r.source);
    }
}
