//! Indexer benchmark: the same synthetic records (a) added straight into tantivy with the
//! indexer's schema, in this process, and (b) sent through `POST /api/v1/ingest` of a real
//! `sawmill indexer` over loopback, durable and de-duplicated; then query latency over HTTP
//! against the same queries straight through tantivy on the baseline index.
//!
//! Run: `cargo bench --bench indexer` (`SAWMILL_BENCH_RECORDS=500000` for a quicker run).

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::{
    baseline_index, env_or, generate, http_get, http_queries, ingest, peak_rss_mib, start_server,
    time_it, Data, Server,
};
use sawmill_indexer::{Fields, Record};
use serde_json::{json, Value};
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::{AggContextParams, AggregationCollector};
use tantivy::collector::{Count, HistogramCollector, TopDocs};
use tantivy::query::{AllQuery, Query, QueryParser, TermQuery};
use tantivy::schema::{IndexRecordOption, Value as _};
use tantivy::time::OffsetDateTime;
use tantivy::{DateTime, Index, Order, Searcher, TantivyDocument, Term};

/// One timed query; the argument is the iteration number.
type Run<'a> = Box<dyn FnMut(usize) + 'a>;

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            total += if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

struct Rate {
    secs: f64,
}

fn report(name: &str, r: &Rate, d: &Data) -> f64 {
    let rps = d.records as f64 / r.secs;
    println!(
        "{name:<44} {:>10.0} records/s {:>8.1} MB/s  ({:.1} s)",
        rps,
        d.raw_bytes as f64 / 1e6 / r.secs,
        r.secs
    );
    rps
}

/// (a) Straight into tantivy: parse each line, build the indexer's document, add, commit.
fn baseline(d: &Data, dir: &Path) -> (Index, Rate) {
    let (fields, index, mut writer) = baseline_index(dir);
    let now = OffsetDateTime::now_utc();
    let started = Instant::now();
    let mut rid = 0u64;
    for b in &d.batches {
        for line in b.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
            let obj: serde_json::Map<String, Value> = serde_json::from_slice(line).unwrap();
            let rec = Record::from_object(obj, now).unwrap();
            writer.add_document(fields.document(rid, &rec)).unwrap();
            rid += 1;
        }
    }
    writer.commit().unwrap();
    let secs = started.elapsed().as_secs_f64();
    writer.wait_merging_threads().unwrap();
    (index, Rate { secs })
}

