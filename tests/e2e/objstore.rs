//! History on object storage (issue 12) against a real S3 server (`moto_server`): sealed
//! partitions uploaded as splits and removed from the local disk, searched from the bucket
//! cold and warm with the same answers as from local partitions, a new indexer on an empty
//! disk, a store outage, two replicas sealing at once, retention and damaged splits.
//!
//! Records carry timestamps days in the past and the indexers run with `--partition hour
//! --seal-after 0s`, so every partition is due for sealing as soon as it is written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::util::*;

const GROUP: &str = "g1";
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
/// Sealing and uploading take a few commits and requests each; CI's machine is slow and
/// shared, and uploads retry with backoff.
const UPLOAD_SECS: u64 = 240;

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The start of the hour `days` days before the present one (epoch seconds).
fn hour_days_ago(days: i64) -> i64 {
    now_secs() / HOUR * HOUR - days * DAY
}

fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// `n` records of sender `src` (`_seq` from `first_seq` on), spread evenly over `hours`
/// hours from `start`, each at a millisecond of its own so that the order of hits never
/// depends on ties (which a tie-break by log position would order differently on two
/// indexers). Services, hosts, severities, words and traces vary so that every search route
/// has something to sort, count and group.
fn records(src: &str, first_seq: u64, start: i64, hours: i64, n: u64) -> Vec<Value> {
    let step_ms = hours * HOUR * 1000 / n as i64;
    (0..n)
        .map(|i| {
            let seq = first_seq + i;
            let word = ["alpha", "beta", "gamma", "delta"][i as usize % 4];
            let service = ["api", "web", "db"][i as usize % 3];
            let host = ["h1", "h2"][i as usize % 2];
            let severity = ["info", "warning", "err", "debug", "notice"][i as usize % 5];
            json!({
                "ts": start * 1000 + i as i64 * step_ms,
                // As a shipper sends it: left out, the indexer stamps its own clock, which
                // differs between two indexers fed the same records.
                "received": rfc3339(start + 2 * DAY),
                "message": format!("{word} request handled in {} ms seq={seq}", seq % 250),
                "service": service,
                "host": host,
                "severity": severity,
                "trace_id": format!("req-{}", seq / 7),
                "fields": {"n": seq, "user": seq % 13},
                "_src": src,
                "_seq": seq,
            })
        })
        .collect()
}

fn ingest(ix: &Indexer, recs: &[Value]) {
    for chunk in recs.chunks(2000) {
        let (s, v) = post(&ix.api("/api/v1/ingest"), ndjson(chunk), None);
        assert_eq!(s, 200, "ingest answered {s}: {v}");
        assert_eq!(v["accepted"].as_u64(), Some(chunk.len() as u64), "{v}");
    }
}

/// The flags that make every partition of the past due for sealing at once, in hours.
fn store_args(url: &str, extra: &[&str]) -> Vec<String> {
    sealing_after(url, "0s", extra)
}

