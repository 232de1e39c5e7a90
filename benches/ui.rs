//! UI benchmark: the server-side time of the web UI's pages over a large index, against
//! the search API calls each page makes, to show what the UI itself costs.
//!
//! A real `sawmill indexer` is filled through `POST /api/v1/ingest` (as `benches/indexer.rs`
//! does: generated records, two senders, until the last is searchable), a real `sawmill ui`
//! is put in front of it, and for each iteration the bench times (a) the page through the
//! UI and (b) the same API calls the page makes, one after the other (their sum), and (c)
//! all at once, as the UI makes them. It prints median and p95 of each, the ratio a/b (the
//! target: Discover's median at most 1.3 x the sum of its calls) and a/c (the UI's own
//! cost), and the size of Discover's HTML for 100 rows (target: at most 300 KB).
//!
//! Run: `cargo bench --bench ui` (5 million records; `SAWMILL_BENCH_RECORDS=500000` for a
//! quicker run, `SAWMILL_BENCH_ITERS` for more or fewer runs).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{env_or, hex, ingest, percentiles, Data, Draw};
use sawmill_ui::{enc, FACETS, TASK_FACETS};
use serde_json::{json, Value};

const WORDS: [&str; 16] = [
    "connection",
    "pool",
    "exhausted",
    "retrying",
    "upstream",
    "timeout",
    "cache",
    "miss",
    "session",
    "token",
    "payment",
    "declined",
    "inventory",
    "reserved",
    "latency",
    "spike",
];
/// The queries Discover is timed with, in turn: everything, a common word, a rarer one.
const QUERIES: [&str; 3] = ["*", "timeout", "severity:err AND payment"];

/// Records as services write them: requests crossing services under one request id, over
/// the last 20 hours, ~200-byte messages (the same shape as the indexer benchmark's).
fn generate(n: usize) -> Data {
    common::generate_with(n, 7, &WORDS, 2000, |rng, d| {
        let Draw {
            rid,
            service,
            severity,
            ..
        } = d;
        let message = format!(
            "{} /api/orders handled status={} duration_ms={} user_id={} request_id={rid} upstream={service}-{} region=eu-west-{} {}",
            if rng.bool() { "GET" } else { "POST" },
            [200, 200, 200, 201, 404, 500][rng.usize(..6)],
            rng.u32(1..2000),
            rng.u32(1000..99999),
            hex(rng, 4),
            rng.u32(1..4),
            d.phrase
        );
        json!({
            "ts": d.ts_ms, "message": message,
            "host": format!("node-{}", rng.u32(1..13)), "service": service, "severity": severity,
            "container": format!("{service}-{}", rng.u32(1..4)),
            "stream": if severity == "err" { "stderr" } else { "stdout" },
            "request_id": rid, "trace_id": d.trace, "_src": "bench", "_seq": d.seq,
            // As a Kubernetes node's shipper records them, for the sidebar's task facets.
            "fields": {"k8s_namespace": "shop", "k8s_pod": format!("{service}-7d9f-x{}", rng.u32(1..4))},
        })
    })
}

