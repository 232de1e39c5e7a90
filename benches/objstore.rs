//! Object-store benchmark (issue 12): the indexer benchmark's records, 24 hours of the
//! past in hour partitions, sealed and uploaded to a real S3 server (`moto_server` on
//! loopback); then the indexer benchmark's four queries answered (a) from local partitions
//! (the baseline, same process run), (b) from splits in a warm cache and (c) from cold
//! splits by an indexer that has only the bucket.
//!
//! Run: `cargo bench --bench objstore` (`SAWMILL_BENCH_RECORDS=500000` for a quicker run,
//! `SAWMILL_BENCH_ITERS` and `SAWMILL_BENCH_COLD_ITERS` for the runs per query). Needs
//! `moto_server` (`python3 -m pip install 'moto[server]'`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;

use common::moto::Moto;
use common::{
    env_or, generate_in, http_get, http_queries, ingest, metric, percentiles, start_server_env,
    time_both, wait_idle, Data, Server,
};
use serde_json::Value;

const GROUP: &str = "bench";
const PREFIX: &str = "history";
const HOUR_MS: i64 = 3_600_000;
const HOURS: i64 = 24;
const UPLOADED: &str = "sawmill_indexer_store_bytes_uploaded_total";
const FETCHED: &str = "sawmill_indexer_store_bytes_fetched_total";
const MISSES: &str = "sawmill_indexer_store_cache_misses_total";
const PENDING: &str = "sawmill_indexer_store_downloads_pending";
const CACHED: &str = "sawmill_indexer_store_cache_bytes";

