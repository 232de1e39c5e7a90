//! Operating an indexer: health, metrics, the data-directory lock, retention.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::util::*;

#[test]
fn health_and_metrics_are_served() {
    let dir = TempDir::new("ops");
    let ix = Indexer::start(dir.path(), &["--commit-interval", "100ms"]);
    assert_eq!(get_ok(&ix.api("/healthz"))["status"], "ok");
    post(
        &ix.api("/api/v1/ingest"),
        ndjson(&[json!({"message": "m"}), json!({"message": "m2"})]),
        None,
    );
    wait_total(&ix, "*", 2);
    assert_eq!(ix.metric("sawmill_indexer_records_accepted_total"), 2.0);
    assert!(ix.metric("sawmill_indexer_commits_total") >= 1.0);
    assert_eq!(ix.metric("sawmill_indexer_partitions"), 1.0);
    assert!(ix.metric("sawmill_indexer_searches_total") >= 1.0);
    for name in [
        "sawmill_indexer_bytes_received_total",
        "sawmill_indexer_commit_seconds_total",
        "sawmill_indexer_search_seconds_total",
        "sawmill_indexer_index_disk_bytes",
    ] {
        ix.metric(name);
    }
}

#[test]
fn a_second_indexer_on_the_same_data_dir_fails_clearly() {
    let dir = TempDir::new("lock");
    let ix = Indexer::start(dir.path(), &[]);
    let out = sawmill()
        .args(["indexer", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another indexer"), "{err}");
    assert!(
        err.contains(&ix.child.id().to_string()),
        "names the holder's pid: {err}"
    );
}

#[test]
fn retention_drops_old_partitions_and_nothing_else() {
    let dir = TempDir::new("retention");
    let data = dir.path().join("data");
    let ix = Indexer::start(&data, &["--commit-interval", "100ms"]);
    let day = 86_400_000i64;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let recs: Vec<_> = [
        (10, "ten days"),
        (9, "nine days"),
        (3, "three days"),
        (0, "today"),
    ]
    .iter()
    .flat_map(|(d, m)| {
        (0..5).map(move |i| json!({"message": format!("{m} ago {i}"), "ts": now - d * day + i}))
    })
    .collect();
    post(&ix.api("/api/v1/ingest"), ndjson(&recs), None);
    wait_total(&ix, "*", 20);
    assert_eq!(ix.metric("sawmill_indexer_partitions"), 4.0);
    assert!(ix.terminate().success());
    let ix = Indexer::start(&data, &["--commit-interval", "100ms", "--retention", "7d"]);
    let v = wait_total(&ix, "*", 10);
    let mut msgs: Vec<&str> = v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["message"].as_str().unwrap())
        .collect();
    msgs.sort();
    assert!(
        msgs.iter()
            .all(|m| m.starts_with("three days") || m.starts_with("today")),
        "{msgs:?}"
    );
    // Retention takes a partition out of searches first, then deletes its directory and
    // updates the gauges.
    eventually(
        "old partitions are counted and deleted from disk",
        30,
        || {
            let figures = (
                ix.metric("sawmill_indexer_partitions"),
                ix.metric("sawmill_indexer_partitions_removed_total"),
                std::fs::read_dir(data.join("partitions")).unwrap().count(),
            );
            match figures == (2.0, 2.0, 2) {
                true => Ok(()),
                false => Err(format!("(partitions, removed, directories) {figures:?}")),
            }
        },
    );
    // A record older than the retention period is refused with the reason, not stored to vanish.
    let (s, v) = post(
        &ix.api("/api/v1/ingest"),
        ndjson(&[json!({"message": "too old", "ts": now - 8 * day})]),
        None,
    );
    assert_eq!(s, 200);
    assert!(
        v["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("retention"),
        "{v}"
    );
    std::thread::sleep(Duration::from_millis(300));
    wait_total(&ix, "*", 10);
    // Over --max-disk, the oldest partitions go first, and never the newest.
    assert!(ix.terminate().success());
    let ix = Indexer::start(&data, &["--max-disk", "1B"]);
    let v = wait_total(&ix, "*", 5);
    assert!(
        v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["message"].as_str().unwrap().starts_with("today")),
        "{v}"
    );
    eventually("one partition is left", 30, || {
        let n = ix.metric("sawmill_indexer_partitions");
        match n == 1.0 {
            true => Ok(()),
            false => Err(format!("{n} partitions")),
        }
    });
}

/// `sawmill health URL`, the image's health check: 0 on a 2xx answer, 1 otherwise, saying why.
#[test]
fn sawmill_health_exits_by_the_answer() {
    let dir = TempDir::new("health");
    let ix = Indexer::start(&dir.path().join("ix"), &[]);
    let health = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = sawmill();
        cmd.arg("health").args(args).envs(env.iter().copied());
        run_to_exit(cmd, 30)
    };
    let (status, out, _) = health(&[&ix.api("/healthz")], &[]);
    assert!(status.success(), "healthy: {out}");
    assert!(
        out.contains("200 OK") && out.contains(r#""status":"ok""#),
        "{out}"
    );
    let (status, _, err) = health(&[&ix.api("/no-such-route")], &[]);
    assert_eq!(status.code(), Some(1), "a 404 is unhealthy");
    assert!(err.contains("404"), "{err}");
    let (status, _, err) = health(&["not a url"], &[]);
    assert_eq!(
        status.code(),
        Some(1),
        "a mistyped check is unhealthy, not Docker's 2"
    );
    assert!(err.contains("invalid value"), "{err}");
    // The server's own certificate (its container's SAWMILL_TLS_CERT) is for https only: a
    // file that cannot be read does not fail a plain check.
    let (status, out, _) = health(
        &[&ix.api("/healthz")],
        &[("SAWMILL_TLS_CERT", "/no/such/cert.pem")],
    );
    assert!(status.success(), "{out}");
    let (status, _, err) = health(&[&format!("http://{}/healthz", free_addr())], &[]);
    assert_eq!(status.code(), Some(1), "nothing listening is unhealthy");
    assert!(err.contains("cannot connect"), "{err}");

    // Over TLS, inside a server's own container: the certificate names a DNS name only, the
    // check asks 127.0.0.1, and passes by trusting exactly the served certificate, which
    // the container's SAWMILL_TLS_CERT names.
    let pki = Pki::generate();
    let tls = Indexer::start(
        &dir.path().join("tls"),
        &[
            "--tls-cert",
            path_str(&pki.ca1.named_cert),
            "--tls-key",
            path_str(&pki.ca1.named_key),
        ],
    );
    let url = tls.api("/healthz");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let own = [("SAWMILL_TLS_CERT", path_str(&pki.ca1.named_cert))];
    let (status, out, err) = health(&[&url], &own);
    assert!(
        status.success(),
        "the served certificate is trusted: {out}{err}"
    );
    let (status, _, err) = health(&[&url], &[]);
    assert_eq!(status.code(), Some(1), "an unknown issuer is not trusted");
    assert!(err.contains("certificate"), "{err}");
    let other = [("SAWMILL_TLS_CERT", path_str(&pki.ca2.named_cert))];
    let (status, _, err) = health(&[&url], &other);
    assert_eq!(
        status.code(),
        Some(1),
        "another certificate is not the one pinned"
    );
    assert!(err.contains("certificate"), "{err}");
    // With a CA, the name must match as anywhere else: 127.0.0.1 is not in it.
    let (status, _, err) = health(&["--ca-file", path_str(&pki.ca1.ca), &url], &own);
    assert_eq!(status.code(), Some(1), "--ca-file verifies the name");
    assert!(err.contains("certificate"), "{err}");
}
