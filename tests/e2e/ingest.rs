//! Ingest: round trip, partial acceptance, compression, and body limits.

use serde_json::{json, Value};

use crate::util::*;

#[test]
fn a_record_round_trips_with_every_field() {
    let dir = TempDir::new("roundtrip");
    let ix = Indexer::start(dir.path(), &["--commit-interval", "100ms"]);
    let rec = json!({
        "ts": "2026-11-27T10:00:00.123456789Z", "message": "payment declined for order 42",
        "host": "web-1", "service": "payments", "severity": "warning", "facility": "local0",
        "pid": 4242, "container": "pay-1", "image": "pay:1", "stream": "stdout",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "request_id": "req-1",
        "fields": {"order_id": 42}, "customer": "acme"
    });
    let (status, body) = post(&ix.api("/api/v1/ingest"), ndjson(&[rec]), None);
    assert_eq!(
        (status, &body),
        (
            200,
            &json!({"accepted": 1, "duplicates": 0, "rejected": []})
        )
    );
    let found = wait_total(&ix, "declined", 1);
    let hit = &found["hits"][0];
    assert_eq!(hit["ts"], "2026-11-27T10:00:00.123456789Z");
    for k in [
        "message",
        "host",
        "service",
        "severity",
        "facility",
        "pid",
        "container",
        "image",
        "stream",
        "trace_id",
        "request_id",
    ] {
        assert!(hit.get(k).is_some(), "field {k} missing from {hit}");
    }
    assert_eq!(
        hit["fields"],
        json!({"order_id": 42, "customer": "acme"}),
        "unknown fields go into fields"
    );
    assert!(hit["_id"].is_string());
    assert!(hit["received"].is_string());
    // Every field is searchable, including inside `fields`.
    for q in [
        "service:payments AND severity:warning",
        "fields.customer:acme",
        "fields.order_id:42",
        "\"payment declined\"",
        "pid:4242",
        "trace_id:4bf92f3577b34da6a3ce929d0e0e4736",
    ] {
        wait_total(&ix, q, 1);
    }
    wait_total(&ix, "\"declined payment\"", 0);
}

#[test]
fn bad_lines_are_rejected_alone_and_good_lines_kept() {
    let dir = TempDir::new("partial");
    let ix = Indexer::start(dir.path(), &["--commit-interval", "100ms"]);
    let body = b"{\"message\":\"good one\"}\nnot json\n[1,2]\n{\"msg\":\"no message\"}\n{\"message\":\"bad ts\",\"ts\":\"yesterday\"}\n\n{\"message\":\"good two\",\"ts\":1764237600000}\n{\"message\":\"bad sev\",\"severity\":\"loud\"}\n".to_vec();
    let (status, v) = post(&ix.api("/api/v1/ingest"), body, None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], 2, "{v}");
    let rejected: Vec<(u64, String)> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let lines: Vec<u64> = rejected.iter().map(|r| r.0).collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 8], "{rejected:?}");
    assert!(rejected[0].1.contains("invalid JSON"), "{rejected:?}");
    assert!(rejected[1].1.contains("object"), "{rejected:?}");
    assert!(
        rejected[2].1.contains("`message` is required"),
        "{rejected:?}"
    );
    assert!(rejected[3].1.contains("yesterday"), "{rejected:?}");
    assert!(rejected[4].1.contains("loud"), "{rejected:?}");
    let found = wait_total(&ix, "good", 2);
    let ts: Vec<&str> = found["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["ts"].as_str().unwrap())
        .collect();
    assert!(
        ts.contains(&"2025-11-27T10:00:00.000000000Z"),
        "epoch ms is read as a time: {ts:?}"
    );
    assert_eq!(ix.metric("sawmill_indexer_records_rejected_total"), 5.0);
}

#[test]
fn gzip_and_zstd_bodies_are_decoded() {
    let dir = TempDir::new("encodings");
    let ix = Indexer::start(dir.path(), &["--commit-interval", "100ms"]);
    let recs: Vec<Value> = (0..100)
        .map(|i| json!({"message": format!("compressed line {i}"), "service": "gz"}))
        .collect();
    let (s, v) = post(
        &ix.api("/api/v1/ingest"),
        gzip(&ndjson(&recs)),
        Some("gzip"),
    );
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(100)), "{v}");
    let recs: Vec<Value> = (0..50)
        .map(|i| json!({"message": format!("compressed line {i}"), "service": "zs"}))
        .collect();
    let z = zstd::encode_all(&ndjson(&recs)[..], 3).unwrap();
    let (s, v) = post(&ix.api("/api/v1/ingest"), z, Some("zstd"));
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(50)), "{v}");
    wait_total(&ix, "service:gz", 100);
    wait_total(&ix, "service:zs", 50);
    let (s, v) = post(&ix.api("/api/v1/ingest"), b"xx".to_vec(), Some("br"));
    assert_eq!(s, 415, "{v}");
    let (s, v) = post(
        &ix.api("/api/v1/ingest"),
        b"not gzip at all".to_vec(),
        Some("gzip"),
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("decompressed"), "{v}");
}

