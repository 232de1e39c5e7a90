//! Property tests of the ingest parsers with random input: NDJSON lines and Elasticsearch
//! bulk bodies, through normalization, the write-ahead log's round trip and the tantivy
//! document. None may panic, overflow the stack or lose a line without a reason.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::body::ndjson_objects;
use crate::record::Record;
use crate::schema::Fields;
use crate::store::Outcome;

/// Small, so that generated messages are often cut (yet above the longest number, which is
/// kept whole as a message).
const MAX_MESSAGE: usize = 32;

fn cases() -> u32 {
    std::env::var("SAWMILL_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

const KEYS: [&str; 23] = [
    "message",
    "ts",
    "received",
    "severity",
    "pid",
    "fields",
    "_src",
    "_seq",
    "_id",
    "host",
    "service",
    "trace_id",
    "@timestamp",
    "log",
    "level",
    "msg",
    "timestamp",
    "a",
    "a.b",
    "",
    "nul\0key",
    "sep\u{1}key",
    "a_key_of_more_than_forty_bytes_that_goes_on_and_on",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            "2026-11-27T10:00:00Z",
            "2026-11-27T10:00:00.123456789+02:00",
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "ERROR",
            "warn",
            "7",
            "now",
            "",
        ])
        .prop_map(Value::from),
        ".{0,30}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..6).prop_map(
                |kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            ),
        ]
    })
}

/// An object that is usually a plausible record.
fn record_object() -> impl Strategy<Value = Value> {
    (
        prop::option::of(scalar()),
        prop::collection::vec((prop::sample::select(KEYS.to_vec()), json_value()), 0..8),
    )
        .prop_map(|(message, kv)| {
            let mut m: Map<String, Value> =
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            if let Some(msg) = message {
                m.insert("message".into(), msg);
            }
            Value::Object(m)
        })
}