/// [`store_args`] with partitions sealed `seal_after` after their hour ends.
fn sealing_after(url: &str, seal_after: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--partition",
        "hour",
        "--commit-interval",
        "100ms",
        "--group",
        GROUP,
        "--object-store",
        url,
        "--seal-after",
        seal_after,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// An indexer of group [`GROUP`] on the bucket at `url` of `moto`.
fn store_indexer(moto: &Moto, data: &Path, url: &str, extra: &[&str]) -> Indexer {
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = store_args(url, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Indexer::start_env(data, &args, &env)
}

/// `/healthz`'s `store` object (whatever the status: a failing store may make it 503).
fn store_health(ix: &Indexer) -> Value {
    let (_, v) = get(&ix.api("/healthz"));
    v["store"].clone()
}

/// Waits until `ix` reports (in `/healthz`'s `store.splits`) the `n` splits of the group's
/// manifest, without searching: a search would fill the cache that a test wants cold.
fn wait_manifest_known(ix: &Indexer, n: usize) {
    eventually("the indexer knows the manifest", UPLOAD_SECS, || {
        let h = store_health(ix);
        if h["splits"].as_u64() == Some(n as u64) {
            Ok(())
        } else {
            Err(format!(
                "store health {h} (want {n} splits); log:\n{}",
                ix.log_text()
            ))
        }
    });
}

/// The group's manifest, or `None` before the first split is recorded.
fn manifest(moto: &Moto, root: &str) -> Option<Value> {
    let bytes = moto.get(&format!("{root}/manifest.json"))?;
    Some(serde_json::from_slice(&bytes).expect("manifest.json is JSON"))
}

fn entries(manifest: &Value) -> Vec<Value> {
    manifest["splits"].as_array().cloned().unwrap_or_default()
}

fn manifest_records(m: &Value) -> u64 {
    entries(m)
        .iter()
        .map(|e| e["records"].as_u64().unwrap())
        .sum()
}

/// Waits until the manifest under `root` records `n` records and every indexer in `ixs`
/// reports no partition waiting for upload.
fn wait_uploaded(moto: &Moto, root: &str, ixs: &[&Indexer], n: u64) {
    eventually("every sealed partition uploaded", UPLOAD_SECS, || {
        let m = manifest(moto, root);
        let recorded = m.as_ref().map(manifest_records).unwrap_or(0);
        let health: Vec<Value> = ixs.iter().map(|ix| store_health(ix)).collect();
        let lag_zero = health
            .iter()
            .all(|h| h["upload_lag_partitions"].as_u64() == Some(0));
        if recorded == n && lag_zero {
            Ok(())
        } else {
            Err(format!(
                "manifest records {recorded} of {n}; store health {health:?}; objects {:?}; \
                 first indexer's log:\n{}",
                moto.objects(root),
                ixs[0].log_text()
            ))
        }
    });
}

/// The partition directories (`p-START-SPAN`) in a data directory.
fn local_partitions(data: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(data.join("partitions")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("p-"))
        .collect();
    names.sort();
    names
}

/// The start of a local partition directory's name.
fn partition_start(name: &str) -> i64 {
    name.trim_start_matches("p-")
        .split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("partition directory {name}"))
}

/// Split objects by partition (`START-SPAN`), each (key, size).
type SplitsByPartition = BTreeMap<String, Vec<(String, u64)>>;

/// Splits under `root`, by partition (`START-SPAN` as in the key), each with its size;
/// checks that every split has its tail object (`ID.tail`) and no tail outlives its split
/// (call it where no upload or removal is under way).
fn split_objects(moto: &Moto, root: &str) -> SplitsByPartition {
    let (splits, tails) = split_and_tail_objects(moto, root);
    assert_eq!(
        tails,
        tails_of(&splits),
        "each split's tail object, and no other"
    );
    splits
}

/// The tail objects `splits` should have.
fn tails_of(splits: &SplitsByPartition) -> BTreeSet<String> {
    splits
        .values()
        .flatten()
        .map(|(key, _)| key.replace(".split", ".tail"))
        .collect()
}

/// Splits under `root` as [`split_objects`] gives them, and the keys of the tail objects.
fn split_and_tail_objects(moto: &Moto, root: &str) -> (SplitsByPartition, BTreeSet<String>) {
    let mut out: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    let mut tails = BTreeSet::new();
    let prefix = format!("{root}/splits/");
    for (key, size) in moto.objects(&prefix) {
        let rest = &key[prefix.len()..];
        let (part, file) = rest
            .split_once('/')
            .unwrap_or_else(|| panic!("split object {key} is not splits/START-SPAN/ID.split"));
        if file.ends_with(".tail") && !file.contains('/') {
            tails.insert(key.clone());
            continue;
        }
        assert!(
            file.ends_with(".split") && !file.contains('/'),
            "split object {key} is not splits/START-SPAN/ID.split"
        );
        out.entry(part.to_string()).or_default().push((key, size));
    }
    (out, tails)
}

/// Every `(_src, _seq)` an indexer holds, checked for doubles.
fn keys(ix: &Indexer) -> BTreeSet<(String, u64)> {
    seq_keys(ix, "*")
}

fn expected_keys(recs: &[Value]) -> BTreeSet<(String, u64)> {
    recs.iter()
        .map(|r| {
            (
                r["_src"].as_str().unwrap().to_string(),
                r["_seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn hour_starts(recs: &[Value]) -> BTreeSet<i64> {
    recs.iter()
        .map(|r| r["ts"].as_i64().unwrap() / 1000 / HOUR * HOUR)
        .collect()
}

#[test]
fn moto_harness_stores_lists_and_forgets_on_restart() {
    let mut moto = Moto::start();
    moto.put("a/one", b"hello".to_vec());
    moto.put("a/two", vec![7; 3000]);
    moto.put("b/three", b"x".to_vec());
    assert_eq!(
        moto.objects("a/"),
        vec![("a/one".to_string(), 5), ("a/two".to_string(), 3000)]
    );
    assert_eq!(moto.get("a/one").as_deref(), Some(&b"hello"[..]));
    moto.delete("a/one");
    moto.delete("a/missing");
    assert_eq!(moto.get("a/one"), None);
    let endpoint = moto.endpoint.clone();
    moto.stop();
    assert!(
        client().get(&endpoint).send().is_err(),
        "a stopped moto still answers"
    );
    moto.restart();
    assert_eq!(moto.endpoint, endpoint);
    assert_eq!(moto.objects(""), vec![], "a restarted moto starts empty");
    moto.put("c", b"again".to_vec());
    assert_eq!(moto.objects(""), vec![("c".to_string(), 5)]);
}

#[test]
fn sealed_partitions_are_uploaded_and_removed_from_local_disk() {
    let moto = Moto::start();
    let dir = TempDir::new("objstore-upload");
    let data = dir.path().join("data");
    let url = moto.url("e2e/logs");
    let root = format!("e2e/logs/{GROUP}");
    let ix = store_indexer(&moto, &data, &url, &["--local-retention", "0s"]);
    let recs = records("upload", 1, hour_days_ago(3), 4, 400);
    let starts = hour_starts(&recs);
    assert_eq!(starts.len(), 4);
    ingest(&ix, &recs);
    wait_total(&ix, "*", 400);
    wait_uploaded(&moto, &root, &[&ix], 400);

    let m = manifest(&moto, &root).unwrap();
    let splits = split_objects(&moto, &root);
    let want_parts: BTreeSet<String> = starts.iter().map(|s| format!("{s}-{HOUR}")).collect();
    let got_parts: BTreeSet<String> = splits.keys().cloned().collect();
    assert_eq!(
        got_parts, want_parts,
        "partitions with splits in the bucket"
    );
    // Every entry names an object that is there, with the size the entry records, and the
    // entries of each partition count that hour's records.
    let sizes: BTreeMap<String, u64> = splits.values().flatten().cloned().collect();
    let mut per_start: BTreeMap<i64, u64> = BTreeMap::new();
    for e in entries(&m) {
        let key = format!("{root}/{}", e["object"].as_str().unwrap());
        assert_eq!(
            sizes.get(&key).copied(),
            e["bytes"].as_u64(),
            "object {key} of manifest entry {e}"
        );
        assert_eq!(e["span"].as_i64(), Some(HOUR), "{e}");
        *per_start.entry(e["start"].as_i64().unwrap()).or_default() +=
            e["records"].as_u64().unwrap();
    }
    let want_per_start: BTreeMap<i64, u64> = starts.iter().map(|s| (*s, 100)).collect();
    assert_eq!(
        per_start, want_per_start,
        "records per partition in the manifest"
    );
    assert_eq!(
        sizes.len(),
        entries(&m).len(),
        "objects not in the manifest: {sizes:?}"
    );

    eventually(
        "sealed partitions gone from local disk",
        UPLOAD_SECS,
        || {
            let left: Vec<String> = local_partitions(&data)
                .into_iter()
                .filter(|n| starts.contains(&partition_start(n)))
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still local: {left:?}"))
            }
        },
    );
    let h = store_health(&ix);
    assert!(
        h["url"].as_str().is_some_and(|u| u.starts_with(&url)),
        "store.url {} for {url}",
        h["url"]
    );
    assert_eq!(h["upload_lag_partitions"], 0, "{h}");
    assert!(h["splits"].as_u64().unwrap_or(0) >= 4, "{h}");
    assert!(ix.metric("sawmill_indexer_store_splits_uploaded_total") >= 4.0);
    let uploaded: u64 = sizes.values().sum();
    assert!(ix.metric("sawmill_indexer_store_bytes_uploaded_total") >= uploaded as f64);

    // Searched from the bucket now, the same records.
    wait_total(&ix, "*", 400);
    assert_eq!(keys(&ix), expected_keys(&recs));

    // Records arriving late for a sealed partition become another split of it: the uploaded
    // splits are never rewritten.
    let before: Vec<(String, Vec<u8>)> = sizes
        .keys()
        .map(|k| (k.clone(), moto.get(k).unwrap()))
        .collect();
    let first = *starts.first().unwrap();
    let late = records("upload", 401, first, 1, 50);
    ingest(&ix, &late);
    wait_uploaded(&moto, &root, &[&ix], 450);
    for (key, bytes) in &before {
        assert!(
            moto.get(key).as_ref() == Some(bytes),
            "split {key} was rewritten or removed"
        );
    }
    let splits = split_objects(&moto, &root);
    let of_first = &splits[&format!("{first}-{HOUR}")];
    assert_eq!(
        of_first.len(),
        2,
        "splits of the late partition: {of_first:?}"
    );
    let mut all = recs.clone();
    all.extend(late);
    wait_total(&ix, "*", 450);
    assert_eq!(keys(&ix), expected_keys(&all));
}

/// Every search route's answers for the records of [`records`]`(.., start, hours, ..)`,
/// labelled, with what legitimately differs between two indexers taken out (see
/// [`normalize`]). Cursors are followed page by page.
fn answers(ix: &Indexer, src: &str, start: i64, hours: i64, n: u64) -> Vec<(String, Value)> {
    let range = format!(
        "&start={}&end={}",
        urlencode(&rfc3339(start)),
        urlencode(&rfc3339(start + hours * HOUR))
    );
    // Crosses a partition boundary and starts mid-hour.
    let inner = format!(
        "&start={}&end={}",
        urlencode(&rfc3339(start + HOUR / 2)),
        urlencode(&rfc3339(start + 2 * HOUR + 600))
    );
    let mut out = Vec::new();
    let mut ask = |label: String, path: String| {
        let (s, v) = get(&ix.api(&path));
        out.push((label, json!({"status": s, "body": normalize(v)})));
    };
    for q in [
        "*",
        "alpha",
        "service:api AND severity:err",
        "fields.user:3",
        "beta OR gamma",
        "NOT service:db",
        "\"request handled\"",
    ] {
        for order in ["desc", "asc"] {
            for r in ["", range.as_str(), inner.as_str()] {
                ask(
                    format!("search q={q} order={order} {r}"),
                    format!(
                        "/api/v1/search?q={}&order={order}&limit=1000{r}",
                        urlencode(q)
                    ),
                );
            }
        }
        ask(
            format!("histogram q={q}"),
            format!("/api/v1/histogram?q={}&buckets=60{range}", urlencode(q)),
        );
        ask(
            format!("histogram q={q} inner"),
            format!("/api/v1/histogram?q={}&buckets=17{inner}", urlencode(q)),
        );
        for field in ["service", "host", "severity"] {
            ask(
                format!("terms field={field} q={q}"),
                format!("/api/v1/terms?field={field}&q={}{range}", urlencode(q)),
            );
        }
    }
    for seq in [1, n / 3, n / 2 + 1, n] {
        for scope in ["service", "host", "request"] {
            ask(
                format!("context {seq} {scope}"),
                format!("/api/v1/context/s~{seq}~{src}?before=7&after=7&scope={scope}"),
            );
        }
    }
    for t in [0, n / 14, n / 7] {
        ask(format!("trace req-{t}"), format!("/api/v1/trace/req-{t}"));
    }
    for order in ["desc", "asc"] {
        for q in ["*", "alpha"] {
            let mut cursor: Option<String> = None;
            for page in 0.. {
                let mut path = format!(
                    "/api/v1/search?q={}&order={order}&limit=37{range}",
                    urlencode(q)
                );
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={}", urlencode(c)));
                }
                let v = get_ok(&ix.api(&path));
                cursor = v["cursor"].as_str().map(str::to_string);
                out.push((
                    format!("page {page} q={q} order={order}"),
                    json!({"status": 200, "body": normalize(v)}),
                ));
                assert!(page < 1000, "paging never ended");
                if cursor.is_none() {
                    break;
                }
            }
        }
    }
    out
}

/// Takes out what differs between two indexers holding the same records: `_id` is a position
/// in the indexer's own log, `took_ms` a timing, and a `cursor` encodes positions too (only
/// whether there is one must agree).
fn normalize(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| k != "_id" && k != "took_ms")
                .map(|(k, v)| {
                    if k == "cursor" {
                        (k, Value::Bool(!v.is_null()))
                    } else {
                        (k, normalize(v))
                    }
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        v => v,
    }
}

fn assert_same_answers(want: &[(String, Value)], got: &[(String, Value)], what: &str) {
    let labels = |a: &[(String, Value)]| a.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>();
    assert_eq!(labels(got), labels(want), "{what}: the routes asked");
    for ((label, w), (_, g)) in want.iter().zip(got) {
        if let Some(diff) = first_difference(w, g, String::new()) {
            panic!("{what}: `{label}` answered differently from local partitions: {diff}");
        }
    }
}

/// Where two JSON values first differ, as `path: local … vs …`; whole answers are too long
/// to read in a failure message.
fn first_difference(want: &Value, got: &Value, path: String) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            let keys: BTreeSet<&String> = w.keys().chain(g.keys()).collect();
            keys.into_iter().find_map(|k| {
                first_difference(
                    w.get(k).unwrap_or(&Value::Null),
                    g.get(k).unwrap_or(&Value::Null),
                    format!("{path}.{k}"),
                )
            })
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (w, g))| first_difference(w, g, format!("{path}[{i}]"))),
        (Value::Array(w), Value::Array(g)) => Some(format!(
            "{path}: local has {} items, this one {}",
            w.len(),
            g.len()
        )),
        _ if want == got => None,
        _ => Some(format!("{path}: local {want} vs {got}")),
    }
}

