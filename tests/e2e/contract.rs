//! The contract (`sawmill-record`) against the real indexer: what it stores and answers
//! must read back as the contract's types, whatever shape the ingested values had.

use sawmill_record::api::{Hit, SearchResponse};
use serde_json::{json, Value};

use crate::util::*;

/// Issue 10, B5: `message` is a string in the contract, but senders write numbers, booleans
/// and objects there. As Elasticsearch coerces a number into a text field, the indexer keeps
/// each as its JSON text ("5", "true", `{"a":1}`, "[1]"), so every stored record's `message`
/// is a string and every hit reads back as the contract's `Hit`. Checked on both ingest
/// routes, and through `max_message_bytes`, which cuts messages of hits.
#[test]
fn a_message_of_any_json_shape_is_stored_as_its_text() {
    let dir = TempDir::new("message-shapes");
    let ix = Indexer::start(dir.path(), &["--commit-interval", "100ms"]);
    let shapes = [
        (json!(5), "5"),
        (json!(true), "true"),
        (json!(2.5), "2.5"),
        (json!({"a": 1}), "{\"a\":1}"),
        (json!([1]), "[1]"),
    ];
    let lines: Vec<Value> = shapes
        .iter()
        .enumerate()
        .map(|(n, (m, _))| json!({"message": m, "service": "shapes", "n": n}))
        .collect();
    let (status, body) = post(&ix.api("/api/v1/ingest"), ndjson(&lines), None);
    assert_eq!(
        (status, body),
        (
            200,
            json!({"accepted": shapes.len(), "duplicates": 0, "rejected": []})
        )
    );
    let mut bulk = Vec::new();
    for line in &lines {
        bulk.extend_from_slice(b"{\"index\":{}}\n");
        let mut doc = line.clone();
        doc["service"] = json!("bulk-shapes");
        bulk.extend_from_slice(doc.to_string().as_bytes());
        bulk.push(b'\n');
    }
    let (status, body) = post(&ix.api("/_bulk"), bulk, None);
    assert_eq!((status, &body["errors"]), (200, &json!(false)), "{body}");

    for service in ["shapes", "bulk-shapes"] {
        let q = format!("service:{service}");
        wait_total(&ix, &q, shapes.len() as u64);
        for cut in ["", "&max_message_bytes=3"] {
            let url = ix.api(&format!(
                "/api/v1/search?q={}&order=asc{cut}",
                urlencode(&q)
            ));
            let text = client().get(&url).send().unwrap().text().unwrap();
            let answer: SearchResponse = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{url} is no SearchResponse ({e}): {text}"));
            let mut got: Vec<(u64, String)> = answer
                .hits
                .iter()
                .map(|h: &Hit| {
                    let n = h.record.fields["n"].as_u64().unwrap();
                    (n, h.record.message.to_string())
                })
                .collect();
            got.sort();
            let want: Vec<(u64, String)> = shapes
                .iter()
                .enumerate()
                .map(|(n, (_, text))| {
                    let text = if cut.is_empty() {
                        text
                    } else {
                        &text[..text.len().min(3)]
                    };
                    (n as u64, text.to_string())
                })
                .collect();
            assert_eq!(got, want, "{service}{cut}: {text}");
        }
    }
}