/// (b) Through the HTTP API: two senders, each batch acknowledged only once durable; the
/// clock stops when the last record is searchable.
fn through_http(d: &Data, server: &Server) -> Rate {
    let started = Instant::now();
    ingest(&d.batches, &server.url);
    let client = reqwest::blocking::Client::new();
    loop {
        let v: Value = serde_json::from_str(
            &client
                .get(format!("{}/api/v1/search?limit=0", server.url))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        )
        .unwrap();
        if v["total"].as_u64() == Some(d.records as u64) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Rate {
        secs: started.elapsed().as_secs_f64(),
    }
}

fn fetch(
    searcher: &Searcher,
    fields: &Fields,
    docs: &[(Option<DateTime>, tantivy::DocAddress)],
) -> usize {
    let mut n = 0;
    for (_, a) in docs {
        let d: TantivyDocument = searcher.doc(*a).unwrap();
        n += d
            .get_first(fields.source)
            .and_then(|v| v.as_str())
            .map_or(0, str::len);
    }
    n
}

// Long on purpose: a benchmark's main reads top to bottom as the report it prints, each
// step measuring and printing its figures beside the baseline of the same run.
fn main() {
    let n: usize = env_or("SAWMILL_BENCH_RECORDS", 5_000_000);
    let iters: usize = env_or("SAWMILL_BENCH_ITERS", 40);
    let tmp = std::env::temp_dir().join(format!("sawmill-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    println!("generating {n} records ...");
    let d = generate(n);
    println!(
        "{} records, {:.1} MB of NDJSON, {:.0} bytes a line\n",
        d.records,
        d.raw_bytes as f64 / 1e6,
        d.raw_bytes as f64 / d.records as f64
    );

    println!("== ingest");
    let rss_before = peak_rss_mib(std::process::id());
    let (index, a) = baseline(&d, &tmp.join("baseline"));
    let a_rps = report("(a) straight into tantivy (baseline)", &a, &d);
    let a_bytes = dir_bytes(&tmp.join("baseline"));
    let server = start_server(&tmp.join("server"), &[]);
    let b = through_http(&d, &server);
    let b_rps = report("(b) POST /api/v1/ingest, durable + dedup", &b, &d);
    // Background merges shrink the index for a while after the last commit: measure once settled.
    let mut b_index = dir_bytes(&tmp.join("server/partitions"));
    for _ in 0..60 {
        std::thread::sleep(Duration::from_secs(2));
        let now = dir_bytes(&tmp.join("server/partitions"));
        if now == b_index {
            break;
        }
        b_index = now;
    }
    let ratio = b_rps / a_rps;
    println!(
        "ratio b/a                                    {ratio:.2}   (target >= 0.70: {})",
        if ratio >= 0.7 { "met" } else { "NOT met" }
    );
    println!(
        "index bytes per raw byte: baseline {:.3}, indexer {:.3}   (target <= 0.5: {})",
        a_bytes as f64 / d.raw_bytes as f64,
        b_index as f64 / d.raw_bytes as f64,
        if (b_index as f64) <= 0.5 * d.raw_bytes as f64 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "write-ahead log left on disk: {:.1} MB",
        dir_bytes(&tmp.join("server/wal")) as f64 / 1e6
    );
    println!("peak RSS: indexer process {:.0} MiB; baseline (this process, above the generated data) {:.0} MiB", peak_rss_mib(server.child.id()), peak_rss_mib(std::process::id()) - rss_before);

    println!("\n== queries over {n} records ({iters} runs each, after 3 warm-up runs): median / p95 in ms");
    let fields = Fields::new();
    let reader = index.reader().unwrap();
    let searcher = reader.searcher();
    let parser = QueryParser::for_index(&index, vec![fields.message]);
    let client = reqwest::blocking::Client::new();
    let ids = &d.request_ids;
    let by_ts = || TopDocs::with_limit(100).order_by_fast_field::<DateTime>("ts", Order::Desc);
    let span_ns = (d.last_ms - d.first_ms + 1) as u64 * 1_000_000;
    // The direct runs, in the order of `http_queries`, which they mirror.
    let directs: Vec<Run<'_>> = vec![
        Box::new(|i| {
            let q = TermQuery::new(
                Term::from_field_text(
                    fields.exact_field("request_id").unwrap(),
                    &ids[i % ids.len()],
                ),
                IndexRecordOption::Basic,
            );
            let (c, top) = searcher.search(&q, &(Count, by_ts())).unwrap();
            assert!(c > 0);
            fetch(&searcher, &fields, &top);
        }),
        Box::new(|_| {
            let q: Box<dyn Query> = parser.parse_query("completed").unwrap();
            let (_, top) = searcher.search(&q, &(Count, by_ts())).unwrap();
            fetch(&searcher, &fields, &top);
        }),
        Box::new(|_| {
            let h = HistogramCollector::new(
                "ts".to_string(),
                DateTime::from_timestamp_millis(d.first_ms),
                span_ns / 60 + 1,
                60,
            );
            let counts = searcher.search(&AllQuery, &h).unwrap();
            assert_eq!(counts.iter().sum::<u64>(), n as u64);
        }),
        Box::new(|_| {
            let aggs: Aggregations =
                serde_json::from_value(json!({"s": {"terms": {"field": "service", "size": 10}}}))
                    .unwrap();
            let c = AggregationCollector::from_aggs(aggs, AggContextParams::default());
            searcher.search(&AllQuery, &c).unwrap();
        }),
    ];
    println!(
        "{:<36} {:>17} {:>17} {:>8}  target: http <= 1.5 x direct + 2 ms",
        "query", "direct tantivy", "HTTP API", "ratio"
    );
    for ((name, path), mut direct) in http_queries(ids).into_iter().zip(directs) {
        let (dm, dp) = time_it(iters, &mut direct);
        let (hm, hp) = time_it(iters, |i| {
            http_get(&client, &server.url, &path(i));
        });
        let met = hm <= 1.5 * dm + 2.0 && hp <= 1.5 * dp + 2.0;
        println!(
            "{name:<36} {dm:>7.2} / {dp:>7.2} {hm:>7.2} / {hp:>7.2} {:>8.2}  {}",
            hm / dm,
            if met { "met" } else { "NOT met" }
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&tmp);
}
