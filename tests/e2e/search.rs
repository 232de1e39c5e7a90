//! The search API: paging, histogram, terms, trace, context, tail and its 400s.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::util::*;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn start(name: &str) -> (TempDir, Indexer) {
    let dir = TempDir::new(name);
    let ix = Indexer::start(dir.path(), &["--commit-interval", "100ms"]);
    (dir, ix)
}

fn ingest(ix: &Indexer, recs: &[Value]) {
    let (s, v) = post(&ix.api("/api/v1/ingest"), ndjson(recs), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["accepted"].as_u64(), Some(recs.len() as u64), "{v}");
}

fn ids(v: &Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn cursor_pages_stably_while_new_records_arrive() {
    let (_d, ix) = start("paging");
    let t0 = now_ms() - 3_600_000;
    // Ties in ts on purpose: paging must still neither skip nor repeat.
    let recs: Vec<Value> = (0..250)
        .map(|i| json!({"message": format!("old {i}"), "service": "p", "ts": t0 + (i / 3) * 1000}))
        .collect();
    ingest(&ix, &recs);
    wait_total(&ix, "service:p", 250);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut last_ts: Option<String> = None;
    for page in 0.. {
        let mut url = ix.api("/api/v1/search?q=service:p&limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let v = get_ok(&url);
        for h in v["hits"].as_array().unwrap() {
            let ts = h["ts"].as_str().unwrap().to_string();
            if let Some(prev) = &last_ts {
                assert!(ts <= *prev, "newest first: {ts} came after {prev}");
            }
            last_ts = Some(ts);
        }
        seen.extend(ids(&v));
        // Newer records arrive between pages; they must not shift the pages.
        ingest(
            &ix,
            &[json!({"message": format!("new {page}"), "service": "p"})],
        );
        std::thread::sleep(Duration::from_millis(250));
        match v["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "a record was repeated across pages"
    );
    let olds = seen.len();
    assert_eq!(
        olds, 250,
        "pages held {olds} records, expected the 250 that existed at the start"
    );
    // order=asc gives the oldest first.
    let v = get_ok(&ix.api("/api/v1/search?q=service:p&limit=1&order=asc"));
    assert_eq!(v["hits"][0]["message"], "old 0");
}

#[test]
fn histogram_buckets_add_up_to_total() {
    let (_d, ix) = start("histogram");
    let now = now_ms();
    let recs: Vec<Value> = (0..1200)
        .map(|i| json!({"message": "tick", "service": if i % 3 == 0 { "a" } else { "b" }, "ts": now - 7_000_000 + i * 5_700}))
        .collect();
    ingest(&ix, &recs);
    wait_total(&ix, "tick", 1200);
    for (q, range) in [
        ("*", "&start=now-3h&end=now"),
        ("service:a", "&start=now-1h&end=now"),
        ("tick", ""),
        ("service:b", "&start=now-100m"),
    ] {
        let total = get_ok(&ix.api(&format!("/api/v1/search?q={}{range}&limit=0", urlencode(q))))
            ["total"]
            .as_u64()
            .unwrap();
        let h = get_ok(&ix.api(&format!(
            "/api/v1/histogram?q={}{range}&buckets=60",
            urlencode(q)
        )));
        let sum: u64 = h["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum();
        assert!(total > 0, "{q} {range}");
        assert_eq!(
            sum, total,
            "histogram of {q:?} {range:?} sums to {sum}, search total is {total}"
        );
        let n = h["buckets"].as_array().unwrap().len();
        assert!((1..=61).contains(&n), "{n} buckets");
        assert!(h["interval_ms"].as_u64().unwrap() > 0);
    }
    // Whole partitions are counted from the index's term statistics, the rest by scanning:
    // both must agree.
    let want = json!([{"value": "b", "count": 800}, {"value": "a", "count": 400}]);
    for q in ["", "q=tick", "start=now-3h&end=now", "q=*&start=now-30d"] {
        let t = get_ok(&ix.api(&format!("/api/v1/terms?field=service&{q}")));
        assert_eq!(t["values"], want, "terms with {q:?}");
        assert_eq!(t["missing"], 0);
    }
    let t = get_ok(&ix.api("/api/v1/terms?field=host"));
    assert_eq!(t["missing"], 1200, "{t}");
    let t = get_ok(&ix.api("/api/v1/terms?field=service&q=service:a&size=1"));
    assert_eq!(t["values"], json!([{"value": "a", "count": 400}]));
}

#[test]
fn terms_count_a_fields_path_by_whole_values_of_any_type() {
    let (_d, ix) = start("fieldterms");
    let now = now_ms();
    let mut recs = Vec::new();
    for (i, pod) in [
        "checkout-7d9f-x2x",
        "checkout-7d9f-x2x",
        "checkout-7d9f-x2x",
        "web-1",
    ]
    .iter()
    .enumerate()
    {
        recs.push(
            json!({"message": "served", "service": "shop", "ts": now - 1000 - i as i64,
            "fields": {"k8s_pod": pod}}),
        );
    }
    // A path's values come as numbers, text, booleans and dates alike; an array counts
    // each of its values once.
    for v in [
        json!(0),
        json!(0),
        json!(137),
        json!("137"),
        json!(true),
        json!(2.5),
        json!(["a", "b", "a"]),
        json!("2026-11-30T10:00:00Z"),
    ] {
        recs.push(
            json!({"message": "exited", "service": "job", "ts": now - 2000, "fields": {"code": v}}),
        );
    }
    // Marathon's app ids are paths: one holds all the words of another, and case differs.
    for app in ["/shop/web", "/shop/web", "/shop/web/worker", "/Shop/Web"] {
        recs.push(json!({"message": "app", "service": "m", "ts": now - 2500, "fields": {"marathon_app_id": app}}));
    }
    recs.push(json!({"message": "plain", "service": "other", "ts": now - 3000}));
    let total = recs.len() as u64;
    ingest(&ix, &recs);
    wait_total(&ix, "*", total);
    let t = get_ok(&ix.api("/api/v1/terms?field=fields.k8s_pod"));
    assert_eq!(
        t["values"],
        json!([{"value": "checkout-7d9f-x2x", "count": 3}, {"value": "web-1", "count": 1}]),
        "{t}"
    );
    assert_eq!(t["missing"], total - 4, "{t}");
    assert_eq!(t["field"], "fields.k8s_pod");
    let t = get_ok(&ix.api("/api/v1/terms?field=fields.code&size=3"));
    assert_eq!(
        t["values"],
        json!([{"value": "0", "count": 2}, {"value": "137", "count": 2}, {"value": "2.5", "count": 1}]),
        "the number 137 and the text \"137\" are one value: {t}"
    );
    assert_eq!(t["other"], 4, "true, a, b and the date, each once: {t}");
    assert_eq!(t["missing"], total - 8, "{t}");
    let t = get_ok(&ix.api("/api/v1/terms?field=fields.code&size=20"));
    let values = t["values"].as_array().unwrap();
    let date = values
        .iter()
        .find(|v| {
            v["value"]
                .as_str()
                .unwrap()
                .starts_with("2026-11-30T10:00:00")
        })
        .unwrap_or_else(|| panic!("the date is counted: {t}"));
    // Every value counted is found by a search for it quoted, as many times: the sidebar's
    // "filter for" (whole values, so `/shop/web` is not `/shop/web/worker` nor `/Shop/Web`).
    let apps = get_ok(&ix.api("/api/v1/terms?field=fields.marathon_app_id&size=20"));
    assert_eq!(
        apps["values"],
        json!([{"value": "/shop/web", "count": 2}, {"value": "/Shop/Web", "count": 1}, {"value": "/shop/web/worker", "count": 1}]),
        "{apps}"
    );
    let counted = values
        .iter()
        .chain(apps["values"].as_array().unwrap())
        .map(|v| (v["value"].as_str().unwrap(), v["count"].as_u64().unwrap()));
    for (value, count) in counted {
        let field = if value.starts_with('/') {
            "fields.marathon_app_id"
        } else {
            "fields.code"
        };
        let q = format!("{field}:\"{value}\"");
        let found = get_ok(&ix.api(&format!("/api/v1/search?q={}&limit=0", urlencode(&q))))
            ["total"]
            .as_u64()
            .unwrap();
        assert_eq!(found, count, "{q}");
    }
    assert_eq!(date["count"], 1);
    // Unquoted, a value's words are searched, as in `message`.
    let v = get_ok(&ix.api("/api/v1/search?q=fields.marathon_app_id%3Aweb&limit=0"));
    assert_eq!(v["total"], 4, "{v}");
    // The query narrows them as any facet's.
    let t = get_ok(&ix.api("/api/v1/terms?field=fields.k8s_pod&q=NOT%20fields.k8s_pod%3Aweb"));
    assert_eq!(
        t["values"],
        json!([{"value": "checkout-7d9f-x2x", "count": 3}]),
        "{t}"
    );
    let t = get_ok(&ix.api("/api/v1/terms?field=fields.nothing_here"));
    assert_eq!(t["values"], json!([]));
    assert_eq!(t["missing"], total);
}

#[test]
fn trace_returns_a_multi_service_request_oldest_first() {
    let (_d, ix) = start("trace");
    let t0 = now_ms() - 60_000;
    let steps = [
        ("gateway", 0),
        ("auth", 3),
        ("orders", 9),
        ("payments", 15),
        ("gateway", 21),
    ];
    let mut recs: Vec<Value> = steps
        .iter()
        .map(|(svc, off)| json!({"message": format!("{svc} step"), "service": svc, "request_id": "req-42", "ts": t0 + off}))
        .collect();
    recs.push(
        json!({"message": "by trace id", "service": "worker", "trace_id": "req-42", "ts": t0 + 30}),
    );
    recs.push(json!({"message": "other request", "service": "auth", "request_id": "req-43", "ts": t0 + 5}));
    recs.reverse();
    ingest(&ix, &recs);
    wait_total(&ix, "step", 5);
    let v = get_ok(&ix.api("/api/v1/trace/req-42"));
    let got: Vec<&str> = v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["service"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        vec!["gateway", "auth", "orders", "payments", "gateway", "worker"]
    );
    assert_eq!(v["total"], 6);
}

#[test]
fn context_returns_neighbours_from_the_same_host_and_service() {
    let (_d, ix) = start("context");
    let t0 = now_ms() - 60_000;
    let mut recs = Vec::new();
    for i in 0..10 {
        recs.push(json!({"message": format!("api line {i}"), "service": "api", "host": "h1", "ts": t0 + i * 10}));
        recs.push(json!({"message": format!("db line {i}"), "service": "db", "host": "h1", "ts": t0 + i * 10 + 1}));
        recs.push(json!({"message": format!("api elsewhere {i}"), "service": "api", "host": "h2", "ts": t0 + i * 10 + 2}));
    }
    ingest(&ix, &recs);
    wait_total(&ix, "line", 20);
    let anchor = get_ok(&ix.api(&format!("/api/v1/search?q={}", urlencode("\"api line 5\""))));
    let id = anchor["hits"][0]["_id"].as_str().unwrap().to_string();
    let v = get_ok(&ix.api(&format!("/api/v1/context/{id}?before=2&after=3")));
    let msgs = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|h| h["message"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(v["anchor"]["message"], "api line 5");
    assert_eq!(msgs("before"), vec!["api line 3", "api line 4"]);
    assert_eq!(
        msgs("after"),
        vec!["api line 6", "api line 7", "api line 8"]
    );
    let v = get_ok(&ix.api(&format!("/api/v1/context/{id}?before=1&after=1&scope=host")));
    assert_eq!(v["before"][0]["message"], "db line 4");
    assert_eq!(v["after"][0]["message"], "db line 5");
}

#[test]
fn tail_delivers_a_record_sent_after_it_opened() {
    let (_d, ix) = start("tail");
    ingest(
        &ix,
        &[json!({"message": "before the tail", "service": "tailme"})],
    );
    wait_total(&ix, "service:tailme", 1);
    let resp = client()
        .get(ix.api("/api/v1/tail?q=service:tailme"))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut lines = BufReader::new(resp).lines();
    assert_eq!(lines.next().unwrap().unwrap(), ": connected");
    ingest(
        &ix,
        &[
            json!({"message": "not for this tail", "service": "other"}),
            json!({"message": "fresh line", "service": "tailme"}),
        ],
    );
    let mut data = Vec::new();
    for line in lines {
        let line = line.unwrap();
        if let Some(d) = line.strip_prefix("data: ") {
            data.push(serde_json::from_str::<Value>(d).unwrap());
            break;
        }
    }
    assert_eq!(data.len(), 1);
    assert_eq!(
        data[0]["message"], "fresh line",
        "only new matching records are sent"
    );
}

#[test]
fn bad_queries_times_and_fields_answer_400_with_the_problem() {
    let (_d, ix) = start("badreq");
    ingest(&ix, &[json!({"message": "x"})]);
    let cases = [
        ("/api/v1/search?q=(unclosed", "does not parse"),
        ("/api/v1/search?q=nosuchfield:x", "nosuchfield"),
        ("/api/v1/search?start=yesterday", "yesterday"),
        ("/api/v1/search?start=now&end=now-1h", "before"),
        ("/api/v1/search?limit=abc", "limit"),
        ("/api/v1/search?limt=5", "limt"),
        ("/api/v1/search?limit=100000", "limit"),
        ("/api/v1/search?cursor=garbage", "cursor"),
        ("/api/v1/histogram?end=tomorrow", "tomorrow"),
        ("/api/v1/histogram?buckets=0", "buckets"),
        ("/api/v1/terms?field=message", "message"),
        ("/api/v1/terms?field=fields.", "after the dot"),
        ("/api/v1/terms", "field"),
        ("/api/v1/context/not-an-id", "not-an-id"),
        ("/api/v1/tail?q=AND", "does not parse"),
    ];
    for (path, needle) in cases {
        let (status, v) = get(&ix.api(path));
        assert_eq!(status, 400, "{path} answered {status}: {v}");
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no error message in {v}"));
        assert!(
            msg.contains(needle),
            "{path}: message {msg:?} does not name {needle:?}"
        );
    }
    let (status, v) = get(&ix.api("/api/v1/context/123456789"));
    assert_eq!(status, 404, "{v}");
}