#[test]
fn results_are_identical_from_local_partitions_cold_and_warm_splits() {
    let moto = Moto::start();
    let dir = TempDir::new("objstore-same");
    let url = moto.url("same");
    let root = format!("same/{GROUP}");
    let (start, hours, n) = (hour_days_ago(2) - 3 * HOUR, 6, 600);
    let recs = records("same", 1, start, hours, n);

    let local = Indexer::start(
        &dir.path().join("local"),
        &["--partition", "hour", "--commit-interval", "100ms"],
    );
    let sealer = store_indexer(
        &moto,
        &dir.path().join("sealer"),
        &url,
        &["--local-retention", "0s"],
    );
    ingest(&local, &recs);
    ingest(&sealer, &recs);
    wait_total(&local, "*", n);
    wait_uploaded(&moto, &root, &[&sealer], n);
    sealer.terminate();

    let want = answers(&local, "same", start, hours, n);
    // Guard against comparing empty answers: every search and histogram found something.
    for (label, a) in &want {
        assert_eq!(a["status"], 200, "local `{label}`: {a}");
        if label.starts_with("search") {
            assert!(a["body"]["total"].as_u64().unwrap() > 0, "`{label}`: {a}");
        }
    }

    let splits = entries(&manifest(&moto, &root).unwrap()).len();

    // A fresh data directory: its cache is empty, so the first answers come from cold splits.
    let reader_data = dir.path().join("reader");
    let reader = store_indexer(&moto, &reader_data, &url, &[]);
    wait_manifest_known(&reader, splits);
    let cold = answers(&reader, "same", start, hours, n);
    assert_same_answers(&want, &cold, "cold splits");
    let fetched_cold = reader.metric("sawmill_indexer_store_bytes_fetched_total");
    let misses = reader.metric("sawmill_indexer_store_cache_misses_total");
    assert!(
        fetched_cold > 0.0 && misses > 0.0,
        "cold answers fetched {fetched_cold} bytes with {misses} cache misses"
    );
    // The cold searches read the splits by ranges and asked for them to be downloaded
    // whole; once that is done, the same searches read the cache on local disk only.
    eventually(
        "every partition downloaded into the cache",
        UPLOAD_SECS,
        || {
            let pending = reader.metric("sawmill_indexer_store_downloads_pending");
            let cached = reader.metric("sawmill_indexer_store_cache_bytes");
            (pending == 0.0 && cached > 0.0)
                .then_some(())
                .ok_or(format!(
                    "{pending} downloads pending, {cached} bytes cached"
                ))
        },
    );
    let fetched_filled = reader.metric("sawmill_indexer_store_bytes_fetched_total");
    let hits_before = reader.metric("sawmill_indexer_store_cache_hits_total");
    let warm = answers(&reader, "same", start, hours, n);
    assert_same_answers(&want, &warm, "warm cache");
    let hits = reader.metric("sawmill_indexer_store_cache_hits_total") - hits_before;
    let fetched_warm = reader.metric("sawmill_indexer_store_bytes_fetched_total") - fetched_filled;
    assert!(
        hits > 0.0 && fetched_warm == 0.0,
        "warm answers: {hits} cache hits, fetched {fetched_warm} bytes"
    );
    assert!(reader.metric("sawmill_indexer_store_cache_bytes") > 0.0);
    assert!(
        local_partitions(&reader_data).is_empty(),
        "splits were assembled into local partitions, not the cache: {:?}",
        local_partitions(&reader_data)
    );

    // A cache smaller than one split downloads nothing: every answer, on every route, is
    // read from the splits by ranges (the reader above may have answered some cold routes
    // from partitions its background downloads had just brought in).
    let by_ranges = store_indexer(
        &moto,
        &dir.path().join("by-ranges"),
        &url,
        &["--cache-bytes", "1KiB"],
    );
    wait_manifest_known(&by_ranges, splits);
    let ranged = answers(&by_ranges, "same", start, hours, n);
    assert_same_answers(&want, &ranged, "splits read by ranges only");
    let metric = |name: &str| by_ranges.metric(&format!("sawmill_indexer_store_{name}"));
    assert!(
        metric("bytes_fetched_total") > 0.0
            && metric("cache_misses_total") > 0.0
            && metric("cache_bytes") == 0.0
            && metric("downloads_pending") == 0.0,
        "read by ranges only: fetched {}, misses {}, cache bytes {}, downloads pending {}",
        metric("bytes_fetched_total"),
        metric("cache_misses_total"),
        metric("cache_bytes"),
        metric("downloads_pending")
    );

    // Memory for open tails is bounded too: with room for two partitions' tails, a search
    // over all six is refused with 429 saying why, and one-hour searches still answer,
    // closing partitions no search holds to make room.
    let m = manifest(&moto, &root).unwrap();
    let biggest = entries(&m)
        .iter()
        .map(|e| e["tail"]["bytes"].as_u64().unwrap())
        .max()
        .unwrap();
    let tight = store_indexer(
        &moto,
        &dir.path().join("tight"),
        &url,
        &[
            "--cache-bytes",
            "1KiB",
            "--cache-memory",
            &(2 * biggest).to_string(),
        ],
    );
    wait_manifest_known(&tight, splits);
    let (status, body) = get(&tight.api(&format!(
        "/api/v1/search?q=*&limit=10&start={}&end={}",
        urlencode(&rfc3339(start)),
        urlencode(&rfc3339(start + hours * HOUR))
    )));
    assert_eq!(status, 429, "{body}");
    assert!(body.to_string().contains("--cache-memory"), "{body}");
    for h in 0..hours {
        let (status, body) = search_hour(&tight, start + h * HOUR);
        assert_eq!(status, 200, "hour {h}: {body}");
        let total = |body: &str| serde_json::from_str::<Value>(body).unwrap()["total"].clone();
        let (_, want) = search_hour(&local, start + h * HOUR);
        assert!(total(&want).as_u64() > Some(0), "hour {h}: {want}");
        assert_eq!(total(&body), total(&want), "hour {h}");
    }
}

