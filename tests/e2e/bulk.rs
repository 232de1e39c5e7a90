//! Elasticsearch `_bulk`: bodies as Vector and Filebeat send them.

use serde_json::json;

use crate::util::*;

#[test]
fn vector_elasticsearch_sink_body_is_stored_unchanged() {
    let dir = TempDir::new("bulk-vector");
    let ix = Indexer::start(dir.path(), &["--commit-interval", "100ms"]);
    // What Vector's `elasticsearch` sink sends in bulk mode (gzip-compressed by default).
    let body = concat!(
        "{\"index\":{\"_index\":\"vector-2026.11.27\"}}\n",
        "{\"timestamp\":\"2026-11-27T10:00:00.123Z\",\"host\":\"web-1\",\"message\":\"GET /health 200\",\"source_type\":\"file\",\"file\":\"/var/log/app.log\"}\n",
        "{\"index\":{\"_index\":\"vector-2026.11.27\"}}\n",
        "{\"timestamp\":\"2026-11-27T10:00:01.456Z\",\"host\":\"web-1\",\"message\":\"GET /orders 500\",\"source_type\":\"file\",\"level\":\"ERROR\"}\n",
    );
    let (s, v) = post(&ix.api("/_bulk"), gzip(body.as_bytes()), Some("gzip"));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["errors"], false, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["index"]["status"], 201, "{v}");
    assert_eq!(items[0]["index"]["_index"], "vector-2026.11.27");
    let found = wait_total(&ix, "host:web-1", 2);
    let hit = found["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["message"] == "GET /orders 500")
        .unwrap()
        .clone();
    assert_eq!(hit["ts"], "2026-11-27T10:00:01.456000000Z");
    assert_eq!(hit["severity"], "err", "{hit}");
    assert_eq!(hit["fields"]["source_type"], "file");
}

#[test]
fn filebeat_body_with_ids_is_deduplicated() {
    let dir = TempDir::new("bulk-filebeat");
    let ix = Indexer::start(dir.path(), &["--commit-interval", "100ms"]);
    // Filebeat 8 writes to a data stream with `create` and ECS objects.
    let body = concat!(
        "{\"create\":{\"_index\":\"filebeat-8.11.0\",\"_id\":\"fb-1\"}}\n",
        "{\"@timestamp\":\"2026-11-27T10:00:00.000Z\",\"message\":\"disk almost full\",\"log\":{\"offset\":0,\"file\":{\"path\":\"/var/log/syslog\"},\"level\":\"warn\"},\"input\":{\"type\":\"filestream\"},\"host\":{\"name\":\"db-2\"},\"agent\":{\"type\":\"filebeat\",\"version\":\"8.11.0\"},\"ecs\":{\"version\":\"8.0.0\"}}\n",
        "{\"create\":{\"_index\":\"filebeat-8.11.0\",\"_id\":\"fb-2\"}}\n",
        "{\"@timestamp\":\"2026-11-27T10:00:00.500Z\",\"message\":\"disk full\",\"host\":{\"name\":\"db-2\"}}\n",
    );
    let url = ix.api("/filebeat-8.11.0/_bulk");
    let (s, v) = post(&url, body.as_bytes().to_vec(), None);
    assert_eq!((s, &v["errors"]), (200, &json!(false)), "{v}");
    assert_eq!(v["items"][0]["create"]["_id"], "fb-1");
    // Filebeat resends after a timeout: the second copy is refused as Elasticsearch does.
    let (s, v) = post(&url, body.as_bytes().to_vec(), None);
    assert_eq!(s, 200);
    assert_eq!(v["errors"], true, "{v}");
    assert_eq!(v["items"][0]["create"]["status"], 409, "{v}");
    assert_eq!(
        v["items"][1]["create"]["error"]["type"],
        "version_conflict_engine_exception"
    );
    let found = wait_total(&ix, "host:db-2", 2);
    let hit = found["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["message"] == "disk almost full")
        .unwrap()
        .clone();
    assert_eq!(hit["severity"], "warning", "{hit}");
    assert_eq!(hit["fields"]["log"]["file"]["path"], "/var/log/syslog");
    // A bad document fails alone, in the item's slot.
    let bad = "{\"index\":{}}\n{\"no_message\":1}\n{\"index\":{}}\n{\"message\":\"fine\"}\n{\"delete\":{\"_id\":\"x\"}}\n";
    let (s, v) = post(&ix.api("/_bulk"), bad.as_bytes().to_vec(), None);
    assert_eq!(s, 200);
    assert_eq!(v["errors"], true);
    let statuses: Vec<u64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i.as_object().unwrap().values().next().unwrap()["status"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(statuses, vec![400, 201, 400], "{v}");
    assert!(
        v["items"][0]["index"]["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("message"),
        "{v}"
    );
}
