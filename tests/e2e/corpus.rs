//! The shared corpus of real client and attacker inputs (`../shared/corpus`), and how a
//! stored record is checked against a syslog case's `expect`. Also compiled into the
//! shipper's unit tests, so both check the same way.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The corpus file, beside the repository as CI lays it out.
pub fn syslog_cases() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/syslog.jsonl");
    let alt = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/corpus/syslog.jsonl"
    );
    let text = std::fs::read_to_string(path)
        .or_else(|_| std::fs::read_to_string(alt))
        .unwrap_or_else(|e| panic!("the syslog corpus is needed at {path}: {e}"));
    let cases: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(cases.len() >= 25, "only {} corpus cases", cases.len());
    cases
}

/// The datagram a case describes: `raw`, `raw_hex` or `raw_gen`.
pub fn input(case: &Value) -> Vec<u8> {
    if let Some(raw) = case.get("raw") {
        return raw.as_str().unwrap().as_bytes().to_vec();
    }
    if let Some(h) = case.get("raw_hex") {
        let h = h.as_str().unwrap();
        return (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect();
    }
    let g = &case["raw_gen"];
    let mut out = g["prefix"].as_str().unwrap().as_bytes().to_vec();
    for _ in 0..g["count"].as_u64().unwrap() {
        out.extend_from_slice(g["repeat"].as_str().unwrap().as_bytes());
    }
    out
}

/// `None` when `rec` has every field `expect` lists; otherwise what differs.
pub fn mismatch(expect: &Value, rec: &Value, my_host: &str) -> Option<String> {
    let mut problems = Vec::new();
    for (k, want) in expect.as_object().unwrap() {
        let got = match k.as_str() {
            "message_contains" => {
                let msg = rec["message"].as_str().unwrap_or("");
                for part in want.as_array().unwrap() {
                    if !msg.contains(part.as_str().unwrap()) {
                        problems.push(format!("message {msg:?} lacks {part}"));
                    }
                }
                continue;
            }
            "ts" => {
                let got = rec["ts"]
                    .as_str()
                    .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok());
                let want_t = OffsetDateTime::parse(want.as_str().unwrap(), &Rfc3339).ok();
                if got.is_none() || got != want_t {
                    problems.push(format!("ts {} != {want}", rec["ts"]));
                }
                continue;
            }
            k if k.starts_with("fields.") => {
                rec["fields"].get(&k[7..]).cloned().unwrap_or(Value::Null)
            }
            k => rec.get(k).cloned().unwrap_or(Value::Null),
        };
        let want = if want == "$HOST" {
            Value::String(my_host.into())
        } else {
            want.clone()
        };
        if got != want {
            problems.push(format!("{k}: got {got}, want {want}"));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}