#[test]
fn new_indexer_on_an_empty_disk_serves_the_whole_history_from_the_bucket() {
    let moto = Moto::start();
    let dir = TempDir::new("objstore-fresh");
    // An empty prefix: the group's objects are at the bucket's root.
    let url = moto.url("");
    let mut recs = records("fresh-a", 1, hour_days_ago(5), 5, 300);
    recs.extend(records("fresh-b", 1, hour_days_ago(2), 3, 200));
    let first = store_indexer(
        &moto,
        &dir.path().join("first"),
        &url,
        &["--local-retention", "0s"],
    );
    ingest(&first, &recs);
    wait_uploaded(&moto, GROUP, &[&first], 500);
    assert!(moto.get(&format!("{GROUP}/manifest.json")).is_some());
    // The only holder of the records is gone: no peer to copy from.
    first.terminate();

    let data = dir.path().join("fresh");
    let fresh = store_indexer(&moto, &data, &url, &[]);
    wait_total(&fresh, "*", 500);
    assert_eq!(keys(&fresh), expected_keys(&recs));
    // A sample of records, every field as sent.
    for r in [&recs[0], &recs[150], &recs[299], &recs[300], &recs[499]] {
        let q = format!(
            "_src:{} AND _seq:{}",
            r["_src"].as_str().unwrap(),
            r["_seq"]
        );
        let v = wait_total(&fresh, &q, 1);
        let hit = &v["hits"][0];
        for f in [
            "message", "service", "host", "severity", "trace_id", "fields",
        ] {
            assert_eq!(hit[f], r[f], "{f} of {q}: {hit}");
        }
    }
    assert!(
        local_partitions(&data).is_empty(),
        "history was copied into partitions instead of read from the store: {:?}",
        local_partitions(&data)
    );
}