#[test]
fn oversized_bodies_and_compression_bombs_get_413_without_growing_memory() {
    let dir = TempDir::new("limits");
    let ix = Indexer::start(dir.path(), &["--max-body-bytes", "1MiB"]);
    // Plain body over the limit: refused from its Content-Length, before it is read.
    let big = vec![b'a'; 2 << 20];
    assert_eq!(raw_post_status(&ix.url, "/api/v1/ingest", &big, false), 413);
    // A body that says nothing of its length is cut off once past the limit.
    assert_eq!(raw_post_status(&ix.url, "/api/v1/ingest", &big, true), 413);
    // Within the limit, the same path works.
    let ok = ndjson(&[json!({"message": "small enough"})]);
    assert_eq!(raw_post_status(&ix.url, "/api/v1/ingest", &ok, true), 200);
    let before = ix.peak_rss_kib();
    // 1 GiB of zeros packs into about 1 MiB of gzip; stream it in so the bomb is small.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b'0'; 1 << 20];
    for _ in 0..1024 {
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "bomb is {} bytes", bomb.len());
    let (s, v) = post(&ix.api("/api/v1/ingest"), bomb, Some("gzip"));
    assert_eq!(s, 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("decompressed"), "{v}");
    let z = zstd::encode_all(&vec![b'0'; 256 << 20][..], 3).unwrap();
    let (s, v) = post(&ix.api("/api/v1/ingest"), z, Some("zstd"));
    assert_eq!(s, 413, "{v}");
    let growth_kib = ix.peak_rss_kib().saturating_sub(before);
    assert!(
        growth_kib < 16 * 1024,
        "peak RSS grew by {growth_kib} KiB decoding bombs against a 1 MiB limit"
    );
    // The indexer is still fine.
    let (s, _) = post(
        &ix.api("/api/v1/ingest"),
        ndjson(&[json!({"message": "after the bomb"})]),
        None,
    );
    assert_eq!(s, 200);
}

#[test]
fn a_record_from_before_1970_survives_a_restart_and_is_stored_once() {
    // Review: a partition starting before 1970 got a directory name (`p--00000086400-86400`)
    // that the indexer could not read back, so after a restart its records were invisible,
    // their dedup keys unknown (a resend was stored again), and replay re-added them.
    let dir = TempDir::new("pre1970");
    let data = dir.path().join("data");
    let rec = json!({"message": "from the sixties", "ts": "1969-07-20T20:17:40Z", "_src": "old", "_seq": 1});
    {
        let ix = Indexer::start(&data, &["--commit-interval", "100ms"]);
        let (s, v) = post(
            &ix.api("/api/v1/ingest"),
            ndjson(std::slice::from_ref(&rec)),
            None,
        );
        assert_eq!((s, v["accepted"].as_u64()), (200, Some(1)), "{v}");
        wait_total(&ix, "sixties", 1);
        assert!(ix.terminate().success());
    }
    let ix = Indexer::start(&data, &["--commit-interval", "100ms"]);
    let (s, v) = post(&ix.api("/api/v1/ingest"), ndjson(&[rec]), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["duplicates"].as_u64(),
        Some(1),
        "the resend was not recognised: {v}"
    );
    let v = wait_total(&ix, "sixties", 1);
    assert_eq!(v["hits"][0]["ts"], "1969-07-20T20:17:40.000000000Z");
}

/// `9999-12-31T23:59:59-23:00` is RFC 3339 but lies past the year 9999 in UTC, which the
/// time library cannot hold. It panicked while parsing: the whole body was refused (and,
/// once a panic became a 500, a shipper would have resent it for ever), and as a search's
/// `start` it dropped the connection. Now the line alone is rejected with its reason, and
/// the search parameter is a 400.
#[test]
fn a_time_past_year_9999_in_utc_is_rejected_alone() {
    let dir = TempDir::new("ts-past-9999");
    let ix = Indexer::start(dir.path(), &["--commit-interval", "100ms"]);
    let late = "9999-12-31T23:59:59-23:00";
    let body = format!(
        "{{\"message\":\"kept\"}}\n{{\"message\":\"late\",\"ts\":\"{late}\"}}\n{{\"message\":\"late too\",\"received\":\"{late}\"}}\n"
    );
    let (status, v) = post(&ix.api("/api/v1/ingest"), body.into_bytes(), None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], 1, "{v}");
    let rejected = v["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{v}");
    assert!(
        rejected.iter().all(|r| r["error"]
            .as_str()
            .unwrap()
            .contains("outside the years 0000 to 9999")),
        "{v}"
    );
    wait_total(&ix, "kept", 1);
    let (status, v) = get(&ix.api(&format!("/api/v1/search?q=*&start={}", urlencode(late))));
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains(late), "{v}");
}
