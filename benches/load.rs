//! Ingest under search load: the latency of small ingest requests (and of `/healthz`) to a
//! real `sawmill indexer`, first alone, then while 50 clients loop heavy but legal queries
//! (`q=*` over everything, histograms, terms, wide ranges, large limits) for 20 s; with the
//! indexer's memory before and after. Target: ingest p99 under 100 ms under load.
//!
//! Run: `cargo bench --bench load` (`SAWMILL_BENCH_RECORDS`, `SAWMILL_BENCH_CLIENTS` and
//! `SAWMILL_BENCH_SECS` change the size of the data, the number of searching clients and
//! how long they search).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod common;

use common::{env_or, hex, ingest, peak_rss_mib, rss_mib, start_server, Draw};
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
    "order",
    "created",
    "payment",
    "declined",
    "queue",
    "latency",
];

/// Heavy queries a user may legally send: everything, over every partition, with the
/// largest limits the API allows.
const HEAVY: [&str; 6] = [
    "/api/v1/search?q=*&limit=10000&start=now-30d",
    "/api/v1/histogram?q=*&buckets=10000&start=now-30d",
    "/api/v1/terms?field=host&q=NOT%20severity:debug&size=1000&start=now-30d",
    "/api/v1/search?q=timeout%20OR%20latency%20OR%20order&limit=5000&start=now-30d",
    "/api/v1/histogram?q=NOT%20service:auth&buckets=5000",
    "/api/v1/search?q=*&limit=10000&order=asc",
];

/// p50, p99 and max of latencies in ms.
fn summary(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!(
        "p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  ({} requests)",
        at(0.5),
        at(0.99),
        v[v.len() - 1],
        v.len()
    )
}

/// Small ingest requests (ten records each) one after the other, and `/healthz` probes
/// beside them, until `stop`; their latencies in ms.
fn measure(url: &str, stop: &AtomicBool, seq: &mut u64) -> (Vec<f64>, Vec<f64>, u64) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let mut failures = 0;
    let health = Mutex::new(Vec::new());
    let mut lat = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let client = reqwest::blocking::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let _ = client
                    .get(format!("{url}/healthz"))
                    .send()
                    .map(|r| r.bytes());
                health
                    .lock()
                    .unwrap()
                    .push(t.elapsed().as_secs_f64() * 1000.0);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        while !stop.load(Ordering::Relaxed) {
            let mut body = Vec::new();
            for _ in 0..10 {
                *seq += 1;
                let r = json!({"message": format!("probe {seq} request served"), "service": "probe", "_src": "load-bench", "_seq": *seq});
                serde_json::to_writer(&mut body, &r).unwrap();
                body.push(b'\n');
            }
            let t = Instant::now();
            let ok = client
                .post(format!("{url}/api/v1/ingest"))
                .body(body)
                .send()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            if !ok {
                failures += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (lat, health.into_inner().unwrap(), failures)
}

// Long on purpose: a benchmark's main reads top to bottom as the report it prints, each
// step measuring and printing its figures beside the baseline of the same run.
fn main() {
    let n: usize = env_or("SAWMILL_BENCH_RECORDS", 500_000);
    let clients: usize = env_or("SAWMILL_BENCH_CLIENTS", 50);
    let secs: u64 = env_or("SAWMILL_BENCH_SECS", 20);
    let tmp = std::env::temp_dir().join(format!("sawmill-bench-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    println!("generating {n} records ...");
    let d = common::generate_with(n, 7, &WORDS, 1000, |rng, d| {
        let Draw { rid, service, .. } = d;
        json!({
            "ts": d.ts_ms, "message": format!("{} user={} {}", d.phrase, hex(rng, 6), rid),
            "host": format!("node-{}", rng.u32(1..50)), "service": service, "severity": d.severity,
            "request_id": rid, "trace_id": d.trace, "_src": "bench", "_seq": d.seq,
        })
    });
    let server = start_server(&tmp.join("data"), &["--commit-interval", "200ms"]);
    let pid = server.child.id();
    let started = Instant::now();
    ingest(&d.batches, &server.url);
    let client = reqwest::blocking::Client::new();
    loop {
        let v: Value = client
            .get(format!("{}/api/v1/search?limit=0", server.url))
            .send()
            .and_then(|r| r.text())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        if v["total"].as_u64() >= Some(n as u64) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{n} records ({:.0} MB of NDJSON) searchable in {:.1} s; indexer RSS {:.0} MiB (peak {:.0} MiB)\n",
        d.raw_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        rss_mib(pid),
        peak_rss_mib(pid)
    );
    let mut seq = 0;

    println!("== alone ({secs} s)");
    let stop = AtomicBool::new(false);
    let (lat, health, failures) = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(secs));
            stop.store(true, Ordering::Relaxed);
        });
        measure(&server.url, &stop, &mut seq)
    });
    let alone_p99 = p99(&lat);
    println!("ingest   {}  failed {failures}", summary(lat));
    println!("/healthz {}", summary(health));
    println!(
        "indexer RSS {:.0} MiB (peak {:.0} MiB)\n",
        rss_mib(pid),
        peak_rss_mib(pid)
    );

    println!("== while {clients} clients loop heavy queries ({secs} s)");
    let stop = AtomicBool::new(false);
    let statuses = Mutex::new(BTreeMap::<String, u64>::new());
    let query_lat = Mutex::new(Vec::new());
    let max_rss = Mutex::new(0f64);
    let (lat, health, failures) = std::thread::scope(|s| {
        for c in 0..clients {
            let (stop, statuses, query_lat, url) = (&stop, &statuses, &query_lat, &server.url);
            s.spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap();
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let status = match client
                        .get(format!("{url}{}", HEAVY[i % HEAVY.len()]))
                        .send()
                    {
                        Ok(r) => {
                            let st = r.status().as_u16().to_string();
                            match r.bytes() {
                                Ok(_) => st,
                                Err(_) => format!("{st} (body cut)"),
                            }
                        }
                        Err(e) if e.is_timeout() => "client timeout".into(),
                        Err(_) => "connection error".into(),
                    };
                    if status == "200" {
                        query_lat
                            .lock()
                            .unwrap()
                            .push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    *statuses.lock().unwrap().entry(status).or_default() += 1;
                    i += 1;
                }
            });
        }
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let r = rss_mib(pid);
                let mut m = max_rss.lock().unwrap();
                *m = m.max(r);
                drop(m);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(secs));
            stop.store(true, Ordering::Relaxed);
        });
        measure(&server.url, &stop, &mut seq)
    });
    let loaded_p99 = p99(&lat);
    println!("ingest   {}  failed {failures}", summary(lat));
    println!("/healthz {}", summary(health));
    println!(
        "queries answered 200: {}",
        summary(query_lat.into_inner().unwrap())
    );
    println!(
        "query answers by status: {:?}",
        statuses.into_inner().unwrap()
    );
    println!(
        "indexer RSS: highest seen {:.0} MiB, now {:.0} MiB, peak since start {:.0} MiB",
        max_rss.into_inner().unwrap(),
        rss_mib(pid),
        peak_rss_mib(pid)
    );
    println!(
        "\ningest p99 alone {alone_p99:.1} ms, under load {loaded_p99:.1} ms   (target under load < 100 ms: {})",
        if loaded_p99 < 100.0 { "met" } else { "NOT met" }
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&tmp);
}

fn p99(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 * 0.99) as usize).min(v.len() - 1)]
}
