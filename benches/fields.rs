//! Task-metadata benchmark: what making `fields` columnar (for term counts on `fields.NAME`,
//! the sidebar's task facets) costs at ingest and in index size, and what such a count
//! costs against one on an exact field.
//!
//! (a) The same records, each with the fields a Kubernetes container's lines carry
//! (`container_id`, `k8s_namespace`, `k8s_pod`, `k8s_container`) and two numbers, are added
//! straight into tantivy in this process with the schema before `fields` was columnar (the
//! baseline) and with today's, in turn for a few rounds; it prints records/s of each round,
//! the medians and the bytes on disk of each.
//! (b) A real `sawmill indexer` filled through the API answers terms on `service` (an exact
//! column: the baseline) and on `fields.k8s_pod`, over everything and under a query.
//!
//! Run: `cargo bench --bench fields` (1 million records; `SAWMILL_BENCH_RECORDS` for more or
//! fewer, `SAWMILL_BENCH_ROUNDS` rounds of (a), `SAWMILL_BENCH_ITERS` timed runs of (b)).

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{
    env_or, generate_with, hex, http_get, ingest, percentiles, start_server, time_it, Data, Draw,
    WORDS,
};
use sawmill_indexer::{index_settings, Fields, Record, StoreConfig};
use serde_json::{json, Map, Value};
use tantivy::schema::Schema;
use tantivy::time::OffsetDateTime;
use tantivy::{Index, TantivyDocument};

/// Records as `--docker` and `--tail` on a Kubernetes node ship them: 40 pods of 8
/// services in 4 namespaces, a container id each, a status and a duration.
fn generate(n: usize) -> Data {
    generate_with(n, 11, &WORDS, 1000, |rng, d| {
        let Draw { service, rid, .. } = d;
        let pod = rng.u32(0..5);
        let status = [200, 200, 200, 201, 404, 500][rng.usize(..6)];
        let namespace = ["shop", "payments", "search", "ops"][service.len() % 4];
        json!({
            "ts": d.ts_ms, "host": format!("node-{}", rng.u32(1..13)), "service": service,
            "severity": d.severity, "request_id": rid, "_src": "bench", "_seq": d.seq,
            "message": format!("GET /api/{service} status={status} {}", d.phrase),
            "fields": {
                "container_id": hex(rng, 64),
                "k8s_namespace": namespace,
                "k8s_pod": format!("{service}-7d9f{pod}-x{pod}z"),
                "k8s_container": service,
                "status": status,
                "duration_ms": rng.u32(1..2000),
            },
        })
    })
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() {
                        dir_bytes(&e.path())
                    } else {
                        m.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Records/s adding every record to a new index of `schema` in `dir`, and its bytes.
fn index_with(d: &Data, fields: &Fields, schema: Schema, dir: &Path) -> (f64, u64) {
    std::fs::create_dir_all(dir).unwrap();
    let index = Index::builder()
        .schema(schema)
        .settings(index_settings())
        .create_in_dir(dir)
        .unwrap();
    let cfg = StoreConfig::new(dir);
    let mut writer = index
        .writer_with_num_threads::<TantivyDocument>(cfg.writer_threads, cfg.writer_memory)
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let started = Instant::now();
    let mut rid = 0u64;
    for b in &d.batches {
        for line in b.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
            let obj: Map<String, Value> = serde_json::from_slice(line).unwrap();
            let rec = Record::from_object(obj, now).unwrap();
            writer.add_document(fields.document(rid, &rec)).unwrap();
            rid += 1;
        }
    }
    writer.commit().unwrap();
    let rate = d.records as f64 / started.elapsed().as_secs_f64();
    writer.wait_merging_threads().unwrap();
    (rate, dir_bytes(dir))
}

fn main() {
    let n: usize = env_or("SAWMILL_BENCH_RECORDS", 1_000_000);
    let iters: usize = env_or("SAWMILL_BENCH_ITERS", 20);
    let tmp = std::env::temp_dir().join(format!("sawmill-bench-fields-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    println!("generating {n} records with six task-metadata fields each ...");
    let d = generate(n);
    let fields = Fields::new();

    let rounds: usize = env_or("SAWMILL_BENCH_ROUNDS", 3);
    println!("\n== (a) straight into tantivy, in turn, {rounds} rounds (median)");
    let (mut before, mut columnar) = (Vec::new(), Vec::new());
    let mut bytes = (0, 0);
    for round in 0..rounds {
        let b = index_with(
            &d,
            &fields,
            fields.schema_without_fields_columns(),
            &tmp.join(format!("before-{round}")),
        );
        let c = index_with(
            &d,
            &fields,
            fields.schema.clone(),
            &tmp.join(format!("columnar-{round}")),
        );
        println!(
            "round {round}: {:.0} / {:.0} records/s ({:.2}x)",
            b.0,
            c.0,
            c.0 / b.0
        );
        before.push(b.0);
        columnar.push(c.0);
        bytes = (b.1, c.1);
        let _ = std::fs::remove_dir_all(tmp.join(format!("before-{round}")));
        let _ = std::fs::remove_dir_all(tmp.join(format!("columnar-{round}")));
    }
    let (before_rate, _) = percentiles(before);
    let (rate, _) = percentiles(columnar);
    let (before_bytes, bytes) = bytes;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "fields by word only (baseline): {before_rate:>9.0} records/s  {:>7.1} MiB",
        mib(before_bytes)
    );
    println!(
        "fields columnar too:            {rate:>9.0} records/s  {:>7.1} MiB",
        mib(bytes)
    );
    println!(
        "columnar / baseline:            {:>9.2}x speed      {:>7.2}x size",
        rate / before_rate,
        bytes as f64 / before_bytes as f64
    );

    println!("\n== (b) term counts through a real indexer's API ({iters} runs each after 3 warm-up runs)");
    let server = start_server(&tmp.join("data"), &["--commit-interval", "1s"]);
    let started = Instant::now();
    ingest(&d.batches, &server.url);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    while !http_get_text(&client, &server.url, "/api/v1/search?limit=0&start=")
        .contains(&format!("\"total\":{n},"))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "{n} records indexed through the API in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Let background merges settle, so they do not land in one side's timings only.
    std::thread::sleep(Duration::from_secs(10));
    println!(
        "{:<44} {:>10} {:>10}",
        "terms, size=5, over 24 h", "median ms", "p95 ms"
    );
    for q in ["*", "severity:info"] {
        let mut medians = Vec::new();
        for field in ["service", "fields.k8s_pod"] {
            let path = format!(
                "/api/v1/terms?field={field}&q={}&start=now-24h&size=5",
                sawmill_ui::enc(q)
            );
            let (median, p95) = time_it(iters, |_| {
                http_get(&client, &server.url, &path);
            });
            println!(
                "{:<44} {median:>10.1} {p95:>10.1}",
                format!("{field} where {q}")
            );
            medians.push(median);
        }
        println!(
            "{:<44} {:>10.2}x",
            format!("fields.k8s_pod / service where {q}"),
            medians[1] / medians[0]
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&tmp);
}

fn http_get_text(client: &reqwest::blocking::Client, url: &str, path: &str) -> String {
    client
        .get(format!("{url}{path}"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}
