//! Ingest normalisation: turning whatever JSON object a sender wrote into the contract's
//! record ([`sawmill_record::Record`]), the form stored, indexed and returned. Lenient on
//! purpose, as Elasticsearch is: numbers for strings, ECS objects (`host: {name: ...}`),
//! level words and syslog numbers for `severity`, epoch numbers for `ts`.

use std::borrow::Cow;

use serde_json::{Map, Value};
use time::OffsetDateTime;

use sawmill_record::fields::EXACT;
use sawmill_record::record::cut_str;
use sawmill_record::time::{format_rfc3339, Stamp};
use sawmill_record::{Key, Severity};

use crate::dedup::DedupKey;
use crate::times::parse_ts_value;

/// A normalized record, ready for the write-ahead log and the index.
#[derive(Clone, Debug)]
pub struct Record {
    /// When it happened (`wire.ts`, always present here).
    pub ts: OffsetDateTime,
    /// The record in the contract's form; `source` is its JSON.
    pub wire: sawmill_record::Record<'static>,
    pub key: Option<DedupKey>,
    /// The record as stored and returned: `wire` as JSON, one object.
    pub source: String,
}

impl Record {
    /// The value of exact field `name` (see [`EXACT`]).
    pub fn exact(&self, name: &str) -> Option<&str> {
        self.wire.exact(name)
    }

    pub fn severity(&self) -> Option<Severity> {
        self.wire.severity
    }

    /// Normalizes one ingested object. `Err` is the reason the line is rejected.
    pub fn from_object(mut obj: Map<String, Value>, now: OffsetDateTime) -> Result<Record, String> {
        let mut wire = sawmill_record::Record {
            // A structured or scalar message is still a message: its JSON text is kept, as
            // Elasticsearch coerces a number into a text field (issue 10, B5).
            message: match obj.remove("message") {
                Some(Value::String(s)) => s.into(),
                Some(Value::Null) | None => return Err("`message` is required".into()),
                Some(other) => other.to_string().into(),
            },
            ..Default::default()
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
        wire.ts = Some(Stamp(ts));
        wire.received = Some(Stamp(received));
        let mut fields = match obj.remove("fields") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => return Err(format!("`fields` must be an object, not {other}")),
        };
        take_exact(&mut obj, &mut wire, &mut fields)?;
        wire.pid = match obj.remove("pid") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
            Some(Value::String(s)) if s.parse::<u64>().is_ok() => s.parse().ok(),
            Some(other) => {
                return Err(format!("`pid` must be a non-negative integer, not {other}"))
            }
        };
        wire.truncated = match obj.remove("truncated") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            // The sender cut the message to its size limit.
            Some(Value::Bool(true)) => true,
            Some(other) => return Err(format!("`truncated` must be a boolean, not {other}")),
        };
        let key = take_key(&mut obj)?;
        // Whatever is left is kept, not dropped: unknown fields go into `fields`.
        fields.extend(obj);
        wire.fields = Cow::Owned(fields);
        match &key {
            Some(DedupKey::Seq { src, seq }) => {
                wire.key = Some(Key {
                    src: src.clone().into(),
                    seq: *seq,
                })
            }
            Some(DedupKey::Id(id)) => wire.doc_key = Some(id.clone().into()),
            None => {}
        }
        let source = serde_json::to_string(&wire).map_err(|e| e.to_string())?;
        Ok(Record {
            ts,
            wire,
            key,
            source,
        })
    }

    /// Rebuilds a record from its stored JSON (write-ahead log replay).
    pub fn from_source(source: &str) -> Result<Record, String> {
        let wire: sawmill_record::Record<'static> =
            serde_json::from_str(source).map_err(|e| format!("stored record is not one: {e}"))?;
        let ts = wire
            .ts
            .ok_or_else(|| "stored record has no `ts`".to_string())?
            .0;
        let key = match (&wire.key, &wire.doc_key) {
            (Some(k), _) => Some(DedupKey::Seq {
                src: k.src.to_string(),
                seq: k.seq,
            }),
            (None, Some(id)) => Some(DedupKey::Id(id.to_string())),
            (None, None) => None,
        };
        // Keep the stored text byte for byte.
        Ok(Record {
            ts,
            wire,
            key,
            source: source.to_string(),
        })
    }
}