#[test]
fn store_outage_keeps_ingest_and_search_going_and_uploads_resume() {
    let mut moto = Moto::start();
    let dir = TempDir::new("objstore-outage");
    let url = moto.url("outage");
    let root = format!("outage/{GROUP}");
    let data = dir.path().join("data");
    let ix = store_indexer(&moto, &data, &url, &["--local-retention", "0s"]);
    moto.stop();

    let mut recs = records("outage", 1, hour_days_ago(4), 3, 300);
    ingest(&ix, &recs);
    wait_total(&ix, "*", 300);
    eventually("the failing store reported", UPLOAD_SECS, || {
        let h = store_health(&ix);
        let failing = h["last_error"].as_str().is_some_and(|e| !e.is_empty());
        let lag = h["upload_lag_partitions"].as_u64().unwrap_or(0);
        if failing && lag > 0 {
            Ok(())
        } else {
            Err(format!("store health {h}; log:\n{}", ix.log_text()))
        }
    });
    assert!(ix.metric("sawmill_indexer_store_upload_failures_total") > 0.0);
    assert!(ix.metric("sawmill_indexer_store_upload_lag_partitions") > 0.0);
    // Nothing is removed locally before it is uploaded.
    let local: BTreeSet<i64> = local_partitions(&data)
        .iter()
        .map(|n| partition_start(n))
        .collect();
    assert_eq!(
        local,
        hour_starts(&recs),
        "local partitions during the outage"
    );

    // Ingest and search go on meanwhile.
    let more = records("outage", 301, hour_days_ago(3), 2, 100);
    ingest(&ix, &more);
    recs.extend(more);
    wait_total(&ix, "*", 400);
    assert_eq!(keys(&ix), expected_keys(&recs));

    moto.restart();
    wait_uploaded(&moto, &root, &[&ix], 400);
    wait_total(&ix, "*", 400);
    let fresh = store_indexer(&moto, &dir.path().join("fresh"), &url, &[]);
    wait_total(&fresh, "*", 400);
    assert_eq!(keys(&fresh), expected_keys(&recs));
}