/// A line as a sender might get it wrong: valid, cut short, with a byte changed, or noise.
fn line() -> impl Strategy<Value = Vec<u8>> {
    (record_object(), any::<u16>(), any::<u8>(), 0u8..10).prop_map(|(v, at, byte, how)| {
        let mut s = serde_json::to_vec(&v).unwrap();
        let at = at as usize % (s.len() + 1);
        match how {
            0 => s.truncate(at),
            1 => s.insert(at, byte),
            2 => {
                // Deep nesting, past serde_json's recursion limit.
                let depth = 100 + at % 200;
                s = format!(
                    "{{\"message\":\"deep\",\"fields\":{{\"x\":{}1{}}}}}",
                    "[".repeat(depth),
                    "]".repeat(depth)
                )
                .into_bytes();
            }
            3 => s = vec![byte; at % 64],
            _ => {}
        }
        s.retain(|b| *b != b'\n');
        s
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(line(), 0..6).prop_map(|ls| ls.join(&b'\n')),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

/// An in-memory index that every accepted record goes into, committed now and then, so a
/// panic anywhere in tantivy's indexing of odd values would show.
struct Sink {
    fields: Fields,
    writer: std::cell::RefCell<(tantivy::IndexWriter, u64)>,
}

impl Sink {
    fn new() -> Sink {
        let fields = Fields::new();
        let index = tantivy::Index::create_in_ram(fields.schema.clone());
        let writer = index.writer_with_num_threads(1, 15_000_000).unwrap();
        Sink {
            fields,
            writer: std::cell::RefCell::new((writer, 0)),
        }
    }

    /// What every accepted record must survive: the log's round trip and the index.
    fn check(&self, r: &Record) -> Result<(), TestCaseError> {
        let back = Record::from_source(&r.source)
            .map_err(|e| TestCaseError::fail(format!("stored source does not replay: {e}")))?;
        prop_assert_eq!(back.ts, r.ts);
        prop_assert_eq!(&back.key, &r.key);
        // Every field, the message, exact fields, pid and `fields` included.
        prop_assert_eq!(&back.wire, &r.wire);
        let mut w = self.writer.borrow_mut();
        w.1 += 1;
        let rid = w.1;
        w.0.add_document(self.fields.document(rid, r))
            .map_err(|e| TestCaseError::fail(format!("not indexed: {e}")))?;
        if rid.is_multiple_of(5_000) {
            w.0.commit()
                .map_err(|e| TestCaseError::fail(format!("commit: {e}")))?;
        }
        Ok(())
    }
}

#[test]
fn ndjson_bodies_give_one_answer_per_line_and_never_panic() {
    let sink = Sink::new();
    let now = OffsetDateTime::now_utc();
    runner()
        .run(&body(), |body| {
            let lines = body
                .split(|b| *b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .count();
            let mut answered = 0;
            for (_, obj) in ndjson_objects(&body) {
                answered += 1;
                // As the ingest route does: cut long messages, then normalize.
                match obj.and_then(|mut o| {
                    crate::record::cut_message(&mut o, MAX_MESSAGE);
                    Record::from_object(o, now)
                }) {
                    Ok(r) => {
                        prop_assert!(r.wire.message.len() <= MAX_MESSAGE);
                        sink.check(&r)?
                    }
                    Err(reason) => prop_assert!(!reason.is_empty()),
                }
            }
            prop_assert_eq!(answered, lines);
            Ok(())
        })
        .unwrap();
}

#[test]
fn bulk_bodies_give_one_item_per_action_and_never_panic() {
    let sink = Sink::new();
    let now = OffsetDateTime::now_utc();
    let action = prop_oneof![
        Just(br#"{"index":{}}"#.to_vec()),
        Just(br#"{"create":{"_index":"app","_id":"1"}}"#.to_vec()),
        Just(br#"{"create":{"_id":7}}"#.to_vec()),
        Just(br#"{"delete":{"_id":"1"}}"#.to_vec()),
        Just(br#"{"update":{"_id":"1"}}"#.to_vec()),
        Just(br#"{}"#.to_vec()),
        line(),
    ];
    let bulk_body = prop::collection::vec((action, line()), 0..5).prop_map(|pairs| {
        pairs
            .into_iter()
            .flat_map(|(a, d)| [a, d])
            .collect::<Vec<_>>()
            .join(&b'\n')
    });
    runner()
        .run(&prop_oneof![4 => bulk_body, 1 => body()], |body| {
            let (records, items, cut) = crate::bulk::parse(&body, "_default", now, MAX_MESSAGE);
            prop_assert_eq!(cut.len(), records.len());
            let pending = items.iter().filter(|i| !i.failed()).count();
            prop_assert_eq!(pending, records.len());
            for r in &records {
                prop_assert!(r.wire.message.len() <= MAX_MESSAGE);
                sink.check(r)?;
            }
            let outcomes: Vec<Outcome> = (0..records.len() as u64).map(Outcome::Stored).collect();
            let resp = crate::bulk::response(&items, &outcomes, 0);
            prop_assert_eq!(resp["items"].as_array().map(Vec::len), Some(items.len()));
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_deeply_nested_record_is_indexed_and_searchable() {
    // serde_json stops at 128 levels; everything below that must reach the index intact.
    let depth = 120;
    let line = format!(
        "{{\"message\":\"deep one\",\"fields\":{{\"x\":{}{{\"y\":1}}{}}}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let fields = Fields::new();
    let index = tantivy::Index::create_in_ram(fields.schema.clone());
    let mut writer = index
        .writer_with_num_threads::<tantivy::TantivyDocument>(1, 15_000_000)
        .unwrap();
    let (_, obj) = ndjson_objects(line.as_bytes()).next().unwrap();
    let r = Record::from_object(obj.unwrap(), OffsetDateTime::now_utc()).unwrap();
    writer.add_document(fields.document(1, &r)).unwrap();
    writer.commit().unwrap();
    let searcher = index.reader().unwrap().searcher();
    for q in ["deep", "fields.x.y:1", "_exists_:fields.x"] {
        let parsed = crate::query::compile(q, &fields).unwrap();
        let n = searcher
            .search(parsed.as_ref(), &tantivy::collector::Count)
            .unwrap();
        assert_eq!(n, 1, "`{q}`");
    }
    // Past the limit, a clear reason rather than a crash.
    let deeper = format!("{{\"message\":{}1{}}}", "[".repeat(300), "]".repeat(300));
    let (_, obj) = ndjson_objects(deeper.as_bytes()).next().unwrap();
    assert!(obj.unwrap_err().contains("recursion limit"));
}