struct Proc {
    child: Child,
    url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sawmill ARGS` and reads its URL from the first line it prints.
fn start(args: &[&str], data: Option<&Path>, prefix: &str) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sawmill"));
    cmd.args(args);
    if let Some(d) = data {
        cmd.arg("--data").arg(d);
    }
    let mut child = cmd
        .env("SAWMILL_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{args:?} printed {first:?}"))
        .trim()
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    Proc { child, url }
}

fn fill(batches: &[Vec<u8>], records: usize, server: &Proc) -> f64 {
    let started = Instant::now();
    ingest(batches, &server.url);
    let client = reqwest::blocking::Client::new();
    loop {
        let v: Value = serde_json::from_str(
            &client
                .get(format!("{}/api/v1/search?limit=0&start=", server.url))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        )
        .unwrap();
        if v["total"].as_u64() == Some(records as u64) {
            return started.elapsed().as_secs_f64();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The API calls Discover makes for `q` over `[start, end]` (ui/src/pages/discover.rs):
/// hits, histogram, the error histogram and latest error, and a terms call per facet.
fn discover_calls<'a>(
    q: &str,
    start: &str,
    end: &str,
    facets: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let errors = "(severity:err OR severity:crit OR severity:alert OR severity:emerg)";
    let err_q = if q == "*" {
        errors.to_string()
    } else {
        format!("({q}) AND {errors}")
    };
    let range = |q: &str| format!("q={}&start={}&end={}", enc(q), enc(start), enc(end));
    let mut v = vec![
        format!("/api/v1/search?{}&limit=100", range(q)),
        format!("/api/v1/histogram?{}&buckets=60", range(q)),
        format!("/api/v1/histogram?{}&buckets=60", range(&err_q)),
        format!("/api/v1/search?{}&limit=1", range(&err_q)),
    ];
    for f in facets {
        v.push(format!("/api/v1/terms?field={f}&{}&size=5", range(q)));
    }
    v
}

fn get(client: &reqwest::blocking::Client, url: &str) -> usize {
    let r = client.get(url).send().unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.bytes().unwrap().len()
}

/// Milliseconds to GET every one of `urls` at the same time, as the UI does.
fn at_once(client: &reqwest::blocking::Client, urls: &[String]) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for u in urls {
            s.spawn(move || get(client, u));
        }
    });
    ms(started)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

struct Timings {
    ui: Vec<f64>,
    sum: Vec<f64>,
    parallel: Vec<f64>,
}

fn report(name: &str, t: Timings, target: Option<f64>) {
    let (um, up) = percentiles(t.ui);
    let (sm, sp) = percentiles(t.sum);
    let (pm, pp) = percentiles(t.parallel);
    let verdict = match target {
        Some(x) if um <= x * sm => format!("target a/b <= {x}: met"),
        Some(x) => format!("target a/b <= {x}: NOT met"),
        None => String::new(),
    };
    println!(
        "{name:<24} {um:>8.1} / {up:>7.1} {sm:>8.1} / {sp:>7.1} {pm:>8.1} / {pp:>7.1} {:>6.2} {:>6.2}  {verdict}",
        um / sm,
        um / pm
    );
}

// Long on purpose: a benchmark's main reads top to bottom as the report it prints, each
// step measuring and printing its figures beside the baseline of the same run.
fn main() {
    let n: usize = env_or("SAWMILL_BENCH_RECORDS", 5_000_000);
    let iters: usize = env_or("SAWMILL_BENCH_ITERS", 30);
    let tmp = std::env::temp_dir().join(format!("sawmill-bench-ui-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    println!("generating {n} records ...");
    let Data {
        batches,
        request_ids: ids,
        ..
    } = generate(n);
    let ix = start(
        &["indexer", "--listen", "127.0.0.1:0"],
        Some(&tmp.join("data")),
        "sawmill indexer listening on ",
    );
    let secs = fill(&batches, n, &ix);
    drop(batches);
    println!(
        "{n} records indexed through the API in {secs:.1} s ({:.0} records/s)",
        n as f64 / secs
    );
    // Let background merges settle, so they do not land in one side's timings only.
    std::thread::sleep(Duration::from_secs(10));
    let ui = start(
        &["ui", "--listen", "127.0.0.1:0", "--indexer", &ix.url],
        None,
        "sawmill ui listening on ",
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let (start_t, end_t) = ("now-24h", "now");

    // Discover over the whole day, 100 rows, histogram, five facets.
    let mut t = Timings {
        ui: vec![],
        sum: vec![],
        parallel: vec![],
    };
    let mut html_bytes = 0;
    let mut core_calls = Vec::new();
    for i in 0..iters + 3 {
        let q = QUERIES[i % QUERIES.len()];
        let page = format!(
            "{}/?q={}&start={}&end={}",
            ui.url,
            enc(q),
            enc(start_t),
            enc(end_t)
        );
        let calls: Vec<String> =
            discover_calls(q, start_t, end_t, FACETS.into_iter().chain(TASK_FACETS))
                .into_iter()
                .map(|c| format!("{}{c}", ix.url))
                .collect();
        // The calls Discover made before its task-metadata facets: (c)'s baseline.
        let core: Vec<String> = discover_calls(q, start_t, end_t, FACETS)
            .into_iter()
            .map(|c| format!("{}{c}", ix.url))
            .collect();
        let a = Instant::now();
        let bytes = get(&client, &page);
        let ui_ms = ms(a);
        if q == "*" {
            html_bytes = html_bytes.max(bytes);
        }
        let b = Instant::now();
        for c in &calls {
            get(&client, c);
        }
        let sum_ms = ms(b);
        // With and without the task facets in turn, each first every other run, so neither
        // always finds the caches the other warmed.
        let (par_ms, core_ms) = if i % 2 == 0 {
            let p = at_once(&client, &calls);
            (p, at_once(&client, &core))
        } else {
            let c = at_once(&client, &core);
            (at_once(&client, &calls), c)
        };
        // The first runs warm caches and connections.
        if i >= 3 {
            t.ui.push(ui_ms);
            t.sum.push(sum_ms);
            t.parallel.push(par_ms);
            core_calls.push(core_ms);
        }
    }
    println!(
        "\n== pages over {n} records ({iters} runs each after 3 warm-up runs): median / p95 in ms"
    );
    println!(
        "{:<24} {:>18} {:>18} {:>18} {:>6} {:>6}",
        "page", "(a) through the UI", "(b) its calls, sum", "(c) calls at once", "a/b", "a/c"
    );
    let (pm, _) = percentiles(t.parallel.clone());
    report("Discover (24 h)", t, Some(1.3));
    let (cm, cp) = percentiles(core_calls);
    println!(
        "{:<24} {:>37} {cm:>8.1} / {cp:>7.1}   (c) with the {} task facets / without: {:.2}x",
        "  without task facets",
        "",
        TASK_FACETS.len(),
        pm / cm
    );

    // The request view of one request.
    let mut t = Timings {
        ui: vec![],
        sum: vec![],
        parallel: vec![],
    };
    for i in 0..iters + 3 {
        let id = &ids[i % ids.len()];
        let a = Instant::now();
        get(&client, &format!("{}/trace/{}", ui.url, enc(id)));
        let ui_ms = ms(a);
        let b = Instant::now();
        get(
            &client,
            &format!("{}/api/v1/trace/{}?limit=5000", ix.url, enc(id)),
        );
        let api_ms = ms(b);
        if i >= 3 {
            t.ui.push(ui_ms);
            t.sum.push(api_ms);
            t.parallel.push(api_ms);
        }
    }
    report("request view", t, None);
    println!(
        "\nDiscover HTML for 100 rows: {:.0} KB   (target <= 300 KB: {})",
        html_bytes as f64 / 1024.0,
        if html_bytes <= 300 * 1024 {
            "met"
        } else {
            "NOT met"
        }
    );
    drop(ui);
    drop(ix);
    let _ = std::fs::remove_dir_all(&tmp);
}
