//! The Elasticsearch bulk format, so Vector, Fluent Bit, Filebeat and Logstash ship unchanged.

use sawmill_record::Severity;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::body::parse_object;
use crate::record::{cut_message, Record};
use crate::store::Outcome;

/// One action of a bulk body: either a record to store or an error already decided.
pub struct Item {
    action: String,
    index: String,
    id: Option<String>,
    result: ItemResult,
}

impl Item {
    /// Whether the item failed before reaching the store.
    pub fn failed(&self) -> bool {
        matches!(self.result, ItemResult::Failed { .. })
    }
}

enum ItemResult {
    /// Index into the records handed to the store.
    Pending(usize),
    Failed {
        status: u16,
        kind: &'static str,
        reason: String,
    },
}

/// Parses action/source line pairs, cutting messages to `max_message_bytes`. Records come
/// back in item order, each with whether its message was cut.
pub fn parse(
    body: &[u8],
    default_index: &str,
    now: OffsetDateTime,
    max_message_bytes: usize,
) -> (Vec<Record>, Vec<Item>, Vec<bool>) {
    let mut cut = Vec::new();
    let mut lines = body
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    let mut records = Vec::new();
    let mut items = Vec::new();
    while let Some(action_line) = lines.next() {
        let (name, index, id) = match action(action_line, default_index) {
            Action::Store { name, index, id } => (name, index, id),
            Action::Failed { item, has_source } => {
                if has_source {
                    // Skip the document line so the next action lines up.
                    lines.next();
                }
                items.push(item);
                continue;
            }
        };
        let Some(source_line) = lines.next() else {
            items.push(failed(
                &name,
                &index,
                id,
                400,
                "action_request_validation_exception",
                "action without a document line".into(),
            ));
            break;
        };
        let mut was_cut = false;
        let rec = parse_object(source_line).and_then(|doc| {
            let mut obj = map_source(doc, &index, id.as_deref());
            was_cut = cut_message(&mut obj, max_message_bytes);
            Record::from_object(obj, now)
        });
        match rec {
            Ok(r) => {
                cut.push(was_cut);
                items.push(Item {
                    action: name,
                    index,
                    id,
                    result: ItemResult::Pending(records.len()),
                });
                records.push(r);
            }
            Err(e) => items.push(failed(
                &name,
                &index,
                id,
                400,
                "document_parsing_exception",
                e,
            )),
        }
    }
    (records, items, cut)
}

/// What an action line asks for.
enum Action {
    /// Store the document on the next line.
    Store {
        name: String,
        index: String,
        id: Option<String>,
    },
    /// The failed item to answer for it, and whether a document line follows that must be
    /// skipped.
    Failed { item: Item, has_source: bool },
}

/// Reads an action line.
fn action(line: &[u8], default_index: &str) -> Action {
    let invalid = "action_request_validation_exception";
    let action = match parse_object(line) {
        Ok(a) => a,
        Err(e) => {
            let reason = format!("malformed action line: {e}");
            let item = failed("index", default_index, None, 400, invalid, reason);
            return Action::Failed {
                item,
                has_source: false,
            };
        }
    };
    let Some((name, meta)) = action.into_iter().next() else {
        let reason = "empty action line".into();
        let item = failed("index", default_index, None, 400, invalid, reason);
        return Action::Failed {
            item,
            has_source: false,
        };
    };
    let meta = meta.as_object().cloned().unwrap_or_default();
    let index = meta
        .get("_index")
        .and_then(Value::as_str)
        .unwrap_or(default_index)
        .to_string();
    let id = meta.get("_id").and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    let illegal = "illegal_argument_exception";
    let (reason, has_source) = match name.as_str() {
        "index" | "create" => return Action::Store { name, index, id },
        "delete" => (
            "sawmill keeps logs immutable: `delete` is not supported".to_string(),
            false,
        ),
        // `update` carries a source line.
        _ => (
            format!("action `{name}` is not supported: use `index` or `create`"),
            true,
        ),
    };
    Action::Failed {
        item: failed(&name, &index, id, 400, illegal, reason),
        has_source,
    }
}

fn failed(
    action: &str,
    index: &str,
    id: Option<String>,
    status: u16,
    kind: &'static str,
    reason: String,
) -> Item {
    Item {
        action: action.to_string(),
        index: index.to_string(),
        id,
        result: ItemResult::Failed {
            status,
            kind,
            reason,
        },
    }
}

/// Renames the usual shipper field names to Sawmill's.
fn map_source(mut doc: Map<String, Value>, index: &str, id: Option<&str>) -> Map<String, Value> {
    if !doc.contains_key("ts") {
        for k in ["@timestamp", "timestamp"] {
            if let Some(v) = doc.remove(k) {
                doc.insert("ts".into(), v);
                break;
            }
        }
    }
    if !matches!(doc.get("message"), Some(Value::String(_))) {
        for k in ["log", "msg"] {
            if matches!(doc.get(k), Some(Value::String(_))) {
                let v = doc.remove(k).unwrap();
                if let Some(old) = doc.remove("message") {
                    doc.insert("fields_message".into(), old);
                }
                doc.insert("message".into(), v);
                break;
            }
        }
    }
    if !doc.contains_key("severity") {
        let level = doc
            .get("level")
            .or_else(|| doc.get("log").and_then(|l| l.get("level")))
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(level) = level {
            if Severity::parse(&level).is_ok() {
                doc.insert("severity".into(), Value::String(level));
            }
        }
    }
    doc.remove("_id");
    if let Some(id) = id {
        doc.insert("_id".into(), Value::String(format!("{index}/{id}")));
    }
    doc
}

/// The response in Elasticsearch's shape: per-item results and the top-level `errors` flag.
pub fn response(items: &[Item], outcomes: &[Outcome], took_ms: u64) -> Value {
    let mut errors = false;
    let out: Vec<Value> = items
        .iter()
        .map(|it| {
            let body = match &it.result {
                ItemResult::Pending(i) => match outcomes[*i] {
                    Outcome::Stored(rid) => json!({"_index": it.index, "_id": it.id.clone().unwrap_or_else(|| rid.to_string()), "status": 201, "result": "created", "_version": 1}),
                    Outcome::Duplicate if it.action == "create" => {
                        errors = true;
                        json!({"_index": it.index, "_id": it.id, "status": 409, "error": {"type": "version_conflict_engine_exception", "reason": format!("[{}]: document already exists", it.id.as_deref().unwrap_or(""))}})
                    }
                    Outcome::Duplicate => json!({"_index": it.index, "_id": it.id, "status": 200, "result": "noop", "_version": 1}),
                },
                ItemResult::Failed { status, kind, reason } => {
                    errors = true;
                    json!({"_index": it.index, "_id": it.id, "status": status, "error": {"type": kind, "reason": reason}})
                }
            };
            json!({ it.action.clone(): body })
        })
        .collect();
    json!({"took": took_ms, "errors": errors, "items": out})
}