#[test]
fn two_replicas_sealing_at_once_leave_one_copy_in_the_bucket() {
    let moto = Moto::start();
    let dir = TempDir::new("objstore-replicas");
    let url = moto.url("pair");
    let root = format!("pair/{GROUP}");
    let a = store_indexer(
        &moto,
        &dir.path().join("a"),
        &url,
        &["--local-retention", "0s"],
    );
    let b = store_indexer(
        &moto,
        &dir.path().join("b"),
        &url,
        &["--local-retention", "0s"],
    );
    let recs = records("pair", 1, hour_days_ago(3), 5, 500);
    let starts = hour_starts(&recs);
    // Both replicas get the same records at the same moment, as a shipper sends them.
    std::thread::scope(|s| {
        s.spawn(|| ingest(&a, &recs));
        s.spawn(|| ingest(&b, &recs));
    });
    wait_total(&a, "*", 500);
    wait_total(&b, "*", 500);
    eventually(
        "both replicas caught up with the bucket",
        UPLOAD_SECS,
        || {
            let m = manifest(&moto, &root);
            let covered: BTreeSet<i64> = m
                .iter()
                .flat_map(entries)
                .map(|e| e["start"].as_i64().unwrap())
                .collect();
            let health = [store_health(&a), store_health(&b)];
            if covered == starts
                && health
                    .iter()
                    .all(|h| h["upload_lag_partitions"].as_u64() == Some(0))
            {
                Ok(())
            } else {
                Err(format!(
                    "manifest covers {covered:?} of {starts:?}; health {health:?}"
                ))
            }
        },
    );
    let m = manifest(&moto, &root).unwrap();
    assert_eq!(
        manifest_records(&m),
        500,
        "records over the manifest's entries (a copy per replica would double them): {m}"
    );
    let per_start = entries(&m)
        .iter()
        .fold(BTreeMap::<i64, u32>::new(), |mut acc, e| {
            *acc.entry(e["start"].as_i64().unwrap()).or_default() += 1;
            acc
        });
    assert!(
        per_start.values().all(|&c| c == 1),
        "entries per partition: {per_start:?}"
    );
    // A replica that lost the race removes what it uploaded in vain: the split, then its
    // tail, so the two are waited for together (CI once saw the tail of a split just
    // removed, when split_objects checked the tails inside this wait and failed at once).
    eventually(
        "one split object per partition, with its tail",
        UPLOAD_SECS,
        || {
            let (splits, tails) = split_and_tail_objects(&moto, &root);
            let one = splits.len() == starts.len() && splits.values().all(|v| v.len() == 1);
            if one && tails == tails_of(&splits) {
                Ok(())
            } else {
                Err(format!("split objects {splits:?}, tails {tails:?}"))
            }
        },
    );
    for ix in [&a, &b] {
        wait_total(ix, "*", 500);
        assert_eq!(keys(ix), expected_keys(&recs));
    }
}

#[test]
fn retention_removes_splits_and_manifest_entries_from_the_bucket() {
    let moto = Moto::start();
    let dir = TempDir::new("objstore-retention");
    let url = moto.url("ret");
    let root = format!("ret/{GROUP}");
    let data = dir.path().join("data");
    let mut recs = Vec::new();
    for (i, days) in [6, 5, 4, 2, 1].into_iter().enumerate() {
        recs.extend(records(
            "ret",
            1 + 50 * i as u64,
            hour_days_ago(days),
            1,
            50,
        ));
    }
    let ix = store_indexer(
        &moto,
        &data,
        &url,
        &["--local-retention", "0s", "--retention", "30d"],
    );
    ingest(&ix, &recs);
    wait_uploaded(&moto, &root, &[&ix], 250);
    assert_eq!(split_objects(&moto, &root).len(), 5);
    ix.terminate();

    // Three days: the partitions of 4, 5 and 6 days ago are past it, those of 1 and 2 are not.
    let ix = store_indexer(
        &moto,
        &data,
        &url,
        &["--local-retention", "0s", "--retention", "3d"],
    );
    let kept: BTreeSet<String> = hour_starts(&recs[150..])
        .iter()
        .map(|s| format!("{s}-{HOUR}"))
        .collect();
    eventually("old splits removed from the bucket", UPLOAD_SECS, || {
        let m = manifest(&moto, &root).unwrap_or(Value::Null);
        let in_manifest: BTreeSet<String> = entries(&m)
            .iter()
            .map(|e| format!("{}-{}", e["start"], e["span"]))
            .collect();
        let (splits, tails) = split_and_tail_objects(&moto, &root);
        let objects: BTreeSet<String> = splits.into_keys().collect();
        // Each removed split's tail object goes too.
        let tail_parts: BTreeSet<String> = tails
            .iter()
            .filter_map(|t| t.split('/').rev().nth(1).map(str::to_string))
            .collect();
        if in_manifest == kept
            && objects == kept
            && tail_parts == kept
            && manifest_records(&m) == 100
        {
            Ok(())
        } else {
            Err(format!(
                "manifest has {in_manifest:?}, objects {objects:?}, tails of {tail_parts:?}, want {kept:?}; log:\n{}",
                ix.log_text()
            ))
        }
    });
    wait_total(&ix, "*", 100);
    assert_eq!(keys(&ix), expected_keys(&recs[150..]));
}