/// `GET {url}{path}` as JSON, whatever the status.
fn get_json(client: &reqwest::blocking::Client, url: &str, path: &str) -> Value {
    let text = client
        .get(format!("{url}{path}"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
}

/// `/healthz`'s `store` object.
fn store_health(client: &reqwest::blocking::Client, server: &Server) -> Value {
    get_json(client, &server.url, "/healthz")["store"].clone()
}

/// Polls `check` every 50 ms until it holds; panics after `secs` with what it saw last.
fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: not within {secs} s: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The group's splits as the manifest lists them.
fn manifest_splits(moto: &Moto) -> Vec<Value> {
    moto.get(&format!("{PREFIX}/{GROUP}/manifest.json"))
        .map(|b| serde_json::from_slice::<Value>(&b).unwrap()["splits"].clone())
        .and_then(|s| s.as_array().cloned())
        .unwrap_or_default()
}

/// An indexer of the benchmark's group on the bucket, on `data`, with `extra` flags.
fn store_indexer(moto: &Moto, data: &Path, extra: &[&str]) -> Server {
    let url = moto.url(PREFIX);
    let mut args = vec![
        "--partition",
        "hour",
        "--group",
        GROUP,
        "--object-store",
        &url,
    ];
    args.extend_from_slice(extra);
    start_server_env(data, &args, &moto.env())
}

/// Waits until an indexer on an empty disk knows all `splits` of the manifest, without
/// searching (a search would fill the cache).
fn wait_manifest_known(client: &reqwest::blocking::Client, server: &Server, splits: usize) {
    wait_for("the indexer knows the manifest", 120, || {
        let h = store_health(client, server);
        match h["splits"].as_u64() == Some(splits as u64) {
            true => Ok(()),
            false => Err(h.to_string()),
        }
    });
}

/// Waits until `server` answers for all `n` records.
fn wait_total(client: &reqwest::blocking::Client, server: &Server, n: usize) {
    wait_for("every record searchable", 600, || {
        let v = get_json(client, &server.url, "/api/v1/search?limit=0");
        match v["total"].as_u64() == Some(n as u64) {
            true => Ok(()),
            false => Err(v.to_string()),
        }
    });
}

fn mb(bytes: f64) -> f64 {
    bytes / 1e6
}

/// Ingest, then wait until every partition is sealed and uploaded; prints the ingest and
/// upload figures.
fn ingest_and_seal(d: &Data, moto: &Moto, server: &Server) {
    let client = reqwest::blocking::Client::new();
    let started = Instant::now();
    let done = AtomicBool::new(false);
    // When the uploaded bytes were first seen above 0, sampled every 50 ms.
    let first_upload: Mutex<Option<f64>> = Mutex::new(None);
    // Stops the sampler however the scope ends: a panic below must not leave it running.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let ingest_secs = std::thread::scope(|s| {
        let _stop = Stop(&done);
        s.spawn(|| {
            let client = reqwest::blocking::Client::new();
            while !done.load(Ordering::Relaxed) {
                if metric(&client, &server.url, UPLOADED) > 0.0 {
                    *first_upload.lock().unwrap() = Some(started.elapsed().as_secs_f64());
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        ingest(&d.batches, &server.url);
        wait_total(&client, server, d.records);
        let secs = started.elapsed().as_secs_f64();
        // The health gauges are 0 before the seal loop's first round too: the manifest
        // holding every record is what says sealing is over.
        wait_for("every partition sealed and uploaded", 3600, || {
            let h = store_health(&client, server);
            let recorded: u64 = manifest_splits(moto)
                .iter()
                .map(|e| e["records"].as_u64().unwrap())
                .sum();
            let idle = h["upload_lag_partitions"].as_u64() == Some(0)
                && h["unsealed_partitions"].as_u64() == Some(0);
            match idle && recorded == d.records as u64 {
                true => Ok(()),
                false => Err(format!("manifest holds {recorded} records; store {h}")),
            }
        });
        secs
    });
    let sealed_secs = started.elapsed().as_secs_f64();
    let uploaded = metric(&client, &server.url, UPLOADED);
    let first = first_upload.lock().unwrap().unwrap_or(ingest_secs);
    println!(
        "ingest (searchable)                          {:>10.0} records/s {:>8.1} MB/s  ({ingest_secs:.1} s)",
        d.records as f64 / ingest_secs,
        mb(d.raw_bytes as f64) / ingest_secs,
    );
    println!(
        "sealing: first upload at {first:.1} s, last at {sealed_secs:.1} s (ingest ended at {ingest_secs:.1} s)"
    );
    println!(
        "upload: {:.1} MB in {:.1} s of sealing wall time = {:.1} MB/s; after ingest ended: {:.1} s",
        mb(uploaded),
        sealed_secs - first,
        mb(uploaded) / (sealed_secs - first),
        sealed_secs - ingest_secs,
    );
    let splits = manifest_splits(moto);
    let mut sizes: Vec<f64> = splits
        .iter()
        .map(|e| e["bytes"].as_u64().unwrap() as f64)
        .collect();
    let total: f64 = sizes.iter().sum();
    sizes.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (median, _) = percentiles(sizes.clone());
    println!(
        "splits: {} ({} partitions), {:.1} MB in all ({:.3} bytes per raw byte), each {:.1} / {:.1} / {:.1} MB (min / median / max); moto_server RSS {:.0} MiB",
        splits.len(),
        splits
            .iter()
            .map(|e| e["start"].as_i64().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        mb(total),
        total / d.raw_bytes as f64,
        mb(sizes[0]),
        mb(median),
        mb(sizes[sizes.len() - 1]),
        moto.rss_mib(),
    );
}

/// One cold run of `path`: a new indexer on an empty data directory (an empty cache),
/// once it knows the manifest. Returns ms, bytes fetched and cache misses.
fn cold_run(moto: &Moto, dir: &Path, splits: usize, path: &str) -> (f64, f64, f64) {
    let client = reqwest::blocking::Client::new();
    let _ = std::fs::remove_dir_all(dir);
    let server = store_indexer(moto, dir, &[]);
    wait_manifest_known(&client, &server, splits);
    let (fetched, misses) = (
        metric(&client, &server.url, FETCHED),
        metric(&client, &server.url, MISSES),
    );
    let t = Instant::now();
    http_get(&client, &server.url, path);
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let fetched = metric(&client, &server.url, FETCHED) - fetched;
    let misses = metric(&client, &server.url, MISSES) - misses;
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
    (ms, fetched, misses)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

// Long on purpose, as the indexer bench's: main reads top to bottom as the report it prints.
fn main() {
    let n: usize = env_or("SAWMILL_BENCH_RECORDS", 5_000_000);
    let iters: usize = env_or("SAWMILL_BENCH_ITERS", 40);
    let cold_iters: usize = env_or("SAWMILL_BENCH_COLD_ITERS", 5);
    let tmp = std::env::temp_dir().join(format!("sawmill-bench-objstore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    // 24 whole hours that ended at least an hour ago: every partition is due for sealing
    // at once with `--seal-after 0s`, and stays so if the clock turns an hour meanwhile.
    let now_ms = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()) as i64;
    let end_ms = now_ms / HOUR_MS * HOUR_MS - HOUR_MS;
    println!("generating {n} records over the {HOURS} hours before the last one ...");
    let d = generate_in(n, (end_ms - HOURS * HOUR_MS, HOURS * HOUR_MS));
    println!(
        "{} records, {:.1} MB of NDJSON, {:.0} bytes a line\n",
        d.records,
        mb(d.raw_bytes as f64),
        d.raw_bytes as f64 / d.records as f64
    );
    let moto = Moto::start();
    let client = reqwest::blocking::Client::new();

    println!("== ingest into an indexer with --partition hour --object-store s3://… --seal-after 0s --local-retention 1000d");
    let local = store_indexer(
        &moto,
        &tmp.join("local"),
        &["--seal-after", "0s", "--local-retention", "1000d"],
    );
    ingest_and_seal(&d, &moto, &local);
    let splits = manifest_splits(&moto).len();
    // What reading whole splits would cost at least: a plain sequential GET of them all
    // (a cold query reads by ranges instead: the tails, then only the chunks it touches).
    let t = Instant::now();
    let got: usize = manifest_splits(&moto)
        .iter()
        .map(|e| {
            let key = format!("{PREFIX}/{GROUP}/{}", e["object"].as_str().unwrap());
            moto.get(&key)
                .expect("a split listed in the manifest")
                .len()
        })
        .sum();
    let get_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!(
        "plain sequential GET of all {splits} splits from moto: {get_ms:.0} ms for {:.1} MB = {:.1} MB/s",
        mb(got as f64),
        mb(got as f64) / (get_ms / 1000.0)
    );

    let queries = http_queries(&d.request_ids);
    println!(
        "\n== queries over {n} records in {splits} splits: median / p95 in ms \
         (local and warm: {iters} runs each, in turns, after 3 warm-up runs; cold: {cold_iters} runs, \
         each by a new indexer on an empty data directory, so an empty cache)"
    );

    let mut cold = Vec::new();
    for (q, (name, path)) in queries.iter().enumerate() {
        let runs: Vec<(f64, f64, f64)> = (0..cold_iters)
            .map(|i| cold_run(&moto, &tmp.join(format!("cold-{q}-{i}")), splits, &path(i)))
            .collect();
        let (m, p) = percentiles(runs.iter().map(|r| r.0).collect());
        let fetched = runs.iter().map(|r| r.1).sum::<f64>() / runs.len() as f64;
        let misses = runs.iter().map(|r| r.2).sum::<f64>() / runs.len() as f64;
        println!(
            "cold {name:<36} {m:>8.1} / {p:>8.1}  fetched {:.1} MB, {misses:.0} partitions opened from the store per query",
            mb(fetched)
        );
        cold.push((m, p, fetched));
    }

    let warm = store_indexer(&moto, &tmp.join("warm"), &[]);
    wait_manifest_known(&client, &warm, splits);
    for (_, path) in &queries {
        http_get(&client, &warm.url, &path(0));
    }
    // Every record is answered from the bucket, and every partition is then downloaded
    // into the cache in the background: warm means read from local disk.
    wait_total(&client, &warm, n);
    wait_for("every partition downloaded into the cache", 600, || {
        let pending = metric(&client, &warm.url, PENDING);
        let misses = metric(&client, &warm.url, MISSES);
        match pending == 0.0 && metric(&client, &warm.url, CACHED) > 0.0 {
            true => Ok(()),
            false => Err(format!("{pending} downloads pending, {misses} misses")),
        }
    });
    let fetched_filling = metric(&client, &warm.url, FETCHED);
    wait_idle(local.child.id(), Duration::from_secs(60));
    wait_idle(warm.child.id(), Duration::from_secs(60));
    // Local and warm in turns: on a shared machine, alike loads on both.
    let (local_ms, warm_ms): (Vec<_>, Vec<_>) = queries
        .iter()
        .map(|(_, path)| {
            time_both(
                iters,
                |i| {
                    http_get(&client, &local.url, &path(i));
                },
                |i| {
                    http_get(&client, &warm.url, &path(i));
                },
            )
        })
        .unzip();
    let fetched_warm = metric(&client, &warm.url, FETCHED) - fetched_filling;
    println!(
        "warm cache: {:.1} MB fetched filling it, {:.1} MB during the timed runs, {:.1} MB on disk",
        mb(fetched_filling),
        mb(fetched_warm),
        mb(metric(
            &client,
            &warm.url,
            "sawmill_indexer_store_cache_bytes"
        )),
    );
    drop(warm);
    drop(local);

    println!(
        "\n{:<36} {:>19} {:>19} {:>10} {:>19} {:>12}",
        "query", "local", "warm cache", "warm/local", "cold", "cold fetched"
    );
    for (q, (name, _)) in queries.iter().enumerate() {
        let ((lm, lp), (wm, wp), (cm, cp, cf)) = (local_ms[q], warm_ms[q], cold[q]);
        println!(
            "{name:<36} {lm:>8.2} / {lp:>8.2} {wm:>8.2} / {wp:>8.2} {:>10.2} {cm:>8.1} / {cp:>8.1} {:>9.1} MB",
            wm / lm,
            mb(cf)
        );
    }
    println!("\ntargets:");
    for (q, (name, _)) in queries.iter().enumerate() {
        let ratio = warm_ms[q].0 / local_ms[q].0;
        println!(
            "  warm {name:<36} within 1.2 x local: {ratio:.2} x, {}",
            met(ratio <= 1.2)
        );
    }
    println!(
        "  (downloading the splits whole first could not beat a plain sequential GET of them: {get_ms:.0} ms for all {splits})"
    );
    let cold_lookup = cold[0].0;
    println!(
        "  cold request_id lookup over {splits} splits < 500 ms: {cold_lookup:.0} ms, {}",
        met(cold_lookup < 500.0)
    );
    drop(moto);
    let _ = std::fs::remove_dir_all(&tmp);
}