/// Moves the exact fields (see [`EXACT`]) from an ingested object into `wire`: strings as
/// they are, numbers as their text, an ECS object (`host: {name: ...}`) by its name with the
/// object itself kept in `fields`, anything else into `fields` whole.
fn take_exact(
    obj: &mut Map<String, Value>,
    wire: &mut sawmill_record::Record<'static>,
    fields: &mut Map<String, Value>,
) -> Result<(), String> {
    for name in EXACT {
        let value = match obj.remove(name) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            // ECS-style objects (`host: {name: ...}`) give their name; the rest is kept.
            Some(Value::Object(o)) => {
                let named = match o.get("name") {
                    Some(Value::String(n)) => Some(n.clone()),
                    _ => None,
                };
                fields.insert(name.to_string(), Value::Object(o));
                match named {
                    Some(n) => n,
                    None => continue,
                }
            }
            Some(other) => {
                fields.insert(name.to_string(), other);
                continue;
            }
        };
        wire.set_exact(name, value.into())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Takes the idempotency key out of an ingested object: `_src` with `_seq`, or `_id`.
fn take_key(obj: &mut Map<String, Value>) -> Result<Option<DedupKey>, String> {
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
    Ok(match (src, seq, obj.remove("_id")) {
        (Some(src), Some(seq), _) => Some(DedupKey::Seq { src, seq }),
        (None, None, Some(Value::String(id))) if !id.is_empty() => Some(DedupKey::Id(id)),
        (Some(_), None, _) => return Err("`_src` needs `_seq` beside it".into()),
        (None, Some(_), _) => return Err("`_seq` needs `_src` beside it".into()),
        _ => None,
    })
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
        assert_eq!(r.wire.fields.get("user_id"), Some(&json!(42)));
        assert_eq!(r.wire.fields.get("a"), Some(&json!("b")));
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

    /// A record stored before the contract crate (keys in alphabetical order, as
    /// `serde_json::Map` wrote them) must replay into the same record.
    #[test]
    fn a_record_stored_by_earlier_versions_replays() {
        let old = r#"{"_key":"doc-1","fields":{"user":{"id":7}},"host":"h","message":"m","pid":12,"received":"1969-07-20T20:17:41.000000000Z","severity":"err","truncated":true,"ts":"1969-07-20T20:17:40.000000000Z"}"#;
        let r = Record::from_source(old).unwrap();
        assert_eq!(r.key, Some(DedupKey::Id("doc-1".into())));
        assert_eq!(r.ts.unix_timestamp(), -14182940);
        assert_eq!(r.wire.severity, Some(sawmill_record::Severity::Err));
        assert_eq!(r.wire.pid, Some(12));
        assert!(r.wire.truncated);
        assert_eq!(r.wire.fields["user"]["id"], 7);
        assert_eq!(r.source, old);
        let keyed = r#"{"_seq":7,"_src":"s","message":"m","received":"2026-01-01T00:00:00.000000000Z","ts":"2026-01-01T00:00:00.000000000Z"}"#;
        assert_eq!(
            Record::from_source(keyed).unwrap().key,
            Some(DedupKey::Seq {
                src: "s".into(),
                seq: 7
            })
        );
    }

    #[test]
    fn source_round_trips_through_replay() {
        let now = OffsetDateTime::now_utc();
        let r = Record::from_object(
            obj(json!({"message":"m","ts":1_700_000_000_123u64,"severity":"ERROR","_src":"s","_seq":7,"pid":"12"})),
            now,
        )
        .unwrap();
        assert_eq!(r.severity(), Some(Severity::Err));
        let back = Record::from_source(&r.source).unwrap();
        assert_eq!(back.ts, r.ts);
        assert_eq!(
            back.key,
            Some(DedupKey::Seq {
                src: "s".into(),
                seq: 7
            })
        );
        assert_eq!(back.wire.pid, Some(12));
        assert_eq!(back.source, r.source);
    }
}
