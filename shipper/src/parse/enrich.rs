//! Correlation ids and structured fields found in a message: JSON objects, `key=value`
//! pairs and W3C `traceparent` values.

use sawmill_record::Severity;
use serde_json::Value;

use crate::event::Event;

/// Field names that carry a request's id, as services commonly spell them.
const REQUEST_KEYS: [&str; 6] = [
    "request_id",
    "requestId",
    "x_request_id",
    "x-request-id",
    "correlation_id",
    "correlationId",
];
const TRACE_KEYS: [&str; 2] = ["trace_id", "traceId"];

/// Adds what the message says about itself: fields, correlation ids, a severity it states.
pub fn enrich(ev: &mut Event) {
    let text = ev.message.trim();
    if text.starts_with('{') && text.ends_with('}') {
        if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) {
            for (k, v) in obj {
                absorb(ev, &k, &v);
                ev.fields.entry(k).or_insert(v);
            }
            return;
        }
    }
    for (k, v) in key_values(&ev.message) {
        let value = typed(&v);
        absorb(ev, &k, &value);
        ev.fields.entry(k).or_insert(value);
    }
    if ev.trace_id.is_none() {
        if let Some(t) = find_traceparent(&ev.message) {
            ev.trace_id = Some(t);
        }
    }
}

/// Takes correlation ids (and a stated level) from one field.
pub fn absorb(ev: &mut Event, key: &str, v: &Value) {
    // Most fields are none of these: decide by the key before touching the value.
    let is_trace = TRACE_KEYS.contains(&key);
    let is_request = REQUEST_KEYS.contains(&key);
    let is_level = matches!(key, "level" | "severity" | "lvl");
    if !(key == "traceparent" || is_trace || is_request || is_level) {
        return;
    }
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return,
    };
    if s.is_empty() {
        return;
    }
    if key == "traceparent" {
        if let Some(t) = parse_traceparent(&s) {
            ev.trace_id.get_or_insert(t);
        }
    } else if is_trace {
        ev.trace_id.get_or_insert(s);
    } else if is_request {
        ev.request_id.get_or_insert(s);
    } else if let Some(sev) = Severity::from_word(&s) {
        ev.severity = Some(sev);
    }
}

/// `key=value` and `key="quoted value"` pairs, in order.
pub fn key_values(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // A key starts a word.
        if i > 0 && !b[i - 1].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'.' | b'-')) {
            i += 1;
        }
        if i == start
            || i >= b.len()
            || b[i] != b'='
            || !b[start].is_ascii_alphabetic() && b[start] != b'_'
        {
            i = i.max(start + 1);
            continue;
        }
        let key = &text[start..i];
        i += 1;
        let value = if i < b.len() && b[i] == b'"' {
            let vstart = i + 1;
            let mut j = vstart;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let v = text[vstart..j.min(b.len())].replace("\\\"", "\"");
            i = j + 1;
            v
        } else {
            let vstart = i;
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            // A trailing comma or semicolon belongs to the sentence, not the value.
            text[vstart..i].trim_end_matches([',', ';']).to_string()
        };
        if !value.is_empty() {
            out.push((key.to_string(), value));
        }
    }
    out
}

/// Numbers stay numbers, so `fields.status:500` and range queries work.
fn typed(v: &str) -> Value {
    if let Ok(n) = v.parse::<i64>() {
        if !(v.starts_with('0') && v.len() > 1) {
            return Value::from(n);
        }
    }
    if let Ok(f) = v.parse::<f64>() {
        if f.is_finite() && v.contains('.') && !v.starts_with('.') {
            return Value::from(f);
        }
    }
    Value::String(v.to_string())
}

/// The trace id (32 hex digits) of a W3C `traceparent`: `00-<trace>-<span>-<flags>`.
pub fn parse_traceparent(s: &str) -> Option<String> {
    let mut parts = s.trim().split('-');
    let (version, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next()?;
    if version.len() != 2 || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let hex = |p: &str| p.bytes().all(|c| c.is_ascii_hexdigit());
    if !hex(version) || !hex(trace) || !hex(span) || trace.bytes().all(|c| c == b'0') {
        return None;
    }
    Some(trace.to_ascii_lowercase())
}

/// The shortest traceparent: `vv-` + 32 + `-` + 16 + `-ff`.
const TRACEPARENT_LEN: usize = 55;

fn find_traceparent(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == '=' || c == '"' || c == ',')
        .filter(|t| t.len() >= TRACEPARENT_LEN)
        .find_map(parse_traceparent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_handle_quotes_and_punctuation() {
        let kv = key_values("GET /x status=500 user=\"a b\" dur=1.5, =bad x=");
        assert_eq!(
            kv,
            vec![
                ("status".into(), "500".into()),
                ("user".into(), "a b".into()),
                ("dur".into(), "1.5".into())
            ]
        );
    }

    #[test]
    fn json_and_traceparent_give_correlation_ids() {
        let mut ev = Event { message: r#"{"level":"error","requestId":"r1","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","n":3}"#.into(), ..Default::default() };
        enrich(&mut ev);
        assert_eq!(ev.request_id.as_deref(), Some("r1"));
        assert_eq!(
            ev.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(ev.severity, Some(Severity::Err));
        assert_eq!(ev.fields["n"], 3);
    }
}