/// The search of one hour, as (status, body text).
fn search_hour(ix: &Indexer, start: i64) -> (u16, String) {
    let (s, v) = get(&ix.api(&format!(
        "/api/v1/search?q=*&limit=10&start={}&end={}",
        urlencode(&rfc3339(start)),
        urlencode(&rfc3339(start + HOUR))
    )));
    (s, v.to_string())
}

#[test]
fn corrupt_and_truncated_splits_give_clear_errors_never_wrong_answers() {
    let moto = Moto::start();
    let dir = TempDir::new("objstore-corrupt");
    let url = moto.url("bad");
    let root = format!("bad/{GROUP}");
    let base = hour_days_ago(3);
    let (clean, corrupt, truncated) = (base, base + 5 * HOUR, base + 10 * HOUR);
    let mut recs = records("bad", 1, clean, 1, 100);
    recs.extend(records("bad", 101, corrupt, 1, 100));
    recs.extend(records("bad", 201, truncated, 1, 100));
    let sealer = store_indexer(
        &moto,
        &dir.path().join("sealer"),
        &url,
        &["--local-retention", "0s"],
    );
    ingest(&sealer, &recs);
    wait_uploaded(&moto, &root, &[&sealer], 300);
    sealer.terminate();

    let m = manifest(&moto, &root).unwrap();
    let object_of = |start: i64| -> String {
        let e = entries(&m)
            .into_iter()
            .find(|e| e["start"].as_i64() == Some(start))
            .unwrap_or_else(|| panic!("no manifest entry for {start}: {m}"));
        format!("{root}/{}", e["object"].as_str().unwrap())
    };
    let (bad, cut) = (object_of(corrupt), object_of(truncated));
    let size = moto.get(&bad).unwrap().len();
    moto.put(
        &bad,
        std::iter::repeat_with(|| fastrand::u8(..))
            .take(size)
            .collect(),
    );
    let whole = moto.get(&cut).unwrap();
    moto.put(&cut, whole[..whole.len() / 2].to_vec());
    // Without its tail object, the cut split is opened by a ranged GET of its own end.
    moto.delete(&cut.replace(".split", ".tail"));

    let reader = store_indexer(&moto, &dir.path().join("reader"), &url, &[]);
    wait_manifest_known(&reader, entries(&m).len());
    for (start, object) in [(corrupt, &bad), (truncated, &cut)] {
        // The file name (its ID) is what names the object in any form of the message.
        let name = object.rsplit('/').next().unwrap();
        // Twice: a failed download must not leave something in the cache that answers next.
        for attempt in 0..2 {
            let (s, body) = search_hour(&reader, start);
            assert_eq!(
                s, 502,
                "search over the damaged split {object} (attempt {attempt}): {body}"
            );
            assert!(body.contains(name), "the error names {name}: {body}");
        }
        let h = store_health(&reader);
        assert!(
            h["last_error"].as_str().is_some_and(|e| e.contains(name)),
            "store.last_error names {name}: {h}"
        );
        // The damaged split's tail object is intact (its sha256 is in the manifest), and
        // it holds the `ts` column: a histogram may answer from it, but only rightly.
        let (s, body) = get(&ix_histogram(&reader, start));
        if object == &bad && s == 200 {
            assert_eq!(body["total"], 100, "histogram over {object}: {body}");
        } else {
            assert_ne!(s, 200, "histogram over {object}: {body}");
        }
    }
    assert!(reader.metric("sawmill_indexer_store_corrupt_splits_total") >= 2.0);
    // A search over everything reaches the damaged splits: an error, never a short total.
    let (s, v) = get(&reader.api("/api/v1/search?q=*&limit=10"));
    assert_ne!(s, 200, "search over all history answered 200: {v}");
    // Other time ranges are unaffected, and the indexer is still up.
    assert!(reader.child_alive(), "log:\n{}", reader.log_text());
    let (s, body) = search_hour(&reader, clean);
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total"], 100, "{body}");
    // A good read elsewhere does not make `/healthz` forget the damaged splits.
    let h = store_health(&reader);
    let named = |o: &str| {
        h["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(o.rsplit('/').next().unwrap()))
    };
    assert!(
        named(&bad) || named(&cut),
        "store.last_error still names a damaged split: {h}"
    );
}

fn ix_histogram(ix: &Indexer, start: i64) -> String {
    ix.api(&format!(
        "/api/v1/histogram?q=*&buckets=10&start={}&end={}",
        urlencode(&rfc3339(start)),
        urlencode(&rfc3339(start + HOUR))
    ))
}

/// A new replica of the group on an empty disk, with a peer (issue 12, point 3): the sealed
/// history is searchable from the store at once, and repair copies from the peer only the
/// records no split holds (this hour's), never the sealed ones.
#[test]
fn a_new_replica_copies_from_its_peer_only_what_is_not_sealed() {
    let moto = Moto::start();
    let dir = TempDir::new("objstore-peer");
    let url = moto.url("peer");
    let root = format!("peer/{GROUP}");
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // Sealed an hour after its time range ends: the past days at once, this hour not yet.
    let args = |extra: &[&str]| {
        let mut extra = extra.to_vec();
        extra.extend(["--local-retention", "0s"]);
        sealing_after(&url, "1h", &extra)
    };
    let old = records("peer-a", 1, hour_days_ago(3), 4, 400);
    let now = now_secs();
    let mut recent = records("peer-a", 401, hour_days_ago(1), 1, 150);
    for (i, r) in recent.iter_mut().enumerate() {
        // The last two minutes, a few hundred milliseconds apart.
        r["ts"] = json!((now - 120) * 1000 + i as i64 * 700);
    }
    let a_args = args(&[]);
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let a = Indexer::start_env(&dir.path().join("a"), &a_args, &env);
    ingest(&a, &old);
    ingest(&a, &recent);
    wait_uploaded(&moto, &root, &[&a], 400);
    wait_total(&a, "*", 550);

    let data = dir.path().join("new");
    let c_args = args(&["--peer", &a.url, "--discovery-interval", "1s"]);
    let c_args: Vec<&str> = c_args.iter().map(String::as_str).collect();
    let c = Indexer::start_env(&data, &c_args, &env);
    wait_total(&c, "*", 550);
    let mut want = expected_keys(&old);
    want.extend(expected_keys(&recent));
    assert_eq!(keys(&c), want);
    eventually("the new replica has caught up", 60, || {
        let (_, h) = get(&c.api("/healthz"));
        match (h["lag_records"].as_u64(), h["catching_up"].as_bool()) {
            (Some(0), Some(false)) => Ok(()),
            _ => Err(h.to_string()),
        }
    });
    assert_eq!(
        c.metric("sawmill_indexer_repair_records_copied_total"),
        150.0,
        "only the unsealed records are copied from the peer"
    );
    let hours: BTreeSet<i64> = local_partitions(&data)
        .iter()
        .map(|n| partition_start(n))
        .collect();
    assert!(
        hours.iter().all(|&h| h > now - 2 * HOUR),
        "only the recent hours are on the new replica's disk: {hours:?}"
    );
}

/// A record arriving for a partition only the store holds, while its split cannot be read
/// (damaged here; the same for a store out of reach): indexing goes on for every other
/// record, the late one is stored, and a search of its hour fails saying why rather than
/// answering without the sealed records. (Indexing stopped for every record until the split
/// could be read.)
#[test]
fn a_late_record_for_an_unreadable_sealed_partition_does_not_stop_indexing() {
    let moto = Moto::start();
    let dir = TempDir::new("objstore-late");
    let url = moto.url("late");
    let root = format!("late/{GROUP}");
    let sealed = hour_days_ago(3);
    let recs = records("late", 1, sealed, 1, 100);
    let ix = store_indexer(
        &moto,
        &dir.path().join("ix"),
        &url,
        &["--local-retention", "0s"],
    );
    ingest(&ix, &recs);
    wait_uploaded(&moto, &root, &[&ix], 100);
    eventually(
        "the sealed hour leaves local disk",
        UPLOAD_SECS,
        || match local_partitions(&dir.path().join("ix")).is_empty() {
            true => Ok(()),
            false => Err(format!("{:?}", local_partitions(&dir.path().join("ix")))),
        },
    );
    let m = manifest(&moto, &root).unwrap();
    let object = format!("{root}/{}", entries(&m)[0]["object"].as_str().unwrap());
    let original = moto.get(&object).unwrap();
    moto.put(&object, vec![7u8; original.len()]);

    let mut late = records("late", 101, sealed, 1, 1);
    late[0]["message"] = json!("a late arrival");
    let other = records("late", 102, hour_days_ago(2), 1, 1);
    ingest(&ix, &late);
    ingest(&ix, &other);
    // The other hour's record becomes searchable: indexing did not stop.
    let (s, body) = eventually_search_hour(&ix, hour_days_ago(2), 1);
    assert_eq!(s, 200, "{body}");
    let (_, h) = get(&ix.api("/healthz"));
    assert_eq!(h["status"], "ok", "indexing is not failing: {h}");
    // The late record's hour: an error that says why, never 200 with 1 of 101.
    let incomplete = |ix: &Indexer| {
        let (s, body) = search_hour(ix, sealed);
        assert_eq!(s, 503, "{body}");
        assert!(
            body.contains("arrived after the partition was sealed"),
            "the error says what is missing: {body}"
        );
    };
    incomplete(&ix);
    assert!(ix.child_alive(), "log:\n{}", ix.log_text());
    // A restart remembers it (it answered 200 with 1 of 101 when only memory held it).
    ix.terminate();
    let ix = store_indexer(
        &moto,
        &dir.path().join("ix"),
        &url,
        &["--local-retention", "0s"],
    );
    incomplete(&ix);
    // Once the split reads well again, the group's records are read into the partition and
    // the late one is sealed as another split of it.
    moto.put(&object, original);
    let (s, body) = eventually_search_hour(&ix, sealed, 101);
    assert_eq!(s, 200, "{body}");
    wait_uploaded(&moto, &root, &[&ix], 102);
}

/// Searches the hour from `start` until it answers `n` records; the last status and body.
fn eventually_search_hour(ix: &Indexer, start: i64, n: u64) -> (u16, String) {
    let mut last = (0, String::new());
    // The seal loop backs off to a minute between failed rounds.
    eventually("the hour's records are searchable", UPLOAD_SECS, || {
        last = search_hour(ix, start);
        let total = serde_json::from_str::<Value>(&last.1)
            .ok()
            .and_then(|v| v["total"].as_u64());
        match total == Some(n) {
            true => Ok(()),
            false => Err(format!("{} {}; log:\n{}", last.0, last.1, ix.log_text())),
        }
    });
    last
}
